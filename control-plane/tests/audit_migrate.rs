//! `loupe-control-plane migrate`: a real SQLite deployment copied into a database of the
//! throwaway PostgreSQL cluster (see `pg/mod.rs`).
//!
//! - Every event's bytes, the checkpoints and the sessions arrive as they were; the migrated
//!   log verifies against a checkpoint a reviewer kept before the migration, a replica opens it
//!   (re-verifying it) and extends it, and `verify` checks it.
//! - A target that is not empty is refused and left as it was.
//! - A source that does not verify is not committed: the target stays empty.
//! - A migration killed half-way (SIGKILL of the real process) leaves the target empty, and
//!   the next one succeeds.
//! - A `pg_dump` restored into another database passes `verify` against a checkpoint the
//!   reviewer kept before the backup, and is named a rollback against one kept after it.
//! - Bad arguments fail with a message that says what to do.

mod fixture;
mod pg;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use loupe_audit::verify::verify_export;
use loupe_control_plane::audit::check::verify_stored;
use loupe_control_plane::audit::migrate::{MigrateError, migrate};
use loupe_control_plane::audit::{
    AuditLog, AuditLogConfig, Database, PostgresStore, SessionRow, StateChange,
};

const BIN: &str = env!("CARGO_BIN_EXE_loupe-control-plane");

/// Every commit also archives its checkpoint, so the history has many.
fn archiving() -> AuditLogConfig {
    AuditLogConfig {
        checkpoint_interval: std::time::Duration::from_millis(1),
        ..AuditLogConfig::default()
    }
}

fn session(id: &str, state: &str, version: u64) -> StateChange {
    StateChange::PutSession(SessionRow {
        id: id.into(),
        requester: fixture::actor("alice").id,
        service: "checkout".into(),
        state: state.into(),
        body: format!("{{\"id\":\"{id}\",\"state\":\"{state}\"}}"),
        version,
    })
}

/// A SQLite log of `events` events (in batches of `batch`) with three sessions, one of them
/// changed twice; returns the checkpoint note taken after the first batch.
fn sqlite_deployment(dir: &Path, events: u64, batch: u64) -> String {
    sqlite_deployment_with(dir, events, batch, archiving())
}

fn sqlite_deployment_with(dir: &Path, events: u64, batch: u64, config: AuditLogConfig) -> String {
    let log = AuditLog::open(dir, fixture::signer(), config).expect("open sqlite log");
    let mut kept = None;
    for (round, start) in (0..events).step_by(batch as usize).enumerate() {
        let batch: Vec<_> = (start..(start + batch).min(events))
            .map(fixture::event)
            .collect();
        let state = match round {
            0 => vec![
                session("ses-a", "active", 1),
                session("ses-b", "pending", 1),
            ],
            1 => vec![session("ses-b", "active", 2), session("ses-c", "active", 1)],
            2 => vec![session("ses-b", "closed", 3)],
            _ => Vec::new(),
        };
        log.append_with_state_blocking(batch, state)
            .expect("append");
        kept.get_or_insert_with(|| log.latest_checkpoint().expect("checkpoint").note);
    }
    log.close().expect("close");
    kept.expect("at least one batch")
}

fn sqlite_rows(dir: &Path, sql: &str) -> Vec<(i64, Vec<u8>)> {
    let conn = rusqlite::Connection::open(dir.join("audit.sqlite")).expect("sqlite");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn pg_rows(url: &str, sql: &str) -> Vec<(i64, Vec<u8>)> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .query(sql, &[])
        .expect("query")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Whether the database has no Loupe table at all.
fn has_no_log(url: &str) -> bool {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let row = client
        .query_one(
            "SELECT to_regclass('events') IS NULL AND to_regclass('loupe_schema') IS NULL",
            &[],
        )
        .expect("query");
    row.get(0)
}

fn open_replica(url: &str) -> AuditLog {
    let store = PostgresStore::open(Database::parse(url).expect("url")).expect("store");
    AuditLog::open_with_store(store, fixture::signer(), AuditLogConfig::default())
        .expect("a replica opens (and re-verifies) the migrated log")
}

#[test]
fn a_sqlite_log_arrives_byte_for_byte_and_verifies_against_a_checkpoint_kept_before() {
    let Some(url) = pg::database("migrate_byte_for_byte") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = sqlite_deployment(dir.path(), 12_345, 500);
    let key = fixture::signer().verifier();
    let mut reports = Vec::new();
    let migrated = migrate(
        dir.path(),
        &Database::parse(&url).expect("url"),
        &key,
        Some(&kept),
        &mut |copied, total| reports.push((copied, total)),
    )
    .expect("migrates");
    assert_eq!(migrated.events, 12_345);
    assert_eq!(migrated.sessions, 3);
    assert!(migrated.checkpoints > 1, "{migrated:?}");
    assert_eq!(reports.last(), Some(&(12_345, 12_345)));

    // Byte for byte: events, the checkpoint history, the latest checkpoint.
    let events = "SELECT seq, line FROM events ORDER BY seq";
    assert_eq!(pg_rows(&url, events), sqlite_rows(dir.path(), events));
    let history = "SELECT size, CAST(note AS BYTEA) FROM checkpoints ORDER BY size";
    assert_eq!(
        pg_rows(&url, history),
        sqlite_rows(
            dir.path(),
            "SELECT size, CAST(note AS BLOB) FROM checkpoints ORDER BY size"
        )
    );
    assert_eq!(
        pg_rows(&url, "SELECT size, CAST(note AS BYTEA) FROM log_head"),
        sqlite_rows(dir.path(), "SELECT size, CAST(note AS BLOB) FROM head")
    );

    // A replica opens it (the start-up check re-verifies every event and the checkpoint),
    // has the sessions at their versions, exports a log that verifies against the kept
    // checkpoint, and extends it.
    let replica = open_replica(&url);
    assert_eq!(replica.size(), 12_345);
    let mut sessions = replica.sessions().expect("sessions");
    sessions.sort_by(|a, b| a.id.cmp(&b.id));
    let states: Vec<_> = sessions
        .iter()
        .map(|s| (s.id.as_str(), s.state.as_str(), s.version))
        .collect();
    assert_eq!(
        states,
        [
            ("ses-a", "active", 1),
            ("ses-b", "closed", 3),
            ("ses-c", "active", 1)
        ]
    );
    let next = replica
        .append_with_state_blocking(
            vec![fixture::event(12_345)],
            vec![session("ses-c", "revoked", 2)],
        )
        .expect("the migrated log is extended");
    assert_eq!(next[0].seq, 12_345);
    let mut export = Vec::new();
    replica.export_jsonl(&mut export).expect("export");
    let verified = verify_export(export.as_slice(), &key, Some(&kept)).expect("verifies");
    assert_eq!(verified.events, 12_346);
    replica.close().expect("close");

    // `verify`'s check, as after a restore.
    let readers = Database::parse(&url).expect("url").readers();
    let mut reader = readers.open_snapshot().expect("reader");
    let checked = verify_stored(reader.as_mut(), &key, Some(&kept)).expect("verifies");
    assert_eq!(checked.events, 12_346);
}

#[test]
fn a_target_that_is_not_empty_is_refused_and_left_as_it_was() {
    let Some(url) = pg::database("migrate_not_empty") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    sqlite_deployment(dir.path(), 40, 10);
    let key = fixture::signer().verifier();
    let database = Database::parse(&url).expect("url");
    // A replica already wrote to it.
    let replica = open_replica(&url);
    replica
        .append_blocking(fixture::event(0))
        .expect("a replica's event");
    replica.close().expect("close");
    drop(replica);
    let before = pg_rows(&url, "SELECT seq, line FROM events ORDER BY seq");
    match migrate(dir.path(), &database, &key, None, &mut |_, _| {}) {
        Err(error @ MigrateError::NotEmpty(_)) => {
            let text = error.to_string();
            assert!(text.contains("1 events"), "{text}");
            assert!(text.contains("new, empty database"), "{text}");
        }
        other => panic!("a non-empty target: {other:?}"),
    }
    assert_eq!(
        pg_rows(&url, "SELECT seq, line FROM events ORDER BY seq"),
        before
    );
    assert_eq!(open_replica(&url).size(), 1);

    // A second migration into a migrated database is refused the same way.
    let Some(fresh) = pg::database("migrate_twice") else {
        return;
    };
    let fresh = Database::parse(&fresh).expect("url");
    migrate(dir.path(), &fresh, &key, None, &mut |_, _| {}).expect("first");
    assert!(matches!(
        migrate(dir.path(), &fresh, &key, None, &mut |_, _| {}),
        Err(MigrateError::NotEmpty(_))
    ));
}

#[test]
fn a_source_that_does_not_verify_is_not_committed() {
    let Some(url) = pg::database("migrate_tampered") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // Checkpoints kept in the history once a minute: only the first commit's and (below) not
    // the final one, so a change to a later event is caught by the verification of the copy
    // rather than by the check of the history.
    let config = AuditLogConfig {
        checkpoint_interval: std::time::Duration::from_secs(60),
        ..AuditLogConfig::default()
    };
    let kept = sqlite_deployment_with(dir.path(), 100, 20, config);
    let key = fixture::signer().verifier();
    let database = Database::parse(&url).expect("url");
    // A checkpoint of another key is refused before anything is copied.
    let stranger = loupe_audit::checkpoint::NoteSigner::generate(fixture::ORIGIN)
        .expect("key")
        .verifier();
    assert!(matches!(
        migrate(dir.path(), &database, &stranger, None, &mut |_, _| {}),
        Err(MigrateError::SourceCheckpoint { .. })
    ));
    assert!(has_no_log(&url));
    // One byte of one event changed in the SQLite file: the copy does not verify, nothing is
    // committed.
    let before = sqlite_rows(dir.path(), "SELECT seq, line FROM events WHERE seq = 57");
    let conn = rusqlite::Connection::open(dir.path().join("audit.sqlite")).expect("sqlite");
    conn.execute("DELETE FROM checkpoints WHERE size > 20", [])
        .expect("history");
    conn.execute(
        "UPDATE events SET line = CAST(replace(CAST(line AS TEXT), '\"r-57\"', '\"r-58\"') AS BLOB) WHERE seq = 57",
        [],
    )
    .expect("tamper");
    assert_ne!(
        sqlite_rows(dir.path(), "SELECT seq, line FROM events WHERE seq = 57"),
        before,
        "the event was not changed"
    );
    match migrate(dir.path(), &database, &key, Some(&kept), &mut |_, _| {}) {
        Err(error @ MigrateError::Copy(_)) => {
            assert!(error.to_string().contains("does not verify"), "{error}");
        }
        other => panic!("a tampered source was migrated: {other:?}"),
    }
    assert!(has_no_log(&url), "a refused migration left tables behind");
}

/// The audit key as a file, for the command.
fn key_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("audit-signing.key");
    std::fs::write(&path, fixture::signer().private_key()).expect("key file");
    path
}

#[test]
fn a_migration_killed_half_way_leaves_the_target_empty() {
    let Some(url) = pg::database("migrate_killed") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    sqlite_deployment(&data, 60_000, 2_000);
    let key = key_file(dir.path());
    let migrate_command = || {
        let mut command = Command::new(BIN);
        command
            .args(["migrate", "--data-dir"])
            .arg(&data)
            .arg("--audit-signing-key")
            .arg(&key)
            .env("LOUPE_DATABASE", &url);
        command
    };
    let mut child = migrate_command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start migrate");
    let stderr = child.stderr.take().expect("stderr");
    let mut first = String::new();
    BufReader::new(stderr)
        .read_line(&mut first)
        .expect("progress");
    assert!(first.contains("copied"), "{first}");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(
        !status.success(),
        "the migration finished before it was killed: make the log larger"
    );
    // PostgreSQL rolls back the transaction of a connection that ended; give it a moment to
    // notice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !has_no_log(&url) {
        assert!(
            std::time::Instant::now() < deadline,
            "a killed migration left tables behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The next attempt starts from nothing and succeeds.
    let out = migrate_command().output().expect("migrate again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("migrated 60000 events"), "{stdout}");
    assert_eq!(open_replica(&url).size(), 60_000);
}

#[test]
fn bad_arguments_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path());
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("LOUPE_DATABASE")
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let missing = dir.path().join("nowhere").display().to_string();
    let key = key.display().to_string();
    let no_key = dir.path().join("no.key").display().to_string();
    let migrate = |key: &str, database: Option<&str>| {
        let mut args = vec![
            "migrate",
            "--data-dir",
            &missing,
            "--audit-signing-key",
            key,
        ];
        args.extend(database.iter().flat_map(|url| ["--database", url]));
        run(&args)
    };
    let unreachable = Some("postgres://loupe@127.0.0.1:1/loupe");
    let (code, text) = migrate(&key, unreachable);
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("no SQLite audit log"), "{text}");
    assert!(text.contains("--data-dir"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    let (code, text) = migrate(&no_key, unreachable);
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("no.key"), "{text}");
    let (code, text) = migrate(&key, None);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--database"), "{text}");
}

/// Runs `loupe-control-plane verify` on `url`; returns its exit code and output.
fn verify_command(url: &str, key: &Path, kept: &Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["verify", "--audit-signing-key"])
        .arg(key)
        .arg("--kept-checkpoint")
        .arg(kept)
        .env("LOUPE_DATABASE", url)
        .output()
        .expect("run verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Runs a PostgreSQL client program of the test cluster's version.
fn pg_tool(name: &str, args: &[&str]) {
    let out = Command::new(pg::cluster().tool(name))
        .args(args)
        .output()
        .expect(name);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_restored_dump_is_checked_against_the_reviewers_kept_checkpoint() {
    let Some(url) = pg::database("backup_source") else {
        return;
    };
    let Some(restored) = pg::database("backup_restored") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path());
    let live = open_replica(&url);
    for i in 0..300 {
        live.append_blocking(fixture::event(i)).expect("append");
    }
    // The reviewer keeps a checkpoint; the operator takes a backup a little later.
    let kept_before = dir.path().join("kept-before.checkpoint");
    std::fs::write(
        &kept_before,
        live.latest_checkpoint().expect("checkpoint").note,
    )
    .expect("kept");
    for i in 300..400 {
        live.append_blocking(fixture::event(i)).expect("append");
    }
    let dump = dir.path().join("loupe.dump");
    pg_tool(
        "pg_dump",
        &[
            "--format=custom",
            "--file",
            &dump.display().to_string(),
            &url,
        ],
    );
    // Later still, the reviewer keeps a newer checkpoint.
    for i in 400..450 {
        live.append_blocking(fixture::event(i)).expect("append");
    }
    let kept_after = dir.path().join("kept-after.checkpoint");
    std::fs::write(
        &kept_after,
        live.latest_checkpoint().expect("checkpoint").note,
    )
    .expect("kept");
    live.close().expect("close");

    pg_tool(
        "pg_restore",
        &[
            "--no-owner",
            "--dbname",
            &restored,
            &dump.display().to_string(),
        ],
    );
    // The restored database extends what the reviewer kept before the backup...
    let (code, text) = verify_command(&restored, &key, &kept_before);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("verified: 400 events"), "{text}");
    // ...and is a rollback against what they kept after it: the events since are gone.
    let (code, text) = verify_command(&restored, &key, &kept_after);
    assert_eq!(code, Some(8), "{text}");
    assert!(text.contains("rollback"), "{text}");
    // A replica starts on the restored database and goes on from the backup.
    let replica = open_replica(&restored);
    assert_eq!(replica.size(), 400);
    assert_eq!(
        replica
            .append_blocking(fixture::event(400))
            .expect("append")
            .seq,
        400
    );
    replica.close().expect("close");
}
