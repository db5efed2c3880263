//! Arming instances: each targeted instance gets its own token (one point, bound to the client
//! certificate of the channel it is sent on, expiring with the session) and opens its capture
//! stream. Every instance is armed at once; the call waits for all the answers, each bounded by
//! [`ANSWER_TIMEOUT`], so one slow agent delays a capture by at most that.

use std::sync::Arc;

use loupe_proto::v1 as pb;
use loupe_proto::v1::agent_client::AgentClient;
use tokio::task::JoinSet;
use tonic::{Code, Status, Streaming};

use super::plan::Plan;
use crate::registry::Instance;
use crate::server::agents::ANSWER_TIMEOUT;
use crate::server::{ControlPlane, MAX_RESPONSE_BYTES, now, random_id};
use crate::session::Session;

/// An armed instance's snapshot stream, and when its token expires (Unix seconds).
pub(crate) type Armed = (Streaming<pb::Snapshot>, u64);

/// Mints a token and opens the capture stream on one instance.
pub(crate) async fn arm(
    cp: &ControlPlane,
    session: &Session,
    instance: &Instance,
    plan: &Plan,
) -> Result<Armed, Status> {
    let now = now();
    let (channel, binding) = cp.agents.channel(
        &instance.announcement.service,
        &instance.announcement.address.to_string(),
    )?;
    let token = cp
        .minter
        .mint(
            session,
            &plan.point,
            &random_id("jti"),
            plan.token_limits(),
            plan.redact.clone(),
            &binding,
            now,
        )
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let exp = session.token_expiry(now, cp.config.token_lifetime_seconds);
    let request = pb::CaptureRequest {
        token,
        point: plan.point.clone(),
        condition: plan.condition.clone(),
        max_snapshots: plan.max_snapshots,
        rate_per_second: plan.rate,
        limits: Some(plan.limits),
        redact_keywords: plan.redact.keywords.clone(),
        redact_patterns: plan.redact.patterns.clone(),
    };
    let mut client = AgentClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
    let response = tokio::time::timeout(ANSWER_TIMEOUT, client.capture(request))
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "instance {} at {} did not answer within {} s",
                instance.announcement.instance,
                instance.announcement.address,
                ANSWER_TIMEOUT.as_secs()
            ))
        })??;
    Ok((response.into_inner(), exp))
}

/// Arms every target at once: the instances armed, and those that failed with why.
pub(crate) async fn arm_all(
    cp: &Arc<ControlPlane>,
    session: &Session,
    plan: &Plan,
    targets: &[Instance],
) -> (Vec<(Instance, Armed)>, Vec<(String, Status)>) {
    let mut arming = JoinSet::new();
    for instance in targets {
        let cp = Arc::clone(cp);
        let instance = instance.clone();
        let session = session.clone();
        let plan = plan.clone();
        arming.spawn(async move {
            let armed = arm(&cp, &session, &instance, &plan).await;
            (instance, armed)
        });
    }
    let mut armed = Vec::new();
    let mut failed = Vec::new();
    while let Some(joined) = arming.join_next().await {
        match joined {
            Ok((instance, Ok(stream))) => armed.push((instance, stream)),
            Ok((instance, Err(status))) => failed.push((instance.announcement.instance, status)),
            Err(error) => tracing::error!(%error, "arming task failed"),
        }
    }
    (armed, failed)
}

/// When no instance armed: the answer (one instance's own status, so that a bad condition is
/// INVALID_ARGUMENT from the call itself) and the reason recorded, naming every failure.
pub(crate) fn none_armed(failed: &[(String, Status)]) -> (Status, String) {
    let (code, detail) = failed
        .first()
        .map(|(i, s)| (s.code(), format!("instance {i}: {}", s.message())))
        .unwrap_or((Code::Unavailable, "no instance answered".to_owned()));
    let all: Vec<String> = failed
        .iter()
        .map(|(i, s)| format!("{i}: {}", s.message()))
        .collect();
    let reason = format!("no instance could be armed: {}", all.join("; "));
    let answer = Status::new(
        code,
        if failed.len() == 1 {
            detail
        } else {
            reason.clone()
        },
    );
    (answer, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_answers_with_its_own_status() {
        let failed = [(
            "i-1".to_owned(),
            Status::invalid_argument("condition: unknown field `totl`"),
        )];
        let (answer, reason) = none_armed(&failed);
        assert_eq!(answer.code(), Code::InvalidArgument);
        assert_eq!(
            answer.message(),
            "instance i-1: condition: unknown field `totl`"
        );
        assert_eq!(
            reason,
            "no instance could be armed: i-1: condition: unknown field `totl`"
        );
    }

    #[test]
    fn several_failures_answer_with_the_first_code_and_every_reason() {
        let failed = [
            ("i-1".to_owned(), Status::unavailable("connection refused")),
            ("i-2".to_owned(), Status::resource_exhausted("slots full")),
        ];
        let (answer, reason) = none_armed(&failed);
        assert_eq!(answer.code(), Code::Unavailable);
        assert_eq!(answer.message(), reason);
        assert!(reason.contains("i-1: connection refused; i-2: slots full"));
    }

    #[test]
    fn no_answer_at_all_is_unavailable() {
        let (answer, _) = none_armed(&[]);
        assert_eq!(answer.code(), Code::Unavailable);
        assert_eq!(answer.message(), "no instance could be armed: ");
    }
}
