//! Short ASCII text built without `core::fmt` and, on the hot path, without an allocation
//! per value: the tricks behind the layers' header values and the cache's storage keys,
//! kept here once, each because a bench shows it pays (BENCHMARKS.md, "Fast header values
//! and keys", gives the instruction counts with and without each).
//!
//! - [`Millis`] (timing): `X-Process-Time` / `Server-Timing` values below 10 ms from a
//!   static table, longer ones written into a stack buffer.
//! - [`int_value`] (rate limiting): decimal header values, `0` to `1023` from a table of
//!   static values.
//! - [`bytes_from_thread_buffer`] (rate limiting): per-request values cut from a buffer
//!   the thread shares, instead of one allocation each.
//! - [`with_scratch`] and [`push_hex`] (cache): storage keys assembled in a per-thread
//!   string, so building one costs one allocation, the shared string itself.

#[cfg(feature = "rate-limit")]
pub(crate) use self::ints::{
    MAX_U64_DIGITS, SMALL_INTS, ascii_value, bytes_from_thread_buffer, int_value, push_int,
};
#[cfg(feature = "timing")]
pub(crate) use self::millis::Millis;
#[cfg(feature = "cache")]
pub(crate) use self::scratch::{push_hex, with_scratch};

/// Millisecond durations as header values.
#[cfg(feature = "timing")]
mod millis {
    use std::time::Duration;

    use http::HeaderValue;

    /// A duration in milliseconds with two decimals, as the `X-Process-Time` and
    /// `Server-Timing` header values.
    ///
    /// Durations below [`SHORT_LIMIT`] take both values from the static [`SHORT`] table, so
    /// their header values are neither formatted nor allocated; longer ones are written
    /// right-aligned into a stack buffer with room for the `app;dur=` prefix in front.
    pub(crate) struct Millis(Repr);

    enum Repr {
        /// The index of an entry of [`SHORT`] and [`PROCESS_TIME`].
        Short(usize),
        Long {
            buf: [u8; Millis::LEN],
            /// Index of the first digit.
            start: usize,
        },
    }

    /// Hundredths of a millisecond below which values come from [`SHORT`]: 10 ms.
    const SHORT_LIMIT: u64 = 1_000;

    /// Length of each [`SHORT`] entry: `app;dur=9.99ms`.
    const SHORT_ENTRY: usize = Millis::PREFIX.len() + 4 + Millis::UNIT.len();

    /// Every value from `app;dur=0.00ms` to `app;dur=9.99ms`, one after the other (14 KB).
    static SHORT: &str = match std::str::from_utf8(&SHORT_BYTES) {
        Ok(table) => table,
        Err(_) => panic!("the short-duration table is ASCII"),
    };

    static SHORT_BYTES: [u8; SHORT_LIMIT as usize * SHORT_ENTRY] = {
        let mut table = [0; SHORT_LIMIT as usize * SHORT_ENTRY];
        let mut hundredths = 0;
        while hundredths < SHORT_LIMIT as usize {
            let entry = hundredths * SHORT_ENTRY;
            let mut i = 0;
            while i < Millis::PREFIX.len() {
                table[entry + i] = Millis::PREFIX[i];
                i += 1;
            }
            let at = entry + Millis::PREFIX.len();
            table[at] = b'0' + (hundredths / 100) as u8;
            table[at + 1] = b'.';
            table[at + 2] = b'0' + (hundredths / 10 % 10) as u8;
            table[at + 3] = b'0' + (hundredths % 10) as u8;
            table[at + 4] = Millis::UNIT[0];
            table[at + 5] = Millis::UNIT[1];
            hundredths += 1;
        }
        table
    };

    /// The `X-Process-Time` values of [`SHORT`] (40 KB), ready to clone: cloning a static
    /// value copies a pointer and a length, where building one checks each of its bytes.
    static PROCESS_TIME: [HeaderValue; SHORT_LIMIT as usize] = {
        const EMPTY: HeaderValue = HeaderValue::from_static("");
        let mut values = [EMPTY; SHORT_LIMIT as usize];
        let mut hundredths = 0;
        while hundredths < SHORT_LIMIT as usize {
            let (_, value) = SHORT.split_at(hundredths * SHORT_ENTRY + Millis::PREFIX.len());
            let (value, _) = value.split_at(SHORT_ENTRY - Millis::PREFIX.len());
            let empty = std::mem::replace(&mut values[hundredths], HeaderValue::from_static(value));
            std::mem::forget(empty);
            hundredths += 1;
        }
        values
    };

    impl Millis {
        const PREFIX: &'static [u8] = b"app;dur=";
        const UNIT: &'static [u8] = b"ms";
        /// Prefix, up to 20 integer digits, the point, two decimals and the unit.
        const LEN: usize = Self::PREFIX.len() + 20 + 1 + 2 + Self::UNIT.len();

        /// Formats `elapsed` rounded to the nearest 10 µs (halves round up).
        #[inline]
        pub(crate) fn new(elapsed: Duration) -> Self {
            let hundredths = elapsed
                .as_secs()
                .saturating_mul(100_000)
                .saturating_add(u64::from((elapsed.subsec_nanos() + 5_000) / 10_000));
            if hundredths < SHORT_LIMIT {
                return Self(Repr::Short(hundredths as usize));
            }
            Self::long(hundredths)
        }

        #[cold]
        fn long(mut hundredths: u64) -> Self {
            let mut buf = [0u8; Self::LEN];
            let mut at = Self::LEN - Self::UNIT.len();
            buf[at..].copy_from_slice(Self::UNIT);
            for _ in 0..2 {
                at -= 1;
                buf[at] = b'0' + (hundredths % 10) as u8;
                hundredths /= 10;
            }
            at -= 1;
            buf[at] = b'.';
            loop {
                at -= 1;
                buf[at] = b'0' + (hundredths % 10) as u8;
                hundredths /= 10;
                if hundredths == 0 {
                    break;
                }
            }
            buf[at - Self::PREFIX.len()..at].copy_from_slice(Self::PREFIX);
            Self(Repr::Long { buf, start: at })
        }

        /// Entry `index` of [`SHORT`], `app;dur=1.23ms`; empty past the end.
        fn short(index: usize) -> &'static str {
            SHORT
                .get(index * SHORT_ENTRY..(index + 1) * SHORT_ENTRY)
                .unwrap_or_default()
        }

        /// `125.43ms`
        pub(crate) fn process_time(&self) -> &[u8] {
            match &self.0 {
                Repr::Short(index) => Self::short(*index)
                    .as_bytes()
                    .get(Self::PREFIX.len()..)
                    .unwrap_or_default(),
                Repr::Long { buf, start } => &buf[*start..],
            }
        }

        /// `app;dur=125.43`
        pub(crate) fn server_timing(&self) -> &[u8] {
            match &self.0 {
                Repr::Short(index) => Self::short(*index)
                    .as_bytes()
                    .get(..SHORT_ENTRY - Self::UNIT.len())
                    .unwrap_or_default(),
                Repr::Long { buf, start } => {
                    &buf[*start - Self::PREFIX.len()..Self::LEN - Self::UNIT.len()]
                }
            }
        }

        /// The `X-Process-Time` value, `125.43ms`; without an allocation below 10 ms.
        #[inline]
        pub(crate) fn process_time_value(&self) -> Option<HeaderValue> {
            match self.0 {
                Repr::Short(index) => PROCESS_TIME.get(index).cloned(),
                Repr::Long { .. } => HeaderValue::from_bytes(self.process_time()).ok(),
            }
        }

        /// The `Server-Timing` value, `app;dur=125.43`; without an allocation below 10 ms.
        #[inline]
        pub(crate) fn server_timing_value(&self) -> Option<HeaderValue> {
            match self.0 {
                Repr::Short(index) => Self::short(index)
                    .get(..SHORT_ENTRY - Self::UNIT.len())
                    .map(HeaderValue::from_static),
                Repr::Long { .. } => HeaderValue::from_bytes(self.server_timing()).ok(),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn short_table_matches_formatting() {
            for hundredths in 0..SHORT_LIMIT + 5 {
                let millis = Millis::new(Duration::from_micros(hundredths * 10));
                assert_eq!(
                    matches!(millis.0, Repr::Short(_)),
                    hundredths < SHORT_LIMIT,
                    "{hundredths}"
                );
                let long = Millis::long(hundredths);
                assert_eq!(millis.process_time(), long.process_time());
                assert_eq!(millis.server_timing(), long.server_timing());
                assert_eq!(
                    millis.process_time_value().unwrap().as_bytes(),
                    long.process_time()
                );
                assert_eq!(
                    millis.server_timing_value().unwrap().as_bytes(),
                    long.server_timing()
                );
            }
            assert_eq!(
                Millis::new(Duration::from_nanos(9_994_999)).process_time(),
                b"9.99ms"
            );
            assert_eq!(
                Millis::new(Duration::from_nanos(9_995_000)).process_time(),
                b"10.00ms"
            );
        }
    }
}

/// Decimal header values and the per-thread buffer they are cut from.
#[cfg(feature = "rate-limit")]
mod ints {
    use std::{cell::RefCell, sync::OnceLock};

    use bytes::{Bytes, BytesMut};
    use http::HeaderValue;

    /// Values below this come from a table built once, so the usual header values cost no
    /// allocation and no reference count.
    pub(crate) const SMALL_INTS: u64 = 1024;
    const SMALL: usize = SMALL_INTS as usize;

    /// A decimal header value.
    pub(crate) fn int_value(n: u64) -> HeaderValue {
        static TABLE: OnceLock<Box<[HeaderValue]>> = OnceLock::new();
        match usize::try_from(n) {
            Ok(small) if small < SMALL => TABLE.get_or_init(small_ints)[small].clone(),
            _ => ascii_value(bytes_from_thread_buffer(MAX_U64_DIGITS, |out| {
                push_int(out, n)
            })),
        }
    }

    /// `0` to `1023` as values over one string that lives as long as the process (about 3 KiB,
    /// made once), so that each is static: cloning one copies a pointer.
    fn small_ints() -> Box<[HeaderValue]> {
        let mut digits = String::with_capacity(4 * SMALL);
        let mut ends = Vec::with_capacity(SMALL);
        for n in 0..SMALL {
            digits.push_str(itoa::Buffer::new().format(n));
            ends.push(digits.len());
        }
        let digits: &'static str = Box::leak(digits.into_boxed_str());
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let value = HeaderValue::from_static(&digits[start..end]);
                start = end;
                value
            })
            .collect()
    }

    /// The most digits of a `u64`.
    pub(crate) const MAX_U64_DIGITS: usize = 20;

    /// The size of the buffers [`bytes_from_thread_buffer`] writes into: a few dozen header values each.
    const CHUNK: usize = 2048;

    thread_local! {
        /// The buffer this thread's header values are cut from.
        static CHUNKS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    }

    /// The bytes of a header value of at most `max_len` bytes, written by `write`.
    ///
    /// Per-request values are cut from a buffer of [`CHUNK`] bytes that the thread shares
    /// between them, instead of allocating each: a value holds a reference to its buffer,
    /// which is freed when the last value cut from it is dropped.
    pub(crate) fn bytes_from_thread_buffer(
        max_len: usize,
        write: impl FnOnce(&mut BytesMut),
    ) -> Bytes {
        let mut write = Some(write);
        CHUNKS
            .try_with(|chunk| {
                let mut chunk = chunk.try_borrow_mut().ok()?;
                if chunk.capacity() - chunk.len() < max_len {
                    *chunk = BytesMut::with_capacity(CHUNK.max(max_len));
                }
                (write.take()?)(&mut chunk);
                Some(chunk.split().freeze())
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                // The thread is shutting down: a buffer of its own.
                let mut out = BytesMut::with_capacity(max_len);
                if let Some(write) = write {
                    write(&mut out);
                }
                out.freeze()
            })
    }

    /// A header value of bytes that are visible ASCII or spaces, as everything written here
    /// is; anything else (never produced) becomes an empty value rather than a panic.
    pub(crate) fn ascii_value(bytes: Bytes) -> HeaderValue {
        HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// Appends the decimal digits of `n`.
    #[inline]
    pub(crate) fn push_int(out: &mut BytesMut, n: u64) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn integers_from_the_table_and_beyond() {
            for n in [0, 1, 9, 10, 999, 1023, 1024, 65_536, u64::MAX] {
                assert_eq!(int_value(n).to_str().unwrap(), n.to_string());
            }
        }

        #[test]
        fn values_cut_from_shared_buffers_stay_intact() {
            // Enough values to fill several buffers, all alive at once, then dropped.
            let values: Vec<(u64, HeaderValue)> = (0..1000u64)
                .map(|i| {
                    let n = u64::MAX - i * 7_919_000_000_007;
                    (n, int_value(n))
                })
                .collect();
            for (n, value) in &values {
                assert_eq!(value.to_str().unwrap(), n.to_string());
            }
            let long = bytes_from_thread_buffer(3 * CHUNK, |out| {
                out.extend_from_slice(&[b'x'; 3 * CHUNK])
            });
            assert_eq!(long.len(), 3 * CHUNK);
            assert_eq!(int_value(1 << 40), "1099511627776");
        }
    }
}

/// The per-thread string storage keys are assembled in.
#[cfg(feature = "cache")]
mod scratch {
    use std::cell::RefCell;

    thread_local! {
        // Keys are built on every lookup: assembling them here leaves one allocation, the
        // shared string itself.
        static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
    }

    /// Runs `build` on this thread's scratch string, emptied first; for text that is copied
    /// out (into an `Arc<str>`) before `build` returns. A scratch string grown past 4 KiB is
    /// freed afterwards, so one long key does not hold memory for the thread's life.
    pub(crate) fn with_scratch<R>(build: impl FnOnce(&mut String) -> R) -> R {
        SCRATCH.with_borrow_mut(|out| {
            out.clear();
            let result = build(out);
            if out.capacity() > 4096 {
                *out = String::new();
            }
            result
        })
    }

    /// Appends `bytes` as lowercase hexadecimal, two digits a byte.
    pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in bytes {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 15)]));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn hex_digits_and_a_scratch_string_that_starts_empty() {
            let mut out = String::new();
            push_hex(&mut out, &[0x00, 0x0f, 0xa5, 0xff]);
            assert_eq!(out, "000fa5ff");
            assert_eq!(
                with_scratch(|s| {
                    s.push_str("abc");
                    s.clone()
                }),
                "abc"
            );
            assert_eq!(with_scratch(|s| s.len()), 0);
            let long = "x".repeat(5000);
            assert_eq!(
                with_scratch(|s| {
                    s.push_str(&long);
                    s.len()
                }),
                5000
            );
            assert_eq!(
                with_scratch(|s| s.capacity()),
                0,
                "a grown scratch string is freed"
            );
        }
    }
}
