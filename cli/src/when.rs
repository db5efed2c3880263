//! Points in time on the command line and in output: RFC 3339 in UTC both ways, plus
//! "this long ago" (`--since 1h`) and Unix seconds (`@1764460800`) on input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::duration::parse_duration;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Parses `--since`/`--until`: RFC 3339 (`2026-11-30T08:00:00Z`), `@<unix seconds>`, or a
/// duration meaning that long before `now_ms`. Returns milliseconds since the epoch.
pub fn parse_instant(input: &str, now_ms: u64) -> Result<u64, String> {
    let text = input.trim();
    if let Some(seconds) = text.strip_prefix('@') {
        return seconds
            .parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .ok_or_else(|| format!("invalid time `{input}`: expected @<unix seconds>"));
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        let ms = at.unix_timestamp_nanos() / 1_000_000;
        return u64::try_from(ms).map_err(|_| format!("time `{input}` is before 1970"));
    }
    match parse_duration(text) {
        Ok(ago) => Ok(now_ms.saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX))),
        Err(error) if error.is_too_large() => Err(format!(
            "time `{input}` is more than ten years ago as a duration: give it as RFC 3339 \
             (like 2016-11-30T08:00:00Z) or @<unix seconds>"
        )),
        Err(_) => Err(format!(
            "invalid time `{input}` (use RFC 3339 like 2026-11-30T08:00:00Z, @<unix seconds>, \
             or a duration ago like 1h)"
        )),
    }
}

/// Unix seconds as RFC 3339 UTC, or `-` for zero (unset).
pub fn format_unix(seconds: i64) -> String {
    if seconds == 0 {
        return "-".to_owned();
    }
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{seconds}"))
}

/// Milliseconds since the epoch as RFC 3339 UTC with exactly three fractional digits, so
/// times line up in columns.
pub fn format_ms(ms: u64) -> String {
    format_nanos(i128::from(ms) * 1_000_000).unwrap_or_else(|| format!("@{}", ms / 1000))
}

/// Nanoseconds since the epoch as RFC 3339 UTC with milliseconds; `None` outside the
/// representable range.
pub fn format_nanos(unix_nanos: i128) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(unix_nanos).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// How long from now until `unix_seconds` (zero if past).
pub fn until_unix(unix_seconds: i64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let target = u64::try_from(unix_seconds).unwrap_or(0);
    Duration::from_secs(target.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_in_all_three_forms() {
        let now = 1_764_460_800_000;
        assert_eq!(parse_instant("@1764460800", now), Ok(1_764_460_800_000));
        assert_eq!(
            parse_instant("2025-11-30T00:00:00Z", now),
            Ok(1_764_460_800_000)
        );
        assert_eq!(parse_instant("1h", now), Ok(now - 3_600_000));
        assert!(parse_instant("yesterday", now).is_err());
    }

    #[test]
    fn a_duration_over_ten_years_ago_says_so() {
        let error = parse_instant("4000d", 1_764_460_800_000).expect_err("over ten years");
        assert!(error.contains("more than ten years ago"), "{error}");
        assert!(error.contains("RFC 3339"), "{error}");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_unix(0), "-");
        assert_eq!(format_unix(1_764_460_800), "2025-11-30T00:00:00Z");
        assert_eq!(format_ms(1_764_460_800_123), "2025-11-30T00:00:00.123Z");
        assert_eq!(format_ms(1_764_460_800_300), "2025-11-30T00:00:00.300Z");
    }
}
