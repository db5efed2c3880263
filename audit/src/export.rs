//! The JSON Lines export a reviewer takes away and verifies offline.
//!
//! An export is the log's events from sequence 0, one canonical event per line (the exact
//! bytes that were hashed, see [`super::event`]), followed by one last line
//! `{"checkpoint":"<signed note>"}` holding the log's signed checkpoint for exactly those
//! events. Nothing else is needed to verify it except the log's public key, which the reviewer
//! must get from somewhere they trust, never from the export.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

/// The first bytes of every event line (the `seq` field comes first).
const EVENT_PREFIX: &[u8] = b"{\"seq\":";
/// The last bytes of every event line, around the 64 hex digits of `prev` (the last field).
const PREV_FIELD: &[u8] = b",\"prev\":\"";
const EVENT_SUFFIX: &[u8] = b"\"}";
const PREV_TAIL_LEN: usize = PREV_FIELD.len() + 64 + EVENT_SUFFIX.len();
/// The first bytes of the checkpoint line.
const CHECKPOINT_PREFIX: &[u8] = b"{\"checkpoint\":";

/// The fields of an event line that verification needs; the rest is only hashed.
#[derive(Debug, Deserialize)]
pub struct EventHead<'a> {
    pub seq: u64,
    #[serde(borrow)]
    pub prev: &'a str,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    checkpoint: String,
}

/// One line of an export.
#[derive(Debug)]
pub enum ExportLine<'a> {
    /// An event: its canonical bytes and the fields verification reads.
    Event {
        bytes: &'a [u8],
        head: EventHead<'a>,
    },
    /// The trailing signed checkpoint note.
    Checkpoint(String),
}

/// Why a line is not part of an export.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    #[error("neither an event nor a checkpoint line")]
    Unknown,
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl<'a> ExportLine<'a> {
    /// Classifies one line (without its newline).
    pub fn parse(line: &'a [u8]) -> Result<Self, LineError> {
        if let Some(head) = canonical_head(line) {
            return Ok(ExportLine::Event { bytes: line, head });
        }
        if line.starts_with(EVENT_PREFIX) {
            let head = serde_json::from_slice(line)?;
            Ok(ExportLine::Event { bytes: line, head })
        } else if line.starts_with(CHECKPOINT_PREFIX) {
            let parsed: CheckpointLine = serde_json::from_slice(line)?;
            Ok(ExportLine::Checkpoint(parsed.checkpoint))
        } else {
            Err(LineError::Unknown)
        }
    }
}

/// Reads `seq` and `prev` from where the canonical encoding puts them (first and last), without
/// parsing the JSON in between. Sound for verification because nothing here is trusted: the
/// whole line is hashed, and a line the log did not write cannot hash into its tree. Lines
/// of any other shape take the full JSON parse.
fn canonical_head(line: &[u8]) -> Option<EventHead<'_>> {
    let rest = line.strip_prefix(EVENT_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && rest[0] == b'0') || rest.get(digits) != Some(&b',') {
        return None;
    }
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let tail = line.get(line.len().checked_sub(PREV_TAIL_LEN)?..)?;
    let hex = tail.strip_prefix(PREV_FIELD)?.strip_suffix(EVENT_SUFFIX)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let prev = std::str::from_utf8(hex).ok()?;
    Some(EventHead { seq, prev })
}

/// Writes an export: event lines, then the checkpoint line.
pub struct ExportWriter<W: Write> {
    out: W,
    events: u64,
}

impl<W: Write> ExportWriter<W> {
    /// Starts an export into `out`.
    pub fn new(out: W) -> Self {
        Self { out, events: 0 }
    }

    /// Appends one event's canonical bytes as a line.
    pub fn event(&mut self, canonical: &[u8]) -> io::Result<()> {
        self.out.write_all(canonical)?;
        self.out.write_all(b"\n")?;
        self.events += 1;
        Ok(())
    }

    /// How many events were written.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Ends the export with the signed checkpoint note covering exactly the events written.
    pub fn finish(mut self, checkpoint_note: &str) -> io::Result<W> {
        let line = serde_json::to_vec(&CheckpointLine {
            checkpoint: checkpoint_note.to_owned(),
        })
        .map_err(io::Error::other)?;
        self.out.write_all(&line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Actor, Decision, NewEvent, Outcome, Resource, ResourceKind};

    #[test]
    fn the_fast_head_agrees_with_the_json_parse() {
        let event = NewEvent::new(
            Actor {
                id: "a\"},\"prev\":\"".into(),
                cert_sha256: String::new(),
            },
            Action::AuditRead,
            Resource {
                kind: ResourceKind::AuditLog,
                id: "log".into(),
            },
            Decision {
                outcome: Outcome::Allow,
                policies: vec![],
                reason: String::new(),
            },
            "r",
        )
        .seal(120, 5, &[0xab; 32]);
        let line = event.canonical_bytes().expect("encode");
        let fast = canonical_head(&line).expect("canonical line");
        let slow: EventHead<'_> = serde_json::from_slice(&line).expect("json");
        assert_eq!((fast.seq, fast.prev), (slow.seq, slow.prev));
        assert_eq!(fast.seq, 120);
        assert!(canonical_head(b"{\"seq\":01,\"x\":1}").is_none());
        assert!(canonical_head(b"{\"seq\":1}").is_none());
    }
}
