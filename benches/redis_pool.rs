//! Placeholder replaced by the redis_pool benchmark.
fn main() {}
