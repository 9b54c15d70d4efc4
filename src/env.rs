//! Reading configuration from environment variables.

use std::{env, fmt, str::FromStr};

/// A configuration variable is set but cannot be used.
///
/// Returned by the `from_env()` constructors. An unset or empty variable is never an error
/// (the documented default applies); a variable set to something unreadable is, so that a
/// typo is caught at start-up instead of silently running with the default.
#[derive(Debug, thiserror::Error)]
#[error(
    "environment variable {name} is set to {value:?}, which cannot be used: {reason} (expected {expected})"
)]
pub struct EnvError {
    name: &'static str,
    value: String,
    expected: &'static str,
    /// What the parser said of the value.
    reason: String,
}

impl EnvError {
    /// The name of the offending variable.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value it holds.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why the value was refused, in the parser's words (such as `the count must be at
    /// most 1000000000`).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Reads and parses the variable `name`; `Ok(None)` when it is unset or blank.
#[allow(dead_code)]
pub(crate) fn var<T>(name: &'static str, expected: &'static str) -> Result<Option<T>, EnvError>
where
    T: FromStr<Err: fmt::Display>,
{
    parse(name, env::var(name).ok(), expected)
}

/// Parses `value`, the value of the variable `name` (or `None` when unset), as [`var`] does.
pub(crate) fn parse<T: FromStr<Err: fmt::Display>>(
    name: &'static str,
    value: Option<String>,
    expected: &'static str,
) -> Result<Option<T>, EnvError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    trimmed.parse().map(Some).map_err(|error: T::Err| EnvError {
        name,
        expected,
        reason: error.to_string(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: &str = "a whole number of milliseconds";

    #[test]
    fn unset_and_blank_mean_default() {
        assert_eq!(parse::<u64>("X", None, EXPECTED).unwrap(), None);
        assert_eq!(
            parse::<u64>("X", Some("  ".into()), EXPECTED).unwrap(),
            None
        );
        assert_eq!(
            var::<u64>("PERFKIT_TEST_SURELY_UNSET_VARIABLE", EXPECTED).unwrap(),
            None
        );
    }

    #[test]
    fn values_are_trimmed_and_parsed() {
        assert_eq!(
            parse::<u64>("X", Some(" 250 ".into()), EXPECTED).unwrap(),
            Some(250)
        );
    }

    #[test]
    fn garbage_is_an_error_naming_variable_value_and_expectation() {
        let err = parse::<u64>("REQUEST_TIMEOUT_MS", Some("30s".into()), EXPECTED).unwrap_err();
        assert_eq!(err.name(), "REQUEST_TIMEOUT_MS");
        assert_eq!(err.value(), "30s");
        assert_eq!(
            err.to_string(),
            "environment variable REQUEST_TIMEOUT_MS is set to \"30s\", which cannot be used: invalid digit found in string (expected a whole number of milliseconds)"
        );
        assert_eq!(err.reason(), "invalid digit found in string");
    }
}

#[cfg(all(test, feature = "rate-limit"))]
mod rate_limit_tests {
    use super::*;
    use crate::rate_limit::Policy;

    const EXPECTED: &str = "a rate limit such as `100/minute`";

    #[test]
    fn a_rate_limit_out_of_range_names_the_bound_it_breaks() {
        for value in ["10000000/second", "1000000000/minute"] {
            let err = parse::<Policy>("RATE_LIMIT", Some(value.into()), EXPECTED).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "environment variable RATE_LIMIT is set to \"{value}\", which cannot be used: \
                     quota `{value}` is out of range: the period must leave at least 1 µs per \
                     request; use a longer period (expected {EXPECTED})"
                )
            );
        }
        let err =
            parse::<Policy>("RATE_LIMIT", Some("1000000000/100d".into()), EXPECTED).unwrap_err();
        assert!(
            err.reason()
                .contains("count × period is too large; use a smaller count or a shorter period"),
            "{err}"
        );
    }

    #[test]
    fn a_misspelt_rate_limit_still_shows_the_syntax() {
        let err =
            parse::<Policy>("RATE_LIMIT", Some("100/fortnight".into()), EXPECTED).unwrap_err();
        assert!(err.reason().contains("unit must be one of"), "{err}");
        assert!(err.reason().contains("write `<count>/<period>`"), "{err}");
    }
}
