//! Liveness and readiness for supervisors and load balancers, on a listener of their own
//! (`health_listen`, off unless configured).
//!
//! - `GET /healthz` — 200 while the process serves. It does not look at the database: a
//!   replica whose database is down keeps running, refusing decisions, and recovers by itself;
//!   restarting it would gain nothing.
//! - `GET /readyz` — 200 only if the audit database answers a read now (one round trip,
//!   bounded by [`PROBE_TIMEOUT`]), 503 otherwise and once stopping began: a replica that
//!   cannot reach its database can decide nothing, so traffic should go to one that can.
//!
//! **Plain HTTP, on purpose.** The gRPC port takes only mTLS clients, and probes (kubelet, a
//! load balancer) present no client certificate. As Teleport's `diag_addr` does, the probes
//! get their own address that serves nothing but these two answers — no data, no identities,
//! no error details (those go to the log). Bind it where only the supervisor reaches it (the
//! pod network, or loopback for systemd).
//!
//! The responder is deliberately tiny: one request per connection, the request line read
//! with a bounded size and time, a fixed answer, close. At most [`MAX_PROBES`] probes run at
//! once; past that a connection is closed unanswered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::audit::ReadError;

/// Asks the audit storage for one read (see [`crate::audit::AuditLog::reachable`]).
pub type Probe = Arc<dyn Fn() -> Result<(), ReadError> + Send + Sync>;

/// Longest a readiness check waits for the database.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read.
const MAX_REQUEST: usize = 1024;
/// Probes answered at once.
const MAX_PROBES: usize = 8;

/// Binds `address` and answers probes, asking `probe` whether the database answers; once
/// `stopping` turns true, not ready. Returns the bound address.
pub async fn serve(
    address: SocketAddr,
    probe: Probe,
    stopping: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let probes = Arc::new(Semaphore::new(MAX_PROBES));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = probes.clone().try_acquire_owned() else {
                continue;
            };
            let (probe, stopping) = (probe.clone(), stopping.clone());
            tokio::spawn(async move {
                answer(stream, &probe, &stopping).await;
                drop(permit);
            });
        }
    });
    Ok(local)
}

/// Reads one request and writes its answer.
async fn answer(mut stream: TcpStream, probe: &Probe, stopping: &watch::Receiver<bool>) {
    let path = match tokio::time::timeout(REQUEST_TIMEOUT, request_path(&mut stream)).await {
        Ok(Ok(Some(path))) => path,
        _ => return,
    };
    let (status, body) = match path.as_str() {
        "/healthz" => (200, "ok"),
        "/readyz" if *stopping.borrow() => (503, "not ready: stopping"),
        "/readyz" => match database_answers(probe).await {
            true => (200, "ready"),
            false => (503, "not ready: the audit database does not answer"),
        },
        _ => (404, "not found: /healthz or /readyz"),
    };
    let reason = match status {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\ncache-control: no-store\r\n\r\n{body}\n",
        body.len() + 1
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The path of a `GET` request, once its head has arrived; `None` for anything else.
async fn request_path(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(path)) => Ok(Some(path.to_owned())),
        _ => Ok(None),
    }
}

/// Whether the audit database answered a read within [`PROBE_TIMEOUT`].
async fn database_answers(probe: &Probe) -> bool {
    let probe = probe.clone();
    let read = tokio::task::spawn_blocking(move || probe());
    match tokio::time::timeout(PROBE_TIMEOUT, read).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "readiness: the audit database does not answer");
            false
        }
        Ok(Err(_)) | Err(_) => {
            tracing::warn!("readiness: the audit database did not answer in time");
            false
        }
    }
}
