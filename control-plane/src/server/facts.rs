//! The facts the policy decides a session by, read back from a stored session: who asked, for
//! how long, why, under which ticket, approved by whom, asked at what time. They were checked
//! when the session opened, so a stored session whose facts no longer parse is a fault of
//! ours (INTERNAL), not of the caller's.

use tonic::Status;

use crate::policy::{ApprovalFacts, PointName, ServiceName, SessionFacts, UserId};
use crate::state::StoredSession;

/// The facts of `stored` for a policy question asked at `now`, with its approvers.
pub(crate) fn session_facts(stored: &StoredSession, now: u64) -> Result<SessionFacts, Status> {
    let session = &stored.session;
    let requester = UserId::parse(&session.requester).map_err(internal)?;
    let approvers = session
        .approvals
        .iter()
        .filter_map(|a| UserId::parse(&a.approver).ok());
    SessionFacts::new(
        requester,
        u32::try_from(session.ttl_seconds).unwrap_or(u32::MAX),
        &session.reason,
        session.ticket.as_deref(),
        approvers,
        policy_time(now),
    )
    .map_err(internal)
}

/// The facts of `stored` for the question whether someone may approve it, asked at `now`.
pub(crate) fn approval_facts(stored: &StoredSession, now: u64) -> Result<ApprovalFacts, Status> {
    let session = &stored.session;
    let requester = UserId::parse(&session.requester).map_err(internal)?;
    ApprovalFacts::new(
        requester,
        u32::try_from(session.ttl_seconds).unwrap_or(u32::MAX),
        &session.reason,
        session.ticket.as_deref(),
        policy_time(now),
    )
    .map_err(internal)
}

/// The policy names of a stored session's service and one of its points.
pub(crate) fn names(service: &str, point: &str) -> Result<(ServiceName, PointName), Status> {
    Ok((
        ServiceName::parse(service).map_err(internal)?,
        PointName::parse(point).map_err(internal)?,
    ))
}

/// The requester of a stored session as a policy principal.
pub(crate) fn owner(stored: &StoredSession) -> Result<UserId, Status> {
    UserId::parse(&stored.session.requester).map_err(internal)
}

/// The service of a stored session as a policy resource.
pub(crate) fn service(stored: &StoredSession) -> Result<ServiceName, Status> {
    ServiceName::parse(&stored.session.service).map_err(internal)
}

/// Unix seconds as the policy's clock.
pub(crate) fn policy_time(now: u64) -> i64 {
    i64::try_from(now).unwrap_or(i64::MAX)
}

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, session, user};

    #[test]
    fn a_session_s_facts_carry_its_approvers() {
        let mut stored = session("alice", "payments", &["payments.charge"], 1);
        stored
            .session
            .add_approval(&user("carol"), NOW)
            .expect("carol approves");
        let facts = session_facts(&stored, NOW).expect("facts");
        assert_eq!(facts.requester().as_str(), user("alice"));
        let approvers: Vec<&str> = facts.approvals().iter().map(UserId::as_str).collect();
        assert_eq!(approvers, vec![user("carol").as_str()]);
        assert_eq!(facts.time(), policy_time(NOW));
    }

    #[test]
    fn a_stored_session_whose_names_do_not_parse_is_our_fault() {
        let mut stored = session("alice", "checkout", &["checkout.total"], 0);
        stored.session.requester = "not a user".into();
        let fault = session_facts(&stored, NOW).expect_err("no user");
        assert_eq!(fault.code(), tonic::Code::Internal);
        assert_eq!(
            owner(&stored).expect_err("no user").code(),
            tonic::Code::Internal
        );
        assert_eq!(policy_time(u64::MAX), i64::MAX);
    }
}
