//! `loupe session …`: requesting, approving, refusing, ending and listing sessions.
//!
//! `open` exits 0 when the session is active and 10 when it waits for approval, after printing
//! who may approve it and the exact command they run.

use std::time::Duration;

use loupe_proto::v1::{
    AdminRevokeSessionRequest, ApproveSessionRequest, ApproverInfo, CloseSessionRequest,
    DenySessionRequest, GetSessionRequest, ListSessionsRequest, OpenSessionRequest, SessionInfo,
    SessionState,
};
use serde_json::{Value, json};

use super::{Context, enum_label, next_page, request_id};
use crate::cli::{OpenArgs, SessionCommand, SessionStateArg};
use crate::duration::format_duration;
use crate::error::CliError;
use crate::exit;
use crate::render::printable;
use crate::when::{format_unix, until_unix};

/// The state's name for people and JSON: `active`, `pending`, …
pub fn state_label(state: i32) -> String {
    SessionState::try_from(state).map_or_else(
        |_| format!("state-{state}"),
        |s| enum_label(s.as_str_name(), "SESSION_STATE_"),
    )
}

fn state_arg(state: SessionStateArg) -> SessionState {
    match state {
        SessionStateArg::Pending => SessionState::Pending,
        SessionStateArg::Active => SessionState::Active,
        SessionStateArg::Closed => SessionState::Closed,
        SessionStateArg::Expired => SessionState::Expired,
        SessionStateArg::Revoked => SessionState::Revoked,
        SessionStateArg::Denied => SessionState::Denied,
    }
}

/// A session as JSON (times in Unix seconds, as on the wire, with the state by name).
pub fn session_json(session: &SessionInfo, approvers: &[ApproverInfo]) -> Value {
    let pending = session.state == SessionState::Pending as i32;
    json!({
        "approve_command": pending.then(|| format!("loupe session approve {}", session.id)),
        "id": session.id,
        "state": state_label(session.state),
        "requester": session.requester,
        "service": session.service,
        "points": session.points,
        "reason": session.reason,
        "ticket": session.ticket,
        "ttl_seconds": session.ttl_seconds,
        "approvals_required": session.approvals_required,
        "approvals": session.approvals.iter().map(|a| json!({"approver": a.approver, "at_unix": a.at_unix})).collect::<Vec<_>>(),
        "awaiting_approval_from": session.awaiting_approval_from,
        "approvers": approvers.iter().map(|a| json!({"id": a.id, "name": a.name})).collect::<Vec<_>>(),
        "requested_unix": session.requested_unix,
        "activated_unix": session.activated_unix,
        "expires_unix": session.expires_unix,
        "ended_unix": session.ended_unix,
        "end_reason": session.end_reason,
        "policy_ids": session.policy_ids,
        "policy_version": session.policy_version,
    })
}

fn when_with_left(unix: i64) -> String {
    let left = until_unix(unix);
    if unix == 0 {
        "-".to_owned()
    } else if left.is_zero() {
        format_unix(unix)
    } else {
        format!("{} (in {})", format_unix(unix), format_duration(left))
    }
}

/// A session for people, several lines.
pub fn session_text(session: &SessionInfo, approvers: &[ApproverInfo]) -> String {
    let state = SessionState::try_from(session.state).unwrap_or(SessionState::Unspecified);
    let mut lines = vec![format!(
        "session {}  {}",
        session.id,
        state_label(session.state)
    )];
    let mut field = |name: &str, value: String| {
        if !value.is_empty() {
            lines.push(format!("  {name:<11} {}", printable(&value)));
        }
    };
    field("service", session.service.clone());
    field("points", session.points.join(", "));
    field("requester", session.requester.clone());
    field("reason", session.reason.clone());
    field("ticket", session.ticket.clone());
    field(
        "ttl",
        format_duration(Duration::from_secs(u64::from(session.ttl_seconds))),
    );
    field("requested", format_unix(session.requested_unix));
    if session.activated_unix != 0 {
        field("activated", format_unix(session.activated_unix));
    }
    match state {
        SessionState::Active => field("expires", when_with_left(session.expires_unix)),
        SessionState::Pending => field("waits until", when_with_left(session.expires_unix)),
        _ => {}
    }
    if session.ended_unix != 0 {
        field("ended", format_unix(session.ended_unix));
        field("end reason", session.end_reason.clone());
    }
    if session.approvals_required > 0 || !session.approvals.is_empty() {
        let by: Vec<String> = session
            .approvals
            .iter()
            .map(|a| format!("{} at {}", a.approver, format_unix(a.at_unix)))
            .collect();
        let count = format!("{}/{}", session.approvals.len(), session.approvals_required);
        field(
            "approvals",
            if by.is_empty() {
                count
            } else {
                format!("{count}: {}", by.join("; "))
            },
        );
    }
    field("awaiting", session.awaiting_approval_from.join(", "));
    if !session.policy_ids.is_empty() {
        let version = if session.policy_version.is_empty() {
            String::new()
        } else {
            format!(" (policy set {})", session.policy_version)
        };
        field(
            "policies",
            format!("{}{version}", session.policy_ids.join(", ")),
        );
    }
    if state == SessionState::Pending {
        let who: Vec<String> = approvers
            .iter()
            .map(|a| {
                if a.name.is_empty() || a.name == a.id {
                    a.id.clone()
                } else {
                    format!("{} ({})", a.name, a.id)
                }
            })
            .collect();
        if !who.is_empty() {
            field("approvers", who.join(", "));
        }
        lines.push(format!(
            "\nPending approval. An approver runs:\n  loupe session approve {}",
            printable(&session.id)
        ));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn print_session(
    context: &Context,
    session: &SessionInfo,
    approvers: &[ApproverInfo],
) -> Result<(), CliError> {
    context.output.object(
        &session_text(session, approvers),
        &session_json(session, approvers),
    )
}

fn missing_session() -> CliError {
    CliError::Protocol("the response carries no session".to_owned())
}

/// Runs `loupe session …`.
pub async fn run(context: &Context, command: SessionCommand) -> Result<u8, CliError> {
    match command {
        SessionCommand::Open(args) => open(context, args).await,
        SessionCommand::List { state, service } => list(context, &state, service).await,
        command => change(context, command).await,
    }
}

async fn open(context: &Context, args: OpenArgs) -> Result<u8, CliError> {
    let ttl_seconds = u32::try_from(args.ttl.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| CliError::Usage("--ttl must be between 1s and about 136 years".into()))?;
    if args.reason.trim().is_empty() {
        return Err(CliError::Usage(
            "--reason must say why (it is shown to approvers and kept in the audit log)".into(),
        ));
    }
    let mut connection = context.connect().await?;
    let response = connection
        .client
        .open_session(OpenSessionRequest {
            service: args.service,
            points: args.points,
            ttl_seconds,
            reason: args.reason,
            ticket: args.ticket.unwrap_or_default(),
            request_id: request_id(),
        })
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();
    let session = response.session.ok_or_else(missing_session)?;
    print_session(context, &session, &response.approvers)?;
    Ok(match SessionState::try_from(session.state) {
        Ok(SessionState::Pending) => exit::PENDING_APPROVAL,
        Ok(SessionState::Active) => exit::OK,
        Ok(SessionState::Denied) => exit::DENIED,
        _ => exit::SESSION_NOT_ACTIVE,
    })
}

async fn list(
    context: &Context,
    states: &[SessionStateArg],
    service: Option<String>,
) -> Result<u8, CliError> {
    let mut connection = context.connect().await?;
    let mut sessions: Vec<SessionInfo> = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = connection
            .client
            .list_sessions(ListSessionsRequest {
                states: states.iter().map(|s| state_arg(*s) as i32).collect(),
                service: service.clone().unwrap_or_default(),
                page_size: 0,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|s| connection.error(&s))?
            .into_inner();
        sessions.extend(page.sessions);
        match next_page(&page_token, page.next_page_token)? {
            Some(next) => page_token = next,
            None => break,
        }
    }
    let rows = sessions
        .iter()
        .map(|s| {
            let until = match SessionState::try_from(s.state) {
                Ok(SessionState::Active | SessionState::Pending) => when_with_left(s.expires_unix),
                _ => format_unix(s.ended_unix),
            };
            vec![
                s.id.clone(),
                state_label(s.state),
                s.service.clone(),
                s.requester.clone(),
                s.points.join(", "),
                until,
                s.reason.clone(),
            ]
        })
        .collect();
    let values = sessions.iter().map(|s| session_json(s, &[])).collect();
    context.output.list(
        &[
            "ID",
            "STATE",
            "SERVICE",
            "REQUESTER",
            "POINTS",
            "UNTIL / ENDED",
            "REASON",
        ],
        rows,
        values,
    )?;
    Ok(exit::OK)
}

async fn change(context: &Context, command: SessionCommand) -> Result<u8, CliError> {
    let mut connection = context.connect().await?;
    let client = &mut connection.client;
    let result = match command {
        SessionCommand::Approve { id, comment } => {
            client
                .approve_session(ApproveSessionRequest {
                    session_id: id,
                    comment: comment.unwrap_or_default(),
                    request_id: request_id(),
                })
                .await
        }
        SessionCommand::Deny { id, reason } => {
            client
                .deny_session(DenySessionRequest {
                    session_id: id,
                    reason,
                    request_id: request_id(),
                })
                .await
        }
        SessionCommand::Close { id, reason } => {
            client
                .close_session(CloseSessionRequest {
                    session_id: id,
                    reason: reason.unwrap_or_default(),
                    request_id: request_id(),
                })
                .await
        }
        SessionCommand::Revoke { id, reason } => {
            client
                .revoke_session(AdminRevokeSessionRequest {
                    session_id: id,
                    reason,
                    request_id: request_id(),
                })
                .await
        }
        SessionCommand::Show { id } => {
            client
                .get_session(GetSessionRequest { session_id: id })
                .await
        }
        SessionCommand::Open(_) | SessionCommand::List { .. } => {
            return Err(CliError::Other("internal: not a session change".into()));
        }
    };
    let response = result.map_err(|s| connection.error(&s))?.into_inner();
    let session = response.session.ok_or_else(missing_session)?;
    print_session(context, &session, &response.approvers)?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_session_says_who_approves_and_how() {
        let session = SessionInfo {
            id: "s-42".into(),
            service: "checkout".into(),
            points: vec!["payments.charge".into()],
            state: SessionState::Pending as i32,
            approvals_required: 1,
            awaiting_approval_from: vec!["security".into()],
            reason: "INC-1".into(),
            ..SessionInfo::default()
        };
        let approvers = [ApproverInfo {
            id: "spiffe://loupe.dev/user/carol".into(),
            name: "carol".into(),
        }];
        let text = session_text(&session, &approvers);
        assert!(text.starts_with("session s-42  pending\n"), "{text}");
        assert!(text.contains("awaiting    security"), "{text}");
        assert!(
            text.contains("carol (spiffe://loupe.dev/user/carol)"),
            "{text}"
        );
        assert!(text.contains("loupe session approve s-42"), "{text}");
        let value = session_json(&session, &approvers);
        assert_eq!(value["state"], "pending");
        assert_eq!(value["approvers"][0]["name"], "carol");
        assert_eq!(value["approve_command"], "loupe session approve s-42");
    }
}
