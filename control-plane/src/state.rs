//! Durable session state: every session and the policy decision it rests on, in an SQLite file
//! beside the audit log, so sessions survive a control-plane restart.
//!
//! The audit log is the record of what happened; this file is only the current state, rebuilt
//! from nothing but itself on start. Each write is one row upsert in WAL mode with
//! `synchronous=FULL`: a transition the caller was told about is on disk. Rows are JSON so that
//! adding a field to [`Session`] needs no migration (serde defaults cover old rows).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use crate::session::Session;

/// The state database's file name in the data directory.
pub const STATE_FILE: &str = "state.sqlite";

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
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("session state database {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("session state database {path}: row {id} is not a session: {source}")]
    Corrupt {
        path: PathBuf,
        id: String,
        source: serde_json::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The sessions table.
pub struct SessionStore {
    path: PathBuf,
    connection: Mutex<Connection>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SessionStore {
    /// Opens (creating if needed) `data_dir/state.sqlite`.
    pub fn open(data_dir: &Path) -> Result<SessionStore, StateError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StateError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(STATE_FILE);
        let failed = |source| StateError::Database {
            path: path.clone(),
            source,
        };
        let connection = Connection::open(&path).map_err(failed)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 CREATE TABLE IF NOT EXISTS sessions (
                     id TEXT PRIMARY KEY,
                     requester TEXT NOT NULL,
                     service TEXT NOT NULL,
                     state TEXT NOT NULL,
                     body TEXT NOT NULL
                 );",
            )
            .map_err(failed)?;
        Ok(SessionStore {
            path,
            connection: Mutex::new(connection),
        })
    }

    /// Writes `stored`, replacing any earlier version of the same session.
    pub fn save(&self, stored: &StoredSession) -> Result<(), StateError> {
        let body = serde_json::to_string(stored).map_err(|source| StateError::Corrupt {
            path: self.path.clone(),
            id: stored.session.id.clone(),
            source,
        })?;
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        connection
            .execute(
                "INSERT INTO sessions (id, requester, service, state, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET state = excluded.state, body = excluded.body",
                params![
                    stored.session.id,
                    stored.session.requester,
                    stored.session.service,
                    stored.session.state.as_str(),
                    body
                ],
            )
            .map_err(|source| StateError::Database {
                path: self.path.clone(),
                source,
            })?;
        Ok(())
    }

    /// Every stored session.
    pub fn load_all(&self) -> Result<Vec<StoredSession>, StateError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let failed = |source| StateError::Database {
            path: self.path.clone(),
            source,
        };
        let mut statement = connection
            .prepare("SELECT id, body FROM sessions ORDER BY rowid")
            .map_err(failed)?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(failed)?;
        let mut sessions = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(failed)?;
            let stored = serde_json::from_str(&body).map_err(|source| StateError::Corrupt {
                path: self.path.clone(),
                id,
                source,
            })?;
            sessions.push(stored);
        }
        Ok(sessions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SessionRequest, SessionState};

    #[test]
    fn sessions_survive_reopening_and_updates_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let session = Session::open(
            SessionRequest {
                id: "ses-1".into(),
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
        );
        let mut stored = StoredSession {
            session,
            policy_ids: vec!["sre-open-sessions".into()],
            policy_version: "v1".into(),
            awaiting_approval_from: vec![],
            approval_points: vec![],
        };
        {
            let store = SessionStore::open(dir.path()).expect("open");
            store.save(&stored).expect("save");
            stored.session.close("done", 1_100).expect("close");
            store.save(&stored).expect("update");
        }
        let store = SessionStore::open(dir.path()).expect("reopen");
        let all = store.load_all().expect("load");
        assert_eq!(all, vec![stored.clone()]);
        assert_eq!(all[0].session.state, SessionState::Closed);
    }
}
