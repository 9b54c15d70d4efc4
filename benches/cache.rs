//! perfkit's cache beside the crates it is measured against, in one run:
//!
//! - `cache_hit`: a hit on a 10-record value through `Cache::get` (memory backend, with
//!   and without tags) beside moka's `get` of the same value;
//! - `cache_store`: the memory backend's store candidates, moka (per-entry expiry) and
//!   quick_cache, holding the same entries with the same weigher;
//! - `cache_invalidate`: `invalidate_tags` with 10 and with 100 000 tagged entries;
//! - `cache_codec`: MessagePack with named fields (what the cache writes), positional
//!   MessagePack and serde_json, encode and decode of a typical record list, and sizes.
//!
//! - `cache_redis_hit` / `cache_tiered_hit`: a Redis-backend hit with two tags beside a raw
//!   `GET` of the same bytes, and a tiered L1 hit beside a memory hit (`REDIS_URL` needed).
//!
//! Each group is one module of `benches/cache/` with `pub(crate) fn run(c, rt)`, declared in
//! the `cache` module below and called from `run_groups`.
//!
//! Run with `cargo bench --bench cache --all-features`.

mod support;

use criterion::Criterion;
use tokio::runtime::Runtime;

mod cache {
    pub(crate) mod codec;
    pub(crate) mod hit;
    pub(crate) mod invalidate;
    pub(crate) mod records;
    pub(crate) mod redis;
    pub(crate) mod store;
}

fn run_groups(c: &mut Criterion, rt: &Runtime) {
    cache::hit::run(c, rt);
    cache::store::run(c, rt);
    cache::invalidate::run(c, rt);
    cache::codec::run(c, rt);
    cache::redis::run(c, rt);
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = support::criterion();
    run_groups(&mut c, &rt);
    c.final_summary();
}
