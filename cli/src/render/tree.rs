//! The terminal form of a snapshot: a header, the fields as a tree, and a footer that sums up
//! what is missing (redacted paths, cuts, drops), so that an engineer never mistakes a partial
//! snapshot for a complete one.

use std::fmt::Write as _;

use loupe_proto::v1::value::Kind;
use loupe_proto::v1::{DropCounters, Field, Snapshot, Truncation, Value};
use unicode_width::UnicodeWidthStr as _;

use super::text::{
    Paint, clean, count, duration, not_captured_reason, paint, quote, rfc3339_millis,
};
use super::{MAX_DEPTH, Style};

/// Bytes shown in hex before `…`; the JSON form has all of them.
const BYTES_PREVIEW: usize = 32;

/// A snapshot as a tree for a terminal. Never panics; see the [module docs](super).
///
/// ```text
/// checkout.apply_discount #3  checkout/checkout-1  2026-11-30T00:01:39.123Z
///   thread main (1) · capture cost 1.2µs · at src/checkout.rs:42
///   trace 4bf92f3577b34da6 · span 00f067aa0ba902b7 · request_id="r-7f3a"
/// ├─ cart: Cart
/// │  ├─ items: list [1 of 5]
/// │  │  ├─ [0]: Item
/// │  │  │  └─ sku: "A-1"
/// │  │  └─ … 4 more elements not captured
/// │  └─ card_token: <redacted: name:card_token>
/// └─ user_id: 42
/// redacted:
///   cart.card_token  name:card_token
/// truncated: 1 collection
/// ```
pub fn snapshot_tree(snapshot: &Snapshot, style: Style) -> String {
    let mut out = String::new();
    header(&mut out, snapshot, style);
    if snapshot.fields.is_empty() {
        out.push_str(&paint(style, Paint::Dim, "(no fields)"));
        out.push('\n');
    }
    let mut tree = Tree {
        out: &mut out,
        style,
    };
    let last = snapshot.fields.len().saturating_sub(1);
    for (i, field) in snapshot.fields.iter().enumerate() {
        tree.node("", i == last, &clean(&field.name), field.value.as_ref(), 1);
    }
    footer(&mut out, snapshot, style);
    out
}

fn or_unknown(text: &str) -> std::borrow::Cow<'_, str> {
    if text.is_empty() {
        "?".into()
    } else {
        clean(text)
    }
}

fn header(out: &mut String, s: &Snapshot, style: Style) {
    let point = if s.point.is_empty() {
        "<no point>".into()
    } else {
        clean(&s.point)
    };
    let _ = writeln!(
        out,
        "{} #{}  {}/{}  {}",
        paint(style, Paint::Bold, &point),
        s.sequence,
        or_unknown(&s.service),
        or_unknown(&s.instance),
        rfc3339_millis(s.wall_time_unix_nanos),
    );

    let mut details = Vec::new();
    if let Some(thread) = &s.thread {
        let name = if thread.name.is_empty() {
            "unnamed".into()
        } else {
            clean(&thread.name)
        };
        details.push(format!("thread {name} ({})", thread.id));
    }
    details.push(format!("capture cost {}", duration(s.capture_cost_ns)));
    if let Some(location) = s.location.as_ref().filter(|l| !l.file.is_empty()) {
        details.push(format!("at {}:{}", clean(&location.file), location.line));
    }
    let _ = writeln!(out, "  {}", details.join(" · "));

    if let Some(trace) = &s.trace {
        let mut parts = Vec::new();
        if !trace.trace_id.is_empty() {
            parts.push(format!("trace {}", clean(&trace.trace_id)));
        }
        if !trace.span_id.is_empty() {
            parts.push(format!("span {}", clean(&trace.span_id)));
        }
        for field in &trace.span_fields {
            parts.push(format!(
                "{}={}",
                clean(&field.name),
                inline(field.value.as_ref(), style)
            ));
        }
        if !parts.is_empty() {
            let _ = writeln!(out, "  {}", parts.join(" · "));
        }
    }
}

fn footer(out: &mut String, s: &Snapshot, style: Style) {
    if !s.redacted.is_empty() {
        out.push_str(&paint(style, Paint::Red, "redacted:"));
        out.push('\n');
        let width = s
            .redacted
            .iter()
            .map(|r| clean(&r.path).width())
            .max()
            .unwrap_or(0);
        for redacted in &s.redacted {
            let path = clean(&redacted.path);
            let pad = width.saturating_sub(path.width());
            let _ = writeln!(
                out,
                "  {path}{:pad$}  {}",
                "",
                paint(style, Paint::Red, &clean(&redacted.reason)),
            );
        }
    }
    if let Some(line) = s.truncation.as_ref().and_then(truncation_line) {
        let _ = writeln!(out, "{}", paint(style, Paint::Yellow, &line));
    }
    if let Some(line) = s.drops.as_ref().and_then(drops_line) {
        let _ = writeln!(out, "{}", paint(style, Paint::Yellow, &line));
    }
}

fn truncation_line(t: &Truncation) -> Option<String> {
    let mut parts = Vec::new();
    let counters = [
        (t.strings_truncated, "string", "strings"),
        (t.collections_truncated, "collection", "collections"),
        (t.structs_truncated, "struct", "structs"),
        (
            t.values_not_captured,
            "value not captured",
            "values not captured",
        ),
    ];
    for (n, singular, plural) in counters {
        if n > 0 {
            parts.push(count(u64::from(n), singular, plural));
        }
    }
    if t.snapshot_size_limit_reached {
        parts.push("snapshot size limit reached".to_owned());
    }
    (!parts.is_empty()).then(|| format!("truncated: {}", parts.join(", ")))
}

fn drops_line(d: &DropCounters) -> Option<String> {
    let counters = [
        (d.skipped_rate, "by the rate limit"),
        (d.skipped_cpu_budget, "by the CPU budget"),
        (d.dropped_queue_full, "on a full queue"),
        (d.skipped_reentrant, "re-entrant"),
        (d.lost_at_source, "lost before the agent read them"),
        (d.condition_errors, "on condition errors"),
    ];
    let parts: Vec<String> = counters
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, why)| format!("{n} {why}"))
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "dropped: {} (of {}, {} condition false)",
        parts.join(", "),
        count(d.hits, "hit", "hits"),
        d.condition_false
    ))
}

struct Tree<'a> {
    out: &'a mut String,
    style: Style,
}

/// A composite value's children: label and value.
type Children<'v> = Vec<(String, Option<&'v Value>)>;

impl Tree<'_> {
    fn node(&mut self, prefix: &str, last: bool, label: &str, value: Option<&Value>, depth: usize) {
        let branch = if last { "└─ " } else { "├─ " };
        let child_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
        if depth > MAX_DEPTH {
            let marker = format!("<not shown: nested deeper than {MAX_DEPTH} levels>");
            let _ = writeln!(
                self.out,
                "{prefix}{branch}{label}: {}",
                paint(self.style, Paint::Yellow, &marker)
            );
            return;
        }
        let (summary, children, more) = describe(value, self.style);
        let _ = writeln!(self.out, "{prefix}{branch}{label}: {summary}");
        let last_child = if more.is_some() {
            usize::MAX
        } else {
            children.len().saturating_sub(1)
        };
        for (i, (child_label, child)) in children.iter().enumerate() {
            self.node(
                &child_prefix,
                i == last_child,
                child_label,
                *child,
                depth + 1,
            );
        }
        if let Some(more) = more {
            let _ = writeln!(
                self.out,
                "{child_prefix}└─ {}",
                paint(self.style, Paint::Yellow, &more)
            );
        }
    }
}

fn fields_children(fields: &[Field]) -> Children<'_> {
    fields
        .iter()
        .map(|f| (clean(&f.name).into_owned(), f.value.as_ref()))
        .collect()
}

fn more_marker(shown: usize, total: u64, singular: &str, plural: &str) -> Option<String> {
    let missing = total.saturating_sub(shown as u64);
    let noun = if missing == 1 { singular } else { plural };
    (missing > 0).then(|| format!("… {missing} more {noun} not captured"))
}

fn of_total(style: Style, open: &str, shown: usize, total: u64, close: &str) -> String {
    if total > shown as u64 {
        paint(
            style,
            Paint::Yellow,
            &format!("{open}{shown} of {total}{close}"),
        )
    } else {
        format!("{open}{shown}{close}")
    }
}

/// The line of a value after its label, its children, and a trailing marker for cut elements.
fn describe(value: Option<&Value>, style: Style) -> (String, Children<'_>, Option<String>) {
    let dim = |text: &str| paint(style, Paint::Dim, text);
    let Some(kind) = value.and_then(|v| v.kind.as_ref()) else {
        return (dim("<unknown value kind>"), Vec::new(), None);
    };
    match kind {
        Kind::List(list) => {
            let summary = format!(
                "{} {}",
                dim("list"),
                of_total(style, "[", list.items.len(), list.total_len, "]")
            );
            let children = list
                .items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("[{i}]"), Some(item)))
                .collect();
            let more = more_marker(list.items.len(), list.total_len, "element", "elements");
            (summary, children, more)
        }
        Kind::Map(map) => {
            let summary = format!(
                "{} {}",
                dim("map"),
                of_total(style, "{", map.entries.len(), map.total_len, "}")
            );
            let children = map
                .entries
                .iter()
                .map(|e| {
                    (
                        format!("[{}]", inline(e.key.as_ref(), style)),
                        e.value.as_ref(),
                    )
                })
                .collect();
            let more = more_marker(map.entries.len(), map.total_len, "entry", "entries");
            (summary, children, more)
        }
        Kind::Struct(s) => {
            let name = if s.type_name.is_empty() {
                "struct".into()
            } else {
                clean(&s.type_name)
            };
            let mut summary = dim(&name);
            let total = u64::from(s.total_fields);
            if total > s.fields.len() as u64 {
                summary.push(' ');
                summary.push_str(&of_total(style, "{", s.fields.len(), total, " fields}"));
            } else if s.fields.is_empty() {
                summary.push_str(" {}");
            }
            let more = more_marker(s.fields.len(), total, "field", "fields");
            (summary, fields_children(&s.fields), more)
        }
        Kind::Enum(e) => {
            let mut summary = if e.type_name.is_empty() {
                clean(&e.variant).into_owned()
            } else {
                format!(
                    "{}{}",
                    dim(&format!("{}::", clean(&e.type_name))),
                    clean(&e.variant)
                )
            };
            let total = u64::from(e.total_fields);
            if total > e.fields.len() as u64 {
                summary.push(' ');
                summary.push_str(&of_total(style, "{", e.fields.len(), total, " fields}"));
            }
            let more = more_marker(e.fields.len(), total, "field", "fields");
            (summary, fields_children(&e.fields), more)
        }
        _ => (inline(value, style), Vec::new(), None),
    }
}

/// A value on one line: scalars in full, composites as their type and size. Used for map keys,
/// span fields, and the leaves of the tree.
fn inline(value: Option<&Value>, style: Style) -> String {
    let dim = |text: &str| paint(style, Paint::Dim, text);
    let yellow = |text: &str| paint(style, Paint::Yellow, text);
    let Some(kind) = value.and_then(|v| v.kind.as_ref()) else {
        return dim("<unknown value kind>");
    };
    match kind {
        Kind::Null(_) => dim("null"),
        Kind::Bool(b) => b.to_string(),
        Kind::Int(i) => i.to_string(),
        Kind::Uint(u) => u.to_string(),
        // Debug keeps `.0` on whole numbers, so a float never reads as an integer.
        Kind::Float(f) => format!("{f:?}"),
        Kind::String(s) => {
            let mut text = quote(&s.value);
            if s.truncated {
                let bound = if s.original_len_is_lower_bound {
                    "≥"
                } else {
                    ""
                };
                text.push_str(&yellow(&format!(
                    "… (truncated, {bound}{} bytes)",
                    s.original_len
                )));
            }
            text
        }
        Kind::Bytes(b) => {
            let hex: String = b
                .value
                .iter()
                .take(BYTES_PREVIEW)
                .map(|byte| format!("{byte:02x}"))
                .collect();
            let ellipsis = if b.value.len() > BYTES_PREVIEW {
                "…"
            } else {
                ""
            };
            let mut text = format!(
                "{} {hex}{ellipsis}",
                dim(&format!("bytes [{}]", b.value.len()))
            );
            if b.truncated {
                text.push_str(&yellow(&format!(" (truncated, {} bytes)", b.original_len)));
            }
            text
        }
        Kind::Redacted(r) => {
            let text = if r.reason.is_empty() {
                "<redacted>".to_owned()
            } else {
                format!("<redacted: {}>", clean(&r.reason))
            };
            paint(style, Paint::Red, &text)
        }
        Kind::NotCaptured(n) => {
            let reason = not_captured_reason(n.reason);
            let text = if n.detail.is_empty() {
                format!("<not captured: {reason}>")
            } else {
                format!("<not captured: {reason} ({})>", clean(&n.detail))
            };
            yellow(&text)
        }
        Kind::List(list) => format!(
            "{} {}",
            dim("list"),
            of_total(style, "[", list.items.len(), list.total_len, "]")
        ),
        Kind::Map(map) => format!(
            "{} {}",
            dim("map"),
            of_total(style, "{", map.entries.len(), map.total_len, "}")
        ),
        Kind::Struct(s) => {
            let name = if s.type_name.is_empty() {
                "struct".into()
            } else {
                clean(&s.type_name)
            };
            dim(&format!("{name} {{…}}"))
        }
        Kind::Enum(e) => {
            if e.type_name.is_empty() {
                clean(&e.variant).into_owned()
            } else {
                format!(
                    "{}{}",
                    dim(&format!("{}::", clean(&e.type_name))),
                    clean(&e.variant)
                )
            }
        }
    }
}
