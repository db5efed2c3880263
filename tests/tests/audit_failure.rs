//! Fail closed, end to end: the control plane's data directory is a small tmpfs; once a file
//! has filled it, the audit log cannot record, and sessions are refused with UNAVAILABLE saying
//! so — none is created unrecorded. When space returns, sessions open again. A policy reload
//! that cannot be recorded does not take effect. And session state cannot fail apart from the
//! log: it is stored in the same database, in the same transaction.
//!
//! Mounting needs root. Without it the test says so and returns — unless
//! `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (as in CI), where being unable to mount is a failure.

use std::process::Command;
use std::time::Duration;

use loupe_tests::{
    Deployment, actions, audit_events, fill_up, mount_tmpfs, open_request, pb, wait_for_instances,
};
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_log_refuses_sessions() {
    let deployment = Deployment::new(EXE);
    let Some(_mount) = mount_tmpfs(&deployment.data_dir) else {
        return;
    };
    let control_plane = deployment.start_control_plane();
    let _checkout = deployment.start_checkout(&control_plane.address, "checkout-1");
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    wait_for_instances(&mut alice, "checkout", 1).await;
    let request = pb::OpenSessionRequest {
        service: "checkout".into(),
        points: vec!["checkout.apply_discount".into()],
        ttl_seconds: 300,
        reason: "INC-77 ".repeat(100),
        ticket: String::new(),
        request_id: String::new(),
    };
    alice
        .open_session(request.clone())
        .await
        .expect("sessions open while the log can write");

    let filler = deployment.data_dir.join("filler");
    fill_up(&filler);
    // SQLite may still reuse space inside its journal for a few commits; the first append that
    // needs new space fails, and from then on every session is refused.
    let mut opened_after_fill = 0;
    let refusal = loop {
        match alice.open_session(request.clone()).await {
            Ok(_) => opened_after_fill += 1,
            Err(status) => break status,
        }
        assert!(
            opened_after_fill < 500,
            "the log never reported the full disk"
        );
    };
    assert_eq!(refusal.code(), Code::Unavailable, "{refusal:?}");
    assert!(
        refusal.message().contains("audit log is failing"),
        "{refusal:?}"
    );
    for _ in 0..3 {
        let again = alice
            .open_session(request.clone())
            .await
            .expect_err("still refused");
        assert_eq!(again.code(), Code::Unavailable);
    }
    let sessions = alice
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .expect("reads need no audit record")
        .into_inner()
        .sessions;
    assert_eq!(
        sessions.len(),
        1 + opened_after_fill,
        "no session exists unrecorded"
    );

    std::fs::remove_file(&filler).expect("free the space");
    let reopened = alice.open_session(request).await.expect("the log recovers");
    assert!(reopened.into_inner().session.is_some());
}

/// Earlier versions kept sessions in `state.sqlite`, a database of its own; when it could not
/// grow while the log still could, a revoke was recorded as allowed, answered `Internal`, and
/// the session stayed active. Here that file lives on a full tmpfs (a symlink from the data
/// directory), and every transition must still succeed and be what the log says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_cannot_fail_apart_from_the_log() {
    let deployment = Deployment::new(EXE);
    let elsewhere = deployment.dir.path().join("state-disk");
    let Some(_mount) = mount_tmpfs(&elsewhere) else {
        return;
    };
    std::fs::create_dir_all(&deployment.data_dir).expect("data dir");
    // An (empty) session database of the earlier layout, on its own small disk.
    let legacy = elsewhere.join("state.sqlite");
    let created = Command::new("sqlite3").arg(&legacy).arg(
        "PRAGMA journal_mode=WAL; CREATE TABLE sessions (id TEXT PRIMARY KEY, requester TEXT NOT NULL, service TEXT NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL);",
    ).status();
    if !matches!(created, Ok(s) if s.success()) {
        eprintln!("SKIPPED: the sqlite3 shell is needed to build the earlier layout");
        return;
    }
    std::os::unix::fs::symlink(&legacy, deployment.data_dir.join("state.sqlite")).expect("link");
    let control_plane = deployment.start_control_plane();
    let _checkout = deployment.start_checkout(&control_plane.address, "checkout-1");
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    let mut carol = deployment.client(&control_plane.address, "carol").await;
    wait_for_instances(&mut alice, "checkout", 1).await;
    fill_up(&elsewhere.join("filler"));
    for _ in 0..5 {
        let session = alice
            .open_session(open_request(&["checkout.apply_discount"], 300, "INC-5"))
            .await
            .expect("opens: the log can record it")
            .into_inner()
            .session
            .expect("session");
        let revoked = carol
            .revoke_session(pb::AdminRevokeSessionRequest {
                session_id: session.id.clone(),
                reason: "drill".into(),
                ..Default::default()
            })
            .await
            .expect("revokes: the log can record it")
            .into_inner()
            .session
            .expect("session");
        assert_eq!(revoked.state, pb::SessionState::Revoked as i32);
        let listed = alice
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .sessions;
        let now = listed.iter().find(|s| s.id == session.id).expect("listed");
        assert_eq!(
            now.state,
            pb::SessionState::Revoked as i32,
            "revoked in the log, not in the state"
        );
    }
}

/// A policy reload is recorded before it takes effect; one that cannot be recorded does not
/// take effect at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_the_log_cannot_record_does_not_take_effect() {
    let deployment = Deployment::new(EXE);
    let Some(_mount) = mount_tmpfs(&deployment.data_dir) else {
        return;
    };
    let control_plane = deployment.start_control_plane();
    let _checkout = deployment.start_checkout(&control_plane.address, "checkout-1");
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    let mut dave = deployment.client(&control_plane.address, "dave").await;
    wait_for_instances(&mut alice, "checkout", 1).await;
    let request = open_request(&["checkout.apply_discount"], 300, "INC-9");
    alice.open_session(request.clone()).await.expect("opens");

    let filler = deployment.data_dir.join("filler");
    fill_up(&filler);
    // Use up whatever space SQLite can still reuse, until the log refuses.
    let mut tries = 0;
    while alice.open_session(request.clone()).await.is_ok() {
        tries += 1;
        assert!(tries < 500, "the log never reported the full disk");
    }
    std::fs::write(
        deployment.policy_dir.join("zz-freeze.cedar"),
        "@id(\"change-freeze\")\n@reason(\"change freeze: no new sessions\")\nforbid (principal, action == Action::\"OpenSession\", resource);\n",
    )
    .expect("new policy");
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(control_plane.pid().to_string())
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    // The file watcher notices the change too (every 2 s): give both time to try.
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::fs::remove_file(&filler).expect("free the space");

    alice
        .open_session(request.clone())
        .await
        .expect("the freeze was never recorded, so it is not in force");
    let loaded = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "policy.loaded".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        actions(&loaded),
        vec!["policy.loaded"],
        "only the start is recorded"
    );

    // Once it can be recorded, the reload is recorded and takes effect.
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(control_plane.pid().to_string())
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    loupe_tests::eventually("the freeze in force", || {
        let mut alice = alice.clone();
        let request = request.clone();
        async move {
            match alice.open_session(request).await {
                Err(status) if status.code() == Code::PermissionDenied => Some(()),
                _ => None,
            }
        }
    })
    .await;
    let loaded = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "policy.loaded".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(loaded.len(), 2, "{loaded:?}");
}
