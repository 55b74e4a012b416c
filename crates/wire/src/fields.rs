//! Header fields the gateway itself writes, named and formatted once for every layer: the
//! request id that ties a request's log lines together, and client addresses as text (for
//! `X-Forwarded-For` and for filters asking who the client is).

use std::io::Write;
use std::net::IpAddr;

use http::header::HeaderName;

/// The request id header, as the client, the upstream and every log line see it.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Writes `ip` as text into `out` (an IPv6 address takes at most 45 bytes) and returns the
/// length. IPv4, nearly every client, is written digit by digit: `Display` costs several times
/// as much, once per request.
#[inline]
pub fn ip_text(ip: IpAddr, out: &mut [u8; 64]) -> usize {
    match ip {
        IpAddr::V4(v4) => {
            let mut length = 0;
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    out[length] = b'.';
                    length += 1;
                }
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(octet).as_bytes();
                out[length..length + digits.len()].copy_from_slice(digits);
                length += digits.len();
            }
            length
        }
        IpAddr::V6(_) => {
            let mut cursor = std::io::Cursor::new(&mut out[..]);
            let _ = write!(cursor, "{ip}");
            usize::try_from(cursor.position()).unwrap_or(0)
        }
    }
}

/// `ip` as text, as [`ip_text`] writes it: for filters asking for the client's address.
#[inline]
pub fn ip_string(ip: IpAddr) -> String {
    let mut out = [0; 64];
    let length = ip_text(ip, &mut out);
    // Digits, dots, colons and hex letters: always ASCII.
    String::from_utf8_lossy(&out[..length]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.0",
            "::1",
            "2001:db8::ff",
        ] {
            let ip: IpAddr = ip.parse().expect("an address");
            let mut out = [0; 64];
            let length = ip_text(ip, &mut out);
            assert_eq!(&out[..length], ip.to_string().as_bytes());
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }
}
