//! The audit log on a real PostgreSQL cluster (see `pg/mod.rs`), as several control-plane
//! replicas share it: each "replica" here is an `AuditLog` with its own store and connections,
//! as separate processes would have.
//!
//! - Appends are durable and reread, re-verified, after a restart.
//! - Three replicas appending at once make one log, numbered densely, that verifies offline.
//! - A replica that stops signs the log as the database holds it, including what others
//!   appended after its own last checkpoint.
//! - A replica whose view is stale catches up before it appends, and learns of the sessions
//!   others changed.
//! - Two replicas changing one session at once: one outcome, recorded once.
//! - A schema newer than this version is refused at start.
//! - A row no replica wrote is never built on: chained onto the log or not canonical, no
//!   signed checkpoint covers it.

mod backend;
mod fixture;
mod pg;

use backend::Backend;
use fixture::session_event;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, Mutex};

use loupe_audit::event::Action;
use loupe_audit::verify::verify_export;
use loupe_control_plane::audit::{
    AppendError, AuditLog, AuditLogConfig, Database, Filter, PostgresStore, SessionRow,
    StateChange, StateObserver, StoreError,
};

/// Exports the log through `log` and verifies the export offline.
fn verify(log: &AuditLog) -> u64 {
    let mut export = Vec::new();
    let checkpoint = log.export_jsonl(&mut export).expect("export");
    let verified =
        verify_export(export.as_slice(), &fixture::signer().verifier(), None).expect("verifies");
    assert_eq!(verified.events, checkpoint.checkpoint.size);
    verified.events
}

/// Writes `line` as event `seq`'s row straight into the database, as someone with write access
/// to it could, with `event`'s columns.
fn insert_event_row(
    client: &mut postgres::Client,
    seq: i64,
    event: &loupe_audit::event::AuditEvent,
    line: &[u8],
) {
    client
        .execute(
            "INSERT INTO events (seq, time_ms, actor, action, outcome, session, service, point, line)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &seq,
                &(event.time_ms as i64),
                &event.actor.id,
                &event.action.as_str(),
                &event.decision.outcome.as_str(),
                &event.session,
                &event.service,
                &event.point,
                &line,
            ],
        )
        .expect("insert");
}

/// `event` sealed as the event after row `seq`, chained onto that row's stored line.
fn sealed_after(
    client: &mut postgres::Client,
    seq: i64,
    event: loupe_audit::event::NewEvent,
) -> loupe_audit::event::AuditEvent {
    let line: Vec<u8> = client
        .query_one("SELECT line FROM events WHERE seq = $1", &[&seq])
        .expect("the stored event")
        .get(0);
    let stored = loupe_audit::event::AuditEvent::from_canonical(&line).expect("event");
    let next = u64::try_from(seq + 1).expect("a sequence number");
    event.seal(next, stored.time_ms, &loupe_audit::merkle::leaf_hash(&line))
}

/// A client of the database `backend` keeps the log in, connected as the replicas are.
fn database_client(backend: &Backend) -> postgres::Client {
    let url = backend.postgres_url().expect("a PostgreSQL backend");
    postgres::Client::connect(url, postgres::NoTls).expect("connect")
}

/// Appending `event` to `log` is refused: catching up, it met a row no signed checkpoint covers.
fn assert_refused_for_want_of_a_checkpoint(log: &AuditLog, event: loupe_audit::event::NewEvent) {
    match log.append_blocking(event) {
        Err(AppendError::Storage(StoreError::Corrupt(reason))) => {
            assert!(reason.contains("checkpoint"), "{reason}");
        }
        other => panic!("a row no checkpoint covers was built on: {other:?}"),
    }
}

#[test]
fn appends_are_durable_and_reread_after_a_restart() {
    let Some(backend) = Backend::postgres("appends_are_durable_and_reread_after_a_restart") else {
        return;
    };
    let log = backend.open();
    for i in 0..50 {
        assert_eq!(
            log.append_blocking(fixture::event(i)).expect("append").seq,
            i
        );
    }
    log.close().expect("close");
    drop(log);
    let log = backend.open();
    assert_eq!(log.size(), 50);
    let events: Vec<_> = log
        .stream(Filter::default())
        .collect::<Result<_, _>>()
        .expect("read");
    assert_eq!(events.len(), 50);
    let alice = fixture::actor("alice").id;
    let by_alice = log
        .stream(Filter {
            actor: Some(alice.clone()),
            ..Filter::default()
        })
        .count();
    assert_eq!(
        by_alice,
        events.iter().filter(|e| e.actor.id == alice).count()
    );
    assert_eq!(verify(&log), 50);
    assert_eq!(
        log.append_blocking(fixture::event(50)).expect("append").seq,
        50
    );
    log.close().expect("close");
}

#[test]
fn three_replicas_appending_at_once_make_one_log_that_verifies() {
    const REPLICAS: usize = 3;
    const THREADS: usize = 4;
    const EACH: u64 = 150;
    let Some(backend) =
        Backend::postgres("three_replicas_appending_at_once_make_one_log_that_verifies")
    else {
        return;
    };
    let replicas: Vec<Arc<AuditLog>> = (0..REPLICAS).map(|_| Arc::new(backend.open())).collect();
    let start = Arc::new(Barrier::new(REPLICAS * THREADS));
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for (r, log) in replicas.iter().enumerate() {
        for t in 0..THREADS {
            let (log, start, seqs) = (log.clone(), start.clone(), seqs.clone());
            threads.push(std::thread::spawn(move || {
                start.wait();
                for i in 0..EACH {
                    let n = ((r * THREADS + t) as u64) * EACH + i;
                    let receipt = log.append_blocking(fixture::event(n)).expect("append");
                    seqs.lock().expect("seqs").push(receipt.seq);
                }
            }));
        }
    }
    for thread in threads {
        thread.join().expect("appender");
    }
    let total = (REPLICAS * THREADS) as u64 * EACH;
    let seqs: BTreeSet<u64> = seqs.lock().expect("seqs").iter().copied().collect();
    assert_eq!(
        seqs.len() as u64,
        total,
        "two appends got one sequence number"
    );
    assert_eq!(
        seqs.last().copied(),
        Some(total - 1),
        "sequence numbers have gaps"
    );
    // Every replica catches up on what the others wrote: each one's checkpoint covers it all.
    for log in &replicas {
        log.close().expect("close");
    }
    for log in &replicas {
        assert_eq!(log.size(), total);
    }
    drop(replicas);
    // A replica started now re-verifies the whole shared log, and its export verifies.
    let log = backend.open();
    assert_eq!(log.size(), total);
    assert_eq!(verify(&log), total);
    log.close().expect("close");
}

#[test]
fn a_replica_that_stops_signs_what_others_appended_after_its_last_checkpoint() {
    let Some(backend) = Backend::postgres(
        "a_replica_that_stops_signs_what_others_appended_after_its_last_checkpoint",
    ) else {
        return;
    };
    // A keeps its checkpoint in the history on every idle tick.
    let a = backend.open_with(AuditLogConfig {
        checkpoint_interval: std::time::Duration::from_millis(10),
        ..AuditLogConfig::default()
    });
    let b = backend.open();
    a.append_blocking(fixture::event(0)).expect("append on A");
    // Long enough for A's ticks to archive its checkpoint of one event.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for n in 1..6 {
        b.append_blocking(fixture::event(n)).expect("append on B");
    }
    a.close().expect("close A");
    assert_eq!(a.size(), 6, "A caught up on B's events when it stopped");
    assert_eq!(
        a.latest_checkpoint().map(|signed| signed.checkpoint.size),
        Some(6),
        "A's final checkpoint covers B's events"
    );
    b.close().expect("close B");
}

#[test]
fn a_stale_replica_catches_up_before_it_appends() {
    let Some(backend) = Backend::postgres("a_stale_replica_catches_up_before_it_appends") else {
        return;
    };
    let (a, b) = (backend.open(), backend.open());
    for i in 0..10 {
        a.append_blocking(fixture::event(i)).expect("append on a");
    }
    // b has seen none of them: its append follows them, chained to the last.
    let receipt = b.append_blocking(fixture::event(10)).expect("append on b");
    assert_eq!(receipt.seq, 10);
    assert_eq!(b.size(), 11);
    let next = a.append_blocking(fixture::event(11)).expect("append on a");
    assert_eq!(next.seq, 11);
    assert_eq!(verify(&a), 12);
    a.close().expect("close");
    b.close().expect("close");
}

/// Remembers every session change it is told of.
#[derive(Default)]
struct Seen(Mutex<Vec<SessionRow>>);

impl StateObserver for Seen {
    fn applied(&self, change: &StateChange) {
        self.0.lock().expect("seen").push(change.session().clone());
    }
}

impl Seen {
    fn latest(&self, id: &str) -> Option<SessionRow> {
        self.0
            .lock()
            .expect("seen")
            .iter()
            .rev()
            .find(|row| row.id == id)
            .cloned()
    }
}

use fixture::session_row as row;

#[test]
fn two_replicas_ending_one_session_at_once_end_it_once() {
    let Some(backend) = Backend::postgres("two_replicas_ending_one_session_at_once_end_it_once")
    else {
        return;
    };
    let replicas = [Arc::new(backend.open()), Arc::new(backend.open())];
    let seen = [Arc::new(Seen::default()), Arc::new(Seen::default())];
    for (log, seen) in replicas.iter().zip(&seen) {
        log.observe_state(seen.clone());
    }
    for round in 0..20 {
        let session = format!("ses-{round}");
        replicas[0]
            .append_with_state_blocking(
                vec![session_event(&session, Action::SessionOpened)],
                vec![row(&session, "active", 1)],
            )
            .expect("open");
        // Both replicas decided on version 1: one closes, the other revokes, at once.
        let start = Arc::new(Barrier::new(2));
        let outcomes: Vec<_> = [
            (0, Action::SessionClosed, "closed"),
            (1, Action::SessionRevoked, "revoked"),
        ]
        .into_iter()
        .map(|(r, action, state)| {
            let (log, start, session) = (replicas[r].clone(), start.clone(), session.clone());
            std::thread::spawn(move || {
                start.wait();
                let result = log.append_with_state_blocking(
                    vec![session_event(&session, action)],
                    vec![row(&session, state, 2)],
                );
                (state, result)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("replica"))
        .collect();
        let won: Vec<&str> = outcomes
            .iter()
            .filter(|(_, result)| result.is_ok())
            .map(|(state, _)| *state)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: {outcomes:?}");
        for (_, result) in &outcomes {
            if let Err(error) = result {
                assert!(matches!(error, AppendError::Conflict(_)), "{error}");
            }
        }
        // Recorded once: one ending event in the log, and the stored state is the winner's.
        let endings = replicas[0]
            .stream(Filter {
                session: Some(session.clone()),
                ..Filter::default()
            })
            .map(|e| e.expect("read"))
            .filter(|e| matches!(e.action, Action::SessionClosed | Action::SessionRevoked))
            .count();
        // The replica that lost catches up on its next commit; read through both.
        let stored = replicas[1]
            .sessions()
            .expect("sessions")
            .into_iter()
            .find(|r| r.id == session)
            .expect("stored");
        assert_eq!(stored.state, won[0]);
        assert_eq!(stored.version, 2);
        // The loser was told the stored session with its refusal, so its view is current.
        for seen in &seen {
            assert_eq!(
                seen.latest(&session).map(|r| r.state),
                Some(won[0].to_owned()),
                "round {round}"
            );
        }
        assert_eq!(endings, 1, "round {round}: ended {endings} times");
    }
    for log in &replicas {
        log.close().expect("close");
    }
    let log = backend.open();
    let endings = log
        .stream(Filter::default())
        .map(|e| e.expect("read"))
        .filter(|e| matches!(e.action, Action::SessionClosed | Action::SessionRevoked))
        .count();
    assert_eq!(endings, 20);
    verify(&log);
    log.close().expect("close");
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let Some(url) = pg::database("a_newer_schema_is_refused_with_a_clear_error") else {
        return;
    };
    drop(PostgresStore::open(Database::parse(&url).expect("url")).expect("migrates"));
    // Opening again changes nothing.
    drop(PostgresStore::open(Database::parse(&url).expect("url")).expect("reopens"));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    client
        .batch_execute("UPDATE loupe_schema SET version = 99")
        .expect("a newer version");
    match PostgresStore::open(Database::parse(&url).expect("url")) {
        Err(error @ StoreError::SchemaTooNew { found: 99, .. }) => {
            assert!(error.to_string().contains("schema version 99"), "{error}");
        }
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn a_url_asking_for_unverifiable_tls_is_refused_and_a_bad_url_names_no_password() {
    match Database::parse("postgres://u:secret@127.0.0.1:1/db?sslmode=require") {
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains("needs sslrootcert"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
        Ok(_) => panic!("TLS without a CA to verify the server against was accepted"),
    }
    match Database::parse("postgres://u:secret@127.0.0.1:1/db?sslmode=prefer") {
        Err(error) => assert!(error.to_string().contains("plaintext"), "{error}"),
        Ok(_) => panic!("a mode that falls back to plaintext was accepted"),
    }
    match Database::parse("postgres://u:secret@127.0.0.1:notaport/db") {
        Err(error) => assert!(!error.to_string().contains("secret"), "{error}"),
        Ok(_) => panic!("a bad port was accepted"),
    }
}

#[test]
fn a_replica_refuses_to_extend_a_log_someone_else_altered_in_the_database() {
    let Some(backend) = Backend::postgres("a_replica_refuses_to_extend_a_log_someone_else_altered")
    else {
        return;
    };
    let (a, b) = (backend.open(), backend.open());
    for i in 0..5 {
        a.append_blocking(fixture::event(i)).expect("append");
    }
    let mut client = database_client(&backend);
    // A row that chains onto the log but that no replica wrote (no checkpoint covers it).
    let mut next = sealed_after(&mut client, 4, fixture::event(5));
    next.request_id = "forged".into();
    let bytes = next.canonical_bytes().expect("encode");
    insert_event_row(&mut client, 5, &next, &bytes);
    for log in [&a, &b] {
        assert_refused_for_want_of_a_checkpoint(log, fixture::event(6));
    }
    client
        .execute("DELETE FROM events WHERE seq = 5", &[])
        .expect("delete");
    // What was refused left nothing behind in the replicas' views: with the row gone, the log
    // goes on from event 5.
    assert_eq!(b.append_blocking(fixture::event(6)).expect("append").seq, 5);
    // The coordination row's frontier no longer matches the events.
    client
        .execute(
            "UPDATE log_head SET frontier = overlay(frontier placing '\\xff'::bytea from 40 for 1)",
            &[],
        )
        .expect("tamper");
    match a.append_blocking(fixture::event(7)) {
        Err(AppendError::Storage(StoreError::Corrupt(reason))) => {
            assert!(reason.contains("frontier"), "{reason}");
        }
        other => panic!("a tampered frontier was extended: {other:?}"),
    }
}

/// A replica catching up does not decode others' events in full: what stands in for it is the
/// signed checkpoint that must cover them. A row in a form no log writer produces (not
/// canonical), however well chained, is covered by none, and is never built on.
#[test]
fn a_replica_refuses_to_take_up_a_row_in_a_form_no_log_writer_produces() {
    let Some(backend) = Backend::postgres("a_replica_refuses_to_take_up_a_noncanonical_row") else {
        return;
    };
    let a = backend.open();
    for i in 0..3 {
        a.append_blocking(fixture::event(i)).expect("append");
    }
    // Opened now, `b` knows the three events as `a` does; both meet the fourth row catching up.
    let b = backend.open();
    let mut client = database_client(&backend);
    let next = sealed_after(&mut client, 2, fixture::event(3));
    // The same event with a space after its opening brace: still JSON, same fields.
    let mut bytes = next.canonical_bytes().expect("encode");
    bytes.insert(1, b' ');
    insert_event_row(&mut client, 3, &next, &bytes);
    for log in [&a, &b] {
        assert_refused_for_want_of_a_checkpoint(log, fixture::event(4));
        assert_eq!(log.size(), 3);
    }
    client
        .execute("DELETE FROM events WHERE seq = 3", &[])
        .expect("delete");
    assert_eq!(b.append_blocking(fixture::event(3)).expect("append").seq, 3);
    assert_eq!(verify(&b), 4);
}

/// The same, where only the signed checkpoint's root can tell: a replica wrote event 3 and
/// its checkpoint, and then someone rewrote the row in a form that still chains and still
/// parses. A replica catching up builds the tree from what is stored, and the checkpoint of
/// that size no longer covers it.
#[test]
fn a_replica_refuses_a_row_rewritten_under_its_checkpoint() {
    let Some(backend) = Backend::postgres("a_replica_refuses_a_row_rewritten_under_its_checkpoint")
    else {
        return;
    };
    let a = backend.open();
    for i in 0..3 {
        a.append_blocking(fixture::event(i)).expect("append");
    }
    let b = backend.open();
    a.append_blocking(fixture::event(3)).expect("append");
    let mut client = database_client(&backend);
    let line: Vec<u8> = client
        .query_one("SELECT line FROM events WHERE seq = 3", &[])
        .expect("event 3")
        .get(0);
    let mut rewritten = line.clone();
    rewritten.insert(1, b' ');
    client
        .execute("UPDATE events SET line = $1 WHERE seq = 3", &[&rewritten])
        .expect("rewrite");
    match b.append_blocking(fixture::event(4)) {
        Err(AppendError::Storage(StoreError::Corrupt(reason))) => {
            assert!(reason.contains("does not cover them"), "{reason}");
        }
        other => panic!("a row its checkpoint does not cover was built on: {other:?}"),
    }
    assert_eq!(b.size(), 3);
}

#[test]
fn a_url_asking_for_tls_never_falls_back_to_plaintext() {
    // This binary's cluster does not speak TLS.
    let Some(url) = pg::database("a_url_asking_for_tls_never_falls_back_to_plaintext") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let authority =
        loupe_trust::authority::Authority::for_tests("loupe-test-database-ca").expect("ca");
    std::fs::write(&ca, authority.cert_pem()).expect("ca file");
    let tls_url = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    match PostgresStore::open(Database::parse(&tls_url).expect("url")) {
        Err(StoreError::Other(reason)) | Err(StoreError::Unavailable(reason)) => {
            assert!(reason.contains("TLS"), "{reason}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("connected in the clear although the URL asks for TLS"),
    }
}
