//! A worked example filter: lets a request through or refuses it by the client's IP address.
//!
//! Written only against `gateway-sdk` (and `serde` for the config), with the CIDR parsing and
//! matching done by hand on `std::net` types, so it shows everything a filter needs and nothing
//! else. Put it on a route with allow and deny lists of CIDR blocks:
//!
//! ```yaml
//! filters:
//!   ip-filter:
//!     module: gateway_example_ip_filter.wasm
//! routes:
//!   - name: admin
//!     match: { path_prefix: /admin }
//!     service: users
//!     filters:
//!       - filter: ip-filter
//!         config:
//!           allow: [10.0.0.0/8, 127.0.0.1/32, "::1/128"]   # if not empty, only these pass
//!           deny: [10.1.2.0/24]                          # checked first: wins over allow
//!           trust_forwarded_for: false                   # decide on the connection's address
//!           status: 403                                  # the refusal's status (the default)
//! ```
//!
//! A refused request is answered in the gateway's JSON error shape with the code
//! `IP_NOT_ALLOWED`:
//!
//! ```json
//! {"code":"IP_NOT_ALLOWED","error":"10.1.2.3 is not allowed","request_id":"...","timestamp":"..."}
//! ```
//!
//! The message names the address the decision was about. That is the client's own address (or
//! the one your proxy reported for it), so it tells the client nothing it could not know, and
//! it answers the first question of whoever debugs a refusal: "which address did the gateway
//! see?", which is not obvious behind NAT, a proxy or a dual-stack listener. It is printed from
//! the parsed address, never copied from a header, so nothing the client wrote is reflected.
//! The message is the same whichever list refused: the rule that decided goes to the debug log,
//! not to the client.
//!
//! The filter only takes part in the request phase, and has the client's address (and, when it
//! trusts it, `X-Forwarded-For`) handed over with the call. Everything in the config is checked
//! when the route is loaded, and a bad entry is refused with its list, index and reason (see
//! [`cidr`] for how rules are read, including why `10.1.2.3/24` is an error rather than
//! `10.1.2.0/24`).

pub mod cidr;
pub mod config;
mod policy;

use std::fmt;
use std::net::IpAddr;

use gateway_sdk::log::{self, Level};
use gateway_sdk::{Action, Filter, Headers, Phases, Reads, Reply, Request};

use crate::config::Config;
use crate::policy::Policy;

/// The code of the refusal in the gateway's JSON error shape.
pub const ERROR_CODE: &str = "IP_NOT_ALLOWED";

/// The filter, with its rules parsed once per instance from the route's [`Config`].
///
/// Loading the route checks, in order: no unknown keys and the right types (serde, with the
/// key's path); every `allow` and `deny` entry is a CIDR block ([`cidr::Cidr::parse`], the
/// message names the list, index and entry); at least one list is not empty; `status` is from
/// 400 to 599. The first problem found is the message.
#[derive(Debug)]
pub struct IpFilter {
    policy: Policy,
    trust_forwarded_for: bool,
    status: u16,
}

impl Filter for IpFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let policy = Policy::new(&config.allow, &config.deny)?;
        // A refusal with a 2xx or 3xx status would read as success (or a redirect to nowhere)
        // to clients and monitoring alike.
        if !(400..=599).contains(&config.status) {
            return Err(format!(
                "status must be an error status from 400 to 599, got {}",
                config.status
            ));
        }
        Ok(IpFilter {
            policy,
            trust_forwarded_for: config.trust_forwarded_for,
            status: config.status,
        })
    }

    fn phases(&self) -> Phases {
        Phases::REQUEST
    }

    // Every request reads the client's address, and the header when it is trusted: both come
    // with the call. The request id is only read to refuse, so it stays a lazy read.
    fn reads(&self) -> Reads {
        let reads = Reads::default().client_ip();
        if self.trust_forwarded_for {
            reads.request_header("x-forwarded-for")
        } else {
            reads
        }
    }

    fn on_request(&self, request: &mut Request) -> Action {
        let connection = request.client_ip();
        let Ok(connection) = connection.parse::<IpAddr>() else {
            // The gateway always sends an address; if that ever breaks, refusing keeps the
            // route closed rather than open to everyone.
            log::warn(&format!(
                "refused: the connection address `{connection}` is not an IP address"
            ));
            return Action::Respond(Reply::error(
                self.status,
                ERROR_CODE,
                "the client's address could not be read",
                request,
            ));
        };
        let (address, source) = if self.trust_forwarded_for {
            client_address(connection, &request.header_values("x-forwarded-for"))
        } else {
            (connection, Source::Connection)
        };
        // Rules hold IPv4 as IPv4 (see `cidr`), so a mapped client is decided, logged and
        // answered as the IPv4 address the rules are written in.
        let address = address.to_canonical();
        let verdict = self.policy.check(address);
        // Every request makes this line; where debug is off, skip formatting it.
        if log::enabled(Level::Debug) {
            log::debug(&format!("{address} (from {source}): {verdict}"));
        }
        if verdict.passes() {
            Action::Continue
        } else {
            Action::Respond(Reply::error(
                self.status,
                ERROR_CODE,
                &format!("{address} is not allowed"),
                request,
            ))
        }
    }
}

/// Where the address a decision is about came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The connection's own address.
    Connection,
    /// The entry the proxy in front of the gateway added to `X-Forwarded-For`.
    ForwardedFor,
    /// The connection's address, because the `X-Forwarded-For` entry was not an address.
    Unusable(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Connection => f.write_str("the connection"),
            Source::ForwardedFor => f.write_str("X-Forwarded-For"),
            Source::Unusable(entry) => write!(
                f,
                "the connection; the X-Forwarded-For entry `{entry}` is not an IP address"
            ),
        }
    }
}

/// The address to decide on when `trust_forwarded_for` is set: the rightmost entry of
/// `X-Forwarded-For` that the gateway did not add itself, or the connection's address if there
/// is none or it is not a bare IP address.
///
/// Why the rightmost: each proxy appends the address it received the request from, so the
/// header reads `client-supplied..., what proxy 1 saw, what proxy 2 saw`. Everything left of the
/// entry your own proxy appended came from the client and can be forged; the entry your proxy
/// appended is the one value no client controls. The leftmost entry, often called "the
/// original client", is the easiest one to fake. With exactly one proxy of yours in front, its
/// entry is the last one it sent.
///
/// Why skip the last entry when it is the connection's address: the gateway appends the
/// connection's address to `X-Forwarded-For` before filters run, so in production the last
/// entry is the gateway's own record of the proxy. Comparing rather than always dropping it
/// keeps the filter right if the gateway ever stops appending, and in tests that send the
/// header as a client would. When the proxy's entry happens to equal its own address, skipping
/// it lands on the same address or falls back to the connection: the answer is the same.
///
/// Several `X-Forwarded-For` lines count as one comma-separated list, as HTTP defines.
pub fn client_address(connection: IpAddr, forwarded_for: &[String]) -> (IpAddr, Source) {
    let entries: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    let mut entries = entries.as_slice();
    if let [earlier @ .., last] = entries
        && last
            .parse::<IpAddr>()
            .is_ok_and(|last| last.to_canonical() == connection.to_canonical())
    {
        entries = earlier;
    }
    match entries.last() {
        None => (connection, Source::Connection),
        Some(entry) => match entry.parse() {
            Ok(address) => (address, Source::ForwardedFor),
            Err(_) => (connection, Source::Unusable((*entry).to_owned())),
        },
    }
}

// Only a component exports the handler; native builds exist for the unit tests.
gateway_sdk::export_filter!(IpFilter);

#[cfg(test)]
mod tests {
    use gateway_sdk::serde_json::{self, Value, json};
    use gateway_sdk::testing::{TestHost, TestRequest};

    use super::*;

    fn host(config: Value) -> TestHost<IpFilter> {
        TestHost::new(config.clone()).unwrap_or_else(|error| panic!("{config}: {error}"))
    }

    /// The status and JSON body of the refusal of `request`, or `None` if it passes.
    fn refusal(host: &mut TestHost<IpFilter>, mut request: TestRequest) -> Option<(u16, Value)> {
        match host.on_request(&mut request) {
            Action::Continue => None,
            Action::Respond(reply) => {
                assert_eq!(reply.header("content-type"), Some("application/json"));
                let body: Value = serde_json::from_slice(&reply.body)
                    .unwrap_or_else(|error| panic!("{}: {error}", reply.body_text()));
                Some((reply.status, body))
            }
        }
    }

    /// The message of the refusal of `request`, or `None` if it passes.
    fn message_for(host: &mut TestHost<IpFilter>, request: TestRequest) -> Option<String> {
        refusal(host, request).map(|(_, body)| body["error"].as_str().unwrap_or("").to_owned())
    }

    fn from(client_ip: &str) -> TestRequest {
        TestRequest::get("/admin").with_client_ip(client_ip)
    }

    #[test]
    fn takes_part_in_the_request_phase_only() {
        let host = host(json!({"allow": ["127.0.0.1"]}));
        assert_eq!(host.phases(), Phases::REQUEST);
    }

    #[test]
    fn refuses_clients_outside_the_allow_list_in_the_gateway_error_shape() {
        let mut host = host(json!({"allow": ["10.0.0.0/8", "127.0.0.1/32"]}));
        assert_eq!(refusal(&mut host, from("10.20.30.40")), None);
        assert_eq!(refusal(&mut host, from("127.0.0.1")), None);
        let (status, body) = refusal(&mut host, from("192.0.2.1")).expect("refused");
        assert_eq!(status, 403);
        assert_eq!(body["code"], "IP_NOT_ALLOWED");
        assert_eq!(body["error"], "192.0.2.1 is not allowed");
        assert_eq!(body["request_id"], "test-request");
        assert!(body["timestamp"].is_string(), "{body}");
    }

    #[test]
    fn deny_wins_over_allow() {
        let mut host = host(json!({"allow": ["10.0.0.0/8"], "deny": ["10.1.2.0/24"]}));
        // (client address, refusal message)
        let cases = [
            ("10.1.1.255", None),
            ("10.1.2.0", Some("10.1.2.0 is not allowed")),
            ("10.1.2.255", Some("10.1.2.255 is not allowed")),
            ("10.1.3.0", None),
        ];
        for (client, expected) in cases {
            let message = message_for(&mut host, from(client));
            assert_eq!(message.as_deref(), expected, "{client}");
        }
    }

    #[test]
    fn deny_alone_lets_everyone_else_through() {
        let mut host = host(json!({"deny": ["192.0.2.0/24", "2001:db8::/32"]}));
        // (client address, refusal message)
        let cases = [
            ("192.0.2.9", Some("192.0.2.9 is not allowed")),
            ("2001:db8::9", Some("2001:db8::9 is not allowed")),
            ("198.51.100.9", None),
            ("2001:db9::9", None),
        ];
        for (client, expected) in cases {
            let message = message_for(&mut host, from(client));
            assert_eq!(message.as_deref(), expected, "{client}");
        }
    }

    #[test]
    fn matches_ipv6_and_ipv4_mapped_clients() {
        let mut host = host(json!({
            "allow": ["10.0.0.0/8", "::1/128", "2001:db8::/48"],
            "deny": ["10.1.2.0/24"],
        }));
        // (client address as the gateway reports it, refusal message)
        let cases = [
            ("::1", None),
            ("2001:db8:0:ffff::1", None),
            ("2001:db8:1::1", Some("2001:db8:1::1 is not allowed")),
            ("::2", Some("::2 is not allowed")),
            // A dual-stack listener reports IPv4 clients mapped; IPv4 rules still apply, and the
            // reply shows the address in the form the rules are written in.
            ("::ffff:10.0.0.1", None),
            ("::ffff:10.1.2.3", Some("10.1.2.3 is not allowed")),
            ("::ffff:192.0.2.1", Some("192.0.2.1 is not allowed")),
            ("::ffff:127.0.0.1", Some("127.0.0.1 is not allowed")),
        ];
        for (client, expected) in cases {
            let message = message_for(&mut host, from(client));
            assert_eq!(message.as_deref(), expected, "{client}");
        }
    }

    #[test]
    fn ignores_x_forwarded_for_unless_trusted() {
        let mut host = host(json!({"allow": ["127.0.0.1"]}));
        let spoofed = from("192.0.2.1").with_header("x-forwarded-for", "127.0.0.1");
        assert_eq!(
            message_for(&mut host, spoofed).as_deref(),
            Some("192.0.2.1 is not allowed")
        );
        let local = from("127.0.0.1").with_header("x-forwarded-for", "192.0.2.1");
        assert_eq!(message_for(&mut host, local), None);
    }

    #[test]
    fn trusts_the_rightmost_x_forwarded_for_entry_not_added_by_the_gateway() {
        let config = json!({"allow": ["203.0.113.0/24"], "trust_forwarded_for": true});
        let mut host = host(config);
        // The proxy runs at 10.0.0.5. (header lines, refusal message, log line)
        let cases: [(&[&str], Option<&str>, &str); 10] = [
            // As the gateway presents it: the proxy's entry, then the gateway's own.
            (
                &["203.0.113.7, 10.0.0.5"],
                None,
                "203.0.113.7 (from X-Forwarded-For): allowed by 203.0.113.0/24",
            ),
            // The client's own claim, left of the proxy's entry, is not believed.
            (
                &["203.0.113.7, 192.0.2.1, 10.0.0.5"],
                Some("192.0.2.1 is not allowed"),
                "192.0.2.1 (from X-Forwarded-For): refused: no allow rule matches",
            ),
            // As a client would send it, without the gateway's entry.
            (
                &["192.0.2.1,203.0.113.7"],
                None,
                "203.0.113.7 (from X-Forwarded-For): allowed by 203.0.113.0/24",
            ),
            // Several lines are one list.
            (
                &["192.0.2.1", "203.0.113.7", "10.0.0.5"],
                None,
                "203.0.113.7 (from X-Forwarded-For): allowed by 203.0.113.0/24",
            ),
            // No header, or only the gateway's entry: the connection decides.
            (
                &[],
                Some("10.0.0.5 is not allowed"),
                "10.0.0.5 (from the connection): refused: no allow rule matches",
            ),
            (
                &["10.0.0.5"],
                Some("10.0.0.5 is not allowed"),
                "10.0.0.5 (from the connection): refused: no allow rule matches",
            ),
            // An entry that is not an address falls back to the connection.
            (
                &["203.0.113.7, unknown, 10.0.0.5"],
                Some("10.0.0.5 is not allowed"),
                "10.0.0.5 (from the connection; the X-Forwarded-For entry `unknown` is not an \
                 IP address): refused: no allow rule matches",
            ),
            (
                &["203.0.113.7:4711"],
                Some("10.0.0.5 is not allowed"),
                "10.0.0.5 (from the connection; the X-Forwarded-For entry `203.0.113.7:4711` \
                 is not an IP address): refused: no allow rule matches",
            ),
            (
                &["203.0.113.7, "],
                Some("10.0.0.5 is not allowed"),
                "10.0.0.5 (from the connection; the X-Forwarded-For entry `` is not an IP \
                 address): refused: no allow rule matches",
            ),
            // IPv6 and mapped entries are read like the connection's address.
            (
                &["::ffff:203.0.113.7, ::ffff:10.0.0.5"],
                None,
                "203.0.113.7 (from X-Forwarded-For): allowed by 203.0.113.0/24",
            ),
        ];
        for (lines, expected, log) in cases {
            let request = lines.iter().fold(from("10.0.0.5"), |request, line| {
                request.with_header("x-forwarded-for", line)
            });
            let message = message_for(&mut host, request);
            assert_eq!(message.as_deref(), expected, "{lines:?}");
            let logs = host.logs();
            let last = logs.last().expect("a decision is logged");
            assert_eq!(last.level, Level::Debug, "{lines:?}");
            assert_eq!(last.message, log, "{lines:?}");
        }
    }

    #[test]
    fn client_address_picks_the_entry_left_of_the_gateways_own() {
        let ip = |text: &str| -> IpAddr {
            text.parse()
                .unwrap_or_else(|error| panic!("{text}: {error}"))
        };
        let connection = ip("::1");
        // (header lines, address, source)
        let cases: [(&[&str], &str, Source); 5] = [
            (&["2001:db8::1, ::1"], "2001:db8::1", Source::ForwardedFor),
            (&["::1, ::1"], "::1", Source::ForwardedFor),
            (&["::1"], "::1", Source::Connection),
            (&[" 2001:db8::2 "], "2001:db8::2", Source::ForwardedFor),
            (
                &["[2001:db8::1]"],
                "::1",
                Source::Unusable("[2001:db8::1]".to_owned()),
            ),
        ];
        for (lines, address, source) in cases {
            let lines: Vec<String> = lines.iter().map(|&line| line.to_owned()).collect();
            assert_eq!(
                client_address(connection, &lines),
                (ip(address), source),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn declares_the_address_and_the_header_it_trusts() {
        let connection = host(json!({"allow": ["127.0.0.1"]}));
        assert_eq!(connection.reads(), &Reads::default().client_ip());
        let forwarded = host(json!({"allow": ["127.0.0.1"], "trust_forwarded_for": true}));
        assert_eq!(
            forwarded.reads(),
            &Reads::default()
                .client_ip()
                .request_header("x-forwarded-for")
        );
    }

    #[test]
    fn refuses_with_the_configured_status() {
        let mut host = host(json!({"allow": ["127.0.0.1"], "status": 404}));
        let (status, body) = refusal(&mut host, from("192.0.2.1")).expect("refused");
        assert_eq!(status, 404);
        assert_eq!(body["code"], "IP_NOT_ALLOWED");
    }

    #[test]
    fn logs_every_decision_at_debug() {
        let mut host = host(json!({"allow": ["127.0.0.1"], "deny": ["192.0.2.0/24"]}));
        for client in ["127.0.0.1", "192.0.2.1", "198.51.100.1"] {
            refusal(&mut host, from(client));
        }
        let logs: Vec<(Level, String)> = host
            .logs()
            .into_iter()
            .map(|line| (line.level, line.message))
            .collect();
        assert_eq!(
            logs,
            [
                (
                    Level::Debug,
                    "127.0.0.1 (from the connection): allowed by 127.0.0.1/32".to_owned()
                ),
                (
                    Level::Debug,
                    "192.0.2.1 (from the connection): refused by deny 192.0.2.0/24".to_owned()
                ),
                (
                    Level::Debug,
                    "198.51.100.1 (from the connection): refused: no allow rule matches".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn refuses_when_the_connection_address_is_unreadable() {
        let mut host = host(json!({"deny": ["192.0.2.0/24"]}));
        let message = message_for(&mut host, from("not-an-address"));
        assert_eq!(
            message.as_deref(),
            Some("the client's address could not be read")
        );
        let logs = host.logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].level, Level::Warn);
        assert_eq!(
            logs[0].message,
            "refused: the connection address `not-an-address` is not an IP address"
        );
    }

    #[test]
    fn refuses_bad_configs_saying_why() {
        // (config, message)
        let cases = [
            (
                json!({}),
                "allow and deny are both empty, so every request would pass: list the addresses \
                 to allow or deny (a filter that lets everything through is probably a mistake; \
                 to open the route, remove the filter from it)",
            ),
            (
                json!({"allow": [], "deny": [], "status": 403}),
                "allow and deny are both empty, so every request would pass: list the addresses \
                 to allow or deny (a filter that lets everything through is probably a mistake; \
                 to open the route, remove the filter from it)",
            ),
            (
                json!({"allow": ["10.0.0.0/8", "10.0.0.0/33"]}),
                "allow[1] `10.0.0.0/33`: the prefix length 33 is out of range for an IPv4 \
                 address (0 to 32)",
            ),
            (
                json!({"allow": ["::1/129"]}),
                "allow[0] `::1/129`: the prefix length 129 is out of range for an IPv6 address \
                 (0 to 128)",
            ),
            (
                json!({"deny": ["10.1.2.3/24"]}),
                "deny[0] `10.1.2.3/24`: host bits are set beyond the prefix: write \
                 `10.1.2.0/24` for the network or `10.1.2.3/32` for the one address",
            ),
            (
                json!({"allow": ["localhost"]}),
                "allow[0] `localhost`: `localhost` is not an IPv4 or IPv6 address",
            ),
            (
                json!({"allow": ["10.0.0.0/eight"]}),
                "allow[0] `10.0.0.0/eight`: the prefix length `eight` is not a number",
            ),
            (
                json!({"allow": ["127.0.0.1"], "status": 302}),
                "status must be an error status from 400 to 599, got 302",
            ),
            (
                json!({"allow": ["127.0.0.1"], "status": 600}),
                "status must be an error status from 400 to 599, got 600",
            ),
            (
                json!({"allow": ["127.0.0.1"], "status": 399}),
                "status must be an error status from 400 to 599, got 399",
            ),
            (
                json!({"allow": ["127.0.0.1"], "trust_forwarded": true}),
                "invalid config at `trust_forwarded`: unknown field `trust_forwarded`, expected \
                 one of `allow`, `deny`, `trust_forwarded_for`, `status`",
            ),
            (
                json!({"allow": "127.0.0.1"}),
                "invalid config at `allow`: invalid type: string \"127.0.0.1\", expected a \
                 sequence",
            ),
            (
                json!({"allow": [10]}),
                "invalid config at `allow[0]`: invalid type: integer `10`, expected a string",
            ),
            (
                json!({"allow": ["127.0.0.1"], "status": 70000}),
                "invalid config at `status`: invalid value: integer `70000`, expected u16",
            ),
            (
                json!({"allow": ["127.0.0.1"], "trust_forwarded_for": "yes"}),
                "invalid config at `trust_forwarded_for`: invalid type: string \"yes\", \
                 expected a boolean",
            ),
            (
                json!(null),
                "invalid config: invalid type: null, expected struct Config",
            ),
        ];
        for (config, expected) in cases {
            let error = TestHost::<IpFilter>::new(config.clone())
                .err()
                .unwrap_or_else(|| panic!("{config} accepted"));
            assert_eq!(error, expected, "{config}");
        }
    }

    #[test]
    fn accepts_edge_blocks() {
        // (config, client address, passes)
        let cases = [
            (json!({"allow": ["0.0.0.0/0"]}), "198.51.100.1", true),
            (json!({"allow": ["0.0.0.0/0"]}), "::ffff:198.51.100.1", true),
            (json!({"allow": ["0.0.0.0/0"]}), "2001:db8::1", false),
            (json!({"allow": ["::/0"]}), "2001:db8::1", true),
            (json!({"allow": ["::/0"]}), "198.51.100.1", false),
            (json!({"deny": ["::/0"]}), "198.51.100.1", true),
            (json!({"allow": ["198.51.100.1/32"]}), "198.51.100.1", true),
            (json!({"allow": ["198.51.100.1/32"]}), "198.51.100.2", false),
            (json!({"allow": ["2001:db8::1/128"]}), "2001:db8::1", true),
            (json!({"allow": ["2001:db8::1/128"]}), "2001:db8::2", false),
            (
                json!({"allow": ["::ffff:198.51.100.0/120"]}),
                "198.51.100.9",
                true,
            ),
        ];
        for (config, client, passes) in cases {
            let mut host = host(config.clone());
            let passed = refusal(&mut host, from(client)).is_none();
            assert_eq!(passed, passes, "{config} from {client}");
        }
    }
}
