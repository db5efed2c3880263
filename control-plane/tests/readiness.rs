//! The probes of `health_listen` over a real socket, for a log on the throwaway PostgreSQL
//! cluster (see `pg/mod.rs`): `/readyz` follows the database — ready while it answers, not
//! ready while it is stopped, ready again once it is back, with the same log — while
//! `/healthz` stays 200; stopping makes the replica not ready. A binary of its own: it stops
//! its cluster.

mod backend;
mod fixture;
mod pg;
mod probe;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use backend::Backend;
use loupe_control_plane::health::{self, Probe};
use probe::{eventually, get};

/// Serves the probes on a free loopback port with `probe`; the runtime must outlive them.
fn serve(
    runtime: &tokio::runtime::Runtime,
    probe: Probe,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> SocketAddr {
    runtime
        .block_on(health::serve(
            "127.0.0.1:0".parse().expect("address"),
            probe,
            stopping,
        ))
        .expect("serve")
}

#[test]
fn readiness_follows_the_database_and_liveness_does_not() {
    let Some(backend) = Backend::postgres("readiness_follows_the_database") else {
        return;
    };
    let log = Arc::new(backend.open());
    log.append_blocking(fixture::event(0)).expect("append");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let probe: Probe = {
        let log = log.clone();
        Arc::new(move || log.reachable())
    };
    let address = serve(&runtime, probe, stopping);

    assert_eq!(get(address, "/readyz"), 200);
    assert_eq!(get(address, "/healthz"), 200);
    assert_eq!(get(address, "/metrics"), 404);

    pg::cluster().stop();
    assert_eq!(get(address, "/readyz"), 503, "ready with the database down");
    assert_eq!(get(address, "/healthz"), 200, "liveness must not follow it");

    pg::cluster().restart();
    eventually(address, "/readyz", 200);
    log.append_blocking(fixture::event(1))
        .expect("the same log appends again");

    stop.send(true).expect("stop");
    assert_eq!(get(address, "/readyz"), 503, "ready while stopping");
    assert_eq!(get(address, "/healthz"), 200);
    log.close().expect("close");
}

#[test]
fn a_request_that_is_not_a_probe_gets_no_answer_but_the_next_probe_does() {
    let probe: Probe = Arc::new(|| Ok(()));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let address = serve(&runtime, probe, stopping);
    // A request head past the bound: closed unanswered.
    let mut stream = TcpStream::connect(address).expect("connect");
    let _ = stream.write_all(&[b'a'; 4096]);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(
        response.is_empty(),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert_eq!(get(address, "/readyz"), 200);
}
