//! Accepting mTLS connections for a tonic server.
//!
//! The handshake runs on its own task with a deadline, so a slow or silent peer costs a task
//! for a few seconds and never stalls the accept loop. Accepted streams are handed to the
//! server through a bounded channel: when the server is not taking connections, the loop stops
//! accepting rather than piling handshakes up.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a peer has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server.
const PENDING_CONNECTIONS: usize = 64;

/// Connections accepted on `listener` and handshaken with `config`, until `shutdown` turns
/// true. Spawns onto the current Tokio runtime. `who` names the server in logs.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
    who: &'static str,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (connections_tx, connections_rx) = tokio::sync::mpsc::channel(PENDING_CONNECTIONS);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "{who}: accept failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Snapshots are small writes that must leave at once; with Nagle's algorithm a
            // write waits for the peer's delayed ACK (40 ms on Linux) whenever one is in flight.
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, %error, "{who}: cannot disable Nagle's algorithm");
            }
            let acceptor = acceptor.clone();
            let connections_tx = connections_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = connections_tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => {
                        tracing::info!(%peer, %error, "{who}: TLS handshake refused");
                    }
                    Err(_) => tracing::info!(%peer, "{who}: TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(connections_rx)
}
