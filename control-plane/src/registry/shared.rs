//! Leases kept in the PostgreSQL database the replicas share (table `agent_instances`, schema
//! migration 3 of [`crate::audit::postgres`]): one row per instance, whichever replica took
//! its registration or any renewal.
//!
//! - **Admission under a lock.** A registration is decided and stored in one transaction that
//!   first takes a transaction-scoped advisory lock on its identity, so the cap is counted
//!   over every replica's registrations and two replicas cannot both admit the last slot;
//!   renewals of one identity queue behind each other for a millisecond, others do not wait.
//! - **Durability.** Renewals are frequent (a third of a lease, per instance) and the row is
//!   soft state: a registration lost with a database crash is restored by the agent's next
//!   renewal. So its transaction commits with `synchronous_commit = off` (no WAL flush to
//!   wait for); the audit record of a first registration or a move is written by the log,
//!   durably, before the row.
//! - **Expiry.** A row whose lease ran out is invisible to every read at once (every query
//!   reads `lease_expires_at > now`). Each replica's sweep reads the rows that ran out since
//!   its previous sweep, to drop its connections to them, so rows are kept
//!   [`EXPIRED_KEPT_SECONDS`] past their lease before any replica deletes them.
//! - **The row** holds the announcement as checked, encoded as the `loupe.v1.RegisterRequest`
//!   the agent sent (the one format the points already have), beside the columns queries
//!   select on. A row that does not decode is reported corrupt, never skipped silently.

use std::sync::{Mutex, PoisonError};

use loupe_proto::v1 as pb;
use postgres::{GenericClient, Row};
use prost::Message;

use super::{Announcement, Instance, RegistrationError, Standing};
use crate::audit::postgres::{Connections, from_sql_int, store_error, to_sql_int};
use crate::audit::{Database, StoreError};

/// How long a row is kept after its lease ran out, so every replica's sweep sees it go.
pub const EXPIRED_KEPT_SECONDS: u64 = 600;

/// The advisory-lock class of registrations (the second key is the identity's hash): any
/// constant no one else uses.
const REGISTRATION_LOCK: i32 = 0x4c52_4547; // "LREG"

/// The application name of the registry's connections, as `pg_stat_activity` shows them.
pub const APPLICATION_NAME: &str = "loupe-control-plane-registry";

const COLUMNS: &str = "identity, announcement, registered_at, lease_expires_at";

/// The leases in the shared database, as one replica reads and writes them.
pub struct SharedLeases {
    connections: Connections,
    /// The `now` of this replica's previous sweep (`None` before the first).
    swept_until: Mutex<Option<u64>>,
}

impl SharedLeases {
    pub fn new(database: Database) -> SharedLeases {
        SharedLeases {
            connections: Connections::new(database, APPLICATION_NAME),
            swept_until: Mutex::new(None),
        }
    }

    /// What `identity` holds on every replica, and instance `instance` of `service` if it is
    /// live. Blocks.
    pub fn standing(
        &self,
        identity: &str,
        service: &str,
        instance: &str,
        now: u64,
    ) -> Result<Standing, StoreError> {
        self.connections
            .with(|client| standing(client, identity, service, instance, now))
    }

    /// Stores the instance `admit` makes of what `identity` holds now (instance `instance` of
    /// `service`), deciding and writing under the identity's lock; nothing if it refuses.
    /// Blocks.
    pub fn announce(
        &self,
        (identity, service, instance): (&str, &str, &str),
        now: u64,
        admit: impl FnOnce(&Standing) -> Result<Instance, RegistrationError>,
    ) -> Result<Instance, RegistrationError> {
        let decided = self.connections.with(|client| {
            let mut tx = client.transaction().map_err(store_error)?;
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(store_error)?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&REGISTRATION_LOCK, &identity],
            )
            .map_err(store_error)?;
            let standing = standing(&mut tx, identity, service, instance, now)?;
            let admitted = match admit(&standing) {
                Ok(admitted) => admitted,
                // Dropping the transaction rolls it back and releases the lock.
                Err(refused) => return Ok(Err(refused)),
            };
            put(&mut tx, &admitted)?;
            tx.commit().map_err(store_error)?;
            Ok(Ok(admitted))
        });
        decided?
    }

    /// Live instances of `service` (of all services: `None`), by service and instance id.
    /// Blocks.
    pub fn live(&self, service: Option<&str>, now: u64) -> Result<Vec<Instance>, StoreError> {
        let now = to_sql_int(now)?;
        self.connections.with(|client| {
            let rows = match service {
                Some(service) => client.query(
                    &format!(
                        "SELECT {COLUMNS} FROM agent_instances
                         WHERE service = $1 AND lease_expires_at > $2 ORDER BY instance"
                    ),
                    &[&service, &now],
                ),
                None => client.query(
                    &format!(
                        "SELECT {COLUMNS} FROM agent_instances
                         WHERE lease_expires_at > $1 ORDER BY service, instance"
                    ),
                    &[&now],
                ),
            }
            .map_err(store_error)?;
            rows.iter().map(row_to_instance).collect()
        })
    }

    /// The instances whose lease ran out since this replica's previous sweep (none at the
    /// first), and deletes the rows every replica has had time to see go. Blocks.
    pub fn expire(&self, now: u64) -> Result<Vec<Instance>, StoreError> {
        let since = *self
            .swept_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gone = self.connections.with(|client| {
            client
                .execute(
                    "DELETE FROM agent_instances WHERE lease_expires_at <= $1",
                    &[&to_sql_int(now.saturating_sub(EXPIRED_KEPT_SECONDS))?],
                )
                .map_err(store_error)?;
            let Some(since) = since else {
                return Ok(Vec::new());
            };
            client
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM agent_instances
                         WHERE lease_expires_at <= $1 AND lease_expires_at > $2
                         ORDER BY service, instance"
                    ),
                    &[&to_sql_int(now)?, &to_sql_int(since)?],
                )
                .map_err(store_error)?
                .iter()
                .map(row_to_instance)
                .collect()
        })?;
        *self
            .swept_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
        Ok(gone)
    }
}

/// What `identity` holds, and the live instance `instance` of `service`, as `client` reads
/// them.
fn standing(
    client: &mut impl GenericClient,
    identity: &str,
    service: &str,
    instance: &str,
    now: u64,
) -> Result<Standing, StoreError> {
    let now = to_sql_int(now)?;
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM agent_instances WHERE identity = $1 AND lease_expires_at > $2",
            &[&identity, &now],
        )
        .map_err(store_error)?
        .get(0);
    let current = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM agent_instances
                 WHERE service = $1 AND instance = $2 AND lease_expires_at > $3"
            ),
            &[&service, &instance, &now],
        )
        .map_err(store_error)?
        .as_ref()
        .map(row_to_instance)
        .transpose()?;
    Ok(Standing {
        held: usize::try_from(held).unwrap_or(usize::MAX),
        current,
    })
}

/// Writes `instance` over whatever its row held.
fn put(client: &mut impl GenericClient, instance: &Instance) -> Result<(), StoreError> {
    let announcement = &instance.announcement;
    client
        .execute(
            "INSERT INTO agent_instances
                 (service, instance, identity, announcement, registered_at, lease_expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (service, instance) DO UPDATE SET
                 identity = excluded.identity,
                 announcement = excluded.announcement,
                 registered_at = excluded.registered_at,
                 lease_expires_at = excluded.lease_expires_at",
            &[
                &announcement.service,
                &announcement.instance,
                &instance.identity,
                &encode(announcement),
                &to_sql_int(instance.registered_at)?,
                &to_sql_int(instance.lease_expires_at)?,
            ],
        )
        .map_err(store_error)
        .map(drop)
}

fn row_to_instance(row: &Row) -> Result<Instance, StoreError> {
    Ok(Instance {
        identity: row.get(0),
        announcement: decode(row.get(1))?,
        registered_at: from_sql_int(row.get(2))?,
        lease_expires_at: from_sql_int(row.get(3))?,
    })
}

/// `announcement` as the row keeps it.
pub fn encode(announcement: &Announcement) -> Vec<u8> {
    pb::RegisterRequest {
        service: announcement.service.clone(),
        instance: announcement.instance.clone(),
        address: announcement.address.to_string(),
        version: announcement.version.clone(),
        mode: announcement.mode,
        points: announcement.points.clone(),
    }
    .encode_to_vec()
}

/// The announcement a row keeps.
pub fn decode(bytes: &[u8]) -> Result<Announcement, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("an agent registration row: {what}"));
    let request =
        pb::RegisterRequest::decode(bytes).map_err(|e| corrupt(format!("does not decode: {e}")))?;
    let address = request
        .address
        .parse()
        .map_err(|_| corrupt(format!("address `{}` is not IP:port", request.address)))?;
    Ok(Announcement {
        service: request.service,
        instance: request.instance,
        address,
        version: request.version,
        mode: request.mode,
        points: request.points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_survives_its_row_and_a_mangled_row_is_corrupt() {
        let announcement = Announcement {
            service: "checkout".into(),
            instance: "host-1".into(),
            address: "[::1]:7443".parse().expect("addr"),
            version: "0.1.0".into(),
            mode: 2,
            points: vec![pb::PointInfo {
                name: "checkout.total".into(),
                ..pb::PointInfo::default()
            }],
        };
        assert_eq!(decode(&encode(&announcement)), Ok(announcement.clone()));
        // Equal announcements encode equally: a renewal is recognized by its bytes too.
        assert_eq!(encode(&announcement), encode(&announcement.clone()));
        assert!(matches!(decode(&[0xff, 0xff]), Err(StoreError::Corrupt(_))));
        let unaddressed = pb::RegisterRequest {
            address: "not an address".into(),
            ..pb::RegisterRequest::default()
        }
        .encode_to_vec();
        assert!(matches!(decode(&unaddressed), Err(StoreError::Corrupt(_))));
    }
}
