//! The embedded audit storage: one SQLite database under the control plane's data directory.
//!
//! WAL journal with `synchronous=FULL`, so a committed transaction has been fsynced to the
//! write-ahead log before `COMMIT` returns — a crash or power cut after an acknowledged append
//! cannot lose it. The writer owns one connection; readers open their own (WAL lets them read
//! while the writer commits). SQLite is compiled in (`bundled`), so nothing needs installing.
//!
//! Tables: `events` (sequence, the indexed columns, the canonical bytes), `head` (the one
//! latest signed checkpoint, replaced by every commit), `checkpoints` (tree size → signed note,
//! a history kept about once a second) and `sessions` (the control plane's session state,
//! written in the same transaction as the events that record its changes; see
//! [`crate::state`]). Keeping the latest checkpoint in one replaced row rather than a row per
//! commit bounds the table at one row per second of history, not one per batch.
//!
//! **Files are private.** The data directory is created (or tightened to) `0700`, and the
//! database `0600` before SQLite first opens it — SQLite gives its `-wal` and `-shm` files the
//! database's mode — whatever the process umask: the log names who looked at what.
//!
//! **The write-ahead log stays small.** Every commit adds its changed pages to the WAL, and
//! SQLite moves them into the database every 1000 pages (`wal_autocheckpoint`) on the
//! committing connection; `journal_size_limit` truncates the file back to 4 MiB after each
//! such reset, and [`AuditStore::maintain`], which the writer calls when idle, runs a
//! `TRUNCATE` checkpoint once the WAL is past 1 MiB (never waiting for a reader), so a quiet
//! log leaves no large file behind. Each query column has an index that ends in `seq`, so a filtered
//! page is an index range scan starting at the cursor. Time needs no index: times never
//! decrease along the log, so a time range is found by binary search over `seq`. The outcome index is partial (deny and
//! error only): those are the rare events a reviewer looks for, and most events are allows,
//! which a query for would match nearly everything anyway.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params, params_from_iter};

use super::fault::{CommitStep, StepHook};
use super::query::{Filter, seq_range};
use super::store::{
    AuditReader, AuditStore, Frontier, HeldLog, ReaderSource, Seal, SessionRow, StoreError,
    StoredEvent, StoredEventRef,
};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "audit.sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY,
    time_ms INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    session TEXT,
    service TEXT,
    point   TEXT,
    line    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_actor   ON events (actor, seq);
CREATE INDEX IF NOT EXISTS events_action  ON events (action, seq);
CREATE INDEX IF NOT EXISTS events_outcome ON events (outcome, seq) WHERE outcome != 'allow';
CREATE INDEX IF NOT EXISTS events_session ON events (session, seq);
CREATE INDEX IF NOT EXISTS events_service ON events (service, seq);
CREATE INDEX IF NOT EXISTS events_point   ON events (point, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    size INTEGER NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id        TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    service   TEXT NOT NULL,
    state     TEXT NOT NULL,
    body      TEXT NOT NULL
);
";

/// Columns added to `sessions` after its first version (a database written before them gets
/// them on open, with the defaults every existing row then has): the row's version (see
/// [`SessionRow`]) and the log size after the commit that last changed it.
const SESSION_COLUMNS_ADDED: [(&str, &str); 2] = [
    ("version", "INTEGER NOT NULL DEFAULT 1"),
    ("changed_at", "INTEGER NOT NULL DEFAULT 0"),
];

/// WAL size (bytes) to which SQLite truncates the file after a reset.
const WAL_LIMIT: u64 = 4 * 1024 * 1024;

/// WAL size (bytes) above which the idle writer truncates it.
const IDLE_WAL_LIMIT: u64 = 1024 * 1024;

/// How long a connection waits for a lock another holds.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Mode of the data directory: only the control plane's user.
const DIR_MODE: u32 = 0o700;
/// Mode of the database files.
const FILE_MODE: u32 = 0o600;

const COLUMNS: &str = "seq, time_ms, actor, action, outcome, session, service, point, line";

/// Maps SQLite's error codes to the log's typed storage errors.
fn store_error(err: rusqlite::Error) -> StoreError {
    let text = err.to_string();
    match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full(text),
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(text),
        Some(ErrorCode::SystemIoFailure) | Some(ErrorCode::CannotOpen) => StoreError::Io(text),
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            StoreError::Corrupt(text)
        }
        _ => StoreError::Other(text),
    }
}

fn to_sql_int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Other(format!("{value} is out of range")))
}

fn from_sql_int(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative value {value}")))
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(store_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(store_error)?;
    Ok(conn)
}

fn io_error(what: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {e}", what.display()))
}

/// Creates `data_dir` (and its parents) private to this user, or tightens an existing one.
pub fn create_private_dir(data_dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(data_dir)
        .map_err(|e| io_error(data_dir, e))?;
    // `mode` is filtered by the umask, and an existing directory keeps its mode: set it.
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| io_error(data_dir, e))
}

/// Makes the database at `path` and its `-wal`/`-shm` files private, creating the database
/// file (empty, which SQLite takes as a new database) if it does not exist.
pub fn make_private_files(path: &Path) -> Result<(), StoreError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(FILE_MODE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&file, e)),
        }
    }
    Ok(())
}

/// Adds the columns of [`SESSION_COLUMNS_ADDED`] that `sessions` lacks.
fn add_session_columns(conn: &Connection) -> Result<(), StoreError> {
    let present: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('sessions')")
        .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
        .map_err(store_error)?;
    for (column, definition) in SESSION_COLUMNS_ADDED {
        if !present.iter().any(|p| p == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE sessions ADD COLUMN {column} {definition}"
            ))
            .map_err(store_error)?;
        }
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS sessions_changed_at ON sessions (changed_at)")
        .map_err(store_error)
}

const SESSION_COLUMNS: &str = "id, requester, service, state, body, version";

fn row_to_session(row: &rusqlite::Row<'_>) -> rusqlite::Result<(SessionRow, i64)> {
    Ok((
        SessionRow {
            id: row.get(0)?,
            requester: row.get(1)?,
            service: row.get(2)?,
            state: row.get(3)?,
            body: row.get(4)?,
            version: 0,
        },
        row.get(5)?,
    ))
}

fn collect_sessions(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<SessionRow>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store_error)?;
    let rows = stmt
        .query_map(params, row_to_session)
        .map_err(store_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (mut session, version) = row.map_err(store_error)?;
        session.version = from_sql_int(version)?;
        out.push(session);
    }
    Ok(out)
}

/// The log held inside SQLite's write transaction.
struct HeldSqlite<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

impl HeldLog for HeldSqlite<'_> {
    fn events_from(&mut self, from: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE seq >= ?1 ORDER BY seq");
        collect_events(self.tx, &sql, vec![Value::Integer(to_sql_int(from)?)])
    }

    fn sessions_changed_after(&mut self, size: u64) -> Result<Vec<SessionRow>, StoreError> {
        collect_sessions(
            self.tx,
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE changed_at > ?1 ORDER BY changed_at"
            ),
            [to_sql_int(size)?],
        )
    }

    fn sessions(&mut self, ids: &[&str]) -> Result<Vec<SessionRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(collect_sessions(
                self.tx,
                &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                [id],
            )?);
        }
        Ok(out)
    }

    fn head(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        latest_checkpoint(self.tx)
    }

    fn frontier(&mut self) -> Result<Option<Frontier>, StoreError> {
        // One writer: no one else extends the tree, so nothing to compare with.
        Ok(None)
    }
}

/// Whether `data_dir` holds an audit database (opening one where none is creates it).
pub fn exists_in(data_dir: &Path) -> bool {
    data_dir.join(DB_FILE).is_file()
}

/// The SQLite audit store (the write side).
pub struct SqliteStore {
    conn: Connection,
    readers: Arc<SqliteReaders>,
    path: PathBuf,
    /// Test seam: called at each step of a commit (see [`super::fault`]).
    step_hook: Option<StepHook>,
}

impl SqliteStore {
    /// Opens (creating if needed) the audit database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        make_private_files(&path)?;
        let conn = open_connection(&path)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(store_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!(
                "journal mode is {mode}, not WAL"
            )));
        }
        // 32 MiB of page cache keeps the indexes' hot pages in memory as the log grows.
        conn.execute_batch(&format!(
            "PRAGMA synchronous=FULL; PRAGMA cache_size=-32768;
             PRAGMA wal_autocheckpoint=1000; PRAGMA journal_size_limit={WAL_LIMIT};"
        ))
        .map_err(store_error)?;
        conn.execute_batch(SCHEMA).map_err(store_error)?;
        add_session_columns(&conn)?;
        Ok(Self {
            conn,
            readers: Arc::new(SqliteReaders { path: path.clone() }),
            path,
            step_hook: None,
        })
    }

    /// Calls `hook` at every step of every commit; an `Err` from it fails the commit at that
    /// step (for tests of what a failure or a crash there leaves behind).
    pub fn with_step_hook(mut self, hook: StepHook) -> Self {
        self.step_hook = Some(hook);
        self
    }

    /// Imports sessions written by an earlier version (which kept them in a file of their
    /// own), in one transaction; a session already stored here is left as it is, so importing
    /// twice changes nothing.
    pub fn import_sessions(&mut self, rows: &[SessionRow]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction().map_err(store_error)?;
        let mut imported = 0;
        {
            let mut insert = tx
                .prepare(
                    "INSERT OR IGNORE INTO sessions (id, requester, service, state, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(store_error)?;
            for row in rows {
                imported += insert
                    .execute(params![
                        row.id,
                        row.requester,
                        row.service,
                        row.state,
                        row.body
                    ])
                    .map_err(store_error)?;
            }
        }
        tx.commit().map_err(store_error)?;
        Ok(imported)
    }

    fn wal_size(&self) -> u64 {
        let mut wal = self.path.as_os_str().to_owned();
        wal.push("-wal");
        std::fs::metadata(PathBuf::from(wal)).map_or(0, |m| m.len())
    }
}

impl AuditStore for SqliteStore {
    fn commit(&mut self, seal: &mut Seal<'_>) -> Result<(), StoreError> {
        let hook = self.step_hook.clone();
        let step = |at: CommitStep| hook.as_ref().map_or(Ok(()), |hook| hook(at));
        step(CommitStep::Begin)?;
        // Dropping an uncommitted transaction rolls it back, so an error anywhere below leaves
        // nothing behind.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store_error)?;
        let Some(batch) = seal(&mut HeldSqlite { tx: &tx })? else {
            return Ok(());
        };
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (seq, time_ms, actor, action, outcome, session, service, point, line)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(store_error)?;
            for event in &batch.events {
                insert
                    .execute(params![
                        to_sql_int(event.seq)?,
                        to_sql_int(event.time_ms)?,
                        event.actor,
                        event.action,
                        event.outcome,
                        event.session,
                        event.service,
                        event.point,
                        event.line,
                    ])
                    .map_err(store_error)?;
            }
        }
        step(CommitStep::Events)?;
        let changed_at = to_sql_int(batch.checkpoint.size)?;
        for change in &batch.state {
            put_session(&tx, change.session(), changed_at)?;
        }
        step(CommitStep::State)?;
        let checkpoint = &batch.checkpoint;
        let size = to_sql_int(checkpoint.size)?;
        tx.prepare_cached("INSERT OR REPLACE INTO head (one, size, note) VALUES (1, ?1, ?2)")
            .and_then(|mut s| s.execute(params![size, checkpoint.note]))
            .map_err(store_error)?;
        if checkpoint.archive {
            tx.prepare_cached("INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![size, checkpoint.note]))
                .map_err(store_error)?;
        }
        step(CommitStep::Checkpoint)?;
        tx.commit().map_err(store_error)?;
        step(CommitStep::Committed)
    }

    fn maintain(&mut self) -> Result<(), StoreError> {
        if self.wal_size() <= IDLE_WAL_LIMIT {
            return Ok(());
        }
        // Never wait for a reader (an export may read for a while): with no busy timeout the
        // checkpoint does what it can now and the rest waits for the next idle moment.
        self.conn
            .busy_timeout(Duration::ZERO)
            .map_err(store_error)?;
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(store_error)?;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    fn readers(&self) -> Arc<dyn ReaderSource> {
        self.readers.clone()
    }
}

/// The SQL and parameters of a filtered page: every condition is on an indexed column, and
/// the cursor bounds `seq`, so SQLite starts at the cursor instead of rereading earlier rows.
///
/// Time bounds arrive already turned into sequence bounds (`after`, `seq_end`); see
/// [`seq_range`].
fn query_sql(
    filter: &Filter,
    after: Option<u64>,
    seq_end: Option<u64>,
    limit: usize,
) -> Result<(String, Vec<Value>), StoreError> {
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE seq > ?");
    let after = match after {
        Some(seq) => to_sql_int(seq)?,
        None => -1,
    };
    let mut values = vec![Value::Integer(after)];
    let mut text = |column: &str, value: &Option<String>, sql: &mut String| {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            values.push(Value::Text(v.clone()));
        }
    };
    text("actor", &filter.actor, &mut sql);
    text("session", &filter.session, &mut sql);
    text("service", &filter.service, &mut sql);
    text("point", &filter.point, &mut sql);
    text(
        "action",
        &filter.action.map(|a| a.as_str().to_owned()),
        &mut sql,
    );
    if let Some(outcome) = filter.outcome {
        // A literal (from a fixed set of names), not a parameter: only then can SQLite see
        // that the partial index applies.
        sql.push_str(&format!(" AND outcome = '{}'", outcome.as_str()));
    }
    if let Some(end) = seq_end {
        sql.push_str(" AND seq < ?");
        values.push(Value::Integer(to_sql_int(end)?));
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    values.push(Value::Integer(to_sql_int(limit as u64)?));
    Ok((sql, values))
}

/// Stores `row` if the stored session is at the version before it (absent, for version 1).
fn put_session(tx: &Connection, row: &SessionRow, changed_at: i64) -> Result<(), StoreError> {
    let version = to_sql_int(row.version)?;
    let written = if row.version == 1 {
        tx.prepare_cached(
            "INSERT INTO sessions (id, requester, service, state, body, version, changed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6) ON CONFLICT(id) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.id,
                row.requester,
                row.service,
                row.state,
                row.body,
                changed_at
            ])
        })
    } else {
        tx.prepare_cached(
            "UPDATE sessions SET state = ?2, body = ?3, version = ?4, changed_at = ?5
             WHERE id = ?1 AND version = ?4 - 1",
        )
        .and_then(|mut s| s.execute(params![row.id, row.state, row.body, version, changed_at]))
    }
    .map_err(store_error)?;
    if written == 1 {
        return Ok(());
    }
    let stored: Option<i64> = tx
        .query_row(
            "SELECT version FROM sessions WHERE id = ?1",
            [&row.id],
            |r| r.get(0),
        )
        .optional()
        .map_err(store_error)?;
    Err(StoreError::Conflict {
        session: row.id.clone(),
        stored: stored.map_or(Ok(0), from_sql_int)?,
        expected: row.version.saturating_sub(1),
    })
}

fn collect_events(
    conn: &Connection,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(store_error)?;
    let rows = stmt
        .query_map(params_from_iter(values), row_to_event)
        .map_err(store_error)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, time_ms, mut event) = row.map_err(store_error)?;
        event.seq = from_sql_int(seq)?;
        event.time_ms = from_sql_int(time_ms)?;
        out.push(event);
    }
    Ok(out)
}

/// The stored checkpoint with the largest tree size.
fn latest_checkpoint(conn: &Connection) -> Result<Option<(u64, String)>, StoreError> {
    // The head is normally the latest; a database written by an earlier version has only
    // the history. Whichever is larger wins, so deleting the head only exposes events
    // that no checkpoint left covers.
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT size, note FROM (
                 SELECT size, note FROM head
                 UNION ALL
                 SELECT size, note FROM (SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1)
             ) ORDER BY size DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(store_error)?;
    row.map(|(size, note)| Ok((from_sql_int(size)?, note)))
        .transpose()
}

/// Opens read connections to the same database.
struct SqliteReaders {
    path: PathBuf,
}

impl ReaderSource for SqliteReaders {
    fn open(&self) -> Result<Box<dyn AuditReader>, StoreError> {
        Ok(Box::new(SqliteReader {
            conn: open_connection(&self.path)?,
        }))
    }
}

struct SqliteReader {
    conn: Connection,
}

fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, i64, StoredEvent)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        StoredEvent {
            seq: 0,
            time_ms: 0,
            actor: row.get(2)?,
            action: row.get(3)?,
            outcome: row.get(4)?,
            session: row.get(5)?,
            service: row.get(6)?,
            point: row.get(7)?,
            line: row.get(8)?,
        },
    ))
}

impl SqliteReader {
    fn collect(&self, sql: &str, values: Vec<Value>) -> Result<Vec<StoredEvent>, StoreError> {
        collect_events(&self.conn, sql, values)
    }
}

impl SqliteReader {
    /// The time event `seq` was sequenced at.
    fn time_at(&self, seq: u64) -> Result<u64, StoreError> {
        let time: Option<i64> = self
            .conn
            .query_row(
                "SELECT time_ms FROM events WHERE seq = ?1",
                [to_sql_int(seq)?],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        from_sql_int(time.ok_or_else(|| StoreError::Corrupt(format!("event {seq} is missing")))?)
    }
}

impl AuditReader for SqliteReader {
    fn count(&mut self) -> Result<u64, StoreError> {
        // Sequences are dense from 0, so the count is one past the largest (and the log's
        // self-check reports a gap if that ever stops being true).
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(seq) FROM events", [], |row| row.get(0))
            .map_err(store_error)?;
        match max {
            None => Ok(0),
            Some(max) => Ok(from_sql_int(max)? + 1),
        }
    }

    fn scan(&mut self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE seq >= ?1 ORDER BY seq LIMIT ?2");
        let values = vec![
            Value::Integer(to_sql_int(from)?),
            Value::Integer(to_sql_int(limit as u64)?),
        ];
        self.collect(&sql, values)
    }

    fn visit(
        &mut self,
        from: u64,
        visit: &mut dyn FnMut(StoredEventRef<'_>) -> bool,
    ) -> Result<u64, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE seq >= ?1 ORDER BY seq");
        let mut stmt = self.conn.prepare(&sql).map_err(store_error)?;
        let mut rows = stmt.query([to_sql_int(from)?]).map_err(store_error)?;
        let mut visited = 0;
        while let Some(row) = rows.next().map_err(store_error)? {
            let value = |i: usize| row.get_ref(i).map_err(store_error);
            let corrupt = |e: rusqlite::types::FromSqlError| StoreError::Corrupt(e.to_string());
            let event = StoredEventRef {
                seq: from_sql_int(value(0)?.as_i64().map_err(corrupt)?)?,
                time_ms: from_sql_int(value(1)?.as_i64().map_err(corrupt)?)?,
                actor: value(2)?.as_str().map_err(corrupt)?,
                action: value(3)?.as_str().map_err(corrupt)?,
                outcome: value(4)?.as_str().map_err(corrupt)?,
                session: value(5)?.as_str_or_null().map_err(corrupt)?,
                service: value(6)?.as_str_or_null().map_err(corrupt)?,
                point: value(7)?.as_str_or_null().map_err(corrupt)?,
                line: value(8)?.as_blob().map_err(corrupt)?,
            };
            visited += 1;
            if !visit(event) {
                break;
            }
        }
        Ok(visited)
    }

    fn query(
        &mut self,
        filter: &Filter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // A time range is a sequence range; the page is then read in sequence order from the
        // cursor.
        let count = self.count()?;
        let Some(range) = seq_range(filter, after, count, &mut |seq| self.time_at(seq))? else {
            return Ok(Vec::new());
        };
        let (after, seq_end) = (range.after, range.end);
        let (sql, values) = query_sql(filter, after, seq_end, limit)?;
        self.collect(&sql, values)
    }

    fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        latest_checkpoint(&self.conn)
    }

    fn checkpoints(&mut self) -> Result<Vec<(u64, String)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT size, note FROM checkpoints ORDER BY size")
            .map_err(store_error)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(store_error)?;
        let mut out = Vec::new();
        for row in rows {
            let (size, note) = row.map_err(store_error)?;
            out.push((from_sql_int(size)?, note));
        }
        Ok(out)
    }

    fn sessions(&mut self) -> Result<Vec<SessionRow>, StoreError> {
        collect_sessions(
            &self.conn,
            &format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY rowid"),
            [],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loupe_audit::event::{Action, Outcome};

    /// Every filter is answered through an index (or the primary key), never a full scan.
    #[test]
    fn every_filter_uses_an_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("store");
        let filters = [
            Filter::default(),
            Filter {
                actor: Some("a".into()),
                ..Filter::default()
            },
            Filter {
                session: Some("s".into()),
                ..Filter::default()
            },
            Filter {
                service: Some("s".into()),
                ..Filter::default()
            },
            Filter {
                point: Some("p".into()),
                ..Filter::default()
            },
            Filter {
                action: Some(Action::AuditRead),
                ..Filter::default()
            },
            Filter {
                outcome: Some(Outcome::Deny),
                ..Filter::default()
            },
            Filter {
                since_ms: Some(1),
                until_ms: Some(2),
                ..Filter::default()
            },
        ];
        for filter in filters {
            let (sql, values) = query_sql(&filter, Some(10), Some(1000), 100).expect("sql");
            let mut stmt = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("explain");
            let plan: Vec<String> = stmt
                .query_map(params_from_iter(values), |row| row.get::<_, String>(3))
                .expect("plan")
                .collect::<Result<_, _>>()
                .expect("rows");
            let plan = plan.join("; ");
            assert!(
                plan.contains("USING INDEX") || plan.contains("USING INTEGER PRIMARY KEY"),
                "{filter:?}: {plan}"
            );
            assert!(
                !plan.contains("USE TEMP B-TREE"),
                "{filter:?} sorts: {plan}"
            );
        }
    }
}
