//! Encoding a 10-record value: MessagePack with named fields (the cache's format),
//! positional MessagePack and serde_json; time and size.

use std::{hint::black_box, io::Write};

use criterion::Criterion;
use flate2::{Compression, write::DeflateEncoder};
use tokio::runtime::Runtime;

use super::records::{Record, records};
use crate::support;

const ENCODE: &str = "cache_codec_encode";
const DECODE: &str = "cache_codec_decode";

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

pub(crate) fn run(c: &mut Criterion, _rt: &Runtime) {
    let value = records();
    let named = rmp_serde::to_vec_named(&value).unwrap();
    let positional = rmp_serde::to_vec(&value).unwrap();
    let json = serde_json::to_vec(&value).unwrap();

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
    group.finish();

    let variants = ["msgpack_positional", "serde_json", "msgpack_named_deflate"];
    support::print_ratios(ENCODE, "msgpack_named", &variants);
    support::print_ratios(DECODE, "msgpack_named", &variants);
    println!();
    println!("cache_codec sizes of the 10-record value:");
    println!("  msgpack_named          {:>6} bytes", named.len());
    println!("  msgpack_named_deflate  {:>6} bytes", deflate(&named).len());
    println!("  msgpack_positional     {:>6} bytes", positional.len());
    println!("  serde_json             {:>6} bytes", json.len());
}
