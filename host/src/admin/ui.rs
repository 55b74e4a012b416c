//! `GET /admin/ui`: the dashboard, one HTML page with its style and script inline, which polls
//! the admin API's JSON endpoints and renders them live.
//!
//! The page is assembled once from the files in `ui/`, compiled into the binary, so it needs
//! nothing from outside: no file beside the binary, no CDN. Its `content-security-policy`
//! allows nothing but that one script and that one style, named by their SHA-256, and `fetch`
//! to this listener: an injected `<script>`, inline handler or foreign stylesheet does not run,
//! and a route or service name the page renders cannot become markup (the script sets
//! `textContent` only).
//!
//! The page is public (see [`super::is_public`]): a browser's navigation cannot carry an
//! `Authorization: Bearer` header, so behind the token the page could not load at all. It holds
//! no data; every figure it shows comes from an endpoint that still wants the token, which the
//! page asks for and keeps in `sessionStorage` (never in the URL, where access logs and the
//! browser history would keep it).

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use gateway_proxy::{ResponseBody, full};

const TEMPLATE: &str = include_str!("ui/page.html");
const STYLE: &str = include_str!("ui/style.css");
const SCRIPT: &str = include_str!("ui/app.js");

/// The page and the policy that names its inline parts, built on first use.
struct Page {
    html: Bytes,
    policy: HeaderValue,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let html = TEMPLATE
        .replace("{{style}}", STYLE)
        .replace("{{script}}", SCRIPT);
    let policy = format!(
        "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        script = source_hash(SCRIPT),
        style = source_hash(STYLE),
    );
    Page {
        html: Bytes::from(html),
        policy: HeaderValue::try_from(policy)
            .expect("a policy of ASCII words and base64 hashes is a valid header value"),
    }
});

/// A CSP source expression for an inline element whose text is `text` (CSP level 2).
fn source_hash(text: &str) -> String {
    format!("'sha256-{}'", STANDARD.encode(Sha256::digest(text)))
}

/// The dashboard page, never cached: a gateway upgraded in place serves its own page's script.
pub(crate) fn page() -> Response<ResponseBody> {
    let page = &*PAGE;
    let mut response = Response::new(full(page.html.clone()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, page.policy.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Older browsers that predate `frame-ancestors`.
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> String {
        page().headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ASCII")
            .to_owned()
    }

    #[test]
    fn the_policy_names_exactly_the_inline_script_and_style() {
        let html = std::str::from_utf8(&PAGE.html).expect("UTF-8");
        // The hash covers the element's text as served, so it must be inserted verbatim, once.
        assert_eq!(
            html.matches(&format!("<script>{SCRIPT}</script>")).count(),
            1
        );
        assert_eq!(html.matches(&format!("<style>{STYLE}</style>")).count(), 1);
        assert_eq!(html.matches("<script").count(), 1, "one script element");
        assert_eq!(html.matches("<style").count(), 1, "one style element");
        assert!(!html.contains("{{"), "every placeholder is filled");
        let policy = policy();
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(policy.contains(&format!("script-src {};", source_hash(SCRIPT))));
        assert!(policy.contains(&format!("style-src {};", source_hash(STYLE))));
        assert!(!policy.contains("unsafe"), "{policy}");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // The one link is the empty icon, inline.
        let html = std::str::from_utf8(&PAGE.html)
            .expect("UTF-8")
            .replace(r#"<link rel="icon" href="data:,">"#, "");
        for needle in ["://", "src=", "href=", "<link", "@import", "url("] {
            assert!(!html.contains(needle), "the page contains {needle:?}");
        }
        // Markup built from strings could carry a route name into the DOM as HTML.
        assert!(!SCRIPT.contains("innerHTML"));
        assert!(
            !SCRIPT.contains("</script"),
            "the script cannot close its element early"
        );
    }

    #[test]
    fn the_page_is_html_and_never_cached() {
        let response = page();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
