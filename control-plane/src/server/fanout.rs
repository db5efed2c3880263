//! Several replicas on one database acting as one control plane on sessions: what another
//! replica decided reaches this one's session table — and so the captures it holds and the
//! agents of its service — and no decision here rests on a view of a session older than
//! the database's.
//!
//! - **Reading before deciding** ([`current`]): every call on an existing session (capture,
//!   approve, deny, close, revoke, and `GetSession`) reads the session's row from the
//!   database first and takes it into the table, so a session revoked or closed through
//!   another replica is never armed here, and a session opened elsewhere a moment ago is
//!   found. A database that cannot be read refuses the call (`UNAVAILABLE`): a replica that
//!   cannot see the current state acts on none (fail closed). Transitions are further guarded
//!   by the version check at commit.
//! - **Following** ([`follow`]): a thread per replica learns of every session change other
//!   replicas commit — at once by `LISTEN`, and by a sweep twice a second as the safety net
//!   (see [`crate::audit::notify`]) — and takes it into the table, which ends this replica's
//!   captures of a session that ended. A session that ended while this replica held it live
//!   is also revoked on the service's agents: the replica that decided revoked it on them
//!   already (every replica reads every registration, see [`crate::registry`]), and this is
//!   the safety net for a replica that died between its commit and its calls. `RevokeSession`
//!   is idempotent, so the repeat costs one call per agent and changes nothing.
//! - **Expiry once**: every replica's table holds every session, so every replica's sweeper
//!   may record an expiry; the version check lets one commit it and refuses the others
//!   (`ABORTED`), which take the stored session and see it ended (see `super::expiry`).
//!
//! With SQLite there is one replica: the table is the database, and none of this runs.

use std::sync::Arc;

use tonic::Status;

use super::ControlPlane;
use super::agents::revoke_on_agents;
use crate::audit::{SessionRow, StateChange, StateObserver};
use crate::session::Session;
use crate::state::StoredSession;

/// Session `id` as the database holds it now (taken into the table first), or `None` if
/// there is no such session. With one replica, the table is the database.
pub(crate) async fn current(cp: &ControlPlane, id: &str) -> Result<Option<StoredSession>, Status> {
    let id = id.trim();
    if let Some(feed) = &cp.feed {
        let feed = Arc::clone(feed);
        let wanted = id.to_owned();
        let row = tokio::task::spawn_blocking(move || feed.session(&wanted))
            .await
            .map_err(|e| Status::internal(format!("reading session {id} failed: {e}")))?
            .map_err(|error| {
                tracing::error!(%error, session = id, "cannot read a session's current state");
                Status::unavailable(format!(
                    "session {id} cannot be read from the database ({error}), and this replica does not act on what it last knew of it; retry, or tell the control plane's operators"
                ))
            })?;
        take(cp, row.into_iter().collect());
    }
    Ok(cp.sessions.get(id))
}

/// Starts following other replicas' session changes (PostgreSQL only), on a thread of its own
/// that stops with the control plane.
pub(crate) fn follow(cp: &Arc<ControlPlane>) -> std::io::Result<()> {
    let Some(feed) = cp.feed.clone() else {
        return Ok(());
    };
    // Everything the log held when this replica opened it is in the table already.
    let after = cp.audit.size();
    let runtime = tokio::runtime::Handle::current();
    let cp = Arc::clone(cp);
    std::thread::Builder::new()
        .name("loupe-session-feed".into())
        .spawn(move || {
            let shutdown = cp.shutdown.clone();
            let stopping = || *shutdown.borrow();
            feed.follow(after, &stopping, &mut |rows| {
                for session in take(&cp, rows) {
                    let cp = Arc::clone(&cp);
                    runtime.spawn(async move { revoke_on_agents(&cp, &session).await });
                }
            });
        })
        .map(drop)
}

/// Takes `rows` into the table (each only if newer than what it holds: see
/// [`super::table::SessionTable`]); returns the sessions this replica held live that they
/// end.
fn take(cp: &ControlPlane, rows: Vec<SessionRow>) -> Vec<Session> {
    let mut ended = Vec::new();
    for row in rows {
        let was_live = cp
            .sessions
            .get(&row.id)
            .is_some_and(|held| !held.session.state.is_terminal());
        let id = row.id.clone();
        cp.sessions.applied(&StateChange::PutSession(row));
        if let Some(now) = cp.sessions.get(&id)
            && was_live
            && now.session.state.is_terminal()
        {
            ended.push(now.session);
        }
    }
    ended
}
