//! What other replicas did to sessions, learnt from the shared PostgreSQL database as it
//! commits: the read side of fanning a revocation out to every replica.
//!
//! A replica's writer learns of other replicas' session changes only when it commits something
//! itself (see [`super::log`]); a replica holding an idle capture commits nothing, so it needs
//! a way of its own to hear that the capture's session ended. Two, one as the other's safety
//! net — the shape of every serious design that pushes invalidations (Teleport's lock
//! watchers, Kubernetes informers' watch-plus-resync):
//!
//! - **Notification.** The database announces every session end in the transaction that
//!   records it: a trigger on `sessions` (schema migration 2) calls
//!   `pg_notify('loupe_session_ended', id)` for a row stored as closed, expired, revoked or
//!   denied, so the announcement is sent if and only if the decision commits. Each replica
//!   holds one connection that `LISTEN`s on the channel ([`SessionFeed::follow`]); a
//!   notification wakes it at once.
//! - **Sweep.** Notifications are lost when the listening connection drops (they are not
//!   queued for a connection that is gone), so whatever wakes the listener — a notification,
//!   or [`SWEEP_INTERVAL`] without one — it reads every session whose `changed_at` (the log
//!   size after the commit that changed it) is past the largest it has seen. After a reconnect
//!   it listens first and sweeps second, so nothing committed in between is missed. Commits
//!   are serialized by the log's coordination row, so they become visible in `changed_at`
//!   order and a watermark never skips one.
//!
//! The rows go to the caller as stored (with their version); the control plane's table keeps
//! a row only if it is newer than what it holds, so a row read twice, or also learnt from the
//! writer's catch-up, changes nothing.
//!
//! [`SessionFeed::session`] reads one session as stored now, for a decision that must not rest
//! on what this replica last heard (arming a capture).

use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

use super::postgres::{
    Connections, Database, SESSION_COLUMNS, from_sql_int, row_to_session, store_error, to_sql_int,
};
use super::store::{SessionRow, StoreError};

/// The channel session ends are announced on (named in schema migration 2).
pub const CHANNEL: &str = "loupe_session_ended";

/// How long the listener waits for a notification before it sweeps anyway: the longest a
/// lost notification delays a replica's learning of a session's end (plus the sweep itself).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// The application name of each replica's listening connection, as `pg_stat_activity` shows
/// it.
pub const LISTENER_NAME: &str = "loupe-control-plane-listener";

/// Session changes read from the shared database: followed as they commit, or one session
/// read on demand.
pub struct SessionFeed {
    /// Connections for [`SessionFeed::session`], kept between reads.
    readers: Connections,
}

impl std::fmt::Debug for SessionFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionFeed")
            .field("database", self.readers.database())
            .finish_non_exhaustive()
    }
}

/// A session row with the log size at which it was stored.
struct Changed {
    row: SessionRow,
    changed_at: u64,
}

impl SessionFeed {
    pub fn new(database: Database) -> SessionFeed {
        SessionFeed {
            readers: Connections::new(database, "loupe-control-plane"),
        }
    }

    /// Session `id` as stored now (`None`: no such session). Blocks: call it from a plain
    /// thread or `spawn_blocking`.
    pub fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        self.readers.with(|client| {
            client
                .query_opt(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"),
                    &[&id],
                )
                .map_err(store_error)
                .and_then(|row| row.as_ref().map(row_to_session).transpose())
        })
    }

    /// Follows session changes committed after the log held `after` events, handing each
    /// batch of changed rows to `changed`, until `stopping` says so (checked at least every
    /// [`SWEEP_INTERVAL`], and between connection attempts). Blocks: run it on a thread of its
    /// own. A database that cannot be reached is tried again every [`SWEEP_INTERVAL`]; what
    /// was committed meanwhile is read by the first sweep after reconnecting.
    pub fn follow(
        &self,
        mut after: u64,
        stopping: &dyn Fn() -> bool,
        changed: &mut dyn FnMut(Vec<SessionRow>),
    ) {
        let mut failing = false;
        while !stopping() {
            let failure = match self.listen() {
                Ok(mut client) => {
                    if failing {
                        tracing::info!("listening for other replicas' session changes again");
                        failing = false;
                    }
                    self.sweep_until_failure(&mut client, &mut after, stopping, changed)
                }
                Err(error) => Some(error),
            };
            let Some(error) = failure else {
                return;
            };
            if !failing {
                tracing::warn!(%error, "cannot follow other replicas' session changes; retrying every {} ms", SWEEP_INTERVAL.as_millis());
                failing = true;
            }
            std::thread::sleep(SWEEP_INTERVAL);
        }
    }

    /// A connection listening on [`CHANNEL`].
    fn listen(&self) -> Result<Client, StoreError> {
        let mut client = self.readers.database().connect_as(LISTENER_NAME)?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(store_error)?;
        Ok(client)
    }

    /// Sweeps, then waits for a notification or the next sweep, and again, until the
    /// connection fails (the error) or `stopping` (`None`).
    fn sweep_until_failure(
        &self,
        client: &mut Client,
        after: &mut u64,
        stopping: &dyn Fn() -> bool,
        changed: &mut dyn FnMut(Vec<SessionRow>),
    ) -> Option<StoreError> {
        loop {
            match changed_after(client, *after) {
                Ok(rows) => {
                    if let Some(last) = rows.last() {
                        *after = last.changed_at;
                        changed(rows.into_iter().map(|c| c.row).collect());
                    }
                }
                Err(error) => return Some(error),
            }
            if stopping() {
                return None;
            }
            if let Err(error) = wait_for_notification(client, SWEEP_INTERVAL) {
                return Some(error);
            }
        }
    }
}

/// Sessions stored by commits that left the log larger than `after`, in commit order.
fn changed_after(client: &mut Client, after: u64) -> Result<Vec<Changed>, StoreError> {
    client
        .query(
            &format!(
                "SELECT {SESSION_COLUMNS}, changed_at FROM sessions WHERE changed_at > $1
                 ORDER BY changed_at"
            ),
            &[&to_sql_int(after)?],
        )
        .map_err(store_error)?
        .iter()
        .map(|row| {
            Ok(Changed {
                row: row_to_session(row)?,
                changed_at: from_sql_int(row.get("changed_at"))?,
            })
        })
        .collect()
}

/// Returns when a notification arrives (the ones already waiting are taken with it: one
/// sweep reads what they all announce) or `timeout` passes; an error when the connection
/// is gone.
fn wait_for_notification(client: &mut Client, timeout: Duration) -> Result<(), StoreError> {
    let mut notifications = client.notifications();
    let woken = notifications
        .timeout_iter(timeout)
        .next()
        .map_err(store_error)?;
    if woken.is_some() {
        let mut waiting = notifications.iter();
        while waiting.next().map_err(store_error)?.is_some() {}
    }
    drop(notifications);
    if client.is_closed() {
        return Err(StoreError::Unavailable(
            "the listening connection closed".into(),
        ));
    }
    Ok(())
}
