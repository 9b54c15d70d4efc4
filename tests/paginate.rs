//! `perfkit::paginate` on SQLite and, when `DATABASE_URL` is set, PostgreSQL: one suite run
//! over both. Orders are generated (keys, directions, NULL placement, duplicates), every
//! page is read forwards and backwards by offset and by keyset, and the rows read are
//! compared with the order computed here.
#![cfg(all(feature = "paginate", feature = "sqlite"))]

mod support;

use std::cmp::Ordering;
use std::collections::HashSet;

use perfkit::paginate::{
    Count, CursorError, CursorKey, Error, Keyset, KeysetPage, KeysetParams, Nulls, Order, Page,
    PageParams, SortKey, paginate,
};
use perfkit::pool::{SqlitePool, SqlitePoolBuilder};
use sqlx::QueryBuilder;

/// The database a case runs on.
enum Db {
    Sqlite(SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(support::TestDb),
}

struct Subject {
    name: &'static str,
    db: Db,
}

/// Runs `$body` with `$pool` bound to the subject's `sqlx::Pool`, once per database type.
macro_rules! on {
    ($subject:expr, $pool:ident => $body:expr) => {
        match &$subject.db {
            Db::Sqlite(pool) => {
                let $pool: &sqlx::Pool<sqlx::Sqlite> = pool;
                $body
            }
            #[cfg(feature = "postgres")]
            Db::Postgres(db) => {
                let $pool: &sqlx::Pool<sqlx::Postgres> = &db.pool;
                $body
            }
        }
    };
}

/// SQLite in memory and, when it is configured, PostgreSQL in a schema of the test's own.
async fn subjects(test: &str) -> Vec<Subject> {
    let sqlite = SqlitePoolBuilder::new("sqlite::memory:")
        .build()
        .await
        .unwrap();
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
    let mut subjects = vec![Subject {
        name: "sqlite",
        db: Db::Sqlite(sqlite),
    }];
    #[cfg(feature = "postgres")]
    if let Some(db) = support::postgres(test).await {
        subjects.push(Subject {
            name: "postgres",
            db: Db::Postgres(db),
        });
    }
    #[cfg(not(feature = "postgres"))]
    let _ = test;
    subjects
}

impl Subject {
    async fn exec(&self, sql: &str) {
        on!(self, pool => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(pool)
                .await
                .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
        })
    }

    async fn count(&self, filter: &str) -> u64 {
        let sql = format!("SELECT COUNT(*) FROM items {filter}");
        let n: i64 = on!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.unwrap());
        n as u64
    }
}

/// One row of the generated table.
#[derive(Clone, Debug)]
struct Item {
    id: i64,
    a: Option<i64>,
    b: Option<String>,
    c: i64,
}

/// A small deterministic generator, so a failing case can be run again.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `rows` items with few distinct values (many ties) and NULLs in `a` and `b`.
fn generate(rows: i64, rng: &mut XorShift) -> Vec<Item> {
    (1..=rows)
        .map(|id| Item {
            id,
            a: (rng.below(5) != 0).then(|| rng.below(4) as i64),
            b: (rng.below(4) != 0).then(|| ["x", "y", "z"][rng.below(3) as usize].to_owned()),
            c: rng.below(3) as i64,
        })
        .collect()
}

async fn create(subject: &Subject, items: &[Item]) {
    subject
        .exec("CREATE TABLE items (id BIGINT PRIMARY KEY, a BIGINT, b TEXT, c BIGINT NOT NULL)")
        .await;
    insert(subject, items).await;
}

async fn insert(subject: &Subject, items: &[Item]) {
    if items.is_empty() {
        return;
    }
    on!(subject, pool => {
        let mut query = QueryBuilder::new("INSERT INTO items (id, a, b, c) ");
        query.push_values(items, |mut row, item| {
            row.push_bind(item.id)
                .push_bind(item.a)
                .push_bind(item.b.clone())
                .push_bind(item.c);
        });
        query.build().execute(pool).await.unwrap();
    })
}

/// A generated order: keys over `a`, `b`, `c` with directions and NULL placements.
#[derive(Clone, Debug)]
struct Case {
    keys: Vec<(&'static str, Order, Option<Nulls>)>,
}

fn generate_case(rng: &mut XorShift) -> Case {
    let mut columns = vec!["a", "b", "c"];
    let count = 1 + rng.below(3) as usize;
    let mut keys = Vec::new();
    for _ in 0..count {
        let column = columns.remove(rng.below(columns.len() as u64) as usize);
        let order = if rng.below(2) == 0 {
            Order::Asc
        } else {
            Order::Desc
        };
        let nulls = match column {
            "c" => None,
            _ if rng.below(2) == 0 => Some(Nulls::First),
            _ => Some(Nulls::Last),
        };
        keys.push((column, order, nulls));
    }
    Case { keys }
}

impl Case {
    fn keyset(&self, key: &CursorKey) -> Keyset {
        let mut builder = Keyset::builder().cursor_key(key.clone());
        for (column, order, nulls) in &self.keys {
            let mut key = match order {
                Order::Asc => SortKey::asc(*column),
                Order::Desc => SortKey::desc(*column),
            };
            key = match nulls {
                Some(Nulls::First) => key.nulls_first(),
                Some(Nulls::Last) => key.nulls_last(),
                None => key,
            };
            builder = builder.key(key);
        }
        builder.unique("id").build().unwrap()
    }

    /// The order computed here, the reference the pages are checked against.
    fn sorted(&self, items: &[Item]) -> Vec<i64> {
        let mut items = items.to_vec();
        items.sort_by(|x, y| {
            for (column, order, nulls) in &self.keys {
                let ordering = match *column {
                    "a" => compare(&x.a, &y.a, *order, *nulls),
                    "b" => compare(&x.b, &y.b, *order, *nulls),
                    _ => directed(x.c.cmp(&y.c), *order),
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            let last = self.keys.last().map_or(Order::Asc, |k| k.1);
            match last {
                Order::Asc => x.id.cmp(&y.id),
                Order::Desc => y.id.cmp(&x.id),
            }
        });
        items.into_iter().map(|item| item.id).collect()
    }
}

fn directed(ordering: Ordering, order: Order) -> Ordering {
    match order {
        Order::Asc => ordering,
        Order::Desc => ordering.reverse(),
    }
}

/// Values compare in the key's direction; NULLs go where the key places them, whatever its
/// direction (`NULLS FIRST` is first in a descending order too).
fn compare<T: Ord>(x: &Option<T>, y: &Option<T>, order: Order, nulls: Option<Nulls>) -> Ordering {
    let null_first = nulls == Some(Nulls::First);
    match (x, y) {
        (Some(x), Some(y)) => directed(x.cmp(y), order),
        (None, None) => Ordering::Equal,
        (None, Some(_)) if null_first => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) if null_first => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
    }
}

/// The query every case pages through.
const SELECT: &str = "SELECT id, a, b, c FROM items";

async fn keyset_page(
    subject: &Subject,
    keyset: &Keyset,
    filter_c: Option<i64>,
    params: &KeysetParams,
) -> Result<KeysetPage<(i64,)>, Error> {
    on!(subject, pool => {
        let mut query = QueryBuilder::new(SELECT);
        if let Some(c) = filter_c {
            query.push(" WHERE c = ").push_bind(c);
        }
        keyset.fetch(pool, query, params).await
    })
}

async fn offset_page(
    subject: &Subject,
    order_by: &str,
    filter_c: Option<i64>,
    params: PageParams,
    count: Count,
) -> Result<Page<(i64,)>, Error> {
    on!(subject, pool => {
        let mut query = QueryBuilder::new(SELECT);
        if let Some(c) = filter_c {
            query.push(" WHERE c = ").push_bind(c);
        }
        query.push(" ORDER BY ").push(order_by);
        paginate(pool, query, params, count).await
    })
}

fn ids(items: &[(i64,)]) -> Vec<i64> {
    items.iter().map(|(id,)| *id).collect()
}

/// Reads every keyset page forwards, then back again from the last one.
async fn walk_keyset(subject: &Subject, keyset: &Keyset, limit: u64) -> (Vec<i64>, Vec<i64>) {
    let mut forward = Vec::new();
    let mut params = KeysetParams::first(limit);
    let mut pages = 0;
    let last = loop {
        let page = keyset_page(subject, keyset, None, &params).await.unwrap();
        forward.extend(ids(&page.items));
        pages += 1;
        assert!(pages < 1000, "the walk never ends");
        match &page.next_cursor {
            Some(next) => {
                assert!(page.has_more);
                params = KeysetParams::after(next.clone(), limit);
            }
            None => break page,
        }
    };
    // Backwards: page by page from the last page read.
    let mut backward: Vec<Vec<i64>> = vec![ids(&last.items)];
    let mut cursor = last.prev_cursor.clone();
    while let Some(before) = cursor {
        let page = keyset_page(subject, keyset, None, &KeysetParams::before(before, limit))
            .await
            .unwrap();
        assert!(
            page.next_cursor.is_some(),
            "a previous page leads forward again"
        );
        backward.push(ids(&page.items));
        cursor = page.prev_cursor.clone();
        assert!(backward.len() < 1000, "the walk never ends");
    }
    backward.reverse();
    (forward, backward.concat())
}

#[tokio::test]
async fn generated_orders_cover_every_row_once_by_keyset_and_offset() {
    for subject in subjects("generated_orders_cover_every_row_once").await {
        let name = subject.name;
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let items = generate(57, &mut rng);
        create(&subject, &items).await;
        let key = CursorKey::random();
        for round in 0..16 {
            let case = generate_case(&mut rng);
            let expected = case.sorted(&items);
            let keyset = case.keyset(&key);
            let limit = 1 + rng.below(9);
            let context = format!("{name}, case {round}: {case:?}, limit {limit}");

            let (forward, backward) = walk_keyset(&subject, &keyset, limit).await;
            assert_eq!(forward, expected, "keyset forwards, {context}");
            assert_eq!(backward, expected, "keyset backwards, {context}");

            // Offset, over the same order as SQL writes it, read first to last and last
            // to first.
            let order_by = keyset.order_by();
            let first = offset_page(
                &subject,
                &order_by,
                None,
                PageParams::new(1, limit),
                Count::Exact,
            )
            .await
            .unwrap();
            let pages = first.total_pages.unwrap();
            assert_eq!(first.total, Some(items.len() as u64), "{context}");
            let mut by_page = Vec::new();
            for page in 1..=pages {
                let page = offset_page(
                    &subject,
                    &order_by,
                    None,
                    PageParams::new(page, limit),
                    Count::Exact,
                )
                .await
                .unwrap();
                by_page.push(ids(&page.items));
            }
            assert_eq!(by_page.concat(), expected, "offset forwards, {context}");
            let mut reversed = Vec::new();
            for page in (1..=pages).rev() {
                let page = offset_page(
                    &subject,
                    &order_by,
                    None,
                    PageParams::new(page, limit),
                    Count::Inline,
                )
                .await
                .unwrap();
                reversed.push(ids(&page.items));
            }
            reversed.reverse();
            assert_eq!(reversed.concat(), expected, "offset backwards, {context}");
        }
    }
}

#[tokio::test]
async fn keyset_never_skips_or_repeats_a_surviving_row_while_rows_come_and_go() {
    for subject in subjects("keyset_never_skips_or_repeats").await {
        let name = subject.name;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut items = generate(80, &mut rng);
        create(&subject, &items).await;
        let key = CursorKey::random();
        for round in 0..6 {
            let case = generate_case(&mut rng);
            let keyset = case.keyset(&key);
            let initial: HashSet<i64> = items.iter().map(|i| i.id).collect();
            let mut deleted = HashSet::new();
            let mut seen = Vec::new();
            let mut params = KeysetParams::first(7);
            loop {
                let page = keyset_page(&subject, &keyset, None, &params).await.unwrap();
                seen.extend(ids(&page.items));
                let Some(next) = page.next_cursor else { break };
                params = KeysetParams::after(next, 7);
                // Between pages: delete two rows (seen or not), insert two new ones.
                for _ in 0..2 {
                    let victim = items.remove(rng.below(items.len() as u64) as usize);
                    subject
                        .exec(&format!("DELETE FROM items WHERE id = {}", victim.id))
                        .await;
                    deleted.insert(victim.id);
                }
                let next_id = items.iter().map(|i| i.id).max().unwrap_or(0) + 1000;
                let fresh = generate(2, &mut rng)
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| Item {
                        id: next_id + i as i64,
                        ..item
                    })
                    .collect::<Vec<_>>();
                insert(&subject, &fresh).await;
                items.extend(fresh);
            }
            let unique: HashSet<i64> = seen.iter().copied().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "{name}, round {round}: a row was repeated"
            );
            for id in initial.difference(&deleted) {
                assert!(
                    unique.contains(id),
                    "{name}, round {round} {case:?}: surviving row {id} was skipped"
                );
            }
        }
    }
}

#[tokio::test]
async fn empty_tables_and_pages_past_the_end() {
    for subject in subjects("empty_tables_and_pages_past_the_end").await {
        let name = subject.name;
        create(&subject, &[]).await;
        for count in [Count::Exact, Count::Inline, Count::Estimated, Count::None] {
            let page = offset_page(&subject, "id", None, PageParams::new(1, 10), count)
                .await
                .unwrap();
            assert!(page.items.is_empty(), "{name}");
            assert!(!page.has_next && !page.has_previous, "{name} {count:?}");
            if count != Count::None && count != Count::Estimated {
                assert_eq!(
                    (page.total, page.total_pages),
                    (Some(0), Some(0)),
                    "{name} {count:?}"
                );
            }
        }
        let keyset = Keyset::builder()
            .desc("c")
            .unique("id")
            .cursor_key(CursorKey::random())
            .build()
            .unwrap();
        let page = keyset_page(&subject, &keyset, None, &KeysetParams::first(5))
            .await
            .unwrap();
        assert!(
            page.items.is_empty() && page.next_cursor.is_none() && page.prev_cursor.is_none(),
            "{name}"
        );
        assert!(!page.has_more);

        let mut rng = XorShift(7);
        insert(&subject, &generate(23, &mut rng)).await;
        for count in [Count::Exact, Count::Inline] {
            let page = offset_page(&subject, "id", None, PageParams::new(9, 5), count)
                .await
                .unwrap();
            assert!(page.items.is_empty(), "{name}");
            assert_eq!(
                page.total,
                Some(23),
                "{name} {count:?}: the inline total falls back to a count"
            );
            assert_eq!(page.total_pages, Some(5));
            assert!(!page.has_next && page.has_previous, "{name}");
        }
        let last = offset_page(&subject, "id", None, PageParams::new(5, 5), Count::None)
            .await
            .unwrap();
        assert_eq!(ids(&last.items), vec![21, 22, 23], "{name}");
        assert!(!last.has_next);
        let before_last = offset_page(&subject, "id", None, PageParams::new(4, 5), Count::None)
            .await
            .unwrap();
        assert!(
            before_last.has_next,
            "{name}: the extra row tells a next page exists"
        );
        assert_eq!(before_last.items.len(), 5);
    }
}

#[tokio::test]
async fn each_count_strategy_agrees_with_count_star() {
    for subject in subjects("each_count_strategy_agrees").await {
        let name = subject.name;
        let mut rng = XorShift(11);
        create(&subject, &generate(150, &mut rng)).await;
        subject.exec("ANALYZE").await;
        for filter in [None, Some(1)] {
            let expected = subject
                .count(&filter.map_or(String::new(), |c| format!("WHERE c = {c}")))
                .await;
            for count in [Count::Exact, Count::Inline] {
                let page = offset_page(&subject, "c, id", filter, PageParams::new(2, 10), count)
                    .await
                    .unwrap();
                assert_eq!(page.total, Some(expected), "{name} {count:?} {filter:?}");
                assert!(!page.total_is_estimate);
                assert_eq!(page.has_next, 2 < expected.div_ceil(10));
            }
            let page = offset_page(
                &subject,
                "c, id",
                filter,
                PageParams::new(2, 10),
                Count::Provided(999),
            )
            .await
            .unwrap();
            assert_eq!(
                (page.total, page.total_pages),
                (Some(999), Some(100)),
                "{name}"
            );
            let page = offset_page(
                &subject,
                "c, id",
                filter,
                PageParams::new(2, 10),
                Count::None,
            )
            .await
            .unwrap();
            assert_eq!(page.total, None);
            assert_eq!(
                page.has_next,
                2 < expected.div_ceil(10),
                "{name} {filter:?}"
            );

            let page = offset_page(
                &subject,
                "c, id",
                filter,
                PageParams::new(1, 10),
                Count::Estimated,
            )
            .await
            .unwrap();
            let total = page.total.unwrap();
            if name == "sqlite" {
                assert_eq!(total, expected, "SQLite has no estimate: it counts");
                assert!(!page.total_is_estimate);
            } else {
                assert!(page.total_is_estimate, "{name}");
                if filter.is_none() {
                    assert_eq!(
                        total, expected,
                        "after ANALYZE the table's row count is known"
                    );
                } else {
                    assert!(
                        total > 0 && total <= 150,
                        "{name}: estimate {total} for {expected}"
                    );
                }
            }
        }
    }
}

/// What is asked, of which keyset, with which filter, and the cause expected (any when
/// `None`).
type BadCursor<'k> = (
    &'static str,
    &'k Keyset,
    Option<i64>,
    KeysetParams,
    Option<CursorError>,
);

#[tokio::test]
async fn every_invalid_cursor_is_a_400_without_sql() {
    for subject in subjects("every_invalid_cursor_is_a_400").await {
        let name = subject.name;
        let mut rng = XorShift(5);
        create(&subject, &generate(30, &mut rng)).await;
        let key = CursorKey::random();
        let keyset = Keyset::builder()
            .asc("c")
            .unique("id")
            .cursor_key(key.clone())
            .build()
            .unwrap();
        let first = keyset_page(&subject, &keyset, Some(1), &KeysetParams::first(3))
            .await
            .unwrap();
        let next = first.next_cursor.unwrap();

        let mut tampered = next.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let other_key = Keyset::builder()
            .asc("c")
            .unique("id")
            .cursor_key(CursorKey::random())
            .build()
            .unwrap();
        let other_order = Keyset::builder()
            .desc("c")
            .unique("id")
            .cursor_key(key.clone())
            .build()
            .unwrap();
        let cases: Vec<BadCursor<'_>> = vec![
            (
                "tampered",
                &keyset,
                Some(1),
                KeysetParams::after(tampered, 3),
                Some(CursorError::Signature),
            ),
            (
                "truncated",
                &keyset,
                Some(1),
                KeysetParams::after(&next[..next.len() - 3], 3),
                None,
            ),
            (
                "another filter value",
                &keyset,
                Some(2),
                KeysetParams::after(next.clone(), 3),
                Some(CursorError::ForeignQuery),
            ),
            (
                "no filter",
                &keyset,
                None,
                KeysetParams::after(next.clone(), 3),
                Some(CursorError::ForeignQuery),
            ),
            (
                "another order",
                &other_order,
                Some(1),
                KeysetParams::after(next.clone(), 3),
                Some(CursorError::ForeignQuery),
            ),
            (
                "another key",
                &other_key,
                Some(1),
                KeysetParams::after(next.clone(), 3),
                Some(CursorError::Signature),
            ),
            (
                "wrong direction",
                &keyset,
                Some(1),
                KeysetParams::before(next.clone(), 3),
                Some(CursorError::WrongDirection),
            ),
            (
                "over-long",
                &keyset,
                Some(1),
                KeysetParams::after("A".repeat(5000), 3),
                Some(CursorError::TooLong {
                    max: perfkit::paginate::MAX_CURSOR_LEN,
                }),
            ),
            (
                "junk",
                &keyset,
                Some(1),
                KeysetParams::after("'; DROP TABLE items; --", 3),
                Some(CursorError::Malformed),
            ),
        ];
        for (what, keyset, filter, params, expected) in cases {
            let error = keyset_page(&subject, keyset, filter, &params)
                .await
                .unwrap_err();
            let Error::Cursor(cause) = &error else {
                panic!("{name}, {what}: {error:?}")
            };
            if let Some(expected) = expected {
                assert_eq!(*cause, expected, "{name}, {what}");
            }
            assert_eq!(error.status(), 400, "{name}, {what}");
            assert_eq!(error.code(), "invalid_cursor");
            let message = error.public_message();
            assert!(
                !message.to_uppercase().contains("SELECT"),
                "{name}, {what}: {message}"
            );
        }
        let both = KeysetParams {
            after: Some(next.clone()),
            before: Some(next),
            limit: 3,
        };
        let error = keyset_page(&subject, &keyset, Some(1), &both)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::BothCursors), "{name}");
        assert_eq!(
            subject.count("").await,
            30,
            "{name}: the table is still there"
        );
    }
}

#[tokio::test]
async fn queries_that_cannot_be_paginated_are_refused() {
    for subject in subjects("queries_that_cannot_be_paginated").await {
        let name = subject.name;
        create(&subject, &generate(5, &mut XorShift(3))).await;
        let unordered = on!(subject, pool => paginate::<_, (i64,)>(pool, QueryBuilder::new(SELECT), PageParams::new(1, 2), Count::Exact).await);
        assert!(
            matches!(unordered, Err(Error::Query(ref m)) if m.contains("ORDER BY")),
            "{name}: {unordered:?}"
        );
        let limited = on!(subject, pool => paginate::<_, (i64,)>(pool, QueryBuilder::new("SELECT id FROM items ORDER BY id LIMIT 3"), PageParams::new(1, 2), Count::Exact).await);
        assert!(matches!(limited, Err(Error::Query(_))), "{name}");
        let keyset = Keyset::builder()
            .unique("id")
            .cursor_key(CursorKey::random())
            .build()
            .unwrap();
        let ordered = on!(subject, pool => keyset.fetch::<_, (i64,)>(pool, QueryBuilder::new("SELECT id FROM items ORDER BY id"), &KeysetParams::first(2)).await);
        assert!(matches!(ordered, Err(Error::Query(_))), "{name}");
        let error = ordered.unwrap_err();
        assert_eq!(
            (error.status(), error.code()),
            (http::StatusCode::INTERNAL_SERVER_ERROR, "pagination_failed")
        );
        assert!(
            !error.public_message().contains("ORDER"),
            "the client never sees SQL"
        );

        // A NULL in a key not declared nullable is an error, not a silently short page.
        let nullable = Keyset::builder()
            .asc("a")
            .unique("id")
            .cursor_key(CursorKey::random())
            .build()
            .unwrap();
        subject.exec("UPDATE items SET a = NULL").await;
        let page = keyset_page(&subject, &nullable, None, &KeysetParams::first(2)).await;
        assert!(
            matches!(page, Err(Error::KeyColumn { ref column, .. }) if column == "a"),
            "{name}: {page:?}"
        );
        let missing = Keyset::builder()
            .asc("nope")
            .unique("id")
            .cursor_key(CursorKey::random())
            .build()
            .unwrap();
        let error = keyset_page(&subject, &missing, None, &KeysetParams::first(2))
            .await
            .unwrap_err();
        assert_eq!(
            error.status(),
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "{name}: {error:?}"
        );
        assert_eq!(
            error.public_message(),
            "the page could not be read",
            "{name}"
        );
    }
}

#[test]
fn orders_without_a_unique_key_or_with_odd_names_are_refused_when_built() {
    assert!(
        matches!(Keyset::builder().desc("created_at").build(), Err(Error::Query(m)) if m.contains("unique"))
    );
    assert!(
        Keyset::builder()
            .asc("name; DROP TABLE x")
            .unique("id")
            .build()
            .is_err()
    );
    assert!(
        Keyset::builder()
            .asc("a")
            .asc("a")
            .unique("id")
            .build()
            .is_err()
    );
    let keyset = Keyset::builder()
        .desc("created_at")
        .unique("id")
        .cursor_key(CursorKey::random())
        .build()
        .unwrap();
    assert_eq!(
        keyset.order_by(),
        "created_at DESC, id DESC",
        "the tie-breaker follows the last key"
    );
    let keyset = Keyset::builder()
        .key(SortKey::asc("a").nulls_first())
        .desc("c")
        .unique("id")
        .cursor_key(CursorKey::random())
        .build()
        .unwrap();
    assert_eq!(keyset.order_by(), "a ASC NULLS FIRST, c DESC, id DESC");
}
