use std::{fmt, str::FromStr, time::Duration};

use super::error::{Error, Result};
use crate::fmt::truncate_at_char_boundary;

/// The largest count a quota accepts.
pub(crate) const MAX_COUNT: u32 = 1_000_000_000;
/// The longest period a quota accepts: 366 days, in milliseconds.
const MAX_PERIOD_MS: u64 = 366 * 24 * 3600 * 1000;
/// Bound on `count × period in ms` and on `burst × emission interval in µs`, so that every
/// sum and product the algorithms compute is an exact integer in Redis's Lua (doubles) too.
const MAX_SPAN: u128 = 1 << 52;

/// How many requests a key may make per period, and how many at once.
///
/// A quota of `count` per `period` admits `count` requests at once and then one every
/// `period / count` (the burst defaults to the count, as governor and fixed windows do);
/// [`with_burst`](Self::with_burst) changes how many may come at once. The
/// [`Algorithm`](super::Algorithm) decides how the budget is spent; the burst matters only to
/// [`Gcra`](super::Algorithm::Gcra), the windows admit `count` per window.
///
/// Periods are whole milliseconds, from 1 ms to 366 days; counts go up to one billion, and
/// the period must leave at least one microsecond per request.
///
/// # Parsing
///
/// [`FromStr`] reads what people write, case-insensitively, with any whitespace:
///
/// - `100/minute`, `10/second`, `1000/hour`, `5000/day`, `20/30s`, `3/1500ms`, `10 per second`;
/// - units: `ms`, `s`/`sec`/`second`, `m`/`min`/`minute`, `h`/`hr`/`hour`, `d`/`day`, each
///   also plural, optionally after a number (`30s`, `30 seconds`);
/// - an optional burst after the quota: `100/minute burst 20` or `100/minute burst=20`.
///
/// ```
/// use std::time::Duration;
/// use perfkit::rate_limit::Quota;
///
/// let quota: Quota = "20/30s".parse()?;
/// assert_eq!(quota, Quota::new(20, Duration::from_secs(30))?);
/// assert_eq!("100/minute burst 10".parse::<Quota>()?, Quota::per_minute(100).with_burst(10));
/// assert!("100/fortnight".parse::<Quota>().is_err());
/// # Ok::<_, perfkit::rate_limit::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    burst: u32,
    period_ms: u64,
}

impl Quota {
    /// `count` requests per `period`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuota`] when `count` is 0 or above one billion, when `period` is under
    /// 1 ms, over 366 days or not a whole number of milliseconds, or when the period leaves
    /// less than a microsecond per request.
    pub fn new(count: u32, period: Duration) -> Result<Self> {
        if !period.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(Error::InvalidQuota(
                "the period must be a whole number of milliseconds",
            ));
        }
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        Self::from_parts(count, period_ms, count)
    }

    fn from_parts(count: u32, period_ms: u64, burst: u32) -> Result<Self> {
        if count == 0 {
            return Err(Error::InvalidQuota("the count must be at least 1"));
        }
        if count > MAX_COUNT {
            return Err(Error::InvalidQuota("the count must be at most 1000000000"));
        }
        if period_ms == 0 {
            return Err(Error::InvalidQuota("the period must be at least 1 ms"));
        }
        if period_ms > MAX_PERIOD_MS {
            return Err(Error::InvalidQuota("the period must be at most 366 days"));
        }
        if period_ms.saturating_mul(1000) < u64::from(count) {
            return Err(Error::InvalidQuota(
                "the period must leave at least 1 µs per request; use a longer period",
            ));
        }
        if u128::from(count) * u128::from(period_ms) > MAX_SPAN {
            return Err(Error::InvalidQuota(
                "count × period is too large; use a smaller count or a shorter period",
            ));
        }
        let quota = Self {
            count,
            burst: count,
            period_ms,
        };
        quota.try_with_burst(burst)
    }

    /// `count` requests per second.
    ///
    /// # Panics
    ///
    /// When `count` is 0 or above one million.
    pub fn per_second(count: u32) -> Self {
        Self::unit(count, 1000)
    }

    /// `count` requests per minute.
    ///
    /// # Panics
    ///
    /// When `count` is 0 or above one billion.
    pub fn per_minute(count: u32) -> Self {
        Self::unit(count, 60_000)
    }

    /// `count` requests per hour.
    ///
    /// # Panics
    ///
    /// When `count` is 0 or above one billion.
    pub fn per_hour(count: u32) -> Self {
        Self::unit(count, 3_600_000)
    }

    /// `count` requests per day.
    ///
    /// # Panics
    ///
    /// When `count` is 0 or above one billion.
    pub fn per_day(count: u32) -> Self {
        Self::unit(count, 86_400_000)
    }

    #[track_caller]
    fn unit(count: u32, period_ms: u64) -> Self {
        match Self::from_parts(count, period_ms, count) {
            Ok(quota) => quota,
            Err(error) => panic!("{error}"),
        }
    }

    /// The same quota admitting up to `burst` requests at once. Defaults to the count.
    ///
    /// # Panics
    ///
    /// When `burst` is 0, above one billion, or so large that refilling it would take more
    /// than a century; [`try_with_burst`](Self::try_with_burst) returns an error instead.
    #[must_use]
    #[track_caller]
    pub fn with_burst(self, burst: u32) -> Self {
        match self.try_with_burst(burst) {
            Ok(quota) => quota,
            Err(error) => panic!("{error}"),
        }
    }

    /// The same quota admitting up to `burst` requests at once, or an error saying why it
    /// cannot.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQuota`] when `burst` is 0, above one billion, or so large that
    /// refilling it would take more than a century.
    pub fn try_with_burst(self, burst: u32) -> Result<Self> {
        if burst == 0 {
            return Err(Error::InvalidQuota("the burst must be at least 1"));
        }
        if burst > MAX_COUNT {
            return Err(Error::InvalidQuota("the burst must be at most 1000000000"));
        }
        let quota = Self { burst, ..self };
        if u128::from(burst) * u128::from(quota.interval_micros()) > MAX_SPAN {
            return Err(Error::InvalidQuota(
                "the burst is too large for the quota's rate; use a smaller burst",
            ));
        }
        Ok(quota)
    }

    /// Requests admitted per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Requests admitted at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }

    /// The period in microseconds.
    pub(crate) fn period_micros(&self) -> u64 {
        self.period_ms * 1000
    }

    /// The period in milliseconds.
    pub(crate) fn period_millis(&self) -> u64 {
        self.period_ms
    }

    /// GCRA's emission interval: the period over the count, in whole microseconds (rounded
    /// down, so a quota never admits fewer requests than it says).
    pub(crate) fn interval_micros(&self) -> u64 {
        self.period_micros() / u64::from(self.count)
    }

    /// A short name usable in store keys and in the `RateLimit-Policy` header, such as
    /// `q100w60` (100 per 60 s), `q5w1500ms`, or `q100w60b20` with a burst of 20.
    pub(crate) fn write_name(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "q{}w", self.count);
        if self.period_ms.is_multiple_of(1000) {
            let _ = write!(out, "{}", self.period_ms / 1000);
        } else {
            let _ = write!(out, "{}ms", self.period_ms);
        }
        if self.burst != self.count {
            let _ = write!(out, "b{}", self.burst);
        }
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quota({self})")
    }
}

/// Writes the quota in the form [`FromStr`] reads: `100/minute`, `20/30s`,
/// `100/minute burst 20`.
impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.count)?;
        match self.period_ms {
            1000 => f.write_str("second")?,
            60_000 => f.write_str("minute")?,
            3_600_000 => f.write_str("hour")?,
            86_400_000 => f.write_str("day")?,
            ms if ms % 86_400_000 == 0 => write!(f, "{}d", ms / 86_400_000)?,
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000)?,
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000)?,
            ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000)?,
            ms => write!(f, "{ms}ms")?,
        }
        if self.burst != self.count {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for Quota {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let input_text = || truncate_at_char_boundary(input, 64).to_owned();
        match parse(input) {
            Ok(Ok(quota)) => Ok(quota),
            Ok(Err(reason)) => Err(Error::QuotaOutOfRange {
                input: input_text(),
                reason,
            }),
            Err(reason) => Err(Error::ParseQuota {
                input: input_text(),
                reason,
            }),
        }
    }
}

/// Reads `input`: `Err` when it is not written as a quota, `Ok(Err)` when it is but its
/// numbers are out of range.
fn parse(
    input: &str,
) -> std::result::Result<std::result::Result<Quota, &'static str>, &'static str> {
    if input.len() > 128 {
        return Err("it is too long");
    }
    let lower = input.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Err("it is empty");
    }
    let (rate, burst) = match lower.find("burst") {
        Some(at) => (&lower[..at], Some(&lower[at + "burst".len()..])),
        None => (lower.as_str(), None),
    };
    let (count, period) = match rate.split_once('/') {
        Some(parts) => parts,
        None => rate
            .split_once(" per ")
            .ok_or("the count and the period must be separated by `/`")?,
    };
    let count = parse_number(count.trim()).ok_or("the count must be a whole number")?;
    let period_ms = parse_period(period.trim())?;
    let burst = match burst {
        None => count,
        Some(rest) => {
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
            parse_number(rest).ok_or("the burst must be a whole number, as in `burst 20`")?
        }
    };
    Ok(
        Quota::from_parts(count, period_ms, burst).map_err(|error| match error {
            Error::InvalidQuota(reason) => reason,
            _ => "it is out of range",
        }),
    )
}

/// A whole number of at most 10 digits, without sign.
fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `minute`, `30s`, `30 seconds`, `1500ms`: the period in milliseconds.
fn parse_period(text: &str) -> std::result::Result<u64, &'static str> {
    const UNIT_ERROR: &str =
        "the period's unit must be one of ms, s, second, m, minute, h, hour, d, day";
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let multiple = if number.is_empty() {
        1
    } else {
        u64::from(parse_number(number).ok_or("the period's number is too large")?)
    };
    if multiple == 0 {
        return Err("the period must not be zero");
    }
    let unit_ms: u64 = match unit.trim() {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "" => return Err(UNIT_ERROR),
        _ => return Err(UNIT_ERROR),
    };
    // Too long a period is a range error, which `Quota::from_parts` reports.
    Ok(multiple.saturating_mul(unit_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Quota {
        input
            .parse()
            .unwrap_or_else(|error| panic!("{input}: {error}"))
    }

    #[test]
    fn parses_what_people_write() {
        assert_eq!(ok("100/minute"), Quota::per_minute(100));
        assert_eq!(ok("10/second"), Quota::per_second(10));
        assert_eq!(ok("1000/hour"), Quota::per_hour(1000));
        assert_eq!(ok("5000/day"), Quota::per_day(5000));
        assert_eq!(
            ok("20/30s"),
            Quota::new(20, Duration::from_secs(30)).unwrap()
        );
        assert_eq!(ok(" 20 / 30 Seconds "), ok("20/30s"));
        assert_eq!(ok("10 per second"), Quota::per_second(10));
        assert_eq!(ok("3/1500ms").period(), Duration::from_millis(1500));
        assert_eq!(ok("5/2h").period(), Duration::from_secs(7200));
        assert_eq!(ok("100/m"), Quota::per_minute(100));
        assert_eq!(
            ok("100/minute burst 20"),
            Quota::per_minute(100).with_burst(20)
        );
        assert_eq!(ok("100/MINUTE Burst=20").burst(), 20);
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "100/minute",
            "20/30s",
            "3/1500ms",
            "5/2h",
            "7/3d",
            "100/minute burst 20",
        ] {
            assert_eq!(ok(input).to_string(), input);
            assert_eq!(ok(&ok(input).to_string()), ok(input));
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("100", "separated by `/`"),
            ("100/0s", "not be zero"),
            ("100/fortnight", "unit must be one of"),
            ("-1/second", "whole number"),
            ("1.5/second", "whole number"),
            ("99999999999/second", "whole number"),
            ("100/minute burst", "burst must be a whole number"),
            (
                "10/minute burst 99999999999",
                "burst must be a whole number",
            ),
        ] {
            let error = input.parse::<Quota>().unwrap_err();
            assert!(
                matches!(error, Error::ParseQuota { .. }),
                "{input:?}: {error}"
            );
            let error = error.to_string();
            assert!(error.contains(reason), "{input:?}: {error}");
            assert!(error.contains("100/minute"), "{input:?}: {error}");
        }
        // Well written but out of range: the message gives the bound, not the syntax.
        for (input, reason) in [
            ("0/minute", "the count must be at least 1"),
            (
                "2000000/second",
                "the period must leave at least 1 µs per request",
            ),
            (
                "1000000000/minute",
                "the period must leave at least 1 µs per request",
            ),
            (
                "10000000/second",
                "the period must leave at least 1 µs per request",
            ),
            ("1000000000/100d", "count × period is too large"),
            ("1/400d", "the period must be at most 366 days"),
            ("100/minute burst 0", "the burst must be at least 1"),
            ("1/day burst 1000000", "the burst is too large"),
        ] {
            let error = input.parse::<Quota>().unwrap_err();
            assert!(
                matches!(error, Error::QuotaOutOfRange { .. }),
                "{input:?}: {error}"
            );
            let error = error.to_string();
            assert!(
                error.starts_with(&format!("quota `{input}` is out of range: {reason}")),
                "{input:?}: {error}"
            );
            assert!(!error.contains("write `<count>/<period>`"), "{error}");
        }
        let long = "9".repeat(10_000);
        assert!(long.parse::<Quota>().unwrap_err().to_string().len() < 400);
        assert!("١٠/second".parse::<Quota>().is_err());
    }

    #[test]
    fn constructors_validate() {
        assert!(Quota::new(0, Duration::from_secs(1)).is_err());
        assert!(Quota::new(1, Duration::ZERO).is_err());
        assert!(Quota::new(1, Duration::from_micros(1500)).is_err());
        assert!(Quota::per_second(1).try_with_burst(0).is_err());
        assert_eq!(Quota::per_second(10).interval_micros(), 100_000);
        assert_eq!(
            Quota::new(7, Duration::from_secs(1))
                .unwrap()
                .interval_micros(),
            142_857
        );
    }
}
