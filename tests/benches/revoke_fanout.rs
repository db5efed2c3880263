//! Revoke-to-stream-end across replicas, over real processes on one throwaway PostgreSQL
//! cluster: three control-plane replicas, a demo checkout instance registered with each, an
//! idle capture held by replica B; security revokes the session through replica A, and the time from sending
//! the revoke to the engineer's stream receiving its end (`SESSION_REVOKED`) is measured.
//!
//! - anchor: the same revoke sent to B itself (the replica holding the stream ends it as it
//!   commits), in the same run, alternating with the measured case;
//! - across replicas: through A, which commits the revoke; B learns of it from the database's
//!   notification (`LISTEN`), or at worst from its sweep twice a second.
//!
//! Budget (issue #14): p99 ≤ 1 s across replicas.
//!
//! `cargo bench -p loupe-tests --bench revoke_fanout` (every sample is needed for the
//! percentiles, which criterion does not report, so this bench prints its own).
//! `LOUPE_BENCH_TRIALS` sets the trials per case (default 20; 3 under `cargo test --benches`).

use std::time::{Duration, Instant};

use loupe_tests::latency::{self, report};
use loupe_tests::pb;
use loupe_tests::replicas::{Replicas, idle_capture, until_armed, until_end};

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");
const A: usize = 0;
const B: usize = 1;

fn main() {
    latency::block_on(run(latency::trials(20, 3)));
}

async fn run(trials: usize) {
    let Some(world) = Replicas::start(EXE, "revoke_fanout", 3, 50).await else {
        return;
    };
    let mut alice = world.client(B, "alice").await;
    let mut security = [
        world.client(A, "carol").await,
        world.client(B, "carol").await,
    ];
    let (mut local, mut across) = (Vec::new(), Vec::new());
    for trial in 0..trials * 2 {
        // Alternate, so that both cases see the same machine.
        let through = if trial % 2 == 0 { B } else { A };
        let taken = revoke_to_end(&mut alice, &mut security[through]).await;
        if through == B {
            local.push(taken);
        } else {
            across.push(taken);
        }
    }
    println!("revoke → capture end, 3 replicas on PostgreSQL, capture held by B:");
    let (_, anchor) = report("revoke through B (anchor)", local);
    let (_, p99) = report("revoke through A (across)", across);
    println!(
        "across/anchor p99 ratio {:.2}; budget p99 ≤ 1000 ms: {}",
        p99.as_secs_f64() / anchor.as_secs_f64().max(f64::MIN_POSITIVE),
        if p99 <= Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// One trial: a session opened and captured through B, revoked through `security`'s replica;
/// the time from sending the revoke to the stream's end.
async fn revoke_to_end(
    alice: &mut loupe_tests::Client,
    security: &mut loupe_tests::Client,
) -> Duration {
    let session = alice
        .open_session(loupe_tests::open_request(
            &["checkout.apply_discount"],
            600,
            "revoke fan-out bench",
        ))
        .await
        .expect("session opens")
        .into_inner()
        .session
        .expect("session");
    let mut stream = alice
        .capture(idle_capture(&session.id))
        .await
        .expect("capture through B")
        .into_inner();
    until_armed(&mut stream).await;
    let sent = Instant::now();
    security
        .revoke_session(pb::AdminRevokeSessionRequest {
            session_id: session.id.clone(),
            reason: "bench".into(),
            request_id: String::new(),
        })
        .await
        .expect("security revokes");
    let end = until_end(&mut stream, Duration::from_secs(30)).await;
    let taken = sent.elapsed();
    assert_eq!(
        end.reason,
        pb::CaptureEndReason::SessionRevoked as i32,
        "{end:?}"
    );
    taken
}
