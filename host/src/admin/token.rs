//! The admin API's bearer token check (RFC 6750): a request without the token, or with
//! another one, gets 401 `ADMIN_UNAUTHORIZED` and a `WWW-Authenticate` challenge.
//!
//! Refusals are logged at most once a minute, with how many there were since the last line:
//! a scanner hammering the listener must not flood the log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};

use gateway_config::AdminToken;
use gateway_proxy::{ResponseBody, request_id};

use super::refused;

/// Seconds between two log lines about refused requests.
const LOG_EVERY_SECS: u64 = 60;

static REFUSED_SINCE_LOG: AtomicU64 = AtomicU64::new(0);
static LAST_LOG_SECS: AtomicU64 = AtomicU64::new(0);

/// The token a request presents, if it has a well-formed `Authorization: Bearer` header.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    // The scheme is case-insensitive (RFC 9110 section 11.1).
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// `Ok` when the request carries `token`; the refusal to send otherwise.
#[expect(
    clippy::result_large_err,
    reason = "a refusal is written out at once: boxing it costs an allocation for nothing"
)]
pub(crate) fn check(token: &AdminToken, headers: &HeaderMap) -> Result<(), Response<ResponseBody>> {
    let presented = presented(headers);
    if presented.is_some_and(|presented| token.matches(presented)) {
        return Ok(());
    }
    note_refusal();
    let (message, challenge) = match presented {
        None => (
            "the admin API needs `Authorization: Bearer <token>`",
            r#"Bearer realm="gateway-admin""#,
        ),
        Some(_) => (
            "the admin token is not valid",
            r#"Bearer realm="gateway-admin", error="invalid_token""#,
        ),
    };
    let mut response = refused(
        StatusCode::UNAUTHORIZED,
        "ADMIN_UNAUTHORIZED",
        message,
        &request_id(headers),
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    Err(response)
}

fn note_refusal() {
    let refused = REFUSED_SINCE_LOG.fetch_add(1, Ordering::Relaxed) + 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let last = LAST_LOG_SECS.load(Ordering::Relaxed);
    if now >= last + LOG_EVERY_SECS
        && LAST_LOG_SECS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        REFUSED_SINCE_LOG.fetch_sub(refused, Ordering::Relaxed);
        tracing::warn!(
            refused,
            "admin requests refused for a missing or wrong bearer token"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("a header value"),
        );
        headers
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let token = AdminToken::new("correct-horse-battery-staple").expect("a long enough token");
        assert!(check(&token, &headers("Bearer correct-horse-battery-staple")).is_ok());
        assert!(check(&token, &headers("bearer correct-horse-battery-staple")).is_ok());
        assert!(check(&token, &headers("Bearer correct-horse-battery-stapl")).is_err());
        assert!(check(&token, &headers("Bearer correct-horse-battery-staple2")).is_err());
        assert!(check(&token, &headers("Basic correct-horse-battery-staple")).is_err());
        assert!(check(&token, &HeaderMap::new()).is_err());
    }

    #[test]
    fn a_refusal_is_a_401_with_a_challenge() {
        let token = AdminToken::new("correct-horse-battery-staple").expect("a long enough token");
        let refusal =
            check(&token, &headers("Bearer wrong-token-wrong-token")).expect_err("a wrong token");
        assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED);
        let challenge = refusal.headers()[WWW_AUTHENTICATE].to_str().expect("text");
        assert!(challenge.contains("invalid_token"), "{challenge}");
    }
}
