//! Fail closed, end to end: the control plane's data directory is a small tmpfs; once a file
//! has filled it, the audit log cannot record, and sessions are refused with UNAVAILABLE saying
//! so — none is created unrecorded. When space returns, sessions open again.
//!
//! Mounting needs root. Without it the test says so and returns — unless
//! `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (as in CI), where being unable to mount is a failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use loupe_tests::{Deployment, pb, wait_for_instances};
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path) -> Option<Mount> {
    std::fs::create_dir_all(at).expect("mount point");
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "loupe-e2e-audit"])
        .arg(at)
        .status();
    match status {
        Ok(s) if s.success() => Some(Mount(at.to_owned())),
        other => {
            let why = format!("cannot mount a tmpfs at {} ({other:?})", at.display());
            if std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1") {
                panic!("{why}, and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 requires this test to run");
            }
            eprintln!("SKIPPED the audit-failure test: {why}; run as root to include it");
            None
        }
    }
}

fn fill_up(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the tmpfs failed unexpectedly: {e}"),
        }
    }
}

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
