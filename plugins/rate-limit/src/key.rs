//! What a limit counts by: the parts of its key, read from the request, and the client's
//! address behind trusted proxies.
//!
//! A key is written as one part or a list of them, joined: `ip`, `api_key`, `subject`,
//! `consumer`, `route`, `header:<name>`, `param:<name>`. Secrets never reach the store: an API
//! key goes in as its SHA-256, and a value that is long or holds characters outside a plain set
//! goes in hashed too, so no client can write what it likes into a store key.

use std::cell::OnceCell;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use gateway_sdk::{Headers, Request};
use ipnet::IpNet;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The context entry with the authenticated subject (the auth filter's).
pub(crate) const SUBJECT: &str = "auth.subject";
/// The context entry with the API key's consumer (the auth filter's).
pub(crate) const CONSUMER: &str = "auth.consumer";

/// The longest key value kept as it is; longer ones are hashed.
const MAX_PLAIN_VALUE: usize = 128;

/// One part of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client's address (behind trusted proxies, the one they name).
    Ip,
    /// The API key the client sent, hashed.
    ApiKey,
    /// The authenticated subject, `auth.subject`.
    Subject,
    /// The consumer, `auth.consumer`.
    Consumer,
    /// Nothing from the request: every request of the scope shares one count.
    Route,
    /// A request header's first value.
    Header(String),
    /// A parameter the route's path pattern captured.
    Param(String),
}

impl KeyPart {
    fn parse(text: &str) -> Result<KeyPart, String> {
        let part = match text {
            "ip" => KeyPart::Ip,
            "api_key" => KeyPart::ApiKey,
            "subject" => KeyPart::Subject,
            "consumer" => KeyPart::Consumer,
            "route" => KeyPart::Route,
            _ => match text.split_once(':') {
                Some(("header", name)) if !name.is_empty() => {
                    KeyPart::Header(name.to_ascii_lowercase())
                }
                Some(("param", name)) if !name.is_empty() => KeyPart::Param(name.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown key part `{text}`: expected ip, api_key, subject, consumer, \
                         route, header:<name> or param:<name>"
                    ));
                }
            },
        };
        Ok(part)
    }

    /// The tag that goes before the part's value in a store key, so that two parts with the
    /// same value never give the same key.
    fn tag(&self) -> &str {
        match self {
            KeyPart::Ip => "ip",
            KeyPart::ApiKey => "key",
            KeyPart::Subject => "sub",
            KeyPart::Consumer => "con",
            KeyPart::Route => "route",
            KeyPart::Header(name) => name,
            KeyPart::Param(name) => name,
        }
    }
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Header(name) => write!(f, "header:{name}"),
            KeyPart::Param(name) => write!(f, "param:{name}"),
            other => f.write_str(other.tag()),
        }
    }
}

/// A key: its parts, joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec(pub(crate) Vec<KeyPart>);

impl KeySpec {
    pub(crate) fn ip() -> KeySpec {
        KeySpec(vec![KeyPart::Ip])
    }

    pub(crate) fn route() -> KeySpec {
        KeySpec(vec![KeyPart::Route])
    }

    pub(crate) fn parts(&self) -> &[KeyPart] {
        &self.0
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let texts = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(text) => vec![text],
            OneOrMany::Many(texts) => texts,
        };
        if texts.is_empty() {
            return Err(serde::de::Error::custom("a key needs at least one part"));
        }
        let parts = texts
            .iter()
            .map(|text| KeyPart::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(KeySpec(parts))
    }
}

/// How the client's address is found.
#[derive(Debug, Clone)]
pub(crate) struct ClientIp {
    pub(crate) trusted: Vec<IpNet>,
    pub(crate) ipv6_prefix: u8,
}

impl ClientIp {
    fn trusts(&self, address: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// The client's address: the peer's, unless the peer is a trusted proxy; then the first
    /// address from the right of `X-Forwarded-For` that is no trusted proxy. Every hop appends
    /// the address it got the request from, so only the entries a trusted hop added can be
    /// believed: the walk stops at the first it cannot read, taking the last trusted hop.
    pub(crate) fn resolve(&self, request: &Request) -> IpAddr {
        let peer = parse_ip(&request.client_ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if !self.trusts(peer) {
            return peer;
        }
        let hops = request.header_values("x-forwarded-for");
        let mut client = peer;
        for hop in hops.iter().rev().flat_map(|value| value.rsplit(',')) {
            match parse_ip(hop) {
                Some(address) if self.trusts(address) => client = address,
                Some(address) => return address,
                None => break,
            }
        }
        client
    }

    /// The address as it is counted: IPv6 by its prefix.
    pub(crate) fn counted(&self, address: IpAddr) -> String {
        match address {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let prefix = self.ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                let network = Ipv6Addr::from(u128::from(v6) & mask);
                if prefix == 128 {
                    network.to_string()
                } else {
                    format!("{network}/{prefix}")
                }
            }
        }
    }
}

/// An address as a hop writes it: bare, `[v6]`, or with a port (`1.2.3.4:80`, `[v6]:80`).
/// IPv4-mapped IPv6 is the IPv4 address, so one client has one bucket whichever it came as.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let address = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse::<IpAddr>().ok())
        })?;
    Some(address.to_canonical())
}

/// SHA-256, as lower-case hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What the key parts read from a request, before they are joined.
pub(crate) struct KeySource<'a> {
    request: &'a Request<'a>,
    client_ip: &'a ClientIp,
    api_key_header: &'a str,
    /// The client's address as counted, found once for all the request's limits.
    counted_ip: OnceCell<String>,
}

impl<'a> KeySource<'a> {
    pub(crate) fn new(
        request: &'a Request<'a>,
        client_ip: &'a ClientIp,
        api_key_header: &'a str,
    ) -> Self {
        KeySource {
            request,
            client_ip,
            api_key_header,
            counted_ip: OnceCell::new(),
        }
    }

    fn value(&self, part: &KeyPart) -> Option<String> {
        let value = match part {
            KeyPart::Ip => {
                let counted = self
                    .counted_ip
                    .get_or_init(|| self.client_ip.counted(self.client_ip.resolve(self.request)));
                return Some(counted.clone());
            }
            KeyPart::Route => return Some(String::new()),
            KeyPart::ApiKey => {
                let key = self.request.header(self.api_key_header)?;
                return (!key.is_empty()).then(|| sha256_hex(key.as_bytes()));
            }
            KeyPart::Subject => self.request.context(SUBJECT),
            KeyPart::Consumer => self.request.context(CONSUMER),
            KeyPart::Header(name) => self.request.header(name),
            KeyPart::Param(name) => self.request.route_param(name),
        }?;
        (!value.is_empty()).then_some(value)
    }

    /// The key's value for the store, or `None` if a part is missing from the request.
    pub(crate) fn key(&self, spec: &KeySpec) -> Option<String> {
        let mut joined = String::new();
        for part in spec.parts() {
            let value = self.value(part)?;
            if !joined.is_empty() {
                joined.push('|');
            }
            joined.push_str(part.tag());
            if !value.is_empty() {
                joined.push('=');
                joined.push_str(&value);
            }
        }
        Some(plain_or_hashed(joined))
    }
}

/// The value as it is, if short and plain; else its hash, so that a client's header never
/// writes a long or strange key.
fn plain_or_hashed(value: String) -> String {
    let plain = value.len() <= MAX_PLAIN_VALUE
        && value.bytes().all(|byte| {
            byte.is_ascii_alphanumeric()
                || matches!(byte, b'.' | b'_' | b'-' | b':' | b'|' | b'=' | b'/' | b'@')
        });
    if plain {
        value
    } else {
        format!("h={}", sha256_hex(value.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_as_hops_write_them() {
        assert_eq!(
            parse_ip(" 203.0.113.7 "),
            Some(IpAddr::from([203, 0, 113, 7]))
        );
        assert_eq!(
            parse_ip("203.0.113.7:8080"),
            Some(IpAddr::from([203, 0, 113, 7]))
        );
        assert_eq!(parse_ip("[2001:db8::1]:443"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("[2001:db8::1]"), "2001:db8::1".parse().ok());
        assert_eq!(
            parse_ip("::ffff:192.0.2.1"),
            Some(IpAddr::from([192, 0, 2, 1]))
        );
        assert_eq!(parse_ip("unknown"), None);
        assert_eq!(parse_ip(""), None);
    }

    #[test]
    fn ipv6_clients_are_counted_by_prefix() {
        let by_64 = ClientIp {
            trusted: vec![],
            ipv6_prefix: 64,
        };
        let address: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("address");
        assert_eq!(by_64.counted(address), "2001:db8:1:2::/64");
        let each = ClientIp {
            trusted: vec![],
            ipv6_prefix: 128,
        };
        assert_eq!(each.counted(address), "2001:db8:1:2:aaaa::1");
        assert_eq!(each.counted(IpAddr::from([192, 0, 2, 1])), "192.0.2.1");
    }

    #[test]
    fn unplain_values_are_hashed() {
        assert_eq!(
            plain_or_hashed("sub=alice@example.com".to_owned()),
            "sub=alice@example.com"
        );
        let hashed = plain_or_hashed("x-tenant=a b".to_owned());
        assert!(hashed.starts_with("h=") && hashed.len() == 66, "{hashed}");
        assert!(plain_or_hashed("a".repeat(200)).starts_with("h="));
    }

    #[test]
    fn key_parts_parse_and_refuse_what_they_do_not_know() {
        assert_eq!(
            KeyPart::parse("header:X-Tenant"),
            Ok(KeyPart::Header("x-tenant".to_owned()))
        );
        assert_eq!(
            KeyPart::parse("param:service"),
            Ok(KeyPart::Param("service".to_owned()))
        );
        assert!(KeyPart::parse("header:").is_err());
        assert!(KeyPart::parse("cookie").is_err());
    }
}
