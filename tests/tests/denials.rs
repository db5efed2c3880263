//! What a refusal tells the refused: an `OpenSession` denial names no point a pattern expanded
//! to unless the caller may list the service's points, while the audit log keeps the whole
//! reason. Real processes over real mTLS, with one extra policy that lets erin (no group) open
//! sessions on `checkout.` points only.

use loupe_tests::{Deployment, assert_status, audit_events, open_request, pb, wait_for_instances};
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

const ERIN_CHECKOUT: &str = r#"
@id("test-erin-opens-checkout")
permit (
  principal == User::"spiffe://loupe.dev/user/erin",
  action == Action::"OpenSession",
  resource in Namespace::"checkout"
);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_names_no_points_to_whoever_may_not_list_them() {
    let deployment = Deployment::new(EXE);
    std::fs::write(deployment.policy_dir.join("erin.cedar"), ERIN_CHECKOUT).expect("policy");
    let control_plane = deployment.start_control_plane();
    let _checkout = deployment.start_checkout(&control_plane.address, "checkout-1");
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    wait_for_instances(&mut alice, "checkout", 1).await;
    // The demo's points under `payments.`.
    let payments = ["payments.charge", "payments.refund"];

    let mut erin = deployment.client(&control_plane.address, "erin").await;
    let list = pb::ListPointsRequest {
        service: "checkout".into(),
        page_size: 0,
        page_token: String::new(),
    };
    assert_status(erin.list_points(list).await, Code::PermissionDenied, "");
    let refused = erin
        .open_session(open_request(&["checkout.*", "payments.*"], 300, "look"))
        .await
        .expect_err("payments points are refused to erin");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    for point in payments {
        assert!(
            !refused.message().contains(point),
            "the denial teaches erin `{point}`: {}",
            refused.message()
        );
    }
    assert!(
        refused.message().contains("patterns"),
        "{}",
        refused.message()
    );

    // A point erin names herself is no news: the reason may name it.
    let named = payments[0];
    let refused = erin
        .open_session(open_request(&["checkout.*", named], 300, "look"))
        .await
        .expect_err("refused");
    assert!(refused.message().contains(named), "{}", refused.message());

    // The log keeps the whole reason for the reviewer.
    let mut dave = deployment.client(&control_plane.address, "dave").await;
    let events = audit_events(&mut dave, pb::QueryAuditRequest::default()).await;
    let logged = events
        .iter()
        .filter(|e| e["action"] == "session.requested" && e["decision"]["outcome"] != "allow")
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
    assert!(
        logged
            .iter()
            .any(|e| payments.iter().all(|p| e.contains(p))),
        "{logged:?}"
    );
}
