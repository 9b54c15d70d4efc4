//! perfkit's query helpers beside the "before" and the best hand-written sqlx for the same
//! job, on PostgreSQL over loopback:
//!
//! - `eager_load`: the progress rows (ten each) of 100 users out of 10 000: the N+1 loop
//!   (one query per user), a hand-written `WHERE user_id = ANY($1)` query grouped into a
//!   `HashMap`, `eager::load_many`, and a `DataLoader` answering 100 concurrent `load`s;
//! - `bulk_insert`: 10 000 rows of four columns in one transaction: row by row, hand-written
//!   `push_values` in 1 000-row chunks, and `bulk::BulkInsert` (1 000-row chunks by
//!   default). The table is emptied before each iteration, outside the timing.
//!
//! Needs `DATABASE_URL`; without it the bench prints a line and does nothing. The tables
//! live in a schema of their own, `perfkit_bench_queries`, created and seeded on the first
//! run. Run with
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench queries --all-features`.

mod support;

use criterion::Criterion;
use tokio::runtime::Runtime;

mod queries {
    pub(crate) mod bulk;
    pub(crate) mod eager;
    pub(crate) mod setup;
}

fn run_groups(c: &mut Criterion, rt: &Runtime, url: &str) {
    let bench = rt.block_on(queries::setup::Bench::connect(url));
    queries::eager::run(c, rt, &bench);
    queries::bulk::run(c, rt, &bench);
}

fn main() {
    let Some(url) = support::service_url("DATABASE_URL") else {
        println!("skipped benches/queries.rs: DATABASE_URL is not set");
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
