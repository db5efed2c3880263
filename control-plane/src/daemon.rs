//! The `loupe-control-plane` process: flags and configuration, logs, the runtime, signals.
//!
//! Start-up checks everything (configuration, certificates, keys, policies, the audit log's
//! integrity) before it listens, and exits with a message naming what is wrong. Once listening
//! it prints one line, `loupe-control-plane ready listen=<addr>` (and `health=<addr>` where the
//! probes are served, see [`crate::health`]), for supervisors and scripts.
//! `migrate` and `verify` are one-shot commands for operators (see [`crate::admin`]).
//! SIGHUP rereads the policies; SIGTERM or SIGINT stop: new connections are refused, live
//! captures and follows end with their reason, the audit log signs a final checkpoint.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::admin;
use crate::config::{Config, Flags};
use crate::health;
use crate::server::{self, ControlPlane};
use loupe_proto::ready::{self, ReadyLine};

use crate::exit_code::{EXIT_CONFIG, EXIT_FAILURE};
/// How long stopping waits for connections to finish before closing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Loupe's control plane: sessions, policy, tokens, agent registry, capture brokering and the
/// tamper-evident audit log, served over mTLS.
#[derive(Debug, Parser)]
#[command(name = "loupe-control-plane", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Without a command: serve.
    #[command(subcommand)]
    command: Option<admin::Command>,
    #[command(flatten)]
    flags: Flags,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `loupe_control_plane=debug`.
    #[arg(long, env = "LOUPE_LOG", default_value = "info")]
    log: String,
}

/// Runs the control plane with `args` (the first is the program name) until SIGTERM.
pub fn run_from_args<I: IntoIterator<Item = OsString>>(args: I) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logs(cli.log_format, &cli.log);
    if let Some(command) = cli.command {
        return admin::run(command);
    }
    let config = match Config::load(&cli.flags) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("loupe-control-plane: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("loupe-control-plane")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loupe-control-plane: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(serve(config))
}

fn init_logs(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn serve(config: Config) -> ExitCode {
    let (stop, stopped) = watch::channel(false);
    let listen = config.listen;
    let state = match tokio::task::block_in_place(|| ControlPlane::open(config, stopped)) {
        Ok(state) => state,
        Err(error) => {
            eprintln!("loupe-control-plane: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let running = match server::start(state).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("loupe-control-plane: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let health = match start_health(&running, stop.subscribe()).await {
        Ok(health) => health,
        Err(error) => {
            eprintln!("loupe-control-plane: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(listen = %running.local_addr, configured = %listen, "control plane ready");
    // An address never contains whitespace, so the line is always well-formed.
    let line = ReadyLine::new(ready::CONTROL_PLANE)
        .and_then(|l| l.with("listen", running.local_addr))
        .and_then(|l| match health {
            Some(address) => l.with("health", address),
            None => Ok(l),
        });
    if let Ok(ready) = line {
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "{ready}");
        let _ = stdout.flush();
    }

    let (Ok(mut terminate), Ok(mut interrupt), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("loupe-control-plane: cannot install signal handlers");
        return ExitCode::from(EXIT_FAILURE);
    };
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => server::reload::reload_policy(&running.state, "SIGHUP").await,
        }
    }
    tracing::info!("stopping: ending streams, signing the final checkpoint");
    let _ = stop.send(true);
    let server::Running { state, server, .. } = running;
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    close_audit(state)
}

/// Serves the probes where the configuration says (see [`health`]); returns their address.
async fn start_health(
    running: &server::Running,
    stopping: watch::Receiver<bool>,
) -> Result<Option<std::net::SocketAddr>, String> {
    let Some(address) = running.state.config.health_listen else {
        return Ok(None);
    };
    let state = running.state.clone();
    let probe: health::Probe = Arc::new(move || state.audit.reachable());
    health::serve(address, probe, stopping)
        .await
        .map(Some)
        .map_err(|e| format!("health_listen {address}: {e}"))
}

fn close_audit(state: Arc<ControlPlane>) -> ExitCode {
    // The state is let go off the runtime too: it holds blocking database clients (PostgreSQL),
    // which cannot be dropped inside it.
    tokio::task::block_in_place(move || match state.audit.close() {
        Ok(()) => {
            tracing::info!(
                events = state.audit.size(),
                "audit log closed with a final checkpoint"
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "the final checkpoint could not be written");
            ExitCode::from(EXIT_FAILURE)
        }
    })
}
