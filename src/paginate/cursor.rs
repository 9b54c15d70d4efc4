//! Keyset cursors: the sort-key values of a boundary row, signed so that a client can hand
//! them back but cannot forge or alter them.
//!
//! A cursor is URL-safe base64 (no padding) of:
//!
//! ```text
//! version (1) | direction (1) | fingerprint (16) | key count (1) | keys... | HMAC-SHA256 (16, truncated)
//! key: order (1: bit 0 descending, bit 1 nulls first) | tag (1) | value
//! value: int and float 8 bytes little-endian, bool 1 byte, text u16 length + UTF-8, null nothing
//! ```
//!
//! The fingerprint is a SHA-256 digest of the query's SQL text, its bound values and its
//! sort keys, so a cursor is only accepted by the query that wrote it. The order bits are
//! checked against the query's keys too, which the fingerprint already covers; they make a
//! cursor self-describing for whoever decodes one while debugging.

use std::{fmt, sync::OnceLock};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::CursorError;

/// The longest cursor accepted, in characters: longer input is refused before it is
/// decoded, whatever it holds. Cursors of integer keys are under 100 characters; the
/// longest this crate writes ([`MAX_KEYS`] text keys of [`MAX_TEXT_KEY`] bytes) fit.
pub const MAX_CURSOR_LEN: usize = 4096;

/// The environment variable holding the cursor key.
pub const PAGINATION_SECRET: &str = "PAGINATION_SECRET";

const VERSION: u8 = 1;
const FINGERPRINT_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// Version, direction, fingerprint, key count.
const HEADER_LEN: usize = 2 + FINGERPRINT_LEN + 1;

type HmacSha256 = Hmac<Sha256>;

/// The key cursors are signed with.
///
/// Every instance of an application must use the same key, and keep it across restarts,
/// for the cursors it handed out to stay valid: set [`PAGINATION_SECRET`] (at least 32
/// characters, for instance `openssl rand -base64 32`). Without it
/// [`from_env`](Self::from_env) returns a random key drawn from the operating system's
/// generator once per process: cursors then work within one process only, and a client
/// holding one after a restart or on another instance gets a `400` and starts again from
/// the first page.
#[derive(Clone)]
pub struct CursorKey {
    mac: HmacSha256,
}

impl fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

/// Why a cursor key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Shorter than [`CursorKey::MIN_LEN`] bytes.
    #[error(
        "a cursor key must be at least {} bytes long, this one has {len}",
        CursorKey::MIN_LEN
    )]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The environment variable holds an unusable key.
    #[error(transparent)]
    Env(#[from] crate::EnvError),
}

impl CursorKey {
    /// The shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// A key from `secret`, at least [`MIN_LEN`](Self::MIN_LEN) bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::TooShort`] for a shorter secret.
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self, KeyError> {
        let secret = secret.as_ref();
        if secret.len() < Self::MIN_LEN {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        Ok(Self::from_bytes(secret))
    }

    fn from_bytes(secret: &[u8]) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// A key of 32 random bytes from the operating system.
    ///
    /// # Panics
    ///
    /// When the operating system has no random source to give, which leaves no safe key.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the operating system's random generator failed");
        Self::from_bytes(&secret)
    }

    /// The key in [`PAGINATION_SECRET`], or, when it is unset or blank, one random key per
    /// process (the same one on every call: see the type's documentation).
    ///
    /// # Errors
    ///
    /// [`KeyError::Env`] when the variable is set to fewer than 32 bytes.
    pub fn from_env() -> Result<Self, KeyError> {
        match crate::env::var::<Secret>(PAGINATION_SECRET, "a secret of at least 32 bytes")? {
            Some(Secret(secret)) => Self::new(secret),
            None => Ok(Self::process_default().clone()),
        }
    }

    /// The random key of this process.
    pub(super) fn process_default() -> &'static Self {
        static KEY: OnceLock<CursorKey> = OnceLock::new();
        KEY.get_or_init(Self::random)
    }

    fn tag(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac
    }
}

/// A secret read from the environment: refused when short, never echoed back.
struct Secret(String);

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value.len() < CursorKey::MIN_LEN {
            return Err(format!(
                "it has {} bytes, at least {} are needed",
                value.len(),
                CursorKey::MIN_LEN
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// One sort-key value of a boundary row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum KeyValue {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

/// Which way a cursor reads from its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// The rows after it, in the query's order.
    After,
    /// The rows before it.
    Before,
}

/// A decoded, verified cursor.
#[derive(Debug, PartialEq)]
pub(super) struct Cursor {
    pub(super) direction: Direction,
    pub(super) keys: Vec<KeyValue>,
}

/// The digest a cursor carries of the query it belongs to.
pub(super) type Fingerprint = [u8; FINGERPRINT_LEN];

/// Feeds what `Debug` writes into a digest, without a string in between.
struct DigestWriter<'a>(&'a mut Sha256);

impl fmt::Write for DigestWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The fingerprint of a query: its SQL, its bound values and its sort keys (`order`, one
/// byte per key as in the cursor, after the key's name).
///
/// sqlx shows the values bound to a query only through `Debug`, which writes them
/// deterministically; a sqlx upgrade that changed that output would make the cursors
/// handed out before it `400`s, never make a cursor match another query.
pub(super) fn fingerprint(
    sql: &str,
    arguments: &dyn fmt::Debug,
    order: &[(&str, u8)],
) -> Fingerprint {
    let mut digest = Sha256::new();
    digest.update(b"perfkit keyset v1\0");
    digest.update((sql.len() as u64).to_le_bytes());
    digest.update(sql.as_bytes());
    let _ = fmt::write(
        &mut DigestWriter(&mut digest),
        format_args!("{arguments:?}"),
    );
    digest.update(b"\0");
    for (name, bits) in order {
        digest.update(name.as_bytes());
        digest.update([0, *bits]);
    }
    let full = digest.finalize();
    let mut print = [0; FINGERPRINT_LEN];
    print.copy_from_slice(&full[..FINGERPRINT_LEN]);
    print
}

/// Writes a signed cursor.
pub(super) fn encode(
    key: &CursorKey,
    fingerprint: &Fingerprint,
    direction: Direction,
    order: &[u8],
    values: &[KeyValue],
) -> String {
    let mut out = Vec::with_capacity(HEADER_LEN + values.len() * 10 + TAG_LEN);
    out.push(VERSION);
    out.push(match direction {
        Direction::After => 0,
        Direction::Before => 1,
    });
    out.extend_from_slice(fingerprint);
    out.push(values.len() as u8);
    for (bits, value) in order.iter().zip(values) {
        out.push(*bits);
        match value {
            KeyValue::Null => out.push(0),
            KeyValue::Int(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            KeyValue::Float(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            KeyValue::Text(v) => {
                // A text longer than a cursor may be cannot be carried whole; cutting it would
                // seek from the wrong row, so such a key is refused when the keyset is built
                // from the rows (see `Keyset`).
                out.push(3);
                out.extend_from_slice(&(v.len() as u16).to_le_bytes());
                out.extend_from_slice(v.as_bytes());
            }
            KeyValue::Bool(v) => {
                out.push(4);
                out.push(u8::from(*v));
            }
        }
    }
    let tag = key.tag(&out).finalize().into_bytes();
    out.extend_from_slice(&tag[..TAG_LEN]);
    URL_SAFE_NO_PAD.encode(out)
}

/// The longest text value a cursor carries, in bytes: sort by a shorter column, or one
/// whose values are bounded, to paginate by text.
pub const MAX_TEXT_KEY: usize = 256;

/// The most sort keys (the unique tie-breaker included) a keyset may have.
pub const MAX_KEYS: usize = 8;

/// Reads and verifies a cursor written by [`encode`] with the same key, for the query of
/// `fingerprint` with keys ordered as `order`.
pub(super) fn decode(
    key: &CursorKey,
    fingerprint: &Fingerprint,
    order: &[u8],
    text: &str,
) -> Result<Cursor, CursorError> {
    if text.len() > MAX_CURSOR_LEN {
        return Err(CursorError::TooLong {
            max: MAX_CURSOR_LEN,
        });
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| CursorError::Malformed)?;
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(CursorError::Malformed);
    }
    let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    // The signature first: nothing of an unsigned payload is believed, its version included.
    key.tag(payload)
        .verify_truncated_left(tag)
        .map_err(|_| CursorError::Signature)?;
    if payload[0] != VERSION {
        return Err(CursorError::Version);
    }
    if payload[2..2 + FINGERPRINT_LEN] != fingerprint[..] {
        return Err(CursorError::ForeignQuery);
    }
    let direction = match payload[1] {
        0 => Direction::After,
        1 => Direction::Before,
        _ => return Err(CursorError::Malformed),
    };
    let count = usize::from(payload[HEADER_LEN - 1]);
    if count != order.len() {
        return Err(CursorError::ForeignQuery);
    }
    let mut rest = &payload[HEADER_LEN..];
    let mut keys = Vec::with_capacity(count);
    for bits in order {
        let (&[got_bits, tag], tail) = rest
            .split_first_chunk::<2>()
            .ok_or(CursorError::Malformed)?;
        if got_bits != *bits {
            return Err(CursorError::ForeignQuery);
        }
        let (value, tail) = match tag {
            0 => (KeyValue::Null, tail),
            1 => {
                let (v, tail) = tail
                    .split_first_chunk::<8>()
                    .ok_or(CursorError::Malformed)?;
                (KeyValue::Int(i64::from_le_bytes(*v)), tail)
            }
            2 => {
                let (v, tail) = tail
                    .split_first_chunk::<8>()
                    .ok_or(CursorError::Malformed)?;
                (
                    KeyValue::Float(f64::from_bits(u64::from_le_bytes(*v))),
                    tail,
                )
            }
            3 => {
                let (len, tail) = tail
                    .split_first_chunk::<2>()
                    .ok_or(CursorError::Malformed)?;
                let len = usize::from(u16::from_le_bytes(*len));
                if tail.len() < len {
                    return Err(CursorError::Malformed);
                }
                let (text, tail) = tail.split_at(len);
                let text = std::str::from_utf8(text).map_err(|_| CursorError::Malformed)?;
                (KeyValue::Text(text.to_owned()), tail)
            }
            4 => match tail.split_first() {
                Some((0, tail)) => (KeyValue::Bool(false), tail),
                Some((1, tail)) => (KeyValue::Bool(true), tail),
                _ => return Err(CursorError::Malformed),
            },
            _ => return Err(CursorError::Malformed),
        };
        keys.push(value);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(CursorError::Malformed);
    }
    Ok(Cursor { direction, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CursorKey {
        CursorKey::new([7u8; 32]).unwrap()
    }

    const PRINT: Fingerprint = [9; FINGERPRINT_LEN];
    const ORDER: [u8; 4] = [0, 1, 2, 0];

    fn values() -> Vec<KeyValue> {
        vec![
            KeyValue::Text("Zoë, \"quoted\"".into()),
            KeyValue::Null,
            KeyValue::Float(-1.5),
            KeyValue::Int(i64::MIN),
        ]
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let text = encode(&key(), &PRINT, Direction::Before, &ORDER, &values());
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        let cursor = decode(&key(), &PRINT, &ORDER, &text).unwrap();
        assert_eq!(cursor.direction, Direction::Before);
        assert_eq!(cursor.keys, values());
        let bools = [KeyValue::Bool(true), KeyValue::Bool(false)];
        let text = encode(&key(), &PRINT, Direction::After, &[0, 0], &bools);
        assert_eq!(decode(&key(), &PRINT, &[0, 0], &text).unwrap().keys, bools);
    }

    #[test]
    fn every_altered_byte_and_every_truncation_is_refused() {
        let text = encode(&key(), &PRINT, Direction::After, &ORDER, &values());
        let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for at in 0..raw.len() {
            for flip in [1u8, 0x80] {
                let mut bad = raw.clone();
                bad[at] ^= flip;
                let bad = URL_SAFE_NO_PAD.encode(bad);
                assert_eq!(
                    decode(&key(), &PRINT, &ORDER, &bad),
                    Err(CursorError::Signature),
                    "byte {at}"
                );
            }
        }
        for len in 0..text.len() {
            assert!(
                decode(&key(), &PRINT, &ORDER, &text[..len]).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn foreign_keys_queries_and_junk_are_refused() {
        let text = encode(&key(), &PRINT, Direction::After, &ORDER, &values());
        let other = CursorKey::new([8u8; 32]).unwrap();
        assert_eq!(
            decode(&other, &PRINT, &ORDER, &text),
            Err(CursorError::Signature)
        );
        assert_eq!(
            decode(&key(), &[1; FINGERPRINT_LEN], &ORDER, &text),
            Err(CursorError::ForeignQuery)
        );
        assert_eq!(
            decode(&key(), &PRINT, &[0, 1, 2, 1], &text),
            Err(CursorError::ForeignQuery)
        );
        for junk in ["", "!!!", "a b", "%00", "AAAA", "\u{1F600}"] {
            assert_eq!(
                decode(&key(), &PRINT, &ORDER, junk),
                Err(CursorError::Malformed),
                "{junk:?}"
            );
        }
        let long = "A".repeat(MAX_CURSOR_LEN + 1);
        assert_eq!(
            decode(&key(), &PRINT, &ORDER, &long),
            Err(CursorError::TooLong {
                max: MAX_CURSOR_LEN
            })
        );
    }

    #[test]
    fn fingerprints_tell_queries_apart() {
        let base = fingerprint("SELECT * FROM t WHERE a = $1", &(1,), &[("id", 0)]);
        assert_eq!(
            base,
            fingerprint("SELECT * FROM t WHERE a = $1", &(1,), &[("id", 0)])
        );
        assert_ne!(
            base,
            fingerprint("SELECT * FROM t WHERE a = $1", &(2,), &[("id", 0)])
        );
        assert_ne!(
            base,
            fingerprint("SELECT * FROM t WHERE b = $1", &(1,), &[("id", 0)])
        );
        assert_ne!(
            base,
            fingerprint("SELECT * FROM t WHERE a = $1", &(1,), &[("id", 1)])
        );
        assert_ne!(
            base,
            fingerprint("SELECT * FROM t WHERE a = $1", &(1,), &[("pk", 0)])
        );
    }

    #[test]
    fn keys_are_checked_for_length() {
        assert!(matches!(
            CursorKey::new("short"),
            Err(KeyError::TooShort { len: 5 })
        ));
        let random = CursorKey::random();
        let text = encode(&random, &PRINT, Direction::After, &[0], &[KeyValue::Int(1)]);
        assert_eq!(
            decode(&CursorKey::random(), &PRINT, &[0], &text),
            Err(CursorError::Signature),
            "two random keys differ"
        );
    }
}
