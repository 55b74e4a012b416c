//! The filter's per-route configuration, as written under the route's `config` key.
//!
//! Every key is optional, but at least one of `allow` and `deny` must list something: see
//! [`crate::IpFilter`] for every check made when the route is loaded.

use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Blocks of client addresses that may pass, as `address/prefix` (`10.0.0.0/8`,
    /// `"2001:db8::/32"`) or a bare address for just that one (`127.0.0.1`). If the list is not
    /// empty, a client outside every block is refused; if it is empty, every client not denied
    /// passes. Quote IPv6 entries in YAML: a plain scalar starting with `:` is not a string there.
    pub allow: Vec<String>,
    /// Blocks of client addresses that are refused, written like `allow`. Checked first, so a
    /// client in both lists is refused: deny carves exceptions out of a broad allow.
    pub deny: Vec<String>,
    /// Decide on the address the proxy in front of the gateway reports in `X-Forwarded-For`
    /// instead of the connection's address. Only turn it on if every client reaches the gateway
    /// through exactly one proxy you run: anyone who can connect directly can write any address
    /// into the header. See [`crate::client_address`] for which entry is used and why.
    pub trust_forwarded_for: bool,
    /// The status of the refusal, from 400 to 599. 403 (Forbidden) by default; 404 hides that
    /// the route exists at all.
    pub status: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            allow: Vec::new(),
            deny: Vec::new(),
            trust_forwarded_for: false,
            status: 403,
        }
    }
}
