//! Answering one [`AuthzRequest`] against one [`PolicyBundle`], and explaining the answer.
//!
//! The request's resource becomes Cedar entities here (a point with its service and namespaces
//! as parents), the approvers' groups are looked up in the entities file, and a denial is turned
//! into words: the `@reason` of each `forbid` that matched (with `{principal}`, `{action}`,
//! `{resource}` and `{ttl_seconds}` filled in), or "no policy permits …" when nothing did.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entity, EntityId, EntityTypeName, EntityUid,
    Request, RestrictedExpression,
};

use super::bundle::{APPROVAL_ANNOTATION, PolicyBundle};
use super::names::{PointName, ServiceName, UserId};
use super::request::{
    AUDIT_LOG_ID, ApprovalFacts, AuthzRequest, RequestContext, Resource, SessionFacts,
};

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The determining policies: the permits that allowed it, or the forbids that denied it
    /// (empty when the denial is because nothing permits).
    pub policy_ids: Vec<String>,
    /// For a denial, why, in words, and any evaluation errors. A request that a policy failed
    /// to evaluate on is denied even if permitted otherwise (fail closed).
    pub reasons: Vec<String>,
    /// For a denial due only to `@approval_from` forbids, after which the rest of the set would
    /// allow: the groups whose approval is missing, sorted. The session can wait for approval
    /// (`pending`) instead of being refused. Empty otherwise.
    pub awaiting_approval_from: Vec<String>,
    /// [`PolicyBundle::version`] of the set that decided.
    pub policy_version: String,
}

/// Someone who could approve a pending session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub id: UserId,
    pub name: String,
}

impl PolicyBundle {
    /// Decides `request`. Never fails: anything that keeps the question from being asked (a
    /// request that does not fit its action, facts the schema refuses, a policy that errs while
    /// evaluating) is a denial with that reason.
    pub fn authorize(&self, request: &AuthzRequest) -> Decision {
        match self.decide(request) {
            Ok(decision) => decision,
            Err(reason) => self.denied(Vec::new(), vec![reason]),
        }
    }

    /// The known users for whom `ApproveSession` on `point` of `service`, for the pending
    /// session of `facts`, would be allowed — what the CLI shows a requester waiting for
    /// approval. The requester is never among them while `no-self-approval` (or the like) holds.
    pub fn who_could_approve(
        &self,
        service: &ServiceName,
        point: &PointName,
        facts: &ApprovalFacts,
    ) -> Vec<Approver> {
        self.users
            .iter()
            .filter(|user| {
                let request = AuthzRequest::approve_session(
                    user.id.clone(),
                    service.clone(),
                    point.clone(),
                    facts.clone(),
                );
                self.authorize(&request).allowed
            })
            .map(|user| Approver {
                id: user.id.clone(),
                name: user.name.clone(),
            })
            .collect()
    }

    fn decide(&self, request: &AuthzRequest) -> Result<Decision, String> {
        if let Some(misfit) = request.misfit() {
            return Err(misfit);
        }
        let principal = uid("User", request.principal.as_str())?;
        let action = uid("Action", request.action.name())?;
        let (resource, resource_entities) = resource_entities(&request.resource)?;
        let context = self.context(&request.context)?;
        let cedar_request = Request::new(
            principal.clone(),
            action,
            resource,
            context,
            Some(&self.schema),
        )
        .map_err(|e| format!("the request does not fit the schema: {e}"))?;
        let entities = self
            .entities
            .clone()
            .add_entities(resource_entities, Some(&self.schema))
            .map_err(|e| format!("the request's entities do not fit the schema: {e}"))?;

        let response = Authorizer::new().is_authorized(&cedar_request, &self.policies, &entities);
        let mut policy_ids: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        policy_ids.sort();
        let mut reasons: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();

        // A policy that fails to evaluate counts as not matching in Cedar, which would let a
        // broken forbid wave a request through. Fail closed instead.
        if response.decision() == CedarDecision::Allow && !reasons.is_empty() {
            reasons.insert(
                0,
                "denied because a policy could not be evaluated; fix the policy set".to_owned(),
            );
            return Ok(self.denied(policy_ids, reasons));
        }
        if response.decision() == CedarDecision::Allow {
            return Ok(Decision {
                allowed: true,
                policy_ids,
                reasons,
                awaiting_approval_from: Vec::new(),
                policy_version: self.version.clone(),
            });
        }
        let gates: Option<BTreeSet<String>> = policy_ids
            .iter()
            .map(|id| self.annotation(id, APPROVAL_ANNOTATION).map(str::to_owned))
            .collect();
        let awaiting_approval_from = match gates {
            Some(groups) if !groups.is_empty() => {
                let approved = Authorizer::new().is_authorized(
                    &cedar_request,
                    &self.approved_policies,
                    &entities,
                );
                if approved.decision() == CedarDecision::Allow {
                    groups.into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        let mut explanation: Vec<String> = if policy_ids.is_empty() {
            let mut why = Vec::new();
            if self.user(&request.principal).is_none() {
                why.push(format!(
                    "{} is not a known user (not in the policy entities)",
                    request.principal
                ));
            }
            why.push(format!(
                "no policy permits {} to {} on {}",
                self.display_name(&request.principal),
                request.action,
                request.resource
            ));
            why
        } else {
            policy_ids
                .iter()
                .map(|id| self.forbid_reason(id, request))
                .collect()
        };
        explanation.append(&mut reasons);
        let mut decision = self.denied(policy_ids, explanation);
        decision.awaiting_approval_from = awaiting_approval_from;
        Ok(decision)
    }

    fn denied(&self, policy_ids: Vec<String>, reasons: Vec<String>) -> Decision {
        Decision {
            allowed: false,
            policy_ids,
            reasons,
            awaiting_approval_from: Vec::new(),
            policy_version: self.version.clone(),
        }
    }

    fn display_name(&self, user: &UserId) -> String {
        self.user(user)
            .map(|u| u.name.clone())
            .unwrap_or_else(|| user.to_string())
    }

    fn forbid_reason(&self, policy_id: &str, request: &AuthzRequest) -> String {
        let Some(template) = self.annotation(policy_id, "reason") else {
            return format!("denied by policy {policy_id}");
        };
        let ttl = request
            .context
            .ttl_seconds()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "{ttl_seconds}".to_owned());
        let text = template
            .replace("{principal}", &self.display_name(&request.principal))
            .replace("{action}", request.action.name())
            .replace("{resource}", &request.resource.to_string())
            .replace("{ttl_seconds}", &ttl);
        format!("{text} (policy {policy_id})")
    }

    fn context(&self, facts: &RequestContext) -> Result<Context, String> {
        let time = facts.time();
        let mut pairs: Vec<(String, RestrictedExpression)> = vec![
            ("time".into(), RestrictedExpression::new_long(time)),
            (
                "hour_utc".into(),
                RestrictedExpression::new_long(time.rem_euclid(86_400) / 3_600),
            ),
        ];
        match facts {
            RequestContext::Clock { .. } => {}
            RequestContext::Session(session) => self.session_pairs(session, &mut pairs)?,
            RequestContext::Approval(approval) => {
                pairs.push((
                    "requester".into(),
                    RestrictedExpression::new_entity_uid(uid(
                        "User",
                        approval.requester().as_str(),
                    )?),
                ));
                request_pairs(
                    approval.ttl_seconds(),
                    approval.reason(),
                    approval.ticket(),
                    &mut pairs,
                );
            }
            RequestContext::SessionControl(control) => pairs.push((
                "session_owner".into(),
                RestrictedExpression::new_entity_uid(uid("User", control.session_owner.as_str())?),
            )),
        }
        Context::from_pairs(pairs).map_err(|e| format!("the request's facts are malformed: {e}"))
    }

    fn session_pairs(
        &self,
        session: &SessionFacts,
        pairs: &mut Vec<(String, RestrictedExpression)>,
    ) -> Result<(), String> {
        request_pairs(
            session.ttl_seconds(),
            session.reason(),
            session.ticket(),
            pairs,
        );
        let mut approvers = Vec::new();
        let mut groups: HashSet<EntityUid> = HashSet::new();
        for approver in session.approvals() {
            let approver = uid("User", approver.as_str())?;
            if let Some(ancestors) = self.entities.ancestors(&approver) {
                groups.extend(
                    ancestors
                        .filter(|a| a.type_name().to_string() == "Group")
                        .cloned(),
                );
            }
            approvers.push(RestrictedExpression::new_entity_uid(approver));
        }
        let count = i64::try_from(approvers.len()).map_err(|_| "too many approvals".to_owned())?;
        pairs.push(("approvals".into(), RestrictedExpression::new_set(approvers)));
        pairs.push((
            "approval_count".into(),
            RestrictedExpression::new_long(count),
        ));
        pairs.push((
            "approver_groups".into(),
            RestrictedExpression::new_set(
                groups.into_iter().map(RestrictedExpression::new_entity_uid),
            ),
        ));
        Ok(())
    }
}

fn request_pairs(
    ttl_seconds: u32,
    reason: &str,
    ticket: Option<&str>,
    pairs: &mut Vec<(String, RestrictedExpression)>,
) {
    pairs.push((
        "ttl_seconds".into(),
        RestrictedExpression::new_long(i64::from(ttl_seconds)),
    ));
    pairs.push((
        "reason".into(),
        RestrictedExpression::new_string(reason.to_owned()),
    ));
    if let Some(ticket) = ticket {
        pairs.push((
            "ticket".into(),
            RestrictedExpression::new_string(ticket.to_owned()),
        ));
    }
}

/// A Cedar entity uid from an already validated id.
fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = EntityTypeName::from_str(kind).map_err(|e| format!("entity type {kind}: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

/// The resource's uid, and the entities it needs: a point is in its service and namespaces.
fn resource_entities(resource: &Resource) -> Result<(EntityUid, Vec<Entity>), String> {
    match resource {
        Resource::Service(service) => {
            let service = uid("Service", service.as_str())?;
            Ok((
                service.clone(),
                vec![Entity::new_no_attrs(service, HashSet::new())],
            ))
        }
        Resource::Point { service, point } => {
            let service = uid("Service", service.as_str())?;
            let mut entities = vec![Entity::new_no_attrs(service.clone(), HashSet::new())];
            let mut parents = HashSet::from([service]);
            for namespace in point.namespaces() {
                let namespace = uid("Namespace", namespace)?;
                entities.push(Entity::new_no_attrs(namespace.clone(), HashSet::new()));
                parents.insert(namespace);
            }
            let point = uid("Point", point.as_str())?;
            entities.push(Entity::new_no_attrs(point.clone(), parents));
            Ok((point, entities))
        }
        Resource::AuditLog => {
            let log = uid("AuditLog", AUDIT_LOG_ID)?;
            Ok((log.clone(), vec![Entity::new_no_attrs(log, HashSet::new())]))
        }
    }
}
