//! Offline verification of an export against the log's key and a checkpoint the reviewer kept.
//!
//! What is checked, in order:
//!
//! 1. The kept checkpoint's signature (if one is given), before anything is read.
//! 2. Each event line, streaming: sequence numbers run 0, 1, 2… (a gap, duplicate or swap is
//!    named), and each event's `prev` is the leaf hash of the line before it (so an edited
//!    event is named by its successor).
//! 3. The export's own checkpoint line: its signature, that it covers exactly the events
//!    present (fewer present: truncated tail), and that the root of those events is the one
//!    it signed (if the chain held, only the last event can be the one that differs).
//! 4. The kept checkpoint against the export: a kept size beyond what the log now signs is a
//!    rollback; a kept root that is not the root of the same prefix is a split view — the log
//!    showed the reviewer one history and signs another.
//!
//! The verdict is trustworthy whatever an attacker does to the file; *naming* the event is
//! best effort against an attacker who also rewrites the chain.

use std::io::BufRead;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::checkpoint::{Checkpoint, NoteError, NoteVerifier};
use super::export::ExportLine;
use super::merkle::{CompactTree, Hash, empty_root, from_hex, leaf_hash};
use super::proof::{ProofError, verify_consistency};

/// A verified export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// How many events it holds, all covered by a valid checkpoint.
    pub events: u64,
    /// Their Merkle root.
    pub root: Hash,
    /// The log they belong to.
    pub origin: String,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verified: {} events, root {}",
            self.events,
            BASE64.encode(self.root)
        )
    }
}

/// Exactly what is wrong with an export or a pair of checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("event {seq} was altered")]
    Altered { seq: u64 },
    #[error("event {seq} is missing (deleted)")]
    Missing { seq: u64 },
    #[error("line {line}: an event with sequence {seq} was inserted")]
    Inserted { seq: u64, line: u64 },
    #[error("line {line}: event {found} stands where event {expected} belongs (reordered)")]
    Reordered {
        expected: u64,
        found: u64,
        line: u64,
    },
    #[error("truncated: the checkpoint covers {expected} events, the export holds {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("the export holds {found} events, but its checkpoint covers only {covered}")]
    Uncovered { covered: u64, found: u64 },
    #[error("the export's checkpoint is not valid: {0}")]
    ExportCheckpoint(NoteError),
    #[error("the kept checkpoint is not valid: {0}")]
    KeptCheckpoint(NoteError),
    #[error("rollback: the log signs {current} events, fewer than the kept checkpoint's {kept}")]
    Rollback { kept: u64, current: u64 },
    #[error(
        "split view: the log's history of the first {size} events differs from the kept checkpoint's"
    )]
    SplitView { size: u64 },
    #[error("no checkpoint: the export has none and none was kept")]
    NoCheckpoint,
}

/// Verifies an export (see [`super::export`]) with the log's key, and against the checkpoint
/// the reviewer kept from earlier, if any.
pub fn verify_export<R: BufRead>(
    mut export: R,
    key: &NoteVerifier,
    kept_note: Option<&str>,
) -> Result<Verified, VerifyError> {
    let kept = kept_note
        .map(|note| key.open_checkpoint(note))
        .transpose()
        .map_err(VerifyError::KeptCheckpoint)?;
    let mut kept_prefix_root = kept.as_ref().filter(|k| k.size == 0).map(|_| empty_root());

    let mut tree = CompactTree::new();
    let mut prev = [0u8; 32];
    let mut export_note: Option<String> = None;
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if export.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let Some(line) = buf.strip_suffix(b"\n") else {
            // A last line cut off mid-way: whatever it was, it is not there. The count checks
            // below report the truncation.
            break;
        };
        if export_note.is_some() {
            return Err(VerifyError::Malformed {
                line: line_no,
                reason: "content after the checkpoint line".into(),
            });
        }
        let parsed = ExportLine::parse(line).map_err(|e| VerifyError::Malformed {
            line: line_no,
            reason: e.to_string(),
        })?;
        match parsed {
            ExportLine::Checkpoint(note) => export_note = Some(note),
            ExportLine::Event { bytes, head } => {
                let expected = tree.size();
                if head.seq != expected {
                    let found = head.seq;
                    return Err(misplaced(export, expected, found, line_no));
                }
                if from_hex(head.prev) != Some(prev) {
                    return Err(VerifyError::Altered {
                        seq: expected.saturating_sub(1),
                    });
                }
                prev = leaf_hash(bytes);
                tree.push(prev);
                if kept.as_ref().is_some_and(|k| k.size == tree.size()) {
                    kept_prefix_root = Some(tree.root());
                }
            }
        }
    }

    let count = tree.size();
    let root = tree.root();
    let current = export_note
        .map(|note| key.open_checkpoint(&note))
        .transpose()
        .map_err(VerifyError::ExportCheckpoint)?;
    if let (Some(current), Some(kept)) = (&current, &kept)
        && kept.size > current.size
    {
        return Err(VerifyError::Rollback {
            kept: kept.size,
            current: current.size,
        });
    }
    let governing = current
        .as_ref()
        .or(kept.as_ref())
        .ok_or(VerifyError::NoCheckpoint)?;
    if count < governing.size {
        return Err(VerifyError::Truncated {
            expected: governing.size,
            found: count,
        });
    }
    if count > governing.size {
        return Err(VerifyError::Uncovered {
            covered: governing.size,
            found: count,
        });
    }
    if root != governing.root {
        // The chain held, so every event vouches for its predecessor: the last one differs.
        return Err(match count.checked_sub(1) {
            Some(seq) => VerifyError::Altered { seq },
            None => VerifyError::SplitView { size: 0 },
        });
    }
    if let Some(kept) = &kept
        && kept_prefix_root != Some(kept.root)
    {
        return Err(VerifyError::SplitView { size: kept.size });
    }
    Ok(Verified {
        events: count,
        root,
        origin: governing.origin.clone(),
    })
}

/// Names what happened when line `line` holds event `found` where `expected` belongs, reading
/// the rest of the export to tell a deletion from a swap from an insertion.
fn misplaced<R: BufRead>(mut rest: R, expected: u64, found: u64, line: u64) -> VerifyError {
    if found < expected {
        // Every sequence below `expected` was already present once.
        return VerifyError::Inserted { seq: found, line };
    }
    let mut later = Vec::new();
    let mut total = expected + 1;
    let mut buf = Vec::new();
    while let Ok(n) = rest.read_until(b'\n', &mut buf) {
        if n == 0 {
            break;
        }
        if let Ok(ExportLine::Event { head, .. }) = ExportLine::parse(buf.trim_ascii_end()) {
            later.push(head.seq);
            total += 1;
        }
        buf.clear();
    }
    if later.contains(&found) {
        VerifyError::Inserted { seq: found, line }
    } else if !later.contains(&expected) {
        VerifyError::Missing { seq: expected }
    } else if found >= total {
        VerifyError::Inserted { seq: found, line }
    } else {
        VerifyError::Reordered {
            expected,
            found,
            line,
        }
    }
}

/// Checks that the checkpoint `newer_note` extends `older_note` (one the reviewer kept), using
/// a consistency proof from the log. Returns both checkpoints.
pub fn verify_checkpoint_consistency(
    key: &NoteVerifier,
    older_note: &str,
    newer_note: &str,
    proof: &[Hash],
) -> Result<(Checkpoint, Checkpoint), VerifyError> {
    let older = key
        .open_checkpoint(older_note)
        .map_err(VerifyError::KeptCheckpoint)?;
    let newer = key
        .open_checkpoint(newer_note)
        .map_err(VerifyError::ExportCheckpoint)?;
    match verify_consistency(older.size, newer.size, &older.root, &newer.root, proof) {
        Ok(()) => Ok((older, newer)),
        Err(ProofError::SizesOutOfOrder { .. }) => Err(VerifyError::Rollback {
            kept: older.size,
            current: newer.size,
        }),
        Err(_) => Err(VerifyError::SplitView { size: older.size }),
    }
}
