//! Encoding a 10-record value: MessagePack with named fields (the cache's format),
//! positional MessagePack and serde_json; time and size. `msgpack_named_deflate` adds
//! compression as the cache does it for values above its threshold: one deflate state per
//! thread, reset between values.

use std::{cell::RefCell, hint::black_box};

use criterion::Criterion;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::runtime::Runtime;

use super::records::{Record, records};
use crate::support;

const ENCODE: &str = "cache_codec_encode";
const DECODE: &str = "cache_codec_decode";

thread_local! {
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    DEFLATE.with_borrow_mut(|state| {
        state.reset();
        let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let consumed = state.total_in() as usize;
            let status = state
                .compress_vec(&bytes[consumed..], &mut out, FlushCompress::Finish)
                .unwrap();
            if status == Status::StreamEnd {
                return out;
            }
        }
    })
}

fn inflate(bytes: &[u8]) -> Vec<u8> {
    INFLATE.with_borrow_mut(|state| {
        state.reset(false);
        let mut out = Vec::with_capacity(bytes.len() * 4);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let consumed = state.total_in() as usize;
            let status = state
                .decompress_vec(&bytes[consumed..], &mut out, FlushDecompress::None)
                .unwrap();
            if status == Status::StreamEnd {
                return out;
            }
        }
    })
}

pub(crate) fn run(c: &mut Criterion, _rt: &Runtime) {
    let value = records();
    let named = rmp_serde::to_vec_named(&value).unwrap();
    let positional = rmp_serde::to_vec(&value).unwrap();
    let json = serde_json::to_vec(&value).unwrap();
    let deflated = deflate(&named);

    let mut group = c.benchmark_group(ENCODE);
    group.bench_function("msgpack_named", |b| {
        b.iter(|| rmp_serde::to_vec_named(black_box(&value)).unwrap())
    });
    group.bench_function("msgpack_positional", |b| {
        b.iter(|| rmp_serde::to_vec(black_box(&value)).unwrap())
    });
    group.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&value)).unwrap())
    });
    group.bench_function("msgpack_named_deflate", |b| {
        b.iter(|| deflate(&rmp_serde::to_vec_named(black_box(&value)).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group(DECODE);
    group.bench_function("msgpack_named", |b| {
        b.iter(|| rmp_serde::from_slice::<Vec<Record>>(black_box(&named)).unwrap())
    });
    group.bench_function("msgpack_positional", |b| {
        b.iter(|| rmp_serde::from_slice::<Vec<Record>>(black_box(&positional)).unwrap())
    });
    group.bench_function("serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Record>>(black_box(&json)).unwrap())
    });
    group.bench_function("msgpack_named_deflate", |b| {
        b.iter(|| rmp_serde::from_slice::<Vec<Record>>(&inflate(black_box(&deflated))).unwrap())
    });
    group.finish();

    let variants = ["msgpack_positional", "serde_json", "msgpack_named_deflate"];
    support::print_ratios(ENCODE, "msgpack_named", &variants);
    support::print_ratios(DECODE, "msgpack_named", &variants);
    println!();
    println!("cache_codec sizes of the 10-record value:");
    println!("  msgpack_named          {:>6} bytes", named.len());
    println!("  msgpack_named_deflate  {:>6} bytes", deflated.len());
    println!("  msgpack_positional     {:>6} bytes", positional.len());
    println!("  serde_json             {:>6} bytes", json.len());
}
