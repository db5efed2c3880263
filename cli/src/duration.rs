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

/// Parses a duration such as `90s`, `15m`, `1h`, `1h30m`, `2d` or `45` (seconds).
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
        let seconds = text.parse().map_err(|_| error("too large"))?;
        return Ok(Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(error("expected a number before each unit"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| error("too large"))?;
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
            .ok_or_else(|| error("too large"))?;
    }
    Ok(Duration::from_secs(total))
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
    fn formats_round_trip() {
        for seconds in [0, 45, 90, 900, 5400, 90_061] {
            let d = Duration::from_secs(seconds);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
