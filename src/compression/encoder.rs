//! One streaming encoder over flate2 (gzip, deflate) and brotli, writing into a `Vec`.
//!
//! Both libraries are driven through their low-level streaming calls, so output goes
//! straight into the caller's buffer (no intermediate writer buffer, no copy), and the
//! window is sized to the body when its length is known: a 2 KiB body does not initialise
//! brotli's 4 MiB ring buffer or zlib's 32 KiB window.

use super::Encoding;

/// The error of an encoder that refused its input (a library invariant broke).
#[derive(Debug, thiserror::Error)]
#[error("{encoding} encoder failed: {reason}")]
pub(crate) struct EncodeError {
    encoding: Encoding,
    reason: &'static str,
}

/// What to do after feeding input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Keep what the encoder holds back: best ratio.
    None,
    /// Emit everything fed so far, decodable by the client now (a sync flush).
    Sync,
    /// End the stream.
    Finish,
}

pub(crate) struct Encoder {
    encoding: Encoding,
    codec: Codec,
}

enum Codec {
    #[cfg(feature = "compression-gzip")]
    /// `None` only while being dropped.
    Flate(FlateShape, Option<Box<flate2::Compress>>),
    #[cfg(feature = "compression-br")]
    Brotli(Box<brotli::enc::encode::BrotliEncoderStateStruct<brotli::enc::StandardAlloc>>),
}

/// Base-2 logarithm of the smallest window that holds `size` bytes, within `min..=max`.
fn window_bits(size: Option<u64>, min: u32, max: u32) -> u32 {
    match size {
        Some(size) => (u64::BITS - size.saturating_sub(1).leading_zeros()).clamp(min, max),
        None => max,
    }
}

impl Encoder {
    /// An encoder for `encoding` at `level` (brotli 0–11, gzip and deflate 0–9, clamped),
    /// sized for a body of `size` bytes when known. `None` when this build lacks the coding.
    pub(crate) fn new(encoding: Encoding, level: u32, size: Option<u64>) -> Option<Self> {
        let codec = match encoding {
            #[cfg(feature = "compression-gzip")]
            Encoding::Gzip | Encoding::Deflate => {
                let level = level.min(9);
                // zlib takes windows of 2^9 to 2^15 bytes.
                let bits = window_bits(size, 9, 15) as u8;
                let shape = FlateShape {
                    encoding,
                    level,
                    bits,
                };
                let compress = flate_pool::take(shape).unwrap_or_else(|| {
                    let level = flate2::Compression::new(level);
                    Box::new(if encoding == Encoding::Gzip {
                        flate2::Compress::new_gzip(level, bits)
                    } else {
                        flate2::Compress::new_with_window_bits(level, true, bits)
                    })
                });
                Codec::Flate(shape, Some(compress))
            }
            #[cfg(feature = "compression-br")]
            Encoding::Brotli => {
                use brotli::enc::encode::{BrotliEncoderParameter, BrotliEncoderStateStruct};
                let mut state =
                    BrotliEncoderStateStruct::new(brotli::enc::StandardAlloc::default());
                state.set_parameter(BrotliEncoderParameter::BROTLI_PARAM_QUALITY, level.min(11));
                // Brotli windows go from 2^10 to 2^24 bytes; 2^22 is the library default.
                // From quality 5 a window of 2^16 or less selects a chained hasher whose set-up
                // alone takes hundreds of microseconds: those qualities keep 2^17 at least.
                let min_window = if level >= 5 { 17 } else { 10 };
                state.set_parameter(
                    BrotliEncoderParameter::BROTLI_PARAM_LGWIN,
                    window_bits(size, min_window, 22),
                );
                state.set_parameter(
                    BrotliEncoderParameter::BROTLI_PARAM_MODE,
                    brotli::enc::backward_references::BrotliEncoderMode::BROTLI_MODE_TEXT as u32,
                );
                if let Some(size) = size {
                    state.set_parameter(
                        BrotliEncoderParameter::BROTLI_PARAM_SIZE_HINT,
                        u32::try_from(size).unwrap_or(u32::MAX),
                    );
                }
                Codec::Brotli(Box::new(state))
            }
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        Some(Self { encoding, codec })
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Compresses `input` and appends what the encoder emits to `out`.
    pub(crate) fn encode(
        &mut self,
        input: &[u8],
        flush: Flush,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let encoding = self.encoding;
        let fail = |reason| EncodeError { encoding, reason };
        // Room for the output of one call: compressed JSON is a quarter of its input or
        // less, and a flush or the end can release a whole buffered block; the loops grow
        // the buffer when a call fills it.
        let room = (input.len() / 4).clamp(4096, 64 * 1024);
        match &mut self.codec {
            #[cfg(feature = "compression-gzip")]
            Codec::Flate(_, compress) => {
                use flate2::{FlushCompress, Status};
                let Some(compress) = compress else {
                    return Err(fail("the encoder was dropped"));
                };
                let mode = match flush {
                    Flush::None => FlushCompress::None,
                    Flush::Sync => FlushCompress::Sync,
                    Flush::Finish => FlushCompress::Finish,
                };
                let start = compress.total_in();
                loop {
                    let consumed = (compress.total_in() - start) as usize;
                    if out.capacity() - out.len() < 64 {
                        out.reserve(room);
                    }
                    let status = compress
                        .compress_vec(&input[consumed..], out, mode)
                        .map_err(|_| fail("the stream state is invalid"))?;
                    let consumed = (compress.total_in() - start) as usize;
                    let room_left = out.capacity() - out.len();
                    match (status, flush) {
                        (Status::StreamEnd, _) => return Ok(()),
                        // Done once the input is in and a call left room unused: zlib had
                        // nothing more to write.
                        (_, Flush::None | Flush::Sync)
                            if consumed == input.len() && room_left > 0 =>
                        {
                            return Ok(());
                        }
                        (Status::BufError, Flush::Finish) if room_left > 0 => {
                            return Err(fail("the stream could not be finished"));
                        }
                        _ => {}
                    }
                }
            }
            #[cfg(feature = "compression-br")]
            Codec::Brotli(state) => {
                use brotli::enc::encode::BrotliEncoderOperation as Op;
                let op = match flush {
                    Flush::None => Op::BROTLI_OPERATION_PROCESS,
                    Flush::Sync => Op::BROTLI_OPERATION_FLUSH,
                    Flush::Finish => Op::BROTLI_OPERATION_FINISH,
                };
                let mut available_in = input.len();
                let mut in_offset = 0;
                let mut nothing =
                    |_: &mut brotli::interface::PredictionModeContextMap<
                        brotli::InputReferenceMut<'_>,
                    >,
                     _: &mut [brotli::interface::StaticCommand],
                     _: brotli::InputPair<'_>,
                     _: &mut brotli::enc::StandardAlloc| ();
                loop {
                    let start = out.len();
                    out.resize(start + room, 0);
                    let mut available_out = room;
                    let mut out_offset = start;
                    let ok = state.compress_stream(
                        op,
                        &mut available_in,
                        input,
                        &mut in_offset,
                        &mut available_out,
                        out,
                        &mut out_offset,
                        &mut None,
                        &mut nothing,
                    );
                    out.truncate(out_offset);
                    if !ok {
                        return Err(fail("the encoder refused its input"));
                    }
                    let done = match flush {
                        Flush::Finish => state.is_finished(),
                        Flush::None | Flush::Sync => available_in == 0 && !state.has_more_output(),
                    };
                    if done {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(feature = "compression-gzip")]
impl Drop for Encoder {
    fn drop(&mut self) {
        if let Codec::Flate(shape, compress) = &mut self.codec
            && let Some(compress) = compress.take()
        {
            flate_pool::give(*shape, compress);
        }
    }
}

/// What a zlib state was made for: a reused state must match all three.
#[cfg(feature = "compression-gzip")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlateShape {
    encoding: Encoding,
    level: u32,
    bits: u8,
}

/// zlib states kept per thread between responses: a reset costs about two thirds of
/// creating one (a 1 KiB gzip body: 8.5 µs against 12.6 µs), because creating one
/// allocates and clears its window and tables. A few states per thread, each a few
/// hundred KiB, bound the memory.
#[cfg(feature = "compression-gzip")]
mod flate_pool {
    use std::cell::RefCell;

    use super::FlateShape;

    /// States kept per thread at most.
    const KEPT: usize = 4;

    thread_local! {
        static POOL: RefCell<Vec<(FlateShape, Box<flate2::Compress>)>> =
            const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take(shape: FlateShape) -> Option<Box<flate2::Compress>> {
        POOL.try_with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            let at = pool.iter().position(|(kept, _)| *kept == shape)?;
            Some(pool.swap_remove(at).1)
        })
        .ok()
        .flatten()
    }

    pub(super) fn give(shape: FlateShape, mut compress: Box<flate2::Compress>) {
        compress.reset();
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut()
                && pool.len() < KEPT
            {
                pool.push((shape, compress));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn decode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Deflate => {
                flate2::read::ZlibDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Encoding::Brotli => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    fn text(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b"{\"id\":12,\"name\":\"Ada\"} abcdefgh"[(state % 31) as usize]
            })
            .collect()
    }

    #[test]
    fn every_coding_round_trips_in_one_call_and_in_flushed_pieces() {
        for encoding in Encoding::ALL {
            for len in [0, 1, 100, 5_000, 300_000] {
                let input = text(len);
                let mut whole = Encoder::new(encoding, 5, Some(len as u64)).unwrap();
                let mut out = Vec::new();
                whole.encode(&input, Flush::Finish, &mut out).unwrap();
                assert_eq!(
                    decode(encoding, &out),
                    input,
                    "{encoding} {len} in one call"
                );

                let mut pieces = Encoder::new(encoding, 5, None).unwrap();
                let mut out = Vec::new();
                for chunk in input.chunks(7_001) {
                    pieces.encode(chunk, Flush::Sync, &mut out).unwrap();
                    // After a sync flush, everything fed so far decodes.
                    let mut prefix = Vec::new();
                    let mut decoder = flate_or_brotli_prefix(encoding, &out);
                    let _ = decoder.read_to_end(&mut prefix);
                    assert_eq!(prefix.len(), input.len().min(out_fed(&input, chunk)));
                }
                pieces.encode(&[], Flush::Finish, &mut out).unwrap();
                assert_eq!(decode(encoding, &out), input, "{encoding} {len} in pieces");
            }
        }
    }

    /// How many input bytes were fed up to and including `chunk`.
    fn out_fed(input: &[u8], chunk: &[u8]) -> usize {
        chunk.as_ptr() as usize - input.as_ptr() as usize + chunk.len()
    }

    /// A decoder of a stream that has not ended yet: reads what it can.
    fn flate_or_brotli_prefix<'a>(encoding: Encoding, data: &'a [u8]) -> Box<dyn Read + 'a> {
        match encoding {
            Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
            Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(data)),
            Encoding::Brotli => Box::new(brotli::Decompressor::new(data, 4096)),
        }
    }

    #[test]
    fn a_reused_zlib_state_starts_clean_even_after_an_abandoned_stream() {
        for encoding in [Encoding::Gzip, Encoding::Deflate] {
            let input = text(20_000);
            // Abandoned halfway: dropped without finishing, its state goes back to the pool.
            let mut abandoned = Encoder::new(encoding, 6, Some(20_000)).unwrap();
            abandoned
                .encode(&input[..10_000], Flush::None, &mut Vec::new())
                .unwrap();
            drop(abandoned);
            for _ in 0..3 {
                let mut encoder = Encoder::new(encoding, 6, Some(20_000)).unwrap();
                let mut out = Vec::new();
                encoder.encode(&input, Flush::Finish, &mut out).unwrap();
                assert_eq!(decode(encoding, &out), input, "{encoding}");
            }
        }
    }

    #[test]
    fn windows_fit_the_body() {
        assert_eq!(window_bits(Some(0), 9, 15), 9);
        assert_eq!(window_bits(Some(1024), 10, 22), 10);
        assert_eq!(window_bits(Some(1025), 10, 22), 11);
        assert_eq!(window_bits(Some(u64::MAX), 10, 22), 22);
        assert_eq!(window_bits(None, 9, 15), 15);
    }
}
