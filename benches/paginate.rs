//! perfkit's pagination beside the best hand-written sqlx for the same job, on PostgreSQL
//! over loopback, 100 000 users, pages of 50:
//!
//! - `paginate_offset`: pages 1, 100 and 1000 by `LIMIT`/`OFFSET`: hand-written sqlx beside
//!   `paginate` with a provided total (the same single statement, no count);
//! - `paginate_keyset`: the same depths by keyset on `(created_at, id)`: hand-written
//!   `WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT 51` (one row more
//!   tells whether a next page exists, as perfkit's does) beside `Keyset::fetch` with a
//!   signed cursor; the OFFSET page of the same depth is the "before";
//! - `paginate_count`: page 1 under each count strategy, beside the page alone
//!   (`provided`) and a hand-written `SELECT COUNT(*)` alone.
//!
//! Needs `DATABASE_URL`; without it the bench prints a line and does nothing. The table
//! lives in a schema of its own, `perfkit_bench_paginate`, created and seeded on the first
//! run. Run with
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench paginate --all-features`.

mod support;

use criterion::Criterion;
use tokio::runtime::Runtime;

mod paginate {
    pub(crate) mod count;
    pub(crate) mod keyset;
    pub(crate) mod offset;
    pub(crate) mod setup;
}

fn run_groups(c: &mut Criterion, rt: &Runtime, url: &str) {
    let bench = rt.block_on(paginate::setup::Bench::connect(url));
    paginate::offset::run(c, rt, &bench);
    paginate::keyset::run(c, rt, &bench);
    paginate::count::run(c, rt, &bench);
}

fn main() {
    let Some(url) = support::service_url("DATABASE_URL") else {
        println!("skipped benches/paginate.rs: DATABASE_URL is not set");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = support::criterion();
    run_groups(&mut c, &rt, &url);
    c.final_summary();
}
