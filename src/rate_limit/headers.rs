//! The rate-limit response headers, built without `format!`.

use std::{sync::OnceLock, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
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

/// The header values of one decision, computed when it is made and written on the response.
#[derive(Debug, Clone, Default)]
pub(super) struct Stamp {
    limit: Option<HeaderValue>,
    remaining: Option<HeaderValue>,
    reset: Option<HeaderValue>,
    policy: Option<HeaderValue>,
    ratelimit: Option<HeaderValue>,
    retry_after: Option<HeaderValue>,
}

impl Stamp {
    /// The headers `families` asks for, for `decision` under `policy`; `policy_value` is
    /// the policy's cached `RateLimit-Policy` value when the caller has one. `pk` is the
    /// partition key: an opaque digest of the client's key.
    pub(super) fn new(
        families: RateLimitHeaders,
        decision: &Decision,
        policy: &Policy,
        policy_value: Option<&HeaderValue>,
        pk: u64,
    ) -> Self {
        let reset = ceil_secs(decision.reset);
        let mut stamp = Self::default();
        if families.legacy {
            stamp.limit = Some(int(u64::from(decision.limit)));
            stamp.remaining = Some(int(u64::from(decision.remaining)));
            stamp.reset = Some(int(reset));
        }
        if families.draft {
            stamp.policy = Some(match policy_value {
                Some(value) => value.clone(),
                None => policy_header(policy),
            });
            stamp.ratelimit = Some(ratelimit_header(policy, decision, reset, pk));
        }
        if !decision.allowed {
            stamp.retry_after = Some(int(retry_after_secs(decision)));
        }
        stamp
    }

    /// Drops `Retry-After`, for a refusal shadow mode lets through.
    pub(super) fn clear_retry_after(&mut self) {
        self.retry_after = None;
    }

    /// Writes the headers into `headers`, replacing any of the same name.
    pub(super) fn apply(self, headers: &mut HeaderMap) {
        let pairs = [
            (&X_RATELIMIT_LIMIT, self.limit),
            (&X_RATELIMIT_REMAINING, self.remaining),
            (&X_RATELIMIT_RESET, self.reset),
            (&RATELIMIT_POLICY, self.policy),
            (&RATELIMIT, self.ratelimit),
            (&RETRY_AFTER, self.retry_after),
        ];
        for (name, value) in pairs {
            if let Some(value) = value {
                headers.insert(name.clone(), value);
            }
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
/// allocation.
const SMALL: u64 = 1024;

/// A decimal header value.
pub(super) fn int(n: u64) -> HeaderValue {
    static TABLE: OnceLock<Box<[HeaderValue]>> = OnceLock::new();
    if n < SMALL {
        let table = TABLE.get_or_init(|| (0..SMALL).map(HeaderValue::from).collect());
        return table[n as usize].clone();
    }
    HeaderValue::from(n)
}

/// `"name";q=100;w=60` for each quota of the policy; with several quotas each item is
/// named after the policy and the quota's position, `"name.0"`, `"name.1"`.
pub(super) fn policy_header(policy: &Policy) -> HeaderValue {
    let quotas = policy.quotas();
    let mut out = BytesMut::with_capacity(quotas.len() * (policy.name().len() + 28));
    for (i, quota) in quotas.iter().enumerate() {
        if i > 0 {
            out.put_slice(b", ");
        }
        item_name(&mut out, policy, i);
        out.put_slice(b";q=");
        put_int(&mut out, u64::from(quota.count()));
        out.put_slice(b";w=");
        put_int(&mut out, ceil_secs(quota.period()).max(1));
    }
    value(out.freeze())
}

/// `"name";r=42;t=30;pk=:AAECAwQFBgc=:` for the binding quota of `decision`.
fn ratelimit_header(policy: &Policy, decision: &Decision, reset: u64, pk: u64) -> HeaderValue {
    let mut out = BytesMut::with_capacity(policy.name().len() + 48);
    let index = policy
        .quotas()
        .iter()
        .position(|quota| *quota == decision.quota)
        .unwrap_or(0);
    item_name(&mut out, policy, index);
    out.put_slice(b";r=");
    put_int(&mut out, u64::from(decision.remaining));
    out.put_slice(b";t=");
    put_int(&mut out, reset);
    out.put_slice(b";pk=:");
    put_base64(&mut out, &pk.to_be_bytes());
    out.put_u8(b':');
    value(out.freeze())
}

/// The quoted item name: policy names are ASCII letters, digits, `_`, `-` and `.`, so need
/// no escaping.
fn item_name(out: &mut BytesMut, policy: &Policy, index: usize) {
    out.put_u8(b'"');
    out.put_slice(policy.name().as_bytes());
    if policy.quotas().len() > 1 {
        out.put_u8(b'.');
        put_int(out, index as u64);
    }
    out.put_u8(b'"');
}

fn put_int(out: &mut BytesMut, n: u64) {
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Standard base64 with padding, as structured-field byte sequences are written.
fn put_base64(out: &mut BytesMut, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.put_u8(ALPHABET[(n >> shift & 63) as usize]);
            } else {
                out.put_u8(b'=');
            }
        }
    }
}

/// Every byte written above is visible ASCII or a space.
fn value(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
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
        let mut d = Decision::fail_open(quota);
        d.allowed = allowed;
        d.remaining = remaining;
        d.reset = reset;
        d.retry_after = retry;
        d.source = Source::Store;
        d
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
            let mut out = BytesMut::new();
            put_base64(&mut out, input);
            assert_eq!(out, expected.as_bytes());
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
            &policy,
            None,
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
        Stamp::new(RateLimitHeaders::DRAFT, &d, &policy, None, 0).apply(&mut headers);
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
    fn none_writes_only_retry_after_on_refusals() {
        let policy = Policy::new(Quota::per_minute(100));
        let mut headers = HeaderMap::new();
        let allowed = decision(true, 1, Duration::from_secs(1), None);
        Stamp::new(RateLimitHeaders::NONE, &allowed, &policy, None, 0).apply(&mut headers);
        assert!(headers.is_empty());
        let refused = decision(
            false,
            0,
            Duration::from_secs(1),
            Some(Duration::from_millis(200)),
        );
        Stamp::new(RateLimitHeaders::NONE, &refused, &policy, None, 0).apply(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["retry-after"], "1");
    }
}
