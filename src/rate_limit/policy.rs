use std::{fmt, str::FromStr, sync::Arc};

use super::{
    algorithm::{Algorithm, SingleGcra},
    error::{Error, Result},
    quota::Quota,
};

/// The most quotas one policy holds; every key's state has room for this many.
pub const MAX_QUOTAS: usize = 4;
/// The longest policy name.
const MAX_NAME_LEN: usize = 64;

/// What a key may do: one or more [`Quota`]s, decided by one [`Algorithm`], under a name.
///
/// With several quotas ("10 per second and 1000 per hour") a request is admitted only when
/// every quota admits it, and a refused request consumes none of them.
///
/// The name identifies the policy's state in the store (two policies with the same name share
/// their keys' budgets) and in the `RateLimit-Policy` header. It defaults to one built from
/// the quotas, such as `q10w1-q1000w3600`; names are 1 to 64 ASCII letters, digits, `_`, `-`
/// or `.`.
///
/// Cloning is cheap (a reference count).
///
/// ```
/// use perfkit::rate_limit::{Algorithm, Policy, Quota};
///
/// let policy = Policy::new(Quota::per_second(10))
///     .and(Quota::per_hour(1000))
///     .with_algorithm(Algorithm::SlidingWindow);
/// assert_eq!(policy.name(), "q10w1-q1000w3600");
///
/// let parsed: Policy = "10/second, 1000/hour".parse()?;
/// assert_eq!(parsed.quotas(), policy.quotas());
/// # Ok::<_, perfkit::rate_limit::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Policy {
    inner: Arc<Inner>,
}

#[derive(PartialEq, Eq)]
struct Inner {
    name: Box<str>,
    /// Whether the name was given, rather than built from the quotas.
    named: bool,
    /// A hash of the name, to key the memory store without hashing the name per request.
    id: u64,
    quotas: Vec<Quota>,
    algorithm: Algorithm,
    /// The figures of the single GCRA quota, when the policy is one.
    single_gcra: Option<SingleGcra>,
}

impl Policy {
    /// A policy of one quota, decided by [`Algorithm::Gcra`].
    pub fn new(quota: Quota) -> Self {
        Self::build(None, vec![quota], Algorithm::default())
    }

    /// A policy of several quotas, all of which must admit a request.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPolicy`] when `quotas` is empty or holds more than four quotas.
    pub fn from_quotas(quotas: impl IntoIterator<Item = Quota>) -> Result<Self> {
        let quotas: Vec<Quota> = quotas.into_iter().take(MAX_QUOTAS + 1).collect();
        check_quota_count(quotas.len())?;
        Ok(Self::build(None, quotas, Algorithm::default()))
    }

    /// The same policy with one more quota.
    ///
    /// # Panics
    ///
    /// When the policy already holds four quotas.
    #[must_use]
    #[track_caller]
    pub fn and(self, quota: Quota) -> Self {
        let mut quotas = self.inner.quotas.clone();
        quotas.push(quota);
        if let Err(error) = check_quota_count(quotas.len()) {
            panic!("{error}");
        }
        let name = self.inner.named.then(|| self.inner.name.clone());
        Self::build(name, quotas, self.inner.algorithm)
    }

    /// The same policy decided by `algorithm`. Defaults to [`Algorithm::Gcra`].
    #[must_use]
    pub fn with_algorithm(self, algorithm: Algorithm) -> Self {
        let name = self.inner.named.then(|| self.inner.name.clone());
        Self::build(name, self.inner.quotas.clone(), algorithm)
    }

    /// The same policy under `name`. Defaults to a name built from the quotas.
    ///
    /// # Panics
    ///
    /// When `name` is empty, longer than 64 bytes, or holds a character other than an ASCII
    /// letter, digit, `_`, `-` or `.`.
    #[must_use]
    #[track_caller]
    pub fn with_name(self, name: &str) -> Self {
        if let Err(error) = check_name(name) {
            panic!("{error}");
        }
        Self::build(
            Some(name.into()),
            self.inner.quotas.clone(),
            self.inner.algorithm,
        )
    }

    fn build(name: Option<Box<str>>, quotas: Vec<Quota>, algorithm: Algorithm) -> Self {
        let named = name.is_some();
        let name = name.unwrap_or_else(|| {
            let mut name = String::new();
            for (i, quota) in quotas.iter().enumerate() {
                if i > 0 {
                    name.push('-');
                }
                quota.write_name(&mut name);
            }
            name.into_boxed_str()
        });
        let id = fnv1a(name.as_bytes()) ^ u64::from(algorithm.tag());
        let single_gcra = match quotas.as_slice() {
            [quota] if algorithm == Algorithm::Gcra => Some(SingleGcra::new(quota)),
            _ => None,
        };
        Self {
            inner: Arc::new(Inner {
                name,
                named,
                id,
                quotas,
                algorithm,
                single_gcra,
            }),
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The quotas, in the order they were given (at least one, at most four).
    pub fn quotas(&self) -> &[Quota] {
        &self.inner.quotas
    }

    /// The algorithm deciding the quotas.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.algorithm
    }

    /// The figures of the policy's one GCRA quota; `None` for several quotas or a window.
    #[inline]
    pub(crate) fn single_gcra(&self) -> Option<SingleGcra> {
        self.inner.single_gcra
    }

    /// A hash of the name and algorithm, stable for the life of the process.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }
}

fn check_quota_count(len: usize) -> Result<()> {
    match len {
        0 => Err(Error::InvalidPolicy("a policy needs at least one quota")),
        1..=MAX_QUOTAS => Ok(()),
        _ => Err(Error::InvalidPolicy("a policy holds at most four quotas")),
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidPolicy(
            "a policy name must be 1 to 64 characters long",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(Error::InvalidPolicy(
            "a policy name may only hold ASCII letters, digits, `_`, `-` and `.`",
        ));
    }
    Ok(())
}

/// FNV-1a: a fixed hash, so a policy's id does not depend on a random seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.inner.name)
            .field("quotas", &self.inner.quotas)
            .field("algorithm", &self.inner.algorithm)
            .finish()
    }
}

/// A policy of one quota, as [`Policy::new`] builds it.
impl From<Quota> for Policy {
    fn from(quota: Quota) -> Self {
        Self::new(quota)
    }
}

/// Reads one or more [`Quota`]s separated by commas or semicolons, such as
/// `10/second, 1000/hour`, decided by [`Algorithm::Gcra`].
impl FromStr for Policy {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let quotas = input
            .split([',', ';'])
            .take(MAX_QUOTAS + 1)
            .map(str::parse)
            .collect::<Result<Vec<Quota>>>()?;
        check_quota_count(quotas.len())?;
        Ok(Self::build(None, quotas, Algorithm::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_that_does_not_parse_says_which_quota_and_why() {
        for (input, reason) in [
            ("", "empty"),
            ("10/second, ten/hour", "whole number"),
            ("10/fortnight", "unit must be one of"),
            ("10/second,", "empty"),
            ("10/second burst -1", "burst must be a whole number"),
        ] {
            let error = input.parse::<Policy>().unwrap_err().to_string();
            assert!(error.contains(reason), "{input:?}: {error}");
            assert!(error.contains("100/minute"), "{input:?}: {error}");
        }
        let error = "1/s,2/s,3/s,4/s,5/s".parse::<Policy>().unwrap_err();
        assert!(error.to_string().contains("at most four"), "{error}");
        let policy: Policy = "10/second; 1000/hour".parse().unwrap();
        assert_eq!(policy.quotas().len(), 2);
    }
}
