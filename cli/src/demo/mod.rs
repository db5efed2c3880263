//! The demo checkout service: a small HTTP service with snapshot points and its own synthetic
//! traffic, for the quickstart and for trying Loupe by hand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use loupe_proto::tls::TlsPaths;

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub http_listen: SocketAddr,
    pub agent_listen: SocketAddr,
    pub tls: TlsPaths,
    pub control_plane_address: String,
    pub control_plane_identity: String,
    pub traffic_per_second: f64,
    pub instance: Option<String>,
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
#[error("the demo is not available in this build")]
pub struct DemoError;

pub fn run(_options: DemoOptions, _stop: Arc<AtomicBool>) -> Result<(), DemoError> {
    Err(DemoError)
}
