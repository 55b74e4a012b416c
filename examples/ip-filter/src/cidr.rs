//! CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`), parsed and matched with `std::net` alone.
//!
//! Three choices make a rule mean exactly one thing:
//!
//! - A bare address is a block of one: `127.0.0.1` is `127.0.0.1/32`, `::1` is `::1/128`.
//! - A network address with host bits set (`10.1.2.3/24`) is refused, not masked. It usually
//!   means a typo: did the writer mean the network `10.1.2.0/24` or the one address
//!   `10.1.2.3/32`? In an access rule, guessing wrong lets the wrong clients in, so the message
//!   offers both and lets the writer pick.
//! - An IPv4 address is one family whichever way it arrives. `::ffff:10.0.0.1` (how a dual-stack
//!   listener reports an IPv4 client) is matched as `10.0.0.1`, and a rule written in the mapped
//!   form with a prefix of at least 96 (`::ffff:10.0.0.0/104`) is stored as the IPv4 rule it
//!   means (`10.0.0.0/8`). Other IPv6 rules, `::/0` included, only match IPv6 clients.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A block of addresses: a network address and how many leading bits of it are fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a rule's text is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    NotAnAddress(String),
    /// The part after `/` is not a decimal number.
    PrefixNotANumber(String),
    /// The prefix length is longer than the address.
    PrefixOutOfRange {
        /// The prefix length as written.
        prefix: String,
        /// The family's address length in bits: 32 or 128.
        max: u8,
    },
    /// The address has bits set beyond the prefix.
    HostBitsSet {
        /// The network the writer may have meant.
        network: Cidr,
        /// The single address the writer may have meant.
        host: Cidr,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotAnAddress(text) => {
                write!(f, "`{text}` is not an IPv4 or IPv6 address")
            }
            ParseError::PrefixNotANumber(text) => {
                write!(f, "the prefix length `{text}` is not a number")
            }
            ParseError::PrefixOutOfRange { prefix, max } => {
                let family = if *max == 32 { "IPv4" } else { "IPv6" };
                write!(
                    f,
                    "the prefix length {prefix} is out of range for an {family} address (0 to {max})"
                )
            }
            ParseError::HostBitsSet { network, host } => write!(
                f,
                "host bits are set beyond the prefix: write `{network}` for the network or \
                 `{host}` for the one address"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

impl Cidr {
    /// Parses `address/prefix`, or a bare address as a block of one.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let (address_text, prefix_text) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address_text
            .parse()
            .map_err(|_| ParseError::NotAnAddress(address_text.to_owned()))?;
        let max = bits(address);
        let prefix = match prefix_text {
            None => max,
            Some(prefix_text) => parse_prefix(prefix_text, max)?,
        };
        let network = masked(address, prefix);
        if network != address {
            return Err(ParseError::HostBitsSet {
                network: Cidr { network, prefix }.canonical(),
                host: Cidr {
                    network: address,
                    prefix: max,
                }
                .canonical(),
            });
        }
        Ok(Cidr { network, prefix }.canonical())
    }

    /// Whether the address lies in this block. An IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        let same_family = self.network.is_ipv4() == address.is_ipv4();
        same_family && masked(address, self.prefix) == self.network
    }

    /// A mapped-IPv4 block that covers only IPv4 addresses becomes that IPv4 block, so it
    /// matches the canonical (IPv4) form `contains` compares against.
    fn canonical(self) -> Self {
        match self.network {
            IpAddr::V6(network) if self.prefix >= 96 => match network.to_ipv4_mapped() {
                Some(network) => Cidr {
                    network: IpAddr::V4(network),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn parse_prefix(text: &str, max: u8) -> Result<u8, ParseError> {
    // `u8::from_str` would also take `+8`; a rule is clearer held to plain digits.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::PrefixNotANumber(text.to_owned()));
    }
    let out_of_range = || ParseError::PrefixOutOfRange {
        prefix: text.to_owned(),
        max,
    };
    let prefix: u8 = text.parse().map_err(|_| out_of_range())?;
    if prefix > max {
        return Err(out_of_range());
    }
    Ok(prefix)
}

/// The address with every bit past the first `prefix` cleared.
fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(address) => {
            // A shift by the full width (prefix 0) overflows; that mask keeps nothing.
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(address.to_bits() & mask))
        }
        IpAddr::V6(address) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(address.to_bits() & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn parses_blocks_into_their_canonical_form() {
        // (rule, how it prints once parsed)
        let cases = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("127.0.0.1/32", "127.0.0.1/32"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("192.168.1.128/25", "192.168.1.128/25"),
            ("::/0", "::/0"),
            ("::1/128", "::1/128"),
            ("::1", "::1/128"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8:0:0::/64", "2001:db8::/64"),
            ("fe80::/10", "fe80::/10"),
            // Mapped IPv4 with a prefix inside the IPv4 part is the IPv4 rule it means.
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
            ("::ffff:10.0.0.1", "10.0.0.1/32"),
            // A shorter prefix reaches past the mapped range, so it stays IPv6.
            ("::fffe:0:0/95", "::fffe:0:0/95"),
            ("0008::/16", "8::/16"),
            ("10.0.0.0/08", "10.0.0.0/8"),
        ];
        for (text, expected) in cases {
            assert_eq!(cidr(text).to_string(), expected, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_block_saying_why() {
        // (rule, message)
        let cases = [
            ("", "`` is not an IPv4 or IPv6 address"),
            ("/8", "`` is not an IPv4 or IPv6 address"),
            ("10.0.0/8", "`10.0.0` is not an IPv4 or IPv6 address"),
            (
                "10.0.0.256/32",
                "`10.0.0.256` is not an IPv4 or IPv6 address",
            ),
            ("010.0.0.0/8", "`010.0.0.0` is not an IPv4 or IPv6 address"),
            (" 10.0.0.0/8", "` 10.0.0.0` is not an IPv4 or IPv6 address"),
            ("localhost", "`localhost` is not an IPv4 or IPv6 address"),
            (
                "fe80::1%eth0/64",
                "`fe80::1%eth0` is not an IPv4 or IPv6 address",
            ),
            ("[::1]/128", "`[::1]` is not an IPv4 or IPv6 address"),
            ("10.0.0.0/", "the prefix length `` is not a number"),
            ("10.0.0.0/+8", "the prefix length `+8` is not a number"),
            ("10.0.0.0/-1", "the prefix length `-1` is not a number"),
            ("10.0.0.0/8/9", "the prefix length `8/9` is not a number"),
            ("10.0.0.0/8 ", "the prefix length `8 ` is not a number"),
            (
                "10.0.0.0/255.0.0.0",
                "the prefix length `255.0.0.0` is not a number",
            ),
            (
                "10.0.0.0/33",
                "the prefix length 33 is out of range for an IPv4 address (0 to 32)",
            ),
            (
                "10.0.0.0/256",
                "the prefix length 256 is out of range for an IPv4 address (0 to 32)",
            ),
            (
                "10.0.0.0/99999999999999999999",
                "the prefix length 99999999999999999999 is out of range for an IPv4 address \
                 (0 to 32)",
            ),
            (
                "::/129",
                "the prefix length 129 is out of range for an IPv6 address (0 to 128)",
            ),
            (
                "10.1.2.3/24",
                "host bits are set beyond the prefix: write `10.1.2.0/24` for the network or \
                 `10.1.2.3/32` for the one address",
            ),
            (
                "10.0.0.1/0",
                "host bits are set beyond the prefix: write `0.0.0.0/0` for the network or \
                 `10.0.0.1/32` for the one address",
            ),
            (
                "2001:db8::1/64",
                "host bits are set beyond the prefix: write `2001:db8::/64` for the network or \
                 `2001:db8::1/128` for the one address",
            ),
            (
                "::ffff:10.1.2.3/120",
                "host bits are set beyond the prefix: write `10.1.2.0/24` for the network or \
                 `10.1.2.3/32` for the one address",
            ),
        ];
        for (text, expected) in cases {
            let error = Cidr::parse(text).expect_err(text);
            assert_eq!(error.to_string(), expected, "{text}");
        }
    }

    #[test]
    fn matches_addresses_inside_the_block_only() {
        // (rule, address, inside)
        let cases = [
            ("10.0.0.0/8", "10.0.0.0", true),
            ("10.0.0.0/8", "10.255.255.255", true),
            ("10.0.0.0/8", "11.0.0.0", false),
            ("10.0.0.0/8", "9.255.255.255", false),
            ("192.168.1.128/25", "192.168.1.128", true),
            ("192.168.1.128/25", "192.168.1.255", true),
            ("192.168.1.128/25", "192.168.1.127", false),
            ("0.0.0.0/0", "0.0.0.0", true),
            ("0.0.0.0/0", "255.255.255.255", true),
            ("0.0.0.0/0", "::1", false),
            ("127.0.0.1/32", "127.0.0.1", true),
            ("127.0.0.1/32", "127.0.0.2", false),
            ("::/0", "::", true),
            ("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("::/0", "2001:db8::1", true),
            // An IPv4 client, however it arrives, is matched by IPv4 rules only.
            ("::/0", "10.0.0.1", false),
            ("::/0", "::ffff:10.0.0.1", false),
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("::1/128", "127.0.0.1", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("fe80::/10", "febf::1", true),
            ("fe80::/10", "fec0::1", false),
            // IPv4-mapped IPv6 clients match IPv4 rules.
            ("10.0.0.0/8", "::ffff:10.0.0.1", true),
            ("10.0.0.0/8", "::ffff:11.0.0.1", false),
            ("127.0.0.1/32", "::ffff:127.0.0.1", true),
            ("0.0.0.0/0", "::ffff:1.2.3.4", true),
            ("::ffff:10.0.0.0/104", "10.0.0.1", true),
            ("::ffff:10.0.0.0/104", "::ffff:10.0.0.1", true),
            // IPv4-compatible (`::a.b.c.d`, deprecated) is not mapped: it stays IPv6.
            ("10.0.0.0/8", "::10.0.0.1", false),
            ("::/96", "::10.0.0.1", true),
        ];
        for (rule, address, inside) in cases {
            assert_eq!(
                cidr(rule).contains(ip(address)),
                inside,
                "{rule} contains {address}"
            );
        }
    }
}
