//! Moving a control plane's audit log and state from its embedded SQLite database into an
//! empty PostgreSQL database (`loupe-control-plane migrate`), so that one machine's deployment
//! can become several replicas without losing its history.
//!
//! **Nothing is re-signed or re-encoded.** Every event is copied as its exact canonical bytes
//! (so its leaf hash, and every `prev` after it, stay what the log signed), with its indexed
//! columns; the signed checkpoints are copied as they are (the latest into the coordination
//! row, the history into `checkpoints`), and the coordination row gets the tree's frontier
//! computed from those bytes. Sessions keep their versions; their `changed_at` is the log's
//! size, which every replica starting on the database has already read past. A reviewer's
//! kept checkpoints therefore stay valid: the migrated log verifies against them.
//!
//! **One transaction, checked before it commits.** The schema is created, the target found
//! empty (refused otherwise: merging two logs is not a migration), everything copied, and then
//! read back *from the same transaction* and checked — the events through the reviewer's
//! offline verification against the source's latest checkpoint (read before the copy began)
//! and, if given, a checkpoint the reviewer kept; the coordination row's size and frontier
//! against the tree rebuilt from the bytes read back; the sessions and checkpoint history
//! against the source's. Only then does it commit. Any failure, an interruption or a killed
//! process leave the database exactly as it was, since PostgreSQL rolls back a transaction
//! whose connection ends.
//!
//! **The source must be quiet.** The control plane writing to the SQLite database must be
//! stopped first: the migration notes the source's latest checkpoint before copying and
//! refuses to commit if the source grew meanwhile (the new events would be left behind).
//! The SQLite database is only read; it stays as it was, a fallback until the PostgreSQL
//! deployment is trusted.

use std::path::{Path, PathBuf};

use loupe_audit::checkpoint::{NoteError, NoteVerifier};
use loupe_audit::merkle::{Hash, leaf_hash};
use loupe_audit::verify::Verified;
use postgres::Transaction;

use super::check::{CheckError, verify_feed};
use super::postgres::{
    Database, SESSION_COLUMNS, apply_migrations, checkpoint_history, from_sql_int, insert_events,
    sessions, store_error, to_sql_int,
};
use super::sqlite::{self, DB_FILE, SqliteStore};
use super::store::{AuditReader, AuditStore, Frontier, SessionRow, StoreError};
use super::tree::TreeCache;

/// Events copied (and read back) per round trip.
const PAGE: usize = 5_000;

/// What a migration copied, verified.
#[derive(Debug)]
pub struct Migrated {
    pub events: u64,
    pub sessions: usize,
    /// Checkpoints in the history (the latest is in the coordination row besides).
    pub checkpoints: usize,
    /// The verification of the copy, as committed.
    pub verified: Verified,
}

/// Why a migration did not happen. In every case nothing was committed to the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error(
        "no SQLite audit log at {0}: give --data-dir the directory the control plane kept its data in (the one holding {DB_FILE})"
    )]
    NoSource(PathBuf),
    #[error("the SQLite audit log at {0} is empty: there is nothing to migrate")]
    EmptySource(PathBuf),
    #[error("cannot read the SQLite audit log: {0}")]
    Source(StoreError),
    #[error(
        "the SQLite audit log changed during the migration ({0}): stop the control plane that writes to it, then migrate again"
    )]
    SourceChanged(String),
    #[error("the SQLite audit log's checkpoint of size {size} is not valid: {reason}")]
    SourceCheckpoint { size: u64, reason: String },
    #[error(
        "the target database is not empty ({0}): migrate into a new, empty database (CREATE DATABASE …), never into one a control plane has written to"
    )]
    NotEmpty(String),
    #[error("cannot write the target database: {0}")]
    Target(StoreError),
    #[error("the copy does not check out, so it was not committed: {0}")]
    Copy(String),
}

/// Copies the SQLite log and state in `data_dir` into the empty database `target`, checks the
/// copy with `key` (and against `kept`, a checkpoint note a reviewer kept), and commits it.
/// `progress` is told `(events copied, events in all)` after each page.
pub fn migrate(
    data_dir: &Path,
    target: &Database,
    key: &NoteVerifier,
    kept: Option<&str>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Migrated, MigrateError> {
    let mut source = open_source(data_dir)?;
    let head = source_head(source.as_mut(), data_dir, key)?;
    let mut client = target.connect().map_err(MigrateError::Target)?;
    let mut tx = client.transaction().map_err(target_error)?;
    claim_empty_target(&mut tx)?;
    let tree = copy_events(source.as_mut(), &mut tx, &head, progress)?;
    let checkpoints = copy_checkpoints(source.as_mut(), &mut tx, key, &tree)?;
    let sessions = copy_sessions(source.as_mut(), &mut tx, head.size)?;
    write_head(&mut tx, &head, &frontier_of(&tree))?;
    if source_head(source.as_mut(), data_dir, key)? != head {
        return Err(MigrateError::SourceChanged(
            "it has a newer checkpoint than when the copy began".into(),
        ));
    }
    let verified = verify_copy(&mut tx, key, kept, &head, &sessions, &checkpoints)?;
    tx.commit().map_err(target_error)?;
    Ok(Migrated {
        events: head.size,
        sessions: sessions.len(),
        checkpoints: checkpoints.len(),
        verified,
    })
}

fn target_error(error: postgres::Error) -> MigrateError {
    MigrateError::Target(store_error(error))
}

/// A reader of the SQLite log in `data_dir`, which must exist: opening a missing one would
/// create an empty log and migrate nothing.
fn open_source(data_dir: &Path) -> Result<Box<dyn AuditReader>, MigrateError> {
    if !sqlite::exists_in(data_dir) {
        return Err(MigrateError::NoSource(data_dir.to_path_buf()));
    }
    let store = SqliteStore::open(data_dir).map_err(MigrateError::Source)?;
    store.readers().open().map_err(MigrateError::Source)
}

/// The source's latest checkpoint: the state the copy must reproduce.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    size: u64,
    note: String,
    root: Hash,
}

/// Reads the source's latest checkpoint and checks that it covers every stored event.
fn source_head(
    source: &mut dyn AuditReader,
    data_dir: &Path,
    key: &NoteVerifier,
) -> Result<Head, MigrateError> {
    let latest = source.latest_checkpoint().map_err(MigrateError::Source)?;
    let count = source.count().map_err(MigrateError::Source)?;
    let Some((size, note)) = latest else {
        return Err(if count == 0 {
            MigrateError::EmptySource(data_dir.to_path_buf())
        } else {
            MigrateError::Copy(format!(
                "the SQLite log holds {count} events and no signed checkpoint: it fails the control plane's own start-up check"
            ))
        });
    };
    if count != size {
        return Err(MigrateError::SourceChanged(format!(
            "it holds {count} events, its latest checkpoint covers {size}"
        )));
    }
    let checkpoint = open_note(key, size, &note)?;
    Ok(Head {
        size,
        note,
        root: checkpoint.root,
    })
}

fn open_note(
    key: &NoteVerifier,
    size: u64,
    note: &str,
) -> Result<loupe_audit::checkpoint::Checkpoint, MigrateError> {
    let invalid = |reason: String| MigrateError::SourceCheckpoint { size, reason };
    let checkpoint = key
        .open_checkpoint(note)
        .map_err(|e: NoteError| invalid(e.to_string()))?;
    if checkpoint.size != size {
        return Err(invalid(format!(
            "it is stored as size {size} but covers {}",
            checkpoint.size
        )));
    }
    Ok(checkpoint)
}

/// Creates the schema inside `tx` and checks that the database holds nothing of a log yet,
/// keeping the coordination row locked (no replica can append while the copy runs).
fn claim_empty_target(tx: &mut Transaction<'_>) -> Result<(), MigrateError> {
    apply_migrations(tx).map_err(MigrateError::Target)?;
    let head = tx
        .query_one(
            "SELECT size, note IS NOT NULL FROM log_head WHERE one = 1 FOR UPDATE",
            &[],
        )
        .map_err(target_error)?;
    let (size, signed): (i64, bool) = (head.get(0), head.get(1));
    let count = |tx: &mut Transaction<'_>, table: &str| -> Result<i64, MigrateError> {
        let row = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map_err(target_error)?;
        Ok(row.get(0))
    };
    let events = count(tx, "events")?;
    let sessions = count(tx, "sessions")?;
    let checkpoints = count(tx, "checkpoints")?;
    if size != 0 || signed || events != 0 || sessions != 0 || checkpoints != 0 {
        return Err(MigrateError::NotEmpty(format!(
            "it holds a log of {size} events ({events} stored), {sessions} sessions and {checkpoints} checkpoints"
        )));
    }
    Ok(())
}

/// Copies events `0..head.size`, byte for byte, and returns the tree of their leaf hashes.
fn copy_events(
    source: &mut dyn AuditReader,
    tx: &mut Transaction<'_>,
    head: &Head,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<TreeCache, MigrateError> {
    let mut tree = TreeCache::new();
    while tree.size() < head.size {
        let want = usize::try_from(head.size - tree.size()).map_or(PAGE, |left| left.min(PAGE));
        let page = source
            .scan(tree.size(), want)
            .map_err(MigrateError::Source)?;
        if page.is_empty() {
            return Err(MigrateError::SourceChanged(format!(
                "event {} is gone",
                tree.size()
            )));
        }
        for (event, seq) in page.iter().zip(tree.size()..) {
            if event.seq != seq {
                return Err(MigrateError::Copy(format!(
                    "the SQLite log has no event {seq} (the next is {})",
                    event.seq
                )));
            }
        }
        insert_events(tx, &page).map_err(MigrateError::Target)?;
        for event in &page {
            tree.push(leaf_hash(&event.line));
        }
        progress(tree.size(), head.size);
    }
    Ok(tree)
}

/// Copies the checkpoint history, each one checked against the tree first.
fn copy_checkpoints(
    source: &mut dyn AuditReader,
    tx: &mut Transaction<'_>,
    key: &NoteVerifier,
    tree: &TreeCache,
) -> Result<Vec<(u64, String)>, MigrateError> {
    let history = source.checkpoints().map_err(MigrateError::Source)?;
    for (size, note) in &history {
        let checkpoint = open_note(key, *size, note)?;
        if tree.root_at(*size).ok() != Some(checkpoint.root) {
            return Err(MigrateError::SourceCheckpoint {
                size: *size,
                reason: "its root is not the root of the events it covers".into(),
            });
        }
        tx.execute(
            "INSERT INTO checkpoints (size, note) VALUES ($1, $2)",
            &[&to_sql_int(*size).map_err(MigrateError::Source)?, note],
        )
        .map_err(target_error)?;
    }
    Ok(history)
}

/// Copies every session at its version, marked as changed at `size` (see the module docs).
fn copy_sessions(
    source: &mut dyn AuditReader,
    tx: &mut Transaction<'_>,
    size: u64,
) -> Result<Vec<SessionRow>, MigrateError> {
    let rows = source.sessions().map_err(MigrateError::Source)?;
    let changed_at = to_sql_int(size).map_err(MigrateError::Source)?;
    let insert = tx
        .prepare(
            "INSERT INTO sessions (id, requester, service, state, body, version, changed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .map_err(target_error)?;
    for row in &rows {
        let version = to_sql_int(row.version).map_err(MigrateError::Source)?;
        tx.execute(
            &insert,
            &[
                &row.id,
                &row.requester,
                &row.service,
                &row.state,
                &row.body,
                &version,
                &changed_at,
            ],
        )
        .map_err(target_error)?;
    }
    Ok(rows)
}

/// The frontier the coordination row stores for `tree`.
fn frontier_of(tree: &TreeCache) -> Frontier {
    let size = tree.size();
    Frontier {
        size,
        last_leaf: size
            .checked_sub(1)
            .and_then(|last| tree.leaf(last))
            .unwrap_or_default(),
        right_edge: tree.right_edge_with(&[]),
    }
}

fn write_head(
    tx: &mut Transaction<'_>,
    head: &Head,
    frontier: &Frontier,
) -> Result<(), MigrateError> {
    let size = to_sql_int(head.size).map_err(MigrateError::Source)?;
    tx.execute(
        "UPDATE log_head SET size = $1, note = $2, frontier = $3 WHERE one = 1",
        &[&size, &head.note, &frontier.to_bytes()],
    )
    .map_err(target_error)?;
    Ok(())
}

/// Reads the copy back inside `tx` and checks it: the events verify against the coordination
/// row's checkpoint (which must be the source's) and `kept`, the row's size and frontier are
/// those of the events read back, and the sessions and checkpoints are the source's.
fn verify_copy(
    tx: &mut Transaction<'_>,
    key: &NoteVerifier,
    kept: Option<&str>,
    head: &Head,
    source_sessions: &[SessionRow],
    source_checkpoints: &[(u64, String)],
) -> Result<Verified, MigrateError> {
    let copy = |reason: String| MigrateError::Copy(reason);
    let row = tx
        .query_one(
            "SELECT size, note, frontier FROM log_head WHERE one = 1",
            &[],
        )
        .map_err(target_error)?;
    let size = from_sql_int(row.get(0)).map_err(MigrateError::Target)?;
    let note: Option<String> = row.get(1);
    let stored_frontier =
        Frontier::from_bytes(size, row.get::<_, &[u8]>(2)).map_err(|e| copy(e.to_string()))?;
    if size != head.size || note.as_deref() != Some(head.note.as_str()) {
        return Err(copy(format!(
            "the coordination row says {size} events, the source's checkpoint {}",
            head.size
        )));
    }
    let mut tree = TreeCache::new();
    let verified = verify_feed(key, kept, |export| {
        loop {
            let lines = tx
                .query(
                    "SELECT line FROM events WHERE seq >= $1 ORDER BY seq LIMIT $2",
                    &[&to_sql_int(tree.size())?, &to_sql_int(PAGE as u64)?],
                )
                .map_err(store_error)?;
            for row in &lines {
                let line: &[u8] = row.get(0);
                tree.push(leaf_hash(line));
                export
                    .event(line)
                    .map_err(|e| StoreError::Other(format!("verification stopped: {e}")))?;
            }
            if lines.len() < PAGE {
                return Ok(head.note.clone());
            }
        }
    })
    .map_err(|e| match e {
        CheckError::Verify(e) => copy(format!("the copied log does not verify: {e}")),
        CheckError::Store(e) => MigrateError::Target(e),
    })?;
    if verified.events != head.size || verified.root != head.root {
        return Err(copy(format!(
            "the copied log holds {} events, the source {}",
            verified.events, head.size
        )));
    }
    if stored_frontier != frontier_of(&tree) {
        return Err(copy(
            "the coordination row's frontier is not the tree of the copied events".into(),
        ));
    }
    let mut copied_sessions = sessions(tx, &format!("SELECT {SESSION_COLUMNS} FROM sessions"), &[])
        .map_err(MigrateError::Target)?;
    let mut expected_sessions = source_sessions.to_vec();
    copied_sessions.sort_by(|a, b| a.id.cmp(&b.id));
    expected_sessions.sort_by(|a, b| a.id.cmp(&b.id));
    if copied_sessions != expected_sessions {
        return Err(copy("the copied sessions are not the source's".into()));
    }
    if checkpoint_history(tx).map_err(MigrateError::Target)? != source_checkpoints {
        return Err(copy("the copied checkpoints are not the source's".into()));
    }
    Ok(verified)
}
