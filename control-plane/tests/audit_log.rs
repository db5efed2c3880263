//! The audit log end to end on real SQLite files: appending, reading, querying, paging,
//! proofs, exports, concurrency, hostile input, injected I/O errors, and refusing to start on
//! a tampered database. What holds for any store runs on a real PostgreSQL database too
//! (`postgres::…`; see `backend/mod.rs`).

mod backend;
mod fixture;
mod pg;

use backend::Backend;

use std::collections::BTreeSet;
use std::sync::Arc;

use loupe_audit::checkpoint::NoteSigner;
use loupe_audit::event::{Action, AuditEvent, Detail, Outcome};
use loupe_audit::merkle::{Hash, leaf_hash, root_of};
use loupe_audit::proof::{verify_consistency, verify_inclusion};
use loupe_audit::verify::{verify_checkpoint_consistency, verify_export};
use loupe_control_plane::audit::fault::{Fault, FaultInjectingStore};
use loupe_control_plane::audit::log::OpenError;
use loupe_control_plane::audit::sqlite::DB_FILE;
use loupe_control_plane::audit::{
    AppendError, AuditLog, AuditLogConfig, Cursor, Filter, SqliteStore, StoreError,
};

fn fill(log: &AuditLog, from: u64, to: u64) {
    for i in from..to {
        let receipt = log.append_blocking(fixture::event(i)).expect("append");
        assert_eq!(receipt.seq, i);
    }
}

fn all_events(log: &AuditLog) -> Vec<AuditEvent> {
    log.stream(Filter::default())
        .collect::<Result<_, _>>()
        .expect("read")
}

fn appends_are_sequenced_durable_and_read_back_after_restart(backend: &Backend) {
    let log = backend.open();
    fill(&log, 0, 50);
    log.close().expect("close");
    drop(log);

    let log = backend.open();
    assert_eq!(log.size(), 50);
    let checkpoint = log.latest_checkpoint().expect("checkpoint on close");
    assert_eq!(checkpoint.checkpoint.size, 50);
    let events = all_events(&log);
    assert_eq!(events.len(), 50);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64);
        assert_eq!(event.request_id, format!("r-{i}"));
        assert_eq!(log.event(i as u64).expect("event"), *event);
    }
    assert!(events.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    // The chain: each event records its predecessor's leaf hash.
    for pair in events.windows(2) {
        let prev = leaf_hash(&pair[0].canonical_bytes().expect("encode"));
        assert_eq!(pair[1].prev, loupe_audit::merkle::to_hex(&prev));
    }
    let next = log.append_blocking(fixture::event(50)).expect("append");
    assert_eq!(next.seq, 50);
    log.close().expect("close");
}

fn queries_filter_on_every_column_and_pages_never_overlap(backend: &Backend) {
    let log = backend.open();
    fill(&log, 0, 120);
    let everything = all_events(&log);
    assert_eq!(everything.len(), 120);

    let check = |filter: Filter, keep: &dyn Fn(&AuditEvent) -> bool| {
        let want: Vec<u64> = everything
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.seq)
            .collect();
        assert!(
            !want.is_empty(),
            "filter {filter:?} matches nothing; the test would be vacuous"
        );
        assert!(
            want.len() < everything.len(),
            "filter {filter:?} matches everything"
        );
        let got: Vec<u64> = log
            .stream(filter.clone())
            .map(|e| e.expect("read").seq)
            .collect();
        assert_eq!(got, want, "{filter:?}");
    };
    let alice = fixture::actor("alice").id;
    check(
        Filter {
            actor: Some(alice.clone()),
            ..Filter::default()
        },
        &|e| e.actor.id == alice,
    );
    check(
        Filter {
            session: Some("s-2".into()),
            ..Filter::default()
        },
        &|e| e.session.as_deref() == Some("s-2"),
    );
    check(
        Filter {
            service: Some("payments".into()),
            ..Filter::default()
        },
        &|e| e.service.as_deref() == Some("payments"),
    );
    check(
        Filter {
            point: Some("checkout.point2".into()),
            ..Filter::default()
        },
        &|e| e.point.as_deref() == Some("checkout.point2"),
    );
    check(
        Filter {
            action: Some(Action::SnapshotDelivered),
            ..Filter::default()
        },
        &|e| e.action == Action::SnapshotDelivered,
    );
    check(
        Filter {
            outcome: Some(Outcome::Deny),
            ..Filter::default()
        },
        &|e| e.decision.outcome == Outcome::Deny,
    );
    check(
        Filter {
            actor: Some(alice.clone()),
            service: Some("checkout".into()),
            ..Filter::default()
        },
        &|e| e.actor.id == alice && e.service.as_deref() == Some("checkout"),
    );
    // Time ranges: split the log at the time of event 60 (times are non-decreasing).
    let t = everything[60].time_ms;
    let before: Vec<_> = log
        .stream(Filter {
            until_ms: Some(t),
            ..Filter::default()
        })
        .map(|e| e.expect("read").seq)
        .collect();
    let after: Vec<_> = log
        .stream(Filter {
            since_ms: Some(t),
            ..Filter::default()
        })
        .map(|e| e.expect("read").seq)
        .collect();
    let want_before: Vec<u64> = everything
        .iter()
        .filter(|e| e.time_ms < t)
        .map(|e| e.seq)
        .collect();
    let want_after: Vec<u64> = everything
        .iter()
        .filter(|e| e.time_ms >= t)
        .map(|e| e.seq)
        .collect();
    assert_eq!(before, want_before);
    assert_eq!(after, want_after);
    assert!(after.contains(&60) && !before.contains(&60));
    // A window in the middle, paged with a cursor.
    let (t0, t1) = (everything[30].time_ms, everything[90].time_ms);
    let window = Filter {
        since_ms: Some(t0),
        until_ms: Some(t1),
        ..Filter::default()
    };
    let want: Vec<u64> = everything
        .iter()
        .filter(|e| e.time_ms >= t0 && e.time_ms < t1)
        .map(|e| e.seq)
        .collect();
    assert!(!want.is_empty());
    let first = log.query(&window, None, 5).expect("page");
    let rest = log.query(&window, first.next, 1000).expect("page");
    let got: Vec<u64> = first
        .events
        .iter()
        .chain(&rest.events)
        .map(|e| e.seq)
        .collect();
    assert_eq!(got, want);

    // Pages of 7 by cursor: disjoint, in order, together everything.
    let mut cursor: Option<Cursor> = None;
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let page = log.query(&Filter::default(), cursor, 7).expect("page");
        assert!(page.events.len() <= 7);
        paged.extend(page.events.iter().map(|e| e.seq));
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, (0..120).collect::<Vec<_>>());
    assert_eq!(pages, 18);
    log.close().expect("close");
}

fn every_event_has_an_inclusion_proof_and_checkpoints_are_consistent(backend: &Backend) {
    let log = backend.open();
    fill(&log, 0, 13);
    let first = log.checkpoint_blocking().expect("checkpoint");
    assert_eq!(first.checkpoint.size, 13);
    fill(&log, 13, 37);
    let second = log.checkpoint_blocking().expect("checkpoint");
    assert_eq!(second.checkpoint.size, 37);

    let leaves: Vec<Hash> = all_events(&log)
        .iter()
        .map(|e| leaf_hash(&e.canonical_bytes().expect("encode")))
        .collect();
    assert_eq!(root_of(&leaves), second.checkpoint.root);
    for seq in 0..37 {
        let proof = log.inclusion_proof(seq, 37).expect("proof");
        assert_eq!(proof.leaf_hash, leaves[seq as usize]);
        verify_inclusion(
            &proof.leaf_hash,
            seq,
            37,
            &proof.path,
            &second.checkpoint.root,
        )
        .expect("inclusion verifies");
    }
    for m in 0..=37u64 {
        for n in m..=37u64 {
            let proof = log.consistency_proof(m, n).expect("proof");
            let (rm, rn) = (
                root_of(&leaves[..m as usize]),
                root_of(&leaves[..n as usize]),
            );
            verify_consistency(m, n, &rm, &rn, &proof).expect("consistency verifies");
        }
    }
    let proof = log.consistency_proof(13, 37).expect("proof");
    let verifier = log.verifier().clone();
    verify_checkpoint_consistency(&verifier, &first.note, &second.note, &proof)
        .expect("checkpoints consistent");
    assert!(log.inclusion_proof(37, 37).is_err());
    assert!(log.consistency_proof(1, 38).is_err());
    log.close().expect("close");
}

fn the_jsonl_export_verifies_offline_and_the_ocsf_export_is_classified(backend: &Backend) {
    let log = backend.open();
    fill(&log, 0, 10);
    let kept = log.checkpoint_blocking().expect("checkpoint");
    fill(&log, 10, 40);
    log.checkpoint_blocking().expect("checkpoint");
    let path = backend.scratch().join("export.jsonl");
    let file = std::fs::File::create(&path).expect("create");
    let exported = log.export_jsonl(file).expect("export");
    assert_eq!(exported.checkpoint.size, 40);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 41);
    let verified =
        verify_export(text.as_bytes(), log.verifier(), Some(&kept.note)).expect("verify");
    assert_eq!(verified.events, 40);
    assert_eq!(verified.root, exported.checkpoint.root);
    assert!(
        verified
            .to_string()
            .starts_with("verified: 40 events, root ")
    );

    let mut ocsf = Vec::new();
    let count = log
        .export_ocsf(&Filter::default(), &mut ocsf)
        .expect("ocsf");
    assert_eq!(count, 40);
    let objects: Vec<serde_json::Value> = ocsf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("json"))
        .collect();
    assert_eq!(objects.len(), 40);
    let mut classes = BTreeSet::new();
    for object in &objects {
        let class_uid = object["class_uid"].as_u64().expect("class_uid");
        let activity_id = object["activity_id"].as_u64().expect("activity_id");
        assert_eq!(
            object["type_uid"].as_u64(),
            Some(class_uid * 100 + activity_id)
        );
        assert_eq!(object["category_uid"].as_u64(), Some(class_uid / 1000));
        classes.insert(class_uid);
        match object["unmapped"]["loupe_action"].as_str() {
            Some("snapshot.delivered") => {
                assert_eq!(object["type_uid"], 600302);
                assert_eq!(object["category_uid"], 6);
            }
            Some("session.denied") => assert_eq!(object["type_uid"], 300301),
            _ => {}
        }
        if object["unmapped"]["details"]["n"] == 3 {
            assert_eq!(object["status_id"], 2, "event 3 is a denial");
        }
    }
    assert_eq!(classes, BTreeSet::from([3003, 6003]));
    log.close().expect("close");
}

fn concurrent_writers_get_distinct_dense_sequences(backend: &Backend) {
    let log = Arc::new(backend.open());
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..100u64)
                    .map(|i| {
                        log.append_blocking(fixture::event(t * 1000 + i))
                            .expect("append")
                            .seq
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..1600).collect::<Vec<_>>());

    // The async API from many tasks at once.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let more: Vec<u64> = runtime.block_on(async {
        let tasks: Vec<_> = (0..200u64)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(fixture::event(i)).await })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.expect("task").expect("append").seq);
        }
        out
    });
    let distinct: BTreeSet<u64> = more.iter().copied().collect();
    assert_eq!(distinct, (1600..1800).collect());
    log.close().expect("close");
    drop(log);
    let log = backend.open();
    assert_eq!(log.size(), 1800);
    log.close().expect("close");
}

fn hostile_strings_cannot_forge_or_break_records(backend: &Backend) {
    let log = backend.open();
    let forged_line = "\n{\"seq\":0,\"time_ms\":0}\n";
    let ansi = "\u{1b}[2J\u{1b}[31mALL CLEAR\u{1b}[0m\r\u{7}\u{2028}";
    let mut hostile = fixture::event(0)
        .client_text("reason", forged_line.as_bytes())
        .client_text("note", ansi.as_bytes())
        .client_text("raw", b"\xff\xfe\n\xc3(")
        .client_request_id(b"r-\x80\n1");
    hostile.actor.id = "spiffe://loupe.test/user/eve\n{\"seq\":1}".into();
    hostile.session = Some("s-\u{1b}]0;title\u{7}".into());
    let receipt = log.append_blocking(hostile.clone()).expect("append");
    fill(&log, 1, 3);
    log.checkpoint_blocking().expect("checkpoint");

    let stored = log.event(receipt.seq).expect("read");
    assert_eq!(stored.actor.id, hostile.actor.id);
    assert_eq!(stored.session, hostile.session);
    assert_eq!(stored.details["reason"], Detail::Text(forged_line.into()));
    assert_eq!(stored.details["note"], Detail::Text(ansi.into()));
    assert_eq!(
        stored.details["raw"],
        Detail::Text("\u{fffd}\u{fffd}\n\u{fffd}(".into())
    );
    assert_eq!(stored.request_id, "r-\u{fffd}\n1");
    assert_eq!(
        stored.lossy,
        vec!["details.raw".to_owned(), "request_id".to_owned()]
    );
    // Queries match the exact hostile value.
    let by_session = log
        .query(
            &Filter {
                session: hostile.session.clone(),
                ..Filter::default()
            },
            None,
            10,
        )
        .expect("query");
    assert_eq!(by_session.events.len(), 1);

    let mut export = Vec::new();
    log.export_jsonl(&mut export).expect("export");
    assert_eq!(export.iter().filter(|b| **b == b'\n').count(), 4);
    assert!(!export.contains(&0x1b) && !export.contains(&b'\r'));
    verify_export(export.as_slice(), log.verifier(), None).expect("verifies");
    log.close().expect("close");
    drop(log);
    let log = backend.open();
    assert_eq!(log.size(), 3);
    log.close().expect("close");
}

#[test]
fn an_injected_io_error_refuses_the_append_and_the_log_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let (store, switch) = FaultInjectingStore::new(store);
    let log = AuditLog::open_with_store(store, fixture::signer(), AuditLogConfig::default())
        .expect("open");
    fill(&log, 0, 3);
    switch.set_failing(true);
    let err = log
        .append_blocking(fixture::event(3))
        .expect_err("append must fail while storage fails");
    assert!(
        matches!(err, AppendError::Storage(StoreError::Io(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("action refused"), "{err}");
    assert!(log.append_blocking(fixture::event(3)).is_err());
    assert_eq!(log.size(), 3);
    switch.set_failing(false);
    let receipt = log
        .append_blocking(fixture::event(3))
        .expect("append after recovery");
    assert_eq!(
        receipt.seq, 3,
        "no sequence number is lost to a failed write"
    );
    log.close().expect("close");
    drop(log);
    let log = fixture::open(dir.path());
    assert_eq!(log.size(), 4);
    log.close().expect("close");
}

#[test]
fn a_write_that_reports_failure_but_landed_is_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("store");
    let (store, switch) = FaultInjectingStore::new(store);
    let log = AuditLog::open_with_store(store, fixture::signer(), AuditLogConfig::default())
        .expect("open");
    fill(&log, 0, 3);
    // The write reaches the disk but reports an error (like a failed fsync): the caller is
    // told to refuse, and the log must not reuse that sequence number.
    switch.set(Fault::FailAfterWrite);
    let err = log
        .append_blocking(fixture::event(3))
        .expect_err("reported as failed");
    assert!(
        matches!(err, AppendError::Storage(StoreError::Io(_))),
        "{err:?}"
    );
    switch.set(Fault::None);
    let receipt = log.append_blocking(fixture::event(4)).expect("append");
    assert_eq!(
        receipt.seq, 4,
        "sequence 3 is on disk and must not be overwritten"
    );
    let events = all_events(&log);
    assert_eq!(events.len(), 5);
    assert_eq!(events[3].request_id, "r-3");
    log.checkpoint_blocking().expect("checkpoint");
    let mut export = Vec::new();
    log.export_jsonl(&mut export).expect("export");
    verify_export(export.as_slice(), log.verifier(), None).expect("verifies");
    log.close().expect("close");
    drop(log);
    let log = fixture::open(dir.path());
    assert_eq!(log.size(), 5);
    log.close().expect("close");
}

/// Builds a closed 20-event log, lets `tamper` edit its database directly, and returns what
/// reopening says.
fn reopen_after(tamper: impl FnOnce(&rusqlite::Connection)) -> Result<AuditLog, OpenError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = fixture::open(dir.path());
    fill(&log, 0, 20);
    log.close().expect("close");
    drop(log);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    tamper(&conn);
    drop(conn);
    let result = AuditLog::open(dir.path(), fixture::signer(), AuditLogConfig::default());
    if let Ok(log) = &result {
        log.close().expect("close");
    }
    result
}

fn edit_line(conn: &rusqlite::Connection, seq: i64, from: &str, to: &str) {
    let line: Vec<u8> = conn
        .query_row("SELECT line FROM events WHERE seq = ?1", [seq], |r| {
            r.get(0)
        })
        .expect("line");
    let text = String::from_utf8(line).expect("utf8");
    assert!(text.contains(from), "event {seq} has no {from:?}");
    let edited = text.replacen(from, to, 1);
    conn.execute(
        "UPDATE events SET line = ?1 WHERE seq = ?2",
        rusqlite::params![edited.into_bytes(), seq],
    )
    .expect("update");
}

fn tampered_at(result: Result<AuditLog, OpenError>) -> (u64, String) {
    match result {
        Err(OpenError::Tampered { seq, reason }) => (seq, reason),
        Err(other) => panic!("expected a tampering error, got {other}"),
        Ok(_) => panic!("a tampered log started"),
    }
}

#[test]
fn a_tampered_database_refuses_to_start_and_names_the_event() {
    let untouched = reopen_after(|_| {});
    assert!(untouched.is_ok(), "the untouched log must start");

    let (seq, _) = tampered_at(reopen_after(|c| {
        edit_line(c, 5, "event 5", "event 5 (nothing to see)")
    }));
    assert_eq!(seq, 5);

    let (seq, reason) = tampered_at(reopen_after(|c| {
        c.execute("DELETE FROM events WHERE seq = 7", [])
            .expect("delete");
    }));
    assert_eq!(seq, 7, "{reason}");
    assert!(reason.contains("missing"));

    let (seq, reason) = tampered_at(reopen_after(|c| edit_line(c, 19, "r-19", "r-99")));
    assert_eq!(seq, 19, "{reason}");
    assert!(reason.contains("signed checkpoint"));

    let (seq, reason) = tampered_at(reopen_after(|c| {
        c.execute("DELETE FROM events WHERE seq >= 17", [])
            .expect("delete");
    }));
    assert_eq!(seq, 17, "{reason}");

    let (seq, reason) = tampered_at(reopen_after(|c| {
        c.execute(
            "UPDATE events SET actor = 'someone-else' WHERE seq = 11",
            [],
        )
        .expect("update");
    }));
    assert_eq!(seq, 11);
    assert!(reason.contains("indexed columns"));

    let (seq, _) = tampered_at(reopen_after(|c| edit_line(c, 4, "\"seq\":4", "\"seq\":40")));
    assert_eq!(seq, 4);

    let message = reopen_after(|c| edit_line(c, 9, "r-9", "r-X"))
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("event 9"), "{message}");

    // Every commit is signed, so an event no checkpoint covers was not written by the log:
    // deleting the latest checkpoint exposes the events after the one kept in the history,
    // and deleting them all exposes the first event.
    let (seq, reason) = tampered_at(reopen_after(|c| {
        c.execute("DELETE FROM head", []).expect("delete");
        c.execute("DELETE FROM checkpoints WHERE size = 20", [])
            .expect("delete");
    }));
    assert!(seq < 20, "{reason}");
    assert!(reason.contains("checkpoint"), "{reason}");
    let (seq, reason) = tampered_at(reopen_after(|c| {
        c.execute_batch("DELETE FROM head; DELETE FROM checkpoints;")
            .expect("delete");
    }));
    assert_eq!(seq, 0, "{reason}");

    let other = NoteSigner::from_seed(fixture::ORIGIN, [8; 32]).expect("key");
    let result = reopen_after(|c| {
        let note: String = c
            .query_row("SELECT note FROM head", [], |r| r.get(0))
            .expect("note");
        let body = note.split("\n\n").next().expect("body").to_owned() + "\n";
        let forged = other.sign(&body).expect("sign");
        c.execute("UPDATE head SET note = ?1", [&forged])
            .expect("update");
        c.execute("UPDATE checkpoints SET note = ?1", [&forged])
            .expect("update");
    });
    assert!(matches!(result, Err(OpenError::Checkpoint(_))));
}

fn checkpoints_follow_the_events_without_being_asked(backend: &Backend) {
    let config = AuditLogConfig {
        checkpoint_interval: std::time::Duration::from_millis(200),
        ..AuditLogConfig::default()
    };
    let log = backend.open_with(config);
    for round in 1..=3u64 {
        fill(&log, (round - 1) * 10, round * 10);
        // The ticker must get a checkpoint signed for these events with no further appends;
        // the generous bound only keeps a loaded machine from failing the test.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let covered = log.latest_checkpoint().map_or(0, |c| c.checkpoint.size);
            if covered == round * 10 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint for {round}0 events"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let checkpoint = log.latest_checkpoint().expect("checkpoint");
    let opened = log
        .verifier()
        .open_checkpoint(&checkpoint.note)
        .expect("signed by the log's key");
    assert_eq!(opened, checkpoint.checkpoint);
    log.close().expect("close");
}

on_both_backends!(
    appends_are_sequenced_durable_and_read_back_after_restart,
    queries_filter_on_every_column_and_pages_never_overlap,
    every_event_has_an_inclusion_proof_and_checkpoints_are_consistent,
    the_jsonl_export_verifies_offline_and_the_ocsf_export_is_classified,
    concurrent_writers_get_distinct_dense_sequences,
    hostile_strings_cannot_forge_or_break_records,
    checkpoints_follow_the_events_without_being_asked,
);
