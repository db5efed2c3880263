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

use std::collections::BTreeMap;
use std::net::SocketAddr;

use loupe_proto::v1::PointInfo;
use loupe_trust::identity::agent_identity;

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
}

/// Live instances by service and instance id.
#[derive(Debug)]
pub struct Registry {
    trust_domain: String,
    lease_seconds: u64,
    max_instances_per_identity: usize,
    services: BTreeMap<String, BTreeMap<String, Instance>>,
}

impl Registry {
    pub fn new(
        trust_domain: impl Into<String>,
        lease_seconds: u64,
        max_instances_per_identity: usize,
    ) -> Registry {
        Registry {
            trust_domain: trust_domain.into(),
            lease_seconds,
            max_instances_per_identity,
            services: BTreeMap::new(),
        }
    }

    /// Whether `identity` may register `announcement`, without registering it (so a caller can
    /// record the decision first).
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
        // Instances not yet swept count: the sweep runs every second.
        let instances = self.services.get(&announcement.service);
        let renewal = instances.is_some_and(|i| i.contains_key(&announcement.instance));
        let held = instances.map_or(0, |instances| {
            instances
                .values()
                .filter(|i| i.identity == identity)
                .count()
        });
        if !renewal && held >= self.max_instances_per_identity {
            return Err(RegistrationError::TooManyInstances {
                identity: identity.to_owned(),
                held,
            });
        }
        Ok(())
    }

    /// Registers or renews an instance for the agent whose verified certificate identity is
    /// `identity`. Returns when the lease expires.
    pub fn announce(
        &mut self,
        identity: &str,
        announcement: Announcement,
        now: u64,
    ) -> Result<u64, RegistrationError> {
        self.check(identity, &announcement)?;
        let lease_expires_at = now.saturating_add(self.lease_seconds);
        let instances = self
            .services
            .entry(announcement.service.clone())
            .or_default();
        let registered_at = instances
            .get(&announcement.instance)
            .map_or(now, |known| known.registered_at);
        instances.insert(
            announcement.instance.clone(),
            Instance {
                announcement,
                identity: identity.to_owned(),
                registered_at,
                lease_expires_at,
            },
        );
        Ok(lease_expires_at)
    }

    /// Forgets instances whose lease ran out; returns them (for the audit log).
    pub fn expire(&mut self, now: u64) -> Vec<Instance> {
        let mut expired = Vec::new();
        for instances in self.services.values_mut() {
            let gone: Vec<String> = instances
                .iter()
                .filter(|(_, instance)| instance.lease_expires_at <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(instance) = instances.remove(&id) {
                    expired.push(instance);
                }
            }
        }
        self.services.retain(|_, instances| !instances.is_empty());
        expired
    }

    /// Services with at least one live instance, by name.
    pub fn services(&self, now: u64) -> Vec<(&str, usize)> {
        self.services
            .iter()
            .map(|(name, instances)| (name.as_str(), self.live(instances, now).count()))
            .filter(|(_, live)| *live > 0)
            .collect()
    }

    /// Live instances of `service`.
    pub fn instances(&self, service: &str, now: u64) -> Vec<&Instance> {
        self.services
            .get(service)
            .map(|instances| self.live(instances, now).collect())
            .unwrap_or_default()
    }

    /// The points of `service`, merged over its live instances (an instance running an older
    /// build may lack a point: each point lists how many instances have it).
    pub fn points(&self, service: &str, now: u64) -> Vec<(PointInfo, usize)> {
        let mut points: BTreeMap<&str, (PointInfo, usize)> = BTreeMap::new();
        for instance in self.instances(service, now) {
            for point in &instance.announcement.points {
                points
                    .entry(point.name.as_str())
                    .or_insert_with(|| (point.clone(), 0))
                    .1 += 1;
            }
        }
        points.into_values().collect()
    }

    fn live<'a>(
        &self,
        instances: &'a BTreeMap<String, Instance>,
        now: u64,
    ) -> impl Iterator<Item = &'a Instance> {
        instances
            .values()
            .filter(move |instance| instance.lease_expires_at > now)
    }
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

    #[test]
    fn an_agent_registers_its_own_service_and_its_lease_runs_out() {
        let mut registry = Registry::new("loupe.test", 30, 4);
        let lease = registry
            .announce(
                &checkout_identity(),
                announcement("checkout", "host-1", &["checkout.total"]),
                NOW,
            )
            .expect("registers");
        assert_eq!(lease, NOW + 30);
        assert_eq!(registry.services(NOW), [("checkout", 1)]);
        assert_eq!(registry.instances("checkout", NOW + 29).len(), 1);
        assert!(registry.instances("checkout", NOW + 30).is_empty());
        let expired = registry.expire(NOW + 30);
        assert_eq!(expired.len(), 1);
        assert!(registry.services(NOW + 30).is_empty());
    }

    #[test]
    fn renewing_keeps_the_registration_time_and_extends_the_lease() {
        let mut registry = Registry::new("loupe.test", 30, 4);
        let id = checkout_identity();
        registry
            .announce(&id, announcement("checkout", "host-1", &[]), NOW)
            .expect("registers");
        let lease = registry
            .announce(&id, announcement("checkout", "host-1", &[]), NOW + 20)
            .expect("renews");
        assert_eq!(lease, NOW + 50);
        let instance = registry.instances("checkout", NOW + 40)[0];
        assert_eq!(instance.registered_at, NOW);
    }

    #[test]
    fn a_rogue_agent_cannot_register_another_service() {
        let mut registry = Registry::new("loupe.test", 30, 4);
        let err = registry
            .announce(
                &checkout_identity(),
                announcement("payments", "host-1", &["payments.charge"]),
                NOW,
            )
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
                    .is_err(),
                "{identity}"
            );
        }
        assert!(registry.services(NOW).is_empty());
    }

    #[test]
    fn hostile_names_are_refused() {
        let mut registry = Registry::new("loupe.test", 30, 4);
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
                    .is_err(),
                "{service:?} {instance:?}"
            );
        }
    }

    #[test]
    fn one_identity_holds_a_bounded_number_of_instances_and_renewals_never_count() {
        let mut registry = Registry::new("loupe.test", 30, 4);
        let id = checkout_identity();
        for i in 0..4 {
            registry
                .announce(&id, announcement("checkout", &format!("h-{i}"), &[]), NOW)
                .expect("within the cap");
        }
        let err = registry
            .announce(&id, announcement("checkout", "h-4", &[]), NOW)
            .expect_err("over the cap");
        assert!(matches!(
            err,
            RegistrationError::TooManyInstances { held: 4, .. }
        ));
        assert!(err.to_string().contains("instances_per_agent_identity"));
        registry
            .announce(&id, announcement("checkout", "h-0", &[]), NOW + 10)
            .expect("a renewal is no new instance");
        registry.expire(NOW + 31);
        registry
            .announce(&id, announcement("checkout", "h-4", &[]), NOW + 31)
            .expect("room again once leases ran out");
    }

    #[test]
    fn registered_points_follow_the_point_rules_and_bounds() {
        let mut registry = Registry::new("loupe.test", 30, 4);
        let id = checkout_identity();
        for bad in ["Checkout.Total", "checkout..total", "checkout.total\n", ""] {
            let err = registry
                .announce(&id, announcement("checkout", "h", &[bad]), NOW)
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
            .expect_err("too many points");
        assert!(matches!(err, RegistrationError::Oversize(_)));
        assert!(err.to_string().contains("at most 1024"), "{err}");
    }

    #[test]
    fn points_merge_over_instances() {
        let mut registry = Registry::new("loupe.test", 30, 4);
        let id = checkout_identity();
        registry
            .announce(
                &id,
                announcement("checkout", "host-1", &["checkout.total", "checkout.new"]),
                NOW,
            )
            .expect("registers");
        registry
            .announce(
                &id,
                announcement("checkout", "host-2", &["checkout.total"]),
                NOW,
            )
            .expect("registers");
        let points: Vec<(String, usize)> = registry
            .points("checkout", NOW)
            .into_iter()
            .map(|(point, count)| (point.name, count))
            .collect();
        assert_eq!(
            points,
            [("checkout.new".into(), 1), ("checkout.total".into(), 2)]
        );
    }
}
