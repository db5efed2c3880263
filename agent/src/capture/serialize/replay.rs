//! The agent thread's half of a deferred capture: the raw tape a host thread copied
//! ([`UnredactedTape`]) replayed through a redacting [`SnapshotBuilder`], before anything of
//! it is encoded.
//!
//! The replay applies the rules in the same order and with the same inputs as a capture that
//! redacts as it goes: field and key names before their values, each string over the scan
//! window the host kept (so a secret that starts in the kept part is seen whole, and one that
//! runs into a cut is masked), type, variant and field names by the value patterns, integers
//! as card numbers, foreign text (panic and error messages) as cut text, and texts in the
//! order they were written, so a private key split over several strings is carried from one
//! to the next. It judges every node again and trusts nothing the host wrote: a node it has no
//! rule for is withheld.
//!
//! It also does the accounting that depends on what redaction shows: the snapshot's byte
//! budget is charged again with the masked lengths (a mask can be longer or shorter than what
//! it hides), and every cut it meets is counted once, here — strings cut, collections and
//! structs shorter than their originals, values not captured, the byte limit reached on
//! either thread. Limits of shape (depth, collection length, fields per struct) were applied
//! by the host and are carried as they are. The host, which judges nothing, charges the byte
//! budget with raw lengths, so a large value that the replay withholds (a `password` field)
//! can use budget that a capture redacting as it goes would have left to later fields; the
//! budget holds either way, and whatever it cuts is marked and counted.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{FieldValue, NamedPair, PathSegment, Placeholder, SnapshotBuilder, TruncationCounts};
use crate::context::SpanValue;
use crate::limits::CaptureLimits;
use crate::redaction::{Reason, RedactionRules};
use crate::value::{Node, NotCapturedReason, Tape, ValueKind, ValueRef};

/// A tape a deferred builder wrote: raw values that nothing has judged yet. It has no reader
/// but [`UnredactedTape::redact`], so what it holds can only leave the process replayed.
#[derive(Default)]
pub(crate) struct UnredactedTape(Tape);

/// What the replay of one snapshot's raw tape made of it.
pub(crate) struct RedactedSnapshot {
    pub tape: Tape,
    /// Where each of the callsite's fields starts in `tape`, in declaration order.
    pub roots: Vec<u32>,
    /// Span fields: name and where the value starts in `tape`.
    pub span_fields: Vec<(&'static str, u32)>,
    pub truncation: TruncationCounts,
    pub redacted: Vec<(String, Reason)>,
}

/// The rules a snapshot is redacted by, and the limits it was captured under.
#[derive(Clone, Copy)]
pub(crate) struct ReplayRules<'r> {
    pub limits: &'r CaptureLimits,
    pub rules: &'r RedactionRules,
    /// Identifies `rules` for the static-name memos of the replaying thread.
    pub rules_id: u64,
}

impl UnredactedTape {
    pub(super) fn new(tape: Tape) -> UnredactedTape {
        UnredactedTape(tape)
    }

    /// Nodes and text held, to size the next snapshot's tape.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.0.nodes.len(), self.0.text.len())
    }

    /// The buffers, emptied, for a later snapshot to reuse.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn into_spare(mut self) -> Tape {
        self.0.clear();
        self.0
    }

    /// `tape`'s buffers, emptied, to be kept in a spare record (nothing written on it is
    /// kept, so nothing unjudged can be read from it).
    pub(crate) fn spare(mut tape: Tape) -> UnredactedTape {
        tape.clear();
        UnredactedTape(tape)
    }

    /// Empties the tape, keeping its buffers.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Bytes the tape's buffers hold, used or not.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.0.capacity_bytes()
    }

    /// Where the tape's buffers lie (`Tape::buffer_ranges`).
    pub(crate) fn buffer_ranges(&self) -> [std::ops::Range<usize>; crate::value::TAPE_BUFFERS] {
        self.0.buffer_ranges()
    }

    /// Replays the snapshot's fields (named by `names`, in the order they were captured) and
    /// then the span fields, writing the redacted snapshot into `into` (an empty tape, reused).
    pub(crate) fn redact(
        &self,
        rules: ReplayRules<'_>,
        names: &[&'static str],
        into: Tape,
    ) -> RedactedSnapshot {
        let mut builder = SnapshotBuilder::new(rules.limits, rules.rules, rules.rules_id, into);
        let roots = names
            .iter()
            .zip(&self.0.roots)
            .map(|(name, root)| builder.replay_field(None, name, self.0.get(*root)))
            .collect();
        let span_fields = self
            .0
            .context_roots
            .iter()
            .map(|(name, root)| {
                let at = builder.replay_field(Some("ctx"), name, self.0.get(*root));
                (*name, at)
            })
            .collect();
        let (tape, truncation, redacted) = builder.into_parts();
        RedactedSnapshot {
            tape,
            roots,
            span_fields,
            truncation,
            redacted,
        }
    }
}

impl<'r> SnapshotBuilder<'r> {
    /// [`SnapshotBuilder::capture_field`] for a field of the snapshot, whose start the tape
    /// keeps for the replay.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn capture_root(&mut self, name: &'static str, value: FieldValue<'_>) {
        let root = self.capture_field(name, value);
        self.tape.roots.push(root);
    }

    /// Keeps `root` as where the next field starts, for a capture that took the field itself
    /// (a condition's, which takes only what it reads).
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn keep_root(&mut self, root: u32) {
        self.tape.roots.push(root);
    }

    /// Follows a point field a condition does not read for the private keys its texts open
    /// or close for the fields after it, and keeps nothing of it (see `serialize::follow`);
    /// a field whose name withholds it is not looked into, as in the snapshot.
    pub(crate) fn follow_left_out_root(&mut self, name: &'static str, value: FieldValue<'_>) {
        if self.sensitive_name(&Cow::Borrowed(name)).is_some() {
            return;
        }
        let before = self.scan;
        // A value that panics is forgotten whole, as the snapshot forgets it.
        if catch_unwind(AssertUnwindSafe(|| self.follow_field(value))).is_err() {
            self.scan = before;
        }
    }

    /// Captures a span field of the correlation context under `ctx.<name>`, and keeps its name
    /// and start in the tape: for the replay of a snapshot, or for the condition that reads
    /// `ctx`. A value the context cut when it recorded it is scanned as cut.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn capture_context_root(&mut self, name: &'static str, value: SpanValue<'_>) {
        let root = self.context_string(name, value.text, value.complete, value.original_len);
        self.tape.context_roots.push((name, root));
    }

    /// The raw tape this deferred builder wrote, for the agent's thread to redact.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn into_unredacted(self) -> UnredactedTape {
        UnredactedTape::new(self.tape)
    }

    /// Replays one top-level field (under `parent`, for span fields `ctx`) and returns where
    /// its redacted value starts: as [`SnapshotBuilder::capture_field`] would, the name is
    /// judged before the value.
    fn replay_field(
        &mut self,
        parent: Option<&'static str>,
        name: &'static str,
        raw: Option<ValueRef<'_>>,
    ) -> u32 {
        self.path.clear();
        if let Some(parent) = parent {
            self.enter(PathSegment::Field(Cow::Borrowed(parent)));
        }
        self.enter(PathSegment::Field(Cow::Borrowed(name)));
        let at = self.tape.next_index();
        match (self.sensitive_name(&Cow::Borrowed(name)), raw) {
            (Some(reason), _) => self.redact(reason),
            (None, Some(raw)) => self.replay_value(raw),
            (None, None) => self.replay_scalar(1, Node::Null),
        }
        self.path.clear();
        at
    }

    fn replay_value(&mut self, raw: ValueRef<'_>) {
        match raw.node() {
            Node::Name(_) | Node::NameText { .. } => return self.withheld(),
            Node::NotCaptured { reason, detail } => {
                return self.replay_not_captured(*reason, detail);
            }
            // Any other detail is scanned like foreign text.
            Node::NotCapturedText { reason, .. } => {
                if let ValueKind::NotCaptured { detail, .. } = raw.kind() {
                    self.not_captured_foreign(*reason, "", detail, true);
                }
                return;
            }
            Node::Unscanned { .. } => {
                if let Some((reason, prefix, message, complete)) = raw.as_unscanned() {
                    self.not_captured_foreign(reason, prefix, message, complete);
                }
                return;
            }
            _ => {}
        }
        match raw.kind() {
            ValueKind::Null => self.replay_scalar(1, Node::Null),
            ValueKind::Bool(b) => self.replay_scalar(1, Node::Bool(b)),
            ValueKind::Int(i) => match self.card_number(i.unsigned_abs()) {
                Some(reason) => self.redact(reason),
                None => self.replay_scalar(8, Node::Int(i)),
            },
            ValueKind::Uint(u) => match self.card_number(u) {
                Some(reason) => self.redact(reason),
                None => self.replay_scalar(8, Node::Uint(u)),
            },
            ValueKind::Float(f) => self.replay_scalar(8, Node::Float(f)),
            ValueKind::Str { text, span } => self.string_value(
                text,
                !span.truncated,
                span.original_len,
                span.original_len_is_lower_bound,
            ),
            ValueKind::Bytes {
                bytes,
                original_len,
                ..
            } => self.bytes_value(bytes, original_len),
            ValueKind::List { total_len, pair } => self.replay_list(raw, total_len, pair),
            ValueKind::Map { total_len } => self.replay_map(raw, total_len),
            ValueKind::Struct {
                type_name,
                total_fields,
            } => self.replay_fields(raw, type_name, None, total_fields),
            ValueKind::Enum {
                type_name,
                variant,
                total_fields,
            } => self.replay_fields(raw, type_name, Some(variant), total_fields),
            ValueKind::Redacted(reason) => self.redact(reason.clone()),
            // Every node that reads as `not_captured` was answered above.
            ValueKind::NotCaptured { .. } => self.withheld(),
        }
    }

    /// A node the replay has no rule for is not shown.
    #[cold]
    fn withheld(&mut self) {
        self.redact(Reason::from_static("unreadable"));
    }

    fn replay_scalar(&mut self, bytes: usize, node: Node) {
        if self.charge(bytes) {
            self.tape.push(node);
        } else {
            self.size_exhausted();
        }
    }

    /// A `not_captured` in the agent's own words (`list`, `snapshot byte limit reached`, a
    /// point source's reason), which stand as they are.
    fn replay_not_captured(&mut self, reason: NotCapturedReason, detail: &'static str) {
        if reason == NotCapturedReason::Size {
            self.truncation.snapshot_size_limit_reached = true;
        }
        self.not_captured(reason, detail);
    }

    /// Opens a replayed container with `placeholder`, or writes the size marker in its place.
    fn replay_open(&mut self, placeholder: Placeholder) -> Option<u32> {
        if self.charge(0) {
            Some(placeholder.push(&mut self.tape))
        } else {
            self.size_exhausted();
            None
        }
    }

    /// A list; of a `pair` (declared two elements long), the second element is withheld when
    /// the first names a secret, as the capture judges it.
    fn replay_list(&mut self, raw: ValueRef<'_>, total_len: u64, pair: bool) {
        let Some(node) = self.replay_open(Placeholder::List { pair }) else {
            return;
        };
        let mut count = 0u32;
        let mut name_at = None;
        for (index, item) in raw.items().enumerate() {
            self.enter(PathSegment::Index(index as u64));
            match name_at.and_then(|at| self.name_given_at(at)) {
                Some(reason) if index == 1 => self.redact(reason),
                _ => {
                    let at = self.tape.next_index();
                    self.replay_value(item);
                    if pair && index == 0 {
                        name_at = Some(at);
                    }
                }
            }
            self.leave();
            count += 1;
        }
        self.close_container(node, count, total_len);
    }

    fn replay_map(&mut self, raw: ValueRef<'_>, total_len: u64) {
        let Some(node) = self.replay_open(Placeholder::Map) else {
            return;
        };
        let mut count = 0u32;
        let mut pair = NamedPair::default();
        for (index, (key, value)) in raw.entries().enumerate() {
            let key_at = self.tape.next_index();
            self.enter(PathSegment::Index(index as u64));
            self.replay_value(key);
            self.leave();
            let sensitive = self.key_withholds_value(key_at);
            let sensitive = self.judge_entry_in_pair(&mut pair, key_at, sensitive);
            self.enter_entry(key_at, index as u64);
            let mut value_before_name = None;
            match sensitive {
                Some(reason) => self.redact(reason),
                None => {
                    let at = self.tape.next_index();
                    self.replay_value(value);
                    value_before_name = pair.named(at).map(|value_at| (value_at, at));
                }
            }
            self.leave();
            if let Some((value_at, name_at)) = value_before_name {
                self.name_after_value(value_at, name_at);
            }
            count += 1;
        }
        self.close_container(node, count, total_len);
    }

    /// A struct, or an enum variant: names judged as a capture judges them (the struct plans
    /// of this thread answer the field names), then each field.
    fn replay_fields(
        &mut self,
        raw: ValueRef<'_>,
        type_name: &'static str,
        variant: Option<&'static str>,
        total_fields: u32,
    ) {
        if total_fields == 0 {
            return self.replay_unit(type_name, variant);
        }
        let (mut plan, placeholder) = self.struct_placeholder(type_name, variant);
        let Some(node) = self.replay_open(placeholder) else {
            plan.stop_learning();
            return;
        };
        let mut count = 0u32;
        let mut pair = NamedPair::default();
        for (index, (name, value)) in raw.named_fields().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let Some(name) = name else {
                plan.stop_learning();
                self.withheld();
                continue;
            };
            let (name, sensitive) = self.planned_field_name(name, &mut plan, index, &mut pair);
            if self.begin_named_field(name, sensitive) {
                let at = self.tape.next_index();
                self.replay_value(value);
                self.leave();
                if let Some(value_at) = pair.named(at) {
                    self.name_after_value(value_at, at);
                }
            }
            count += 1;
        }
        if count < total_fields {
            plan.stop_learning();
            self.truncation.structs_truncated += 1;
        }
        plan.close(total_fields);
        let end = self.tape.next_index();
        self.tape.close(node, end, count, u64::from(total_fields));
    }

    /// A unit struct or unit variant, as `serialize_unit_struct` and `serialize_unit_variant`
    /// write them.
    fn replay_unit(&mut self, type_name: &'static str, variant: Option<&'static str>) {
        let type_name = self.static_name(type_name);
        match variant {
            None => self.unit(type_name.len(), type_name, None),
            Some(variant) => {
                let variant = self.static_name(variant);
                self.unit(variant.len(), type_name, Some(variant));
            }
        }
    }

    /// Sets a replayed list's or map's end and count, and counts it cut if it is shorter than
    /// its original's `total_len`.
    fn close_container(&mut self, node: u32, replayed: u32, total_len: u64) {
        if u64::from(replayed) < total_len {
            self.truncation.collections_truncated += 1;
        }
        let end = self.tape.next_index();
        self.tape.close(node, end, replayed, total_len);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;
    use crate::Secret;
    use crate::capture::serialize::field::FieldValue;

    #[derive(Serialize)]
    struct Account {
        name: String,
        password: String,
        customer_ssn: String,
        card: u64,
        created_at_ms: u64,
        note: String,
        headers: BTreeMap<String, String>,
        pem: Vec<String>,
        token: Secret<String>,
        raw: Vec<u8>,
        tier: Tier,
        long: String,
    }

    #[derive(Serialize, Debug)]
    enum Tier {
        Gold { discount: u32, api_key: String },
    }

    struct Fails;

    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "bad token 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",
            ))
        }
    }

    fn account() -> Account {
        Account {
            name: "Ada".into(),
            password: "hunter2".into(),
            customer_ssn: "078-05-1120".into(),
            card: 4_111_111_111_111_111,
            created_at_ms: 1_733_140_000_123,
            note: "paid with Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU"
                .into(),
            headers: BTreeMap::from([
                ("authorization".into(), "Basic dXNlcjpwYXNz".into()),
                ("accept".into(), "text/plain".into()),
            ]),
            pem: vec![
                "-----BEGIN RSA PRIVATE KEY-----".into(),
                "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu".into(),
                "-----END RSA PRIVATE KEY-----".into(),
                "after the key".into(),
            ],
            token: Secret::new("s3cr3t".into()),
            raw: b"\xffAKIAIOSFODNN7EXAMPLE\xfe".to_vec(),
            tier: Tier::Gold {
                discount: 10,
                api_key: "k".into(),
            },
            long: format!("{}password=hunter2{}", "x".repeat(250), "y".repeat(300)),
        }
    }

    type Parts = (Tape, Vec<u32>, TruncationCounts, Vec<(String, Reason)>);

    /// Captures `fields` redacting as it goes, as conditions and dry runs do.
    fn redacted_here(
        limits: &CaptureLimits,
        rules: &RedactionRules,
        fields: &[(&'static str, FieldValue<'_>)],
    ) -> Parts {
        let mut builder = SnapshotBuilder::new(limits, rules, 91, Tape::default());
        let roots = fields
            .iter()
            .map(|(name, value)| builder.capture_field(name, *value))
            .collect();
        let (tape, truncation, redacted) = builder.into_parts();
        (tape, roots, truncation, redacted)
    }

    /// Captures `fields` raw, as a hit does, and redacts them by replay, as the agent's thread
    /// does.
    fn replayed(
        limits: &CaptureLimits,
        rules: &RedactionRules,
        fields: &[(&'static str, FieldValue<'_>)],
    ) -> Parts {
        let mut builder = SnapshotBuilder::deferred(limits, rules, 92, Tape::default());
        for (name, value) in fields {
            builder.capture_root(name, *value);
        }
        let names: Vec<&'static str> = fields.iter().map(|(name, _)| *name).collect();
        let raw = builder.into_unredacted();
        let rules = ReplayRules {
            limits,
            rules,
            rules_id: 92,
        };
        let out = raw.redact(rules, &names, Tape::default());
        (out.tape, out.roots, out.truncation, out.redacted)
    }

    #[test]
    fn a_replayed_capture_is_the_capture_redacted_as_it_goes() {
        let rules = RedactionRules::builtin();
        let account = account();
        let fails = Fails;
        let tier = Tier::Gold {
            discount: 5,
            api_key: "sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(),
        };
        let display = "user=ada token=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";
        let fields = [
            ("account", FieldValue::serde(&account)),
            ("secret_answer", FieldValue::serde(&"blue")),
            ("fails", FieldValue::serde(&fails)),
            ("tier", FieldValue::debug(&tier)),
            ("line", FieldValue::display(&display)),
        ];
        let tight = CaptureLimits {
            max_depth: 1,
            max_collection_len: 2,
            max_struct_fields: 5,
            max_string_bytes: 16,
            ..CaptureLimits::DEFAULT
        };
        for limits in [CaptureLimits::DEFAULT, tight] {
            let here = redacted_here(&limits, &rules, &fields);
            let there = replayed(&limits, &rules, &fields);
            assert_eq!(here.0, there.0, "tapes under {limits:?}");
            assert_eq!(here.1, there.1, "roots under {limits:?}");
            assert_eq!(here.2, there.2, "truncation under {limits:?}");
            assert_eq!(here.3, there.3, "redacted paths under {limits:?}");
            assert!(!here.3.is_empty());
        }
    }

    #[test]
    fn a_raw_tape_leaves_nothing_unjudged() {
        let limits = CaptureLimits::DEFAULT;
        let rules = RedactionRules::builtin();
        let mut builder = SnapshotBuilder::deferred(&limits, &rules, 93, Tape::default());
        let password = "hunter2-hunter2";
        builder.capture_root("password", FieldValue::serde(&password));
        let raw = builder.into_unredacted();
        // Read as a value, the raw tape shows the secret: only the replay may read it.
        assert_eq!(raw.0.get(0).and_then(|v| v.as_str()), Some(password));
        let out = raw.redact(
            ReplayRules {
                limits: &limits,
                rules: &rules,
                rules_id: 93,
            },
            &["password"],
            Tape::default(),
        );
        assert!(matches!(
            out.tape.get(out.roots[0]).map(|v| v.kind()),
            Some(ValueKind::Redacted(_))
        ));

        // A node where the replay has no rule (a name in a value's place) is withheld.
        let mut odd = Tape::default();
        odd.push(Node::Name("hunter2-hunter2"));
        odd.roots.push(0);
        let out = UnredactedTape::new(odd).redact(
            ReplayRules {
                limits: &limits,
                rules: &rules,
                rules_id: 93,
            },
            &["note"],
            Tape::default(),
        );
        assert!(matches!(
            out.tape.get(out.roots[0]).map(|v| v.kind()),
            Some(ValueKind::Redacted(_))
        ));
        assert!(!out.tape.text.contains("hunter2"));
    }
}
