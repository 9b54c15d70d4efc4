//! The rate-limit response headers, built without `format!`.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header::RETRY_AFTER};

use super::{Decision, Policy};

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
        if self.legacy {
            let limit = cached
                .and_then(|cached| cached.limits.get(index))
                .filter(|limit| limit.count == self.limit)
                .map_or_else(|| int(u64::from(self.limit)), |limit| limit.value.clone());
            headers.insert(X_RATELIMIT_LIMIT.clone(), limit);
            headers.insert(
                X_RATELIMIT_REMAINING.clone(),
                int(u64::from(self.remaining)),
            );
            headers.insert(X_RATELIMIT_RESET.clone(), int(self.reset));
        }
        if self.draft {
            let policy = self.policy.policy();
            let value = cached.map_or_else(|| policy_header(policy), |c| c.value.clone());
            headers.insert(RATELIMIT_POLICY.clone(), value);
            headers.insert(
                RATELIMIT.clone(),
                ratelimit_header(policy, index, self.remaining, self.reset, self.pk),
            );
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

/// Values below this come from a table built once, so the usual header values cost no
/// allocation and no reference count.
const SMALL: usize = 1024;

/// A decimal header value.
pub(super) fn int(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Box<[HeaderValue]>> = OnceLock::new();
    match usize::try_from(n) {
        Ok(small) if small < SMALL => TABLE.get_or_init(small_ints)[small].clone(),
        _ => HeaderValue::from(n),
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

/// Builds a header value of visible ASCII.
struct Writer(Vec<u8>);

impl Writer {
    fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    #[inline]
    fn int(&mut self, n: u64) {
        self.put(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Everything written is visible ASCII or a space, so the value is always valid.
    fn finish(self) -> HeaderValue {
        HeaderValue::from_maybe_shared(Bytes::from(self.0))
            .unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// `"name";q=100;w=60` for each quota of the policy; with several quotas each item is
/// named after the policy and the quota's position, `"name.0"`, `"name.1"`.
pub(super) fn policy_header(policy: &Policy) -> HeaderValue {
    let quotas = policy.quotas();
    let mut out = Writer::with_capacity(quotas.len() * (policy.name().len() + 32));
    for (i, quota) in quotas.iter().enumerate() {
        if i > 0 {
            out.put(b", ");
        }
        item_name(&mut out, policy, i);
        out.put(b";q=");
        out.int(u64::from(quota.count()));
        out.put(b";w=");
        out.int(ceil_secs(quota.period()).max(1));
    }
    out.finish()
}

/// `"name";r=42;t=30;pk=:AAECAwQFBgc=:` for the quota at `index` of the policy.
fn ratelimit_header(
    policy: &Policy,
    index: usize,
    remaining: u32,
    reset: u64,
    pk: u64,
) -> HeaderValue {
    let mut out = Writer::with_capacity(policy.name().len() + 56);
    item_name(&mut out, policy, index);
    out.put(b";r=");
    out.int(u64::from(remaining));
    out.put(b";t=");
    out.int(reset);
    out.put(b";pk=:");
    put_base64(&mut out, &pk.to_be_bytes());
    out.put(b":");
    out.finish()
}

/// The quoted item name: policy names are ASCII letters, digits, `_`, `-` and `.`, so need
/// no escaping.
fn item_name(out: &mut Writer, policy: &Policy, index: usize) {
    out.put(b"\"");
    out.put(policy.name().as_bytes());
    if policy.quotas().len() > 1 {
        out.put(b".");
        out.int(index as u64);
    }
    out.put(b"\"");
}

/// Standard base64 with padding, as structured-field byte sequences are written.
fn put_base64(out: &mut Writer, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            let byte = if i <= chunk.len() {
                ALPHABET[(n >> shift & 63) as usize]
            } else {
                b'='
            };
            out.put(&[byte]);
        }
    }
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
    fn integers_from_the_table_and_beyond() {
        for n in [0, 1, 9, 10, 999, 1023, 1024, 65_536, u64::MAX] {
            assert_eq!(int(n).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        let cases: [(&[u8], &str); 5] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (&[0xfb, 0xff, 0x00, 1, 2, 3, 4, 5], "+/8AAQIDBAU="),
        ];
        for (input, expected) in cases {
            let mut out = Writer::with_capacity(0);
            put_base64(&mut out, input);
            assert_eq!(out.0, expected.as_bytes());
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
