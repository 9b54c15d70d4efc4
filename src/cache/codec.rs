//! The value format: a one-byte header, then MessagePack, compressed above a threshold.

use std::{any::Any, cell::RefCell, sync::Arc};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use serde::{Serialize, de::DeserializeOwned};

use super::{backend::AnyValue, error::CodecError};

/// Header: MessagePack with named fields (structs as maps), uncompressed.
pub(crate) const MSGPACK_NAMED: u8 = 0x01;
/// Header: MessagePack with named fields, deflate-compressed.
pub(crate) const MSGPACK_NAMED_DEFLATE: u8 = 0x81;

/// Largest value a compressed entry may inflate to: bytes that claim more are corrupt (or
/// hostile) and are rejected before they can exhaust memory.
pub(crate) const MAX_INFLATED: usize = 64 * 1024 * 1024;

thread_local! {
    // Creating a deflate state costs tens of microseconds and hundreds of KiB; one per
    // thread, reset between uses, makes compression cost only the compressing. Level 2:
    // on flate2's zlib-rs backend, level 1 is a quick mode whose output is a sixth larger
    // for JSON, and level 2 is as fast as miniz_oxide's level 1 with output a sixth
    // smaller (BENCHMARKS.md, "Compression").
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(2), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Encodes `value`: header byte, then named-field MessagePack, deflated (fast level) when
/// the MessagePack is longer than `threshold` bytes.
pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    threshold: usize,
) -> Result<Bytes, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.push(MSGPACK_NAMED);
    rmp_serde::encode::write_named(&mut out, value).map_err(CodecError::Encode)?;
    if out.len() - 1 <= threshold {
        return Ok(out.into());
    }
    let mut compressed = Vec::with_capacity(out.len() / 2 + 64);
    compressed.push(MSGPACK_NAMED_DEFLATE);
    deflate(&out[1..], &mut compressed)?;
    Ok(compressed.into())
}

fn deflate(input: &[u8], out: &mut Vec<u8>) -> Result<(), CodecError> {
    DEFLATE.with_borrow_mut(|state| {
        state.reset();
        loop {
            let consumed = state.total_in() as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let status = state
                .compress_vec(&input[consumed..], out, FlushCompress::Finish)
                .map_err(|err| CodecError::Decompress(std::io::Error::other(err)))?;
            if status == Status::StreamEnd {
                return Ok(());
            }
        }
    })
}

fn inflate(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    INFLATE.with_borrow_mut(|state| {
        state.reset(false);
        let mut out = Vec::with_capacity(input.len().saturating_mul(4).clamp(64, limit.max(64)));
        loop {
            let consumed = state.total_in() as usize;
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(CodecError::Decompress(std::io::Error::other(format!(
                        "inflates beyond {limit} bytes"
                    ))));
                }
                out.reserve(out.capacity().max(64).min(limit - out.len()));
            }
            let before = (consumed, out.len());
            let status = state
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::None)
                .map_err(|err| CodecError::Decompress(std::io::Error::other(err)))?;
            match status {
                Status::StreamEnd => return Ok(out),
                // No progress with room left: the input ended before the stream did.
                _ if (state.total_in() as usize, out.len()) == before
                    && out.len() < out.capacity() =>
                {
                    return Err(CodecError::Decompress(std::io::Error::from(
                        std::io::ErrorKind::UnexpectedEof,
                    )));
                }
                _ => {}
            }
        }
    })
}

/// Decodes bytes written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&header, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match header {
        MSGPACK_NAMED => rmp_serde::from_slice(body).map_err(CodecError::Decode),
        MSGPACK_NAMED_DEFLATE => {
            rmp_serde::from_slice(&inflate(body, MAX_INFLATED)?).map_err(CodecError::Decode)
        }
        other => Err(CodecError::UnknownHeader(other)),
    }
}

/// [`decode`] into a shared, type-erased value: the [`Decoder`](super::Decoder) for `T`.
pub(crate) fn decode_any<T>(bytes: &[u8]) -> Result<AnyValue, CodecError>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    decode::<T>(bytes).map(|value| Arc::new(value) as Arc<dyn Any + Send + Sync>)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct V1 {
        id: u32,
        age: u32,
        name: String,
    }

    /// V1 with its fields reordered: positional MessagePack would swap `id` and `age`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Reordered {
        age: u32,
        id: u32,
        name: String,
    }

    /// V1 with a field renamed: positional MessagePack would decode `name` into `email`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Renamed {
        id: u32,
        age: u32,
        email: String,
    }

    fn v1() -> V1 {
        V1 {
            id: 1,
            age: 40,
            name: "ada".into(),
        }
    }

    #[test]
    fn round_trips_small_and_compressed_values() {
        let small = encode(&v1(), 1024).unwrap();
        assert_eq!(small[0], MSGPACK_NAMED);
        assert_eq!(decode::<V1>(&small).unwrap(), v1());

        let big: Vec<V1> = (0..100).map(|_| v1()).collect();
        let compressed = encode(&big, 1024).unwrap();
        assert_eq!(compressed[0], MSGPACK_NAMED_DEFLATE);
        let plain = encode(&big, usize::MAX).unwrap();
        assert!(
            compressed.len() < plain.len() / 4,
            "{} vs {}",
            compressed.len(),
            plain.len()
        );
        assert_eq!(decode::<Vec<V1>>(&compressed).unwrap(), big);
    }

    #[test]
    fn a_changed_struct_never_decodes_into_wrong_fields() {
        let bytes = encode(&v1(), 1024).unwrap();
        let reordered = decode::<Reordered>(&bytes).unwrap();
        assert_eq!((reordered.id, reordered.age), (1, 40));
        assert!(matches!(
            decode::<Renamed>(&bytes),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn a_decompression_bomb_is_rejected_not_inflated() {
        let mut bomb = vec![MSGPACK_NAMED_DEFLATE];
        deflate(&vec![0u8; 1 << 20], &mut bomb).unwrap();
        assert!(
            bomb.len() * 64 < 1 << 20,
            "a ratio above 64: {}",
            bomb.len()
        );
        assert!(matches!(
            inflate(&bomb[1..], 64 * 1024),
            Err(CodecError::Decompress(_))
        ));
        assert_eq!(inflate(&bomb[1..], 2 << 20).unwrap().len(), 1 << 20);
    }

    #[test]
    fn corrupt_or_foreign_bytes_are_errors_never_panics() {
        assert!(matches!(decode::<V1>(b""), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<V1>(b"{\"id\":1}"),
            Err(CodecError::UnknownHeader(b'{'))
        ));
        let good = encode(&v1(), 1024).unwrap();
        let compressed = encode(&vec![v1(); 100], 64).unwrap();
        for bytes in [&good[..], &compressed[..]] {
            for cut in 1..bytes.len() {
                assert!(decode::<V1>(&bytes[..cut]).is_err());
            }
            let mut flipped = bytes.to_vec();
            for i in 1..flipped.len() {
                flipped[i] ^= 0xa5;
                let _ = decode::<Vec<V1>>(&flipped);
                flipped[i] ^= 0xa5;
            }
        }
        assert!(matches!(
            decode::<V1>(&[MSGPACK_NAMED_DEFLATE, 0xff, 0x00, 0x13]),
            Err(CodecError::Decompress(_) | CodecError::Decode(_))
        ));
    }
}
