//! The agent registry: which instances of which services are alive, where to reach them, and
//! what points they have.
//!
//! An agent registers on start and renews a lease; an instance whose lease ran out disappears
//! from every listing without anyone having to deregister it (a crashed process cannot). An
//! agent may only register for the service its certificate names: the identity
//! `spiffe://<trust-domain>/agent/<service>` registers `<service>` and nothing else, so a
//! compromised agent cannot attract captures meant for another service.
//!
//! What one identity may put here is bounded (see [`crate::bounds`]): every string and list of
//! a registration, point names by the rule `snapshot!` checks, and the number of live
//! instances per agent identity — so one agent cannot make every listing too big to answer.
//! Renewing an instance that is already registered never counts against the cap.
//!
//! **Where the leases live.** The rules above are decided here, once ([`Rules`]), over what a
//! store says the identity holds ([`Standing`]); the store depends on the audit backend, behind
//! one interface ([`Registry`]) so the server never asks which:
//! - *PostgreSQL* (several replicas behind one address, usually a load balancer): every
//!   registration and renewal is a row of the shared database ([`shared`]), so every replica
//!   lists and dials every live instance whichever replica the agent reached, a renewal
//!   through another replica renews the same row, and the per-identity cap counts the
//!   identity's instances on all replicas (decided under a per-identity lock in the database,
//!   so two replicas cannot both admit the last slot). Reads go to the database each time —
//!   no cached view: a capture reads the live instances of its one service (an indexed
//!   query, about a millisecond) at the moment it arms them, so it never dials an instance
//!   whose lease ran out nor misses one registered a moment ago through another replica, and
//!   listings read the table. A cache refreshed by notification (as sessions are, see
//!   `crate::audit::notify`) would save that millisecond at the price of a staleness window
//!   and a second path to keep right; registrations change far less often than they are read,
//!   but they are read only by calls an engineer makes, where a millisecond does not matter.
//!   The database unreachable: a registration fails `UNAVAILABLE` (the agent retries), and a
//!   listing or capture fails closed the same way, rather than acting on what this replica
//!   last knew.
//! - *SQLite* (one machine, one process): the leases stay in memory ([`memory`]). A lease is
//!   soft state its agent restores within a third of a lease after a restart (it renews that
//!   often), so persisting it buys nothing, and writing every renewal into the one SQLite file
//!   would queue behind the audit log's synchronous commits.
//!
//! Leases are absolute Unix times set by the replica that took the renewal, and read against
//! the reading replica's clock: replicas are assumed to keep time as closely as they must for
//! session expiry and token lifetimes already (NTP, seconds).

pub mod memory;
pub mod shared;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use loupe_proto::v1::PointInfo;
use loupe_trust::identity::agent_identity;

use crate::audit::{Database, StoreError};
use crate::bounds::{self, Violation};
use crate::policy::PointName;

/// What an agent says about itself when it registers or renews.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    pub service: String,
    pub instance: String,
    /// Where the agent's gRPC endpoint listens.
    pub address: SocketAddr,
    pub version: String,
    /// In-process library or sidecar (`loupe.v1.AgentMode`).
    pub mode: i32,
    /// The agent's points, as its `Describe` lists them.
    pub points: Vec<PointInfo>,
}

/// A live instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub announcement: Announcement,
    /// The certificate identity it registered with.
    pub identity: String,
    pub registered_at: u64,
    pub lease_expires_at: u64,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    #[error(
        "the certificate identity `{identity}` may register service `{allowed}`, not `{claimed}`"
    )]
    WrongService {
        identity: String,
        claimed: String,
        allowed: String,
    },
    #[error(
        "`{identity}` is not an agent identity (expected spiffe://{trust_domain}/agent/<service>)"
    )]
    NotAnAgent {
        identity: String,
        trust_domain: String,
    },
    #[error("invalid {what} `{value}`: {rule}")]
    Invalid {
        what: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("{0}")]
    Oversize(#[from] Violation),
    #[error(
        "`{identity}` already holds {held} live instances, the most one agent identity may (limits.instances_per_agent_identity); let one's lease run out first"
    )]
    TooManyInstances { identity: String, held: usize },
    /// Not a refusal: the store of the leases could not be read or written, so nothing was
    /// decided.
    #[error("the agent registry's database cannot be used: {0}")]
    Store(#[from] StoreError),
}

/// What the store holds that a registration is decided on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standing {
    /// Live instances the identity holds (on every replica, with a shared store).
    pub held: usize,
    /// The instance as registered now, if its lease is live.
    pub current: Option<Instance>,
}

/// How an admitted registration relates to what was registered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// No live instance by that name: a new one, counted against the cap.
    New,
    /// The live instance, announced differently (another address, version, points or
    /// identity): captures will go elsewhere.
    Moved,
    /// The live instance as it was: only its lease is extended.
    Renewal,
}

/// The registry's rules, the same whichever store holds the leases.
#[derive(Debug, Clone)]
pub struct Rules {
    pub trust_domain: String,
    pub lease_seconds: u64,
    pub max_instances_per_identity: usize,
}

impl Rules {
    pub fn new(
        trust_domain: impl Into<String>,
        lease_seconds: u64,
        max_instances_per_identity: usize,
    ) -> Rules {
        Rules {
            trust_domain: trust_domain.into(),
            lease_seconds,
            max_instances_per_identity,
        }
    }

    /// Whether `identity` may announce `announcement` at all, whatever is registered: names,
    /// bounds, and the service its certificate names.
    pub fn check(
        &self,
        identity: &str,
        announcement: &Announcement,
    ) -> Result<(), RegistrationError> {
        check_sizes(announcement)?;
        check_service(&announcement.service)?;
        check_instance(&announcement.instance)?;
        for point in &announcement.points {
            PointName::parse(&point.name).map_err(|_| RegistrationError::Invalid {
                what: "point",
                value: point.name.chars().take(64).collect(),
                rule: "lowercase dotted segments of [a-z0-9_], as snapshot! requires",
            })?;
        }
        let prefix = agent_identity(&self.trust_domain, "");
        let Some(allowed) = identity.strip_prefix(&prefix) else {
            return Err(RegistrationError::NotAnAgent {
                identity: identity.to_owned(),
                trust_domain: self.trust_domain.clone(),
            });
        };
        if allowed != announcement.service {
            return Err(RegistrationError::WrongService {
                identity: identity.to_owned(),
                claimed: announcement.service.clone(),
                allowed: allowed.to_owned(),
            });
        }
        Ok(())
    }

    /// The decision on a registration `check` passed, given what the store holds: refused
    /// past the per-identity cap (a renewal never counts), else how it relates to what was
    /// registered.
    pub fn decide(
        &self,
        identity: &str,
        announcement: &Announcement,
        standing: &Standing,
    ) -> Result<Registration, RegistrationError> {
        let Some(current) = &standing.current else {
            if standing.held >= self.max_instances_per_identity {
                return Err(RegistrationError::TooManyInstances {
                    identity: identity.to_owned(),
                    held: standing.held,
                });
            }
            return Ok(Registration::New);
        };
        if current.identity == identity && current.announcement == *announcement {
            Ok(Registration::Renewal)
        } else {
            Ok(Registration::Moved)
        }
    }

    /// The instance stored for an admitted registration at `now`: its lease starts over, and
    /// a live instance keeps the time it first registered.
    pub fn instance(
        &self,
        identity: &str,
        announcement: Announcement,
        standing: &Standing,
        now: u64,
    ) -> Instance {
        Instance {
            announcement,
            identity: identity.to_owned(),
            registered_at: standing
                .current
                .as_ref()
                .map_or(now, |current| current.registered_at),
            lease_expires_at: now.saturating_add(self.lease_seconds),
        }
    }
}

/// Live instances by service and instance id, wherever their leases are kept.
pub struct Registry {
    rules: Rules,
    leases: Leases,
}

enum Leases {
    Memory(Mutex<memory::MemoryLeases>),
    Shared(Arc<shared::SharedLeases>),
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = match &self.leases {
            Leases::Memory(_) => "memory",
            Leases::Shared(_) => "database",
        };
        f.debug_struct("Registry")
            .field("rules", &self.rules)
            .field("leases", &store)
            .finish()
    }
}

impl Registry {
    /// A registry whose leases live in this process (one control plane).
    pub fn in_memory(rules: Rules) -> Registry {
        Registry {
            rules,
            leases: Leases::Memory(Mutex::new(memory::MemoryLeases::default())),
        }
    }

    /// A registry whose leases live in `database`, shared by every replica on it (its schema
    /// brought up to date by the audit store first).
    pub fn shared(rules: Rules, database: Database) -> Registry {
        Registry {
            rules,
            leases: Leases::Shared(Arc::new(shared::SharedLeases::new(database))),
        }
    }

    /// Whether `identity` may register `announcement`, and what it would change, without
    /// registering it (so a caller can record the decision first).
    pub async fn check(
        &self,
        identity: &str,
        announcement: &Announcement,
        now: u64,
    ) -> Result<Registration, RegistrationError> {
        self.rules.check(identity, announcement)?;
        let standing = match &self.leases {
            Leases::Memory(leases) => {
                lock(leases).standing(identity, &announcement.service, &announcement.instance, now)
            }
            Leases::Shared(leases) => {
                let (leases, identity) = (Arc::clone(leases), identity.to_owned());
                let (service, instance) =
                    (announcement.service.clone(), announcement.instance.clone());
                blocking(move || leases.standing(&identity, &service, &instance, now)).await??
            }
        };
        self.rules.decide(identity, announcement, &standing)
    }

    /// Registers or renews an instance for the agent whose verified certificate identity is
    /// `identity`, deciding again on what is stored now. Returns when the lease expires.
    pub async fn announce(
        &self,
        identity: &str,
        announcement: Announcement,
        now: u64,
    ) -> Result<u64, RegistrationError> {
        self.rules.check(identity, &announcement)?;
        let key = (
            identity.to_owned(),
            announcement.service.clone(),
            announcement.instance.clone(),
        );
        let rules = self.rules.clone();
        let admit = move |identity: &str, standing: &Standing| {
            rules.decide(identity, &announcement, standing)?;
            Ok(rules.instance(identity, announcement, standing, now))
        };
        let stored = match &self.leases {
            Leases::Memory(leases) => {
                let (identity, service, instance) = &key;
                lock(leases).announce((identity, service, instance), now, |standing| {
                    admit(identity, standing)
                })?
            }
            Leases::Shared(leases) => {
                let leases = Arc::clone(leases);
                blocking(move || {
                    let (identity, service, instance) = &key;
                    leases.announce((identity, service, instance), now, |standing| {
                        admit(identity, standing)
                    })
                })
                .await??
            }
        };
        Ok(stored.lease_expires_at)
    }

    /// Instances whose lease ran out since the last call, for forgetting their connections.
    /// In memory they are forgotten here; in the shared database every replica sees each go
    /// (see [`shared`]).
    pub async fn expire(&self, now: u64) -> Result<Vec<Instance>, StoreError> {
        match &self.leases {
            Leases::Memory(leases) => Ok(lock(leases).expire(now)),
            Leases::Shared(leases) => {
                let leases = Arc::clone(leases);
                blocking(move || leases.expire(now)).await?
            }
        }
    }

    /// Every live instance, by service and instance id.
    pub async fn live(&self, now: u64) -> Result<Vec<Instance>, StoreError> {
        match &self.leases {
            Leases::Memory(leases) => Ok(lock(leases).live(None, now)),
            Leases::Shared(leases) => {
                let leases = Arc::clone(leases);
                blocking(move || leases.live(None, now)).await?
            }
        }
    }

    /// Live instances of `service`, by instance id.
    pub async fn instances(&self, service: &str, now: u64) -> Result<Vec<Instance>, StoreError> {
        match &self.leases {
            Leases::Memory(leases) => Ok(lock(leases).live(Some(service), now)),
            Leases::Shared(leases) => {
                let (leases, service) = (Arc::clone(leases), service.to_owned());
                blocking(move || leases.live(Some(&service), now)).await?
            }
        }
    }

    /// The points of `service`, merged over its live instances (an instance running an older
    /// build may lack a point: each point lists how many instances have it).
    pub async fn points(
        &self,
        service: &str,
        now: u64,
    ) -> Result<Vec<(PointInfo, usize)>, StoreError> {
        Ok(merged_points(&self.instances(service, now).await?))
    }
}

fn lock(leases: &Mutex<memory::MemoryLeases>) -> std::sync::MutexGuard<'_, memory::MemoryLeases> {
    leases.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs blocking database work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Other(format!("the registry's database task failed: {e}")))
}

/// The points of `instances`, each with how many of them have it, by name.
pub fn merged_points(instances: &[Instance]) -> Vec<(PointInfo, usize)> {
    let mut points: std::collections::BTreeMap<&str, (PointInfo, usize)> =
        std::collections::BTreeMap::new();
    for instance in instances {
        for point in &instance.announcement.points {
            points
                .entry(point.name.as_str())
                .or_insert_with(|| (point.clone(), 0))
                .1 += 1;
        }
    }
    points.into_values().collect()
}

/// Every string and list of `announcement` within its bound.
pub fn check_sizes(announcement: &Announcement) -> Result<(), Violation> {
    bounds::SERVICE.check(&announcement.service)?;
    bounds::INSTANCE.check(&announcement.instance)?;
    bounds::VERSION.check(&announcement.version)?;
    check_points(&announcement.points)
}

/// The points of a registration within their bounds.
pub fn check_points(points: &[PointInfo]) -> Result<(), Violation> {
    bounds::POINTS_PER_INSTANCE.check(points.len())?;
    for (i, point) in points.iter().enumerate() {
        bounds::POINT.check_at(format!("points[{i}].name"), &point.name)?;
        bounds::FIELDS_PER_POINT.check_at(format!("points[{i}].fields"), point.fields.len())?;
        for (j, field) in point.fields.iter().enumerate() {
            bounds::FIELD_NAME.check_at(format!("points[{i}].fields[{j}].name"), &field.name)?;
            bounds::FIELD_TYPE.check_at(format!("points[{i}].fields[{j}].type"), &field.r#type)?;
        }
        bounds::LOCATIONS_PER_POINT
            .check_at(format!("points[{i}].locations"), point.locations.len())?;
        for (j, location) in point.locations.iter().enumerate() {
            bounds::SOURCE_FILE
                .check_at(format!("points[{i}].locations[{j}].file"), &location.file)?;
            bounds::MODULE_PATH.check_at(
                format!("points[{i}].locations[{j}].module_path"),
                &location.module_path,
            )?;
        }
    }
    Ok(())
}

fn check_service(value: &str) -> Result<(), RegistrationError> {
    loupe_proto::names::check_service_name(value).map_err(|_| RegistrationError::Invalid {
        what: "service",
        value: value.chars().take(64).collect(),
        rule: loupe_proto::names::SERVICE_NAME_RULE,
    })
}

fn check_instance(value: &str) -> Result<(), RegistrationError> {
    let valid = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if valid {
        Ok(())
    } else {
        Err(RegistrationError::Invalid {
            what: "instance",
            value: value.chars().take(64).collect(),
            rule: "letters, digits and - _ . : only, at most 128 bytes",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn announcement(service: &str, instance: &str, points: &[&str]) -> Announcement {
        Announcement {
            service: service.into(),
            instance: instance.into(),
            address: "127.0.0.1:7443".parse().expect("addr"),
            version: "0.1.0".into(),
            mode: 1,
            points: points
                .iter()
                .map(|name| PointInfo {
                    name: (*name).into(),
                    ..PointInfo::default()
                })
                .collect(),
        }
    }

    fn checkout_identity() -> String {
        agent_identity("loupe.test", "checkout")
    }

    fn registry() -> Registry {
        Registry::in_memory(Rules::new("loupe.test", 30, 4))
    }

    async fn names(registry: &Registry, service: &str, now: u64) -> Vec<String> {
        registry
            .instances(service, now)
            .await
            .expect("in memory")
            .into_iter()
            .map(|i| i.announcement.instance)
            .collect()
    }

    #[tokio::test]
    async fn an_agent_registers_its_own_service_and_its_lease_runs_out() {
        let registry = registry();
        let lease = registry
            .announce(
                &checkout_identity(),
                announcement("checkout", "host-1", &["checkout.total"]),
                NOW,
            )
            .await
            .expect("registers");
        assert_eq!(lease, NOW + 30);
        assert_eq!(registry.live(NOW).await.expect("in memory").len(), 1);
        assert_eq!(names(&registry, "checkout", NOW + 29).await, ["host-1"]);
        assert!(names(&registry, "checkout", NOW + 30).await.is_empty());
        let expired = registry.expire(NOW + 30).await.expect("in memory");
        assert_eq!(expired.len(), 1);
        assert!(registry.live(NOW + 30).await.expect("in memory").is_empty());
    }

    #[tokio::test]
    async fn renewing_keeps_the_registration_time_and_extends_the_lease() {
        let registry = registry();
        let id = checkout_identity();
        let first = announcement("checkout", "host-1", &[]);
        assert_eq!(
            registry.check(&id, &first, NOW).await,
            Ok(Registration::New)
        );
        registry
            .announce(&id, first.clone(), NOW)
            .await
            .expect("registers");
        assert_eq!(
            registry.check(&id, &first, NOW + 20).await,
            Ok(Registration::Renewal)
        );
        let lease = registry
            .announce(&id, first.clone(), NOW + 20)
            .await
            .expect("renews");
        assert_eq!(lease, NOW + 50);
        let instances = registry
            .instances("checkout", NOW + 40)
            .await
            .expect("live");
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].registered_at, NOW);
        let moved = Announcement {
            version: "0.2.0".into(),
            ..first
        };
        assert_eq!(
            registry.check(&id, &moved, NOW + 40).await,
            Ok(Registration::Moved)
        );
    }

    #[tokio::test]
    async fn a_rogue_agent_cannot_register_another_service() {
        let registry = registry();
        let err = registry
            .announce(
                &checkout_identity(),
                announcement("payments", "host-1", &["payments.charge"]),
                NOW,
            )
            .await
            .expect_err("wrong service");
        assert!(matches!(err, RegistrationError::WrongService { .. }));
        assert!(err.to_string().contains("may register service `checkout`"));
        for identity in [
            "spiffe://loupe.test/user/alice",
            "spiffe://other.domain/agent/payments",
            "spiffe://loupe.test/agent/",
            "payments",
        ] {
            assert!(
                registry
                    .announce(identity, announcement("payments", "h", &[]), NOW)
                    .await
                    .is_err(),
                "{identity}"
            );
        }
        assert!(registry.live(NOW).await.expect("in memory").is_empty());
    }

    #[tokio::test]
    async fn hostile_names_are_refused() {
        let registry = registry();
        let id = checkout_identity();
        for (service, instance) in [
            ("Checkout", "h"),
            ("checkout", "h\nfake"),
            ("checkout", ""),
            ("checkout", "a b"),
        ] {
            assert!(
                registry
                    .announce(&id, announcement(service, instance, &[]), NOW)
                    .await
                    .is_err(),
                "{service:?} {instance:?}"
            );
        }
    }

    #[tokio::test]
    async fn one_identity_holds_a_bounded_number_of_instances_and_renewals_never_count() {
        let registry = registry();
        let id = checkout_identity();
        for i in 0..4 {
            registry
                .announce(&id, announcement("checkout", &format!("h-{i}"), &[]), NOW)
                .await
                .expect("within the cap");
        }
        let over = announcement("checkout", "h-4", &[]);
        for err in [
            registry
                .check(&id, &over, NOW)
                .await
                .expect_err("over the cap"),
            registry
                .announce(&id, over.clone(), NOW)
                .await
                .expect_err("over the cap"),
        ] {
            assert!(matches!(
                err,
                RegistrationError::TooManyInstances { held: 4, .. }
            ));
            assert!(err.to_string().contains("instances_per_agent_identity"));
        }
        registry
            .announce(&id, announcement("checkout", "h-0", &[]), NOW + 10)
            .await
            .expect("a renewal is no new instance");
        // An instance whose lease ran out holds no slot, swept or not.
        registry
            .announce(&id, over, NOW + 31)
            .await
            .expect("room again once leases ran out");
    }

    #[test]
    fn the_cap_is_decided_on_what_the_store_says_the_identity_holds() {
        let rules = Rules::new("loupe.test", 30, 2);
        let id = checkout_identity();
        let new = announcement("checkout", "h-9", &[]);
        let full = Standing {
            held: 2,
            current: None,
        };
        assert!(matches!(
            rules.decide(&id, &new, &full),
            Err(RegistrationError::TooManyInstances { held: 2, .. })
        ));
        let current = rules.instance(&id, new.clone(), &Standing::default(), NOW);
        let renewing = Standing {
            held: 2,
            current: Some(current.clone()),
        };
        assert_eq!(
            rules.decide(&id, &new, &renewing),
            Ok(Registration::Renewal)
        );
        let stored = rules.instance(&id, new, &renewing, NOW + 10);
        assert_eq!(stored.registered_at, NOW);
        assert_eq!(stored.lease_expires_at, NOW + 40);
    }

    #[tokio::test]
    async fn registered_points_follow_the_point_rules_and_bounds() {
        let registry = registry();
        let id = checkout_identity();
        for bad in ["Checkout.Total", "checkout..total", "checkout.total\n", ""] {
            let err = registry
                .announce(&id, announcement("checkout", "h", &[bad]), NOW)
                .await
                .expect_err(bad);
            assert!(
                matches!(err, RegistrationError::Invalid { what: "point", .. }),
                "{bad:?}"
            );
        }
        let names: Vec<String> = (0..=crate::bounds::POINTS_PER_INSTANCE.max)
            .map(|i| format!("checkout.p{i}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let err = registry
            .announce(&id, announcement("checkout", "h", &names), NOW)
            .await
            .expect_err("too many points");
        assert!(matches!(err, RegistrationError::Oversize(_)));
        assert!(err.to_string().contains("at most 1024"), "{err}");
    }

    #[tokio::test]
    async fn points_merge_over_instances() {
        let registry = registry();
        let id = checkout_identity();
        registry
            .announce(
                &id,
                announcement("checkout", "host-1", &["checkout.total", "checkout.new"]),
                NOW,
            )
            .await
            .expect("registers");
        registry
            .announce(
                &id,
                announcement("checkout", "host-2", &["checkout.total"]),
                NOW,
            )
            .await
            .expect("registers");
        let points: Vec<(String, usize)> = registry
            .points("checkout", NOW)
            .await
            .expect("in memory")
            .into_iter()
            .map(|(point, count)| (point.name, count))
            .collect();
        assert_eq!(
            points,
            [("checkout.new".into(), 1), ("checkout.total".into(), 2)]
        );
    }
}
