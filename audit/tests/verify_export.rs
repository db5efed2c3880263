//! Offline verification with nothing but loupe-proto: exports built in memory the way the log
//! writes them, checked whole and after each kind of damage. (The control plane's tests do the
//! same on files written by a real log.)

use loupe_audit::checkpoint::{Checkpoint, NoteSigner};
use loupe_audit::event::{Action, Actor, Decision, NewEvent, Outcome, Resource, ResourceKind};
use loupe_audit::export::ExportWriter;
use loupe_audit::merkle::{CompactTree, leaf_hash};
use loupe_audit::verify::{VerifyError, verify_export};

const ORIGIN: &str = "loupe.test/audit";

fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, [1; 32]).expect("key")
}

fn event(i: u64) -> NewEvent {
    NewEvent::new(
        Actor {
            id: format!("spiffe://loupe.test/user/u{}", i % 3),
            cert_sha256: "00".repeat(32),
        },
        Action::CaptureStarted,
        Resource {
            kind: ResourceKind::Point,
            id: "checkout.apply_discount".into(),
        },
        Decision {
            outcome: Outcome::Allow,
            policies: vec!["p".into()],
            reason: format!("n{i}"),
        },
        format!("r-{i}"),
    )
}

/// Event lines for `n` events, and signed checkpoints at every size.
fn build(n: u64) -> (Vec<Vec<u8>>, Vec<String>) {
    let signer = signer();
    let mut tree = CompactTree::new();
    let mut prev = [0u8; 32];
    let mut lines = Vec::new();
    let mut notes = vec![sign(&signer, &tree)];
    for seq in 0..n {
        let line = event(seq)
            .seal(seq, 1_000 + seq, &prev)
            .canonical_bytes()
            .expect("encode");
        prev = leaf_hash(&line);
        tree.push(prev);
        lines.push(line);
        notes.push(sign(&signer, &tree));
    }
    (lines, notes)
}

fn sign(signer: &NoteSigner, tree: &CompactTree) -> String {
    Checkpoint {
        origin: ORIGIN.into(),
        size: tree.size(),
        root: tree.root(),
    }
    .sign(signer)
    .expect("sign")
}

fn export(lines: &[Vec<u8>], note: Option<&str>) -> Vec<u8> {
    let mut writer = ExportWriter::new(Vec::new());
    for line in lines {
        writer.event(line).expect("write");
    }
    match note {
        Some(note) => writer.finish(note).expect("finish"),
        None => {
            let mut out = Vec::new();
            for line in lines {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            out
        }
    }
}

fn verify(bytes: &[u8], kept: Option<&str>) -> Result<u64, VerifyError> {
    verify_export(bytes, &signer().verifier(), kept).map(|v| v.events)
}

#[test]
fn every_prefix_verifies_against_every_earlier_checkpoint() {
    let (lines, notes) = build(17);
    for n in 0..=17usize {
        let bytes = export(&lines[..n], Some(&notes[n]));
        for kept in &notes[..=n] {
            assert_eq!(verify(&bytes, Some(kept)).expect("verifies"), n as u64);
        }
        if n < 17 {
            let err = verify(&bytes, Some(&notes[n + 1])).expect_err("rollback");
            assert!(matches!(err, VerifyError::Rollback { .. }), "{err}");
        }
    }
}

#[test]
fn damage_is_named() {
    let (lines, notes) = build(10);
    let full = |l: &[Vec<u8>]| export(l, Some(&notes[10]));

    let mut edited = lines.clone();
    edited[4] = String::from_utf8(edited[4].clone())
        .expect("utf8")
        .replace("\"n4\"", "\"n5\"")
        .into_bytes();
    assert!(matches!(
        verify(&full(&edited), None),
        Err(VerifyError::Altered { seq: 4 })
    ));

    let mut deleted = lines.clone();
    deleted.remove(0);
    assert!(matches!(
        verify(&full(&deleted), None),
        Err(VerifyError::Missing { seq: 0 })
    ));

    let mut swapped = lines.clone();
    swapped.swap(8, 9);
    assert!(matches!(
        verify(&full(&swapped), None),
        Err(VerifyError::Reordered {
            expected: 8,
            found: 9,
            ..
        })
    ));

    let truncated = export(&lines[..7], Some(&notes[10]));
    assert!(matches!(
        verify(&truncated, None),
        Err(VerifyError::Truncated {
            expected: 10,
            found: 7
        })
    ));

    // Events the checkpoint does not cover are not vouched for.
    let extra = export(&lines, Some(&notes[8]));
    assert!(matches!(
        verify(&extra, None),
        Err(VerifyError::Uncovered {
            covered: 8,
            found: 10
        })
    ));
    // Without the export's checkpoint, the kept one governs.
    let bare = export(&lines[..8], None);
    assert_eq!(verify(&bare, Some(&notes[8])).expect("verifies"), 8);

    let mut garbage = full(&lines);
    garbage.splice(0..0, b"not json\n".iter().copied());
    assert!(matches!(
        verify(&garbage, None),
        Err(VerifyError::Malformed { line: 1, .. })
    ));

    let mut after = full(&lines);
    after.extend_from_slice(&lines[0]);
    after.push(b'\n');
    assert!(matches!(
        verify(&after, None),
        Err(VerifyError::Malformed { line: 12, .. })
    ));

    assert!(matches!(
        verify(&bare, None),
        Err(VerifyError::NoCheckpoint)
    ));
}
