//! Leases kept in the control plane's memory: the registry of a single control plane (SQLite
//! backend), where no other process needs to see them (see the parent module for why they
//! are not persisted).

use std::collections::BTreeMap;

use super::{Instance, RegistrationError, Standing};

/// Instances by service and instance id, live or not yet swept.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    services: BTreeMap<String, BTreeMap<String, Instance>>,
}

impl MemoryLeases {
    /// What `identity` holds, and instance `instance` of `service` if it is live.
    pub fn standing(&self, identity: &str, service: &str, instance: &str, now: u64) -> Standing {
        let Some(instances) = self.services.get(service) else {
            return Standing::default();
        };
        let live = || live(instances, now);
        Standing {
            held: live().filter(|i| i.identity == identity).count(),
            current: live()
                .find(|i| i.announcement.instance == instance)
                .cloned(),
        }
    }

    /// Stores the instance `admit` makes of what `identity` holds now (instance `instance` of
    /// `service`), or nothing if it refuses.
    pub fn announce(
        &mut self,
        (identity, service, instance): (&str, &str, &str),
        now: u64,
        admit: impl FnOnce(&Standing) -> Result<Instance, RegistrationError>,
    ) -> Result<Instance, RegistrationError> {
        let admitted = admit(&self.standing(identity, service, instance, now))?;
        self.services
            .entry(admitted.announcement.service.clone())
            .or_default()
            .insert(admitted.announcement.instance.clone(), admitted.clone());
        Ok(admitted)
    }

    /// Forgets instances whose lease ran out; returns them.
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

    /// Live instances of `service` (of all services: `None`), by service and instance id.
    pub fn live(&self, service: Option<&str>, now: u64) -> Vec<Instance> {
        self.services
            .iter()
            .filter(|(name, _)| service.is_none_or(|wanted| wanted == name.as_str()))
            .flat_map(|(_, instances)| live(instances, now).cloned())
            .collect()
    }
}

fn live(instances: &BTreeMap<String, Instance>, now: u64) -> impl Iterator<Item = &Instance> {
    instances
        .values()
        .filter(move |instance| instance.lease_expires_at > now)
}
