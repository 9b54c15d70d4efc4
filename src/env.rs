//! Reading configuration from environment variables.

use std::{env, str::FromStr};

/// A configuration variable is set but cannot be used.
///
/// Returned by the `from_env()` constructors. An unset or empty variable is never an error
/// (the documented default applies); a variable set to something unreadable is, so that a
/// typo is caught at start-up instead of silently running with the default.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name} is set to {value:?}, which is not {expected}")]
pub struct EnvError {
    name: &'static str,
    value: String,
    expected: &'static str,
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
}

/// Reads and parses the variable `name`; `Ok(None)` when it is unset or blank.
#[allow(dead_code)]
pub(crate) fn var<T>(name: &'static str, expected: &'static str) -> Result<Option<T>, EnvError>
where
    T: FromStr,
{
    parse(name, env::var(name).ok(), expected)
}

fn parse<T: FromStr>(
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
    trimmed.parse().map(Some).map_err(|_| EnvError {
        name,
        value,
        expected,
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
            "environment variable REQUEST_TIMEOUT_MS is set to \"30s\", which is not a whole number of milliseconds"
        );
    }
}
