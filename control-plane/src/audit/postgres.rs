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
//! **Throughput: what a commit holds the row for.** The row is held from the lock to the WAL
//! flush of `COMMIT`, so the commits of all replicas form one serialized sequence and the log's
//! throughput is the events per commit over the time each holds the row. Two things follow:
//! - *Group commit per replica* (the writer takes everything queued while its previous commit
//!   was in flight, and completes the batch once it holds the row, up to
//!   [`super::AuditLogConfig::max_batch`]): while the other replicas hold the row, a replica's
//!   appenders queue, so a batch grows with the appends in flight and one lock, one catch-up
//!   and one flush serve all of them.
//! - *As little as possible inside the lock*: two round trips and the flush. The first message
//!   takes the lock and, as statements of their own in the same message, reads what the
//!   writer will catch up on (see `lock_and_read`); the second writes the events, the
//!   coordination row and the checkpoint's history row in one statement, prepared once per
//!   connection (a statement prepared per use costs a round trip of its own); then `COMMIT`.
//!   (Each session a batch changes adds one.) The writer's connection also never scans a
//!   table: without statistics — a new database, or a table that grew since autovacuum's
//!   last `ANALYZE` — the planner read the whole events table to find the few new ones, which
//!   was measured as most of a commit.
//!
//! The catch-up itself stays inside the lock, checked before the batch is sealed: doing it
//! after the commit — sealing on the stored frontier alone — would have a replica sign a
//! checkpoint over events it has not checked. It is kept cheap instead: an event taken up is
//! checked against its predecessor and its columns, and joins the tree only if the signed
//! checkpoint stored with it covers exactly the tree so extended, so it is not decoded in full
//! (a log writer sealed every byte of it; see [`super::log`]), and the lines arrive as hex text
//! decoded by table lookup. Not done yet: sending the write and `COMMIT` together (pipelined,
//! which needs the asynchronous client), one round trip less.
//!
//! Measured (the `replicas` bench with the phases of each commit timed, three replicas, one
//! run alternating the builds before and after that change, a two-core machine at load
//! 2.3–2.7): at 1536 appends in flight a commit of 512 events holds the row 11–13 ms — the
//! write 5–6 ms (the rows, their seven index entries and their WAL), `COMMIT` 3–5 ms, catching
//! up on the ~1,000 events the other two appended and sealing 2.4 ms (3.7–4.8 ms before) — and
//! waits 43–48 ms for the other two replicas' turns, more than their holds add up to: each
//! hand-over of the lock waits for the next backend and writer to get a core. At 48 in flight
//! that is all there is: a commit of 16 events holds the row 1.3 ms and waits 16 ms for it.
//!
//! **Staging, tried and measured, not adopted.** The obvious way to take the three commits
//! out of a round: a replica that finds the log held commits its batch to a staging table
//! (its session changes with it, version-checked, so a decision and its record stay one
//! transaction) without the coordination row, concurrently with the others; whoever holds the
//! row next numbers, chains and signs everything staged, writes the events, and marks each
//! staged batch with where it landed; a replica whose batch another sequenced only reads its
//! receipts. It was built (each staged batch signed by the log's key, so the table is not a
//! way to have events signed; the session end announced when sequenced) and passed the tests
//! of this module, but in the same run it was no faster — 48 / 768 / 1536 in flight:
//! 1.13–1.17 / 10.8–11.2 / 13.9–16.0 k/s against 1.17–1.28 / 11.2–12.1 / 17.1–17.9 k/s for
//! the commits above (load 3.9–4.6). What a round costs on this machine is not the three
//! flushes (3–8 ms each) but the events written under the lock, and those the sequencing
//! writer still writes, rows and seven index entries, for everyone — plus, under the lock, the
//! staged lines to check and decode; outside it, each replica's path gained a commit of its
//! own and half a dozen round trips, and a sequencing commit takes only what was staged
//! before it began, so rounds did not shrink. Worth it only where the flush dominates (a remote,
//! synchronously replicated database), and then with the staged batches' checking moved out
//! of the lock.
//!
//! **Sessions** carry a version; a change is written only over the version before it (see
//! [`SessionRow`]), and the rows a commit changes are stamped with the log size after it
//! (`changed_at`), so a catching-up writer learns which sessions others changed. A session's
//! end is also announced to every replica in the transaction that records it (a trigger's
//! `pg_notify`, schema migration 2; read by [`super::notify`]).
//!
//! **Agent registrations** live here too (schema migration 3), outside the log: a lease is
//! soft state its agent renews, written by [`crate::registry::shared`].
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
use postgres::{
    Client, Config, GenericClient, NoTls, Row, SimpleQueryMessage, SimpleQueryRow, Statement,
};

use super::postgres_tls::{RustlsConnect, tls_request};
use super::query::{Filter, seq_range};
use super::store::{
    AuditReader, AuditStore, Batch, Frontier, HeldLog, ReaderSource, Seal, SessionRow, StoreError,
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
    // 3: agent registrations and their leases, shared by every replica (see
    // `crate::registry::shared`). `announcement` is the registration as checked, encoded as
    // a `loupe.v1.RegisterRequest`; a row whose lease ran out is kept a while, so that every
    // replica's sweep sees it go.
    "
CREATE TABLE agent_instances (
    service          TEXT NOT NULL,
    instance         TEXT NOT NULL,
    identity         TEXT NOT NULL,
    announcement     BYTEA NOT NULL,
    registered_at    BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    PRIMARY KEY (service, instance)
);
CREATE INDEX agent_instances_identity ON agent_instances (identity, lease_expires_at);
CREATE INDEX agent_instances_lease    ON agent_instances (lease_expires_at);
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
pub(crate) fn store_error(err: postgres::Error) -> StoreError {
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

pub(crate) fn to_sql_int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Other(format!("{value} is out of range")))
}

pub(crate) fn from_sql_int(value: i64) -> Result<u64, StoreError> {
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

/// Connections to one database for short reads and writes outside the log's writer, kept
/// between uses; one that failed is dropped, and the next use connects again. At most
/// [`Connections::MAX`] are open at once: a burst of calls waits for one (at most
/// [`CONNECT_TIMEOUT`], then fails `Unavailable`) rather than open as many connections as
/// there are blocking threads, which would exhaust the server's `max_connections` for every
/// replica and for the log's writer.
pub(crate) struct Connections {
    database: Database,
    /// What the connections name themselves to the server (`pg_stat_activity`).
    application: &'static str,
    pool: std::sync::Mutex<Pool>,
    returned: std::sync::Condvar,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Client>,
    /// Connections open or being opened, idle ones included.
    open: usize,
}

impl Connections {
    /// Connections one pool keeps open at most.
    pub(crate) const MAX: usize = 8;

    pub(crate) fn new(database: Database, application: &'static str) -> Connections {
        Connections {
            database,
            application,
            pool: std::sync::Mutex::new(Pool::default()),
            returned: std::sync::Condvar::new(),
        }
    }

    pub(crate) fn database(&self) -> &Database {
        &self.database
    }

    /// Runs `work` on an idle connection, or a new one. Blocks: call it from a plain thread
    /// or `spawn_blocking`.
    pub(crate) fn with<T>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.take()?;
        let result = work(&mut client);
        let healthy = !matches!(result, Err(StoreError::Unavailable(_))) && !client.is_closed();
        self.give_back(healthy.then_some(client));
        result
    }

    /// An idle connection, or a new one if fewer than [`Self::MAX`] are open, waiting for one
    /// otherwise.
    fn take(&self) -> Result<Client, StoreError> {
        let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
        let mut pool = self.lock();
        loop {
            while let Some(client) = pool.idle.pop() {
                if !client.is_closed() {
                    return Ok(client);
                }
                pool.open = pool.open.saturating_sub(1);
            }
            if pool.open < Self::MAX {
                pool.open += 1;
                drop(pool);
                let connected = self.database.connect_as(self.application);
                if connected.is_err() {
                    self.give_back(None);
                }
                return connected;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "all {} connections to the database are busy",
                    Self::MAX
                )));
            }
            pool = self
                .returned
                .wait_timeout(pool, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Returns a connection taken (`None`: it failed, and is closed) and wakes a waiter.
    fn give_back(&self, client: Option<Client>) {
        let mut pool = self.lock();
        match client {
            Some(client) => pool.idle.push(client),
            None => pool.open = pool.open.saturating_sub(1),
        }
        drop(pool);
        self.returned.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.lock().idle);
        idle.into_iter().for_each(close_off_runtime);
    }
}

/// The PostgreSQL audit store (the write side of one replica).
pub struct PostgresStore {
    database: Database,
    /// `None` after the connection failed: the next commit reconnects.
    writer: Option<WriterConnection>,
    /// The log size after this store's last commit: the view its writer will catch up from
    /// at the next one (see [`ReadAhead`]). `None` until a commit succeeds, and after one fails.
    committed: Option<u64>,
    readers: Arc<PostgresReaders>,
}

/// The writer's connection, with the statements of a commit prepared once: a statement
/// prepared per use costs a round trip of its own, and inside the lock every round trip is
/// time that every replica waits.
struct WriterConnection {
    client: Client,
    statements: Statements,
    /// When a commit last went through this connection (see [`PostgresStore::writer`]).
    last_used: std::time::Instant,
}

/// A writer's connection idle for longer is checked (one empty query) before a commit uses
/// it: a database that restarted meanwhile closed it, and the driver learns that only when it
/// next sends something — which would be the commit, refused as `UNAVAILABLE` though the
/// database is back. Checking before the lock is taken retries nothing whose outcome is
/// unknown; a busy writer (several commits a second) pays nothing.
const WRITER_IDLE_CHECK: Duration = Duration::from_millis(250);

/// How long the check of an idle connection may take before it counts as dead.
const WRITER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

struct Statements {
    write: Statement,
    insert_session: Statement,
    update_session: Statement,
    session_version: Statement,
    sessions_by_id: Statement,
    events_from: Statement,
    sessions_changed_after: Statement,
}

impl WriterConnection {
    fn open(database: &Database) -> Result<Self, StoreError> {
        let mut client = database.connect()?;
        check_schema(&mut client)?;
        Self::prepare(client)
    }

    fn prepare(mut client: Client) -> Result<Self, StoreError> {
        // Every query of the writer reads a range of an index (events past a sequence number,
        // sessions by id or by the commit that changed them). Without statistics — a new
        // database, or a table that grew since autovacuum's last ANALYZE — the planner guesses
        // that a third of the table matches and scans all of it, inside the lock: measured,
        // that was most of a commit's time. So the writer's connection does not scan tables.
        client
            .batch_execute("SET enable_seqscan = off")
            .map_err(store_error)?;
        let mut prepare = |sql: &str| client.prepare(sql).map_err(store_error);
        let statements = Statements {
            write: prepare(WRITE_BATCH)?,
            insert_session: prepare(
                "INSERT INTO sessions (id, requester, service, state, body, version, changed_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (id) DO NOTHING",
            )?,
            update_session: prepare(
                "UPDATE sessions SET state = $2, body = $3, version = $4::BIGINT, changed_at = $5
                 WHERE id = $1 AND version = $4::BIGINT - 1",
            )?,
            session_version: prepare("SELECT version FROM sessions WHERE id = $1")?,
            sessions_by_id: prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ANY($1)"
            ))?,
            events_from: prepare(&format!(
                "SELECT {COLUMNS} FROM events WHERE seq >= $1 ORDER BY seq"
            ))?,
            sessions_changed_after: prepare(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE changed_at > $1 ORDER BY changed_at"
            ))?,
        };
        Ok(Self {
            client,
            statements,
            last_used: std::time::Instant::now(),
        })
    }

    /// Whether this connection can carry the next commit: open, and if it has been idle,
    /// answering (see [`WRITER_IDLE_CHECK`]).
    fn usable(&mut self) -> bool {
        if self.client.is_closed() {
            return false;
        }
        self.last_used.elapsed() < WRITER_IDLE_CHECK
            || self.client.is_valid(WRITER_CHECK_TIMEOUT).is_ok()
    }
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
            writer: Some(WriterConnection::prepare(client)?),
            committed: None,
            database,
        })
    }

    fn writer(&mut self) -> Result<&mut WriterConnection, StoreError> {
        if !self.writer.as_mut().is_some_and(WriterConnection::usable) {
            self.writer = None;
            self.writer = Some(WriterConnection::open(&self.database)?);
        }
        self.writer
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

pub(super) fn events<T: ?Sized + postgres::ToStatement>(
    client: &mut impl GenericClient,
    sql: &T,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<StoredEvent>, StoreError> {
    client
        .query(sql, params)
        .map_err(store_error)?
        .iter()
        .map(row_to_event)
        .collect()
}

pub(super) fn sessions<T: ?Sized + postgres::ToStatement>(
    client: &mut impl GenericClient,
    sql: &T,
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

/// One commit's write, in one statement (one round trip inside the lock): the events, the
/// checkpoint in the history when it is to be kept there, and the new coordination row.
const WRITE_BATCH: &str = "
WITH appended AS (
    INSERT INTO events (seq, time_ms, actor, action, outcome, session, service, point, line)
    SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                         $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BYTEA[])
), archived AS (
    INSERT INTO checkpoints (size, note) SELECT $10::BIGINT, $11::TEXT WHERE $13::BOOLEAN
    ON CONFLICT (size) DO UPDATE SET note = excluded.note
)
UPDATE log_head SET size = $10::BIGINT, note = $11::TEXT, frontier = $12::BYTEA WHERE one = 1";

/// What a writer asks for once it holds the log — the events and session changes past the
/// tree it knows — read in the round trip that takes the lock (see [`lock_and_read`]).
struct ReadAhead {
    events: Option<(u64, Vec<StoredEvent>)>,
    /// With the log size of the commit that changed each.
    sessions: Option<(u64, Vec<(u64, SessionRow)>)>,
}

/// The log held by one commit: the coordination row is locked.
struct HeldPostgres<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    statements: &'a Statements,
    head: &'a Head,
    ahead: ReadAhead,
}

impl HeldLog for HeldPostgres<'_, '_> {
    fn events_from(&mut self, from: u64) -> Result<Vec<StoredEvent>, StoreError> {
        if let Some((_, events)) = self.ahead.events.take_if(|(read, _)| from >= *read) {
            return Ok(events.into_iter().filter(|e| e.seq >= from).collect());
        }
        events(self.tx, &self.statements.events_from, &[&to_sql_int(from)?])
    }

    fn sessions_changed_after(&mut self, size: u64) -> Result<Vec<SessionRow>, StoreError> {
        if let Some((_, rows)) = self.ahead.sessions.take_if(|(read, _)| size >= *read) {
            return Ok(rows
                .into_iter()
                .filter(|(changed_at, _)| *changed_at > size)
                .map(|(_, row)| row)
                .collect());
        }
        sessions(
            self.tx,
            &self.statements.sessions_changed_after,
            &[&to_sql_int(size)?],
        )
    }

    fn sessions(&mut self, ids: &[&str]) -> Result<Vec<SessionRow>, StoreError> {
        sessions(self.tx, &self.statements.sessions_by_id, &[&ids])
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
        let read_from = self.committed.take();
        let result = self.writer().and_then(|writer| {
            writer.last_used = std::time::Instant::now();
            commit_batch(writer, read_from, seal)
        });
        match result {
            Ok(size) => {
                self.committed = Some(size);
                Ok(())
            }
            Err(error) => {
                if matches!(error, StoreError::Unavailable(_)) {
                    // Whatever state that connection is in, it is not to be trusted for the
                    // next commit.
                    self.writer = None;
                }
                Err(error)
            }
        }
    }

    fn readers(&self) -> Arc<dyn ReaderSource> {
        self.readers.clone()
    }
}

/// One commit: lock the coordination row, let the writer seal its batch, write it. Returns
/// the log size after it.
///
/// Inside the lock it costs two round trips and the WAL flush: the lock with everything the
/// writer catches up on, read in the same round trip ([`lock_and_read`]); the batch in one
/// statement; `COMMIT`. (Sessions a batch changes add one each.)
fn commit_batch(
    writer: &mut WriterConnection,
    read_from: Option<u64>,
    seal: &mut Seal<'_>,
) -> Result<u64, StoreError> {
    let WriterConnection {
        client, statements, ..
    } = writer;
    // Dropping an uncommitted transaction rolls it back: an error anywhere leaves nothing.
    let mut tx = client.transaction().map_err(store_error)?;
    let (head, ahead) = lock_and_read(&mut tx, read_from)?;
    let batch = seal(&mut HeldPostgres {
        tx: &mut tx,
        statements,
        head: &head,
        ahead,
    })?;
    let Some(batch) = batch else {
        // Nothing to write: the writer has caught up on the log as stored.
        return Ok(head.size);
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
    write_batch(&mut tx, statements, &batch)?;
    let changed_at = to_sql_int(batch.checkpoint.size)?;
    for change in &batch.state {
        put_session(&mut tx, statements, change.session(), changed_at)?;
    }
    tx.commit().map_err(store_error)?;
    Ok(batch.checkpoint.size)
}

/// Locks the coordination row and, when the writer's view is known (`read_from`: the size
/// after this store's last commit), reads what it will catch up on — the events and the
/// session changes past that size — in the same round trip. The reads follow the lock as
/// statements of their own, so each sees everything committed before the lock was granted
/// (under `READ COMMITTED` every statement takes a fresh snapshot; one statement that both
/// waited for the lock and read the events would see them as they were before it waited).
/// The simple query protocol is what sends several statements at once; its text is fixed
/// but for `read_from`, a number this store produced.
fn lock_and_read(
    tx: &mut postgres::Transaction<'_>,
    read_from: Option<u64>,
) -> Result<(Head, ReadAhead), StoreError> {
    let mut sql =
        String::from("SELECT size, note, frontier FROM log_head WHERE one = 1 FOR UPDATE");
    if let Some(from) = read_from {
        let from = to_sql_int(from)?;
        sql.push_str(&format!(
            "; SELECT {COLUMNS} FROM events WHERE seq >= {from} ORDER BY seq\
             ; SELECT {SESSION_COLUMNS}, changed_at FROM sessions WHERE changed_at > {from} ORDER BY changed_at"
        ));
    }
    let mut results = statement_results(tx.simple_query(&sql).map_err(store_error)?).into_iter();
    let head = match results.next().as_deref() {
        Some([row]) => Head {
            size: text_int(row, 0)?,
            note: text(row, 1)?.map(str::to_owned),
            frontier: text_bytea(row, 2)?,
        },
        _ => {
            return Err(StoreError::Corrupt(
                "the coordination row is missing".into(),
            ));
        }
    };
    let mut ahead = ReadAhead {
        events: None,
        sessions: None,
    };
    if let Some(from) = read_from {
        let (Some(events), Some(sessions)) = (results.next(), results.next()) else {
            return Err(StoreError::Other(
                "the database answered fewer statements than it was sent".into(),
            ));
        };
        ahead.events = Some((
            from,
            events.iter().map(text_event).collect::<Result<_, _>>()?,
        ));
        ahead.sessions = Some((
            from,
            sessions
                .iter()
                .map(|row| Ok((text_int(row, 6)?, text_session(row)?)))
                .collect::<Result<_, StoreError>>()?,
        ));
    }
    Ok((head, ahead))
}

/// The rows of each statement of a simple query, in order.
fn statement_results(messages: Vec<SimpleQueryMessage>) -> Vec<Vec<SimpleQueryRow>> {
    let mut results = Vec::new();
    let mut rows = Vec::new();
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(row),
            SimpleQueryMessage::CommandComplete(_) => results.push(std::mem::take(&mut rows)),
            _ => {}
        }
    }
    results
}

fn text(row: &SimpleQueryRow, column: usize) -> Result<Option<&str>, StoreError> {
    row.try_get(column).map_err(store_error)
}

fn text_required(row: &SimpleQueryRow, column: usize) -> Result<&str, StoreError> {
    text(row, column)?.ok_or_else(|| StoreError::Corrupt(format!("column {column} is null")))
}

fn text_int(row: &SimpleQueryRow, column: usize) -> Result<u64, StoreError> {
    let value = text_required(row, column)?;
    let value: i64 = value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("{value:?} is not a number")))?;
    from_sql_int(value)
}

/// A `bytea` as the text protocol sends it (`\x` and hex digits).
fn text_bytea(row: &SimpleQueryRow, column: usize) -> Result<Vec<u8>, StoreError> {
    text_required(row, column)?
        .strip_prefix("\\x")
        .and_then(|digits| decode_hex(digits.as_bytes()))
        .ok_or_else(|| StoreError::Corrupt(format!("column {column} is not hex-encoded bytes")))
}

/// The value of each hex digit (either case), [`NOT_HEX`] for any other byte.
const HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        values[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        values[b'a' as usize + i] = 10 + i as u8;
        values[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    values
};
const NOT_HEX: u8 = 0xff;

/// Hex digits to bytes (`None`: an odd count, or a byte that is no hex digit). A catching-up
/// writer decodes every event line it reads this way while it holds the log, so it is a
/// table lookup per digit rather than a match.
fn decode_hex(digits: &[u8]) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    let mut bad = 0;
    for pair in digits.chunks_exact(2) {
        let (high, low) = (HEX_VALUES[pair[0] as usize], HEX_VALUES[pair[1] as usize]);
        bad |= high | low;
        bytes.push((high << 4) | (low & 0x0f));
    }
    // Every valid digit is below 16; NOT_HEX sets the high bits.
    (bad & 0xf0 == 0).then_some(bytes)
}

/// An event read as text ([`COLUMNS`]).
fn text_event(row: &SimpleQueryRow) -> Result<StoredEvent, StoreError> {
    let owned = |column| Ok::<_, StoreError>(text(row, column)?.map(str::to_owned));
    Ok(StoredEvent {
        seq: text_int(row, 0)?,
        time_ms: text_int(row, 1)?,
        actor: text_required(row, 2)?.to_owned(),
        action: text_required(row, 3)?.to_owned(),
        outcome: text_required(row, 4)?.to_owned(),
        session: owned(5)?,
        service: owned(6)?,
        point: owned(7)?,
        line: text_bytea(row, 8)?,
    })
}

/// A session read as text ([`SESSION_COLUMNS`]).
fn text_session(row: &SimpleQueryRow) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: text_required(row, 0)?.to_owned(),
        requester: text_required(row, 1)?.to_owned(),
        service: text_required(row, 2)?.to_owned(),
        state: text_required(row, 3)?.to_owned(),
        body: text_required(row, 4)?.to_owned(),
        version: text_int(row, 5)?,
    })
}

/// Writes `batch`'s events, checkpoint and coordination row ([`WRITE_BATCH`]).
fn write_batch(
    tx: &mut postgres::Transaction<'_>,
    statements: &Statements,
    batch: &Batch,
) -> Result<(), StoreError> {
    let columns = EventColumns::of(&batch.events)?;
    let size = to_sql_int(batch.checkpoint.size)?;
    let frontier = batch.frontier.to_bytes();
    let mut params = columns.params().to_vec();
    params.extend([
        &size as &(dyn ToSql + Sync),
        &batch.checkpoint.note,
        &frontier,
        &batch.checkpoint.archive,
    ]);
    let updated = tx
        .execute(&statements.write, &params)
        .map_err(store_error)?;
    if updated != 1 {
        return Err(StoreError::Corrupt(
            "the coordination row is missing".into(),
        ));
    }
    Ok(())
}

/// Inserts `events` in one statement, without touching the coordination row (a migration
/// writes that itself, once, from the copied events).
pub(super) fn insert_events(
    tx: &mut postgres::Transaction<'_>,
    events: &[StoredEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let columns = EventColumns::of(events)?;
    tx.execute(
        "INSERT INTO events (seq, time_ms, actor, action, outcome, session, service, point, line)
         SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                              $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::BYTEA[])",
        &columns.params(),
    )
    .map_err(store_error)?;
    Ok(())
}

/// The columns of `events` ([`COLUMNS`]) as arrays, one element per event: the first nine
/// parameters of every statement that inserts events with `UNNEST`.
struct EventColumns<'e> {
    seq: Vec<i64>,
    time_ms: Vec<i64>,
    actor: Vec<&'e str>,
    action: Vec<&'e str>,
    outcome: Vec<&'e str>,
    session: Vec<Option<&'e str>>,
    service: Vec<Option<&'e str>>,
    point: Vec<Option<&'e str>>,
    line: Vec<&'e [u8]>,
}

impl<'e> EventColumns<'e> {
    fn of(events: &'e [StoredEvent]) -> Result<EventColumns<'e>, StoreError> {
        let column = |f: fn(&StoredEvent) -> &str| events.iter().map(f).collect();
        let optional = |f: fn(&StoredEvent) -> Option<&str>| events.iter().map(f).collect();
        Ok(EventColumns {
            seq: events
                .iter()
                .map(|e| to_sql_int(e.seq))
                .collect::<Result<_, _>>()?,
            time_ms: events
                .iter()
                .map(|e| to_sql_int(e.time_ms))
                .collect::<Result<_, _>>()?,
            actor: column(|e| &e.actor),
            action: column(|e| &e.action),
            outcome: column(|e| &e.outcome),
            session: optional(|e| e.session.as_deref()),
            service: optional(|e| e.service.as_deref()),
            point: optional(|e| e.point.as_deref()),
            line: events.iter().map(|e| e.line.as_slice()).collect(),
        })
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.seq,
            &self.time_ms,
            &self.actor,
            &self.action,
            &self.outcome,
            &self.session,
            &self.service,
            &self.point,
            &self.line,
        ]
    }
}

/// Stores `row` if the stored session is at the version before it (absent, for version 1).
fn put_session(
    tx: &mut postgres::Transaction<'_>,
    statements: &Statements,
    row: &SessionRow,
    changed_at: i64,
) -> Result<(), StoreError> {
    let version = to_sql_int(row.version)?;
    let written = if row.version == 1 {
        tx.execute(
            &statements.insert_session,
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
            &statements.update_session,
            &[&row.id, &row.state, &row.body, &version, &changed_at],
        )
    }
    .map_err(store_error)?;
    if written == 1 {
        return Ok(());
    }
    let stored: Option<i64> = tx
        .query_opt(&statements.session_version, &[&row.id])
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
pub(crate) fn close_off_runtime(client: Client) {
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

#[cfg(test)]
mod tests {
    use super::decode_hex;

    #[test]
    fn hex_digits_decode_to_the_bytes_they_spell_and_nothing_else_does() {
        let all: Vec<u8> = (0..=255).collect();
        let lower: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(decode_hex(lower.as_bytes()), Some(all.clone()));
        assert_eq!(decode_hex(lower.to_uppercase().as_bytes()), Some(all));
        assert_eq!(decode_hex(b""), Some(Vec::new()));
        for bad in [
            &b"0"[..],
            b"0g",
            b"g0",
            b" 0",
            b"0\xff",
            b"\xff\xff",
            b"-1",
            b"0x",
        ] {
            assert_eq!(decode_hex(bad), None, "{bad:?}");
        }
    }
}
