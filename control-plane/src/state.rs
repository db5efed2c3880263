//! The control plane's durable session state: every session and the policy decision it rests
//! on, so sessions survive a restart.
//!
//! Sessions are rows of the audit database, changed only together with the events that record
//! the change ([`crate::audit::AuditLog::append_with_state`]): one decision, one transaction
//! (see [`crate::audit`] for why). This module owns the rows' form — JSON bodies, so that
//! adding a field to [`Session`] needs no migration (serde defaults cover old rows) — and the
//! one-time import of the separate `state.sqlite` that earlier versions kept beside the log.
//!
//! **Importing `state.sqlite`.** On the first start of this version, the rows of an existing
//! `state.sqlite` are copied into the audit database in one transaction (a session already
//! there is kept), then the file is renamed `state.sqlite.imported` (mode 0600) so that it is
//! never read again and stays for the operator to inspect or delete. A crash between the two
//! steps repeats the import on the next start, which changes nothing. The imported rows are
//! trusted as the earlier version left them: a crash of that version could have left one out of
//! step with the log, which is what this version's single transaction prevents from now on.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::audit::{SessionRow, SqliteStore, StateChange, StoreError};
use crate::session::Session;

/// The file earlier versions kept sessions in, in the data directory.
pub const LEGACY_STATE_FILE: &str = "state.sqlite";
/// What that file is renamed to once imported.
pub const IMPORTED_STATE_FILE: &str = "state.sqlite.imported";

/// A session with the decision that admitted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSession {
    pub session: Session,
    /// The policies that decided the opening.
    #[serde(default)]
    pub policy_ids: Vec<String>,
    #[serde(default)]
    pub policy_version: String,
    /// For a pending session, the groups whose approval was missing when it was requested.
    #[serde(default)]
    pub awaiting_approval_from: Vec<String>,
    /// The points whose policy asked for approval; an approver must be allowed on each.
    #[serde(default)]
    pub approval_points: Vec<String>,
    /// The version of the stored row this was read from (0: not stored yet); kept in a
    /// column, not in the body (see [`SessionRow`]).
    #[serde(skip)]
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("session state: stored session {id} is not a session: {source}")]
    Corrupt {
        id: String,
        source: serde_json::Error,
    },
    #[error("session state: {0}")]
    Store(#[from] StoreError),
    #[error("importing the sessions of an earlier version from {path}: {reason}")]
    Import { path: PathBuf, reason: String },
}

impl StoredSession {
    /// The row that stores this session.
    pub fn to_row(&self) -> Result<SessionRow, StateError> {
        let body = serde_json::to_string(self).map_err(|source| StateError::Corrupt {
            id: self.session.id.clone(),
            source,
        })?;
        Ok(SessionRow {
            id: self.session.id.clone(),
            requester: self.session.requester.clone(),
            service: self.session.service.clone(),
            state: self.session.state.as_str().to_owned(),
            body,
            version: self.version,
        })
    }

    /// The change that stores this session as the next version of the one it was read as:
    /// refused if another writer stored a version meanwhile (see [`SessionRow`]).
    pub fn to_change(&self) -> Result<StateChange, StateError> {
        let mut row = self.to_row()?;
        row.version = self.version + 1;
        Ok(StateChange::PutSession(row))
    }

    /// The session a row stores.
    pub fn from_row(row: &SessionRow) -> Result<StoredSession, StateError> {
        let mut stored: StoredSession =
            serde_json::from_str(&row.body).map_err(|source| StateError::Corrupt {
                id: row.id.clone(),
                source,
            })?;
        stored.version = row.version;
        Ok(stored)
    }
}

/// Imports `data_dir/state.sqlite` of an earlier version into `store`, once (see the module
/// doc); returns how many sessions were new.
pub fn import_legacy_sessions(
    data_dir: &Path,
    store: &mut SqliteStore,
) -> Result<usize, StateError> {
    let path = data_dir.join(LEGACY_STATE_FILE);
    if !path.exists() {
        return Ok(0);
    }
    let failed = |reason: String| StateError::Import {
        path: path.clone(),
        reason,
    };
    let rows = read_legacy_rows(&path).map_err(|e| failed(e.to_string()))?;
    for row in &rows {
        StoredSession::from_row(row)?;
    }
    let imported = store.import_sessions(&rows)?;
    let target = data_dir.join(IMPORTED_STATE_FILE);
    crate::audit::sqlite::make_private_files(&path)?;
    std::fs::rename(&path, &target).map_err(|e| failed(format!("renaming it: {e}")))?;
    for suffix in ["-wal", "-shm"] {
        let mut leftover = path.as_os_str().to_owned();
        leftover.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(leftover));
    }
    tracing::info!(
        from = %path.display(),
        sessions = rows.len(),
        new = imported,
        kept_as = %target.display(),
        "imported the sessions of an earlier version into the audit database"
    );
    Ok(imported)
}

fn read_legacy_rows(path: &Path) -> rusqlite::Result<Vec<SessionRow>> {
    // Read-write, so that SQLite folds a leftover WAL into the file before it is renamed.
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let mut statement = connection
        .prepare("SELECT id, requester, service, state, body FROM sessions ORDER BY rowid")?;
    statement
        .query_map([], |row| {
            Ok(SessionRow {
                id: row.get(0)?,
                requester: row.get(1)?,
                service: row.get(2)?,
                state: row.get(3)?,
                body: row.get(4)?,
                // Stored before versions: the first.
                version: 1,
            })
        })?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SessionRequest, SessionState};

    fn session(id: &str) -> StoredSession {
        StoredSession {
            session: Session::open(
                SessionRequest {
                    id: id.into(),
                    requester: "spiffe://loupe.test/user/alice".into(),
                    service: "checkout".into(),
                    points: vec!["checkout.apply_discount".into()],
                    reason: "INC-1".into(),
                    ticket: None,
                    ttl_seconds: 600,
                    approvals_required: 0,
                },
                1_000,
                900,
            ),
            policy_ids: vec!["sre-open-sessions".into()],
            policy_version: "v1".into(),
            awaiting_approval_from: vec![],
            approval_points: vec![],
            version: 0,
        }
    }

    #[test]
    fn a_session_round_trips_through_its_row() {
        let mut stored = session("ses-1");
        stored.session.close("done", 1_100).expect("close");
        let row = stored.to_row().expect("row");
        assert_eq!(row.state, "closed");
        assert_eq!(StoredSession::from_row(&row).expect("back"), stored);
        assert_eq!(
            StoredSession::from_row(&row).expect("back").session.state,
            SessionState::Closed
        );
    }

    #[test]
    fn an_earlier_versions_state_file_is_imported_once_and_put_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let legacy = dir.path().join(LEGACY_STATE_FILE);
        {
            let connection = Connection::open(&legacy).expect("legacy db");
            connection
                .execute_batch(
                    "PRAGMA journal_mode = WAL;
                     CREATE TABLE sessions (id TEXT PRIMARY KEY, requester TEXT NOT NULL,
                         service TEXT NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL);",
                )
                .expect("schema");
            for id in ["ses-1", "ses-2"] {
                let row = session(id).to_row().expect("row");
                connection
                    .execute(
                        "INSERT INTO sessions VALUES (?1, ?2, ?3, ?4, ?5)",
                        rusqlite::params![row.id, row.requester, row.service, row.state, row.body],
                    )
                    .expect("insert");
            }
        }
        let mut store = SqliteStore::open(dir.path()).expect("store");
        assert_eq!(
            import_legacy_sessions(dir.path(), &mut store).expect("import"),
            2
        );
        assert!(!legacy.exists());
        assert!(dir.path().join(IMPORTED_STATE_FILE).exists());
        // Nothing left to import: a second start is a no-op.
        assert_eq!(
            import_legacy_sessions(dir.path(), &mut store).expect("again"),
            0
        );
        let log = crate::audit::AuditLog::open_with_store(
            store,
            loupe_audit::checkpoint::NoteSigner::from_seed("loupe.test/state", [1; 32])
                .expect("key"),
            crate::audit::AuditLogConfig::default(),
        )
        .expect("log");
        let sessions: Vec<StoredSession> = log
            .sessions()
            .expect("sessions")
            .iter()
            .map(|row| StoredSession::from_row(row).expect("session"))
            .collect();
        // Stored before versions: each is at the first.
        let first = |id| StoredSession {
            version: 1,
            ..session(id)
        };
        assert_eq!(sessions, vec![first("ses-1"), first("ses-2")]);
    }
}
