//! The rate-limit response headers, built without `format!` from the pieces in
//! [`crate::short_text`].

use std::{ops::Range, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, header::RETRY_AFTER};

use super::{Decision, Policy};
use crate::short_text::{
    MAX_U64_DIGITS, SMALL_INTS, ascii_value as value, bytes_from_thread_buffer, int_value as int,
    push_int as put_int,
};

/// Which rate-limit header families the layer writes; see the [module docs](super#headers).
///
/// `Retry-After` is always set on a refusal, whatever this says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitHeaders {
    legacy: bool,
    draft: bool,
}

impl RateLimitHeaders {
    /// No rate-limit header but `Retry-After` on refusals.
    pub const NONE: Self = Self {
        legacy: false,
        draft: false,
    };
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    pub const LEGACY: Self = Self {
        legacy: true,
        draft: false,
    };
    /// The IETF draft's `RateLimit-Policy` and `RateLimit` fields
    /// (draft-ietf-httpapi-ratelimit-headers-09).
    pub const DRAFT: Self = Self {
        legacy: false,
        draft: true,
    };
    /// Both families: the default.
    pub const ALL: Self = Self {
        legacy: true,
        draft: true,
    };

    /// Whether the `X-RateLimit-*` family is written.
    pub const fn legacy(self) -> bool {
        self.legacy
    }

    /// Whether the draft's `RateLimit-Policy` and `RateLimit` fields are written.
    pub const fn draft(self) -> bool {
        self.draft
    }
}

impl Default for RateLimitHeaders {
    fn default() -> Self {
        Self::ALL
    }
}

pub(super) static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub(super) static X_RATELIMIT_REMAINING: HeaderName =
    HeaderName::from_static("x-ratelimit-remaining");
pub(super) static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
pub(super) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub(super) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The figures of one decision, kept small while the inner service runs and turned into
/// headers on its response.
#[derive(Debug, Clone)]
pub(super) struct Stamp {
    legacy: bool,
    draft: bool,
    /// Position of the binding quota in the policy.
    index: u8,
    limit: u32,
    remaining: u32,
    /// Seconds, rounded up.
    reset: u64,
    /// Seconds, on refusals; 0 otherwise (a refusal is never told 0).
    retry_after: u64,
    /// Partition key of the draft's `RateLimit` field.
    pk: u64,
    policy: PolicyRef,
}

/// The policy a decision was made under, with its prepared values when it is the layer's
/// default.
#[derive(Debug, Clone)]
pub(super) enum PolicyRef {
    Default(Arc<PolicyHeaders>),
    Other(Policy),
}

impl PolicyRef {
    fn policy(&self) -> &Policy {
        match self {
            Self::Default(cached) => &cached.policy,
            Self::Other(policy) => policy,
        }
    }
}

impl Stamp {
    /// The headers `families` asks for, for `decision` under `policy`. `pk` is the
    /// partition key: an opaque digest of the client's key.
    pub(super) fn new(
        families: RateLimitHeaders,
        decision: &Decision,
        policy: PolicyRef,
        pk: u64,
    ) -> Self {
        let index = policy
            .policy()
            .quotas()
            .iter()
            .position(|quota| *quota == decision.quota)
            .unwrap_or(0);
        Self {
            legacy: families.legacy,
            draft: families.draft,
            index: u8::try_from(index).unwrap_or(0),
            limit: decision.limit,
            remaining: decision.remaining,
            reset: ceil_secs(decision.reset),
            retry_after: if decision.allowed {
                0
            } else {
                retry_after_secs(decision)
            },
            pk,
            policy,
        }
    }

    /// Drops `Retry-After`, for a refusal shadow mode lets through.
    pub(super) fn clear_retry_after(&mut self) {
        self.retry_after = 0;
    }

    /// Writes the headers into `headers`, replacing any of the same name.
    pub(super) fn apply(self, headers: &mut HeaderMap) {
        let index = usize::from(self.index);
        let cached = match &self.policy {
            PolicyRef::Default(cached) => Some(&**cached),
            PolicyRef::Other(_) => None,
        };
        let policy = self.policy.policy();
        // The `RateLimit` field first: a large remaining count is then a slice of it.
        let field = self
            .draft
            .then(|| match cached.and_then(|c| c.items.get(index)) {
                Some(item) => ratelimit_field(item.len(), |out| out.extend_from_slice(item), &self),
                None => ratelimit_field(
                    policy.name().len() + ITEM_OVERHEAD,
                    |out| {
                        item_name(out, policy, index);
                        out.extend_from_slice(b";r=");
                    },
                    &self,
                ),
            });
        if self.legacy {
            let limit = cached
                .and_then(|cached| cached.limits.get(index))
                .filter(|limit| limit.count == self.limit)
                .map_or_else(|| int(u64::from(self.limit)), |limit| limit.value.clone());
            let remaining = match &field {
                Some((field, digits)) if u64::from(self.remaining) >= SMALL_INTS => {
                    value(field.slice(digits.clone()))
                }
                _ => int(u64::from(self.remaining)),
            };
            headers.insert(X_RATELIMIT_LIMIT.clone(), limit);
            headers.insert(X_RATELIMIT_REMAINING.clone(), remaining);
            headers.insert(X_RATELIMIT_RESET.clone(), int(self.reset));
        }
        if let Some((field, _)) = field {
            let value_of_policy = cached.map_or_else(|| policy_header(policy), |c| c.value.clone());
            headers.insert(RATELIMIT_POLICY.clone(), value_of_policy);
            headers.insert(RATELIMIT.clone(), value(field));
        }
        if self.retry_after > 0 {
            headers.insert(RETRY_AFTER, int(self.retry_after));
        }
    }
}

/// The header values that depend only on a policy, built once for the layer's default
/// policy.
#[derive(Debug)]
pub(super) struct PolicyHeaders {
    policy: Policy,
    /// `RateLimit-Policy`.
    value: HeaderValue,
    /// `X-RateLimit-Limit` of each quota.
    limits: Box<[Limit]>,
    /// The start of the `RateLimit` field of each quota: `"name";r=`.
    items: Box<[Box<[u8]>]>,
}

#[derive(Debug)]
struct Limit {
    count: u32,
    value: HeaderValue,
}

impl PolicyHeaders {
    pub(super) fn new(policy: &Policy) -> Self {
        Self {
            policy: policy.clone(),
            value: policy_header(policy),
            limits: policy
                .quotas()
                .iter()
                .map(|quota| Limit {
                    count: quota.count(),
                    value: int(u64::from(quota.count())),
                })
                .collect(),
            items: (0..policy.quotas().len())
                .map(|index| {
                    let mut out = BytesMut::with_capacity(policy.name().len() + ITEM_OVERHEAD);
                    item_name(&mut out, policy, index);
                    out.extend_from_slice(b";r=");
                    Box::from(&out[..])
                })
                .collect(),
        }
    }
}

/// Whole seconds, rounded up.
pub(super) fn ceil_secs(duration: Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// The `Retry-After` of a refusal: whole seconds rounded up, never 0, since a client told
/// to retry in 0 seconds retries at once and is refused again.
pub(super) fn retry_after_secs(decision: &Decision) -> u64 {
    ceil_secs(decision.retry_after.unwrap_or(decision.reset)).max(1)
}

/// What an item name adds to the policy name at most: the quotes, the quota's position
/// (`.3`) and `;r=`.
const ITEM_OVERHEAD: usize = 7;

/// `"name";q=100;w=60` for each quota of the policy; with several quotas each item is
/// named after the policy and the quota's position, `"name.0"`, `"name.1"`.
pub(super) fn policy_header(policy: &Policy) -> HeaderValue {
    let quotas = policy.quotas();
    let mut out = BytesMut::with_capacity(quotas.len() * (policy.name().len() + 32));
    for (i, quota) in quotas.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        item_name(&mut out, policy, i);
        out.extend_from_slice(b";q=");
        put_int(&mut out, u64::from(quota.count()));
        out.extend_from_slice(b";w=");
        put_int(&mut out, ceil_secs(quota.period()).max(1));
    }
    value(out.freeze())
}

/// `"name";r=42;t=30;pk=:AAECAwQFBgc=:` for `stamp`, after the `"name";r=` that `item`
/// writes (`item_len` bytes at most), and where the digits of `r` lie in it.
fn ratelimit_field(
    item_len: usize,
    item: impl FnOnce(&mut BytesMut),
    stamp: &Stamp,
) -> (Bytes, Range<usize>) {
    const REST: usize = 10 + b";t=".len() + MAX_U64_DIGITS + b";pk=:".len() + 12 + 1;
    let mut digits = 0..0;
    let field = bytes_from_thread_buffer(item_len + REST, |out| {
        item(out);
        digits.start = out.len();
        put_int(out, u64::from(stamp.remaining));
        digits.end = out.len();
        out.extend_from_slice(b";t=");
        put_int(out, stamp.reset);
        out.extend_from_slice(b";pk=:");
        out.extend_from_slice(&base64_u64(stamp.pk));
        out.extend_from_slice(b":");
    });
    (field, digits)
}

/// The quoted item name: policy names are ASCII letters, digits, `_`, `-` and `.`, so need
/// no escaping.
fn item_name(out: &mut BytesMut, policy: &Policy, index: usize) {
    out.extend_from_slice(b"\"");
    out.extend_from_slice(policy.name().as_bytes());
    if policy.quotas().len() > 1 {
        out.extend_from_slice(b".");
        put_int(out, index as u64);
    }
    out.extend_from_slice(b"\"");
}

/// The eight big-endian bytes of `n` in standard base64 with padding, as structured-field
/// byte sequences are written.
fn base64_u64(n: u64) -> [u8; 12] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = [b'='; 12];
    // 64 bits are ten whole sextets and four bits, padded with two zero bits.
    for (i, byte) in out.iter_mut().take(10).enumerate() {
        *byte = ALPHABET[(n >> (58 - 6 * i) & 63) as usize];
    }
    out[10] = ALPHABET[(n << 2 & 63) as usize];
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{Quota, Source};

    fn decision(
        allowed: bool,
        remaining: u32,
        reset: Duration,
        retry: Option<Duration>,
    ) -> Decision {
        let quota = Quota::per_minute(100);
        Decision {
            allowed,
            limit: quota.count(),
            remaining,
            reset,
            retry_after: retry,
            quota,
            source: Source::Store,
        }
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn retry_after_is_never_zero_while_refused() {
        let d = decision(false, 0, Duration::ZERO, Some(Duration::ZERO));
        assert_eq!(retry_after_secs(&d), 1);
        let d = decision(false, 0, Duration::ZERO, Some(Duration::from_micros(1)));
        assert_eq!(retry_after_secs(&d), 1);
        let d = decision(
            false,
            0,
            Duration::from_secs(9),
            Some(Duration::from_millis(2100)),
        );
        assert_eq!(retry_after_secs(&d), 3);
        let d = decision(false, 0, Duration::from_millis(4500), None);
        assert_eq!(retry_after_secs(&d), 5);
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        let cases = [
            (0xfbff_0001_0203_0405, "+/8AAQIDBAU="),
            (0, "AAAAAAAAAAA="),
            (u64::MAX, "//////////8="),
            (u64::from_be_bytes(*b"foobarba"), "Zm9vYmFyYmE="),
            (0x0001_0203_0405_0607, "AAECAwQFBgc="),
        ];
        for (n, expected) in cases {
            assert_eq!(&base64_u64(n), expected.as_bytes());
        }
    }

    #[test]
    fn a_large_remaining_count_reads_the_same_in_both_families() {
        let policy = Policy::new(Quota::per_second(1_000_000).with_burst(1_000_000_000));
        let mut d = decision(true, 999_999_999, Duration::from_millis(1), None);
        d.quota = policy.quotas()[0];
        d.limit = 1_000_000_000;
        for cached in [
            PolicyRef::Default(Arc::new(PolicyHeaders::new(&policy))),
            PolicyRef::Other(policy.clone()),
        ] {
            let mut headers = HeaderMap::new();
            Stamp::new(RateLimitHeaders::ALL, &d, cached, 0x0001_0203_0405_0607)
                .apply(&mut headers);
            assert_eq!(headers["x-ratelimit-remaining"], "999999999");
            assert_eq!(headers["x-ratelimit-limit"], "1000000000");
            assert_eq!(
                headers["ratelimit"],
                format!(r#""{}";r=999999999;t=1;pk=:AAECAwQFBgc=:"#, policy.name()).as_str()
            );
        }
    }

    #[test]
    fn draft_fields_follow_the_structured_field_syntax() {
        let policy = Policy::new(Quota::per_minute(100)).with_name("api");
        assert_eq!(policy_header(&policy), r#""api";q=100;w=60"#);

        let d = decision(true, 42, Duration::from_millis(29_001), None);
        let stamp = Stamp::new(
            RateLimitHeaders::ALL,
            &d,
            PolicyRef::Other(policy.clone()),
            0x0001_0203_0405_0607,
        );
        let mut headers = HeaderMap::new();
        stamp.apply(&mut headers);
        assert_eq!(headers["ratelimit"], r#""api";r=42;t=30;pk=:AAECAwQFBgc=:"#);
        assert_eq!(headers["ratelimit-policy"], r#""api";q=100;w=60"#);
        assert_eq!(headers["x-ratelimit-limit"], "100");
        assert_eq!(headers["x-ratelimit-remaining"], "42");
        assert_eq!(headers["x-ratelimit-reset"], "30");
        assert!(!headers.contains_key("retry-after"));
    }

    #[test]
    fn several_quotas_are_numbered_and_the_binding_one_is_reported() {
        let policy = Policy::new(Quota::per_second(10))
            .and(Quota::new(1000, Duration::from_millis(3_600_500)).unwrap());
        assert_eq!(
            policy_header(&policy),
            format!(r#""{0}.0";q=10;w=1, "{0}.1";q=1000;w=3601"#, policy.name())
        );
        let mut d = decision(
            false,
            0,
            Duration::from_secs(5),
            Some(Duration::from_millis(1)),
        );
        d.quota = policy.quotas()[1];
        let mut headers = HeaderMap::new();
        Stamp::new(
            RateLimitHeaders::DRAFT,
            &d,
            PolicyRef::Other(policy.clone()),
            0,
        )
        .apply(&mut headers);
        assert!(
            headers["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with(&format!(r#""{}.1";r=0;t=5;pk=:"#, policy.name()))
        );
        assert_eq!(headers["retry-after"], "1");
        assert!(!headers.contains_key("x-ratelimit-limit"));
    }

    #[test]
    fn cached_policy_values_match_built_ones() {
        let policy = Policy::new(Quota::per_second(5000)).and(Quota::per_hour(90_000));
        let cached = PolicyHeaders::new(&policy);
        let mut d = decision(true, 4999, Duration::from_millis(1), None);
        d.quota = policy.quotas()[1];
        d.limit = 90_000;
        let (mut with_cache, mut without) = (HeaderMap::new(), HeaderMap::new());
        Stamp::new(
            RateLimitHeaders::ALL,
            &d,
            PolicyRef::Default(Arc::new(cached)),
            7,
        )
        .apply(&mut with_cache);
        Stamp::new(
            RateLimitHeaders::ALL,
            &d,
            PolicyRef::Other(policy.clone()),
            7,
        )
        .apply(&mut without);
        assert_eq!(with_cache, without);
        assert_eq!(with_cache["x-ratelimit-limit"], "90000");
    }

    #[test]
    fn none_writes_only_retry_after_on_refusals() {
        let policy = Policy::new(Quota::per_minute(100));
        let mut headers = HeaderMap::new();
        let allowed = decision(true, 1, Duration::from_secs(1), None);
        Stamp::new(
            RateLimitHeaders::NONE,
            &allowed,
            PolicyRef::Other(policy.clone()),
            0,
        )
        .apply(&mut headers);
        assert!(headers.is_empty());
        let refused = decision(
            false,
            0,
            Duration::from_secs(1),
            Some(Duration::from_millis(200)),
        );
        Stamp::new(
            RateLimitHeaders::NONE,
            &refused,
            PolicyRef::Other(policy.clone()),
            0,
        )
        .apply(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["retry-after"], "1");
    }
}
