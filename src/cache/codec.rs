//! The value format: a one-byte header, then MessagePack, compressed above a threshold.

use std::{any::Any, io::Write, sync::Arc};

use bytes::Bytes;
use flate2::{Compression, read::DeflateDecoder, write::DeflateEncoder};
use serde::{Serialize, de::DeserializeOwned};

use super::{backend::AnyValue, error::CodecError};

/// Header: MessagePack with named fields (structs as maps), uncompressed.
pub(crate) const MSGPACK_NAMED: u8 = 0x01;
/// Header: MessagePack with named fields, deflate-compressed.
pub(crate) const MSGPACK_NAMED_DEFLATE: u8 = 0x81;

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
    let mut compressed = Vec::with_capacity(out.len() / 2 + 16);
    compressed.push(MSGPACK_NAMED_DEFLATE);
    let mut encoder = DeflateEncoder::new(compressed, Compression::fast());
    encoder
        .write_all(&out[1..])
        .and_then(|()| encoder.finish())
        .map(Bytes::from)
        .map_err(CodecError::Decompress)
}

/// Decodes bytes written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&header, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match header {
        MSGPACK_NAMED => rmp_serde::from_slice(body).map_err(CodecError::Decode),
        MSGPACK_NAMED_DEFLATE => {
            rmp_serde::from_read(DeflateDecoder::new(body)).map_err(|err| match err {
                rmp_serde::decode::Error::InvalidMarkerRead(io)
                | rmp_serde::decode::Error::InvalidDataRead(io) => CodecError::Decompress(io),
                other => CodecError::Decode(other),
            })
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
