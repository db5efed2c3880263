//! Durations on the command line: `90s`, `15m`, `1h`, combinations such as `1h30m`, or a bare
//! number of seconds. Written the way people say them during an incident, so no fractions and
//! no units longer than days.

use std::time::Duration;

/// Why a duration was refused; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason} (use e.g. 90s, 15m, 1h or 1h30m)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// The longest duration accepted: ten years. Anything longer is a typo, and added to the
/// clock it could overflow it.
const MAX_SECONDS: u64 = 10 * 365 * 86_400;

/// Parses a duration such as `90s`, `15m`, `1h`, `1h30m`, `2d` or `45` (seconds), at most ten
/// years.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    if text.is_empty() {
        return Err(error("empty"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = text.parse().map_err(|_| error(TOO_LARGE))?;
        return within_limit(seconds).ok_or_else(|| error(TOO_LARGE));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(error("expected a number before each unit"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| error(TOO_LARGE))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "s" | "sec" | "secs" => 1,
            "m" | "min" | "mins" => 60,
            "h" | "hr" | "hrs" => 3600,
            "d" => 86_400,
            "" => return Err(error("a number without a unit inside a combination")),
            _ => return Err(error("unknown unit")),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(unit)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| error(TOO_LARGE))?;
    }
    within_limit(total).ok_or_else(|| error(TOO_LARGE))
}

/// Why a duration over [`MAX_SECONDS`] is refused.
const TOO_LARGE: &str = "longer than ten years";

impl DurationError {
    /// Whether the duration was refused for being longer than ten years (it was well formed).
    pub fn is_too_large(&self) -> bool {
        self.reason == TOO_LARGE
    }
}

fn within_limit(seconds: u64) -> Option<Duration> {
    (seconds <= MAX_SECONDS).then(|| Duration::from_secs(seconds))
}

/// A duration as people write it: `15m`, `1h30m`, `45s`.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

/// For clap: a `--ttl`/`--timeout` value.
pub fn clap_duration(input: &str) -> Result<Duration, String> {
    parse_duration(input).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_people_type() {
        for (text, seconds) in [
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("45", 45),
            (" 5m ", 300),
            ("10min", 600),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        for text in [
            "",
            "m",
            "1.5h",
            "15x",
            "-5m",
            "1h30",
            "99999999999999999999s",
        ] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.to_string().contains("use e.g. 90s"), "{error}");
        }
    }

    #[test]
    fn refuses_a_duration_that_could_overflow_the_clock() {
        assert_eq!(
            parse_duration("3650d"),
            Ok(Duration::from_secs(3650 * 86_400))
        );
        for text in ["3651d", "10000000000000000000", "315360001"] {
            let refused = parse_duration(text).expect_err(text);
            assert_eq!(refused.reason, TOO_LARGE, "{text}");
        }
        // Added to now, the longest accepted still fits the clock.
        let longest = parse_duration("3650d").expect("accepted");
        assert!(std::time::Instant::now().checked_add(longest).is_some());
    }

    #[test]
    fn formats_round_trip() {
        for seconds in [0, 45, 90, 900, 5400, 90_061] {
            let d = Duration::from_secs(seconds);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
