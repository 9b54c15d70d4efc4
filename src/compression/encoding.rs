//! Content codings and `Accept-Encoding` negotiation (RFC 9110 §12.5.3).

use std::fmt;

use http::{HeaderMap, HeaderValue, header};
use serde::{Deserialize, Serialize};

/// A content coding the layer can produce.
///
/// Every variant exists whatever the enabled features; a coding whose feature is off
/// (`compression-br` for brotli, `compression-gzip` for gzip and deflate) is never
/// negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `br`, RFC 7932.
    Brotli,
    /// `gzip` (also asked for as `x-gzip`), RFC 1952.
    Gzip,
    /// `deflate`: the zlib format, RFC 1950, as HTTP defines it.
    Deflate,
}

impl Encoding {
    /// Every coding, in the layer's default order of preference.
    pub const ALL: [Encoding; 3] = [Encoding::Brotli, Encoding::Gzip, Encoding::Deflate];

    /// The coding's token, as in `Content-Encoding`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
        }
    }

    /// Whether this build can produce the coding.
    pub const fn is_available(self) -> bool {
        match self {
            Self::Brotli => cfg!(feature = "compression-br"),
            Self::Gzip | Self::Deflate => cfg!(feature = "compression-gzip"),
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    fn from_token(token: &[u8]) -> Option<Self> {
        if token.eq_ignore_ascii_case(b"br") {
            Some(Self::Brotli)
        } else if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
            Some(Self::Gzip)
        } else if token.eq_ignore_ascii_case(b"deflate") {
            Some(Self::Deflate)
        } else {
            None
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request's `Accept-Encoding` allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// Compress with this coding.
    Encode(Encoding),
    /// Send the body as it is.
    Identity,
    /// Neither a coding the server offers nor identity is acceptable
    /// (`identity;q=0` or `*;q=0`, and nothing else).
    NotAcceptable,
}

/// The codings a server offers, in its order of preference (ties between equal q-values go
/// to the earlier one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Offer {
    order: Vec<Encoding>,
}

impl Offer {
    pub(crate) fn new(order: impl IntoIterator<Item = Encoding>) -> Self {
        let mut offer = Self { order: Vec::new() };
        for encoding in order {
            if encoding.is_available() && !offer.order.contains(&encoding) {
                offer.order.push(encoding);
            }
        }
        offer
    }

    pub(crate) fn remove(&mut self, encoding: Encoding) {
        self.order.retain(|offered| *offered != encoding);
    }

    pub(crate) fn add(&mut self, encoding: Encoding) {
        if encoding.is_available() && !self.order.contains(&encoding) {
            self.order.push(encoding);
        }
    }

    pub(crate) fn order(&self) -> &[Encoding] {
        &self.order
    }

    /// Picks the coding for a request with these headers.
    ///
    /// No `Accept-Encoding` means identity (RFC 9110 allows any coding then, but clients
    /// that can decode say so). A header that does not parse means identity too: a
    /// malformed header never turns into an error response.
    pub(crate) fn negotiate(&self, headers: &HeaderMap) -> Negotiated {
        let mut values = headers.get_all(header::ACCEPT_ENCODING).iter().peekable();
        if values.peek().is_none() {
            return Negotiated::Identity;
        }
        let mut accept = Accept::default();
        for value in values {
            if accept.parse(value.as_bytes()).is_none() {
                return Negotiated::Identity;
            }
        }
        accept.choose(&self.order)
    }
}

/// The q-values (in thousandths) a header gave each coding of interest.
#[derive(Default)]
struct Accept {
    /// Indexed by [`Encoding::index`].
    codings: [Option<u16>; 3],
    identity: Option<u16>,
    star: Option<u16>,
}

impl Accept {
    /// Adds one header line; `None` when it does not parse.
    fn parse(&mut self, line: &[u8]) -> Option<()> {
        for item in line.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let token = trim(parts.next().unwrap_or_default());
            if token.is_empty() {
                // `gzip,,br` and a trailing comma are allowed by the list syntax.
                if parts.next().is_some() {
                    return None;
                }
                continue;
            }
            if !token.iter().all(|&b| is_tchar(b)) {
                return None;
            }
            let mut q = 1000;
            for param in parts {
                let param = trim(param);
                let (name, value) = split_once(param, b'=')?;
                let name = trim(name);
                if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                    return None;
                }
                if name.eq_ignore_ascii_case(b"q") {
                    q = parse_qvalue(trim(value))?;
                }
                // Other parameters carry no meaning for content codings: ignored.
            }
            let slot = if token == b"*" {
                &mut self.star
            } else if token.eq_ignore_ascii_case(b"identity") {
                &mut self.identity
            } else if let Some(encoding) = Encoding::from_token(token) {
                &mut self.codings[encoding.index()]
            } else {
                continue;
            };
            // A coding listed twice keeps its highest weight.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        Some(())
    }

    fn choose(&self, offer: &[Encoding]) -> Negotiated {
        let mut best: Option<(Encoding, u16)> = None;
        for &encoding in offer {
            let q = self.codings[encoding.index()].or(self.star).unwrap_or(0);
            if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
                best = Some((encoding, q));
            }
        }
        // Identity is acceptable unless excluded, by name or by `*;q=0`.
        let identity = self.identity.or(self.star.filter(|&q| q == 0)).unwrap_or(1);
        match best {
            // On a tie with identity the server prefers to compress.
            Some((encoding, q)) if q >= identity => Negotiated::Encode(encoding),
            _ if identity > 0 => Negotiated::Identity,
            Some((encoding, _)) => Negotiated::Encode(encoding),
            None => Negotiated::NotAcceptable,
        }
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(value: &[u8]) -> Option<u16> {
    let (&first, rest) = value.split_first()?;
    let whole = match first {
        b'0' => 0,
        b'1' => 1000,
        _ => return None,
    };
    let decimals = match rest {
        [] => return Some(whole),
        [b'.', decimals @ ..] if decimals.len() <= 3 => decimals,
        _ => return None,
    };
    let mut thousandths = 0u16;
    for (i, &digit) in decimals.iter().enumerate() {
        if !digit.is_ascii_digit() {
            return None;
        }
        thousandths += u16::from(digit - b'0') * [100, 10, 1][i];
    }
    if whole == 1000 && thousandths != 0 {
        return None;
    }
    Some(whole + thousandths)
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|&b| b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

/// RFC 9110 `tchar`, plus `*` which is one.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn negotiate_with(offer: &[Encoding], values: &[&str]) -> Negotiated {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        Offer::new(offer.iter().copied()).negotiate(&headers)
    }

    fn negotiate(value: &str) -> Negotiated {
        negotiate_with(&Encoding::ALL, &[value])
    }

    use Negotiated::{Encode, Identity, NotAcceptable};

    const BR: Negotiated = Encode(Encoding::Brotli);
    const GZIP: Negotiated = Encode(Encoding::Gzip);
    const DEFLATE: Negotiated = Encode(Encoding::Deflate);

    #[test]
    fn the_negotiation_table() {
        let table: &[(&str, Negotiated)] = &[
            ("gzip, deflate, br", BR),
            ("br;q=0, gzip", GZIP),
            ("gzip", GZIP),
            ("x-gzip", GZIP),
            ("GZIP", GZIP),
            ("  gzip  ;  q = 0.5 ", GZIP),
            ("deflate", DEFLATE),
            ("Br", BR),
            ("gzip;q=1.0, br;q=0.999", GZIP),
            ("gzip;q=0.5, br;q=0.5", BR),
            ("gzip;q=0.5, deflate;q=0.5", GZIP),
            ("gzip;q=0.001", GZIP),
            ("gzip;q=0", Identity),
            ("gzip;q=0.000", Identity),
            ("*", BR),
            ("*;q=0.5, br;q=0", GZIP),
            ("*;q=0", NotAcceptable),
            ("identity", Identity),
            ("identity;q=0", NotAcceptable),
            ("identity;q=0, gzip", GZIP),
            ("identity;q=0, *;q=0", NotAcceptable),
            ("identity;q=1, gzip;q=0.5", Identity),
            ("identity;q=0.5, gzip;q=0.5", GZIP),
            ("*;q=0, identity", Identity),
            ("compress, zstd", Identity),
            ("", Identity),
            (",", Identity),
            ("gzip,,br,", BR),
            ("gzip;level=9", GZIP),
            ("gzip;q=0.5;foo=bar", GZIP),
            ("gzip;q=0.5, gzip;q=0.9, br;q=0.8", GZIP),
        ];
        for (header, expected) in table {
            assert_eq!(negotiate(header), *expected, "Accept-Encoding: {header:?}");
        }
    }

    #[test]
    fn malformed_headers_mean_identity() {
        for header in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=-1",
            "gzip;q=",
            "gzip;q",
            "gzip;q=abc",
            "gzip;q=.5",
            "gzip;q=1.001",
            "gzip;=0.5",
            "gz ip",
            "gzip;q=0.5 0",
            ";q=1",
            "br\"",
        ] {
            assert_eq!(negotiate(header), Identity, "Accept-Encoding: {header:?}");
        }
    }

    #[test]
    fn non_ascii_bytes_mean_identity() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"gzip\xff, br").unwrap(),
        );
        assert_eq!(Offer::new(Encoding::ALL).negotiate(&headers), Identity);
    }

    #[test]
    fn no_header_means_identity_and_lines_combine() {
        assert_eq!(negotiate_with(&Encoding::ALL, &[]), Identity);
        assert_eq!(negotiate_with(&Encoding::ALL, &["gzip;q=0.5", "br"]), BR);
        assert_eq!(
            negotiate_with(&Encoding::ALL, &["gzip", "br;q=bad"]),
            Identity
        );
    }

    #[test]
    fn the_server_order_breaks_ties_and_switched_off_codings_are_never_chosen() {
        let gzip_first = [Encoding::Gzip, Encoding::Brotli];
        assert_eq!(negotiate_with(&gzip_first, &["br, gzip"]), GZIP);
        assert_eq!(negotiate_with(&gzip_first, &["br;q=1, gzip;q=0.9"]), BR);
        assert_eq!(negotiate_with(&[Encoding::Gzip], &["br"]), Identity);
        assert_eq!(
            negotiate_with(&[Encoding::Gzip], &["br, identity;q=0"]),
            NotAcceptable
        );
        assert_eq!(negotiate_with(&[], &["gzip, br"]), Identity);
    }

    #[test]
    fn qvalues_parse_to_thousandths() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0.123"), Some(123));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"1.0000"), None);
        assert_eq!(parse_qvalue(b"01"), None);
    }
}
