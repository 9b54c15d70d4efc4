//! Links to the neighbouring pages, built from the request's URI: as URLs for a JSON body
//! and as an RFC 8288 `Link` header value.

use http::{HeaderValue, Uri};
use serde::{Deserialize, Serialize};

use super::{KeysetPage, Page};

/// The first, previous, next and last pages of a [`Page`], or the previous and next pages
/// of a [`KeysetPage`] (`first` and `last` are then `None`).
///
/// Each URL is the request's (absolute when the request URI was, else path and query) with
/// its pagination parameters replaced and every other query parameter kept as it was
/// written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The first page.
    pub first: Option<String>,
    /// The page before, when there is one.
    pub prev: Option<String>,
    /// The page after, when there is one.
    pub next: Option<String>,
    /// The last page, when the total is known.
    pub last: Option<String>,
}

impl Links {
    /// The links as a `Link` header value: `<url>; rel="next", <url>; rel="last"`, in the
    /// order first, prev, next, last; `None` when there is no link.
    pub fn header_value(&self) -> Option<HeaderValue> {
        let mut value = String::new();
        for (rel, url) in [
            ("first", &self.first),
            ("prev", &self.prev),
            ("next", &self.next),
            ("last", &self.last),
        ] {
            if let Some(url) = url {
                if !value.is_empty() {
                    value.push_str(", ");
                }
                value.push('<');
                value.push_str(url);
                value.push_str(">; rel=\"");
                value.push_str(rel);
                value.push('"');
            }
        }
        // Built from a valid URI, whose characters are all valid in a header value.
        (!value.is_empty()).then(|| HeaderValue::try_from(value).ok())?
    }
}

impl<T> Page<T> {
    /// Links to this page's neighbours, from `uri`, the request's URI.
    pub fn links(&self, uri: &Uri) -> Links {
        let size = self.page_size.to_string();
        let page = |n: u64| {
            with_params(
                uri,
                &["page", "page_size"],
                &[("page", &n.to_string()), ("page_size", &size)],
            )
        };
        Links {
            first: Some(page(1)),
            prev: self.has_previous.then(|| page(self.page - 1)),
            next: self.has_next.then(|| page(self.page + 1)),
            last: self.total_pages.map(|pages| page(pages.max(1))),
        }
    }
}

impl<T> KeysetPage<T> {
    /// Links to the previous and next pages, from `uri`, the request's URI.
    pub fn links(&self, uri: &Uri) -> Links {
        let link = |name, cursor: &Option<String>| {
            cursor
                .as_deref()
                .map(|cursor| with_params(uri, &["after", "before"], &[(name, cursor)]))
        };
        Links {
            first: None,
            prev: link("before", &self.prev_cursor),
            next: link("after", &self.next_cursor),
            last: None,
        }
    }
}

/// `uri` with the query parameters named in `remove` dropped and `add` appended
/// (`add`'s values are written percent-encoded).
fn with_params(uri: &Uri, remove: &[&str], add: &[(&str, &str)]) -> String {
    let mut out = String::new();
    if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
        out.push_str(scheme);
        out.push_str("://");
        out.push_str(authority.as_str());
    }
    out.push_str(uri.path());
    let mut first = true;
    let mut separator = |out: &mut String| {
        out.push(if first { '?' } else { '&' });
        first = false;
    };
    for pair in uri.query().unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let name = pair.split('=').next().unwrap_or_default();
        let decoded = form_urlencoded::parse(name.as_bytes())
            .next()
            .map(|(name, _)| name);
        if decoded.is_some_and(|name| remove.contains(&name.as_ref())) {
            continue;
        }
        separator(&mut out);
        out.push_str(pair);
    }
    for (name, value) in add {
        separator(&mut out);
        out.extend(form_urlencoded::byte_serialize(name.as_bytes()));
        out.push('=');
        out.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(page: u64, total: Option<u64>) -> Page<()> {
        let total_pages = total.map(|t| t.div_ceil(10));
        Page {
            items: vec![],
            total,
            page,
            page_size: 10,
            total_pages,
            has_next: total_pages.is_some_and(|p| page < p),
            has_previous: page > 1,
            total_is_estimate: false,
        }
    }

    #[test]
    fn links_keep_other_parameters_as_written() {
        let uri: Uri = "/users?is_active=true&page=2&q=a%20b+c&page_size=10"
            .parse()
            .unwrap();
        let links = page(2, Some(45)).links(&uri);
        assert_eq!(
            links.first.as_deref(),
            Some("/users?is_active=true&q=a%20b+c&page=1&page_size=10")
        );
        assert_eq!(
            links.prev.as_deref(),
            Some("/users?is_active=true&q=a%20b+c&page=1&page_size=10")
        );
        assert_eq!(
            links.next.as_deref(),
            Some("/users?is_active=true&q=a%20b+c&page=3&page_size=10")
        );
        assert_eq!(
            links.last.as_deref(),
            Some("/users?is_active=true&q=a%20b+c&page=5&page_size=10")
        );
        assert_eq!(
            links.header_value().unwrap(),
            "</users?is_active=true&q=a%20b+c&page=1&page_size=10>; rel=\"first\", \
             </users?is_active=true&q=a%20b+c&page=1&page_size=10>; rel=\"prev\", \
             </users?is_active=true&q=a%20b+c&page=3&page_size=10>; rel=\"next\", \
             </users?is_active=true&q=a%20b+c&page=5&page_size=10>; rel=\"last\""
        );
    }

    #[test]
    fn first_last_and_unknown_totals() {
        let uri: Uri = "http://example.com/users".parse().unwrap();
        let first = page(1, Some(10)).links(&uri);
        assert_eq!(first.prev, None);
        assert_eq!(first.next, None);
        assert_eq!(
            first.last.as_deref(),
            Some("http://example.com/users?page=1&page_size=10")
        );
        let empty = page(1, Some(0)).links(&uri);
        assert_eq!(
            empty.last.as_deref(),
            Some("http://example.com/users?page=1&page_size=10")
        );
        let unknown = page(3, None).links(&uri);
        assert_eq!(unknown.last, None);
        assert!(unknown.prev.is_some());
        assert_eq!(Links::default().header_value(), None);
    }

    #[test]
    fn keyset_links_replace_either_cursor() {
        let uri: Uri = "/users/keyset?sort=-created_at&before=old&limit=5"
            .parse()
            .unwrap();
        let page = KeysetPage::<()> {
            items: vec![],
            next_cursor: Some("n-x_1".into()),
            prev_cursor: None,
            has_more: true,
        };
        let links = page.links(&uri);
        assert_eq!(
            links.next.as_deref(),
            Some("/users/keyset?sort=-created_at&limit=5&after=n-x_1")
        );
        assert_eq!(links.prev, None);
        assert_eq!(
            links.header_value().unwrap(),
            "</users/keyset?sort=-created_at&limit=5&after=n-x_1>; rel=\"next\""
        );
    }
}
