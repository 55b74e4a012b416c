//! The allow and deny lists, parsed once when the route is loaded, and the decision for one
//! address, kept free of any request so every outcome can be tested on its own.

use std::fmt;
use std::net::IpAddr;

use crate::cidr::Cidr;

/// The parsed rules.
#[derive(Debug)]
pub struct Policy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

/// The decision for one address, with the rule that made it (for the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Inside this `allow` block and no `deny` block.
    Allowed(Cidr),
    /// In no `deny` block, and there is no `allow` list to be outside of.
    NotDenied,
    /// Inside this `deny` block; `allow` was not consulted.
    Denied(Cidr),
    /// Outside every `allow` block.
    NotAllowed,
}

impl Verdict {
    /// Whether the request may pass.
    pub fn passes(self) -> bool {
        matches!(self, Verdict::Allowed(_) | Verdict::NotDenied)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allowed(rule) => write!(f, "allowed by {rule}"),
            Verdict::NotDenied => f.write_str("allowed: no deny rule matches and allow is empty"),
            Verdict::Denied(rule) => write!(f, "refused by deny {rule}"),
            Verdict::NotAllowed => f.write_str("refused: no allow rule matches"),
        }
    }
}

impl Policy {
    /// Parses both lists. The error names the list, the entry's index and text, and the reason.
    pub fn new(allow: &[String], deny: &[String]) -> Result<Self, String> {
        let policy = Policy {
            allow: parse_list("allow", allow)?,
            deny: parse_list("deny", deny)?,
        };
        if policy.allow.is_empty() && policy.deny.is_empty() {
            // An empty filter passes every request, so it only costs a call per request; far
            // more likely the lists went missing (a misspelt key is caught by serde, an
            // unfinished edit is not) and the route is open when it was meant to be closed.
            return Err(
                "allow and deny are both empty, so every request would pass: list the \
                 addresses to allow or deny (a filter that lets everything through is \
                 probably a mistake; to open the route, remove the filter from it)"
                    .to_owned(),
            );
        }
        Ok(policy)
    }

    /// Decides for one address. Deny is checked first, so it wins over allow.
    pub fn check(&self, address: IpAddr) -> Verdict {
        if let Some(rule) = self.deny.iter().find(|rule| rule.contains(address)) {
            return Verdict::Denied(*rule);
        }
        if self.allow.is_empty() {
            return Verdict::NotDenied;
        }
        match self.allow.iter().find(|rule| rule.contains(address)) {
            Some(rule) => Verdict::Allowed(*rule),
            None => Verdict::NotAllowed,
        }
    }
}

fn parse_list(key: &str, entries: &[String]) -> Result<Vec<Cidr>, String> {
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            Cidr::parse(entry).map_err(|reason| format!("{key}[{index}] `{entry}`: {reason}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|&entry| entry.to_owned()).collect()
    }

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy::new(&strings(allow), &strings(deny))
            .unwrap_or_else(|error| panic!("{allow:?} {deny:?}: {error}"))
    }

    #[test]
    fn deny_wins_then_allow_decides() {
        let admin = policy(&["10.0.0.0/8", "::1"], &["10.1.2.0/24"]);
        let open_but = policy(&[], &["192.0.2.0/24", "2001:db8::/32"]);
        // (policy, address, verdict as logged)
        let cases = [
            (&admin, "10.0.0.1", "allowed by 10.0.0.0/8"),
            (&admin, "10.1.2.3", "refused by deny 10.1.2.0/24"),
            (&admin, "10.1.3.3", "allowed by 10.0.0.0/8"),
            (&admin, "::ffff:10.1.2.3", "refused by deny 10.1.2.0/24"),
            (&admin, "::1", "allowed by ::1/128"),
            (&admin, "192.0.2.1", "refused: no allow rule matches"),
            (&admin, "::2", "refused: no allow rule matches"),
            (&open_but, "192.0.2.7", "refused by deny 192.0.2.0/24"),
            (&open_but, "2001:db8::7", "refused by deny 2001:db8::/32"),
            (
                &open_but,
                "198.51.100.7",
                "allowed: no deny rule matches and allow is empty",
            ),
        ];
        for (policy, address, expected) in cases {
            let address: IpAddr = address
                .parse()
                .unwrap_or_else(|error| panic!("{address}: {error}"));
            let verdict = policy.check(address);
            assert_eq!(verdict.to_string(), expected, "{address}");
            assert_eq!(
                verdict.passes(),
                expected.starts_with("allowed"),
                "{address}"
            );
        }
    }

    #[test]
    fn names_the_bad_entry() {
        // (allow, deny, message)
        let cases: [(&[&str], &[&str], &str); 3] = [
            (
                &["10.0.0.0/8", "10.0.0.0/33"],
                &[],
                "allow[1] `10.0.0.0/33`: the prefix length 33 is out of range for an IPv4 \
                 address (0 to 32)",
            ),
            (
                &["10.0.0.0/8"],
                &["10.1.2.3/24"],
                "deny[0] `10.1.2.3/24`: host bits are set beyond the prefix: write \
                 `10.1.2.0/24` for the network or `10.1.2.3/32` for the one address",
            ),
            (
                &[],
                &[],
                "allow and deny are both empty, so every request would pass: list the addresses \
                 to allow or deny (a filter that lets everything through is probably a mistake; \
                 to open the route, remove the filter from it)",
            ),
        ];
        for (allow, deny, expected) in cases {
            let error = Policy::new(&strings(allow), &strings(deny)).expect_err(expected);
            assert_eq!(error, expected);
        }
    }
}
