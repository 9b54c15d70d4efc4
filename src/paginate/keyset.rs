//! Keyset (cursor) pagination: seek past the boundary row's sort keys instead of counting
//! rows off, so every page costs the same however deep it is.

use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Pool, QueryBuilder};

use super::{
    Backend, CursorError, CursorKey, Error, KeysetParams,
    cursor::{self, Cursor, Direction, Fingerprint, KeyValue, MAX_KEYS, MAX_TEXT_KEY},
    offset::into_parts,
    sql::Shape,
};
use crate::query::is_identifier;

/// A sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

impl Order {
    fn reversed(self) -> Self {
        match self {
            Self::Asc => Self::Desc,
            Self::Desc => Self::Asc,
        }
    }
}

/// Where the NULLs of a nullable sort key go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nulls {
    /// Before every value.
    First,
    /// After every value.
    Last,
}

impl Nulls {
    fn reversed(self) -> Self {
        match self {
            Self::First => Self::Last,
            Self::Last => Self::First,
        }
    }
}

/// One column of a keyset's order: its name in the query's rows, its direction and, for a
/// column that may hold NULL, where the NULLs go.
///
/// A key declared without [`nulls_first`](Self::nulls_first) or
/// [`nulls_last`](Self::nulls_last) must never be NULL (a NULL found in one is an error,
/// not a silently shortened page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey {
    column: String,
    order: Order,
    nulls: Option<Nulls>,
}

impl SortKey {
    /// `column` ascending.
    pub fn asc(column: impl Into<String>) -> Self {
        Self {
            column: column.into(),
            order: Order::Asc,
            nulls: None,
        }
    }

    /// `column` descending.
    pub fn desc(column: impl Into<String>) -> Self {
        Self {
            order: Order::Desc,
            ..Self::asc(column)
        }
    }

    /// The column may hold NULL; NULLs come first (`NULLS FIRST`).
    #[must_use]
    pub fn nulls_first(mut self) -> Self {
        self.nulls = Some(Nulls::First);
        self
    }

    /// The column may hold NULL; NULLs come last (`NULLS LAST`).
    #[must_use]
    pub fn nulls_last(mut self) -> Self {
        self.nulls = Some(Nulls::Last);
        self
    }

    /// The order bits a cursor records: bit 0 descending, bit 1 nulls first, bit 2 nullable.
    fn bits(&self) -> u8 {
        u8::from(self.order == Order::Desc)
            | (u8::from(self.nulls == Some(Nulls::First)) << 1)
            | (u8::from(self.nulls.is_some()) << 2)
    }

    /// The key as it is read for a previous page: every direction reversed.
    fn effective(&self, direction: Direction) -> (Order, Option<Nulls>) {
        match direction {
            Direction::After => (self.order, self.nulls),
            Direction::Before => (self.order.reversed(), self.nulls.map(Nulls::reversed)),
        }
    }
}

/// A keyset's order: sort keys and a unique tie-breaker, checked once, and the key its
/// cursors are signed with. Build it once (at start-up) and share it.
///
/// ```
/// use perfkit::paginate::{Keyset, SortKey};
///
/// // ORDER BY created_at DESC, country ASC NULLS LAST, id DESC
/// let keyset = Keyset::builder()
///     .desc("created_at")
///     .key(SortKey::asc("country").nulls_last())
///     .unique("id")
///     .build()
///     .unwrap();
///
/// // Without a unique column the order is not total: rows tied on every key could be
/// // skipped or repeated between pages, so the keyset is refused.
/// assert!(Keyset::builder().desc("created_at").build().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Keyset {
    /// The sort keys, the unique tie-breaker last.
    keys: Vec<SortKey>,
    names_and_bits: Vec<(String, u8)>,
    bits: Vec<u8>,
    cursor_key: CursorKey,
}

/// Builds a [`Keyset`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct KeysetBuilder {
    keys: Vec<SortKey>,
    unique: Option<String>,
    cursor_key: Option<CursorKey>,
}

impl KeysetBuilder {
    /// Adds a sort key.
    pub fn key(mut self, key: SortKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds `column` ascending, never NULL.
    pub fn asc(self, column: impl Into<String>) -> Self {
        self.key(SortKey::asc(column))
    }

    /// Adds `column` descending, never NULL.
    pub fn desc(self, column: impl Into<String>) -> Self {
        self.key(SortKey::desc(column))
    }

    /// The unique, never-NULL column (the primary key) that breaks ties, so the order is
    /// total. It sorts in the direction of the last key (ascending without keys), which
    /// keeps an index on `(key, ..., id)` usable; it is not added again when it is already
    /// the last key. Required.
    pub fn unique(mut self, column: impl Into<String>) -> Self {
        self.unique = Some(column.into());
        self
    }

    /// The key cursors are signed with. Default: [`CursorKey::from_env`], the
    /// `PAGINATION_SECRET` or the process's random key.
    pub fn cursor_key(mut self, key: CursorKey) -> Self {
        self.cursor_key = Some(key);
        self
    }

    /// Checks the order.
    ///
    /// # Errors
    ///
    /// - [`Error::Query`] when no [`unique`](Self::unique) column fixes a total order, when
    ///   a column is not a plain identifier (`created_at`: the names are written into the
    ///   SQL text) or is named twice, or with more than [`MAX_KEYS`] keys.
    /// - [`Error::Key`] when no key was given and `PAGINATION_SECRET` is too short.
    pub fn build(self) -> Result<Keyset, Error> {
        let Some(unique) = self.unique else {
            return Err(Error::Query(
                "keyset pagination needs a total order: name the unique, never-NULL column \
                 that breaks ties (the primary key) with .unique(\"id\")"
                    .into(),
            ));
        };
        let mut keys = self.keys;
        if keys.last().is_none_or(|last| last.column != unique) {
            let order = keys.last().map_or(Order::Asc, |last| last.order);
            keys.push(SortKey {
                column: unique,
                order,
                nulls: None,
            });
        } else if let Some(last) = keys.last_mut() {
            last.nulls = None;
        }
        if keys.len() > MAX_KEYS {
            return Err(Error::Query(format!(
                "a keyset has at most {MAX_KEYS} keys, the unique one included"
            )));
        }
        for (i, key) in keys.iter().enumerate() {
            if !is_identifier(&key.column) {
                return Err(Error::Query(format!(
                    "sort key {:?} is not a plain column name (letters, digits and _): name the \
                     column as the query's rows do",
                    crate::fmt::truncate_at_char_boundary(&key.column, 64)
                )));
            }
            if keys[..i].iter().any(|other| other.column == key.column) {
                return Err(Error::Query(format!(
                    "sort key {:?} is named twice",
                    key.column
                )));
            }
        }
        let cursor_key = match self.cursor_key {
            Some(key) => key,
            None => CursorKey::from_env()?,
        };
        Ok(Keyset {
            names_and_bits: keys.iter().map(|k| (k.column.clone(), k.bits())).collect(),
            bits: keys.iter().map(SortKey::bits).collect(),
            keys,
            cursor_key,
        })
    }
}

/// One keyset page, serializable as the response body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysetPage<T> {
    /// The rows, in the keyset's order (a previous page too).
    pub items: Vec<T>,
    /// The cursor of the page after this one (give it as `after`); `None` at the end.
    pub next_cursor: Option<String>,
    /// The cursor of the page before this one (give it as `before`); `None` on the first
    /// page, and on an empty page read `after` a cursor (the end was reached, or every row
    /// past the cursor was deleted): the client goes back to the page it came from.
    pub prev_cursor: Option<String>,
    /// Whether more rows follow in the direction this page was read: after it for a first
    /// or `after` page, before it for a `before` page.
    pub has_more: bool,
}

impl<T> KeysetPage<T> {
    /// The same page with every item mapped by `f`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> KeysetPage<U> {
        KeysetPage {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
            prev_cursor: self.prev_cursor,
            has_more: self.has_more,
        }
    }
}

impl Keyset {
    /// A builder without keys.
    pub fn builder() -> KeysetBuilder {
        KeysetBuilder::default()
    }

    /// The `ORDER BY` list of the keyset, as the first page reads it:
    /// `created_at DESC, id DESC`.
    pub fn order_by(&self) -> String {
        let mut out = String::new();
        self.push_order(&mut out, Direction::After);
        out
    }

    fn push_order(&self, out: &mut String, direction: Direction) {
        for (i, key) in self.keys.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let (order, nulls) = key.effective(direction);
            out.push_str(&key.column);
            out.push_str(match order {
                Order::Asc => " ASC",
                Order::Desc => " DESC",
            });
            match nulls {
                Some(Nulls::First) => out.push_str(" NULLS FIRST"),
                Some(Nulls::Last) => out.push_str(" NULLS LAST"),
                None => {}
            }
        }
    }

    /// Reads the page `params` names of `query` from `pool`.
    ///
    /// `query` is a `SELECT` without `ORDER BY` or `LIMIT` whose rows carry every sort key
    /// under its name, with every request value bound through
    /// [`QueryBuilder::push_bind`]. It runs as
    /// `SELECT * FROM (<query>) AS perfkit_keyset WHERE <seek> ORDER BY <keys> LIMIT n+1`,
    /// which PostgreSQL and SQLite flatten into the query itself, so an index on the keys
    /// serves the seek. The seek is a row-value comparison `(a, b, id) > ($1, $2, $3)`
    /// when every key runs the same way and none is nullable, otherwise the equivalent
    /// OR-expansion with NULLs placed as declared. A `before` page reads in the reversed
    /// order and is put back in order in memory.
    ///
    /// # Errors
    ///
    /// - [`Error::Cursor`] for a cursor that was changed, cut short, is over-long, was signed
    ///   with another key or written for another query (other SQL, other bound values,
    ///   other keys), and [`Error::BothCursors`]: `400`s.
    /// - [`Error::Query`] when the query has its own `ORDER BY`, `LIMIT`, `OFFSET` or
    ///   `FETCH`.
    /// - [`Error::KeyColumn`] when a sort key is missing from the rows, has a type a cursor
    ///   cannot carry, holds NULL without being declared nullable, or holds a text longer
    ///   than [`MAX_TEXT_KEY`] bytes.
    /// - [`Error::Sql`] when the statement fails.
    pub async fn fetch<DB, T>(
        &self,
        pool: &Pool<DB>,
        query: QueryBuilder<DB>,
        params: &KeysetParams,
    ) -> Result<KeysetPage<T>, Error>
    where
        DB: Backend,
        T: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        if params.after.is_some() && params.before.is_some() {
            return Err(Error::BothCursors);
        }
        let limit = params.limit.max(1);
        let (sql, arguments) = into_parts(query)?;
        let shape = Shape::of(&sql);
        shape.check_unlimited()?;
        if shape.order_by.is_some() {
            return Err(Error::Query(
                "keyset pagination writes the ORDER BY from its keys; remove the query's own"
                    .into(),
            ));
        }
        let names: Vec<(&str, u8)> = self
            .names_and_bits
            .iter()
            .map(|(name, bits)| (name.as_str(), *bits))
            .collect();
        let fingerprint = cursor::fingerprint(&sql, &arguments, &names);
        let cursor = self.read_cursor(&fingerprint, params)?;
        let direction = cursor.as_ref().map_or(Direction::After, |c| c.direction);

        let mut text = String::with_capacity(sql.len() + 128);
        text.push_str("SELECT * FROM (");
        text.push_str(&sql);
        text.push_str(") AS perfkit_keyset");
        let mut page_query = QueryBuilder::<DB>::with_arguments(text, arguments);
        if let Some(cursor) = &cursor {
            page_query.push(" WHERE ");
            self.push_seek(&mut page_query, cursor);
        }
        let mut order = String::from(" ORDER BY ");
        self.push_order(&mut order, direction);
        page_query.push(order);
        page_query.push(" LIMIT ");
        DB::push_int(
            &mut page_query,
            i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
        );

        let mut rows = DB::fetch_rows(pool, page_query).await?;
        let has_more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        if direction == Direction::Before {
            rows.reverse();
        }
        let cursor_for = |row: Option<&DB::Row>, direction| -> Result<Option<String>, Error> {
            let Some(row) = row else { return Ok(None) };
            let values = self.row_keys::<DB>(row)?;
            Ok(Some(cursor::encode(
                &self.cursor_key,
                &fingerprint,
                direction,
                &self.bits,
                &values,
            )))
        };
        let (next_cursor, prev_cursor) = match (direction, cursor.is_some()) {
            (Direction::After, started) => (
                if has_more {
                    cursor_for(rows.last(), Direction::After)?
                } else {
                    None
                },
                if started {
                    cursor_for(rows.first(), Direction::Before)?
                } else {
                    None
                },
            ),
            (Direction::Before, _) => (
                cursor_for(rows.last(), Direction::After)?,
                if has_more {
                    cursor_for(rows.first(), Direction::Before)?
                } else {
                    None
                },
            ),
        };
        let items = rows
            .iter()
            .map(|row| T::from_row(row))
            .collect::<Result<Vec<T>, sqlx::Error>>()?;
        Ok(KeysetPage {
            items,
            next_cursor,
            prev_cursor,
            has_more,
        })
    }

    fn read_cursor(
        &self,
        fingerprint: &Fingerprint,
        params: &KeysetParams,
    ) -> Result<Option<Cursor>, Error> {
        let (text, expected) = match (&params.after, &params.before) {
            (Some(after), None) => (after, Direction::After),
            (None, Some(before)) => (before, Direction::Before),
            _ => return Ok(None),
        };
        let cursor = cursor::decode(&self.cursor_key, fingerprint, &self.bits, text)?;
        if cursor.direction != expected {
            return Err(CursorError::WrongDirection.into());
        }
        Ok(Some(cursor))
    }

    /// The sort-key values of `row`, checked to fit in a cursor.
    fn row_keys<DB: Backend>(&self, row: &DB::Row) -> Result<Vec<KeyValue>, Error> {
        self.keys
            .iter()
            .map(|key| {
                let value = DB::key_value(row, &key.column)?;
                let problem = match &value {
                    KeyValue::Null if key.nulls.is_none() => Some(
                        "it holds NULL but was not declared nullable: use \
                         SortKey::nulls_first or nulls_last"
                            .to_owned(),
                    ),
                    KeyValue::Text(text) if text.len() > MAX_TEXT_KEY => Some(format!(
                        "a value of {} bytes is longer than a cursor carries ({MAX_TEXT_KEY})",
                        text.len()
                    )),
                    KeyValue::Float(f) if f.is_nan() => {
                        Some("it holds NaN, which has no place in an order".to_owned())
                    }
                    _ => None,
                };
                match problem {
                    Some(reason) => Err(Error::KeyColumn {
                        column: key.column.clone(),
                        reason,
                    }),
                    None => Ok(value),
                }
            })
            .collect()
    }

    /// Writes the condition "comes after the cursor's row in the order it reads".
    fn push_seek<DB: Backend>(&self, query: &mut QueryBuilder<DB>, cursor: &Cursor) {
        let keys: Vec<(&SortKey, Order, Option<Nulls>)> = self
            .keys
            .iter()
            .map(|key| {
                let (order, nulls) = key.effective(cursor.direction);
                (key, order, nulls)
            })
            .collect();
        let first_order = keys[0].1;
        let row_value = keys.len() > 1
            && keys
                .iter()
                .all(|(_, order, nulls)| *order == first_order && nulls.is_none())
            && cursor.keys.iter().all(|v| *v != KeyValue::Null);
        if row_value {
            query.push("(");
            for (i, (key, ..)) in keys.iter().enumerate() {
                if i > 0 {
                    query.push(", ");
                }
                query.push(&key.column);
            }
            query.push(if first_order == Order::Asc {
                ") > ("
            } else {
                ") < ("
            });
            for (i, value) in cursor.keys.iter().enumerate() {
                if i > 0 {
                    query.push(", ");
                }
                DB::push_key(query, value);
            }
            query.push(")");
            return;
        }
        // The leading key bounds the scan: an index on it serves the seek even where the
        // expansion below has ORs.
        let (lead, lead_order, lead_nulls) = keys[0];
        let lead_value = &cursor.keys[0];
        if keys.len() > 1 && lead_nulls.is_none() && *lead_value != KeyValue::Null {
            query.push(&lead.column);
            query.push(if lead_order == Order::Asc {
                " >= "
            } else {
                " <= "
            });
            DB::push_key(query, lead_value);
            query.push(" AND ");
        }
        push_expansion::<DB>(query, &keys, &cursor.keys);
    }
}

/// `after(k1) OR (k1 = v1 AND (after(k2) OR (k2 = v2 AND ...)))`, parenthesized.
fn push_expansion<DB: Backend>(
    query: &mut QueryBuilder<DB>,
    keys: &[(&SortKey, Order, Option<Nulls>)],
    values: &[KeyValue],
) {
    let (key, order, nulls) = keys[0];
    let value = &values[0];
    let column = key.column.as_str();
    query.push("(");
    // Strictly after `value` in this key's order, or nothing (`wrote` false).
    let mut wrote = true;
    match (value, nulls) {
        (KeyValue::Null, Some(Nulls::First)) => {
            query.push(column).push(" IS NOT NULL");
        }
        (KeyValue::Null, _) => wrote = false,
        (value, nulls) => {
            if nulls == Some(Nulls::Last) {
                query.push("(");
            }
            query
                .push(column)
                .push(if order == Order::Asc { " > " } else { " < " });
            DB::push_key(query, value);
            if nulls == Some(Nulls::Last) {
                query.push(" OR ").push(column).push(" IS NULL)");
            }
        }
    }
    if keys.len() > 1 {
        if wrote {
            query.push(" OR ");
        }
        query.push("(").push(column);
        if *value == KeyValue::Null {
            query.push(" IS NULL");
        } else {
            query.push(" = ");
            DB::push_key(query, value);
        }
        query.push(" AND ");
        push_expansion::<DB>(query, &keys[1..], &values[1..]);
        query.push(")");
    } else if !wrote {
        query.push("1 = 0");
    }
    query.push(")");
}
