//! Text the modules write for people: bounded excerpts of untrusted text, and durations.
//!
//! Each helper lives here once so that a message reads the same wherever it is written.

/// At most `max` bytes of `text`, cut at the last character boundary at or before `max`.
///
/// For quoting text that came from outside (a header, a server's reply, a configuration
/// value) in a message or an error without letting it grow the message without bound.
#[cfg(any(feature = "health", feature = "rate-limit", feature = "paginate"))]
pub(crate) fn truncate_at_char_boundary(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

#[cfg(any(
    feature = "health",
    feature = "postgres",
    feature = "sqlite",
    feature = "redis",
    feature = "timeout"
))]
pub(crate) use self::duration::HumanDuration;

/// Durations for people; only the features that write one compile it.
#[cfg(any(
    feature = "health",
    feature = "postgres",
    feature = "sqlite",
    feature = "redis",
    feature = "timeout"
))]
mod duration {
    use std::{fmt, time::Duration};

    /// A duration written for people, in one of the [`DurationStyle`]s the crate's messages
    /// use: `format!("timed out after {}", HumanDuration::fine(timeout))`.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct HumanDuration {
        duration: Duration,
        style: DurationStyle,
    }

    /// How finely a [`HumanDuration`] writes what is not whole seconds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum DurationStyle {
        /// `5 s`, `1.5 s`, `250 ms`, `2.5 ms`: whole seconds when there is no fraction at all,
        /// otherwise milliseconds with at most one decimal below a second and seconds with one
        /// decimal above. The health checks' timeouts.
        #[cfg(feature = "health")]
        Fine,
        /// `30 s`, `2.5 s`, `250 ms`: nothing finer than a millisecond. Below a second, whole
        /// milliseconds (truncated); above, whole seconds when no millisecond is left over,
        /// otherwise seconds with one decimal. The pools' waits.
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        Millis,
        /// `30.0s`, `0.3s`: always seconds with one decimal, halves rounded up, no space before
        /// the unit. The request timeout's answer.
        #[cfg(feature = "timeout")]
        Tenths,
    }

    impl HumanDuration {
        /// `5 s`, `1.5 s`, `250 ms`, `2.5 ms`; see [`DurationStyle::Fine`].
        #[cfg(feature = "health")]
        pub(crate) fn fine(duration: Duration) -> Self {
            Self {
                duration,
                style: DurationStyle::Fine,
            }
        }

        /// `30 s`, `2.5 s`, `250 ms`; see [`DurationStyle::Millis`].
        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        pub(crate) fn millis(duration: Duration) -> Self {
            Self {
                duration,
                style: DurationStyle::Millis,
            }
        }

        /// `30.0s`, `0.3s`; see [`DurationStyle::Tenths`].
        #[cfg(feature = "timeout")]
        pub(crate) fn tenths(duration: Duration) -> Self {
            Self {
                duration,
                style: DurationStyle::Tenths,
            }
        }
    }

    impl fmt::Display for HumanDuration {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let duration = self.duration;
            match self.style {
                #[cfg(feature = "health")]
                DurationStyle::Fine => {
                    if duration.subsec_nanos() == 0 {
                        write!(f, "{} s", duration.as_secs())
                    } else if duration < Duration::from_secs(1) {
                        let ms = duration.as_secs_f64() * 1000.0;
                        if ms.fract() == 0.0 {
                            write!(f, "{ms:.0} ms")
                        } else {
                            write!(f, "{ms:.1} ms")
                        }
                    } else {
                        seconds_to_one_decimal(f, duration)
                    }
                }
                #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
                DurationStyle::Millis => {
                    if duration < Duration::from_secs(1) {
                        write!(f, "{} ms", duration.as_millis())
                    } else if duration.subsec_millis() == 0 {
                        write!(f, "{} s", duration.as_secs())
                    } else {
                        seconds_to_one_decimal(f, duration)
                    }
                }
                #[cfg(feature = "timeout")]
                DurationStyle::Tenths => {
                    // In integers, so that halves round up and `Duration::MAX` still formats.
                    let tenths = (duration.as_millis() + 50) / 100;
                    write!(f, "{}.{}s", tenths / 10, tenths % 10)
                }
            }
        }
    }

    /// `2.5 s`: the seconds of `duration` with one decimal, as the float formatter rounds them.
    #[cfg(any(
        feature = "health",
        feature = "postgres",
        feature = "sqlite",
        feature = "redis"
    ))]
    fn seconds_to_one_decimal(f: &mut fmt::Formatter<'_>, duration: Duration) -> fmt::Result {
        write!(f, "{:.1} s", duration.as_secs_f64())
    }

    #[cfg(all(
        test,
        any(
            feature = "health",
            feature = "postgres",
            feature = "sqlite",
            feature = "redis"
        )
    ))]
    mod tests {
        use super::*;

        #[cfg(feature = "health")]
        #[test]
        fn durations_read_naturally() {
            let format_duration = |duration| HumanDuration::fine(duration).to_string();
            assert_eq!(format_duration(Duration::from_secs(5)), "5 s");
            assert_eq!(format_duration(Duration::from_millis(1500)), "1.5 s");
            assert_eq!(format_duration(Duration::from_millis(250)), "250 ms");
            assert_eq!(format_duration(Duration::from_micros(2500)), "2.5 ms");
        }

        #[cfg(any(feature = "postgres", feature = "sqlite", feature = "redis"))]
        #[test]
        fn millis_style_stops_at_the_millisecond() {
            let millis = |duration| HumanDuration::millis(duration).to_string();
            assert_eq!(millis(Duration::from_secs(30)), "30 s");
            assert_eq!(millis(Duration::from_millis(2500)), "2.5 s");
            assert_eq!(millis(Duration::from_micros(250_900)), "250 ms");
            assert_eq!(millis(Duration::from_micros(30_000_400)), "30 s");
            assert_eq!(millis(Duration::ZERO), "0 ms");
        }
    }
}

#[cfg(all(test, any(feature = "health", feature = "rate-limit")))]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_at_char_boundary("short", 64), "short");
        assert_eq!(truncate_at_char_boundary("abcdef", 3), "abc");
        // `é` is two bytes: a cut inside it keeps the text before it.
        assert_eq!(truncate_at_char_boundary("aé", 2), "a");
        assert_eq!(truncate_at_char_boundary("", 0), "");
    }
}
