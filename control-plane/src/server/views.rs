//! What a caller sees of sessions: `GetSession` and `ListSessions`. Both show only what the
//! caller may see ([`super::access::visible`]); a session they may not see is answered as a
//! missing one, and leaves no gap a page token could reveal. Reads decide nothing and change
//! nothing, so they are not recorded.
//!
//! With several replicas, `GetSession` reads the session's row first ([`super::fanout::current`]):
//! a session opened through another replica a moment ago is shown at once, as `loupe capture`
//! (which asks for it first, through whichever replica answers) needs. `ListSessions` shows this
//! replica's view, which follows the others' changes within the sweep's interval: a listing is
//! a survey, not the step before a decision.

use loupe_proto::v1 as pb;
use tonic::Status;

use super::access::visible;
use super::answers::missing;
use super::caller::Caller;
use super::table::find;
use super::wire::{response, session_info};
use super::{ControlPlane, fanout, now, paging};
use crate::policy::PolicyBundle;
use crate::state::StoredSession;

/// `GetSession`: one session the caller may see, as stored now.
pub(crate) async fn get(
    cp: &ControlPlane,
    caller: &Caller,
    request: pb::GetSessionRequest,
) -> Result<pb::SessionResponse, Status> {
    fanout::current(cp, &request.session_id).await?;
    let now = now();
    let stored = find(cp, &request.session_id)?;
    let policy = cp.policy.current();
    if !visible(&policy, caller, &stored, now) {
        // The same answer as for a session that does not exist: ids are not an oracle.
        return Err(missing(&request.session_id));
    }
    Ok(response(&policy, &stored, now))
}

/// `ListSessions`: a page of the sessions the caller may see, oldest request first.
pub(crate) fn list(
    cp: &ControlPlane,
    caller: &Caller,
    request: pb::ListSessionsRequest,
) -> Result<pb::ListSessionsResponse, Status> {
    let after = paging::start(&request.page_token)?;
    let now = now();
    let policy = cp.policy.current();
    let sessions = cp.sessions.all();
    let listed = shown(&policy, caller, &request, after.as_deref(), sessions, now);
    let (sessions, next_page_token) = paging::page(
        listed,
        None,
        crate::bounds::page_size(request.page_size),
        prost::Message::encoded_len,
    );
    Ok(pb::ListSessionsResponse {
        sessions,
        next_page_token,
    })
}

/// The sessions after the page key `after` that `request` asks for and `caller` may see, in
/// their wire form and keyed for paging, in order.
fn shown<'a>(
    policy: &'a PolicyBundle,
    caller: &'a Caller,
    request: &'a pb::ListSessionsRequest,
    after: Option<&'a str>,
    sessions: Vec<StoredSession>,
    now: u64,
) -> impl Iterator<Item = (String, pb::SessionInfo)> + 'a {
    sessions
        .into_iter()
        .map(|s| {
            (
                paging::session_key(s.session.requested_at, &s.session.id),
                s,
            )
        })
        .filter(move |(key, _)| after.is_none_or(|after| key.as_str() > after))
        .filter(|(_, s)| request.service.is_empty() || s.session.service == request.service)
        .filter(move |(_, s)| visible(policy, caller, s, now))
        .map(move |(key, s)| (key, session_info(&s, now)))
        .filter(|(_, info)| request.states.is_empty() || request.states.contains(&info.state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fixtures::{NOW, caller, session, shipped_policies};

    fn ids(listed: impl Iterator<Item = (String, pb::SessionInfo)>) -> Vec<String> {
        listed.map(|(_, info)| info.id).collect()
    }

    #[test]
    fn a_list_shows_what_the_caller_may_see_of_what_was_asked() {
        let policy = shipped_policies();
        let sessions = vec![
            session("alice", "checkout", &["checkout.total"], 0),
            session("bob", "checkout", &["checkout.total"], 0),
            session("alice", "payments", &["payments.charge"], 1),
        ];
        let all = pb::ListSessionsRequest::default();
        let alice = caller("alice");
        assert_eq!(
            ids(shown(&policy, &alice, &all, None, sessions.clone(), NOW)),
            vec!["ses-alice-checkout", "ses-alice-payments"],
            "not bob's"
        );
        let carol = caller("carol");
        assert_eq!(
            ids(shown(&policy, &carol, &all, None, sessions.clone(), NOW)).len(),
            3,
            "security sees every session"
        );

        let payments = pb::ListSessionsRequest {
            service: "payments".into(),
            ..Default::default()
        };
        assert_eq!(
            ids(shown(
                &policy,
                &carol,
                &payments,
                None,
                sessions.clone(),
                NOW
            )),
            vec!["ses-alice-payments"]
        );
        let pending = pb::ListSessionsRequest {
            states: vec![pb::SessionState::Pending as i32],
            ..Default::default()
        };
        assert_eq!(
            ids(shown(&policy, &alice, &pending, None, sessions, NOW)),
            vec!["ses-alice-payments"]
        );
    }

    #[test]
    fn a_list_goes_on_after_the_key_of_the_last_page() {
        let policy = shipped_policies();
        let mut later = session("alice", "payments", &["payments.charge"], 1);
        later.session.requested_at += 1;
        let sessions = vec![session("alice", "checkout", &["checkout.total"], 0), later];
        let all = pb::ListSessionsRequest::default();
        let alice = caller("alice");
        let first: Vec<String> = shown(&policy, &alice, &all, None, sessions.clone(), NOW)
            .map(|(key, _)| key)
            .collect();
        assert_eq!(
            ids(shown(&policy, &alice, &all, Some(&first[0]), sessions, NOW)),
            vec!["ses-alice-payments"]
        );
    }
}
