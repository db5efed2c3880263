//! The warm pass runs, on each core it warms, the `tracing` lookup a hit's span walk runs, for
//! the innermost span of a recent snapshot (`capture::warm::rehearse`): the agent's thread
//! finds the host's subscriber as the global default, looks the span up, and the host's
//! spans and snapshots are as they were. Its own test binary: it installs the process's
//! global subscriber.

mod support;

use std::time::Duration;

use loupe_agent::capture::warm;
use loupe_agent::{CaptureSpec, RateLimit, snapshot};
use support::*;
use tracing_subscriber::layer::SubscriberExt;

fn charge(amount: u64) {
    snapshot!("rehearsal.charge", amount);
}

#[test]
fn a_pass_looks_up_the_span_of_a_recent_snapshot() {
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s-rehearsal", "rehearsal.charge")
            .rate(RateLimit {
                per_second: 1_000.0,
                burst: 100,
            })
            .max_snapshots(2),
    )
    .expect("armed");
    let before = warm::span_lookups();
    tracing::info_span!("request", request_id = "r-1").in_scope(|| charge(1));
    assert!(
        wait_for(Duration::from_secs(2), || warm::span_lookups() > before),
        "the agent's thread looked up the snapshot's span on a tick"
    );
    tracing::info_span!("request", request_id = "r-2").in_scope(|| charge(2));
    let ids: Vec<_> = drain(&mut stream).iter().map(request_id).collect();
    assert_eq!(ids, [Some("r-1".to_owned()), Some("r-2".to_owned())]);
}
