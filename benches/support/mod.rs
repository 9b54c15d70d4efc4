//! What every bench shares: quick default settings and the ratio table printed after a run.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use criterion::Criterion;

pub(crate) mod layers;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "rate-limit")]
pub(crate) mod rate_limit;
pub(crate) mod tcp;

/// A service URL from the environment (`REDIS_URL`, `DATABASE_URL`), trimmed; `None` when
/// it is unset or empty, for the bench to say it is skipped.
pub(crate) fn service_url(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
}

/// Criterion settings that keep a default `cargo bench` run to a few minutes (no plots: they
/// take longer to draw than most benches take to run); command-line options
/// (`--measurement-time`, `--sample-size`, `--plotting-backend`, ...) still override them.
pub(crate) fn criterion() -> Criterion {
    run_started();
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .without_plots()
        .configure_from_args()
}

/// Where criterion keeps its estimates for this run.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// When this bench run started: estimates written before it come from an earlier run (a
/// group a filter left out this time) and are never reported as this run's.
fn run_started() -> std::time::SystemTime {
    static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();
    *STARTED.get_or_init(std::time::SystemTime::now)
}

/// The time of one iteration of `group/id` in nanoseconds, as criterion just measured it: the
/// slope estimate criterion prints as `time:`, or the mean where it has no slope. `None`
/// when this run did not measure it.
pub(crate) fn estimate_ns(group: &str, id: &str) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if written < run_started() {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| json["mean"]["point_estimate"].as_f64())
}

/// Prints each variant of `group` beside `baseline`: time per iteration, ratio, and what it
/// adds. Variants that were filtered out of this run are left out.
pub(crate) fn print_ratios(group: &str, baseline: &str, variants: &[&str]) {
    let Some(base) = estimate_ns(group, baseline) else {
        return;
    };
    println!();
    println!("{group}: ratios to `{baseline}` ({base:.1} ns)");
    println!(
        "  {:<28} {:>12} {:>10} {:>12}",
        "variant", "ns/iter", "ratio", "added ns"
    );
    for variant in variants {
        if let Some(ns) = estimate_ns(group, variant) {
            println!(
                "  {:<28} {:>12.1} {:>9.2}x {:>12.1}",
                variant,
                ns,
                ns / base,
                ns - base
            );
        }
    }
}

/// Prints `a` against `b` (how many times faster or slower `a` is).
pub(crate) fn print_versus(group: &str, a: &str, b: &str) {
    if let (Some(x), Some(y)) = (estimate_ns(group, a), estimate_ns(group, b)) {
        println!("  {group}: {a} / {b} = {:.2}x", x / y);
    }
}
