//! [`Namespace`]: the storage forms of one cache's keys, prefixes and tags (namespaced,
//! and hashed when long or odd).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::backend::{Key, KeyPrefix, Tag};
use crate::short_text::{push_hex, with_scratch};

/// Longest readable part kept in a storage key; longer keys are hashed.
pub(crate) const MAX_READABLE: usize = 200;

/// Bytes a key may hold unhashed: ASCII letters, digits and punctuation that is neither a
/// glob character (`*?[]\^`), a brace (Redis hash tags), `#` (the hash marker), a quote
/// nor whitespace.
fn is_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'_'
                | b'.'
                | b':'
                | b'/'
                | b'@'
                | b'='
                | b'+'
                | b','
                | b';'
                | b'!'
                | b'$'
                | b'%'
                | b'&'
                | b'('
                | b')'
                | b'<'
                | b'>'
                | b'|'
                | b'~'
        )
}

/// Length of the longest safe leading part of `s`, at most [`MAX_READABLE`].
fn readable_len(s: &str) -> usize {
    s.bytes()
        .position(|b| !is_safe(b))
        .unwrap_or(s.len())
        .min(MAX_READABLE)
}

/// Whether `namespace` can be used as a cache prefix.
pub(crate) fn valid_namespace(namespace: &str) -> bool {
    !namespace.is_empty()
        && namespace.len() <= 64
        && namespace.bytes().all(|b| is_safe(b) && b != b'%')
}

/// Builds the storage forms of one cache's keys, prefixes and tags.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    key_prefix: String,
    tag_prefix: String,
}

impl Namespace {
    /// `namespace` must satisfy [`valid_namespace`].
    pub(crate) fn new(namespace: &str) -> Self {
        Self {
            key_prefix: format!("{{{namespace}}}:k:"),
            tag_prefix: format!("{{{namespace}}}:t:"),
        }
    }

    pub(crate) fn key(&self, key: &str) -> Key {
        Key::from_arc(storage(&self.key_prefix, key))
    }

    pub(crate) fn tag(&self, tag: &str) -> Tag {
        Tag::from_arc(storage(&self.tag_prefix, tag))
    }

    pub(crate) fn prefix(&self, prefix: &str) -> KeyPrefix {
        let cut = readable_len(prefix);
        let mut out = String::with_capacity(self.key_prefix.len() + cut);
        out.push_str(&self.key_prefix);
        out.push_str(&prefix[..cut]);
        KeyPrefix::from_storage(out)
    }
}

/// `prefix` + `name` when `name` is short and safe; otherwise `prefix`, the safe leading
/// part of `name`, `#` and 128 bits of the SHA-256 of `name` in hex.
fn storage(prefix: &str, name: &str) -> Arc<str> {
    let readable = readable_len(name);
    with_scratch(|out| {
        out.push_str(prefix);
        out.push_str(&name[..readable]);
        if readable < name.len() {
            let digest = Sha256::digest(name.as_bytes());
            out.push('#');
            push_hex(out, &digest[..16]);
        }
        Arc::from(out.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_keys_stay_readable() {
        let ns = Namespace::new("app");
        assert_eq!(ns.key("users:1").as_str(), "{app}:k:users:1");
        assert_eq!(ns.tag("users").as_str(), "{app}:t:users");
        assert_eq!(ns.prefix("users:").as_str(), "{app}:k:users:");
    }

    #[test]
    fn odd_and_long_keys_are_hashed_without_glob_characters() {
        let ns = Namespace::new("app");
        let long = "x".repeat(1000);
        for key in [
            "a b", "a*", "a?", "[a]", "a\\", "a\n", "é", "a#b", "{a}", &long,
        ] {
            let stored = ns.key(key);
            let rest = &stored.as_str()["{app}:k:".len()..];
            assert!(rest.contains('#'), "{key:?} -> {stored:?}");
            assert!(
                !rest.contains(['*', '?', '[', ']', '\\', ' ', '\n', '{', '}']),
                "{stored:?}"
            );
            assert!(stored.as_str().len() <= "{app}:k:".len() + MAX_READABLE + 33);
        }
        assert_ne!(ns.key("a b"), ns.key("a c"));
        assert_ne!(ns.key("a b"), ns.key("a#b"));
        assert_eq!(ns.key("a b"), ns.key("a b"));
    }

    #[test]
    fn hashed_keys_keep_their_readable_prefix() {
        let ns = Namespace::new("app");
        let key = ns.key("users:name with spaces");
        assert!(key.as_str().starts_with(ns.prefix("users:").as_str()));
        let long = format!("users:{}", "y".repeat(500));
        assert!(
            ns.key(&long)
                .as_str()
                .starts_with(ns.prefix(&long).as_str())
        );
    }
}
