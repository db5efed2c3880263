//! Adversarial end-to-end tests: engineers, approvers, reviewers and rogue agents trying to get
//! around the rules, see more than they may, act unrecorded, or knock the control plane over
//! with bad input. Real processes over real mTLS, as in `control_plane.rs`.

use std::time::Duration;

use loupe_tests::{
    Client, Deployment, PATIENCE, Running, actions, assert_status, audit_events, eventually,
    open_request, pb, wait_for_instances,
};
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

async fn running() -> Running {
    Running::start(EXE, |_| {}).await
}

async fn open(client: &mut Client, points: &[&str]) -> pb::SessionInfo {
    client
        .open_session(open_request(points, 300, "adversarial review"))
        .await
        .expect("session opens")
        .into_inner()
        .session
        .expect("session in the answer")
}

fn capture_request(session: &str, point: &str, condition: &str) -> pb::BrokeredCaptureRequest {
    pb::BrokeredCaptureRequest {
        session_id: session.into(),
        point: point.into(),
        condition: condition.into(),
        max_snapshots: 1,
        timeout_seconds: 30,
        ..pb::BrokeredCaptureRequest::default()
    }
}

fn approve(id: &str) -> pb::ApproveSessionRequest {
    pb::ApproveSessionRequest {
        session_id: id.into(),
        comment: "ok".into(),
        request_id: String::new(),
    }
}

fn close(id: &str, reason: &str) -> pb::CloseSessionRequest {
    pb::CloseSessionRequest {
        session_id: id.into(),
        reason: reason.into(),
        request_id: String::new(),
    }
}

fn revoke(id: &str) -> pb::AdminRevokeSessionRequest {
    pb::AdminRevokeSessionRequest {
        session_id: id.into(),
        reason: "adversarial".into(),
        request_id: String::new(),
    }
}

fn deny(id: &str) -> pb::DenySessionRequest {
    pb::DenySessionRequest {
        session_id: id.into(),
        reason: "no".into(),
        request_id: String::new(),
    }
}

fn code_of<T>(result: Result<T, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The status message with every session id replaced, to compare "not found" answers.
fn masked(status: &tonic::Status, id: &str) -> (Code, String) {
    (status.code(), status.message().replace(id, "<id>"))
}

async fn state_of(client: &mut Client, id: &str) -> i32 {
    client
        .get_session(pb::GetSessionRequest {
            session_id: id.into(),
        })
        .await
        .expect("visible session")
        .into_inner()
        .session
        .expect("session")
        .state
}

/// The log as the reviewer sees it must still verify: the checkpoint is signed by the pinned
/// key and the newest tree is consistent with `before` (a checkpoint taken earlier).
async fn assert_log_verifies(
    deployment: &Deployment,
    dave: &mut Client,
    before: &pb::CheckpointResponse,
) {
    let after = dave
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner();
    assert!(after.tree_size >= before.tree_size);
    let verifier_text =
        std::fs::read_to_string(deployment.pki.audit_verifier()).expect("verifier file");
    let verifier =
        loupe_audit::checkpoint::NoteVerifier::parse(verifier_text.trim()).expect("verifier key");
    let old = verifier.open_checkpoint(&before.note).expect("old signed");
    let new = verifier.open_checkpoint(&after.note).expect("new signed");
    let proof = dave
        .prove_consistency(pb::ProveConsistencyRequest {
            first_size: before.tree_size,
            second_size: after.tree_size,
        })
        .await
        .expect("consistency proof")
        .into_inner();
    let path: Vec<[u8; 32]> = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().expect("32-byte hash"))
        .collect();
    loupe_audit::proof::verify_consistency(old.size, new.size, &old.root, &new.root, &path)
        .expect("the log only grew");
    // Every event still parses and its bytes are the ones the tree holds.
    let events = audit_events(dave, pb::QueryAuditRequest::default()).await;
    assert!(
        events.len() as u64 >= new.size,
        "{} < {}",
        events.len(),
        new.size
    );
}

async fn checkpoint(dave: &mut Client) -> pb::CheckpointResponse {
    dave.get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoint")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_cannot_be_repeated_reused_or_granted_by_the_wrong_people() {
    let world = running().await;
    let mut dave = world.client("dave").await;
    let before = checkpoint(&mut dave).await;
    let mut alice = world.client("alice").await;
    let mut bob = world.client("bob").await;
    let mut carol = world.client("carol").await;

    // A mixed session: `checkout.*` needs nobody, `payments.charge` needs security.
    let mixed = open(&mut alice, &["checkout.*", "payments.charge"]).await;
    assert_eq!(mixed.state, pb::SessionState::Pending as i32);
    assert_eq!(mixed.approvals_required, 1);
    assert_status(
        alice.approve_session(approve(&mixed.id)).await,
        Code::PermissionDenied,
        "cannot approve",
    );
    // bob is no approver for payments, though he could open checkout sessions himself: to
    // him the session does not exist.
    assert_status(
        bob.approve_session(approve(&mixed.id)).await,
        Code::NotFound,
        "no session",
    );
    // bob may not deny it either (denying is an approver's call).
    assert_status(
        bob.deny_session(deny(&mixed.id)).await,
        Code::NotFound,
        "no session",
    );
    // Nothing can be captured while pending, on either kind of point.
    for point in ["checkout.apply_discount", "payments.charge"] {
        assert_status(
            alice
                .capture(capture_request(&mixed.id, point, ""))
                .await
                .map(|_| ()),
            Code::FailedPrecondition,
            "waiting for approval",
        );
    }
    let approved = carol
        .approve_session(approve(&mixed.id))
        .await
        .expect("security approves")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(approved.state, pb::SessionState::Active as i32);
    assert_eq!(approved.approvals.len(), 1);
    // The same approver again, and anyone at all once active: nothing to approve.
    assert_status(
        carol.approve_session(approve(&mixed.id)).await,
        Code::FailedPrecondition,
        "not pending",
    );
    // An active session cannot be turned into a denied one.
    let code = code_of(carol.deny_session(deny(&mixed.id)).await);
    assert_eq!(code, Code::FailedPrecondition);
    assert_eq!(
        state_of(&mut alice, &mixed.id).await,
        pb::SessionState::Active as i32
    );

    // Deny, then approve: the denial sticks.
    let second = open(&mut alice, &["payments.charge"]).await;
    // The requester cannot deny (an approver's action) her own session either.
    assert_eq!(
        code_of(alice.deny_session(deny(&second.id)).await),
        Code::PermissionDenied
    );
    carol
        .deny_session(deny(&second.id))
        .await
        .expect("security denies");
    assert_status(
        carol.approve_session(approve(&second.id)).await,
        Code::FailedPrecondition,
        "not pending",
    );
    assert_eq!(
        code_of(carol.deny_session(deny(&second.id)).await),
        Code::FailedPrecondition
    );
    assert_status(
        alice
            .capture(capture_request(&second.id, "payments.charge", ""))
            .await
            .map(|_| ()),
        Code::FailedPrecondition,
        "denied",
    );
    assert_eq!(
        state_of(&mut alice, &second.id).await,
        pb::SessionState::Denied as i32
    );

    // Every refusal that was a policy decision is in the log, and the log verifies.
    let refused = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "session.approved".into(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(refused.len() >= 2, "{refused:?}");
    let refused_denials = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "session.denied".into(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(refused_denials.len() >= 2, "{refused_denials:?}");
    assert_log_verifies(&world.deployment, &mut dave, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_transitions_of_sessions_in_the_wrong_state_are_audited() {
    let world = running().await;
    let mut alice = world.client("alice").await;
    let mut carol = world.client("carol").await;
    let mut dave = world.client("dave").await;
    let session = open(&mut alice, &["checkout.apply_discount"]).await;
    assert_eq!(session.state, pb::SessionState::Active as i32);
    // carol tries to approve an already active session, then to deny it.
    let _ = carol.approve_session(approve(&session.id)).await;
    alice
        .close_session(close(&session.id, "done"))
        .await
        .expect("owner closes");
    let _ = alice.close_session(close(&session.id, "again")).await;
    let events = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: session.id.clone(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    let approvals: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "session.approved")
        .collect();
    assert_eq!(
        approvals.len(),
        1,
        "the refused approval of an active session should be recorded: {:?}",
        actions(&events)
    );
    let closes: Vec<_> = events
        .iter()
        .filter(|e| e["action"] == "session.closed")
        .collect();
    assert_eq!(
        closes.len(),
        2,
        "the refused second close should be recorded: {:?}",
        actions(&events)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_peoples_sessions_look_like_missing_ones() {
    let world = running().await;
    let mut alice = world.client("alice").await;
    let mut bob = world.client("bob").await;
    let mut erin = world.client("erin").await;
    let mut dave = world.client("dave").await;
    let mut carol = world.client("carol").await;
    let session = open(&mut alice, &["checkout.apply_discount"]).await;
    let pending = open(&mut alice, &["payments.charge"]).await;
    let bogus = "ses-00000000000000000000";

    // Capture in someone else's session: exactly the answer for a session that does not exist.
    for intruder in [&mut bob, &mut erin, &mut carol] {
        let theirs = intruder
            .capture(capture_request(&session.id, "checkout.apply_discount", ""))
            .await
            .map(|_| ())
            .expect_err("not the requester");
        let missing = intruder
            .capture(capture_request(bogus, "checkout.apply_discount", ""))
            .await
            .map(|_| ())
            .expect_err("no such session");
        assert_eq!(masked(&theirs, &session.id), masked(&missing, bogus));
        assert_eq!(theirs.code(), Code::NotFound);
    }
    // A session id of another service, or one padded with whitespace, gives no more.
    let padded = format!("  {}  ", session.id);
    assert_eq!(
        code_of(
            bob.capture(capture_request(&padded, "checkout.apply_discount", ""))
                .await
        ),
        Code::NotFound
    );
    // GetSession: the same.
    for intruder in [&mut bob, &mut erin, &mut dave] {
        let theirs = intruder
            .get_session(pb::GetSessionRequest {
                session_id: session.id.clone(),
            })
            .await
            .expect_err("not visible");
        let missing = intruder
            .get_session(pb::GetSessionRequest {
                session_id: bogus.into(),
            })
            .await
            .expect_err("missing");
        assert_eq!(masked(&theirs, &session.id), masked(&missing, bogus));
    }
    // ListSessions: bob and erin see none of alice's; dave (auditor) reads the log instead.
    for intruder in [&mut bob, &mut erin, &mut dave] {
        let listed = intruder
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .sessions;
        assert!(
            listed.iter().all(|s| s.requester != session.requester),
            "{listed:?}"
        );
    }
    // carol may revoke any session, so she sees them (as the policy says).
    let seen = carol
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .sessions;
    assert!(seen.iter().any(|s| s.id == session.id));
    assert!(seen.iter().any(|s| s.id == pending.id));

    // Close and revoke of someone else's session are refused (as if it did not exist) and
    // audited.
    assert_eq!(
        code_of(bob.close_session(close(&session.id, "mine now")).await),
        Code::NotFound
    );
    assert_eq!(
        code_of(bob.revoke_session(revoke(&session.id)).await),
        Code::NotFound
    );
    assert_eq!(
        code_of(erin.revoke_session(revoke(&pending.id)).await),
        Code::NotFound
    );
    // carol (security) may not close alice's session: closing is the owner's.
    assert_eq!(
        code_of(carol.close_session(close(&session.id, "x")).await),
        Code::PermissionDenied
    );
    assert_eq!(
        state_of(&mut alice, &session.id).await,
        pb::SessionState::Active as i32
    );
    let events = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: session.id.clone(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    let denied = actions(&events);
    for expected in ["capture.started", "session.closed", "session.revoked"] {
        assert!(
            denied.iter().any(|a| a == expected),
            "{expected}: {denied:?}"
        );
    }
    // Three intruders, and one with a padded id: four refusals on record.
    assert_eq!(
        denied.iter().filter(|a| *a == "capture.started").count(),
        4,
        "{denied:?}"
    );

    // Revoke, then capture: refused, and no way back.
    carol
        .revoke_session(revoke(&session.id))
        .await
        .expect("security revokes");
    assert_status(
        alice
            .capture(capture_request(&session.id, "checkout.apply_discount", ""))
            .await
            .map(|_| ()),
        Code::FailedPrecondition,
        "revoked",
    );
    assert_eq!(
        code_of(alice.close_session(close(&session.id, "late")).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code_of(carol.approve_session(approve(&session.id)).await),
        Code::FailedPrecondition
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_condition_is_no_oracle_for_other_peoples_sessions() {
    let world = running().await;
    let mut alice = world.client("alice").await;
    let mut bob = world.client("bob").await;
    let session = open(&mut alice, &["checkout.apply_discount"]).await;
    let huge = "true && ".repeat(1000) + "true";
    let theirs = bob
        .capture(capture_request(
            &session.id,
            "checkout.apply_discount",
            &huge,
        ))
        .await
        .map(|_| ())
        .expect_err("refused");
    let bogus = "ses-00000000000000000000";
    let missing = bob
        .capture(capture_request(bogus, "checkout.apply_discount", &huge))
        .await
        .map(|_| ())
        .expect_err("refused");
    assert_eq!(masked(&theirs, &session.id), masked(&missing, bogus));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_revoke_are_no_oracle_for_other_peoples_sessions() {
    let world = running().await;
    let mut alice = world.client("alice").await;
    let mut bob = world.client("bob").await;
    let session = open(&mut alice, &["checkout.apply_discount"]).await;
    let bogus = "ses-00000000000000000000";
    let theirs = bob
        .close_session(close(&session.id, "x"))
        .await
        .expect_err("refused");
    let missing = bob
        .close_session(close(bogus, "x"))
        .await
        .expect_err("refused");
    assert_eq!(theirs.code(), missing.code(), "{theirs:?} vs {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_names_patterns_and_huge_fields_are_refused_cleanly() {
    let world = running().await;
    let mut alice = world.client("alice").await;
    let mut dave = world.client("dave").await;
    let before = checkpoint(&mut dave).await;

    // Pattern and name tricks at OpenSession.
    let long = format!("checkout.{}", "a".repeat(5000));
    for trick in [
        "*",
        ".*",
        "payments.*.*",
        "payments.",
        "Payments.Charge",
        "PAYMENTS.CHARGE",
        "payments..charge",
        "payments.charge\u{0}",
        "payments.charge\u{200b}",
        "payments/charge",
        long.as_str(),
        "",
    ] {
        let result = alice
            .open_session(open_request(&[trick], 300, "tricks"))
            .await;
        let code = code_of(result);
        assert!(
            matches!(code, Code::InvalidArgument | Code::NotFound),
            "{trick:?}: {code:?}"
        );
    }
    // Whitespace around a name is the same name, and it still needs its approval.
    let padded = alice
        .open_session(open_request(&[" payments.charge "], 300, "tricks"))
        .await
        .expect("trimmed")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(padded.points, vec!["payments.charge".to_owned()]);
    assert_eq!(padded.state, pb::SessionState::Pending as i32);

    // A checkout-only session never grants payments, whatever the spelling at Capture.
    let session = open(&mut alice, &["checkout.*"]).await;
    assert!(session.points.iter().all(|p| p.starts_with("checkout.")));
    for trick in [
        "payments.charge",
        "payments.charge ",
        "Payments.charge",
        "payments..charge",
        "checkout.*",
        "*",
        long.as_str(),
        "checkout.apply_discount\u{0}",
    ] {
        let code = code_of(alice.capture(capture_request(&session.id, trick, "")).await);
        assert!(
            matches!(code, Code::PermissionDenied | Code::InvalidArgument),
            "{trick:?}: {code:?}"
        );
    }

    // Huge fields: a 1 MiB reason is over the request limit; 2 KiB over the reason limit.
    let code = code_of(
        alice
            .open_session(open_request(
                &["checkout.apply_discount"],
                300,
                &"r".repeat(1024 * 1024),
            ))
            .await,
    );
    assert_ne!(code, Code::Ok);
    assert_status(
        alice
            .open_session(open_request(
                &["checkout.apply_discount"],
                300,
                &"r".repeat(2048),
            ))
            .await,
        Code::InvalidArgument,
        "",
    );
    // 10 000 points (the same one) collapse to one.
    let many: Vec<&str> = std::iter::repeat_n("checkout.apply_discount", 10_000).collect();
    let one = open(&mut alice, &many).await;
    assert_eq!(one.points, vec!["checkout.apply_discount".to_owned()]);
    // 10 000 distinct unknown points: one clear NOT_FOUND or INVALID_ARGUMENT.
    let unknown: Vec<String> = (0..10_000).map(|i| format!("checkout.p{i}")).collect();
    let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
    let code = code_of(
        alice
            .open_session(open_request(&unknown, 300, "many"))
            .await,
    );
    assert!(
        matches!(code, Code::NotFound | Code::InvalidArgument),
        "{code:?}"
    );
    // A condition over 4 KiB.
    assert_status(
        alice
            .capture(capture_request(
                &session.id,
                "checkout.apply_discount",
                &("true && ".repeat(1000) + "true"),
            ))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "4096",
    );
    // Control characters: refused in the reason, recorded verbatim (and parseable) elsewhere.
    assert_eq!(
        code_of(
            alice
                .open_session(open_request(
                    &["checkout.apply_discount"],
                    300,
                    "INC-1\n{\"action\":\"forged\"}"
                ))
                .await
        ),
        Code::InvalidArgument
    );
    let nasty = "bye\n\u{1b}[2J\u{0}\"},{\"action\":\"session.forged\"";
    alice
        .close_session(close(&one.id, nasty))
        .await
        .expect("closes");
    let events = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: one.id.clone(),
            action: "session.closed".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["details"]["reason"].as_str(), Some(nasty));
    let all = audit_events(&mut dave, pb::QueryAuditRequest::default()).await;
    assert!(!actions(&all).iter().any(|a| a == "session.forged"));

    // The refusals that were decisions are recorded, and the log verifies.
    let refused = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: session.id.clone(),
            action: "capture.started".into(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(refused.len() >= 5, "{refused:?}");
    assert_log_verifies(&world.deployment, &mut dave, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rogue_agents_cannot_break_registration_or_captures() {
    let world = running().await;
    let mut rogue = world.agent("checkout").await;
    let point = |name: String| pb::PointInfo {
        name,
        ..pb::PointInfo::default()
    };
    let registration = |instance: &str, address: &str| pb::RegisterRequest {
        service: "checkout".into(),
        instance: instance.into(),
        address: address.into(),
        version: "6.6.6".into(),
        mode: pb::AgentMode::InProcess as i32,
        points: vec![point("checkout.apply_discount".into())],
    };
    // Not an IP address, or no address at all.
    for address in ["localhost:1", "not an address", "", "http://127.0.0.1:1"] {
        assert_status(
            rogue.register(registration("rogue-1", address)).await,
            Code::InvalidArgument,
            "not an IP:port",
        );
    }
    // Instance ids and service names that break the rules.
    for instance in ["", "a/b", "x y", &"i".repeat(200)] {
        assert_eq!(
            code_of(rogue.register(registration(instance, "127.0.0.1:9")).await),
            Code::InvalidArgument,
            "{instance:?}"
        );
    }
    // A huge point list is accepted within the request limit, or refused — never a crash.
    let mut big = registration("rogue-big", "127.0.0.1:9");
    big.points = (0..20_000)
        .map(|i| point(format!("checkout.p{i}")))
        .collect();
    let _ = rogue.register(big).await;
    // An instance pointing at the control plane itself: the control plane dials it as an
    // agent, the handshake names the wrong identity, and the capture reports it as failed
    // while the real instance delivers.
    rogue
        .register(registration("rogue-self", &world.control_plane.address))
        .await
        .expect("registration accepted");
    // Keep its lease alive, as a real agent would.
    let renewing = {
        let mut rogue = rogue.clone();
        let request = registration("rogue-self", &world.control_plane.address);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = rogue.register(request.clone()).await;
            }
        })
    };
    let mut alice = world.client("alice").await;
    wait_for_instances(&mut alice, "checkout", 2).await;
    let session = open(&mut alice, &["checkout.apply_discount"]).await;
    let mut stream = alice
        .capture(capture_request(&session.id, "checkout.apply_discount", ""))
        .await
        .expect("capture starts on the real instance")
        .into_inner();
    let mut snapshots = Vec::new();
    let mut failed = Vec::new();
    while let Some(event) = tokio::time::timeout(PATIENCE * 2, stream.message())
        .await
        .expect("the stream moves")
        .expect("the stream does not fail")
    {
        match event.event {
            Some(pb::capture_event::Event::Snapshot(s)) => snapshots.push(s),
            Some(pb::capture_event::Event::Instance(i))
                if i.state == pb::InstanceState::Failed as i32 =>
            {
                failed.push(i.instance)
            }
            _ => {}
        }
    }
    assert_eq!(snapshots.len(), 1);
    assert!(snapshots.iter().all(|s| s.instance == "checkout-1"));
    assert!(failed.iter().any(|i| i == "rogue-self"), "{failed:?}");
    renewing.abort();

    // Refused registrations are on record.
    let mut dave = world.client("dave").await;
    let refused = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "agent.registered".into(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(refused.len() >= 4, "{refused:?}");
    // And the control plane still answers.
    wait_for_instances(&mut alice, "checkout", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirecting_an_existing_instance_is_audited() {
    let world = running().await;
    let mut rogue = world.agent("checkout").await;
    // Same service identity, but the address of checkout-1 is taken over.
    rogue
        .register(pb::RegisterRequest {
            service: "checkout".into(),
            instance: "checkout-1".into(),
            address: "127.0.0.1:9".into(),
            version: "6.6.6".into(),
            mode: pb::AgentMode::InProcess as i32,
            points: vec![],
        })
        .await
        .expect("same service identity: accepted");
    let mut dave = world.client("dave").await;
    let registered = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "agent.registered".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(
        registered
            .iter()
            .any(|e| e["details"]["address"] == "127.0.0.1:9"),
        "the takeover of checkout-1 left no record: {registered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewer_calls_with_bad_ranges_are_clear_errors_and_audited() {
    let world = running().await;
    let mut dave = world.client("dave").await;
    let before = checkpoint(&mut dave).await;
    let size = before.tree_size;

    for (seq, tree_size) in [
        (u64::MAX, 0),
        (size + 100, 0),
        (0, u64::MAX),
        (5, 3),
        (0, size + 1_000_000),
    ] {
        let code = code_of(
            dave.prove_inclusion(pb::ProveInclusionRequest { seq, tree_size })
                .await,
        );
        assert!(
            matches!(code, Code::OutOfRange | Code::InvalidArgument),
            "seq {seq} tree {tree_size}: {code:?}"
        );
    }
    for (first_size, second_size) in [
        (5, 3),
        (u64::MAX, 0),
        (0, u64::MAX),
        (size + 100_000, size + 200_000),
        (1, u64::MAX),
    ] {
        let code = code_of(
            dave.prove_consistency(pb::ProveConsistencyRequest {
                first_size,
                second_size,
            })
            .await,
        );
        assert!(
            matches!(code, Code::OutOfRange | Code::InvalidArgument),
            "first {first_size} second {second_size}: {code:?}"
        );
    }
    // Both zero: a proof to the latest tree from the empty one, or a clear refusal.
    let code = code_of(
        dave.prove_consistency(pb::ProveConsistencyRequest {
            first_size: 0,
            second_size: 0,
        })
        .await,
    );
    assert!(
        matches!(code, Code::Ok | Code::OutOfRange | Code::InvalidArgument),
        "{code:?}"
    );
    // Unknown filters.
    for bad in [
        pb::QueryAuditRequest {
            action: "session.pwned".into(),
            ..pb::QueryAuditRequest::default()
        },
        pb::QueryAuditRequest {
            outcome: "maybe".into(),
            ..pb::QueryAuditRequest::default()
        },
    ] {
        assert_eq!(code_of(dave.query_audit(bad).await), Code::InvalidArgument);
    }
    // A huge limit simply ends at the end of the log.
    let everything = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            limit: u64::MAX,
            after_seq: 0,
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(!everything.is_empty());
    // A follower that never ends, then walks away: the control plane carries on.
    let mut follow = dave
        .query_audit(pb::QueryAuditRequest {
            follow: true,
            limit: 1,
            ..pb::QueryAuditRequest::default()
        })
        .await
        .expect("follow")
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, follow.message())
        .await
        .expect("an event")
        .expect("stream")
        .expect("record");
    assert_eq!(first.seq, 0);
    drop(follow);
    // Others cannot follow, and their attempt is recorded.
    let mut erin = world.client("erin").await;
    assert_eq!(
        code_of(
            erin.query_audit(pb::QueryAuditRequest {
                follow: true,
                ..pb::QueryAuditRequest::default()
            })
            .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code_of(
            erin.prove_inclusion(pb::ProveInclusionRequest {
                seq: u64::MAX,
                tree_size: 0
            })
            .await
        ),
        Code::PermissionDenied
    );

    let reads = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "audit.read".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    let calls = |call: &str, outcome: &str| {
        reads
            .iter()
            .filter(|e| e["details"]["call"] == call && e["decision"]["outcome"] == outcome)
            .count()
    };
    assert!(calls("ProveInclusion", "allow") >= 5, "{reads:?}");
    assert!(calls("ProveConsistency", "allow") >= 6, "{reads:?}");
    assert!(calls("QueryAudit", "deny") >= 1, "{reads:?}");
    assert!(calls("ProveInclusion", "deny") >= 1, "{reads:?}");
    assert_log_verifies(&world.deployment, &mut dave, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_cannot_be_approved_closed_or_captured() {
    let world = Running::start(EXE, |c| c.sessions.pending_timeout_seconds = Some(2)).await;
    let mut alice = world.client("alice").await;
    let mut carol = world.client("carol").await;
    let pending = open(&mut alice, &["payments.charge"]).await;
    let short = alice
        .open_session(open_request(&["checkout.apply_discount"], 1, "short"))
        .await
        .expect("opens")
        .into_inner()
        .session
        .expect("session");
    for id in [&pending.id, &short.id] {
        eventually("the session expired", || {
            let mut alice = alice.clone();
            let id = id.clone();
            async move {
                (state_of(&mut alice, &id).await == pb::SessionState::Expired as i32).then_some(())
            }
        })
        .await;
    }
    assert_eq!(
        code_of(carol.approve_session(approve(&pending.id)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code_of(carol.deny_session(deny(&pending.id)).await),
        Code::FailedPrecondition
    );
    for id in [&pending.id, &short.id] {
        assert_eq!(
            code_of(alice.close_session(close(id, "late")).await),
            Code::FailedPrecondition
        );
        assert_eq!(
            code_of(carol.revoke_session(revoke(id)).await),
            Code::FailedPrecondition
        );
    }
    assert_status(
        alice
            .capture(capture_request(&short.id, "checkout.apply_discount", ""))
            .await
            .map(|_| ()),
        Code::FailedPrecondition,
        "expired",
    );
    assert_eq!(
        state_of(&mut alice, &pending.id).await,
        pb::SessionState::Expired as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_nobody_reads_blocks_nothing_else() {
    let world = running().await;
    let mut alice = world.client("alice").await;
    let mut bob = world.client("bob").await;
    let mut carol = world.client("carol").await;
    let mut dave = world.client("dave").await;
    let before = checkpoint(&mut dave).await;
    let stuck = open(&mut alice, &["checkout.apply_discount"]).await;
    let mut request = capture_request(&stuck.id, "checkout.apply_discount", "");
    request.max_snapshots = 10_000;
    request.rate_per_second = 1000.0;
    request.timeout_seconds = 0;
    // Started, never read.
    let unread = alice.capture(request).await.expect("capture starts");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Other sessions open, capture and close; an approval goes through; the stuck one is
    // revoked — all while the unread stream sits there.
    let work = async {
        let other = open(&mut bob, &["checkout.apply_discount"]).await;
        let mut stream = bob
            .capture(capture_request(&other.id, "checkout.apply_discount", ""))
            .await
            .expect("bob captures")
            .into_inner();
        let mut got = 0;
        while let Some(event) = stream.message().await.expect("bob's stream") {
            if matches!(event.event, Some(pb::capture_event::Event::Snapshot(_))) {
                got += 1;
            }
        }
        assert_eq!(got, 1);
        bob.close_session(close(&other.id, "done"))
            .await
            .expect("bob closes");
        let pending = open(&mut bob, &["payments.charge"]).await;
        carol
            .approve_session(approve(&pending.id))
            .await
            .expect("carol approves");
        carol
            .revoke_session(revoke(&stuck.id))
            .await
            .expect("carol revokes the stuck session");
    };
    tokio::time::timeout(PATIENCE * 3, work)
        .await
        .expect("an unread capture must not hold up other sessions");
    let mut fresh = world.client("alice").await;
    assert_eq!(
        state_of(&mut fresh, &stuck.id).await,
        pb::SessionState::Revoked as i32
    );
    drop(unread);
    assert_log_verifies(&world.deployment, &mut dave, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_refused_for_its_address_is_audited() {
    let world = running().await;
    let mut rogue = world.agent("checkout").await;
    assert_eq!(
        code_of(
            rogue
                .register(pb::RegisterRequest {
                    service: "checkout".into(),
                    instance: "rogue-dns".into(),
                    address: "evil.example:443".into(),
                    version: "6.6.6".into(),
                    mode: pb::AgentMode::InProcess as i32,
                    points: vec![],
                })
                .await
        ),
        Code::InvalidArgument
    );
    let mut dave = world.client("dave").await;
    let refused = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "agent.registered".into(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(
        refused
            .iter()
            .any(|e| e["details"]["instance"] == "rogue-dns"),
        "{refused:?}"
    );
}

/// A TCP listener that accepts connections and never says a word: an agent that hangs.
async fn blackhole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_agent_does_not_stall_other_sessions_transitions() {
    let world = running().await;
    let (address, _hole) = blackhole().await;
    // Another instance of checkout (same service identity) that never answers.
    let mut rogue = world.agent("checkout").await;
    let request = pb::RegisterRequest {
        service: "checkout".into(),
        instance: "hanging-1".into(),
        address,
        version: "6.6.6".into(),
        mode: pb::AgentMode::InProcess as i32,
        points: vec![],
    };
    rogue.register(request.clone()).await.expect("registered");
    let renewing = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = rogue.register(request.clone()).await;
        }
    });
    let mut alice = world.client("alice").await;
    wait_for_instances(&mut alice, "checkout", 2).await;
    let mut bob = world.client("bob").await;
    let mut carol = world.client("carol").await;
    let closing = open(&mut alice, &["checkout.apply_discount"]).await;
    let pending = open(&mut bob, &["payments.charge"]).await;

    // The close has to tell the hanging instance; the approval of bob's session has nothing
    // to do with it and should not wait for it.
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let close_task = {
        let order = std::sync::Arc::clone(&order);
        let id = closing.id.clone();
        tokio::spawn(async move {
            alice
                .close_session(close(&id, "done"))
                .await
                .expect("closes");
            order.lock().expect("order").push("close");
        })
    };
    // Let the close reach the control plane first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    carol
        .approve_session(approve(&pending.id))
        .await
        .expect("approves");
    order.lock().expect("order").push("approve");
    eprintln!("the approval took {:?}", started.elapsed());
    close_task.await.expect("close task");
    renewing.abort();
    assert_eq!(
        *order.lock().expect("order"),
        vec!["approve", "close"],
        "the approval waited for the close's call to a hanging agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_unread_captures_do_not_starve_other_engineers() {
    let deployment = Deployment::new(EXE);
    let control_plane = deployment.start_control_plane();
    let _checkout =
        deployment.start_checkout_with_traffic(&control_plane.address, "checkout-1", 1000);
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    wait_for_instances(&mut alice, "checkout", 1).await;
    // Each unread capture on its own connection, as separate engineers would.
    let mut unread = Vec::new();
    for _ in 0..4 {
        let mut alice = deployment.client(&control_plane.address, "alice").await;
        let session = open(&mut alice, &["checkout.apply_discount"]).await;
        let mut request = capture_request(&session.id, "checkout.apply_discount", "");
        request.max_snapshots = 10_000;
        request.rate_per_second = 1000.0;
        request.timeout_seconds = 0;
        unread.push((alice.capture(request).await.expect("capture starts"), alice));
    }
    // Long enough for the unread streams to fill every buffer and window they can.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let mut bob = deployment.client(&control_plane.address, "bob").await;
    let session = open(&mut bob, &["checkout.apply_discount"]).await;
    let mut request = capture_request(&session.id, "checkout.apply_discount", "");
    request.max_snapshots = 3;
    let mut stream = bob
        .capture(request)
        .await
        .expect("bob's capture starts")
        .into_inner();
    let mut got = 0;
    while let Some(event) = tokio::time::timeout(PATIENCE * 2, stream.message())
        .await
        .expect("bob's capture moves despite the unread ones")
        .expect("bob's stream")
    {
        if matches!(event.event, Some(pb::capture_event::Event::Snapshot(_))) {
            got += 1;
        }
    }
    assert_eq!(got, 3);
    drop(unread);
}

/// A rogue instance of `checkout`: it holds a real checkout agent certificate, so the control
/// plane arms it like any other, and it keeps every token it is sent.
struct RogueAgent {
    tokens: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl pb::agent_server::Agent for RogueAgent {
    async fn describe(
        &self,
        _request: tonic::Request<pb::DescribeRequest>,
    ) -> Result<tonic::Response<pb::DescribeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("rogue"))
    }

    type CaptureStream = tonic::codegen::tokio_stream::Empty<Result<pb::Snapshot, tonic::Status>>;

    async fn capture(
        &self,
        request: tonic::Request<pb::CaptureRequest>,
    ) -> Result<tonic::Response<Self::CaptureStream>, tonic::Status> {
        self.tokens
            .lock()
            .expect("tokens")
            .push(request.into_inner().token);
        Err(tonic::Status::unavailable("rogue keeps the token"))
    }

    async fn revoke_session(
        &self,
        _request: tonic::Request<pb::RevokeSessionRequest>,
    ) -> Result<tonic::Response<pb::RevokeSessionResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::RevokeSessionResponse::default()))
    }
}

/// The claims of a compact JWS, decoded (base64url without padding).
fn claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("three parts");
    let mut bits = 0u32;
    let mut count = 0;
    let mut bytes = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        };
        bits = (bits << 6) | u32::from(v);
        count += 6;
        if count >= 8 {
            count -= 8;
            bytes.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    serde_json::from_slice(&bytes).expect("claims JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_handed_to_a_rogue_instance_is_narrow_and_useless_elsewhere() {
    let world = running().await;
    let paths = world
        .deployment
        .pki
        .tls_paths(&world.deployment.pki.agent("checkout"));
    let server_tls = loupe_trust::tls::ReloadingServerTls::load(paths).expect("server TLS");
    let config = server_tls.server_config().expect("server config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let incoming = loupe_trust::accept::tls_incoming(listener, config, stop_rx, "rogue agent");
    let tokens = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let service = pb::agent_server::AgentServer::new(RogueAgent {
        tokens: std::sync::Arc::clone(&tokens),
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );

    let mut rogue = world.agent("checkout").await;
    let request = pb::RegisterRequest {
        service: "checkout".into(),
        instance: "rogue-1".into(),
        address: address.clone(),
        version: "6.6.6".into(),
        mode: pb::AgentMode::InProcess as i32,
        points: vec![
            pb::PointInfo {
                name: "checkout.apply_discount".into(),
                ..pb::PointInfo::default()
            },
            pb::PointInfo {
                name: "payments.charge".into(),
                ..pb::PointInfo::default()
            },
        ],
    };
    rogue.register(request.clone()).await.expect("registered");
    let renewing = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = rogue.register(request.clone()).await;
        }
    });
    let mut alice = world.client("alice").await;
    wait_for_instances(&mut alice, "checkout", 2).await;
    let session = open(&mut alice, &["checkout.apply_discount"]).await;
    let mut stream = alice
        .capture(capture_request(&session.id, "checkout.apply_discount", ""))
        .await
        .expect("capture starts on the real instance")
        .into_inner();
    while tokio::time::timeout(PATIENCE * 2, stream.message())
        .await
        .expect("the stream moves")
        .expect("the stream does not fail")
        .is_some()
    {}
    let token = tokens
        .lock()
        .expect("tokens")
        .first()
        .cloned()
        .expect("the rogue instance was sent a token");

    // The token names one point, this session, the checkout audience, and is bound to the
    // control plane's certificate; it does not outlive the session.
    let claims = claims(&token);
    assert_eq!(
        claims["points"],
        serde_json::json!(["checkout.apply_discount"])
    );
    assert_eq!(claims["sid"], session.id.as_str());
    assert_eq!(claims["aud"], "loupe-agent/checkout");
    assert!(claims["cnf"]["x5t#S256"].is_string(), "{claims}");
    assert!(claims["exp"].as_i64().expect("exp") <= session.expires_unix);

    // Replayed to the real instance — by the rogue agent or by an engineer — it is refused:
    // the agent serves only the control plane.
    let instances = wait_for_instances(&mut alice, "checkout", 1).await;
    let real = instances
        .iter()
        .find(|i| i.instance == "checkout-1")
        .expect("real instance")
        .address
        .clone();
    let agent_paths = world
        .deployment
        .pki
        .tls_paths(&world.deployment.pki.agent("checkout"));
    let agent_tls = loupe_trust::dial::ClientTls::load(&agent_paths).expect("agent TLS");
    for tls in [agent_tls, world.deployment.user_tls("alice")] {
        let replay = match world.deployment.agent_client(&real, "checkout", &tls).await {
            Err(refused_at_handshake) => Err(refused_at_handshake),
            Ok(mut agent) => agent
                .capture(pb::CaptureRequest {
                    token: token.clone(),
                    point: "checkout.apply_discount".into(),
                    max_snapshots: 1,
                    ..pb::CaptureRequest::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
        };
        let error = replay.expect_err("a replayed token is refused");
        assert!(
            error.contains("PermissionDenied")
                || error.contains("Unauthenticated")
                || error.contains("handshake"),
            "{error}"
        );
    }
    renewing.abort();
    server.abort();
}
