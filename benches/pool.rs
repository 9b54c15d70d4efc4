//! Placeholder replaced by the pool benchmark.
fn main() {}
