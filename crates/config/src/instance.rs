//! The base URL of an upstream instance, as the configuration gives it.

use std::str::FromStr;

use http::header::HeaderValue;
use http::uri::{Authority, Scheme};

/// The base URL of one instance: scheme and authority, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// The authority as a `Host` header, for requests that came without one.
    pub host_header: HeaderValue,
}

impl FromStr for InstanceUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| format!("`{text}` is not a URL such as http://127.0.0.1:9000"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!(
                "`{text}` is not a URL such as http://127.0.0.1:9000"
            ));
        };
        if *scheme != Scheme::HTTP {
            return Err(format!(
                "`{text}`: only http:// upstreams are supported so far"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "`{text}`: give only scheme, host and port; rewrite paths with the rewrite filter"
            ));
        }
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{text}`: credentials in the URL are not supported"
            ));
        }
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| format!("`{authority}` cannot be sent as a Host header"))?;
        Ok(InstanceUrl {
            scheme: scheme.clone(),
            authority: authority.clone(),
            host_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls_take_only_scheme_and_authority() {
        assert!("http://127.0.0.1:9000".parse::<InstanceUrl>().is_ok());
        assert!("http://localhost:9000/".parse::<InstanceUrl>().is_ok());
        for bad in [
            "127.0.0.1:9000",
            "https://example.com",
            "http://a:1/base",
            "http://a:1/?q=1",
            "http://user:pw@a:1",
            "not a url",
        ] {
            assert!(
                bad.parse::<InstanceUrl>().is_err(),
                "{bad} should be refused"
            );
        }
    }
}
