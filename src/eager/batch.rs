//! `load_many` and `load_one`: every child of a list of parents in one query per relation.

use std::collections::HashMap;
use std::hash::Hash;

use sqlx::{FromRow, Pool, QueryBuilder};

use super::key::private::TopN;
use super::{CompositeKey, Error, Key};
use crate::query::{Backend, is_qualified_identifier};

/// The default and the largest number of keys one query carries, [`Relation::chunk_size`].
///
/// On SQLite each key is a bind parameter and 32 766 is SQLite's default limit; on
/// PostgreSQL the keys travel as one array parameter, and the bound only caps the size of
/// one statement.
pub const MAX_KEYS_PER_QUERY: usize = 32_766;

/// How to read the children of a relation: the `SELECT ... FROM ...` text, the column
/// holding the parent's key, an optional filter and order.
///
/// Every piece is SQL you wrote, never text from a request: the keys are the only values,
/// and they are bound. The query built is
///
/// ```text
/// <select> WHERE [(<filter>) AND] <column> = ANY($1) [ORDER BY <order>]   -- PostgreSQL
/// <select> WHERE [(<filter>) AND] <column> IN (?, ?, ...) [ORDER BY <order>]  -- SQLite
/// ```
///
/// The selected rows must include the key column under its unqualified name (`user_id`
/// for a column `p.user_id`): it is read back to group the rows.
#[derive(Clone, Debug)]
pub struct Relation {
    select: String,
    column: String,
    /// The key columns of a composite key; empty for a single one.
    columns: Vec<String>,
    filter: Option<String>,
    order_by: Option<String>,
    chunk_size: usize,
    per_parent: Option<usize>,
}

impl Relation {
    /// The children selected by `select` (`SELECT ... FROM ...`, joins allowed, no
    /// `WHERE`), keyed by `column` (`user_id` or `p.user_id`).
    pub fn new(select: impl Into<String>, column: impl Into<String>) -> Self {
        Self {
            select: select.into(),
            column: column.into(),
            columns: Vec::new(),
            filter: None,
            order_by: None,
            chunk_size: MAX_KEYS_PER_QUERY,
            per_parent: None,
        }
    }

    /// The children selected by `select`, keyed by several columns together (`["tenant_id",
    /// "user_id"]`), for [`load_many_composite`]: the query tests `(tenant_id, user_id)`
    /// against the keys. Each column must be among the selected ones under its
    /// unqualified name.
    pub fn composite<C: Into<String>>(
        select: impl Into<String>,
        columns: impl IntoIterator<Item = C>,
    ) -> Self {
        let columns: Vec<String> = columns.into_iter().map(Into::into).collect();
        let mut relation = Self::new(select, columns.join(", "));
        relation.columns = columns;
        relation
    }

    /// A condition every child must meet besides its key (SQL text without bind
    /// parameters, such as `score >= 50`). None by default.
    #[must_use]
    pub fn filter(mut self, condition: impl Into<String>) -> Self {
        self.filter = Some(condition.into());
        self
    }

    /// The order of the children inside each parent's group (`completed_at DESC, id`).
    /// None by default: each group comes in whatever order the database returns it.
    #[must_use]
    pub fn order_by(mut self, order: impl Into<String>) -> Self {
        self.order_by = Some(order.into());
        self
    }

    /// At most `n` children per parent, the first in [`order_by`](Self::order_by) order
    /// ("the latest 3 progress rows per user"), still in one query: on PostgreSQL a
    /// `LATERAL` subquery per key (`... LIMIT n`, which an index on the key and order
    /// serves directly), on SQLite a window function (`ROW_NUMBER() OVER (PARTITION BY
    /// <column> ORDER BY <order>)`). For [`load_many`] and [`load_one`]; `select` must
    /// then begin with `SELECT` and have one top-level `FROM`. No limit by default.
    #[must_use]
    pub fn limit_per_parent(mut self, n: usize) -> Self {
        self.per_parent = Some(n);
        self
    }

    /// The most keys one query carries; more keys take more queries. Clamped to
    /// 1..=[`MAX_KEYS_PER_QUERY`], which is the default.
    #[must_use]
    pub fn chunk_size(mut self, keys: usize) -> Self {
        self.chunk_size = keys.clamp(1, MAX_KEYS_PER_QUERY);
        self
    }

    /// The name the key column has in the rows: the last part of a qualified name.
    fn read_as(&self) -> &str {
        self.column.rsplit('.').next().unwrap_or(&self.column)
    }

    /// The names the composite key's columns have in the rows.
    fn read_all_as(&self) -> Vec<&str> {
        self.columns
            .iter()
            .map(|c| c.rsplit('.').next().unwrap_or(c))
            .collect()
    }

    /// Checks the key column, or the `arity` columns of a composite key (`arity` 1 for a
    /// single key).
    fn check_for(&self, arity: usize) -> Result<(), Error> {
        let bad = |column: &str| Error::Column {
            column: column.to_owned(),
        };
        if arity == 1 {
            if !self.columns.is_empty() || !is_qualified_identifier(&self.column) {
                return Err(bad(&self.column));
            }
            return Ok(());
        }
        if self.columns.len() != arity {
            return Err(Error::Arity {
                columns: self.columns.len().max(1),
                key: arity,
            });
        }
        match self.columns.iter().find(|c| !is_qualified_identifier(c)) {
            Some(column) => Err(bad(column)),
            None => Ok(()),
        }
    }

    fn check(&self) -> Result<(), Error> {
        self.check_for(1)?;
        if self.per_parent.is_some() {
            let parts = TopN {
                select: self.select.trim_end(),
                column: &self.column,
                filter: None,
                order_by: None,
                n: 0,
            };
            let select = self.select.trim_start();
            if select.len() < 7
                || !select[..6].eq_ignore_ascii_case("select")
                || parts.top_level_from().is_none()
            {
                return Err(Error::Select);
            }
        }
        Ok(())
    }

    /// The query for `keys`, each key bound.
    fn query<DB, K>(&self, keys: &[K]) -> QueryBuilder<DB>
    where
        DB: Backend,
        K: Key<DB>,
    {
        if let Some(n) = self.per_parent {
            return K::top_n(
                TopN {
                    select: self.select.trim_end(),
                    column: &self.column,
                    filter: self.filter.as_deref(),
                    order_by: self.order_by.as_deref(),
                    n,
                },
                keys,
            );
        }
        self.query_with(|query| {
            query.push(&self.column);
            K::push_keys(query, keys);
        })
    }

    /// The query for composite `keys`, each key bound.
    fn composite_query<DB, K>(&self, keys: &[K]) -> QueryBuilder<DB>
    where
        DB: Backend,
        K: CompositeKey<DB>,
    {
        self.query_with(|query| {
            query.push("(").push(self.columns.join(", ")).push(")");
            K::push_keys(query, keys);
        })
    }

    fn query_with<DB: Backend>(
        &self,
        keys: impl FnOnce(&mut QueryBuilder<DB>),
    ) -> QueryBuilder<DB> {
        let mut query = QueryBuilder::new(self.select.trim_end());
        query.push(" WHERE ");
        if let Some(filter) = &self.filter {
            query.push("(").push(filter).push(") AND ");
        }
        keys(&mut query);
        if let Some(order) = &self.order_by {
            query.push(" ORDER BY ").push(order);
        }
        query
    }
}

/// The children of a list of parents, grouped by parent key.
///
/// The groups come in the order the parents' keys first appear, one group per distinct
/// key (a parent without children has an empty group); each group keeps the order of the
/// query ([`Relation::order_by`]).
#[derive(Clone, Debug)]
pub struct Loaded<K, C> {
    groups: Vec<(K, Vec<C>)>,
    index: HashMap<K, usize>,
    orphans: Vec<(K, C)>,
    queries: usize,
}

impl<K: Clone + Eq + Hash, C> Loaded<K, C> {
    /// One empty group per key of `keys` (distinct, at their `index` positions), to fill
    /// row by row with [`add`](Self::add).
    fn empty(keys: &[K], index: HashMap<K, usize>) -> Self {
        Self {
            groups: keys.iter().map(|k| (k.clone(), Vec::new())).collect(),
            index,
            orphans: Vec::new(),
            queries: 0,
        }
    }

    /// Files `child` in its parent's group, or among the orphans when no parent asked for
    /// `key`.
    fn add(&mut self, key: K, child: C) {
        match self.index.get(&key) {
            Some(&at) => self.groups[at].1.push(child),
            None => self.orphans.push((key, child)),
        }
    }
}

impl<K: Eq + Hash, C> Loaded<K, C> {
    /// The children of the parent with `key`: empty when it has none or was not asked for.
    pub fn get(&self, key: &K) -> &[C] {
        self.index
            .get(key)
            .map_or(&[], |&at| self.groups[at].1.as_slice())
    }

    /// The groups, one per distinct key, in the parents' order.
    pub fn groups(&self) -> &[(K, Vec<C>)] {
        &self.groups
    }

    /// The groups, owned.
    pub fn into_groups(self) -> Vec<(K, Vec<C>)> {
        self.groups
    }

    /// Rows the query returned whose key no parent has, with that key: a relation whose
    /// key column or filter does not say what it means. Empty when all is well.
    pub fn orphans(&self) -> &[(K, C)] {
        &self.orphans
    }

    /// How many queries the load took (one per [`Relation::chunk_size`] keys; none for no
    /// parents).
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// Each parent beside its children, in the parents' order (a key shared by two
    /// parents gives both the same children).
    pub fn zip<'a, P>(
        &'a self,
        parents: &'a [P],
        key_of: impl Fn(&P) -> K + 'a,
    ) -> impl Iterator<Item = (&'a P, &'a [C])> + 'a {
        parents.iter().map(move |parent| {
            let key = key_of(parent);
            (parent, self.get(&key))
        })
    }
}

/// The distinct keys of `parents`, in the order they first appear.
fn distinct_keys<P, K: Clone + Eq + Hash>(
    parents: &[P],
    key_of: impl Fn(&P) -> K,
) -> (Vec<K>, HashMap<K, usize>) {
    let mut keys = Vec::new();
    let mut index = HashMap::new();
    for parent in parents {
        let key = key_of(parent);
        if !index.contains_key(&key) {
            index.insert(key.clone(), keys.len());
            keys.push(key);
        }
    }
    (keys, index)
}

/// Loads the children of every parent in one query (one per [`Relation::chunk_size`]
/// keys) instead of one query per parent.
///
/// Keys are deduplicated; on PostgreSQL they travel as one array (`= ANY($1)`), so one
/// prepared statement serves every number of keys; on SQLite as `IN (?, ...)`. No parent
/// means no query.
///
/// # Errors
///
/// [`Error::Column`] when the relation's key column is not an identifier, [`Error::Sql`]
/// when a query fails or a row does not decode (into `C`, or its key into `K`).
pub async fn load_many<DB, P, K, C>(
    pool: &Pool<DB>,
    parents: &[P],
    key_of: impl Fn(&P) -> K,
    relation: &Relation,
) -> Result<Loaded<K, C>, Error>
where
    DB: Backend,
    K: Key<DB>,
    C: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
{
    relation.check()?;
    let (keys, index) = distinct_keys(parents, key_of);
    let mut loaded = Loaded::empty(&keys, index);
    // The key column's position, looked up by name once: each row is then read by index.
    let mut key_at = None;
    for chunk in keys.chunks(relation.chunk_size) {
        loaded.queries += 1;
        // Rows are decoded as they arrive rather than gathered first.
        DB::for_each_row(pool, relation.query(chunk), |row| {
            let at = match key_at {
                Some(at) => at,
                None => *key_at.insert(K::position(&row, relation.read_as())?),
            };
            loaded.add(K::read_at(&row, at)?, C::from_row(&row)?);
            Ok(())
        })
        .await?;
    }
    Ok(loaded)
}

/// Loads the children of every parent by a composite key (`(tenant_id, user_id)`, a
/// tuple of two or three columns of a [`Relation::composite`]) in one query per
/// [`Relation::chunk_size`] keys, as [`load_many`] does by one column: on PostgreSQL
/// `(a, b) IN (SELECT * FROM UNNEST($1, $2))`, one array per column; on SQLite
/// `(a, b) IN (VALUES (?, ?), ...)`, chunked under its bind limit.
///
/// # Errors
///
/// As [`load_many`], and [`Error::Arity`] when the relation's columns are not as many as
/// the key's.
pub async fn load_many_composite<DB, P, K, C>(
    pool: &Pool<DB>,
    parents: &[P],
    key_of: impl Fn(&P) -> K,
    relation: &Relation,
) -> Result<Loaded<K, C>, Error>
where
    DB: Backend,
    K: CompositeKey<DB>,
    C: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
{
    relation.check_for(K::ARITY)?;
    let names = relation.read_all_as();
    let (keys, index) = distinct_keys(parents, key_of);
    let mut loaded = Loaded::empty(&keys, index);
    let chunk = relation.chunk_size.min(DB::MAX_BINDS / K::ARITY);
    for chunk in keys.chunks(chunk) {
        loaded.queries += 1;
        DB::for_each_row(pool, relation.composite_query(chunk), |row| {
            loaded.add(K::read(&row, &names)?, C::from_row(&row)?);
            Ok(())
        })
        .await?;
    }
    Ok(loaded)
}

/// The to-one relation of a list of parents (each order's customer): at most one row
/// per key.
#[derive(Clone, Debug)]
pub struct LoadedOne<K, C> {
    loaded: Loaded<K, C>,
    extra: Vec<(K, C)>,
}

impl<K: Eq + Hash, C> LoadedOne<K, C> {
    /// The row of the parent with `key`, if there is one.
    pub fn get(&self, key: &K) -> Option<&C> {
        self.loaded.get(key).first()
    }

    /// Each parent beside its row, in the parents' order.
    pub fn zip<'a, P>(
        &'a self,
        parents: &'a [P],
        key_of: impl Fn(&P) -> K + 'a,
    ) -> impl Iterator<Item = (&'a P, Option<&'a C>)> + 'a {
        parents.iter().map(move |parent| {
            let key = key_of(parent);
            (parent, self.get(&key))
        })
    }

    /// Rows beyond the first for one key: a to-one relation that is not one. Empty when
    /// all is well.
    pub fn extra(&self) -> &[(K, C)] {
        &self.extra
    }

    /// Rows whose key no parent has, as [`Loaded::orphans`].
    pub fn orphans(&self) -> &[(K, C)] {
        self.loaded.orphans()
    }
}

/// Loads a to-one relation (one row per key, such as each order's customer) in one query,
/// as [`load_many`] does; a key with more than one row keeps the first (in the
/// relation's order) and reports the rest as [`LoadedOne::extra`].
///
/// # Errors
///
/// As [`load_many`].
pub async fn load_one<DB, P, K, C>(
    pool: &Pool<DB>,
    parents: &[P],
    key_of: impl Fn(&P) -> K,
    relation: &Relation,
) -> Result<LoadedOne<K, C>, Error>
where
    DB: Backend,
    K: Key<DB>,
    C: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
{
    let mut loaded = load_many(pool, parents, key_of, relation).await?;
    let mut extra = Vec::new();
    for (key, group) in &mut loaded.groups {
        if group.len() > 1 {
            extra.extend(group.drain(1..).map(|child| (key.clone(), child)));
        }
    }
    Ok(LoadedOne { loaded, extra })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_in_first_seen_order() {
        let (keys, index) = distinct_keys(&[3, 1, 3, 2, 1], |&k: &i64| k);
        assert_eq!(keys, [3, 1, 2]);
        assert_eq!(index[&2], 2);
        let (keys, _) = distinct_keys(&[] as &[i64], |&k| k);
        assert!(keys.is_empty());
    }

    #[test]
    fn chunk_size_is_clamped() {
        assert_eq!(Relation::new("SELECT 1", "a").chunk_size(0).chunk_size, 1);
        assert_eq!(
            Relation::new("SELECT 1", "a")
                .chunk_size(usize::MAX)
                .chunk_size,
            MAX_KEYS_PER_QUERY
        );
    }

    #[test]
    fn the_key_is_read_by_its_unqualified_name() {
        assert_eq!(Relation::new("", "p.user_id").read_as(), "user_id");
        assert_eq!(Relation::new("", "user_id").read_as(), "user_id");
        assert!(Relation::new("", "user_id; DROP").check().is_err());
    }
}
