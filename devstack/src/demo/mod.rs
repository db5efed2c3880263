//! The demo checkout service: a small HTTP service with snapshot points and its own synthetic
//! traffic, for the quickstart and for trying Loupe by hand.
//!
//! [`run`] binds the HTTP port, starts the in-process Loupe agent (which registers with the
//! control plane and takes its token keys from there), starts the server and the traffic, and
//! prints one line — `checkout ready http=<addr> agent=<addr> instance=<id>` — so a parent
//! process learns the actual ports even when it asked for port 0. Everything else it says goes
//! to stderr through `tracing`.
//!
//! - [`server`]: axum on its own tokio runtime, with a request id and `tower-http`'s
//!   `TraceLayer` — what an axum service already has — so each request runs in a `request`
//!   span whose `request_id` reaches snapshots as `ctx.request_id`.
//! - [`checkout`]: the handlers and the snapshot points.
//! - [`order`]: the order types and the generator of varied orders.
//! - [`traffic`]: the synthetic client.
//!
//! For the host-overhead benchmark only (`benches/host_overhead.sh`),
//! [`DemoOptions::without_agent`] serves the same routes with no agent started and no
//! `CorrelationLayer`: the "no Loupe" baseline the other configurations are compared against.
//! The `snapshot!` sites stay compiled in, disarmed (a relaxed load and a branch each).

pub mod checkout;
pub mod order;
pub mod server;
pub mod traffic;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use loupe_agent::capture::spec::default_instance_id;
use loupe_agent::{Agent, AgentHandle, CorrelationLayer, StartError};
use loupe_proto::ready::ReadyLine;
use loupe_trust::tls::TlsPaths;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Dispatch, Level, Metadata};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

use server::HttpServer;
use traffic::Traffic;

/// The service name the demo registers; its agent certificate must name it
/// (`spiffe://<trust-domain>/agent/checkout`).
pub const SERVICE: &str = "checkout";

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The checkout's HTTP address (port 0 for any).
    pub http_listen: SocketAddr,
    /// The Loupe agent's gRPC address (port 0 for any); the control plane dials it.
    pub agent_listen: SocketAddr,
    /// The agent's certificate (an agent identity for `checkout`), key and CA.
    pub tls: TlsPaths,
    /// The control plane's `host:port`.
    pub control_plane_address: String,
    /// The identity the control plane's certificate must name.
    pub control_plane_identity: String,
    /// Synthetic checkouts per second sent to the service itself; 0 for none.
    pub traffic_per_second: u32,
    /// The instance id (default: hostname-pid).
    pub instance: Option<String>,
    /// Bench only: serve without starting the agent or recording span fields (the baseline of
    /// `benches/host_overhead.sh`). The TLS and control-plane options are then unused.
    pub without_agent: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the Loupe agent (listening on {addr}): {source}")]
    Agent {
        addr: SocketAddr,
        source: StartError,
    },
    #[error("cannot start the checkout's runtime or threads: {0}")]
    Thread(std::io::Error),
    #[error("cannot write the ready line to stdout: {0}")]
    Stdout(std::io::Error),
    #[error("cannot announce the checkout (give an --instance without spaces): {0}")]
    ReadyLine(loupe_proto::ready::ReadyLineError),
}

/// Runs the demo until `stop` is set. Returns once everything it started has stopped.
pub fn run(options: DemoOptions, stop: Arc<AtomicBool>) -> Result<(), DemoError> {
    let dispatch = dispatch(!options.without_agent);
    // The agent's own thread logs through the global subscriber; a host that installed its own
    // keeps it (the demo's runtime threads use the demo's either way, so `ctx` always works).
    let _ = tracing::dispatcher::set_global_default(dispatch.clone());

    let listener = TcpListener::bind(options.http_listen).map_err(|source| DemoError::Bind {
        addr: options.http_listen,
        source,
    })?;
    let instance = options.instance.clone().unwrap_or_else(default_instance_id);
    let agent = if options.without_agent {
        None
    } else {
        Some(start_agent(&options, &instance)?)
    };
    let mut server = HttpServer::start(listener, dispatch).map_err(DemoError::Thread)?;
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let mut traffic = Traffic::start(
        server.local_addr(),
        options.traffic_per_second,
        Arc::clone(&traffic_stop),
    )
    .map_err(DemoError::Thread)?;

    let agent_addr = agent
        .as_ref()
        .map_or_else(|| "none".to_owned(), |agent| agent.local_addr().to_string());
    let ready = ReadyLine::new(crate::stack::CHECKOUT)
        .and_then(|line| line.with("http", server.local_addr()))
        .and_then(|line| line.with("agent", &agent_addr))
        .and_then(|line| line.with("instance", &instance));
    let announced = ready.map_err(DemoError::ReadyLine).and_then(|ready| {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{ready}")
            .and_then(|()| stdout.flush())
            .map_err(DemoError::Stdout)
    });
    if let Err(error) = announced {
        traffic_stop.store(true, Ordering::Relaxed);
        traffic.join();
        return Err(error);
    }
    tracing::info!(
        http = %server.local_addr(),
        agent = %agent_addr,
        %instance,
        control_plane = %options.control_plane_address,
        "checkout demo running"
    );

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    traffic_stop.store(true, Ordering::Relaxed);
    traffic.join();
    server.stop();
    drop(agent);
    Ok(())
}

/// Starts the in-process agent: it registers with the control plane and takes its token keys
/// from there.
fn start_agent(options: &DemoOptions, instance: &str) -> Result<AgentHandle, DemoError> {
    let mut agent = Agent::builder()
        .service(SERVICE)
        .instance(instance)
        .listen(options.agent_listen)
        .tls(&options.tls.cert, &options.tls.key, &options.tls.ca)
        .control_plane(options.control_plane_identity.clone())
        .control_plane_address(options.control_plane_address.clone());
    if let Some(crl) = &options.tls.crl {
        agent = agent.crl(crl);
    }
    agent.start().map_err(|source| DemoError::Agent {
        addr: options.agent_listen,
        source,
    })
}

/// The demo's tracing: spans' fields kept for Loupe's correlation context (unless `correlate`
/// is false: the benchmark's baseline), events at INFO and above printed to stderr (stdout
/// carries only the ready line).
pub fn dispatch(correlate: bool) -> Dispatch {
    Dispatch::new(
        tracing_subscriber::registry()
            .with(correlate.then(CorrelationLayer::new))
            .with(StderrLog),
    )
}

/// Prints events at INFO and above as `LEVEL target: message key=value…` lines.
struct StderrLog;

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StderrLog {
    /// Events below INFO are never built (`TraceLayer` emits two DEBUG events per request);
    /// spans of every level are kept, for the correlation context.
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_event() && *meta.level() > Level::INFO {
            Interest::never()
        } else {
            Interest::always()
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO {
            return;
        }
        let mut line = Line(format!("{} {}:", meta.level(), meta.target()));
        event.record(&mut line);
        let _ = writeln!(std::io::stderr().lock(), "{}", line.0);
    }
}

#[cfg(test)]
mod tests;
