//! Instructions per request of the same services as `benches/layers.rs`, counted by
//! valgrind's callgrind: unlike wall-clock time, the count is the same on every run, so
//! small differences between layers show through the noise of a shared machine.
//!
//! Run with `cargo bench --bench layers_instructions --all-features` (needs `valgrind` on
//! `PATH`; says so and exits when it is missing). Each figure is the difference between a
//! run of 21 000 and a run of 1 000 requests, divided by 20 000, so start-up is not counted.
//!
//! With the `rate-limit` feature a third table counts the rate-limit layer as
//! `benches/rate_limit.rs` drives it (a hello-world service, one client whose address is in
//! the request extensions, a quota that never refuses), with each header family, beside
//! tower_governor's layer without and with its headers.
//!
//! `perfkit_timing_routed` is the timing layer with a `route_fn` labelling every request, so
//! each request also looks its route up in the statistics' route table. With the `cache`
//! feature a last table counts a memory-backend hit on a `u64` beside moka's `get`.

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::layers::{drive, pending, ready};

use http::StatusCode;
use tower::{Layer, service_fn};

const VARIANTS: [&str; 5] = [
    "bare",
    "perfkit_timeout",
    "tower_http_timeout",
    "perfkit_timing",
    "perfkit_timing_routed",
];
const SHAPES: [&str; 2] = ["ready", "pending"];
/// The rate-limit table's variants; its baseline is `bare` driven the same way.
#[cfg(feature = "rate-limit")]
const RATE_LIMIT_VARIANTS: [&str; 7] = [
    "bare",
    "perfkit_no_headers",
    "perfkit_legacy_headers",
    "perfkit_draft_headers",
    "perfkit_all_headers",
    "tower_governor",
    "tower_governor_headers",
];
#[cfg(not(feature = "rate-limit"))]
const RATE_LIMIT_VARIANTS: [&str; 0] = [];
/// The cache table's variants: a hit on a `u64` (free to clone, so the fixed cost of a
/// lookup shows: the storage key, the backend, the decode), beside moka's `get`.
#[cfg(feature = "cache")]
const CACHE_VARIANTS: [&str; 3] = ["bare", "perfkit_get_u64", "moka_get_u64"];
#[cfg(not(feature = "cache"))]
const CACHE_VARIANTS: [&str; 0] = [];
const SHORT_RUN: u64 = 1_000;
const LONG_RUN: u64 = 21_000;

/// Sends `requests` requests through one variant; what callgrind measures.
fn probe(variant: &str, shape: &str, requests: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    #[cfg(feature = "rate-limit")]
    if shape == "rate_limit" {
        rt.block_on(rate_limit::probe(variant, requests));
        return;
    }
    #[cfg(feature = "cache")]
    if shape == "cache" {
        rt.block_on(cache::probe(variant, requests));
        return;
    }
    let timeout = Duration::from_secs(30);
    macro_rules! run {
        ($handler:expr) => {
            match variant {
                "bare" => drive(service_fn($handler), requests).await,
                "perfkit_timeout" => {
                    let layer = perfkit::timeout::TimeoutLayer::new(timeout);
                    drive(layer.layer(service_fn($handler)), requests).await
                }
                "tower_http_timeout" => {
                    let layer = tower_http::timeout::TimeoutLayer::with_status_code(
                        StatusCode::GATEWAY_TIMEOUT,
                        timeout,
                    );
                    drive(layer.layer(service_fn($handler)), requests).await
                }
                "perfkit_timing" => {
                    let layer = perfkit::timing::TimingLayer::new();
                    drive(layer.layer(service_fn($handler)), requests).await
                }
                // As an application labels its routes: every request looks up the label.
                "perfkit_timing_routed" => {
                    let layer = perfkit::timing::TimingLayer::new()
                        .route_fn(|_: &http::Request<()>| Some("/users/{id}"));
                    drive(layer.layer(service_fn($handler)), requests).await
                }
                other => panic!("unknown variant {other}"),
            }
        };
    }
    rt.block_on(async {
        match shape {
            "ready" => run!(ready),
            _ => run!(pending),
        }
    });
}

/// Instructions callgrind counts for a whole run of `requests` requests.
fn count(variant: &str, shape: &str, requests: u64) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["--probe", variant, shape, &requests.to_string()])
        .stdout(Stdio::null())
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().find(|line| line.contains("Collected :"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--probe") {
        let requests = args[at + 3].parse().expect("request count");
        probe(&args[at + 1], &args[at + 2], requests);
        return;
    }
    // `cargo test --benches` runs bench targets in test mode: nothing to count there.
    if args.iter().any(|arg| arg == "--test" || arg == "--list") {
        return;
    }
    let has_valgrind = Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !has_valgrind {
        println!("layers_instructions: skipped, valgrind is not on PATH");
        return;
    }

    let mut tables: Vec<(&str, &[&str])> =
        SHAPES.iter().map(|shape| (*shape, &VARIANTS[..])).collect();
    if !RATE_LIMIT_VARIANTS.is_empty() {
        tables.push(("rate_limit", &RATE_LIMIT_VARIANTS[..]));
    }
    if !CACHE_VARIANTS.is_empty() {
        tables.push(("cache", &CACHE_VARIANTS[..]));
    }
    for (shape, variants) in tables {
        let per_request = |variant: &str| {
            let short = count(variant, shape, SHORT_RUN)?;
            let long = count(variant, shape, LONG_RUN)?;
            Some(long.saturating_sub(short) as f64 / (LONG_RUN - SHORT_RUN) as f64)
        };
        let Some(bare) = per_request("bare") else {
            println!("layers_instructions: callgrind gave no count");
            return;
        };
        println!("\nlayers_{shape}: instructions per request (callgrind)");
        println!(
            "  {:<22} {:>10} {:>8} {:>10}",
            "variant", "instr/req", "ratio", "added"
        );
        println!("  {:<22} {bare:>10.0} {:>7.2}x {:>10.0}", "bare", 1.0, 0.0);
        for variant in &variants[1..] {
            if let Some(instructions) = per_request(variant) {
                println!(
                    "  {variant:<22} {instructions:>10.0} {:>7.2}x {:>10.0}",
                    instructions / bare,
                    instructions - bare
                );
            }
        }
    }
}

/// The rate-limit variants, driven as `benches/rate_limit/layer.rs` drives them.
#[cfg(feature = "rate-limit")]
mod rate_limit {
    use std::time::Duration;

    use perfkit::rate_limit::{Quota, RateLimitHeaders, RateLimitLayer};
    use tower::{Layer, service_fn};
    use tower_governor::{GovernorLayer, governor::GovernorConfigBuilder};

    use crate::support::rate_limit::{BURST, RATE, drive, hello};

    pub(super) async fn probe(variant: &str, requests: u64) -> Duration {
        let quota = Quota::per_second(RATE).with_burst(BURST);
        let perfkit = |headers| RateLimitLayer::new(quota).headers(headers);
        let mut governor = GovernorConfigBuilder::default();
        governor
            .per_nanosecond(u64::from(1_000_000_000 / RATE))
            .burst_size(BURST);
        let headers = match variant {
            "bare" => return drive(service_fn(hello), requests).await,
            "tower_governor" => {
                let config = governor.finish().expect("a valid governor quota");
                let layer = GovernorLayer::new(config);
                return drive(layer.layer(service_fn(hello)), requests).await;
            }
            "tower_governor_headers" => {
                let config = governor.use_headers().finish();
                let layer = GovernorLayer::new(config.expect("a valid governor quota"));
                return drive(layer.layer(service_fn(hello)), requests).await;
            }
            "perfkit_no_headers" => RateLimitHeaders::NONE,
            "perfkit_legacy_headers" => RateLimitHeaders::LEGACY,
            "perfkit_draft_headers" => RateLimitHeaders::DRAFT,
            "perfkit_all_headers" => RateLimitHeaders::ALL,
            other => panic!("unknown variant {other}"),
        };
        drive(perfkit(headers).layer(service_fn(hello)), requests).await
    }
}

/// The cache variants, as `benches/cache/hit.rs` runs its `_u64` pair: `bare` is the same
/// loop around a `black_box` of the key.
#[cfg(feature = "cache")]
mod cache {
    use std::hint::black_box;

    use perfkit::cache::{Cache, EntryOptions};

    pub(super) async fn probe(variant: &str, requests: u64) {
        match variant {
            "bare" => {
                for _ in 0..requests {
                    black_box(black_box("counter"));
                }
            }
            "perfkit_get_u64" => {
                let cache = Cache::builder().build().unwrap();
                cache
                    .set("counter", &7u64, EntryOptions::new())
                    .await
                    .unwrap();
                for _ in 0..requests {
                    black_box(cache.get::<u64>(black_box("counter")).await.unwrap());
                }
            }
            "moka_get_u64" => {
                let moka: moka::sync::Cache<String, u64> = moka::sync::Cache::new(10_000);
                moka.insert("counter".to_owned(), 7);
                for _ in 0..requests {
                    black_box(moka.get(black_box("counter")));
                }
            }
            other => panic!("unknown variant {other}"),
        }
    }
}
