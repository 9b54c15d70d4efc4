//! The pagination parameters of a request, read from its query string and checked.

use std::sync::OnceLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Error, cursor::MAX_CURSOR_LEN};
use crate::fmt::truncate_at_char_boundary;
use crate::log_gate::{LOG_INTERVAL, LogGate};

/// [`PageConfig`]'s default page size.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// [`PageConfig`]'s and [`KeysetConfig`]'s default largest page.
pub const MAX_PAGE_SIZE: u64 = 100;
/// [`PageConfig`]'s default deepest offset: past it, a page is refused (or warned about).
pub const MAX_OFFSET: u64 = 10_000;

/// A page of page/offset pagination: `?page=3&page_size=50`.
///
/// `page` counts from 1. Read it from a request with
/// [`PageConfig::from_query`] (or, with the `axum` feature, as an extractor), which checks
/// both values; a value built in code is used as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageParams {
    /// The page, from 1.
    pub page: u64,
    /// Rows per page, from 1.
    pub page_size: u64,
}

impl PageParams {
    /// Page `page` (from 1) of `page_size` rows; `0` counts as `1` for both.
    pub fn new(page: u64, page_size: u64) -> Self {
        Self {
            page: page.max(1),
            page_size: page_size.max(1),
        }
    }

    /// The rows before this page: `(page - 1) * page_size`, saturating.
    pub fn offset(&self) -> u64 {
        self.page.saturating_sub(1).saturating_mul(self.page_size)
    }
}

/// What to do with a parameter out of range or unreadable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnInvalid {
    /// Refuse the request with a [`Error`] that answers `400` (the default).
    #[default]
    Reject,
    /// Bring the value into range: a size above the maximum becomes the maximum, `0` or a
    /// negative number becomes `1`, and an unreadable value takes the default.
    Clamp,
}

/// What to do with a page that starts past [`PageConfig::max_offset`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeepPages {
    /// Refuse it: [`Error::TooDeep`], `400`, naming keyset pagination (the default).
    #[default]
    Refuse,
    /// Serve it and log a warning naming keyset pagination, at most once every
    /// ten seconds.
    Warn,
}

/// How [`PageParams`] are read from a request.
///
/// With the `axum` feature the extractor finds its configuration in the request's
/// extensions (`axum::Extension(config)` as a layer), and uses the defaults otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct PageConfig {
    default_page_size: u64,
    max_page_size: u64,
    on_invalid: OnInvalid,
    max_offset: Option<u64>,
    deep_pages: DeepPages,
}

impl Default for PageConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl PageConfig {
    /// Page size [`DEFAULT_PAGE_SIZE`] (20), at most [`MAX_PAGE_SIZE`] (100), invalid values
    /// rejected, pages past row [`MAX_OFFSET`] (10 000) refused.
    pub fn new() -> Self {
        Self {
            default_page_size: DEFAULT_PAGE_SIZE,
            max_page_size: MAX_PAGE_SIZE,
            on_invalid: OnInvalid::Reject,
            max_offset: Some(MAX_OFFSET),
            deep_pages: DeepPages::Refuse,
        }
    }

    /// The page size when the request names none. Default 20; raised to 1 and lowered to
    /// the maximum page size if need be.
    pub fn default_page_size(mut self, size: u64) -> Self {
        self.default_page_size = size;
        self
    }

    /// The largest page size accepted. Default 100; at least 1.
    pub fn max_page_size(mut self, size: u64) -> Self {
        self.max_page_size = size.max(1);
        self
    }

    /// What an invalid value does. Default [`OnInvalid::Reject`].
    pub fn on_invalid(mut self, on_invalid: OnInvalid) -> Self {
        self.on_invalid = on_invalid;
        self
    }

    /// The deepest offset (rows skipped) a page may start at; `None` for no limit.
    /// Default `Some(10_000)`.
    ///
    /// `OFFSET n` makes the database read and throw away `n` rows, so deep pages cost more
    /// with every page (BENCHMARKS.md, "Pagination"); keyset pagination does not.
    pub fn max_offset(mut self, max: Option<u64>) -> Self {
        self.max_offset = max;
        self
    }

    /// What a page past [`max_offset`](Self::max_offset) does. Default
    /// [`DeepPages::Refuse`].
    pub fn deep_pages(mut self, deep: DeepPages) -> Self {
        self.deep_pages = deep;
        self
    }

    fn size_default(&self) -> u64 {
        self.default_page_size.clamp(1, self.max_page_size)
    }

    /// The parameters in a query string such as `page=2&page_size=50&sort=name` (other
    /// parameters are ignored; a missing or empty one takes its default).
    ///
    /// # Errors
    ///
    /// With [`OnInvalid::Reject`], [`Error::InvalidPage`] or [`Error::InvalidSize`] for a
    /// value that is not a whole number in range; [`Error::TooDeep`] for a page past
    /// [`max_offset`](Self::max_offset) under [`DeepPages::Refuse`].
    pub fn from_query(&self, query: Option<&str>) -> Result<PageParams, Error> {
        let page = query_value(query, "page");
        let size = query_value(query, "page_size");
        self.from_values(page.as_deref(), size.as_deref())
    }

    /// The parameters from their raw values, as [`from_query`](Self::from_query) reads them.
    ///
    /// # Errors
    ///
    /// As [`from_query`](Self::from_query).
    pub fn from_values(
        &self,
        page: Option<&str>,
        page_size: Option<&str>,
    ) -> Result<PageParams, Error> {
        let clamp = self.on_invalid == OnInvalid::Clamp;
        let page = match read_number(page) {
            Number::Missing => 1,
            Number::Valid(n) if n >= 1 => n,
            Number::Valid(_) | Number::Negative if clamp => 1,
            Number::TooLarge if clamp => u64::MAX,
            Number::Unreadable if clamp => 1,
            _ => {
                return Err(Error::InvalidPage {
                    value: excerpt(page.unwrap_or_default()),
                });
            }
        };
        let max = self.max_page_size;
        let page_size = match read_number(page_size) {
            Number::Missing => self.size_default(),
            Number::Valid(n) if (1..=max).contains(&n) => n,
            Number::Valid(0) | Number::Negative if clamp => 1,
            Number::Valid(_) | Number::TooLarge if clamp => max,
            Number::Unreadable if clamp => self.size_default(),
            _ => {
                return Err(Error::InvalidSize {
                    name: "page_size",
                    value: excerpt(page_size.unwrap_or_default()),
                    max,
                });
            }
        };
        self.check(PageParams { page, page_size })
    }

    /// Checks parameters obtained another way (deserialized by a framework): the same
    /// rules as [`from_query`](Self::from_query).
    ///
    /// # Errors
    ///
    /// As [`from_query`](Self::from_query).
    pub fn check(&self, params: PageParams) -> Result<PageParams, Error> {
        let mut params = params;
        if params.page == 0 {
            if self.on_invalid == OnInvalid::Reject {
                return Err(Error::InvalidPage { value: "0".into() });
            }
            params.page = 1;
        }
        if !(1..=self.max_page_size).contains(&params.page_size) {
            if self.on_invalid == OnInvalid::Reject {
                return Err(Error::InvalidSize {
                    name: "page_size",
                    value: params.page_size.to_string(),
                    max: self.max_page_size,
                });
            }
            params.page_size = params.page_size.clamp(1, self.max_page_size);
        }
        let offset = params.offset();
        if let Some(max) = self.max_offset
            && offset > max
        {
            match self.deep_pages {
                DeepPages::Refuse => {
                    return Err(Error::TooDeep {
                        page: params.page,
                        offset,
                        max,
                    });
                }
                DeepPages::Warn => warn_deep(params.page, offset, max),
            }
        }
        Ok(params)
    }
}

/// One warning per interval about deep pages, however many are served.
fn warn_deep(page: u64, offset: u64, max: u64) {
    static GATE: LogGate = LogGate::new(LOG_INTERVAL);
    static START: OnceLock<Instant> = OnceLock::new();
    let now_ms = START.get_or_init(Instant::now).elapsed().as_millis() as u64;
    if let Some(held_back) = GATE.open(now_ms) {
        tracing::warn!(
            page,
            offset,
            max_offset = max,
            held_back,
            "a page deep past the offset limit was served: OFFSET reads and discards every \
             row it skips; use keyset pagination (perfkit::paginate::Keyset) for deep pages"
        );
    }
}

/// A keyset page: `?after=<cursor>&limit=50` or `?before=<cursor>`, neither for the first
/// page.
///
/// Read it from a request with [`KeysetConfig::from_query`] (or, with the `axum` feature,
/// as an extractor).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetParams {
    /// The page after this cursor (a page's `next_cursor`).
    pub after: Option<String>,
    /// The page before this cursor (a page's `prev_cursor`).
    pub before: Option<String>,
    /// Rows per page, from 1.
    pub limit: u64,
}

impl KeysetParams {
    /// The first page, `limit` rows (`0` counts as `1`).
    pub fn first(limit: u64) -> Self {
        Self {
            after: None,
            before: None,
            limit: limit.max(1),
        }
    }

    /// The page after `cursor`.
    pub fn after(cursor: impl Into<String>, limit: u64) -> Self {
        Self {
            after: Some(cursor.into()),
            ..Self::first(limit)
        }
    }

    /// The page before `cursor`.
    pub fn before(cursor: impl Into<String>, limit: u64) -> Self {
        Self {
            before: Some(cursor.into()),
            ..Self::first(limit)
        }
    }
}

/// How [`KeysetParams`] are read from a request: the limit's default and maximum (20 and
/// 100 by default) and what an invalid one does. A cursor is never clamped: an invalid one
/// is always an error.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct KeysetConfig {
    default_limit: u64,
    max_limit: u64,
    on_invalid: OnInvalid,
}

impl Default for KeysetConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl KeysetConfig {
    /// Limit [`DEFAULT_PAGE_SIZE`] (20), at most [`MAX_PAGE_SIZE`] (100), invalid limits
    /// rejected.
    pub fn new() -> Self {
        Self {
            default_limit: DEFAULT_PAGE_SIZE,
            max_limit: MAX_PAGE_SIZE,
            on_invalid: OnInvalid::Reject,
        }
    }

    /// The limit when the request names none. Default 20.
    pub fn default_limit(mut self, limit: u64) -> Self {
        self.default_limit = limit;
        self
    }

    /// The largest limit accepted. Default 100; at least 1.
    pub fn max_limit(mut self, limit: u64) -> Self {
        self.max_limit = limit.max(1);
        self
    }

    /// What an invalid limit does. Default [`OnInvalid::Reject`].
    pub fn on_invalid(mut self, on_invalid: OnInvalid) -> Self {
        self.on_invalid = on_invalid;
        self
    }

    /// The parameters in a query string such as `after=<cursor>&limit=50`.
    ///
    /// # Errors
    ///
    /// [`Error::BothCursors`] when `after` and `before` are both given,
    /// [`Error::Cursor`] for a cursor longer than any this crate writes (its contents are
    /// checked when the page is read), [`Error::InvalidSize`] for a limit out of range under
    /// [`OnInvalid::Reject`].
    pub fn from_query(&self, query: Option<&str>) -> Result<KeysetParams, Error> {
        let cursor = |name| {
            let value = query_value(query, name).filter(|v| !v.is_empty());
            if value.as_ref().is_some_and(|v| v.len() > MAX_CURSOR_LEN) {
                return Err(Error::Cursor(super::CursorError::TooLong {
                    max: MAX_CURSOR_LEN,
                }));
            }
            Ok(value.map(|v| v.into_owned()))
        };
        let after = cursor("after")?;
        let before = cursor("before")?;
        if after.is_some() && before.is_some() {
            return Err(Error::BothCursors);
        }
        let raw = query_value(query, "limit");
        let clamp = self.on_invalid == OnInvalid::Clamp;
        let max = self.max_limit;
        let default = self.default_limit.clamp(1, max);
        let limit = match read_number(raw.as_deref()) {
            Number::Missing => default,
            Number::Valid(n) if (1..=max).contains(&n) => n,
            Number::Valid(0) | Number::Negative if clamp => 1,
            Number::Valid(_) | Number::TooLarge if clamp => max,
            Number::Unreadable if clamp => default,
            _ => {
                return Err(Error::InvalidSize {
                    name: "limit",
                    value: excerpt(raw.as_deref().unwrap_or_default()),
                    max,
                });
            }
        };
        Ok(KeysetParams {
            after,
            before,
            limit,
        })
    }

    /// Checks parameters obtained another way: both cursors, or a limit out of range.
    ///
    /// # Errors
    ///
    /// As [`from_query`](Self::from_query).
    pub fn check(&self, mut params: KeysetParams) -> Result<KeysetParams, Error> {
        if params.after.is_some() && params.before.is_some() {
            return Err(Error::BothCursors);
        }
        if !(1..=self.max_limit).contains(&params.limit) {
            if self.on_invalid == OnInvalid::Reject {
                return Err(Error::InvalidSize {
                    name: "limit",
                    value: params.limit.to_string(),
                    max: self.max_limit,
                });
            }
            params.limit = params.limit.clamp(1, self.max_limit);
        }
        Ok(params)
    }
}

/// At most 64 bytes of a refused value, for its error message.
fn excerpt(value: &str) -> String {
    truncate_at_char_boundary(value, 64).to_owned()
}

/// The first value of `name` in a query string, percent-decoded; `None` when absent.
fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

enum Number {
    Missing,
    Valid(u64),
    Negative,
    TooLarge,
    Unreadable,
}

fn read_number(value: Option<&str>) -> Number {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Number::Missing;
    };
    let (negative, digits) = match value.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, value.strip_prefix('+').unwrap_or(value)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Number::Unreadable;
    }
    match (negative, digits.parse::<u64>()) {
        (true, _) if digits.bytes().all(|b| b == b'0') => Number::Valid(0),
        (true, _) => Number::Negative,
        (false, Ok(n)) => Number::Valid(n),
        (false, Err(_)) => Number::TooLarge,
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::FromRequestParts;
    use http::request::Parts;

    use super::{KeysetConfig, KeysetParams, PageConfig, PageParams};
    use crate::paginate::Error;

    /// Reads `page` and `page_size` from the query string with the [`PageConfig`] in the
    /// request's extensions, or the default one; an invalid value is a `400` with the
    /// crate's JSON error body.
    impl<S: Send + Sync> FromRequestParts<S> for PageParams {
        type Rejection = Error;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
            match parts.extensions.get::<PageConfig>() {
                Some(config) => config.from_query(parts.uri.query()),
                None => PageConfig::new().from_query(parts.uri.query()),
            }
        }
    }

    /// Reads `after`, `before` and `limit` from the query string with the
    /// [`KeysetConfig`] in the request's extensions, or the default one.
    impl<S: Send + Sync> FromRequestParts<S> for KeysetParams {
        type Rejection = Error;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
            match parts.extensions.get::<KeysetConfig>() {
                Some(config) => config.from_query(parts.uri.query()),
                None => KeysetConfig::new().from_query(parts.uri.query()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<PageParams, Error> {
        PageConfig::new().from_query(Some(query))
    }

    #[test]
    fn defaults_and_valid_values() {
        assert_eq!(parse("").unwrap(), PageParams::new(1, 20));
        assert_eq!(
            PageConfig::new().from_query(None).unwrap(),
            PageParams::new(1, 20)
        );
        assert_eq!(
            parse("page=3&page_size=50&x=1").unwrap(),
            PageParams::new(3, 50)
        );
        assert_eq!(parse("page=&page_size=").unwrap(), PageParams::new(1, 20));
        assert_eq!(
            parse("page=%32&page_size=+7").unwrap(),
            PageParams::new(2, 7)
        );
        assert_eq!(parse("page_size=100").unwrap().page_size, 100);
        let custom = PageConfig::new().default_page_size(5).max_page_size(10);
        assert_eq!(custom.from_query(None).unwrap().page_size, 5);
        assert!(custom.from_query(Some("page_size=11")).is_err());
    }

    #[test]
    fn every_invalid_value_is_a_400_naming_it() {
        for query in [
            "page=0",
            "page=-1",
            "page=abc",
            "page=1.5",
            "page=99999999999999999999999",
            "page=%FF",
        ] {
            let error = parse(query).unwrap_err();
            assert!(
                matches!(error, Error::InvalidPage { .. }),
                "{query}: {error}"
            );
            assert_eq!(error.status(), 400);
            assert_eq!(error.code(), "invalid_page");
        }
        for query in [
            "page_size=0",
            "page_size=101",
            "page_size=-5",
            "page_size=x",
            "page_size=1e3",
        ] {
            let error = parse(query).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidSize {
                        name: "page_size",
                        max: 100,
                        ..
                    }
                ),
                "{query}"
            );
            assert!(error.to_string().contains("page_size"), "{error}");
        }
        let long = format!("page={}", "9".repeat(10_000));
        let message = parse(&long).unwrap_err().to_string();
        assert!(
            message.len() < 200,
            "the value is cut short in the message: {message}"
        );
    }

    #[test]
    fn clamping_brings_values_into_range() {
        let clamp = PageConfig::new()
            .on_invalid(OnInvalid::Clamp)
            .max_offset(None);
        let read = |q: &str| clamp.from_query(Some(q)).unwrap();
        assert_eq!(read("page=0&page_size=0"), PageParams::new(1, 1));
        assert_eq!(read("page=-4&page_size=1000"), PageParams::new(1, 100));
        assert_eq!(read("page=x&page_size=y"), PageParams::new(1, 20));
        assert_eq!(read("page_size=99999999999999999999999").page_size, 100);
        assert_eq!(
            clamp
                .check(PageParams {
                    page: 0,
                    page_size: 500
                })
                .unwrap(),
            PageParams::new(1, 100)
        );
    }

    #[test]
    fn deep_pages_are_refused_or_warned_about() {
        let error = parse("page=502&page_size=20").unwrap_err();
        assert!(
            matches!(error, Error::TooDeep { offset: 10_020, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("keyset"), "{error}");
        assert!(
            parse("page=501&page_size=20").is_ok(),
            "offset 10 000 is allowed"
        );

        let (capture, _guard) = crate::capture::Capture::install();
        let warn = PageConfig::new().deep_pages(DeepPages::Warn);
        assert_eq!(warn.from_query(Some("page=1000")).unwrap().page, 1000);
        assert_eq!(capture.warnings_containing("keyset").len(), 1);
    }

    #[test]
    fn keyset_parameters() {
        let config = KeysetConfig::new();
        let read = |q: &str| config.from_query(Some(q));
        assert_eq!(read("").unwrap(), KeysetParams::first(20));
        assert_eq!(
            read("after=abc&limit=5").unwrap(),
            KeysetParams::after("abc", 5)
        );
        assert_eq!(read("before=abc").unwrap(), KeysetParams::before("abc", 20));
        assert_eq!(read("after=&before=").unwrap(), KeysetParams::first(20));
        assert!(matches!(read("after=a&before=b"), Err(Error::BothCursors)));
        for bad in ["limit=0", "limit=101", "limit=x", "limit=-1"] {
            let error = read(bad).unwrap_err();
            assert_eq!(error.code(), "invalid_limit", "{bad}");
            assert_eq!(error.status(), 400);
        }
        let long = format!("after={}", "A".repeat(MAX_CURSOR_LEN + 1));
        assert!(matches!(read(&long), Err(Error::Cursor(_))));
        let clamp = KeysetConfig::new().on_invalid(OnInvalid::Clamp);
        assert_eq!(clamp.from_query(Some("limit=1000")).unwrap().limit, 100);
        assert!(config.check(KeysetParams::first(101)).is_err());
    }
}
