//! The audit storage for several control-plane replicas: one PostgreSQL database they share.
//!
//! **One Merkle log across replicas.** Every replica runs its own writer (group commit, as with
//! SQLite), and the database serializes them: a commit first locks the log's one coordination
//! row (`log_head`, `SELECT … FOR UPDATE`), which holds the tree size, the latest signed
//! checkpoint and the frontier (the last leaf hash and the right edge of the tree, see
//! [`Frontier`]). Holding it, the writer reads the events other replicas appended since its
//! own view, checks them as at start and extends its tree, checks that it arrives at the stored
//! frontier, and only then numbers, chains and signs its own batch; the events, the session
//! changes they record, the new coordination row (with the checkpoint covering the batch) and,
//! once a second, the checkpoint's history row are written, and `COMMIT` releases the lock.
//! This is the sequencing of Trillian Tessera's MySQL and Spanner drivers: one row as the
//! sequencer's lock, so the log stays one append-only tree whichever replica appends, and no
//! event is ever committed without the signed checkpoint that covers it. PostgreSQL's default
//! `synchronous_commit = on` makes `COMMIT` return only once the WAL is flushed, so an
//! acknowledged append is durable.
//!
//! **Sessions** carry a version; a change is written only over the version before it (see
//! [`SessionRow`]), and the rows a commit changes are stamped with the log size after it
//! (`changed_at`), so a catching-up writer learns which sessions others changed. A session's
//! end is also announced to every replica in the transaction that records it (a trigger's
//! `pg_notify`, schema migration 2; read by [`super::notify`]).
//!
//! **Schema migrations** are numbered and applied at start in one transaction, under an
//! advisory lock so that replicas starting together do not race; a database whose schema is
//! newer than this version knows is refused ([`StoreError::SchemaTooNew`]) rather than
//! written with assumptions that no longer hold.
//!
//! **Connections.** The writer holds one connection and reopens it when the database went
//! away (the commit in flight fails, the appenders are refused — fail closed — and the next
//! commit reconnects). Readers open their own; the log pools them and drops one whose
//! connection failed. Connection attempts give up after [`CONNECT_TIMEOUT`] unless the URL says
//! otherwise. TLS to the database is asked for in the URL (`sslmode=verify-full` and
//! `sslrootcert`) and always verified; see [`super::postgres_tls`].

use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, NoTls, Row};

use super::postgres_tls::{RustlsConnect, tls_request};
use super::query::{Filter, seq_range};
use super::store::{
    AuditReader, AuditStore, Frontier, HeldLog, ReaderSource, Seal, SessionRow, StoreError,
    StoredEvent, StoredEventRef,
};
use std::sync::Arc;

/// How long a connection attempt may take, unless the URL sets `connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one migration per version, applied in order. Never edit one that has shipped:
/// add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the log, its checkpoints, the coordination row, and the sessions.
    "
CREATE TABLE events (
    seq     BIGINT PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    session TEXT,
    service TEXT,
    point   TEXT,
    line    BYTEA NOT NULL
);
CREATE INDEX events_actor   ON events (actor, seq);
CREATE INDEX events_action  ON events (action, seq);
CREATE INDEX events_outcome ON events (outcome, seq) WHERE outcome <> 'allow';
CREATE INDEX events_session ON events (session, seq);
CREATE INDEX events_service ON events (service, seq);
CREATE INDEX events_point   ON events (point, seq);
CREATE TABLE checkpoints (
    size BIGINT PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE TABLE log_head (
    one      SMALLINT PRIMARY KEY CHECK (one = 1),
    size     BIGINT NOT NULL,
    note     TEXT,
    frontier BYTEA NOT NULL
);
INSERT INTO log_head (one, size, note, frontier) VALUES (1, 0, NULL, decode(repeat('00', 32), 'hex'));
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    requester  TEXT NOT NULL,
    service    TEXT NOT NULL,
    state      TEXT NOT NULL,
    body       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    changed_at BIGINT NOT NULL
);
CREATE INDEX sessions_changed_at ON sessions (changed_at);
",
    // 2: a session's end is announced to every replica in the transaction that records it
    // (see `super::notify`).
    "
CREATE FUNCTION loupe_announce_session_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('loupe_session_ended', NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER sessions_ended AFTER INSERT OR UPDATE OF state ON sessions
    FOR EACH ROW WHEN (NEW.state IN ('closed', 'expired', 'revoked', 'denied'))
    EXECUTE FUNCTION loupe_announce_session_end();
",
];

/// The schema version this control plane writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Key of the advisory lock that serializes migrations (any constant no one else uses).
const MIGRATION_LOCK: i64 = 0x4c6f_7570_6553_6368; // "LoupeSch"

pub(super) const COLUMNS: &str =
    "seq, time_ms, actor, action, outcome, session, service, point, line";
pub(super) const SESSION_COLUMNS: &str = "id, requester, service, state, body, version";

/// Events read per round trip when the whole log is visited.
const VISIT_PAGE: i64 = 10_000;

/// Maps the driver's errors to the log's typed storage errors.
pub(super) fn store_error(err: postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let text = format!("{}: {}", db.code().code(), db.message());
        let code = db.code();
        return if *code == SqlState::DISK_FULL {
            StoreError::Full(text)
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            StoreError::ReadOnly(text)
        } else if code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            StoreError::Unavailable(text)
        } else if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
            StoreError::Corrupt(text)
        } else {
            StoreError::Other(text)
        };
    }
    // No answer from the server at all: it is down, unreachable, or the connection broke.
    let text = with_causes(&err);
    // A failed TLS handshake is a database this replica cannot trust, so cannot reach.
    let unreachable = [
        "error connecting",
        "error communicating",
        "error performing TLS handshake",
        "connection closed",
        "timeout",
    ];
    if err.is_closed() || unreachable.iter().any(|kind| text.starts_with(kind)) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Other(text)
    }
}

/// The driver's message followed by its causes (it names only the kind of failure: "error
/// performing TLS handshake", and the cause says which certificate check failed). No cause
/// repeats the URL's password.
fn with_causes(err: &postgres::Error) -> String {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(error) = cause {
        text.push_str(&format!(": {error}"));
        cause = error.source();
    }
    text
}

pub(super) fn to_sql_int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Other(format!("{value} is out of range")))
}

pub(super) fn from_sql_int(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative value {value}")))
}

/// Where the database is and how to reach it: parsed from a `postgres://` URL (or a
/// `key=value` connection string), with TLS as [`super::postgres_tls`] reads it.
#[derive(Clone)]
pub struct Database {
    config: Config,
    /// `Some` when the URL asks for TLS: every connection then uses it, verified.
    tls: Option<RustlsConnect>,
}

impl std::fmt::Debug for Database {
    // The configuration may hold a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Parses `url` and, if it asks for TLS, reads the CA file it names. The message of an
    /// error never repeats the URL, which may hold a password.
    pub fn parse(url: &str) -> Result<Database, StoreError> {
        let request = tls_request(url)?;
        let mut config: Config = request.rest.parse().map_err(|e: postgres::Error| {
            StoreError::Other(format!(
                "the database URL is not valid: {}",
                with_causes(&e)
            ))
        })?;
        let tls = request
            .root_cert
            .as_deref()
            .map(RustlsConnect::new)
            .transpose()?;
        // With TLS the driver must insist on it (a server without TLS is an error); without,
        // its default `prefer` would try TLS it cannot do.
        config.ssl_mode(match tls {
            Some(_) => postgres::config::SslMode::Require,
            None => postgres::config::SslMode::Disable,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("loupe-control-plane");
        }
        Ok(Database { config, tls })
    }

    /// Read connections to this database, for reading a log without writing it (no schema
    /// migration is applied).
    pub fn readers(&self) -> Arc<dyn ReaderSource> {
        Arc::new(PostgresReaders {
            database: self.clone(),
        })
    }

    pub(super) fn connect(&self) -> Result<Client, StoreError> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(store_error)
    }

    /// A connection that names itself `application` to the server (`pg_stat_activity`), for a
    /// connection with a role of its own, such as a replica's listener.
    pub(super) fn connect_as(&self, application: &str) -> Result<Client, StoreError> {
        let mut config = self.config.clone();
        config.application_name(application);
        match &self.tls {
            Some(tls) => config.connect(tls.clone()),
            None => config.connect(NoTls),
        }
        .map_err(store_error)
    }
}

/// The PostgreSQL audit store (the write side of one replica).
pub struct PostgresStore {
    database: Database,
    /// `None` after the connection failed: the next commit reconnects.
    client: Option<Client>,
    readers: Arc<PostgresReaders>,
}

impl PostgresStore {
    /// Connects, brings the schema up to date (refusing a newer one), and returns the store.
    pub fn open(database: Database) -> Result<Self, StoreError> {
        let mut client = database.connect()?;
        migrate(&mut client)?;
        Ok(Self {
            readers: Arc::new(PostgresReaders {
                database: database.clone(),
            }),
            database,
            client: Some(client),
        })
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut client = self.database.connect()?;
            check_schema(&mut client)?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no connection".into()))
    }
}

/// The schema version stored, 0 for a database Loupe never wrote.
fn stored_version(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('loupe_schema') IS NOT NULL", &[])
        .map_err(store_error)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_opt("SELECT version FROM loupe_schema WHERE one = 1", &[])
        .map_err(store_error)?;
    Ok(row.map_or(0, |row| row.get(0)))
}

/// Refuses a schema newer than this version's.
fn check_schema(client: &mut impl GenericClient) -> Result<i64, StoreError> {
    let found = stored_version(client)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Applies the migrations the database lacks, in one transaction.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(store_error)?;
    let found = apply_migrations(&mut tx)?;
    tx.commit().map_err(store_error)?;
    if found != SCHEMA_VERSION {
        tracing::info!(
            from = found,
            to = SCHEMA_VERSION,
            "audit database schema migrated"
        );
    }
    Ok(())
}

/// Brings the schema up to date inside `tx` (which commits or drops it), holding the
/// migration lock until `tx` ends; refuses a newer schema. Returns the version found.
pub(super) fn apply_migrations(tx: &mut postgres::Transaction<'_>) -> Result<i64, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(store_error)?;
    let found = check_schema(tx)?;
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS loupe_schema (
             one     SMALLINT PRIMARY KEY CHECK (one = 1),
             version BIGINT NOT NULL
         )",
    )
    .map_err(store_error)?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(migration).map_err(|e| {
            let error = store_error(e);
            StoreError::Other(format!("schema migration {} failed: {error}", index + 1))
        })?;
    }
    tx.execute(
        "INSERT INTO loupe_schema (one, version) VALUES (1, $1)
         ON CONFLICT (one) DO UPDATE SET version = excluded.version",
        &[&SCHEMA_VERSION],
    )
    .map_err(store_error)?;
    Ok(found)
}

fn row_to_event(row: &Row) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        seq: from_sql_int(row.get(0))?,
        time_ms: from_sql_int(row.get(1))?,
        actor: row.get(2),
        action: row.get(3),
        outcome: row.get(4),
        session: row.get(5),
        service: row.get(6),
        point: row.get(7),
        line: row.get(8),
    })
}

pub(super) fn row_to_session(row: &Row) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: row.get(0),
        requester: row.get(1),
        service: row.get(2),
        state: row.get(3),
        body: row.get(4),
        version: from_sql_int(row.get(5))?,
    })
}

pub(super) fn events(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<StoredEvent>, StoreError> {
    client
        .query(sql, params)
        .map_err(store_error)?
        .iter()
        .map(row_to_event)
        .collect()
}

pub(super) fn sessions(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<SessionRow>, StoreError> {
    client
        .query(sql, params)
        .map_err(store_error)?
        .iter()
        .map(row_to_session)
        .collect()
}

/// The coordination row as locked by a commit.
struct Head {
    size: u64,
    note: Option<String>,
    frontier: Vec<u8>,
}

/// The log held by one commit: the coordination row is locked.
struct HeldPostgres<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    head: &'a Head,
}

impl HeldLog for HeldPostgres<'_, '_> {
    fn events_from(&mut self, from: u64) -> Result<Vec<StoredEvent>, StoreError> {
        events(
            self.tx,
            &format!("SELECT {COLUMNS} FROM events WHERE seq >= $1 ORDER BY seq"),
            &[&to_sql_int(from)?],
        )
    }

    fn sessions_changed_after(&mut self, size: u64) -> Result<Vec<SessionRow>, StoreError> {
        sessions(
            self.tx,
            &format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE changed_at > $1 ORDER BY changed_at"
            ),
            &[&to_sql_int(size)?],
        )
    }

    fn sessions(&mut self, ids: &[&str]) -> Result<Vec<SessionRow>, StoreError> {
        sessions(
            self.tx,
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ANY($1)"),
            &[&ids],
        )
    }

    fn head(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.head.note.clone().map(|note| (self.head.size, note)))
    }

    fn frontier(&mut self) -> Result<Option<Frontier>, StoreError> {
        Frontier::from_bytes(self.head.size, &self.head.frontier).map(Some)
    }
}

impl AuditStore for PostgresStore {
    fn commit(&mut self, seal: &mut Seal<'_>) -> Result<(), StoreError> {
        let result = commit_batch(self.client()?, seal);
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // Whatever state that connection is in, it is not to be trusted for the next one.
            self.client = None;
        }
        result
    }

    fn readers(&self) -> Arc<dyn ReaderSource> {
        self.readers.clone()
    }
}

/// One commit: lock the coordination row, let the writer seal its batch, write it.
fn commit_batch(client: &mut Client, seal: &mut Seal<'_>) -> Result<(), StoreError> {
    // Dropping an uncommitted transaction rolls it back: an error anywhere leaves nothing.
    let mut tx = client.transaction().map_err(store_error)?;
    let row = tx
        .query_one(
            "SELECT size, note, frontier FROM log_head WHERE one = 1 FOR UPDATE",
            &[],
        )
        .map_err(store_error)?;
    let head = Head {
        size: from_sql_int(row.get(0))?,
        note: row.get(1),
        frontier: row.get(2),
    };
    let batch = seal(&mut HeldPostgres {
        tx: &mut tx,
        head: &head,
    })?;
    let Some(batch) = batch else {
        return Ok(());
    };
    let first = batch
        .events
        .first()
        .map_or(batch.checkpoint.size, |e| e.seq);
    if first != head.size || batch.frontier.size != batch.checkpoint.size {
        return Err(StoreError::Corrupt(format!(
            "a batch sealed from event {first} cannot follow the {} stored",
            head.size
        )));
    }
    insert_events(&mut tx, &batch.events)?;
    let changed_at = to_sql_int(batch.checkpoint.size)?;
    for change in &batch.state {
        put_session(&mut tx, change.session(), changed_at)?;
    }
    let size = to_sql_int(batch.checkpoint.size)?;
    tx.execute(
        "UPDATE log_head SET size = $1, note = $2, frontier = $3 WHERE one = 1",
        &[&size, &batch.checkpoint.note, &batch.frontier.to_bytes()],
    )
    .map_err(store_error)?;
    if batch.checkpoint.archive {
        tx.execute(
            "INSERT INTO checkpoints (size, note) VALUES ($1, $2)
             ON CONFLICT (size) DO UPDATE SET note = excluded.note",
            &[&size, &batch.checkpoint.note],
        )
        .map_err(store_error)?;
    }
    tx.commit().map_err(store_error)
}

/// Inserts `events` in one statement (one array per column).
pub(super) fn insert_events(
    tx: &mut postgres::Transaction<'_>,
    events: &[StoredEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut seq = Vec::with_capacity(events.len());
    let mut time_ms = Vec::with_capacity(events.len());
    for event in events {
        seq.push(to_sql_int(event.seq)?);
        time_ms.push(to_sql_int(event.time_ms)?);
    }
    let column = |f: fn(&StoredEvent) -> &str| events.iter().map(f).collect::<Vec<_>>();
    let optional = |f: fn(&StoredEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    let lines: Vec<&[u8]> = events.iter().map(|e| e.line.as_slice()).collect();
    tx.execute(
        "INSERT INTO events (seq, time_ms, actor, action, outcome, session, service, point, line)
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                              $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BYTEA[])",
        &[
            &seq,
            &time_ms,
            &column(|e| &e.actor),
            &column(|e| &e.action),
            &column(|e| &e.outcome),
            &optional(|e| e.session.as_deref()),
            &optional(|e| e.service.as_deref()),
            &optional(|e| e.point.as_deref()),
            &lines,
        ],
    )
    .map_err(store_error)?;
    Ok(())
}

/// Stores `row` if the stored session is at the version before it (absent, for version 1).
fn put_session(
    tx: &mut postgres::Transaction<'_>,
    row: &SessionRow,
    changed_at: i64,
) -> Result<(), StoreError> {
    let version = to_sql_int(row.version)?;
    let written = if row.version == 1 {
        tx.execute(
            "INSERT INTO sessions (id, requester, service, state, body, version, changed_at)
             VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (id) DO NOTHING",
            &[
                &row.id,
                &row.requester,
                &row.service,
                &row.state,
                &row.body,
                &changed_at,
            ],
        )
    } else {
        tx.execute(
            "UPDATE sessions SET state = $2, body = $3, version = $4::BIGINT, changed_at = $5
             WHERE id = $1 AND version = $4::BIGINT - 1",
            &[&row.id, &row.state, &row.body, &version, &changed_at],
        )
    }
    .map_err(store_error)?;
    if written == 1 {
        return Ok(());
    }
    let stored: Option<i64> = tx
        .query_opt("SELECT version FROM sessions WHERE id = $1", &[&row.id])
        .map_err(store_error)?
        .map(|r| r.get(0));
    Err(StoreError::Conflict {
        session: row.id.clone(),
        stored: stored.map_or(Ok(0), from_sql_int)?,
        expected: row.version.saturating_sub(1),
    })
}

/// The history of checkpoints, smallest first.
pub(super) fn checkpoint_history(
    client: &mut impl GenericClient,
) -> Result<Vec<(u64, String)>, StoreError> {
    client
        .query("SELECT size, note FROM checkpoints ORDER BY size", &[])
        .map_err(store_error)?
        .iter()
        .map(|row| Ok((from_sql_int(row.get(0))?, row.get(1))))
        .collect()
}

/// Closes `client` where blocking is allowed. Closing a connection waits for it to end, which
/// a thread driving an async runtime must not do (the driver panics): readers are dropped with
/// the control plane's state, wherever its last reference goes, so on a runtime's thread the
/// connection is closed on a thread of its own.
pub(super) fn close_off_runtime(client: Client) {
    if tokio::runtime::Handle::try_current().is_err() {
        drop(client);
        return;
    }
    let held = Arc::new(std::sync::Mutex::new(Some(client)));
    let closing = Arc::clone(&held);
    let spawned = std::thread::Builder::new()
        .name("loupe-db-close".into())
        .spawn(move || drop(closing.lock().map(|mut c| c.take())));
    if let Err(error) = spawned {
        // Not closed here either: its socket goes when the process does.
        let client = held.lock().ok().and_then(|mut c| c.take());
        std::mem::forget(client);
        tracing::warn!(%error, "cannot close a database connection off the runtime");
    }
}

/// Opens read connections to the same database.
struct PostgresReaders {
    database: Database,
}

impl ReaderSource for PostgresReaders {
    fn open(&self) -> Result<Box<dyn AuditReader>, StoreError> {
        Ok(Box::new(PostgresReader {
            client: Some(self.database.connect()?),
        }))
    }

    fn open_snapshot(&self) -> Result<Box<dyn AuditReader>, StoreError> {
        let mut client = self.database.connect()?;
        // Every read of this connection until it closes sees one snapshot.
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(store_error)?;
        Ok(Box::new(PostgresReader {
            client: Some(client),
        }))
    }
}

struct PostgresReader {
    /// `None` only once dropped (see [`close_off_runtime`]).
    client: Option<Client>,
}

impl Drop for PostgresReader {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            close_off_runtime(client);
        }
    }
}

impl PostgresReader {
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("the connection is closed".into()))
    }

    /// The time event `seq` was sequenced at.
    fn time_at(&mut self, seq: u64) -> Result<u64, StoreError> {
        let time: Option<i64> = self
            .client()?
            .query_opt(
                "SELECT time_ms FROM events WHERE seq = $1",
                &[&to_sql_int(seq)?],
            )
            .map_err(store_error)?
            .map(|row| row.get(0));
        from_sql_int(time.ok_or_else(|| StoreError::Corrupt(format!("event {seq} is missing")))?)
    }
}

impl AuditReader for PostgresReader {
    fn count(&mut self) -> Result<u64, StoreError> {
        // Sequences are dense from 0, so the count is one past the largest.
        let max: Option<i64> = self
            .client()?
            .query_one("SELECT MAX(seq) FROM events", &[])
            .map_err(store_error)?
            .get(0);
        max.map_or(Ok(0), |max| Ok(from_sql_int(max)? + 1))
    }

    fn scan(&mut self, from: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        events(
            self.client()?,
            &format!("SELECT {COLUMNS} FROM events WHERE seq >= $1 ORDER BY seq LIMIT $2"),
            &[&to_sql_int(from)?, &to_sql_int(limit as u64)?],
        )
    }

    fn visit(
        &mut self,
        from: u64,
        visit: &mut dyn FnMut(StoredEventRef<'_>) -> bool,
    ) -> Result<u64, StoreError> {
        let mut next = from;
        let mut visited = 0;
        loop {
            let page = events(
                self.client()?,
                &format!("SELECT {COLUMNS} FROM events WHERE seq >= $1 ORDER BY seq LIMIT $2"),
                &[&to_sql_int(next)?, &VISIT_PAGE],
            )?;
            let Some(last) = page.last() else {
                return Ok(visited);
            };
            next = last.seq + 1;
            let full = page.len() as i64 == VISIT_PAGE;
            for event in &page {
                visited += 1;
                if !visit(event.borrowed()) {
                    return Ok(visited);
                }
            }
            if !full {
                return Ok(visited);
            }
        }
    }

    fn query(
        &mut self,
        filter: &Filter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // A time range is a sequence range.
        let count = self.count()?;
        let Some(range) = seq_range(filter, after, count, &mut |seq| self.time_at(seq))? else {
            return Ok(Vec::new());
        };
        let (after, seq_end) = (range.after, range.end);
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE seq > $1");
        let mut params: Vec<Box<dyn ToSql + Sync>> =
            vec![Box::new(after.map_or(Ok(-1), to_sql_int)?)];
        let mut text = |column: &str, value: Option<String>, sql: &mut String| {
            if let Some(v) = value {
                params.push(Box::new(v));
                sql.push_str(&format!(" AND {column} = ${}", params.len()));
            }
        };
        text("actor", filter.actor.clone(), &mut sql);
        text("session", filter.session.clone(), &mut sql);
        text("service", filter.service.clone(), &mut sql);
        text("point", filter.point.clone(), &mut sql);
        text(
            "action",
            filter.action.map(|a| a.as_str().to_owned()),
            &mut sql,
        );
        text(
            "outcome",
            filter.outcome.map(|o| o.as_str().to_owned()),
            &mut sql,
        );
        if let Some(end) = seq_end {
            params.push(Box::new(to_sql_int(end)?));
            sql.push_str(&format!(" AND seq < ${}", params.len()));
        }
        params.push(Box::new(to_sql_int(limit as u64)?));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
        events(self.client()?, &sql, &refs)
    }

    fn latest_checkpoint(&mut self) -> Result<Option<(u64, String)>, StoreError> {
        // The coordination row holds the latest; the history is kept once a second.
        let row = self
            .client()?
            .query_opt(
                "SELECT size, note FROM log_head WHERE one = 1 AND note IS NOT NULL
                 UNION ALL
                 (SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1)
                 ORDER BY size DESC LIMIT 1",
                &[],
            )
            .map_err(store_error)?;
        row.map(|row| Ok((from_sql_int(row.get(0))?, row.get(1))))
            .transpose()
    }

    fn checkpoints(&mut self) -> Result<Vec<(u64, String)>, StoreError> {
        checkpoint_history(self.client()?)
    }

    fn sessions(&mut self) -> Result<Vec<SessionRow>, StoreError> {
        sessions(
            self.client()?,
            &format!("SELECT {SESSION_COLUMNS} FROM sessions ORDER BY changed_at, id"),
            &[],
        )
    }
}
