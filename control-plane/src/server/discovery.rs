//! Agents registering, and engineers finding out what they could inspect.
//!
//! Decisions:
//! - An instance's first registration, every one that moves it (another address, version or
//!   points: captures would go elsewhere), and every refused one is audited
//!   (`agent.registered`); plain lease renewals are not — they would drown the log and decide
//!   nothing. Any holder of the agent identity of service S may register instances of S: the
//!   identity is the unit of trust, and the log shows who moved what.
//!   A registration's record names its points while they are few (64) and always keeps their
//!   count and digest, so what one agent can add to the log per registration is bounded.
//! - Listings page (see [`super::paging`]); each page's record names only what it showed.
//! - `ListServices` shows only services the caller may `ListPoints` on; `ListPoints` is refused
//!   outright otherwise. Both are audited (`points.listed`).
//! - Each listed point says whether a session on it would wait for approval, and from whom:
//!   the policy is asked as if the caller opened a one-second session with a reason.

use std::sync::Arc;
use std::time::Duration;

use loupe_proto::audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Outcome, Resource,
    ResourceKind,
};
use loupe_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use super::answers::{audit_decision, denied_status};
use super::caller::Caller;
use super::{ControlPlane, Every, now, paging, random_id};
use crate::bounds;
use crate::policy::{AuthzRequest, PointName, ServiceName, SessionFacts};
use crate::registry::{Announcement, RegistrationError};

/// How often an agent is asked to renew, as a share of the lease: three tries per lease.
fn renew_after(lease_seconds: u64) -> u32 {
    u32::try_from((lease_seconds / 3).max(1)).unwrap_or(u32::MAX)
}

fn agent_event(
    caller: &Caller,
    service: &str,
    instance: &str,
    decision: AuditDecision,
) -> NewEvent {
    NewEvent::new(
        caller.actor.clone(),
        AuditAction::AgentRegistered,
        Resource {
            kind: ResourceKind::Agent,
            id: format!("{service}/{instance}"),
        },
        decision,
        random_id("req"),
    )
    .service(service)
    .detail("instance", Detail::Text(instance.to_owned()))
}

pub(crate) async fn register(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::RegisterRequest,
) -> Result<pb::RegisterResponse, Status> {
    let now = now();
    let Ok(address) = request.address.parse() else {
        let reason = format!(
            "address `{}` is not an IP:port the control plane can dial",
            request.address
        );
        let event = agent_event(
            caller,
            &request.service,
            &request.instance,
            AuditDecision {
                outcome: Outcome::Deny,
                policies: Vec::new(),
                reason: reason.clone(),
            },
        )
        .client_text("address", request.address.as_bytes());
        cp.record(event).await?;
        return Err(Status::invalid_argument(reason));
    };
    let announcement = Announcement {
        service: request.service.clone(),
        instance: request.instance.clone(),
        address,
        version: request.version.clone(),
        mode: request.mode,
        points: request.points.clone(),
    };
    // What the registry holds for this instance now; a renewal that changes nothing is not
    // worth a record, but one that moves the instance (another address, version or points)
    // redirects captures and is recorded like a first registration.
    let unchanged = cp
        .registry()
        .instances(&request.service, now)
        .iter()
        .any(|i| i.identity == caller.identity.id && i.announcement == announcement);
    // Decide without registering yet: the audit record comes first.
    let check = cp.registry().check(&caller.identity.id, &announcement);
    if let Err(error) = check {
        let event = agent_event(
            caller,
            &request.service,
            &request.instance,
            AuditDecision {
                outcome: Outcome::Deny,
                policies: Vec::new(),
                reason: error.to_string(),
            },
        )
        .detail("address", Detail::Text(request.address.clone()));
        cp.record(event).await?;
        tracing::warn!(identity = %caller.identity.id, service = %request.service, %error, "agent registration refused");
        return Err(match error {
            RegistrationError::Invalid { .. } | RegistrationError::Oversize(_) => {
                Status::invalid_argument(error.to_string())
            }
            RegistrationError::TooManyInstances { .. } => {
                Status::resource_exhausted(error.to_string())
            }
            _ => Status::permission_denied(error.to_string()),
        });
    }
    if !unchanged {
        let event = agent_event(
            caller,
            &request.service,
            &request.instance,
            AuditDecision {
                outcome: Outcome::Allow,
                policies: Vec::new(),
                reason: String::new(),
            },
        )
        .detail("address", Detail::Text(request.address.clone()))
        .detail("version", Detail::Text(request.version.clone()));
        cp.record(registered_points(event, &request.points)).await?;
        tracing::info!(service = %request.service, instance = %request.instance, address = %request.address, "agent registered");
    }
    let lease = cp
        .registry()
        .announce(&caller.identity.id, announcement, now)
        .map_err(|e| Status::permission_denied(e.to_string()))?;
    Ok(pb::RegisterResponse {
        lease_expires_unix: i64::try_from(lease).unwrap_or(i64::MAX),
        renew_after_seconds: renew_after(cp.config.lease_seconds),
    })
}

/// The points of a registration as its record keeps them: every name while they are few, and
/// always their count and the SHA-256 of the names (newline-separated), so that an instance
/// announcing a thousand points costs the log a few KiB, not a quarter MiB, each time it moves.
fn registered_points(event: NewEvent, points: &[pb::PointInfo]) -> NewEvent {
    let names: Vec<String> = points.iter().map(|p| p.name.clone()).collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, names.join("\n").as_bytes());
    let sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let event = event
        .detail(
            "points_count",
            Detail::UInt(u64::try_from(names.len()).unwrap_or(u64::MAX)),
        )
        .detail("points_sha256", Detail::Text(sha256));
    if names.len() <= bounds::POINTS_NAMED_IN_RECORD {
        event.detail("points", Detail::List(names))
    } else {
        event
    }
}

fn listed_event(caller: &Caller, resource: &str, decision: AuditDecision) -> NewEvent {
    NewEvent::new(
        caller.actor.clone(),
        AuditAction::PointsListed,
        Resource {
            kind: ResourceKind::Service,
            id: resource.to_owned(),
        },
        decision,
        random_id("req"),
    )
}

pub(crate) async fn list_services(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ListServicesRequest,
) -> Result<pb::ListServicesResponse, Status> {
    let user = caller.user()?;
    let after = paging::start(&request.page_token)?;
    let now = now();
    let time = i64::try_from(now).unwrap_or(i64::MAX);
    let mut rows = Vec::new();
    {
        let registry = cp.registry();
        for (name, _) in registry.services(now) {
            let Ok(service) = ServiceName::parse(name) else {
                continue;
            };
            if !cp
                .policy
                .authorize(&AuthzRequest::list_points(user.clone(), service, time))
                .allowed
            {
                continue;
            }
            rows.extend(registry.instances(name, now).into_iter().map(|i| {
                (
                    paging::instance_key(name, &i.announcement.instance),
                    (
                        name.to_owned(),
                        pb::InstanceInfo {
                            instance: i.announcement.instance.clone(),
                            address: i.announcement.address.to_string(),
                            version: i.announcement.version.clone(),
                            mode: i.announcement.mode,
                            registered_unix: i64::try_from(i.registered_at).unwrap_or(i64::MAX),
                            lease_expires_unix: i64::try_from(i.lease_expires_at)
                                .unwrap_or(i64::MAX),
                        },
                    ),
                )
            }));
        }
    }
    let (rows, next_page_token) = paging::page(
        rows,
        after.as_deref(),
        bounds::page_size(request.page_size),
        |(name, info)| name.len() + info.encoded_len(),
    );
    let mut services: Vec<pb::ServiceInfo> = Vec::new();
    for (name, info) in rows {
        match services.last_mut() {
            Some(last) if last.name == name => last.instances.push(info),
            _ => services.push(pb::ServiceInfo {
                name,
                instances: vec![info],
            }),
        }
    }
    let shown: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    cp.record(
        listed_event(
            caller,
            "*",
            AuditDecision {
                outcome: Outcome::Allow,
                policies: Vec::new(),
                reason: String::new(),
            },
        )
        .detail("services", Detail::List(shown)),
    )
    .await?;
    Ok(pb::ListServicesResponse {
        services,
        next_page_token,
    })
}

pub(crate) async fn list_points(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ListPointsRequest,
) -> Result<pb::ListPointsResponse, Status> {
    let user = caller.user()?;
    let after = paging::start(&request.page_token)?;
    let now = now();
    let time = i64::try_from(now).unwrap_or(i64::MAX);
    let service = ServiceName::parse(request.service.trim())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let decision = cp.policy.authorize(&AuthzRequest::list_points(
        user.clone(),
        service.clone(),
        time,
    ));
    let audit = audit_decision(&decision);
    cp.record(listed_event(caller, service.as_str(), audit).service(service.as_str()))
        .await?;
    if !decision.allowed {
        return Err(denied_status(
            &decision.policy_ids,
            &decision.reasons.join("; "),
        ));
    }
    let listed = cp.registry().points(service.as_str(), now);
    if listed.is_empty() {
        return Err(Status::not_found(format!(
            "no live instance of `{}` is registered; `loupe services` lists what is running",
            service.as_str()
        )));
    }
    let facts = SessionFacts::new(user, 1, "listing points", None, [], time).ok();
    let bundle = cp.policy.current();
    let (listed, next_page_token) = paging::page(
        listed
            .into_iter()
            .map(|(point, instances)| (point.name.clone(), (point, instances))),
        after.as_deref(),
        bounds::page_size(request.page_size),
        |(point, _)| point.encoded_len(),
    );
    let points = listed
        .into_iter()
        .map(|(point, instances)| {
            let approval_from = match (&facts, PointName::parse(&point.name)) {
                (Some(facts), Ok(name)) => {
                    bundle
                        .authorize(&AuthzRequest::open_session(
                            service.clone(),
                            name,
                            facts.clone(),
                        ))
                        .awaiting_approval_from
                }
                _ => Vec::new(),
            };
            pb::ListedPoint {
                point: Some(point),
                instances: u32::try_from(instances).unwrap_or(u32::MAX),
                approval_from,
            }
        })
        .collect();
    Ok(pb::ListPointsResponse {
        service: service.as_str().to_owned(),
        points,
        next_page_token,
    })
}

/// Forgets instances whose lease ran out, every second.
pub(crate) async fn expire_leases(cp: Arc<ControlPlane>) {
    let mut every = Every::new(Duration::from_secs(1), cp.shutdown.clone());
    while every.tick().await {
        let gone = cp.registry().expire(now());
        for instance in gone {
            tracing::info!(
                service = %instance.announcement.service,
                instance = %instance.announcement.instance,
                "agent lease expired"
            );
            cp.agents.forget(&instance.announcement.address.to_string());
        }
    }
}
