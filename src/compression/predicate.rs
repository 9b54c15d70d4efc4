//! Which responses are worth compressing.

use http::{HeaderMap, header, response::Parts};

/// Decides whether a response is compressed, from its head and its body size when known.
///
/// The layer asks only about responses that compressing cannot break: it never compresses
/// a response that already has a `Content-Encoding`, carries `Cache-Control: no-transform`,
/// is a `206` or has a `Content-Range`, has no body (`HEAD`, `204`, `304`), or holds the
/// [`NoCompression`] extension. Whatever the predicate says, bodies below the layer's
/// minimum size stay as they are too.
///
/// The default, [`DefaultPredicate`], skips content types that are compressed already.
/// Closures `Fn(&Parts, Option<u64>) -> bool` are predicates, and [`Predicate::and`]
/// combines two:
///
/// ```
/// use http::response::Parts;
/// use perfkit::compression::{CompressionLayer, DefaultPredicate, Predicate};
///
/// // Never compress the downloads route's responses, which set this header.
/// let predicate = DefaultPredicate::new()
///     .and(|parts: &Parts, _size: Option<u64>| !parts.headers.contains_key("x-download"));
/// let layer = CompressionLayer::new().predicate(predicate);
/// # let _ = layer;
/// ```
pub trait Predicate: Clone {
    /// Whether to compress a response with this head and a body of `size` bytes (`None`
    /// when the body does not know its length).
    fn should_compress(&self, parts: &Parts, size: Option<u64>) -> bool;

    /// A predicate that compresses when both `self` and `other` say so.
    fn and<Other: Predicate>(self, other: Other) -> And<Self, Other>
    where
        Self: Sized,
    {
        And(self, other)
    }
}

impl<F> Predicate for F
where
    F: Fn(&Parts, Option<u64>) -> bool + Clone,
{
    fn should_compress(&self, parts: &Parts, size: Option<u64>) -> bool {
        self(parts, size)
    }
}

/// Two predicates that must both agree; see [`Predicate::and`].
#[derive(Clone, Copy, Debug, Default)]
pub struct And<A, B>(A, B);

impl<A: Predicate, B: Predicate> Predicate for And<A, B> {
    fn should_compress(&self, parts: &Parts, size: Option<u64>) -> bool {
        self.0.should_compress(parts, size) && self.1.should_compress(parts, size)
    }
}

/// The default rule: compress unless the content type is compressed already.
///
/// Skipped, by parsed MIME type (case and parameters ignored): `image/*` except
/// `image/svg+xml`, `audio/*`, `video/*`, the archive and compressed formats (`zip`,
/// `gzip`, `x-gzip`, `x-brotli`, `zstd`, `x-bzip2`, `x-xz`, `x-7z-compressed`,
/// `x-rar-compressed`, `vnd.rar`, `x-compress`), and fonts that are compressed inside
/// (`font/woff`, `font/woff2`, `application/font-woff`). A response without a
/// `Content-Type`, or with one that does not parse, is compressed.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPredicate(());

impl DefaultPredicate {
    /// The default rule.
    pub const fn new() -> Self {
        Self(())
    }
}

impl Predicate for DefaultPredicate {
    fn should_compress(&self, parts: &Parts, _: Option<u64>) -> bool {
        !matches!(mime(&parts.headers), Some((kind, subtype)) if is_compressed(kind, subtype))
    }
}

/// A response extension that keeps the layer from compressing that response.
///
/// ```
/// use http::Response;
/// use perfkit::compression::NoCompression;
///
/// let mut response = Response::new("already minimal");
/// response.extensions_mut().insert(NoCompression);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCompression;

/// The `type/subtype` of a `Content-Type`, or `None` when absent or malformed. Compare
/// the parts case-insensitively.
pub(crate) fn mime(headers: &HeaderMap) -> Option<(&str, &str)> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim();
    let (kind, subtype) = essence.split_once('/')?;
    let (kind, subtype) = (kind.trim(), subtype.trim());
    if kind.is_empty() || subtype.is_empty() || subtype.contains('/') {
        return None;
    }
    Some((kind, subtype))
}

/// `application/*` subtypes that are compressed already.
const COMPRESSED_APPLICATION: [&str; 12] = [
    "zip",
    "gzip",
    "x-gzip",
    "x-brotli",
    "zstd",
    "x-bzip2",
    "x-xz",
    "x-7z-compressed",
    "x-rar-compressed",
    "vnd.rar",
    "x-compress",
    "font-woff",
];

fn is_compressed(kind: &str, subtype: &str) -> bool {
    let any = |names: &[&str]| names.iter().any(|name| subtype.eq_ignore_ascii_case(name));
    if kind.eq_ignore_ascii_case("image") {
        !subtype.eq_ignore_ascii_case("svg+xml")
    } else if kind.eq_ignore_ascii_case("audio") || kind.eq_ignore_ascii_case("video") {
        true
    } else if kind.eq_ignore_ascii_case("font") {
        any(&["woff", "woff2"])
    } else if kind.eq_ignore_ascii_case("application") {
        any(&COMPRESSED_APPLICATION)
    } else {
        false
    }
}

/// Content types whose bodies are read as they arrive, frame by frame.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    let Some((kind, subtype)) = mime(headers) else {
        return false;
    };
    let is = |k: &str, s: &str| kind.eq_ignore_ascii_case(k) && subtype.eq_ignore_ascii_case(s);
    is("text", "event-stream")
        || is("application", "x-ndjson")
        || is("application", "ndjson")
        || is("application", "jsonl")
        || is("multipart", "x-mixed-replace")
}

#[cfg(test)]
mod tests {
    use http::Response;

    use super::*;

    fn parts(content_type: Option<&str>) -> Parts {
        let mut builder = Response::builder();
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn compressed_types_are_skipped_by_parsed_mime_type() {
        let predicate = DefaultPredicate::new();
        for (content_type, compress) in [
            (None, true),
            (Some("application/json"), true),
            (Some("text/html; charset=utf-8"), true),
            (Some("image/svg+xml"), true),
            (Some("IMAGE/SVG+XML; charset=utf-8"), true),
            (Some("image/png"), false),
            (Some("Image/JPEG"), false),
            (Some(" image/webp ; q=1"), false),
            (Some("video/mp4"), false),
            (Some("audio/ogg"), false),
            (Some("application/zip"), false),
            (Some("application/gzip"), false),
            (Some("application/zstd"), false),
            (Some("font/woff2"), false),
            (Some("font/ttf"), true),
            (Some("application/imagery"), true),
            (Some("imagefile/png"), true),
            (Some("text/plain+image/png"), true),
            (Some("garbage"), true),
            (Some(""), true),
        ] {
            assert_eq!(
                predicate.should_compress(&parts(content_type), None),
                compress,
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn event_streams_are_recognised() {
        let headers = |value: &str| parts(Some(value)).headers;
        assert!(is_event_stream(&headers("text/event-stream")));
        assert!(is_event_stream(&headers(
            "Text/Event-Stream; charset=utf-8"
        )));
        assert!(is_event_stream(&headers("application/x-ndjson")));
        assert!(is_event_stream(&headers(
            "multipart/x-mixed-replace; boundary=x"
        )));
        assert!(!is_event_stream(&headers("application/json")));
        assert!(!is_event_stream(&parts(None).headers));
    }

    #[test]
    fn and_needs_both() {
        let yes = |_: &Parts, _: Option<u64>| true;
        let no = |_: &Parts, _: Option<u64>| false;
        let png = parts(Some("image/png"));
        let json = parts(Some("application/json"));
        assert!(
            DefaultPredicate::new()
                .and(yes)
                .should_compress(&json, None)
        );
        assert!(!DefaultPredicate::new().and(no).should_compress(&json, None));
        assert!(!DefaultPredicate::new().and(yes).should_compress(&png, None));
    }
}
