//! The warm pass runs, on each core it warms, the `tracing` code a hit's span walk runs on its
//! way to the registry (`capture::warm`): the agent's thread finds the host's subscriber as
//! the global default, and the host's spans and snapshots are as they were. Its own test
//! binary: it installs the process's global subscriber. The pass exists on Linux on x86_64.

#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;

use std::time::Duration;

use loupe_agent::capture::warm;
use loupe_agent::{CaptureSpec, snapshot};
use support::*;
use tracing_subscriber::layer::SubscriberExt;

fn charge(amount: u64) {
    snapshot!("rehearsal.charge", amount);
}

#[test]
fn a_pass_runs_tracings_way_to_the_hosts_registry() {
    let subscriber = tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new());
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    let mut stream = loupe_agent::arm(
        unthrottled(CaptureSpec::new("s-rehearsal", "rehearsal.charge")).max_snapshots(2),
    )
    .expect("armed");
    let before = warm::registry_rehearsals();
    tracing::info_span!("request", request_id = "r-1").in_scope(|| charge(1));
    assert!(
        wait_for(Duration::from_secs(2), || warm::registry_rehearsals()
            > before),
        "the agent's thread reached the host's registry on a tick"
    );
    tracing::info_span!("request", request_id = "r-2").in_scope(|| charge(2));
    let ids: Vec<_> = drain(&mut stream).iter().map(request_id).collect();
    assert_eq!(ids, [Some("r-1".to_owned()), Some("r-2".to_owned())]);
}
