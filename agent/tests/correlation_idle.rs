//! The correlation layer copies span fields only while some capture is armed: a span opened
//! while nothing is armed carries no fields (it costs the host nothing), and spans opened after
//! arming carry theirs. One test in its own process, because "nothing armed" is process-wide.

mod support;

use loupe_agent::{CaptureSpec, snapshot};
use support::*;
use tracing_subscriber::layer::SubscriberExt;

fn charge(amount: u64) {
    snapshot!("idle.charge", amount);
}

#[test]
fn span_fields_are_copied_only_while_something_is_armed() {
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    tracing::subscriber::with_default(subscriber, || {
        let before = tracing::info_span!("request", request_id = "r-before");
        let mut stream =
            loupe_agent::arm(unthrottled(CaptureSpec::new("s", "idle.charge")).max_snapshots(2))
                .expect("armed");
        before.in_scope(|| charge(1));
        tracing::info_span!("request", request_id = "r-after").in_scope(|| charge(2));
        let snapshots = drain(&mut stream);
        assert_eq!(snapshots.len(), 2);
        assert_eq!(
            request_id(&snapshots[0]),
            None,
            "opened before arming: nothing was copied"
        );
        assert_eq!(request_id(&snapshots[1]).as_deref(), Some("r-after"));
    });
}
