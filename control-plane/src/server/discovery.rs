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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loupe_audit::event::{
    Action as AuditAction, Decision as AuditDecision, Detail, NewEvent, Resource, ResourceKind,
};
use loupe_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use super::answers::{allow, audit_decision, denied_status, deny};
use super::caller::Caller;
use super::facts::policy_time;
use super::{ControlPlane, Every, now, paging, random_id, registry_failing};
use crate::bounds;
use crate::policy::{AuthzRequest, PointName, PolicyBundle, ServiceName, SessionFacts, UserId};
use crate::registry::{Announcement, Instance, Registration, RegistrationError};

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

/// `Register`: an agent announces (or renews) one instance of its service.
pub(crate) async fn register(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::RegisterRequest,
) -> Result<pb::RegisterResponse, Status> {
    let now = now();
    let event = |decision| agent_event(caller, &request.service, &request.instance, decision);
    let Ok(address) = request.address.parse() else {
        let reason = format!(
            "address `{}` is not an IP:port the control plane can dial",
            request.address
        );
        let refusal = event(deny(Vec::new(), reason.clone()))
            .client_text("address", request.address.as_bytes());
        cp.record(refusal).await?;
        return Err(Status::invalid_argument(reason));
    };
    let announcement = announcement_of(&request, address);
    // Decide without registering yet: the audit record comes first. A renewal that changes
    // nothing is not worth a record, but one that moves the instance (another address,
    // version or points) redirects captures and is recorded like a first registration.
    let registration = match cp
        .registry
        .check(&caller.identity.id, &announcement, now)
        .await
    {
        Ok(registration) => registration,
        // The database cannot be reached: nothing was decided, so nothing is recorded; the
        // agent retries.
        Err(RegistrationError::Store(error)) => return Err(registry_failing(error)),
        Err(error) => {
            let refusal = event(deny(Vec::new(), error.to_string()))
                .detail("address", Detail::Text(request.address.clone()));
            cp.record(refusal).await?;
            tracing::warn!(identity = %caller.identity.id, service = %request.service, %error, "agent registration refused");
            return Err(registration_status(&error));
        }
    };
    if registration != Registration::Renewal {
        let registered = event(allow(Vec::new(), ""))
            .detail("address", Detail::Text(request.address.clone()))
            .detail("version", Detail::Text(request.version.clone()));
        cp.record(registered_points(registered, &request.points))
            .await?;
        tracing::info!(service = %request.service, instance = %request.instance, address = %request.address, "agent registered");
    }
    let lease = cp
        .registry
        .announce(&caller.identity.id, announcement, now)
        .await
        .map_err(|error| registration_status(&error))?;
    Ok(pb::RegisterResponse {
        lease_expires_unix: i64::try_from(lease).unwrap_or(i64::MAX),
        renew_after_seconds: renew_after(cp.config.lease_seconds),
    })
}

/// What `request` announces of its instance, reachable at `address`.
fn announcement_of(request: &pb::RegisterRequest, address: SocketAddr) -> Announcement {
    Announcement {
        service: request.service.clone(),
        instance: request.instance.clone(),
        address,
        version: request.version.clone(),
        mode: request.mode,
        points: request.points.clone(),
    }
}

/// The answer to a registration the registry refused, or could not decide.
fn registration_status(error: &RegistrationError) -> Status {
    match error {
        RegistrationError::Store(error) => registry_failing(error.clone()),
        RegistrationError::Invalid { .. } | RegistrationError::Oversize(_) => {
            Status::invalid_argument(error.to_string())
        }
        RegistrationError::TooManyInstances { .. } => Status::resource_exhausted(error.to_string()),
        _ => Status::permission_denied(error.to_string()),
    }
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

/// `ListServices`: a page of the live instances of the services the caller may list points
/// of, grouped by service.
pub(crate) async fn list_services(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ListServicesRequest,
) -> Result<pb::ListServicesResponse, Status> {
    let user = caller.user()?;
    let after = paging::start(&request.page_token)?;
    let rows = listable_instances(cp, &user, now()).await?;
    let (rows, next_page_token) = paging::page(
        rows,
        after.as_deref(),
        bounds::page_size(request.page_size),
        |(name, info)| name.len() + info.encoded_len(),
    );
    let services = by_service(rows);
    let shown: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    let listed = listed_event(caller, "*", allow(Vec::new(), ""));
    cp.record(listed.detail("services", Detail::List(shown)))
        .await?;
    Ok(pb::ListServicesResponse {
        services,
        next_page_token,
    })
}

/// The live instances of every service `user` may list the points of, keyed for paging, with
/// their service's name.
async fn listable_instances(
    cp: &ControlPlane,
    user: &UserId,
    now: u64,
) -> Result<Vec<(String, (String, pb::InstanceInfo))>, Status> {
    let policy = cp.policy.current();
    let live = cp.registry.live(now).await.map_err(registry_failing)?;
    let mut listable: Option<(String, bool)> = None;
    let mut rows = Vec::new();
    for instance in &live {
        let name = &instance.announcement.service;
        // Instances come by service: the policy is asked once per service.
        if listable.as_ref().is_none_or(|(service, _)| service != name) {
            let allowed = ServiceName::parse(name).is_ok_and(|service| {
                let question = AuthzRequest::list_points(user.clone(), service, policy_time(now));
                policy.authorize(&question).allowed
            });
            listable = Some((name.clone(), allowed));
        }
        if listable.as_ref().is_some_and(|(_, allowed)| *allowed) {
            let key = paging::instance_key(name, &instance.announcement.instance);
            rows.push((key, (name.clone(), instance_info(instance))));
        }
    }
    Ok(rows)
}

/// The wire form of a live instance.
fn instance_info(instance: &Instance) -> pb::InstanceInfo {
    pb::InstanceInfo {
        instance: instance.announcement.instance.clone(),
        address: instance.announcement.address.to_string(),
        version: instance.announcement.version.clone(),
        mode: instance.announcement.mode,
        registered_unix: i64::try_from(instance.registered_at).unwrap_or(i64::MAX),
        lease_expires_unix: i64::try_from(instance.lease_expires_at).unwrap_or(i64::MAX),
    }
}

/// Instances in service order, grouped under their services.
fn by_service(rows: Vec<(String, pb::InstanceInfo)>) -> Vec<pb::ServiceInfo> {
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
    services
}

/// `ListPoints`: a page of the live points of one service, each with whether a session on it
/// would wait for approval, and from whom.
pub(crate) async fn list_points(
    cp: &Arc<ControlPlane>,
    caller: &Caller,
    request: pb::ListPointsRequest,
) -> Result<pb::ListPointsResponse, Status> {
    let user = caller.user()?;
    let after = paging::start(&request.page_token)?;
    let now = now();
    let service = ServiceName::parse(request.service.trim())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let question = AuthzRequest::list_points(user.clone(), service.clone(), policy_time(now));
    let decision = cp.policy.authorize(&question);
    let listed = listed_event(caller, service.as_str(), audit_decision(&decision));
    cp.record(listed.service(service.as_str())).await?;
    if !decision.allowed {
        return Err(denied_status(
            &decision.policy_ids,
            &decision.reasons.join("; "),
        ));
    }
    let listed = cp
        .registry
        .points(service.as_str(), now)
        .await
        .map_err(registry_failing)?;
    if listed.is_empty() {
        return Err(Status::not_found(format!(
            "no live instance of `{}` is registered; `loupe services` lists what is running",
            service.as_str()
        )));
    }
    let (listed, next_page_token) = paging::page(
        listed
            .into_iter()
            .map(|(point, instances)| (point.name.clone(), (point, instances))),
        after.as_deref(),
        bounds::page_size(request.page_size),
        |(point, _)| point.encoded_len(),
    );
    let approvals = ApprovalsNeeded::new(cp.policy.current(), &user, &service, now);
    let points = listed
        .into_iter()
        .map(|(point, instances)| pb::ListedPoint {
            approval_from: approvals.from(&point.name),
            point: Some(point),
            instances: u32::try_from(instances).unwrap_or(u32::MAX),
        })
        .collect();
    Ok(pb::ListPointsResponse {
        service: service.as_str().to_owned(),
        points,
        next_page_token,
    })
}

/// Whom a session of the lister on a point of one service would wait for: the policy asked as
/// if they opened a one-second session with a reason.
struct ApprovalsNeeded<'a> {
    policy: Arc<PolicyBundle>,
    service: &'a ServiceName,
    facts: Option<SessionFacts>,
}

impl<'a> ApprovalsNeeded<'a> {
    fn new(
        policy: Arc<PolicyBundle>,
        user: &UserId,
        service: &'a ServiceName,
        now: u64,
    ) -> ApprovalsNeeded<'a> {
        let facts = SessionFacts::new(
            user.clone(),
            1,
            "listing points",
            None,
            [],
            policy_time(now),
        )
        .ok();
        ApprovalsNeeded {
            policy,
            service,
            facts,
        }
    }

    /// The groups a session on `point` would wait for (none if it would not wait).
    fn from(&self, point: &str) -> Vec<String> {
        let (Some(facts), Ok(point)) = (&self.facts, PointName::parse(point)) else {
            return Vec::new();
        };
        let question = AuthzRequest::open_session(self.service.clone(), point, facts.clone());
        self.policy.authorize(&question).awaiting_approval_from
    }
}

/// Forgets instances whose lease ran out, every second.
pub(crate) async fn expire_leases(cp: Arc<ControlPlane>) {
    let mut every = Every::new(Duration::from_secs(1), cp.shutdown.clone());
    while every.tick().await {
        let gone = match cp.registry.expire(now()).await {
            Ok(gone) => gone,
            Err(error) => {
                tracing::warn!(%error, "cannot sweep expired agent leases; trying again in a second");
                continue;
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, shipped_policies, user};
    use tonic::Code;

    #[test]
    fn a_refused_registration_is_answered_by_what_is_wrong() {
        let oversize = RegistrationError::Oversize(crate::bounds::Violation {
            field: "points".into(),
            actual: 2,
            max: 1,
            unit: "entries",
            sha256: String::new(),
        });
        assert_eq!(registration_status(&oversize).code(), Code::InvalidArgument);
        let crowded = RegistrationError::TooManyInstances {
            identity: "spiffe://loupe.dev/agent/shop".into(),
            held: 1,
        };
        assert_eq!(
            registration_status(&crowded).code(),
            Code::ResourceExhausted
        );
        let stranger = RegistrationError::WrongService {
            identity: "spiffe://loupe.dev/agent/shop".into(),
            allowed: "shop".into(),
            claimed: "payments".into(),
        };
        assert_eq!(
            registration_status(&stranger).code(),
            Code::PermissionDenied
        );
        let unreachable = RegistrationError::Store(crate::audit::StoreError::Unavailable(
            "error connecting to server".into(),
        ));
        assert_eq!(registration_status(&unreachable).code(), Code::Unavailable);
    }

    #[test]
    fn instances_are_grouped_under_their_services_in_order() {
        let info = |name: &str| pb::InstanceInfo {
            instance: name.into(),
            ..Default::default()
        };
        let services = by_service(vec![
            ("checkout".into(), info("c-1")),
            ("checkout".into(), info("c-2")),
            ("payments".into(), info("p-1")),
        ]);
        let shape: Vec<(String, usize)> = services
            .iter()
            .map(|s| (s.name.clone(), s.instances.len()))
            .collect();
        assert_eq!(shape, vec![("checkout".into(), 2), ("payments".into(), 1)]);
    }

    #[test]
    fn a_listed_point_says_whom_a_session_on_it_would_wait_for() {
        let alice = UserId::parse(&user("alice")).expect("user");
        let shop = ServiceName::parse("shop").expect("service");
        let needed = ApprovalsNeeded::new(Arc::new(shipped_policies()), &alice, &shop, NOW);
        assert_eq!(needed.from("payments.charge"), vec!["security".to_owned()]);
        assert!(needed.from("checkout.total").is_empty());
        assert!(needed.from("not a point").is_empty());
    }

    #[test]
    fn an_instance_is_shown_with_its_address_and_lease() {
        let request = pb::RegisterRequest {
            service: "shop".into(),
            instance: "i-1".into(),
            version: "1.2.3".into(),
            ..Default::default()
        };
        let address: SocketAddr = "127.0.0.1:7001".parse().expect("address");
        let instance = Instance {
            announcement: announcement_of(&request, address),
            identity: "spiffe://loupe.dev/agent/shop".into(),
            registered_at: NOW,
            lease_expires_at: NOW + 30,
        };
        let info = instance_info(&instance);
        assert_eq!(
            (
                info.instance.as_str(),
                info.address.as_str(),
                info.version.as_str()
            ),
            ("i-1", "127.0.0.1:7001", "1.2.3")
        );
        assert_eq!(info.lease_expires_unix - info.registered_unix, 30);
    }
}
