//! Offline verification against every way an export can be tampered with, on real export
//! files written by a real log: edited, deleted, inserted and reordered events, a truncated
//! tail, checkpoints whose signature fails, a rollback and a split view.

mod fixture;

use std::path::{Path, PathBuf};

use loupe_audit::checkpoint::{Checkpoint, NoteError, NoteSigner};
use loupe_audit::merkle::{CompactTree, leaf_hash};
use loupe_audit::verify::{Verified, VerifyError, verify_checkpoint_consistency, verify_export};
use loupe_control_plane::audit::StoreError;
use loupe_control_plane::audit::check::{CheckError, verify_feed};

/// A log of 30 events, a checkpoint the reviewer kept at 20, and exports at 20 and 30.
struct Case {
    dir: tempfile::TempDir,
    kept_20: String,
    kept_30: String,
    export_20: PathBuf,
    export_30: PathBuf,
    proof_20_30: Vec<[u8; 32]>,
}

fn case() -> Case {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = fixture::open(&dir.path().join("log"));
    for i in 0..20 {
        log.append_blocking(fixture::event(i)).expect("append");
    }
    let kept_20 = log.checkpoint_blocking().expect("checkpoint").note;
    let export_20 = dir.path().join("export-20.jsonl");
    log.export_jsonl(std::fs::File::create(&export_20).expect("create"))
        .expect("export");
    for i in 20..30 {
        log.append_blocking(fixture::event(i)).expect("append");
    }
    let kept_30 = log.checkpoint_blocking().expect("checkpoint").note;
    let export_30 = dir.path().join("export-30.jsonl");
    log.export_jsonl(std::fs::File::create(&export_30).expect("create"))
        .expect("export");
    let proof_20_30 = log.consistency_proof(20, 30).expect("proof");
    log.close().expect("close");
    Case {
        dir,
        kept_20,
        kept_30,
        export_20,
        export_30,
        proof_20_30,
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read export")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes `lines` as a new export file next to the original and verifies it from disk.
fn verify_lines(
    case: &Case,
    name: &str,
    lines: &[String],
    kept: Option<&str>,
) -> Result<Verified, VerifyError> {
    let path = case.dir.path().join(name);
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).expect("write tampered export");
    verify_file(&path, kept)
}

fn verify_file(path: &Path, kept: Option<&str>) -> Result<Verified, VerifyError> {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("open export"));
    verify_export(file, &fixture::signer().verifier(), kept)
}

#[test]
fn an_untouched_export_verifies_with_and_without_a_kept_checkpoint() {
    let case = case();
    let verified = verify_file(&case.export_30, Some(&case.kept_20)).expect("verifies");
    assert_eq!(verified.events, 30);
    assert_eq!(verified.origin, fixture::ORIGIN);
    assert_eq!(
        verify_file(&case.export_30, None).expect("verifies").events,
        30
    );
    assert_eq!(
        verify_file(&case.export_20, Some(&case.kept_20))
            .expect("verifies")
            .events,
        20
    );
}

#[test]
fn an_edited_event_is_named() {
    let case = case();
    let mut l = lines(&case.export_30);
    assert!(l[12].contains("\"reason\":\"event 12\""));
    l[12] = l[12].replace("\"reason\":\"event 12\"", "\"reason\":\"routine\"");
    let err = verify_lines(&case, "edited.jsonl", &l, Some(&case.kept_20)).expect_err("edited");
    assert!(matches!(err, VerifyError::Altered { seq: 12 }), "{err}");

    // The last event has no successor to vouch for it; the checkpoint's root catches it.
    let mut l = lines(&case.export_30);
    l[29] = l[29].replace("\"request_id\":\"r-29\"", "\"request_id\":\"r-00\"");
    let err = verify_lines(&case, "edited-last.jsonl", &l, None).expect_err("edited");
    assert!(matches!(err, VerifyError::Altered { seq: 29 }), "{err}");

    // Editing the sequence number itself.
    let mut l = lines(&case.export_30);
    l[5] = l[5].replacen("{\"seq\":5,", "{\"seq\":6,", 1);
    let err = verify_lines(&case, "edited-seq.jsonl", &l, None).expect_err("edited");
    assert!(matches!(err, VerifyError::Inserted { seq: 6, .. }), "{err}");
}

#[test]
fn a_deleted_event_is_named() {
    let case = case();
    let mut l = lines(&case.export_30);
    l.remove(12);
    let err = verify_lines(&case, "deleted.jsonl", &l, None).expect_err("deleted");
    assert!(matches!(err, VerifyError::Missing { seq: 12 }), "{err}");
    assert!(err.to_string().contains("event 12"));
}

#[test]
fn an_inserted_event_is_named() {
    let case = case();
    let mut l = lines(&case.export_30);
    let forged = l[12].replace(
        "\"reason\":\"event 12\"",
        "\"reason\":\"approved by security\"",
    );
    l.insert(13, forged);
    let err = verify_lines(&case, "inserted.jsonl", &l, None).expect_err("inserted");
    assert!(
        matches!(err, VerifyError::Inserted { seq: 12, line: 14 }),
        "{err}"
    );

    // A made-up event with a fresh sequence number in the middle.
    let mut l = lines(&case.export_30);
    l.insert(7, l[3].replacen("{\"seq\":3,", "{\"seq\":999,", 1));
    let err = verify_lines(&case, "inserted-new.jsonl", &l, None).expect_err("inserted");
    assert!(
        matches!(err, VerifyError::Inserted { seq: 999, line: 8 }),
        "{err}"
    );
}

#[test]
fn reordered_events_are_named() {
    let case = case();
    let mut l = lines(&case.export_30);
    l.swap(12, 13);
    let err = verify_lines(&case, "reordered.jsonl", &l, None).expect_err("reordered");
    assert!(
        matches!(
            err,
            VerifyError::Reordered {
                expected: 12,
                found: 13,
                line: 13
            }
        ),
        "{err}"
    );
}

#[test]
fn a_truncated_tail_is_reported() {
    let case = case();
    // Last five events dropped, the checkpoint line kept.
    let mut l = lines(&case.export_30);
    l.drain(25..30);
    let err = verify_lines(&case, "truncated.jsonl", &l, None).expect_err("truncated");
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                expected: 30,
                found: 25
            }
        ),
        "{err}"
    );

    // The file cut mid-line, losing the last event's end and the checkpoint; the kept
    // checkpoint still says 30.
    let bytes = std::fs::read(&case.export_30).expect("read");
    let cut_at = bytes.len() - lines(&case.export_30)[30].len() - 40;
    let path = case.dir.path().join("cut.jsonl");
    std::fs::write(&path, &bytes[..cut_at]).expect("write");
    let err = verify_file(&path, Some(&case.kept_30)).expect_err("truncated");
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                expected: 30,
                found: 29
            }
        ),
        "{err}"
    );
}

#[test]
fn a_checkpoint_whose_signature_fails_is_reported() {
    let case = case();
    // The export's checkpoint claims another size.
    let mut l = lines(&case.export_30);
    l[30] = l[30].replacen("\\n30\\n", "\\n31\\n", 1);
    let err = verify_lines(&case, "bad-sig.jsonl", &l, None).expect_err("bad signature");
    assert!(
        matches!(
            err,
            VerifyError::ExportCheckpoint(NoteError::BadSignature(_))
        ),
        "{err}"
    );

    // The kept checkpoint was edited.
    let edited = case.kept_20.replacen("\n20\n", "\n21\n", 1);
    let err = verify_file(&case.export_30, Some(&edited)).expect_err("bad kept");
    assert!(
        matches!(err, VerifyError::KeptCheckpoint(NoteError::BadSignature(_))),
        "{err}"
    );

    // A checkpoint signed by another key under the same name.
    let impostor = NoteSigner::from_seed(fixture::ORIGIN, [9; 32]).expect("key");
    let body = case.kept_30.split("\n\n").next().expect("body").to_owned() + "\n";
    let forged = impostor.sign(&body).expect("sign");
    let err = verify_file(&case.export_30, Some(&forged)).expect_err("impostor");
    assert!(
        matches!(err, VerifyError::KeptCheckpoint(NoteError::NoSignature(_))),
        "{err}"
    );

    // No checkpoint line and none kept: nothing vouches for the events.
    let mut l = lines(&case.export_30);
    l.pop();
    let err = verify_lines(&case, "no-checkpoint.jsonl", &l, None).expect_err("no checkpoint");
    assert!(matches!(err, VerifyError::NoCheckpoint), "{err}");
}

#[test]
fn a_rollback_is_reported() {
    let case = case();
    // The reviewer kept the checkpoint at 30; the log now serves the export it made at 20.
    let err = verify_file(&case.export_20, Some(&case.kept_30)).expect_err("rollback");
    assert!(
        matches!(
            err,
            VerifyError::Rollback {
                kept: 30,
                current: 20
            }
        ),
        "{err}"
    );
    let err = verify_checkpoint_consistency(
        &fixture::signer().verifier(),
        &case.kept_30,
        &case.kept_20,
        &[],
    )
    .expect_err("rollback");
    assert!(
        matches!(
            err,
            VerifyError::Rollback {
                kept: 30,
                current: 20
            }
        ),
        "{err}"
    );
}

#[test]
fn a_split_view_is_reported() {
    let case = case();
    // A second log under the same key, with another history: the log showed the reviewer one
    // version and now exports another.
    let other_dir = case.dir.path().join("other");
    let other = fixture::open(&other_dir);
    for i in 0..20 {
        other
            .append_blocking(fixture::event(i + 100))
            .expect("append");
    }
    let other_kept = other.checkpoint_blocking().expect("checkpoint").note;
    other.close().expect("close");

    let err = verify_file(&case.export_30, Some(&other_kept)).expect_err("split view");
    assert!(matches!(err, VerifyError::SplitView { size: 20 }), "{err}");

    let verifier = fixture::signer().verifier();
    let err =
        verify_checkpoint_consistency(&verifier, &other_kept, &case.kept_30, &case.proof_20_30)
            .expect_err("split view");
    assert!(matches!(err, VerifyError::SplitView { size: 20 }), "{err}");
    let (older, newer) =
        verify_checkpoint_consistency(&verifier, &case.kept_20, &case.kept_30, &case.proof_20_30)
            .expect("the real history is consistent");
    assert_eq!((older.size, newer.size), (20, 30));
}

/// `count` sealed, chained event lines, as a stored log holds them.
fn chained_lines(count: u64) -> Vec<Vec<u8>> {
    let mut prev = [0u8; 32];
    (0..count)
        .map(|seq| {
            let line = fixture::event(seq)
                .seal(seq, 1_000 + seq, &prev)
                .canonical_bytes()
                .expect("encode");
            prev = leaf_hash(&line);
            line
        })
        .collect()
}

/// A signed checkpoint over `lines`.
fn note_over(signer: &NoteSigner, lines: &[Vec<u8>]) -> String {
    let mut tree = CompactTree::new();
    for line in lines {
        tree.push(leaf_hash(line));
    }
    Checkpoint {
        origin: signer.name().to_owned(),
        size: tree.size(),
        root: tree.root(),
    }
    .sign(signer)
    .expect("sign")
}

/// The stored-log check (`loupe control-plane verify`, the migration's read-back) streams a
/// log larger than its channel holds through the reviewer's verification, and names an
/// altered event.
#[test]
fn a_streamed_log_verifies_and_an_altered_one_is_named() {
    let signer = NoteSigner::generate("loupe-test").expect("signer");
    let events = chained_lines(2_000);
    let kept = note_over(&signer, &events[..700]);
    let head = note_over(&signer, &events);
    let check = |lines: &[Vec<u8>]| {
        verify_feed(&signer.verifier(), Some(&kept), |export| {
            for line in lines {
                export
                    .event(line)
                    .map_err(|e| StoreError::Io(e.to_string()))?;
            }
            Ok(head.clone())
        })
    };
    assert_eq!(check(&events).expect("verifies").events, 2_000);

    let mut altered = events.clone();
    altered[1_500][20] ^= 1;
    let error = check(&altered).expect_err("an altered event");
    assert!(matches!(error, CheckError::Verify(_)), "{error}");
}
