//! One decision, one transaction, at the storage level: a decision's events and the state
//! change they record commit together or not at all, whatever step of the commit fails — an
//! I/O error at that step, or the process ending there — and no event exists that a signed
//! checkpoint does not cover.
//!
//! The crash cases re-execute this test binary as a child that ends itself (`abort`, as
//! abrupt as SIGKILL) at the chosen step of the chosen transition; the parent reopens the log,
//! which re-verifies itself, and checks that the log and the stored sessions agree.

mod fixture;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

use loupe_audit::event::{Action, Decision, NewEvent, Outcome, Resource, ResourceKind};
use loupe_control_plane::audit::fault::{CommitStep, StepFault};
use loupe_control_plane::audit::log::OpenError;
use loupe_control_plane::audit::sqlite::DB_FILE;
use loupe_control_plane::audit::{
    AuditLog, AuditLogConfig, Filter, SqliteStore, StateChange, StateObserver, StoredEvent,
};

/// A transition of one session: the events that record it and the state it leads to.
#[derive(Clone, Copy, Debug)]
enum Transition {
    Open,
    Request,
    Approve,
    Deny,
    Close,
    Revoke,
    Expire,
}

const TRANSITIONS: [Transition; 7] = [
    Transition::Open,
    Transition::Request,
    Transition::Approve,
    Transition::Deny,
    Transition::Close,
    Transition::Revoke,
    Transition::Expire,
];

impl Transition {
    fn actions(self) -> &'static [Action] {
        match self {
            Transition::Open => &[Action::SessionRequested, Action::SessionOpened],
            Transition::Request => &[Action::SessionRequested],
            Transition::Approve => &[Action::SessionApproved, Action::SessionOpened],
            Transition::Deny => &[Action::SessionDenied],
            Transition::Close => &[Action::SessionClosed],
            Transition::Revoke => &[Action::SessionRevoked],
            Transition::Expire => &[Action::SessionExpired],
        }
    }

    fn state(self) -> &'static str {
        match self {
            Transition::Open | Transition::Approve => "active",
            Transition::Request => "pending",
            Transition::Deny => "denied",
            Transition::Close => "closed",
            Transition::Revoke => "revoked",
            Transition::Expire => "expired",
        }
    }

    /// The transition that must come first (the session must exist, or be pending).
    fn before(self) -> Option<Transition> {
        match self {
            Transition::Open | Transition::Request => None,
            Transition::Approve | Transition::Deny => Some(Transition::Request),
            Transition::Close | Transition::Revoke | Transition::Expire => Some(Transition::Open),
        }
    }
}

fn events(session: &str, transition: Transition) -> Vec<NewEvent> {
    transition
        .actions()
        .iter()
        .map(|action| {
            NewEvent::new(
                fixture::actor("alice"),
                *action,
                Resource {
                    kind: ResourceKind::Session,
                    id: session.into(),
                },
                Decision {
                    outcome: Outcome::Allow,
                    policies: vec!["sre-open-sessions".into()],
                    reason: String::new(),
                },
                format!("r-{session}"),
            )
            .session(session)
            .service("checkout")
        })
        .collect()
}

fn change(session: &str, transition: Transition) -> StateChange {
    // The second version when a transition must come first.
    let version = if transition.before().is_some() { 2 } else { 1 };
    fixture::session_row(session, transition.state(), version)
}

/// Runs `transition` of `session`, as the control plane does: events and state together.
fn run(log: &AuditLog, session: &str, transition: Transition) -> bool {
    log.append_with_state_blocking(
        events(session, transition),
        vec![change(session, transition)],
    )
    .is_ok()
}

/// The state each session's events imply (the last state-changing event wins).
fn implied(log: &AuditLog) -> BTreeMap<String, String> {
    let mut implied = BTreeMap::new();
    for event in log.stream(Filter::default()) {
        let event = event.expect("readable event");
        let Some(session) = event.session.clone() else {
            continue;
        };
        let state = match event.action {
            Action::SessionRequested => "pending",
            Action::SessionOpened => "active",
            Action::SessionDenied => "denied",
            Action::SessionClosed => "closed",
            Action::SessionRevoked => "revoked",
            Action::SessionExpired => "expired",
            _ => continue,
        };
        implied.insert(session, state.to_owned());
    }
    implied
}

fn stored(log: &AuditLog) -> BTreeMap<String, String> {
    log.sessions()
        .expect("sessions")
        .into_iter()
        .map(|row| (row.id, row.state))
        .collect()
}

/// The control plane's in-memory table, as the log keeps it.
#[derive(Default)]
struct Table(Mutex<BTreeMap<String, String>>);

impl StateObserver for Table {
    fn applied(&self, change: &StateChange) {
        let StateChange::PutSession(row) = change;
        self.0
            .lock()
            .expect("table")
            .insert(row.id.clone(), row.state.clone());
    }
}

impl Table {
    fn snapshot(&self) -> BTreeMap<String, String> {
        self.0.lock().expect("table").clone()
    }
}

fn open_with_fault(dir: &std::path::Path, fault: &StepFault) -> (AuditLog, Arc<Table>) {
    let store = SqliteStore::open(dir)
        .expect("store")
        .with_step_hook(fault.hook());
    let log = AuditLog::open_with_store(store, fixture::signer(), AuditLogConfig::default())
        .expect("open");
    let table = Arc::new(Table::default());
    for row in log.sessions().expect("sessions") {
        table.applied(&StateChange::PutSession(row));
    }
    log.observe_state(table.clone());
    (log, table)
}

#[test]
fn a_failure_at_any_step_of_a_commit_stores_neither_the_events_nor_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = StepFault::new();
    let (log, table) = open_with_fault(dir.path(), &fault);
    let mut n = 0;
    for step in CommitStep::ALL {
        for transition in TRANSITIONS {
            n += 1;
            let session = format!("ses-{n}");
            if let Some(before) = transition.before() {
                assert!(run(&log, &session, before));
            }
            let (size, state, memory) = (log.size(), stored(&log), table.snapshot());
            fault.arm(step);
            assert!(
                !run(&log, &session, transition),
                "{step:?}/{transition:?}: the failed commit was acknowledged"
            );
            assert!(!fault.is_armed(), "{step:?} was never reached");
            if step == CommitStep::Committed {
                // COMMIT returned and then the caller was told it failed (like an fsync error
                // after the data went out): it landed, events and state alike, and the next
                // write takes both up instead of overwriting them.
                assert!(run(&log, &format!("ses-probe-{n}"), Transition::Open));
                assert_eq!(log.size(), size + transition.actions().len() as u64 + 2);
                assert_eq!(
                    table.snapshot().get(&session).map(String::as_str),
                    Some(transition.state()),
                    "{step:?}/{transition:?}: memory does not show what is stored"
                );
            } else {
                assert_eq!(
                    log.size(),
                    size,
                    "{step:?}/{transition:?}: events left behind"
                );
                assert_eq!(
                    stored(&log),
                    state,
                    "{step:?}/{transition:?}: state changed"
                );
                assert_eq!(
                    table.snapshot(),
                    memory,
                    "{step:?}/{transition:?}: memory changed"
                );
                // Nothing is lost to the failure: the transition goes through when retried.
                assert!(run(&log, &session, transition));
            }
            assert_eq!(stored(&log), implied(&log), "{step:?}/{transition:?}");
            assert_eq!(table.snapshot(), stored(&log), "{step:?}/{transition:?}");
            let checkpoint = log.latest_checkpoint().expect("checkpoint");
            assert_eq!(checkpoint.checkpoint.size, log.size(), "an unsigned tail");
        }
    }
    log.close().expect("close");
    drop(log);
    let (log, _) = open_with_fault(dir.path(), &fault);
    assert_eq!(stored(&log), implied(&log));
    log.close().expect("close");
}

const CHILD_ENV: &str = "LOUPE_AUDIT_STATE_CRASH";
const CRASH_TEST: &str = "a_crash_at_any_step_of_a_commit_leaves_the_log_and_the_state_agreeing";

/// Child mode: run `before` (if any), then `transition` with the process ending at `step`.
fn crash_child(spec: &str) -> ! {
    let mut parts = spec.split('|');
    let (dir, step, transition, session) = (
        parts.next().expect("dir"),
        parts.next().expect("step"),
        parts.next().expect("transition"),
        parts.next().expect("session"),
    );
    let step = CommitStep::ALL
        .into_iter()
        .find(|s| format!("{s:?}") == step)
        .expect("step");
    let transition = TRANSITIONS
        .into_iter()
        .find(|t| format!("{t:?}") == transition)
        .expect("transition");
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook_armed = armed.clone();
    let store = SqliteStore::open(std::path::Path::new(dir))
        .expect("store")
        .with_step_hook(Arc::new(move |at| {
            if at == step && hook_armed.load(std::sync::atomic::Ordering::SeqCst) {
                std::process::abort();
            }
            Ok(())
        }));
    let log = AuditLog::open_with_store(store, fixture::signer(), AuditLogConfig::default())
        .expect("open");
    if let Some(before) = transition.before() {
        assert!(run(&log, session, before));
        println!("ack {session} {}", before.state());
    }
    armed.store(true, std::sync::atomic::Ordering::SeqCst);
    run(&log, session, transition);
    // Only a crash at `Committed` could answer, and it never answers.
    std::process::exit(3)
}

#[test]
fn a_crash_at_any_step_of_a_commit_leaves_the_log_and_the_state_agreeing() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        crash_child(&spec);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut n = 0;
    let mut acknowledged = BTreeMap::new();
    for step in CommitStep::ALL {
        for transition in TRANSITIONS {
            n += 1;
            let session = format!("ses-{n}");
            let output = Command::new(&exe)
                .args(["--exact", CRASH_TEST, "--nocapture", "--test-threads=1"])
                .env(
                    CHILD_ENV,
                    format!("{}|{step:?}|{transition:?}|{session}", dir.path().display()),
                )
                .output()
                .expect("child");
            assert!(
                !output.status.success() && output.status.code() != Some(3),
                "{step:?}/{transition:?}: the child did not crash: {output:?}"
            );
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                if let Some(ack) = line.strip_prefix("ack ") {
                    let (id, state) = ack.split_once(' ').expect("ack");
                    acknowledged.insert(id.to_owned(), state.to_owned());
                }
            }
            // Reopening re-verifies every event and that the latest checkpoint covers them.
            let log = fixture::open(dir.path());
            let (stored, implied) = (stored(&log), implied(&log));
            assert_eq!(
                stored, implied,
                "{step:?}/{transition:?}: the stored sessions and the log disagree"
            );
            let state = stored.get(&session).map(String::as_str);
            let before = transition.before().map(Transition::state);
            assert!(
                state == before || state == Some(transition.state()),
                "{step:?}/{transition:?}: {session} is {state:?}"
            );
            if step != CommitStep::Committed {
                assert_eq!(
                    state, before,
                    "{step:?}/{transition:?}: an uncommitted change"
                );
            }
            for id in acknowledged.keys() {
                assert!(stored.contains_key(id), "acknowledged {id} lost");
            }
            assert_eq!(
                log.latest_checkpoint().map_or(0, |c| c.checkpoint.size),
                log.size(),
                "an unsigned tail"
            );
            log.close().expect("close");
        }
    }
}

#[test]
fn a_chained_event_inserted_while_stopped_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = fixture::open(dir.path());
    for i in 0..10 {
        log.append_blocking(fixture::event(i)).expect("append");
    }
    let last = log.event(9).expect("event 9");
    let prev = loupe_audit::merkle::leaf_hash(&last.canonical_bytes().expect("bytes"));
    log.close().expect("close");
    drop(log);
    // A perfectly chained, canonical event, as the log itself would have written it.
    let forged = fixture::event(10).seal(10, last.time_ms + 1, &prev);
    let row = StoredEvent::new(&forged, forged.canonical_bytes().expect("encode"));
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    conn.execute(
        "INSERT INTO events (seq, time_ms, actor, action, outcome, session, service, point, line)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        rusqlite::params![
            10i64,
            row.time_ms as i64,
            row.actor,
            row.action,
            row.outcome,
            row.session,
            row.service,
            row.point,
            row.line
        ],
    )
    .expect("insert");
    drop(conn);
    match AuditLog::open(dir.path(), fixture::signer(), AuditLogConfig::default()) {
        Err(OpenError::Tampered { seq, reason }) => {
            assert_eq!(seq, 10, "{reason}");
            assert!(reason.contains("checkpoint"), "{reason}");
        }
        Err(other) => panic!("expected tampering at event 10, got {other}"),
        Ok(_) => panic!("a log with an event no checkpoint covers started (and would sign it)"),
    }
}

#[test]
fn an_event_with_no_checkpoint_at_all_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = fixture::open(dir.path());
    log.append_blocking(fixture::event(0)).expect("append");
    log.close().expect("close");
    drop(log);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    conn.execute_batch("DELETE FROM head; DELETE FROM checkpoints;")
        .expect("delete");
    drop(conn);
    let result = AuditLog::open(dir.path(), fixture::signer(), AuditLogConfig::default());
    assert!(
        matches!(result, Err(OpenError::Tampered { seq: 0, .. })),
        "{:?}",
        result.err()
    );
}

const UMASK_ENV: &str = "LOUPE_AUDIT_UMASK_CHILD";

#[test]
fn data_files_are_private_whatever_the_umask() {
    if let Ok(dir) = std::env::var(UMASK_ENV) {
        let log = fixture::open(std::path::Path::new(&dir));
        log.append_blocking(fixture::event(0)).expect("append");
        // SIGKILL-like end: the -wal and -shm files stay, as after a crash.
        std::process::abort();
    }
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("data");
    let exe = std::env::current_exe().expect("test binary");
    let status = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" --exact data_files_are_private_whatever_the_umask --test-threads=1")
        .arg(&exe)
        .env(UMASK_ENV, &dir)
        .status()
        .expect("child");
    assert!(!status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700, "data directory");
    for file in [
        DB_FILE.to_owned(),
        format!("{DB_FILE}-wal"),
        format!("{DB_FILE}-shm"),
    ] {
        assert_eq!(mode(&dir.join(&file)), 0o600, "{file}");
    }
    // An existing, too open directory and database are tightened on start.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(dir.join(DB_FILE), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let log = fixture::open(&dir);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
    log.close().expect("close");
}

#[test]
fn the_write_ahead_log_stays_small_under_single_event_commits() {
    const COMMITS: u64 = 3000;
    const BOUND: u64 = 4 * 1024 * 1024 + 512 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = AuditLogConfig {
        checkpoint_interval: std::time::Duration::from_millis(100),
        ..AuditLogConfig::default()
    };
    let log = AuditLog::open(dir.path(), fixture::signer(), config).expect("open");
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let mut largest = 0;
    for i in 0..COMMITS {
        // One at a time: every append is a commit of its own, the worst case for the WAL.
        let session = format!("ses-{}", i % 50);
        let mut change = change(&session, Transition::Open);
        let StateChange::PutSession(row) = &mut change;
        row.version = i / 50 + 1;
        assert!(
            log.append_with_state_blocking(events(&session, Transition::Open), vec![change])
                .is_ok()
        );
        largest = largest.max(size());
        if i == 99 {
            eprintln!("WAL after 100 single-event commits: {} bytes", size());
        }
    }
    eprintln!(
        "WAL after {COMMITS} single-event commits: {} bytes (largest {largest})",
        size()
    );
    assert!(largest <= BOUND, "the WAL grew to {largest} bytes");
    // Idle, the writer truncates it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() > 1024 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "WAL still {} bytes",
            size()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("WAL once idle: {} bytes", size());
    log.close().expect("close");
}
