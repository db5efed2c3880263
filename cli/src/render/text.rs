//! Text pieces shared by the tree, the JSON form and tables: escaping untrusted text, colors,
//! times, durations and reason names.

use std::borrow::Cow;
use std::fmt::Write as _;

use loupe_proto::v1::NotCapturedReason;

use super::Style;

/// The colors the renderers use, each with one meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Paint {
    /// Type names and structure: present, but not the point of reading.
    Dim,
    /// Withheld values.
    Red,
    /// Cut values and drops: something is missing, by limit.
    Yellow,
    /// Headings.
    Bold,
}

/// `text` wrapped in the ANSI sequence for `paint` when `style` asks for color.
pub(super) fn paint(style: Style, paint: Paint, text: &str) -> String {
    if !style.color || text.is_empty() {
        return text.to_owned();
    }
    let code = match paint {
        Paint::Dim => "2",
        Paint::Red => "31",
        Paint::Yellow => "33",
        Paint::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Characters that must not reach a terminal raw: controls (newlines would forge tree lines,
/// ESC would start escape sequences) and the bidirectional overrides that make text display in
/// a different order than it is stored.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// Untrusted text (a name, type name, reason) made safe to print unquoted.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A captured string as a double-quoted literal, with `"`, `\` and unsafe characters escaped.
pub(super) fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if needs_escape(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Nanoseconds since the Unix epoch as RFC 3339 UTC with milliseconds,
/// e.g. `2026-11-30T00:01:39.123Z`. Every `i64` lies within the `time` crate's range today; should
/// that change, an unrepresentable time prints as the raw number instead of failing.
pub(super) fn rfc3339_millis(unix_nanos: i64) -> String {
    crate::when::format_nanos(i128::from(unix_nanos))
        .unwrap_or_else(|| format!("{unix_nanos} ns since the epoch"))
}

/// A duration in nanoseconds with a unit a person reads at a glance: `850ns`, `1.2µs`, `3.4ms`.
pub(super) fn duration(ns: u64) -> String {
    // f64 loses precision only far beyond the values printed here, and only in the last digit.
    let ns_f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns_f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.1}ms", ns_f / 1e6)
    } else {
        format!("{:.2}s", ns_f / 1e9)
    }
}

/// `depth`, `size`, … for a `NotCapturedReason`; unknown numbers (a newer agent) stay visible.
pub(super) fn not_captured_reason(reason: i32) -> String {
    match NotCapturedReason::try_from(reason) {
        Ok(known) => known
            .as_str_name()
            .trim_start_matches("NOT_CAPTURED_REASON_")
            .to_ascii_lowercase(),
        Err(_) => format!("reason {reason}"),
    }
}

/// `n thing` / `n things`.
pub(super) fn count(n: u64, singular: &str, plural: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {plural}")
    }
}
