//! Placeholder replaced by the health benchmark.
fn main() {}
