//! What can go wrong while paginating, and how each failure answers a client.

use http::StatusCode;

/// Why a page could not be read.
///
/// Errors caused by the request ([`is_client_error`](Self::is_client_error)) answer `400`
/// with a message that names the parameter and what is accepted; under the `axum` feature
/// the error is a response (`{"error":"<code>","message":"..."}`). Errors caused by the
/// code or the database answer `500` with a generic message: neither SQL text nor a
/// driver's message ever reaches the client, they are in the error's `Display` and
/// [`source`](std::error::Error::source) for the logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `page` is not a whole number from 1.
    #[error("page must be a whole number from 1, got {value:?}")]
    InvalidPage {
        /// The value received, at most 64 bytes of it.
        value: String,
    },
    /// `page_size` (or a keyset `limit`) is not a whole number from 1 to the maximum.
    #[error("{name} must be a whole number from 1 to {max}, got {value:?}")]
    InvalidSize {
        /// `page_size` or `limit`.
        name: &'static str,
        /// The value received, at most 64 bytes of it.
        value: String,
        /// The largest size accepted.
        max: u64,
    },
    /// The page starts deeper than [`PageConfig::max_offset`](super::PageConfig::max_offset)
    /// and the configuration refuses such pages.
    #[error(
        "page {page} starts at row {offset}, past the deepest offset allowed ({max}); \
         deep pages get slower with every page skipped: use keyset pagination \
         (the `after` cursor) to read that far"
    )]
    TooDeep {
        /// The page asked for.
        page: u64,
        /// The rows it would skip.
        offset: u64,
        /// The deepest offset allowed.
        max: u64,
    },
    /// Both `after` and `before` were given.
    #[error("give either after or before, not both")]
    BothCursors,
    /// A cursor was tampered with, truncated, too long, signed with another key, or made for
    /// another query.
    #[error("invalid cursor: {0}")]
    Cursor(#[from] CursorError),
    /// The query cannot be paginated as written: a mistake in the code, not the request.
    #[error("this query cannot be paginated: {0}")]
    Query(String),
    /// A sort key's column is missing from the rows or has a type keyset cursors cannot
    /// carry.
    #[error("sort key column {column:?}: {reason}")]
    KeyColumn {
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cursor key could not be read (`PAGINATION_SECRET` too short).
    #[error(transparent)]
    Key(#[from] super::KeyError),
    /// The database failed.
    #[error("the page query failed: {0}")]
    Sql(#[source] sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

/// Why a cursor was refused. Each reason gets the same `400`: a client cannot repair a
/// cursor, only start again from the first page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Longer than any cursor this crate writes.
    #[error("it is longer than {max} characters")]
    TooLong {
        /// The longest cursor accepted.
        max: usize,
    },
    /// Not URL-safe base64, or too short to hold a cursor.
    #[error("it is not a cursor this server wrote (it is not URL-safe base64 of a cursor)")]
    Malformed,
    /// Written by a version of the format this server does not read.
    #[error("it was written in a format this server does not read")]
    Version,
    /// Its signature does not match: changed, truncated, or signed with another key.
    #[error("its signature does not match: it was changed, cut short or signed by another server")]
    Signature,
    /// Signed by this server for another query (other filters or another order).
    #[error("it belongs to another query (other filters or another sort order)")]
    ForeignQuery,
    /// A next-page cursor given as `before`, or a previous-page cursor given as `after`.
    #[error("it reads the other way: give a next_cursor as after and a prev_cursor as before")]
    WrongDirection,
}

impl Error {
    /// Whether the request caused the error (`400`) rather than the code or the database.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidPage { .. }
                | Self::InvalidSize { .. }
                | Self::TooDeep { .. }
                | Self::BothCursors
                | Self::Cursor(_)
        )
    }

    /// The status the error answers with: `400` for a client error, `500` otherwise.
    pub fn status(&self) -> StatusCode {
        if self.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }

    /// The `error` code of the JSON body: `invalid_page`, `invalid_page_size`,
    /// `page_too_deep`, `invalid_cursor`, or `pagination_failed` for server-side failures.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidPage { .. } => "invalid_page",
            Self::InvalidSize { name: "limit", .. } => "invalid_limit",
            Self::InvalidSize { .. } => "invalid_page_size",
            Self::TooDeep { .. } => "page_too_deep",
            Self::BothCursors | Self::Cursor(_) => "invalid_cursor",
            Self::Query(_) | Self::KeyColumn { .. } | Self::Key(_) | Self::Sql(_) => {
                "pagination_failed"
            }
        }
    }

    /// The `message` of the JSON body: the error's text for a client error, a fixed
    /// sentence otherwise (never SQL or a driver's words).
    pub fn public_message(&self) -> String {
        if self.is_client_error() {
            self.to_string()
        } else {
            "the page could not be read".to_owned()
        }
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Error {
    fn into_response(self) -> axum::response::Response {
        if !self.is_client_error() {
            tracing::error!(error = %self, "a page could not be read");
        }
        crate::body::json_error::<axum::body::Body>(
            self.status(),
            self.code(),
            &self.public_message(),
        )
        .map(axum::body::Body::new)
    }
}
