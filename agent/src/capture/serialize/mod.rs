//! The bounded serializer: writes borrowed field values into a snapshot's [`Tape`], applying
//! limits as it goes so that nothing over the limits is ever copied, and redaction either as it
//! goes or later, on the agent's own thread.
//!
//! It never fails and never panics on its own: a user `Serialize` that errors becomes
//! `not_captured{error}` at that value, and a panicking user impl (caught per top-level field by
//! [`SnapshotBuilder::capture_field`]) becomes `not_captured{panic}`.
//!
//! Where redaction runs ([`Redaction`]):
//! - **Deferred**, for the snapshot a hit hands off: the capturing (host) thread only copies
//!   bounded raw values onto the tape — each text with the scan window the scanner needs,
//!   foreign text (panic and error messages) marked unscanned — and the agent's own thread
//!   replays that tape through a redacting builder ([`replay`]) before anything is encoded.
//!   A point hit a few times a second finds the scanner's code, its tables and the name memos
//!   out of the host thread's caches; on the agent's thread they stay warm, and the host's
//!   hit no longer fetches them. The raw tape never leaves the process: it can only be read
//!   by the replay ([`UnredactedTape`]), which judges every node on it again.
//! - **Here**, for what a condition reads (conditions see values after redaction, so that a
//!   condition cannot probe a secret one guess at a time), for dry runs, and in the replay.
//!
//! Every text that passes a redacting builder goes through the one redaction scanner first,
//! through one of three doors: [`SnapshotBuilder::scanned`] for text of any origin (strings,
//! Debug/Display output, bytes by their text, map keys, error and panic messages, span fields),
//! the per-thread memo for `'static` names (field, type and variant names: the name rules for
//! field names, the value patterns for all of them), and the integer check for numbers. A
//! value the agent cut itself is scanned over a window wider than what is kept; a value that
//! arrives already cut (a span field, a panic message) is scanned as cut, so a candidate that
//! runs into its end is masked.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::ser::{self, Serialize};

use crate::capture::name_cache::{
    PlanCursor, secret_in_static_text, sensitive_static_name, static_name_answers,
};
use crate::condition::Projection;
use crate::limits::CaptureLimits;
use crate::text::floor_char_boundary;
use field::FieldValue;

pub mod field;
mod follow;
pub(crate) mod replay;
use crate::redaction::{PairRole, Reason, RedactionRules, ScanState, Work, field_pair_role};
use crate::secret::SECRET_MARKER;
use crate::uncaptured::UNCAPTURED_MARKER;
use crate::value::{FieldName, Node, NotCapturedReason, StrShape, Tape, TapeMark, ValueKind};
pub(crate) use replay::UnredactedTape;

/// Bytes of a foreign message (a panic payload, a `Serialize` error) kept in `not_captured`.
const MESSAGE_BYTES: usize = 200;

/// What a `'static` name (field, type or variant) that holds a secret shows instead.
const REDACTED_NAME: &str = "[redacted]";

/// Approximate wire overhead charged per value against the snapshot's byte budget.
const VALUE_OVERHEAD: usize = 4;

/// Names for positional fields (tuple structs and variants), so they need no allocation.
const POSITION_NAMES: [&str; 32] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31",
];

fn position_name(index: usize) -> FieldName {
    match POSITION_NAMES.get(index) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(index.to_string()),
    }
}

/// What a value's capture restores if the value's `Serialize` fails.
#[derive(Clone, Copy, Default)]
struct ValueStart {
    tape: TapeMark,
    redacted: usize,
    scan: ScanState,
}

/// The node a container opens with; its end and counts are set when it closes.
/// Why a pair's value is withheld when the name beside it was cut before it could be judged.
const CUT_NAME_REASON: &str = "name:cut-before-judged";

#[derive(Clone, Copy)]
enum Placeholder {
    /// `pair`: declared two elements long (see [`Node::List`]).
    List {
        pair: bool,
    },
    Map,
    /// A struct (no variant) or an enum variant with a payload.
    Fields {
        type_name: &'static str,
        variant: Option<&'static str>,
    },
}

impl Placeholder {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn push(self, tape: &mut Tape) -> u32 {
        match self {
            Placeholder::List { pair } => tape.push(Node::List {
                end: 0,
                count: 0,
                pair,
                total_len: 0,
            }),
            Placeholder::Map => tape.push(Node::Map {
                end: 0,
                count: 0,
                total_len: 0,
            }),
            Placeholder::Fields {
                type_name,
                variant: None,
            } => tape.push_struct(type_name, 0),
            Placeholder::Fields {
                type_name,
                variant: Some(variant),
            } => tape.push_enum(type_name, variant, 0),
        }
    }
}

/// Counts of what limits cut in one snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TruncationCounts {
    pub values_not_captured: u32,
    pub strings_truncated: u32,
    pub collections_truncated: u32,
    pub structs_truncated: u32,
    pub snapshot_size_limit_reached: bool,
}

/// A path from the snapshot's fields to a value, kept as a stack while descending and rendered
/// only when something needs to name it.
#[derive(Debug, Clone)]
enum PathSegment {
    Field(FieldName),
    Index(u64),
    Key(String),
}

/// Where a builder's redaction runs; see the module docs.
#[derive(Clone, Copy)]
enum Redaction<'r> {
    /// As values are captured, by these rules.
    Here {
        rules: &'r RedactionRules,
        /// Identifies `rules` for the static-name memo.
        rules_id: u64,
    },
    /// On the agent's thread, by replaying the tape ([`replay`]); this builder copies raw
    /// values, each text with its scan window, and judges nothing but the names the tape
    /// does not keep: a newtype's, or a positional payload's type or variant name, which is
    /// the only label such a value has ([`SnapshotBuilder::label_withholds`]).
    Deferred {
        rules: &'r RedactionRules,
        rules_id: u64,
    },
}

/// Per-snapshot state of one capture: its limits, where its redaction runs, and what was cut
/// or withheld so far.
pub(crate) struct SnapshotBuilder<'r> {
    limits: &'r CaptureLimits,
    redaction: Redaction<'r>,
    bytes_used: usize,
    truncation: TruncationCounts,
    redacted: Vec<(String, Reason)>,
    /// Where the value being captured sits, for the reasons recorded against it; kept only
    /// by a builder whose reasons someone reads (see [`SnapshotBuilder::for_condition`]).
    path: Vec<PathSegment>,
    keeps_path: bool,
    tape: Tape,
    /// Carried from each scanned text to the next (a private key split over strings).
    scan: ScanState,
    /// Bytes the redaction scanner has read for this capture, and at most how many it may
    /// (a condition's capture is paid from the condition's per-hit budget).
    scanned_bytes: u64,
    scan_limit: Option<u64>,
    scan_limit_reached: bool,
}

impl<'r> SnapshotBuilder<'r> {
    /// `tape` is empty, sized from earlier snapshots of the same capture.
    pub fn new(
        limits: &'r CaptureLimits,
        rules: &'r RedactionRules,
        rules_id: u64,
        tape: Tape,
    ) -> SnapshotBuilder<'r> {
        let redaction = Redaction::Here { rules, rules_id };
        SnapshotBuilder::with(limits, redaction, tape, true, None)
    }

    /// A redacting builder for what a condition reads: it redacts as [`SnapshotBuilder::new`]
    /// does, but keeps no path, since its reasons are dropped with it once the condition is
    /// evaluated. So a hit's condition allocates nothing here unless a value is withheld.
    /// Its scanner reads at most `scan_limit` bytes: a text that would take it past them is
    /// not captured, and [`SnapshotBuilder::scan_limit_reached`] says so.
    pub fn for_condition(
        limits: &'r CaptureLimits,
        rules: &'r RedactionRules,
        rules_id: u64,
        tape: Tape,
        scan_limit: u64,
    ) -> SnapshotBuilder<'r> {
        let redaction = Redaction::Here { rules, rules_id };
        SnapshotBuilder::with(limits, redaction, tape, false, Some(scan_limit))
    }

    /// A builder that copies raw values for the agent's thread to redact (see the module
    /// docs): it needs no rules, keeps no path, and records nothing as redacted itself. Its
    /// truncation counts are not used: the replay counts every cut it meets.
    pub fn deferred(
        limits: &'r CaptureLimits,
        rules: &'r RedactionRules,
        rules_id: u64,
        tape: Tape,
    ) -> SnapshotBuilder<'r> {
        let redaction = Redaction::Deferred { rules, rules_id };
        SnapshotBuilder::with(limits, redaction, tape, false, None)
    }

    fn with(
        limits: &'r CaptureLimits,
        redaction: Redaction<'r>,
        tape: Tape,
        keeps_path: bool,
        scan_limit: Option<u64>,
    ) -> SnapshotBuilder<'r> {
        SnapshotBuilder {
            limits,
            redaction,
            bytes_used: 0,
            truncation: TruncationCounts::default(),
            redacted: Vec::new(),
            path: if keeps_path {
                Vec::with_capacity(8)
            } else {
                Vec::new()
            },
            keeps_path,
            tape,
            scan: ScanState::default(),
            scanned_bytes: 0,
            scan_limit,
            scan_limit_reached: false,
        }
    }

    pub fn tape(&self) -> &Tape {
        &self.tape
    }

    /// Bytes the redaction scanner has read for this capture.
    pub fn scanned_bytes(&self) -> u64 {
        self.scanned_bytes
    }

    /// Whether a text went uncaptured because scanning it would have passed the scan limit.
    pub fn scan_limit_reached(&self) -> bool {
        self.scan_limit_reached
    }

    /// Whether the scanner may read `text`, by the work it is expected to do
    /// ([`Work::expected`]); once one text was refused, no other is read.
    fn may_scan(&self, text: &[u8]) -> bool {
        match self.scan_limit {
            None => true,
            Some(limit) => {
                !self.scan_limit_reached
                    && self.scanned_bytes.saturating_add(Work::expected(text)) <= limit
            }
        }
    }

    /// Follows the private keys in a member or map entry's `value`, which a condition's
    /// capture leaves out, at `depth` (see [`follow`]): a redacting builder's texts after it
    /// are then masked as the snapshot's are. Out of line, but generic, so that a member that
    /// holds no text (most left out are numbers) costs a call and nothing more.
    #[cold]
    #[inline(never)]
    fn follow_member<T: Serialize + ?Sized>(&mut self, value: &T, depth: u32) {
        self.follow_left_out(|follow| value.serialize(follow::KeyFollower { follow, depth }));
    }

    /// Follows the private keys in a point field a condition does not read.
    fn follow_field(&mut self, value: FieldValue<'_>) {
        self.follow_left_out(|follow| match value {
            FieldValue::Serde(value) => value.follow_keys(follow::KeyFollower { follow, depth: 0 }),
            FieldValue::Debug(value) => follow.formatted(format_args!("{value:?}")),
            FieldValue::Display(value) => follow.formatted(format_args!("{value}")),
        });
    }

    /// Runs `walk` over this builder's scan state and budget; a walk that would pass the scan
    /// budget stops the capture there, one whose value failed leaves the state as before.
    #[inline]
    fn follow_left_out(
        &mut self,
        walk: impl FnOnce(&mut follow::Follow<'_>) -> Result<(), follow::Stop>,
    ) {
        let Redaction::Here { rules, .. } = self.redaction else {
            return;
        };
        let before = self.scan;
        let mut follow = follow::Follow {
            rules,
            limits: self.limits,
            scan: &mut self.scan,
            scanned_bytes: &mut self.scanned_bytes,
            scan_limit: self.scan_limit,
        };
        match walk(&mut follow) {
            Ok(()) => {}
            Err(follow::Stop::Failed) => self.scan = before,
            Err(follow::Stop::Budget) => {
                // Nothing is written where the walk stopped (it is no value of the tape);
                // what comes after is refused, and the hit is over budget.
                self.scan_limit_reached = true;
                self.truncation.snapshot_size_limit_reached = true;
            }
        }
    }

    /// Stops the capture where the scan limit is reached: nothing after it is captured
    /// either (as after the byte limit), since the condition will not be evaluated.
    #[cold]
    #[inline(never)]
    fn refuse_to_scan(&mut self) {
        self.scan_limit_reached = true;
        self.truncation.snapshot_size_limit_reached = true;
        self.not_captured(
            NotCapturedReason::Size,
            "the condition's cost budget is spent",
        );
    }

    pub fn into_parts(self) -> (Tape, TruncationCounts, Vec<(String, Reason)>) {
        (self.tape, self.truncation, self.redacted)
    }

    /// Captures one top-level field and returns the index of its value in the tape. A
    /// redacting builder checks the name against the redaction keywords first, so a sensitive
    /// field is never formatted at all; a deferred one leaves that to the replay.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn capture_field(&mut self, name: &'static str, value: FieldValue<'_>) -> u32 {
        self.capture_field_projected(name, value, None)
    }

    /// Captures only the parts of a field that `projection` names (for a condition that reads
    /// `order.total_cents`, just that), skipping the rest of the value without serializing
    /// it. `None` captures it whole.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn capture_field_projected(
        &mut self,
        name: &'static str,
        value: FieldValue<'_>,
        projection: Option<&'r Projection>,
    ) -> u32 {
        let projection = projection.filter(|p| !p.is_whole());
        let depth_before = self.path.len();
        self.enter(PathSegment::Field(Cow::Borrowed(name)));
        let mark = self.tape.mark();
        let redacted_before = self.redacted.len();
        let scan_before = self.scan;
        let root = self.tape.next_index();
        if let Some(reason) = self.sensitive_name(&Cow::Borrowed(name)) {
            self.redact(reason);
        } else if let Err(payload) =
            catch_unwind(AssertUnwindSafe(|| self.capture_value(value, projection)))
        {
            // Whatever the value wrote before it panicked is discarded with it.
            self.tape.rollback(mark);
            self.redacted.truncate(redacted_before);
            self.scan = scan_before;
            let (message, complete) = panic_message(&payload);
            self.not_captured_foreign(NotCapturedReason::Panic, "panicked: ", &message, complete);
        }
        self.path.truncate(depth_before);
        root
    }

    /// A span field's text under `ctx.<name>`, `complete == false` when the context cut it.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn context_string(
        &mut self,
        name: &'static str,
        text: &str,
        complete: bool,
        original_len: u64,
    ) -> u32 {
        self.path.clear();
        self.enter(PathSegment::Field(Cow::Borrowed("ctx")));
        self.enter(PathSegment::Field(Cow::Borrowed(name)));
        let root = self.tape.next_index();
        match self.sensitive_name(&Cow::Borrowed(name)) {
            Some(reason) => self.redact(reason),
            None => self.string_value(text, complete, original_len, !complete),
        }
        self.path.clear();
        root
    }

    /// Enters `segment` of the path reasons are recorded at, where a path is kept.
    #[inline]
    fn enter(&mut self, segment: PathSegment) {
        if self.keeps_path {
            self.path.push(segment);
        }
    }

    /// [`SnapshotBuilder::enter`] for a struct field, whose name is cloned only where a path
    /// is kept: not on a host's thread.
    #[inline]
    fn enter_field(&mut self, name: &FieldName) {
        if self.keeps_path {
            self.path.push(PathSegment::Field(name.clone()));
        }
    }

    /// Leaves the segment [`SnapshotBuilder::enter`] entered.
    #[inline]
    fn leave(&mut self) {
        self.path.pop();
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn capture_value(&mut self, value: FieldValue<'_>, projection: Option<&'r Projection>) {
        match value {
            FieldValue::Serde(value) => value.capture_with(ValueSerializer {
                builder: self,
                depth: 0,
                projection,
            }),
            FieldValue::Debug(value) => self.formatted(format_args!("{value:?}")),
            FieldValue::Display(value) => self.formatted(format_args!("{value}")),
        }
    }

    /// Formats into a bounded buffer: formatting stops as soon as `max_string_bytes +
    /// TEXT_SCAN_MARGIN` bytes are kept, however large the value's output would be, and the length
    /// reported is then a lower bound. Formatting on to learn the whole length (up to 1 MiB)
    /// cost the host thread 570 µs a hit for one `Debug` field of 20,000 integers, 56 µs now;
    /// the length of a value's Debug text is not worth that. An impl that unwraps its writes
    /// instead of propagating the error (against `fmt`'s contract) panics here sooner than
    /// before; the panic is caught and the field is `not_captured{panic}`.
    ///
    /// The text is formatted into this thread's [`FORMAT_BUFFER`] ([`with_formatted`]), so a
    /// steady capture's hit allocates nothing for it.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn formatted(&mut self, args: fmt::Arguments<'_>) {
        with_formatted(args, self.limits.text_window(), |writer| {
            let complete = writer.seen == writer.text.len();
            self.string_value(&writer.text, complete, writer.seen as u64, writer.capped);
        });
    }

    /// Whether this builder judges values as it goes (a deferred one leaves it to the replay).
    #[inline]
    fn judges_here(&self) -> bool {
        matches!(self.redaction, Redaction::Here { .. })
    }

    /// Whether a field name is withheld; static names are answered from a per-thread memo.
    /// A deferred builder withholds nothing itself: the replay asks again.
    #[inline]
    fn sensitive_name(&self, name: &FieldName) -> Option<Reason> {
        match self.redaction {
            Redaction::Here { rules, rules_id } => sensitive_name_here(rules, rules_id, name),
            Redaction::Deferred { .. } => None,
        }
    }
    /// Whether a value whose only label is a type or variant name is withheld by that name,
    /// as a field of that name would be: a newtype's (`ApiKey(String)`, whose name serde
    /// hands over and no tape keeps) and a positional payload's (`Credential::Password(…)`,
    /// `Basic(user, password)`). Values with named fields are judged by those names instead.
    /// Every builder judges this as it goes, the deferred one too: it costs a hit one lookup
    /// in the thread's memo of static names, and only for such values.
    #[inline]
    fn label_withholds(&self, name: &'static str) -> Option<Reason> {
        let (Redaction::Here { rules, rules_id } | Redaction::Deferred { rules, rules_id }) =
            self.redaction;
        sensitive_name_here(rules, rules_id, &Cow::Borrowed(name))
    }

    /// The reason the `value` field of a name/value pair (or the second of a pair) is
    /// withheld, when the `name` or `key` field before it (or the first) holds, at node `at`, a
    /// string naming a secret (`EnvVar { name: "DB_PASSWORD", value }`); see
    /// [`RedactionRules::sensitive_given_name`]. A name that was cut cannot be judged (a
    /// capture's string limit of 16 would show `MY_APP_DATABASE_`), so its value is withheld.
    /// A deferred builder leaves this to the replay.
    #[inline(never)]
    fn name_given_at(&self, at: u32) -> Option<Reason> {
        let Redaction::Here { rules, .. } = self.redaction else {
            return None;
        };
        match self.tape.get(at)?.kind() {
            ValueKind::Str { span, .. } if span.truncated => {
                Some(Reason::from_static(CUT_NAME_REASON))
            }
            ValueKind::Str { text, .. } => rules.sensitive_given_name(text),
            _ => None,
        }
    }

    /// A pair's name captured at `name_at` after the value it names, captured at `value_at`
    /// (see [`NamedPair`]): when the name names a secret, the value is withheld now, in place,
    /// with the reason recorded at the value's path.
    #[cold]
    #[inline(never)]
    pub(super) fn name_after_value(&mut self, value_at: u32, name_at: u32) {
        let Some(reason) = self.name_given_at(name_at) else {
            return;
        };
        if let Redaction::Here { .. } = self.redaction {
            // Just before a value: its field's name in a struct, its key in a map.
            let label = value_at
                .checked_sub(1)
                .and_then(|at| self.tape.get(at))
                .and_then(|label| match label.as_name() {
                    Some(name) => Some(PathSegment::Field(name)),
                    None => label.as_str().map(|key| PathSegment::Key(key.to_owned())),
                });
            let entered = label.is_some();
            if let Some(segment) = label {
                self.path.push(segment);
            }
            self.redacted.push((self.render_path(), reason.clone()));
            if entered {
                self.path.pop();
            }
        }
        self.tape.withhold_in_place(value_at, reason);
    }

    /// `text` as it may leave the process: masked where the scanner finds secrets, with each
    /// reason recorded at the current path. `complete == false` says `text` is only a prefix.
    /// A deferred builder leaves `text` as it is; the replay scans it.
    fn scanned<'t>(&mut self, text: &'t str, complete: bool) -> Cow<'t, str> {
        let Redaction::Here { rules, .. } = self.redaction else {
            return Cow::Borrowed(text);
        };
        let mut work = match self.scan_limit {
            None => Work::unlimited(),
            Some(limit) => Work::within(
                limit
                    .saturating_sub(self.scanned_bytes)
                    .saturating_sub(text.len() as u64),
            ),
        };
        let masked = rules.mask_in_sequence_counting(text, complete, &mut self.scan, &mut work);
        self.scanned_bytes = self
            .scanned_bytes
            .saturating_add(text.len() as u64)
            .saturating_add(work.done());
        if work.spent() {
            // The text was withheld whole, not judged: the condition is not evaluated.
            self.scan_limit_reached = true;
        }
        match masked {
            None => Cow::Borrowed(text),
            Some(masked) => {
                let path = self.render_path();
                for reason in masked.reasons {
                    self.redacted.push((path.clone(), reason));
                }
                Cow::Owned(masked.text)
            }
        }
    }

    /// A `'static` name (type, variant or field name) as it may leave the process: itself, or
    /// [`REDACTED_NAME`] when it holds a secret by the value patterns. Answered from the
    /// per-thread memo.
    #[inline]
    fn static_name(&mut self, name: &'static str) -> &'static str {
        match self.redaction {
            Redaction::Here { rules, rules_id } => self.static_name_here(rules, rules_id, name),
            Redaction::Deferred { .. } => name,
        }
    }

    #[inline(never)]
    fn static_name_here(
        &mut self,
        rules: &RedactionRules,
        rules_id: u64,
        name: &'static str,
    ) -> &'static str {
        match secret_in_static_text(rules_id, rules, name) {
            None => name,
            Some(reason) => {
                self.redacted.push((self.render_path(), reason));
                REDACTED_NAME
            }
        }
    }

    /// [`SnapshotBuilder::field_name`] for field `index` of a struct: answered by the struct's
    /// plan when it knows the name to be plain, and taught to the plan otherwise; and whether
    /// the struct's name/value `pair` withholds it.
    #[inline(always)]
    fn planned_field_name(
        &mut self,
        name: FieldName,
        plan: &mut PlanCursor,
        index: u32,
        pair: &mut NamedPair,
    ) -> (FieldName, Option<Reason>) {
        match self.redaction {
            Redaction::Here { rules, rules_id } => {
                self.planned_field_name_here(rules, rules_id, name, plan, index, pair)
            }
            Redaction::Deferred { .. } => (name, None),
        }
    }

    #[inline(never)]
    fn planned_field_name_here(
        &mut self,
        rules: &RedactionRules,
        rules_id: u64,
        name: FieldName,
        plan: &mut PlanCursor,
        index: u32,
        pair: &mut NamedPair,
    ) -> (FieldName, Option<Reason>) {
        let (name, sensitive) = match name {
            Cow::Borrowed(name) if plan.is_plain(index, name) => (Cow::Borrowed(name), None),
            Cow::Borrowed(name) => {
                let answers = static_name_answers(rules_id, rules, name);
                plan.learn(index, name, &answers);
                self.field_name_answered(name, answers)
            }
            Cow::Owned(_) => {
                plan.stop_learning();
                self.field_name(name)
            }
        };
        let sensitive = pair.judge(self, &name, sensitive);
        (name, sensitive)
    }

    /// A struct field name as it may leave the process (see [`SnapshotBuilder::static_name`]),
    /// and whether it withholds its value: both answered by one memo lookup for static names.
    fn field_name(&mut self, name: FieldName) -> (FieldName, Option<Reason>) {
        let Redaction::Here { rules, rules_id } = self.redaction else {
            return (name, None);
        };
        match name {
            Cow::Borrowed(name) => {
                let answers = static_name_answers(rules_id, rules, name);
                self.field_name_answered(name, answers)
            }
            Cow::Owned(name) => {
                let withholds_value = rules.sensitive_name(&name);
                let shown = match self.scanned(&name, true) {
                    Cow::Borrowed(_) => name,
                    Cow::Owned(masked) => masked,
                };
                (Cow::Owned(shown), withholds_value)
            }
        }
    }

    /// A static field name as shown, given its memo answers; records a name that holds a
    /// secret as redacted.
    fn field_name_answered(
        &mut self,
        name: &'static str,
        (withholds_value, holds_secret): (Option<Reason>, Option<Reason>),
    ) -> (FieldName, Option<Reason>) {
        let shown = match holds_secret {
            None => name,
            Some(reason) => {
                self.redacted.push((self.render_path(), reason));
                REDACTED_NAME
            }
        };
        (Cow::Borrowed(shown), withholds_value)
    }

    /// The plan of a struct type (or struct variant) on this thread, and the struct's
    /// placeholder node with the type and variant names as they may leave.
    #[inline]
    fn struct_placeholder(
        &mut self,
        type_name: &'static str,
        variant: Option<&'static str>,
    ) -> (PlanCursor, Placeholder) {
        match self.redaction {
            Redaction::Here { rules_id, .. } => {
                self.struct_placeholder_here(rules_id, type_name, variant)
            }
            Redaction::Deferred { .. } => (
                PlanCursor::unplanned(),
                Placeholder::Fields { type_name, variant },
            ),
        }
    }

    #[inline(never)]
    fn struct_placeholder_here(
        &mut self,
        rules_id: u64,
        type_name: &'static str,
        variant: Option<&'static str>,
    ) -> (PlanCursor, Placeholder) {
        let mut plan = PlanCursor::open(rules_id, type_name, variant);
        let (type_name, variant) = if plan.names_plain() {
            (type_name, variant)
        } else {
            let shown_type = self.static_name(type_name);
            let shown_variant = variant.map(|variant| self.static_name(variant));
            let unchanged = |shown: &str, name: &str| std::ptr::eq(shown, name);
            plan.learn_names(
                unchanged(shown_type, type_name)
                    && shown_variant
                        .zip(variant)
                        .is_none_or(|(shown, name)| unchanged(shown, name)),
            );
            (shown_type, shown_variant)
        };
        (plan, Placeholder::Fields { type_name, variant })
    }

    /// Records that the value at the current path was withheld (a deferred builder leaves the
    /// record to the replay, which records every withheld value it meets).
    fn redact(&mut self, reason: Reason) {
        if let Redaction::Here { .. } = self.redaction {
            self.redacted.push((self.render_path(), reason.clone()));
        }
        // A withheld value is not scanned, but it is a value: it closes a label left open
        // before it. A condition's key follower walks such a value's text, and closes the
        // label there too unless the text opens one, so what the condition reads after it is
        // never masked less than in the snapshot.
        self.scan.close_label();
        self.tape.push_redacted(reason);
    }

    /// Whether an integer of this magnitude is withheld as a card number (never by a deferred
    /// builder: the replay asks).
    #[inline]
    fn card_number(&self, magnitude: u64) -> Option<Reason> {
        match self.redaction {
            Redaction::Here { rules, .. } => card_number_here(rules, magnitude),
            Redaction::Deferred { .. } => None,
        }
    }

    /// Where a value starts, to undo it if its `Serialize` fails. Inline: it runs for every
    /// field and element a hit captures, from three callers that are not generic.
    #[inline]
    fn value_start(&self) -> ValueStart {
        ValueStart {
            tape: self.tape.mark(),
            redacted: self.redacted.len(),
            scan: self.scan,
        }
    }

    /// Replaces what a failed `Serialize` wrote since `start` by `not_captured{error}`.
    #[cold]
    #[inline(never)]
    fn value_failed(&mut self, start: ValueStart, err: &SerializeError) {
        self.tape.rollback(start.tape);
        self.redacted.truncate(start.redacted);
        self.scan = start.scan;
        self.not_captured_foreign(NotCapturedReason::Error, "", &err.message, err.complete);
    }

    /// Charges `bytes` against the snapshot's byte budget; false when it is spent.
    #[inline]
    fn charge(&mut self, bytes: usize) -> bool {
        if self.truncation.snapshot_size_limit_reached {
            return false;
        }
        self.bytes_used += bytes + VALUE_OVERHEAD;
        if self.bytes_used > self.limits.max_snapshot_bytes as usize {
            self.truncation.snapshot_size_limit_reached = true;
            return false;
        }
        true
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn size_exhausted(&mut self) {
        self.truncation.values_not_captured += 1;
        self.tape.push(Node::NotCaptured {
            reason: NotCapturedReason::Size,
            detail: "snapshot byte limit reached",
        });
    }

    /// A unit struct (no variant) or unit variant, charged `bytes`.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn unit(&mut self, bytes: usize, type_name: &'static str, variant: Option<&'static str>) {
        if !self.charge(bytes) {
            return self.size_exhausted();
        }
        let end = self.tape.next_index() + 1;
        match variant {
            None => self.tape.push_struct(type_name, end),
            Some(variant) => self.tape.push_enum(type_name, variant, end),
        };
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn not_captured(&mut self, reason: NotCapturedReason, detail: &'static str) {
        self.truncation.values_not_captured += 1;
        self.tape.push(Node::NotCaptured { reason, detail });
    }

    /// A `not_captured` marker whose detail quotes text the agent did not write (a panic
    /// payload, a `Serialize` error message): the text is scanned like any value first.
    /// A deferred builder keeps the text unscanned, marked so that the replay scans it.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn not_captured_foreign(
        &mut self,
        reason: NotCapturedReason,
        prefix: &str,
        message: &str,
        complete: bool,
    ) {
        if let Redaction::Deferred { .. } = self.redaction {
            self.tape.push_unscanned(reason, prefix, message, complete);
            return;
        }
        let detail = format!("{prefix}{}", self.scanned(message, complete));
        self.truncation.values_not_captured += 1;
        self.tape.push_not_captured(reason, Cow::Owned(detail));
    }

    /// A string after pattern redaction and truncation. `text` is the part of the original that
    /// the agent holds; `complete` says whether that is all of it.
    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn string_value(&mut self, text: &str, complete: bool, original_len: u64, lower_bound: bool) {
        let max = self.limits.max_string_bytes as usize;
        // Scan a window larger than what is kept, so a secret that starts in the kept part is
        // recognised whole; if the window itself is cut, the scan treats a secret running into
        // its end as a secret.
        let window_len = floor_char_boundary(text, self.limits.text_window());
        let window = &text[..window_len];
        let window_complete = complete && window_len == text.len();
        if let Redaction::Deferred { .. } = self.redaction {
            return self.unscanned_string(window, window_complete, original_len, lower_bound);
        }
        if !self.may_scan(window.as_bytes()) {
            return self.refuse_to_scan();
        }
        let masked = self.scanned(window, window_complete);
        let shown: &str = &masked;
        let cut = floor_char_boundary(shown, max);
        let truncated = cut < shown.len() || !window_complete;
        if !self.charge(cut) {
            return self.size_exhausted();
        }
        if truncated {
            self.truncation.strings_truncated += 1;
        }
        self.tape.push_str(
            &shown[..cut],
            StrShape {
                truncated,
                original_len,
                original_len_is_lower_bound: lower_bound,
            },
        );
    }

    /// A deferred builder's string: the whole scan window is kept for the replay, which scans
    /// and cuts it as [`SnapshotBuilder::string_value`] does; `truncated` says the window is not
    /// the whole text. The byte budget is charged what the string keeps unmasked; the replay
    /// charges again what it keeps masked.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn unscanned_string(
        &mut self,
        window: &str,
        window_complete: bool,
        original_len: u64,
        lower_bound: bool,
    ) {
        let kept = window.len().min(self.limits.max_string_bytes as usize);
        if !self.charge(kept) {
            return self.size_exhausted();
        }
        self.tape.push_str(
            window,
            StrShape {
                truncated: !window_complete,
                original_len,
                original_len_is_lower_bound: lower_bound,
            },
        );
    }

    /// Bytes of which the agent holds `held`, a prefix of `original_len` bytes (all of them
    /// when captured from the value, the scan window when replayed).
    ///
    /// Bytes are scanned by their text: invalid UTF-8 becomes U+FFFD, which no secret
    /// contains, so every ASCII run is scanned as a word of its own. A hit withholds the whole
    /// value, since masking inside arbitrary bytes has no meaning. Like strings, a window wider
    /// than what is kept is scanned; a deferred builder keeps that window for the replay.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn bytes_value(&mut self, held: &[u8], original_len: u64) {
        let max = self.limits.max_string_bytes as usize;
        let window = &held[..held.len().min(self.limits.text_window())];
        let window_complete = window.len() as u64 == original_len;
        let kept = match self.redaction {
            Redaction::Here { .. } => {
                if !self.may_scan(window) {
                    return self.refuse_to_scan();
                }
                if let Some(reason) = self.secret_in_bytes(window, window_complete) {
                    return self.redact(reason);
                }
                window.len().min(max)
            }
            Redaction::Deferred { .. } => window.len(),
        };
        if !self.charge(kept.min(max)) {
            return self.size_exhausted();
        }
        let truncated = (kept as u64) < original_len;
        if truncated {
            self.truncation.strings_truncated += 1;
        }
        let (start, len) = self.tape.push_bytes(&window[..kept]);
        self.tape.push(Node::Bytes {
            start,
            len,
            truncated,
            original_len,
        });
    }

    /// The first reason the scanner finds in `bytes` read as text, without recording it.
    fn secret_in_bytes(&mut self, bytes: &[u8], complete: bool) -> Option<Reason> {
        let text = String::from_utf8_lossy(bytes);
        let reasons_before = self.redacted.len();
        let Cow::Owned(_) = self.scanned(&text, complete) else {
            return None;
        };
        // The reasons were recorded by the scan; the value itself becomes one marker.
        let reason = self.redacted.get(reasons_before).map(|(_, r)| r.clone());
        self.redacted.truncate(reasons_before);
        reason
    }

    fn render_path(&self) -> String {
        let mut out = String::with_capacity(64);
        for segment in &self.path {
            match segment {
                PathSegment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                PathSegment::Index(index) => {
                    let _ = write!(out, "[{index}]");
                }
                PathSegment::Key(key) => {
                    let _ = write!(out, "[{key:?}]");
                }
            }
        }
        out
    }
}

// The redacting halves of the builder's steps are out of line (`*_here`): a hit's deferred
// capture never runs them, and inlined they would sit between the steps it runs, spreading its
// code over more cache lines.
#[inline(never)]
fn sensitive_name_here(rules: &RedactionRules, rules_id: u64, name: &FieldName) -> Option<Reason> {
    match name {
        Cow::Borrowed(name) => sensitive_static_name(rules_id, rules, name),
        Cow::Owned(name) => rules.sensitive_name(name),
    }
}

#[inline(never)]
fn card_number_here(rules: &RedactionRules, magnitude: u64) -> Option<Reason> {
    rules.sensitive_u64(magnitude)
}

/// The first [`MESSAGE_BYTES`] of a panic's message, and whether that is all of it.
fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> (String, bool) {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "panic with a non-string payload"
    };
    let cut = floor_char_boundary(message, MESSAGE_BYTES);
    (message[..cut].to_owned(), cut == message.len())
}

/// Formats `args` into this thread's [`FORMAT_BUFFER`], stopping once `keep` bytes are kept,
/// and gives `use_text` the writer (the text, how much the value wrote, whether it was cut).
/// Taken, not borrowed: a value being formatted may capture (a nested hit, skipped) or panic,
/// and either leaves the thread an empty buffer rather than a borrowed one.
#[inline]
fn with_formatted<R>(
    args: fmt::Arguments<'_>,
    keep: usize,
    use_text: impl FnOnce(&BoundedWriter) -> R,
) -> R {
    let buffer = FORMAT_BUFFER.try_with(Cell::take).unwrap_or_default();
    let mut writer = BoundedWriter::new(buffer, keep);
    // An error here means the cap was reached (or the impl failed); what was written stands.
    let _ = writer.write_fmt(args);
    let answer = use_text(&writer);
    let mut buffer = writer.text;
    if buffer.capacity() <= FORMAT_BUFFER_KEPT {
        buffer.clear();
        let _ = FORMAT_BUFFER.try_with(|kept| kept.set(buffer));
    }
    answer
}

thread_local! {
    /// The text of the last Debug or Display value this thread formatted for a capture,
    /// cleared, kept for the next: grown from nothing, a small value's text took two or three
    /// allocations a hit, each a trip through the allocator's slow path on a cold hit.
    static FORMAT_BUFFER: Cell<String> = const { Cell::new(String::new()) };
}

/// Largest [`FORMAT_BUFFER`] a thread keeps: the kept window at the agent's largest string
/// limit, with the string's growth.
const FORMAT_BUFFER_KEPT: usize = 16 * 1024;

/// A `fmt::Write` that keeps a prefix of what is written and stops the formatter once the
/// prefix is full.
struct BoundedWriter {
    text: String,
    keep: usize,
    /// Bytes the formatter wrote, kept or not.
    seen: usize,
    /// A piece was cut: nothing more may be appended (an impl that ignores the error and
    /// writes on would otherwise make `text` stop being a prefix of its output).
    capped: bool,
}

impl BoundedWriter {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn new(text: String, keep: usize) -> BoundedWriter {
        BoundedWriter {
            text,
            keep,
            seen: 0,
            capped: false,
        }
    }
}

impl fmt::Write for BoundedWriter {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        self.seen += piece.len();
        if self.capped {
            return Err(fmt::Error);
        }
        let room = self.keep - self.text.len();
        if piece.len() <= room {
            self.text.push_str(piece);
            return Ok(());
        }
        self.text
            .push_str(&piece[..floor_char_boundary(piece, room)]);
        // The error stops the formatting impl: nothing more would be kept.
        self.capped = true;
        Err(fmt::Error)
    }
}

/// The error a user `Serialize` impl may raise; the serializer itself never raises one. It
/// keeps the first [`MESSAGE_BYTES`] of the message, which is scanned before it is shown.
#[derive(Debug)]
pub struct SerializeError {
    message: String,
    complete: bool,
}

impl fmt::Display for SerializeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SerializeError {}

impl ser::Error for SerializeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let mut writer = BoundedWriter::new(String::new(), MESSAGE_BYTES);
        let _ = write!(writer, "{msg}");
        SerializeError {
            complete: writer.seen == writer.text.len(),
            message: writer.text,
        }
    }
}

/// Serializes one value (at one depth) into the tape.
pub struct ValueSerializer<'b, 'r> {
    builder: &'b mut SnapshotBuilder<'r>,
    depth: u32,
    /// The parts of this value to capture; `None` for all of it.
    projection: Option<&'r Projection>,
}

type Written = Result<(), SerializeError>;

impl<'b, 'r> ValueSerializer<'b, 'r> {
    /// Runs `value`'s `Serialize`; if it fails, whatever it wrote is replaced by
    /// `not_captured{error}`.
    ///
    /// Generic code is instantiated once per captured type, and on a cold hit every copy is a
    /// separate run of instruction-cache misses; so the generic part is only the call into the
    /// value's `Serialize`, and the bookkeeping around it is shared, out of line.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn capture<T: Serialize + ?Sized>(self, value: &T) {
        let ValueSerializer {
            builder,
            depth,
            projection,
        } = self;
        let before = builder.value_start();
        let serializer = ValueSerializer {
            builder: &mut *builder,
            depth,
            projection,
        };
        if let Err(err) = value.serialize(serializer) {
            builder.value_failed(before, &err);
        }
    }

    /// A serializer for an element, captured whole.
    #[inline]
    fn child(&mut self) -> ValueSerializer<'_, 'r> {
        self.child_projected(None)
    }

    #[inline]
    fn child_projected(&mut self, projection: Option<&'r Projection>) -> ValueSerializer<'_, 'r> {
        ValueSerializer {
            builder: self.builder,
            depth: self.depth + 1,
            projection: projection.filter(|p| !p.is_whole()),
        }
    }

    /// Whether member `name`, which the condition does not read, must still be captured: it
    /// is a name/value pair's name and the condition reads the pair's value (see
    /// [`NamedPair`]).
    #[cold]
    fn pair_name_decides(&self, name: &str) -> bool {
        self.builder.judges_here()
            && field_pair_role(name) == Some(PairRole::Name)
            && self.projection.is_some_and(|projection| {
                projection
                    .member_names()
                    .any(|member| field_pair_role(member) == Some(PairRole::Value))
            })
    }

    /// What to capture of the member `name`: `None` to skip it, `Some(None)` for all of it.
    #[inline]
    fn member_projection(&self, name: &str) -> Option<Option<&'r Projection>> {
        match self.projection {
            None => Some(None),
            Some(projection) => match projection.member(name) {
                Some(member) => Some(Some(member)),
                // Iterating a struct or map visits every key.
                None => projection.reads_every_entry().then_some(None),
            },
        }
    }

    #[inline]
    fn scalar(self, bytes: usize, node: Node) -> Written {
        if self.builder.charge(bytes) {
            self.builder.tape.push(node);
        } else {
            self.builder.size_exhausted();
        }
        Ok(())
    }

    /// An integer, unless it looks like a card number.
    #[inline]
    fn integer(self, sensitive: Option<Reason>, node: Node) -> Written {
        match sensitive {
            Some(reason) => {
                self.builder.redact(reason);
                Ok(())
            }
            None => self.scalar(8, node),
        }
    }

    /// An integer too wide for 64 bits, as its decimal text, unless it looks like a card number.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn wide_integer(self, sensitive: Option<Reason>, value: impl fmt::Display) -> Written {
        match sensitive {
            Some(reason) => {
                self.builder.redact(reason);
                Ok(())
            }
            None => ser::Serializer::serialize_str(self, &value.to_string()),
        }
    }

    /// Opens a container: writes its placeholder node and returns its index, or writes the
    /// marker that stands in for it (depth or size) and returns `None`.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn open(&mut self, what: &'static str, placeholder: Placeholder) -> Option<u32> {
        if self.depth >= self.builder.limits.max_depth {
            self.builder.not_captured(NotCapturedReason::Depth, what);
            return None;
        }
        if !self.builder.charge(0) {
            self.builder.size_exhausted();
            return None;
        }
        Some(placeholder.push(&mut self.builder.tape))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn seq(mut self, what: &'static str, len: Option<usize>) -> SeqBuilder<'b, 'r> {
        let pair = len == Some(2);
        let node = self.open(what, Placeholder::List { pair });
        SeqBuilder {
            serializer: self,
            node,
            count: 0,
            total: 0,
            started: ValueStart::default(),
            pair_name_at: pair.then_some(None),
        }
    }

    /// A positional payload withheld by its type or variant name: the withheld marker in its
    /// place, and a builder that takes none of its fields.
    #[cold]
    fn withheld_fields(self, reason: Reason) -> FieldsBuilder<'b, 'r> {
        self.builder.redact(reason);
        FieldsBuilder {
            serializer: self,
            node: None,
            count: 0,
            reached: 0,
            total: 0,
            plan: PlanCursor::unplanned(),
            started: ValueStart::default(),
            pair: NamedPair::default(),
        }
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn fields(
        mut self,
        what: &'static str,
        type_name: &'static str,
        variant: Option<&'static str>,
    ) -> FieldsBuilder<'b, 'r> {
        let (plan, placeholder) = self.builder.struct_placeholder(type_name, variant);
        let node = self.open(what, placeholder);
        FieldsBuilder {
            serializer: self,
            node,
            count: 0,
            reached: 0,
            total: 0,
            plan,
            started: ValueStart::default(),
            pair: NamedPair::default(),
        }
    }
}

// The leaves are kept out of line: each is called from the `Serialize` code of every captured
// type, and inlined it would be one more copy for a cold hit to fetch.
impl<'b, 'r> ser::Serializer for ValueSerializer<'b, 'r> {
    type Ok = ();
    type Error = SerializeError;
    type SerializeSeq = SeqBuilder<'b, 'r>;
    type SerializeTuple = SeqBuilder<'b, 'r>;
    type SerializeTupleStruct = FieldsBuilder<'b, 'r>;
    type SerializeTupleVariant = FieldsBuilder<'b, 'r>;
    type SerializeMap = MapBuilder<'b, 'r>;
    type SerializeStruct = FieldsBuilder<'b, 'r>;
    type SerializeStructVariant = FieldsBuilder<'b, 'r>;

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_bool(self, v: bool) -> Written {
        self.scalar(1, Node::Bool(v))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i8(self, v: i8) -> Written {
        self.serialize_i64(v.into())
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i16(self, v: i16) -> Written {
        self.serialize_i64(v.into())
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i32(self, v: i32) -> Written {
        self.serialize_i64(v.into())
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i64(self, v: i64) -> Written {
        let sensitive = self.builder.card_number(v.unsigned_abs());
        self.integer(sensitive, Node::Int(v))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i128(self, v: i128) -> Written {
        match i64::try_from(v) {
            Ok(v) => self.serialize_i64(v),
            Err(_) => {
                // A magnitude past 64 bits has too many digits for a card number; the decimal
                // text is scanned like any text.
                let sensitive = u64::try_from(v.unsigned_abs())
                    .ok()
                    .and_then(|magnitude| self.builder.card_number(magnitude));
                self.wide_integer(sensitive, v)
            }
        }
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u8(self, v: u8) -> Written {
        self.serialize_u64(v.into())
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u16(self, v: u16) -> Written {
        self.serialize_u64(v.into())
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u32(self, v: u32) -> Written {
        self.serialize_u64(v.into())
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u64(self, v: u64) -> Written {
        let sensitive = self.builder.card_number(v);
        self.integer(sensitive, Node::Uint(v))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u128(self, v: u128) -> Written {
        match u64::try_from(v) {
            Ok(v) => self.serialize_u64(v),
            Err(_) => {
                // Past 64 bits: too many digits for a card number.
                self.wide_integer(None, v)
            }
        }
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_f32(self, v: f32) -> Written {
        self.serialize_f64(v.into())
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_f64(self, v: f64) -> Written {
        self.scalar(8, Node::Float(v))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_char(self, v: char) -> Written {
        let mut buf = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_str(self, v: &str) -> Written {
        self.builder.string_value(v, true, v.len() as u64, false);
        Ok(())
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_bytes(self, v: &[u8]) -> Written {
        self.builder.bytes_value(v, v.len() as u64);
        Ok(())
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_none(self) -> Written {
        self.scalar(1, Node::Null)
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Written {
        value.serialize(self)
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_unit(self) -> Written {
        self.scalar(1, Node::Null)
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_unit_struct(self, name: &'static str) -> Written {
        let name = self.builder.static_name(name);
        self.builder.unit(name.len(), name, None);
        Ok(())
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Written {
        if name == UNCAPTURED_MARKER {
            // An `Uncaptured` from a point source: its detail is the source's own words.
            let reason = crate::uncaptured::UncapturedReason::from_index(index);
            self.builder.not_captured(reason, variant);
            return Ok(());
        }
        let name = self.builder.static_name(name);
        let variant = self.builder.static_name(variant);
        self.builder.unit(variant.len(), name, Some(variant));
        Ok(())
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Written {
        if name == SECRET_MARKER {
            // A `Secret<T>`: withheld whatever the request says, and never serialized.
            self.builder.redact(crate::secret::secret_reason());
            return Ok(());
        }
        if let Some(reason) = self.builder.label_withholds(name) {
            self.builder.redact(reason);
            return Ok(());
        }
        value.serialize(self)
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Written {
        if let Some(reason) = self.builder.label_withholds(variant) {
            self.builder.redact(reason);
            return Ok(());
        }
        let mut fields = self.fields("enum", name, Some(variant));
        ser::SerializeTupleVariant::serialize_field(&mut fields, value)?;
        ser::SerializeTupleVariant::end(fields)
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder<'b, 'r>, SerializeError> {
        Ok(self.seq("list", len))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder<'b, 'r>, SerializeError> {
        Ok(self.seq("tuple", Some(len)))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        if let Some(reason) = self.builder.label_withholds(name) {
            return Ok(self.withheld_fields(reason));
        }
        Ok(self.fields("struct", name, None))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        if let Some(reason) = self.builder.label_withholds(variant) {
            return Ok(self.withheld_fields(reason));
        }
        Ok(self.fields("enum", name, Some(variant)))
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_map(mut self, _len: Option<usize>) -> Result<MapBuilder<'b, 'r>, SerializeError> {
        let node = self.open("map", Placeholder::Map);
        Ok(MapBuilder {
            serializer: self,
            node,
            pending: PendingKey::None,
            count: 0,
            reached: 0,
            total: 0,
            pair: NamedPair::default(),
        })
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        Ok(self.fields("struct", name, None))
    }

    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<FieldsBuilder<'b, 'r>, SerializeError> {
        Ok(self.fields("enum", name, Some(variant)))
    }

    /// serde's default formats into an unbounded `String`; this one is bounded.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Written {
        self.builder.formatted(format_args!("{value}"));
        Ok(())
    }
}

/// Lists and tuples.
pub struct SeqBuilder<'b, 'r> {
    serializer: ValueSerializer<'b, 'r>,
    /// The list's node; `None` when the list itself was cut (depth or size) and its elements
    /// are only counted.
    node: Option<u32>,
    count: u32,
    total: u64,
    /// Where the element being captured started.
    started: ValueStart,
    /// For a list declared two elements long, where its first element was captured, once it
    /// was: a name that withholds the second (`("DB_PASSWORD", "…")`). `None` for other
    /// lists. A builder that defers redaction leaves this to the replay, which judges the
    /// same pair by the same flag in the tape.
    pair_name_at: Option<Option<u32>>,
}

impl<'r> SeqBuilder<'_, 'r> {
    /// Generic code is instantiated once per element type, so all but the element's own
    /// `serialize` call is out of line (see [`ValueSerializer::capture`]).
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) {
        if let Some(serializer) = self.begin_element() {
            let outcome = value.serialize(serializer);
            self.end_element(outcome);
        }
    }

    /// Counts an element and, when it is captured, enters its path and returns its serializer.
    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn begin_element(&mut self) -> Option<ValueSerializer<'_, 'r>> {
        let index = self.total;
        self.total += 1;
        if self.node.is_none() || self.count >= self.serializer.builder.limits.max_collection_len {
            return None;
        }
        self.serializer.builder.enter(PathSegment::Index(index));
        self.started = self.serializer.builder.value_start();
        if index == 1
            && let Some(Some(name_at)) = self.pair_name_at
            && let Some(reason) = self.serializer.builder.name_given_at(name_at)
        {
            self.serializer.builder.redact(reason);
            self.serializer.builder.leave();
            self.count += 1;
            return None;
        }
        // A condition that iterates this list reads only part of each element; a list it
        // reaches without iterating (through a comprehension it could not follow) is whole.
        let elements = self.serializer.projection.and_then(Projection::elements);
        Some(self.serializer.child_projected(elements))
    }

    /// Replaces what a failed element wrote by `not_captured{error}`, and leaves its path.
    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn end_element(&mut self, outcome: Written) {
        if let Err(err) = outcome {
            self.serializer.builder.value_failed(self.started, &err);
        }
        if self.count == 0
            && let Some(name_at) = &mut self.pair_name_at
        {
            *name_at = Some(self.started.tape.node_index());
        }
        self.serializer.builder.leave();
        self.count += 1;
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn finish(self) -> Written {
        let Some(node) = self.node else {
            return Ok(());
        };
        let builder = self.serializer.builder;
        if u64::from(self.count) < self.total {
            builder.truncation.collections_truncated += 1;
        }
        let end = builder.tape.next_index();
        builder.tape.close(node, end, self.count, self.total);
        Ok(())
    }
}

/// `SerializeSeq` and `SerializeTuple` are the same for a list.
macro_rules! impl_list_traits {
    ($($trait:ident),*) => {$(
        impl ser::$trait for SeqBuilder<'_, '_> {
            type Ok = ();
            type Error = SerializeError;

            #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
            fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Written {
                self.element(value);
                Ok(())
            }

            #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
            fn end(self) -> Written {
                self.finish()
            }
        }
    )*};
}

impl_list_traits!(SerializeSeq, SerializeTuple);

/// How a field's value is read.
enum FieldRead<'r> {
    /// Captured: whole (`None`) or the parts a condition reads.
    Captured(Option<&'r Projection>),
    /// Left out of a condition's capture, followed only for the keys it holds.
    LeftOut,
}

/// Structs, tuple structs and enum variants with a payload.
pub struct FieldsBuilder<'b, 'r> {
    serializer: ValueSerializer<'b, 'r>,
    node: Option<u32>,
    /// Fields captured.
    count: u32,
    /// Fields taken within the member limit: captured, or left out by a condition (which
    /// reads no member past where the snapshot stops, so it never reads what the snapshot
    /// would not show, nor runs a `Serialize` the snapshot would not run).
    reached: u32,
    total: u32,
    /// This type's field-name answers, remembered from earlier hits on this thread.
    plan: PlanCursor,
    /// Where the field being captured started.
    started: ValueStart,
    /// The struct's name/value pair so far (judged only by a builder that judges as it goes).
    pair: NamedPair,
}

/// A struct's (or a map's) `name`/`key` field and the `value` field it names: the first value
/// after it, or one before it that no name came before (`{value, name}` as a struct declares
/// it, or as a `HashMap` happens to iterate). Small and plain: every struct a hit captures
/// carries one, moved with its builder, and a deferred capture only ever reads `capturing`
/// (nothing) in it; so the places are `u32`s with a sentinel rather than `Option`s.
#[derive(Clone, Copy)]
pub(crate) struct NamedPair {
    /// What the field being captured is to the pair.
    capturing: PairPart,
    /// A name was met: a value after it is not one before its name.
    name_seen: bool,
    /// Where the pair's name's value starts in the tape, once captured ([`NOWHERE`] before).
    name_at: u32,
    /// Where a value captured before any name starts, until a name judges it ([`NOWHERE`]
    /// when there is none).
    value_before_name_at: u32,
}

/// No place in the tape, for [`NamedPair`].
const NOWHERE: u32 = u32::MAX;

impl Default for NamedPair {
    fn default() -> NamedPair {
        NamedPair {
            capturing: PairPart::Neither,
            name_seen: false,
            name_at: NOWHERE,
            value_before_name_at: NOWHERE,
        }
    }
}

/// The part of a pair a field being captured plays, for [`NamedPair::named`] to record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PairPart {
    Neither,
    Name,
    /// A value with no name before it.
    ValueBeforeName,
}

impl NamedPair {
    /// Whether field `name`, judged `sensitive` by its own name, is withheld, given the pair
    /// so far (the name's value, judged by `builder`); notes a name field, and a value field
    /// with no name before it, whose places [`NamedPair::named`] then records.
    pub(crate) fn judge(
        &mut self,
        builder: &SnapshotBuilder<'_>,
        name: &str,
        sensitive: Option<Reason>,
    ) -> Option<Reason> {
        self.capturing = PairPart::Neither;
        match field_pair_role(name) {
            Some(PairRole::Value) => {
                let name_at = std::mem::replace(&mut self.name_at, NOWHERE);
                let named = (name_at != NOWHERE)
                    .then(|| builder.name_given_at(name_at))
                    .flatten();
                if sensitive.is_none() && !self.name_seen && self.value_before_name_at == NOWHERE {
                    self.capturing = PairPart::ValueBeforeName;
                }
                sensitive.or(named)
            }
            Some(PairRole::Name) => {
                self.capturing = PairPart::Name;
                self.name_seen = true;
                sensitive
            }
            None => sensitive,
        }
    }

    /// After a field's value was captured at node `at`: records where the pair's name or its
    /// unnamed value is. Returns where a value captured before this name starts, for the
    /// builder to judge by this name ([`SnapshotBuilder::name_after_value`]).
    #[inline]
    pub(crate) fn named(&mut self, at: u32) -> Option<u32> {
        if self.capturing == PairPart::Neither {
            return None;
        }
        self.record(at)
    }

    #[cold]
    #[inline(never)]
    fn record(&mut self, at: u32) -> Option<u32> {
        match std::mem::replace(&mut self.capturing, PairPart::Neither) {
            PairPart::Neither => None,
            PairPart::ValueBeforeName => {
                self.value_before_name_at = at;
                None
            }
            PairPart::Name => {
                self.name_at = at;
                let value_at = std::mem::replace(&mut self.value_before_name_at, NOWHERE);
                (value_at != NOWHERE).then_some(value_at)
            }
        }
    }
}

impl<'r> FieldsBuilder<'_, 'r> {
    /// Generic code is instantiated once per field type, so all but the field's own
    /// `serialize` call is out of line (see [`ValueSerializer::capture`]).
    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, name: FieldName, value: &T) {
        match self.begin_field(name) {
            Some(FieldRead::Captured(projection)) => {
                let serializer = self.begin_field_value(projection);
                let outcome = value.serialize(serializer);
                self.end_field(outcome);
            }
            Some(FieldRead::LeftOut) => {
                let depth = self.serializer.depth + 1;
                self.serializer.builder.follow_member(value, depth);
            }
            None => {}
        }
    }

    /// The serializer of a field's value, once [`FieldsBuilder::begin_field`] entered it.
    #[inline]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn begin_field_value(&mut self, projection: Option<&'r Projection>) -> ValueSerializer<'_, 'r> {
        self.started = self.serializer.builder.value_start();
        self.serializer.child_projected(projection)
    }

    /// Counts a field and writes its name; says how its value is read (a captured field's
    /// path entered, for [`FieldsBuilder::end_field`] to leave), or `None` when the value is
    /// not walked at all (cut, or withheld), in which case whatever stands in for it is
    /// already written.
    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn begin_field(&mut self, name: FieldName) -> Option<FieldRead<'r>> {
        let index = self.total;
        self.total = self.total.saturating_add(1);
        if self.node.is_none() || self.reached >= self.serializer.builder.limits.max_struct_fields {
            self.plan.stop_learning();
            return None;
        }
        self.reached += 1;
        // Not read by the condition this capture is for: only followed for the keys it holds
        // (see `follow`), unless its name withholds it (the snapshot does not look inside it
        // either).
        // A pair's name is captured when the condition reads the pair's value, even if it
        // does not read the name: the name decides whether the value is withheld.
        let projection = self
            .serializer
            .member_projection(&name)
            .or_else(|| self.serializer.pair_name_decides(&name).then_some(None));
        let Some(projection) = projection else {
            self.plan.stop_learning();
            let builder = &*self.serializer.builder;
            let mut withheld = builder.sensitive_name(&name);
            // Judged in the pair all the same, as the snapshot judges it, so a later `value`
            // is judged alike (and a value the pair withholds is not followed either).
            if builder.judges_here() {
                withheld = self.pair.judge(builder, &name, withheld);
            }
            return withheld.is_none().then_some(FieldRead::LeftOut);
        };
        let builder = &mut *self.serializer.builder;
        let (name, sensitive) =
            builder.planned_field_name(name, &mut self.plan, index, &mut self.pair);
        self.count += 1;
        builder
            .begin_named_field(name, sensitive)
            .then_some(FieldRead::Captured(projection))
    }

    /// Replaces what a failed field value wrote by `not_captured{error}`, and leaves the
    /// field's path.
    #[inline(never)]
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn end_field(&mut self, outcome: Written) {
        if let Err(err) = outcome {
            self.serializer.builder.value_failed(self.started, &err);
        }
        let at = self.started.tape.node_index();
        self.serializer.builder.leave();
        if let Some(value_at) = self.pair.named(at) {
            self.serializer.builder.name_after_value(value_at, at);
        }
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn positional<T: Serialize + ?Sized>(&mut self, value: &T) {
        let name = position_name(self.total as usize);
        self.field(name, value);
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn finish(self) -> Written {
        self.plan.close(self.total);
        let Some(node) = self.node else {
            return Ok(());
        };
        let builder = self.serializer.builder;
        if self.count < self.total {
            builder.truncation.structs_truncated += 1;
        }
        let end = builder.tape.next_index();
        builder
            .tape
            .close(node, end, self.count, u64::from(self.total));
        Ok(())
    }
}

/// Named fields (structs, struct variants) and positional ones (tuple structs and variants)
/// differ only in where the field name comes from.
macro_rules! impl_fields_traits {
    (named: $($named:ident),*; positional: $($positional:ident),*) => {
        $(
            impl ser::$named for FieldsBuilder<'_, '_> {
                type Ok = ();
                type Error = SerializeError;

                #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Written {
                    self.field(Cow::Borrowed(key), value);
                    Ok(())
                }

                #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
                fn end(self) -> Written {
                    self.finish()
                }
            }
        )*
        $(
            impl ser::$positional for FieldsBuilder<'_, '_> {
                type Ok = ();
                type Error = SerializeError;

                #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
                fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Written {
                    self.positional(value);
                    Ok(())
                }

                #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
                fn end(self) -> Written {
                    self.finish()
                }
            }
        )*
    };
}

impl_fields_traits!(
    named: SerializeStruct, SerializeStructVariant;
    positional: SerializeTupleStruct, SerializeTupleVariant
);

/// The text of a map key, judged as a name: a string, a unit variant (`Header::Authorization`),
/// or bytes read as text. Other keys (numbers, composites) name nothing.
fn key_as_name(key: ValueKind<'_>) -> Option<Cow<'_, str>> {
    match key {
        ValueKind::Str { text, .. } => Some(Cow::Borrowed(text)),
        ValueKind::Enum {
            variant,
            total_fields: 0,
            ..
        } => Some(Cow::Borrowed(variant)),
        ValueKind::Bytes { bytes, .. } => Some(String::from_utf8_lossy(bytes)),
        _ => None,
    }
}

impl SnapshotBuilder<'_> {
    /// Whether the map key written at `key_at` names a secret, withholding the entry's value
    /// (never for a deferred builder: the replay asks).
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn key_withholds_value(&self, key_at: u32) -> Option<Reason> {
        let Redaction::Here { rules, .. } = self.redaction else {
            return None;
        };
        let key = self.tape.get(key_at)?;
        rules.sensitive_name(&key_as_name(key.kind())?)
    }

    /// Whether the value of the map entry whose key was written at `key_at`, judged
    /// `sensitive` by its key, is withheld given the map's name/value pair so far: a `value`
    /// key after a `name` or `key` entry that names a secret, as a struct's fields
    /// ([`NamedPair`]). A key that is not text plays no part in a pair. A deferred builder
    /// leaves this to the replay (and a hit's map skips the call: see `MapBuilder`).
    #[inline(never)]
    pub(super) fn judge_entry_in_pair(
        &self,
        pair: &mut NamedPair,
        key_at: u32,
        sensitive: Option<Reason>,
    ) -> Option<Reason> {
        if !self.judges_here() {
            return sensitive;
        }
        let key = self.tape.get(key_at).and_then(|key| match key.kind() {
            ValueKind::Str { text, span } if !span.truncated => Some(text),
            _ => None,
        });
        pair.judge(self, key.unwrap_or(""), sensitive)
    }

    /// Enters the path of the map entry whose key was written at `key_at`, the entry's
    /// `index`-th: by the key's text when it has one.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn enter_entry(&mut self, key_at: u32, index: u64) {
        if !self.keeps_path {
            return;
        }
        let key_text = self.tape.get(key_at).and_then(|key| match key.kind() {
            ValueKind::Str { text, .. } => Some(text.to_owned()),
            ValueKind::Int(i) => Some(i.to_string()),
            ValueKind::Uint(u) => Some(u.to_string()),
            ValueKind::Bool(b) => Some(b.to_string()),
            _ => None,
        });
        self.path.push(match key_text {
            Some(text) => PathSegment::Key(text),
            None => PathSegment::Index(index),
        });
    }
}

impl SnapshotBuilder<'_> {
    /// Writes a struct field's name (its path entered) and, when its value is not captured
    /// (withheld, or past the byte budget), what stands for the value, leaving the path again.
    /// True when the value is to be captured, the path left entered.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn begin_named_field(&mut self, name: FieldName, sensitive: Option<Reason>) -> bool {
        self.enter_field(&name);
        let affordable = self.charge(name.len());
        self.tape.push_field_name(name);
        if let Some(reason) = sensitive {
            self.redact(reason);
        } else if !affordable {
            self.size_exhausted();
        } else {
            return true;
        }
        self.leave();
        false
    }
}

/// The state of a map between its key and its value.
enum PendingKey {
    None,
    /// The entry is past the element limit: its value is skipped too.
    Skip,
    /// The key was written at this index, after this mark.
    Written(u32, TapeMark),
}

/// Maps. A string key that names a secret (`"password" => …`) withholds its value, and so
/// does a `name` or `key` entry before a `value` entry (`{"name": "DB_PASSWORD", "value": …}`,
/// a `serde_json::Value` of a name/value list), as in a struct (see [`NamedPair`]). "Before"
/// is in the order the map gives its entries: sorted for a `BTreeMap` and for
/// `serde_json::Value` by default, as inserted with its `preserve_order` feature, arbitrary
/// for a `HashMap`.
pub struct MapBuilder<'b, 'r> {
    serializer: ValueSerializer<'b, 'r>,
    node: Option<u32>,
    pending: PendingKey,
    /// Entries captured.
    count: u32,
    /// Entries taken within the limit: captured, or walked because a condition leaves them
    /// out, so a condition's capture of a map stops where the snapshot's does (and walks at
    /// most the limit's entries; a condition cannot name a map's entries by position).
    reached: u32,
    total: u64,
    /// The map's name/value pair so far (judged only by a builder that judges as it goes).
    pair: NamedPair,
}

impl ser::SerializeMap for MapBuilder<'_, '_> {
    type Ok = ();
    type Error = SerializeError;

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Written {
        let index = self.total;
        self.total += 1;
        if self.node.is_none() || self.reached >= self.serializer.builder.limits.max_collection_len
        {
            self.pending = PendingKey::Skip;
            return Ok(());
        }
        self.reached += 1;
        let mark = self.serializer.builder.tape.mark();
        let at = self.serializer.builder.tape.next_index();
        self.serializer.builder.enter(PathSegment::Index(index));
        self.serializer.child().capture(key);
        self.serializer.builder.leave();
        self.pending = PendingKey::Written(at, mark);
        Ok(())
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Written {
        let PendingKey::Written(key_at, mark) =
            std::mem::replace(&mut self.pending, PendingKey::None)
        else {
            return Ok(());
        };
        let projection = match self.serializer.projection {
            None => None,
            Some(map_projection) => {
                let key = self.serializer.builder.tape.get(key_at);
                let key = key.and_then(|k| k.as_str());
                match key.and_then(|k| map_projection.member(k)) {
                    Some(member) => Some(member),
                    // Iterating a map visits every key.
                    None if map_projection.reads_every_entry() => None,
                    // The name of a pair whose value the condition reads decides whether
                    // the value is withheld.
                    None if key.is_some_and(|k| self.serializer.pair_name_decides(k)) => None,
                    None => {
                        // An entry the condition does not read: walked only for the keys it
                        // holds (unless its key, or the pair it ends, withholds it), then
                        // dropped with its key. Judged in the pair all the same, as the
                        // snapshot judges it, so a later `value` is judged alike.
                        let builder = &mut *self.serializer.builder;
                        let withheld = builder.key_withholds_value(key_at);
                        let withheld =
                            builder.judge_entry_in_pair(&mut self.pair, key_at, withheld);
                        if withheld.is_none() {
                            let depth = self.serializer.depth + 1;
                            builder.follow_member(value, depth);
                        }
                        self.serializer.builder.tape.rollback(mark);
                        return Ok(());
                    }
                }
            }
        };
        let builder = &mut *self.serializer.builder;
        let mut sensitive = builder.key_withholds_value(key_at);
        // Checked here as well, so a hit's deferred capture makes no call out of its section.
        if builder.judges_here() {
            sensitive = builder.judge_entry_in_pair(&mut self.pair, key_at, sensitive);
        }
        builder.enter_entry(key_at, self.total - 1);
        match sensitive {
            Some(reason) => builder.redact(reason),
            None => {
                let at = builder.tape.next_index();
                self.serializer.child_projected(projection).capture(value);
                self.serializer.builder.leave();
                if let Some(value_at) = self.pair.named(at) {
                    self.serializer.builder.name_after_value(value_at, at);
                }
                self.count += 1;
                return Ok(());
            }
        }
        self.serializer.builder.leave();
        self.count += 1;
        Ok(())
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn end(self) -> Written {
        let Some(node) = self.node else {
            return Ok(());
        };
        let builder = self.serializer.builder;
        if u64::from(self.count) < self.total {
            builder.truncation.collections_truncated += 1;
        }
        let end = builder.tape.next_index();
        builder.tape.close(node, end, self.count, self.total);
        Ok(())
    }
}
