//! The agent registry: which instances of which services are alive, where to reach them, and
//! what points they have.
//!
//! An agent registers on start and renews a lease; an instance whose lease ran out disappears
//! from every listing without anyone having to deregister it (a crashed process cannot). An
//! agent may only register for the service its certificate names: the identity
//! `spiffe://<trust-domain>/agent/<service>` registers `<service>` and nothing else, so a
//! compromised agent cannot attract captures meant for another service.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use loupe_proto::identity::agent_identity;
use loupe_proto::v1::PointInfo;

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
}

/// Live instances by service and instance id.
#[derive(Debug)]
pub struct Registry {
    trust_domain: String,
    lease_seconds: u64,
    services: BTreeMap<String, BTreeMap<String, Instance>>,
}

impl Registry {
    pub fn new(trust_domain: impl Into<String>, lease_seconds: u64) -> Registry {
        Registry {
            trust_domain: trust_domain.into(),
            lease_seconds,
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
        check_name("service", &announcement.service)?;
        check_instance(&announcement.instance)?;
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

fn check_name(what: &'static str, value: &str) -> Result<(), RegistrationError> {
    let valid = !value.is_empty()
        && value.len() <= 128
        && value.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(RegistrationError::Invalid {
            what,
            value: value.chars().take(64).collect(),
            rule: "lowercase dotted segments of [a-z0-9_-], at most 128 bytes",
        })
    }
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
        let mut registry = Registry::new("loupe.test", 30);
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
        let mut registry = Registry::new("loupe.test", 30);
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
        let mut registry = Registry::new("loupe.test", 30);
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
        let mut registry = Registry::new("loupe.test", 30);
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
    fn points_merge_over_instances() {
        let mut registry = Registry::new("loupe.test", 30);
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
