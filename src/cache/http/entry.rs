//! What an entry holds, how a request becomes a key, and the HTTP rules around both.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header, request::Parts};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::stats::Bypass;

/// A cached response: status, end-to-end headers and the identity body. Cloning shares it.
#[derive(Clone, Debug)]
pub(crate) struct CachedResponse(pub(crate) Arc<Stored>);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) status: u16,
    /// The handler's headers, less those the layer writes itself; `ETag` always present.
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) body: Bytes,
    /// The `ETag` value, also among `headers`.
    pub(crate) etag: Bytes,
    /// When the entry was computed, on [`now_ms`](crate::cache::now_ms)'s clock (for `Age`).
    pub(crate) stored_at_ms: u64,
    /// Whether compressed variants may be served (decided from the response when stored).
    #[serde(default)]
    pub(crate) compressible: bool,
}

/// A compressed variant of an entry's body, stored under a key naming the coding and the
/// entry's `ETag`, so it can only ever be served beside the body it was made from.
#[cfg(feature = "_compression")]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Variant {
    pub(crate) body: Bytes,
}

/// The key of an entry's variant in `coding`.
#[cfg(feature = "_compression")]
pub(crate) fn variant_key(key: &str, coding: &str, etag: &[u8]) -> String {
    let mut variant = String::with_capacity(key.len() + coding.len() + etag.len() + 4);
    variant.push_str(key);
    variant.push_str("\n~");
    variant.push_str(coding);
    variant.push('\u{1}');
    variant.push_str(&String::from_utf8_lossy(etag));
    variant
}

/// The `ETag` of a variant: a strong `"v"` becomes `"v-br"`, one per coding; a weak one
/// stays as it is (it already says "equivalent, not identical").
#[cfg(feature = "_compression")]
pub(crate) fn variant_etag(etag: &[u8], coding: &str) -> Bytes {
    if etag.starts_with(b"W/") {
        return Bytes::copy_from_slice(etag);
    }
    match etag.strip_suffix(b"\"") {
        Some(open) => Bytes::from([open, b"-", coding.as_bytes(), b"\""].concat()),
        None => Bytes::copy_from_slice(etag),
    }
}

impl Serialize for CachedResponse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for CachedResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Stored::deserialize(deserializer).map(|stored| Self(Arc::new(stored)))
    }
}

/// Headers never stored: hop-by-hop ones, and those the layer writes on every answer.
fn is_unstored(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::CONTENT_LENGTH
        || name == header::AGE
        || name == header::DATE
        || name == header::UPGRADE
        || name == header::TRAILER
        || name == header::TE
        || name.as_str() == "keep-alive"
        || name.as_str() == "x-cache"
}

impl Stored {
    pub(crate) fn new(
        status: u16,
        headers: &HeaderMap,
        body: Bytes,
        now_ms: u64,
        compressible: bool,
    ) -> Self {
        let mut kept: Vec<(String, Bytes)> = headers
            .iter()
            .filter(|(name, _)| !is_unstored(name))
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    Bytes::copy_from_slice(value.as_bytes()),
                )
            })
            .collect();
        let etag = match headers.get(header::ETAG) {
            Some(etag) => Bytes::copy_from_slice(etag.as_bytes()),
            None => {
                let etag = strong_etag(&body);
                kept.push((header::ETAG.as_str().to_owned(), etag.clone()));
                etag
            }
        };
        Self {
            status,
            headers: kept,
            body,
            etag,
            stored_at_ms: now_ms,
            compressible,
        }
    }

    /// The stored headers into `into`; names or values that no longer parse (foreign
    /// bytes from a remote backend) are skipped.
    pub(crate) fn write_headers(&self, into: &mut HeaderMap) {
        into.reserve(self.headers.len() + 3);
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                into.append(name, value);
            }
        }
    }

    pub(crate) fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(stored, _)| stored.as_str() == name.as_str())
            .map(|(_, value)| &value[..])
    }
}

/// `"` + 16 hex digits of the body's XXH3-64 + `"`.
pub(crate) fn strong_etag(body: &[u8]) -> Bytes {
    let hash = xxhash_rust::xxh3::xxh3_64(body);
    let mut etag = Vec::with_capacity(18);
    etag.push(b'"');
    for shift in (0..16).rev() {
        etag.push(b"0123456789abcdef"[((hash >> (shift * 4)) & 0xf) as usize]);
    }
    etag.push(b'"');
    Bytes::from(etag)
}

/// The directives of every `Cache-Control` field, lower-cased names with their values.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|directive| {
            let directive = directive.trim();
            if directive.is_empty() {
                return None;
            }
            Some(match directive.split_once('=') {
                Some((name, value)) => (
                    name.trim().to_ascii_lowercase(),
                    Some(value.trim().trim_matches('"')),
                ),
                None => (directive.to_ascii_lowercase(), None),
            })
        })
}

/// Whether the request asks not to be answered from a cache.
pub(crate) fn request_no_cache(headers: &HeaderMap) -> bool {
    directives(headers).any(|(name, _)| name == "no-cache" || name == "no-store")
        || headers
            .get_all(header::PRAGMA)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"no-cache"))
}

/// Why a response may not be shared, if it may not; `vary` holds the request headers
/// the key includes.
pub(crate) fn refuse_response(headers: &HeaderMap, vary: &[HeaderName]) -> Option<Bypass> {
    if headers.contains_key(header::SET_COOKIE) {
        return Some(Bypass::SetCookie);
    }
    if directives(headers)
        .any(|(name, _)| name == "private" || name == "no-store" || name == "no-cache")
    {
        return Some(Bypass::CacheControl);
    }
    for value in headers.get_all(header::VARY) {
        let Ok(value) = value.to_str() else {
            return Some(Bypass::Vary);
        };
        for name in value
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            if name == "*"
                || !vary
                    .iter()
                    .any(|held| held.as_str().eq_ignore_ascii_case(name))
            {
                return Some(Bypass::Vary);
            }
        }
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|coding| !coding.as_bytes().eq_ignore_ascii_case(b"identity"))
        && !vary.contains(&header::ACCEPT_ENCODING)
    {
        return Some(Bypass::Encoded);
    }
    None
}

/// The TTL a response gives itself: `s-maxage`, else `max-age`, in whole seconds.
pub(crate) fn response_ttl(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for (name, value) in directives(headers) {
        let seconds = value.and_then(|value| value.parse::<u64>().ok());
        match name.as_str() {
            "s-maxage" => s_maxage = s_maxage.or(seconds),
            "max-age" => max_age = max_age.or(seconds),
            _ => {}
        }
    }
    s_maxage.or(max_age).map(Duration::from_secs)
}

/// The storage key of a request: the path, its query parameters sorted, then each
/// varied-on header's values and the per-user key. Separators are characters a path,
/// query or header value cannot hold raw, so two different requests never share a key.
pub(crate) fn key(parts: &Parts, vary: &[HeaderName], user: Option<&str>) -> String {
    let path = parts.uri.path();
    let mut key = String::with_capacity(5 + path.len() + 16);
    key.push_str("http:");
    key.push_str(path);
    if let Some(query) = parts.uri.query() {
        let mut pairs: Vec<&str> = query.split('&').filter(|pair| !pair.is_empty()).collect();
        pairs.sort_unstable();
        for (i, pair) in pairs.iter().enumerate() {
            key.push(if i == 0 { '?' } else { '&' });
            key.push_str(pair);
        }
    }
    for name in vary {
        key.push('\n');
        key.push_str(name.as_str());
        for value in parts.headers.get_all(name) {
            key.push('\u{1}');
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    if let Some(user) = user {
        key.push_str("\nuser\u{1}");
        key.push_str(user);
    }
    key
}

/// Whether `If-None-Match` (weak comparison, lists, `*`) matches `etag`; `None` when the
/// request has none.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &[u8]) -> Option<bool> {
    let mut fields = headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    fields.peek()?;
    let opaque = |tag: &[u8]| -> Vec<u8> {
        let tag = tag.trim_ascii();
        tag.strip_prefix(b"W/").unwrap_or(tag).to_vec()
    };
    let ours = opaque(etag);
    Some(fields.any(|field| {
        field.as_bytes().split(|&b| b == b',').any(|candidate| {
            let candidate = candidate.trim_ascii();
            candidate == b"*" || (!candidate.is_empty() && opaque(candidate) == ours)
        })
    }))
}

/// Whether the entry was not modified since the request's `If-Modified-Since`; only asked
/// when the request has no `If-None-Match`, and only when the response set `Last-Modified`.
pub(crate) fn not_modified_since(headers: &HeaderMap, last_modified: Option<&[u8]>) -> bool {
    let (Some(since), Some(last)) = (headers.get(header::IF_MODIFIED_SINCE), last_modified) else {
        return false;
    };
    let parse = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| httpdate::parse_http_date(text.trim()).ok())
    };
    match (
        since.to_str().ok().and_then(|s| parse(s.as_bytes())),
        parse(last),
    ) {
        (Some(since), Some(last)) => last <= since,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn if_none_match_compares_weakly_over_lists_and_star() {
        let etag = b"\"abc\"";
        assert_eq!(if_none_match(&headers(&[]), etag), None);
        assert_eq!(
            if_none_match(&headers(&[("if-none-match", "\"abc\"")]), etag),
            Some(true)
        );
        assert_eq!(
            if_none_match(&headers(&[("if-none-match", "W/\"abc\"")]), etag),
            Some(true)
        );
        assert_eq!(
            if_none_match(&headers(&[("if-none-match", "\"x\", W/\"abc\"")]), etag),
            Some(true)
        );
        assert_eq!(
            if_none_match(&headers(&[("if-none-match", "*")]), etag),
            Some(true)
        );
        assert_eq!(
            if_none_match(&headers(&[("if-none-match", "\"abcd\"")]), etag),
            Some(false)
        );
        assert_eq!(
            if_none_match(&headers(&[("if-none-match", ",,")]), etag),
            Some(false)
        );
    }

    #[test]
    fn ttl_prefers_s_maxage_and_ignores_garbage() {
        assert_eq!(
            response_ttl(&headers(&[(
                "cache-control",
                "public, max-age=10, s-maxage=30"
            )])),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            response_ttl(&headers(&[("cache-control", "max-age=\"12\"")])),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            response_ttl(&headers(&[("cache-control", "max-age=-1")])),
            None
        );
        assert_eq!(
            response_ttl(&headers(&[(
                "cache-control",
                "max-age=99999999999999999999999"
            )])),
            None
        );
    }

    #[test]
    fn keys_sort_query_parameters_and_hold_varied_headers() {
        let parts = |uri: &str, lang: Option<&'static str>| {
            let mut request = http::Request::get(uri);
            if let Some(lang) = lang {
                request = request.header("accept-language", lang);
            }
            request.body(()).unwrap().into_parts().0
        };
        let vary = [header::ACCEPT_LANGUAGE];
        assert_eq!(
            key(&parts("/a?b=2&a=1", None), &[], None),
            key(&parts("/a?a=1&b=2", None), &[], None)
        );
        assert_ne!(
            key(&parts("/a?a=1", None), &[], None),
            key(&parts("/a?a=2", None), &[], None)
        );
        assert_ne!(
            key(&parts("/a", Some("en")), &vary, None),
            key(&parts("/a", Some("fr")), &vary, None)
        );
        assert_eq!(
            key(&parts("/a", Some("en")), &[], None),
            key(&parts("/a", Some("fr")), &[], None)
        );
        assert_ne!(
            key(&parts("/a", None), &[], Some("1")),
            key(&parts("/a", None), &[], Some("2"))
        );
    }

    #[test]
    fn if_modified_since_compares_dates() {
        let last = b"Wed, 21 Oct 2015 07:28:00 GMT";
        assert!(not_modified_since(
            &headers(&[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            Some(last)
        ));
        assert!(!not_modified_since(
            &headers(&[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]),
            Some(last)
        ));
        assert!(!not_modified_since(
            &headers(&[("if-modified-since", "garbage")]),
            Some(last)
        ));
        assert!(!not_modified_since(&headers(&[]), Some(last)));
    }
}
