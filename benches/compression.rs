//! perfkit's compression layer beside tower-http's `CompressionLayer`, in one run, at the
//! same coding and level (brotli quality 4, gzip level 6), end to end through the layer:
//! a `service_fn` answering realistic JSON, the request's `Accept-Encoding`, and the whole
//! compressed body collected.
//!
//! - `compression_known_{1k,64k,1m}`: bodies of known length (`Full<Bytes>`);
//! - `compression_stream_{1k,64k,1m}`: the same bytes as a body of unknown length yielding
//!   16 KiB frames, every frame ready;
//! - `compression_identity`: the 64 KiB body through each layer for a client that accepts
//!   no coding, and the handler alone;
//! - `compression_levels`: speed against ratio on 200 KiB of JSON, brotli by quality
//!   through the layer, and deflate by level on flate2's zlib-rs backend (the one perfkit
//!   uses) beside miniz_oxide (flate2's default backend).
//!
//! Throughput is in bytes of input. After each group the run prints the time ratios and
//! the output sizes of both layers.
//!
//! Run with `cargo bench --bench compression --all-features`.

mod support;

use std::{
    convert::Infallible,
    hint::black_box,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use criterion::Throughput;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use perfkit::compression::{CompressionLayer, Encoding};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_http::compression::{CompressionLayer as TowerHttpLayer, CompressionLevel};

/// JSON user records, as the reference app's `/big` serves them, cut to `len` bytes.
fn json(len: usize) -> Bytes {
    const FIRST: [&str; 8] = [
        "Ada", "Bruno", "Chiara", "Dmitri", "Elif", "Farah", "Gustav", "Hana",
    ];
    const LAST: [&str; 8] = [
        "Okafor",
        "Lindqvist",
        "Moreau",
        "Tanaka",
        "Kowalski",
        "Haddad",
        "Silva",
        "Nguyen",
    ];
    const CITIES: [&str; 6] = ["Lisbon", "Osaka", "Nairobi", "Toronto", "Kraków", "Tallinn"];
    const WORDS: [&str; 10] = [
        "builds",
        "distributed",
        "systems",
        "and",
        "enjoys",
        "climbing",
        "coffee",
        "maps",
        "jazz",
        "tea",
    ];
    let mut out = String::from("[");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut id = 0u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pick = |shift: u32, n: usize| ((state >> shift) % n as u64) as usize;
        let bio: Vec<&str> = (0..6).map(|i| WORDS[pick(i * 4, WORDS.len())]).collect();
        if id > 0 {
            out.push(',');
        }
        out.push_str(
            &serde_json::json!({
                "id": id,
                "name": format!("{} {}", FIRST[pick(3, 8)], LAST[pick(9, 8)]),
                "email": format!("user{id}@example.com"),
                "city": CITIES[pick(17, 6)],
                "age": 18 + pick(23, 60),
                "active": state & 1 == 0,
                "balance_cents": state % 1_000_000,
                "bio": bio.join(" "),
            })
            .to_string(),
        );
        id += 1;
    }
    out.truncate(len);
    Bytes::from(out)
}

/// The body of unknown length: `data` in 16 KiB frames, each ready at once.
struct Frames {
    data: Bytes,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.data.len().min(16 * 1024);
        Poll::Ready(Some(Ok(Frame::data(self.data.split_to(n)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::new()
    }
}

fn response<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn request(accept: &'static str) -> Request<()> {
    let mut request = Request::new(());
    request
        .headers_mut()
        .insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accept));
    request
}

/// Sends one request through `service` and returns the length of the collected body.
async fn send<S, B>(service: &mut S, accept: &'static str) -> usize
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body<Error: std::fmt::Debug>,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request(accept))
        .await
        .unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

fn perfkit(encoding: Encoding, level: u32) -> CompressionLayer {
    CompressionLayer::new()
        .preference([encoding])
        .level(encoding, level)
}

fn tower_http(level: i32) -> TowerHttpLayer {
    TowerHttpLayer::new().quality(CompressionLevel::Precise(level))
}

/// `(variant, accept, perfkit coding or tower-http)` rows of a group.
const ROWS: [(&str, &str); 4] = [
    ("perfkit_br", "br"),
    ("tower_http_br", "br"),
    ("perfkit_gzip", "gzip"),
    ("tower_http_gzip", "gzip"),
];

macro_rules! bench_rows {
    ($group:expr, $rt:expr, $sizes:expr, $handler:expr) => {{
        let handler = $handler;
        for (id, accept) in ROWS {
            let (mut perfkit_service, mut tower_service);
            let size = match id {
                "perfkit_br" | "perfkit_gzip" => {
                    let layer = if accept == "br" {
                        perfkit(Encoding::Brotli, 4)
                    } else {
                        perfkit(Encoding::Gzip, 6)
                    };
                    perfkit_service = layer.layer(service_fn(handler.clone()));
                    let size = $rt.block_on(send(&mut perfkit_service, accept));
                    $group.bench_function(id, |b| {
                        b.to_async($rt).iter(|| {
                            let mut service = perfkit_service.clone();
                            async move { black_box(send(&mut service, accept).await) }
                        })
                    });
                    size
                }
                _ => {
                    let layer = tower_http(if accept == "br" { 4 } else { 6 });
                    tower_service = layer.layer(service_fn(handler.clone()));
                    let size = $rt.block_on(send(&mut tower_service, accept));
                    $group.bench_function(id, |b| {
                        b.to_async($rt).iter(|| {
                            let mut service = tower_service.clone();
                            async move { black_box(send(&mut service, accept).await) }
                        })
                    });
                    size
                }
            };
            $sizes.push((id, size));
        }
    }};
}

fn report(group: &str, input: usize, sizes: &[(&str, usize)]) {
    support::print_versus(group, "perfkit_br", "tower_http_br");
    support::print_versus(group, "perfkit_gzip", "tower_http_gzip");
    let size = |id: &str| sizes.iter().find(|(v, _)| *v == id).map_or(0, |(_, s)| *s);
    for coding in ["br", "gzip"] {
        let ours = size(&format!("perfkit_{coding}"));
        let theirs = size(&format!("tower_http_{coding}"));
        println!(
            "  {group}: {coding} output of {input} bytes: perfkit {ours} ({:.3}), tower-http {theirs} ({:.3}), perfkit / tower-http = {:.3}",
            ours as f64 / input as f64,
            theirs as f64 / input as f64,
            ours as f64 / theirs as f64,
        );
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = support::criterion();
    for (name, len) in [("1k", 1024), ("64k", 64 * 1024), ("1m", 1024 * 1024)] {
        let data = json(len);

        let group_name = format!("compression_known_{name}");
        let mut group = c.benchmark_group(&group_name);
        group.throughput(Throughput::Bytes(len as u64));
        let mut sizes = Vec::new();
        let body = data.clone();
        bench_rows!(group, &rt, sizes, move |_: Request<()>| {
            let body = body.clone();
            async move { Ok::<_, Infallible>(response(Full::new(body))) }
        });
        group.finish();
        report(&group_name, len, &sizes);

        let group_name = format!("compression_stream_{name}");
        let mut group = c.benchmark_group(&group_name);
        group.throughput(Throughput::Bytes(len as u64));
        let mut sizes = Vec::new();
        let body = data.clone();
        bench_rows!(group, &rt, sizes, move |_: Request<()>| {
            let body = body.clone();
            async move { Ok::<_, Infallible>(response(Frames { data: body })) }
        });
        group.finish();
        report(&group_name, len, &sizes);
    }

    let data = json(64 * 1024);
    let group_name = "compression_identity";
    let mut group = c.benchmark_group(group_name);
    let handler = move |_: Request<()>| {
        let body = data.clone();
        async move { Ok::<_, Infallible>(response(Full::new(body))) }
    };
    let bare = service_fn(handler.clone());
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| {
            let mut service = bare.clone();
            async move { black_box(send(&mut service, "identity").await) }
        })
    });
    let ours = CompressionLayer::new().layer(service_fn(handler.clone()));
    group.bench_function("perfkit", |b| {
        b.to_async(&rt).iter(|| {
            let mut service = ours.clone();
            async move { black_box(send(&mut service, "identity").await) }
        })
    });
    let theirs = TowerHttpLayer::new().layer(service_fn(handler));
    group.bench_function("tower_http", |b| {
        b.to_async(&rt).iter(|| {
            let mut service = theirs.clone();
            async move { black_box(send(&mut service, "identity").await) }
        })
    });
    group.finish();
    support::print_ratios(group_name, "bare", &["perfkit", "tower_http"]);

    levels(&mut c, &rt);
    c.final_summary();
}

/// Speed against ratio on 200 KiB of the app's JSON: brotli by quality, deflate by level on
/// flate2's zlib-rs backend (perfkit's) and on miniz_oxide (flate2's default backend).
fn levels(c: &mut criterion::Criterion, rt: &tokio::runtime::Runtime) {
    let data = json(200 * 1024);
    let group_name = "compression_levels";
    let mut group = c.benchmark_group(group_name);
    // (variant, output bytes, input bytes)
    let mut sizes = Vec::new();
    let small = json(8 * 1024);
    let rows = [1, 3, 4, 5, 6]
        .map(|q| (format!("br_q{q}"), q, data.clone()))
        .into_iter()
        .chain([4, 5].map(|q| (format!("br_q{q}_8k"), q, small.clone())));
    for (id, quality, body) in rows {
        let layer = perfkit(Encoding::Brotli, quality);
        let input = body.len();
        let service = layer.layer(service_fn(move |_: Request<()>| {
            let body = body.clone();
            async move { Ok::<_, Infallible>(response(Full::new(body))) }
        }));
        sizes.push((
            id.clone(),
            rt.block_on(send(&mut service.clone(), "br")),
            input,
        ));
        group.bench_function(&id, |b| {
            b.to_async(rt).iter(|| {
                let mut service = service.clone();
                async move { black_box(send(&mut service, "br").await) }
            })
        });
    }
    for level in [1, 2, 3, 6, 9] {
        let id = format!("zlib_rs_{level}");
        let compress = |data: &[u8]| {
            let mut out = Vec::with_capacity(data.len() / 3);
            let mut state = flate2::Compress::new(flate2::Compression::new(level), true);
            state
                .compress_vec(data, &mut out, flate2::FlushCompress::Finish)
                .unwrap();
            out.len()
        };
        sizes.push((id.clone(), compress(&data), data.len()));
        group.bench_function(&id, |b| b.iter(|| black_box(compress(black_box(&data)))));
        let id = format!("miniz_oxide_{level}");
        let compress =
            |data: &[u8]| miniz_oxide::deflate::compress_to_vec_zlib(data, level as u8).len();
        sizes.push((id.clone(), compress(&data), data.len()));
        group.bench_function(&id, |b| b.iter(|| black_box(compress(black_box(&data)))));
    }
    group.finish();
    println!("\n{group_name}: MB/s of input and output / input (200 KiB of JSON; _8k: 8 KiB)");
    for (id, size, input) in &sizes {
        if let Some(ns) = support::estimate_ns(group_name, id) {
            println!(
                "  {id:<16} {:>8.1} MB/s  {:>9.1} µs  ratio {:.3}",
                *input as f64 / ns * 1e3,
                ns / 1e3,
                *size as f64 / *input as f64
            );
        }
    }
}
