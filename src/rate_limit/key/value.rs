//! [`Key`]: who a budget belongs to, as the stores see it.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use sha2::{Digest, Sha256};

/// Longest text a [`Key::text`] keeps as it is; longer texts are hashed.
const MAX_TEXT_KEY_LEN: usize = 64;

/// Who a budget belongs to: a client address, a hashed credential, a user id, or everyone.
///
/// Keys are cheap to clone, hash and compare, and bounded in size: texts longer than 64
/// bytes and credentials are kept as a 128-bit SHA-256 prefix, never as they came.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Global,
    Ip(IpAddr),
    /// A 128-bit digest as two halves (most significant first), so a key is aligned on 8
    /// bytes, not 16, and takes 24 bytes.
    Hashed([u64; 2]),
    Text(Arc<str>),
}

impl Key {
    /// The one key every request shares.
    pub fn global() -> Self {
        Self(Repr::Global)
    }

    /// A client address. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) become IPv4.
    pub fn ip(addr: IpAddr) -> Self {
        Self(Repr::Ip(addr.to_canonical()))
    }

    /// The IPv6 network of `addr` with a `prefix_len`-bit prefix (clamped to 128), so a
    /// client cannot escape its budget by changing the low bits of its address; IPv4 and
    /// IPv4-mapped addresses are kept whole.
    pub fn ip_prefix(addr: IpAddr, prefix_len: u8) -> Self {
        match Self::ip(addr).0 {
            Repr::Ip(IpAddr::V6(v6)) => {
                let len = u32::from(prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Self(Repr::Ip(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))))
            }
            other => Self(other),
        }
    }

    /// A secret or personal value (an API key, a token): only a 128-bit SHA-256 prefix of it
    /// is kept, so the value itself never reaches the store, a header or a log.
    pub fn hashed(value: impl AsRef<[u8]>) -> Self {
        let digest = Sha256::digest(value.as_ref());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(Repr::Hashed(split(u128::from_be_bytes(bytes))))
    }

    /// A value that is not secret, such as a user id or a tenant name; texts longer than 64
    /// bytes are hashed as by [`Key::hashed`].
    pub fn text(value: &str) -> Self {
        if value.len() > MAX_TEXT_KEY_LEN {
            Self::hashed(value)
        } else {
            Self(Repr::Text(value.into()))
        }
    }

    /// The address, when the key is one.
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self.0 {
            Repr::Ip(addr) => Some(addr),
            _ => None,
        }
    }
}

fn split(value: u128) -> [u64; 2] {
    [(value >> 64) as u64, value as u64]
}

fn join([high, low]: [u64; 2]) -> u128 {
    (u128::from(high) << 64) | u128::from(low)
}

/// `*` for the global key, `ip:<addr>`, `h:<32 hex digits>`, `t:<text>`: the form keys
/// take in Redis.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Global => f.write_str("*"),
            Repr::Ip(addr) => write!(f, "ip:{addr}"),
            Repr::Hashed(hash) => write!(f, "h:{:032x}", join(*hash)),
            Repr::Text(text) => write!(f, "t:{text}"),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({self})")
    }
}

impl From<IpAddr> for Key {
    fn from(addr: IpAddr) -> Self {
        Self::ip(addr)
    }
}
