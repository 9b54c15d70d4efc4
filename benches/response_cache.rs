//! The response cache beside what it saves, in one run, through the whole layer stack
//! (request in, body collected):
//!
//! - `response_cache_memory`: a memory-backend hit beside the handler it caches, for a
//!   trivial handler and for one that takes 20 ms (goal: a hit under 10 µs);
//! - `response_cache_redis`: a Redis-backend hit (no in-process tier) beside a raw `GET`
//!   of the same stored bytes through the same `RedisHandle` (goal: within 1.3×); skipped
//!   with a line saying so when `REDIS_URL` is unset;
//! - `response_cache_brotli`: a `GET` with `Accept-Encoding: br` of a 200 KB JSON body
//!   through `CompressionLayer` alone (compressing every time) beside the same request
//!   through `CompressionLayer` over the response cache (a stored brotli variant);
//! - `response_cache_tcp`: the same `/big` over real loopback TCP through `perfkit::serve`,
//!   identity hits beside brotli hits and uncached brotli (goal: brotli hits at 0.9× or
//!   more of identity hits' requests per second).
//!
//! Each group is one module of `benches/response_cache/` with
//! `pub(crate) fn run(c, rt)`, declared in the `response_cache` module below.
//!
//! Run with `cargo bench --bench response_cache --all-features`.

mod support;

use criterion::Criterion;
use tokio::runtime::Runtime;

mod response_cache {
    pub(crate) mod brotli;
    pub(crate) mod common;
    pub(crate) mod memory;
    pub(crate) mod redis;
    pub(crate) mod tcp;
}

fn run_groups(c: &mut Criterion, rt: &Runtime) {
    response_cache::memory::run(c, rt);
    response_cache::redis::run(c, rt);
    response_cache::brotli::run(c, rt);
    response_cache::tcp::run(c, rt);
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
