//! Reading forwarding headers: `X-Forwarded-For` and `X-Real-IP` nodes, RFC 7239
//! `Forwarded` elements, rightmost first, without reading past what is asked for.

use std::net::{IpAddr, Ipv6Addr};

/// One entry of a forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hop<'h> {
    Ip(IpAddr),
    Obfuscated(&'h str),
    /// `unknown`, or a `Forwarded` element without `for`.
    Unknown,
    Malformed,
}

/// The longest entry worth parsing: `for="[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"`
/// and a few parameters fit well within it.
pub(super) const MAX_ELEMENT: usize = 256;

/// The comma-separated elements of one header line, rightmost first, trimmed. With `quoted`,
/// commas inside double quotes do not separate (RFC 7239 quoted strings).
pub(super) struct RevElements<'h> {
    rest: Option<&'h [u8]>,
    quoted: bool,
}

impl<'h> RevElements<'h> {
    pub(super) fn new(bytes: &'h [u8], quoted: bool) -> Self {
        Self {
            rest: Some(bytes),
            quoted,
        }
    }
}

impl<'h> Iterator for RevElements<'h> {
    type Item = &'h [u8];

    fn next(&mut self) -> Option<&'h [u8]> {
        let rest = self.rest?;
        let mut in_quotes = false;
        let mut split = None;
        for (i, &b) in rest.iter().enumerate().rev() {
            if self.quoted && b == b'"' {
                in_quotes = !in_quotes;
            } else if b == b',' && !in_quotes {
                split = Some(i);
                break;
            }
        }
        let element = match split {
            Some(i) => {
                self.rest = Some(&rest[..i]);
                &rest[i + 1..]
            }
            None => {
                self.rest = None;
                rest
            }
        };
        Some(element.trim_ascii())
    }
}

/// Reads one node (`X-Forwarded-For` entry, `X-Real-IP` value, or `Forwarded` `for=` value
/// without its quotes): an address, optionally with a port, IPv6 optionally in brackets.
pub(super) fn node(element: &[u8]) -> Hop<'_> {
    if element.is_empty() || element.len() > MAX_ELEMENT {
        return Hop::Malformed;
    }
    let Ok(text) = std::str::from_utf8(element) else {
        return Hop::Malformed;
    };
    if text.eq_ignore_ascii_case("unknown") {
        return Hop::Unknown;
    }
    if let Some(id) = text.strip_prefix('_') {
        let valid = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        return if valid {
            Hop::Obfuscated(text)
        } else {
            Hop::Malformed
        };
    }
    parse_ip(text).map_or(Hop::Malformed, Hop::Ip)
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    // IPv4 with a port: exactly one colon.
    let (host, port) = text.split_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A decimal port, or an RFC 7239 obfuscated port (`_abc`).
fn valid_port(port: &str) -> bool {
    (!port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()))
        || port.strip_prefix('_').is_some_and(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

/// The `for` parameter of one RFC 7239 element (`for=192.0.2.60;proto=http;by=203.0.113.43`).
pub(super) fn forwarded_for(element: &[u8]) -> Hop<'_> {
    if element.len() > MAX_ELEMENT {
        return Hop::Malformed;
    }
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            return Hop::Malformed;
        };
        let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        if !name.eq_ignore_ascii_case(b"for") {
            continue;
        }
        if found.is_some() {
            // A parameter may appear once per element.
            return Hop::Malformed;
        }
        let value = match value {
            [b'"', inner @ .., b'"'] => inner,
            [b'"', ..] => return Hop::Malformed,
            value => value,
        };
        found = Some(value);
    }
    found.map_or(Hop::Unknown, node)
}

/// Splits `bytes` on `sep` outside double quotes.
fn split_unquoted(bytes: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut in_quotes = false;
    bytes.split(move |&b| {
        if b == b'"' {
            in_quotes = !in_quotes;
        }
        b == sep && !in_quotes
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::ip;
    use super::*;

    #[test]
    fn nodes_parse_in_every_usual_form() {
        let cases: [(&str, Hop<'_>); 14] = [
            ("192.0.2.60", Hop::Ip(ip("192.0.2.60"))),
            ("192.0.2.60:4711", Hop::Ip(ip("192.0.2.60"))),
            ("2001:db8::1", Hop::Ip(ip("2001:db8::1"))),
            ("[2001:db8::1]", Hop::Ip(ip("2001:db8::1"))),
            ("[2001:db8::1]:443", Hop::Ip(ip("2001:db8::1"))),
            ("[2001:db8::1]:_port", Hop::Ip(ip("2001:db8::1"))),
            ("unknown", Hop::Unknown),
            ("UNKNOWN", Hop::Unknown),
            ("_hidden.Proxy-1", Hop::Obfuscated("_hidden.Proxy-1")),
            ("_", Hop::Malformed),
            ("_bad!", Hop::Malformed),
            ("192.0.2.60:99999999", Hop::Malformed),
            ("[2001:db8::1", Hop::Malformed),
            ("example.com", Hop::Malformed),
        ];
        for (text, expected) in cases {
            assert_eq!(node(text.as_bytes()), expected, "{text}");
        }
        assert_eq!(node(b""), Hop::Malformed);
        assert_eq!(node(&[0xff, 0xfe]), Hop::Malformed);
        assert_eq!(node("1".repeat(MAX_ELEMENT + 1).as_bytes()), Hop::Malformed);
    }

    #[test]
    fn elements_come_rightmost_first_and_quotes_protect_commas() {
        let plain: Vec<_> = RevElements::new(b"a, b ,c", false).collect();
        assert_eq!(plain, [&b"c"[..], b"b", b"a"]);
        let quoted: Vec<_> = RevElements::new(br#"for="x,y";by=1, for=z"#, true).collect();
        assert_eq!(quoted, [&b"for=z"[..], br#"for="x,y";by=1"#]);
    }

    #[test]
    fn forwarded_elements_yield_their_for_parameter() {
        let cases: [(&str, Hop<'_>); 8] = [
            ("for=192.0.2.43", Hop::Ip(ip("192.0.2.43"))),
            (
                r#"For="[2001:db8:cafe::17]:4711""#,
                Hop::Ip(ip("2001:db8:cafe::17")),
            ),
            (
                "for=192.0.2.60;proto=http;by=203.0.113.43",
                Hop::Ip(ip("192.0.2.60")),
            ),
            (
                "proto=https; for = 198.51.100.17 ",
                Hop::Ip(ip("198.51.100.17")),
            ),
            ("for=_hidden", Hop::Obfuscated("_hidden")),
            ("proto=https", Hop::Unknown),
            ("for=1.2.3.4;for=5.6.7.8", Hop::Malformed),
            (r#"for="1.2.3.4"#, Hop::Malformed),
        ];
        for (text, expected) in cases {
            assert_eq!(forwarded_for(text.as_bytes()), expected, "{text}");
        }
        assert_eq!(forwarded_for(b"garbage"), Hop::Malformed);
    }
}
