//! What each command does. Every command gets a [`Context`] (the resolved settings and the
//! output decision) and returns the exit code on success or a [`CliError`].

pub mod audit;
pub mod capture;
pub mod completions;
pub mod control_plane;
pub mod demo;
pub mod pki;
pub mod quickstart;
pub mod services;
pub mod session;
pub mod sidecar;

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::Command;
use crate::client::{self, Connection};
use crate::config::Settings;
use crate::error::CliError;
use crate::output::Output;

/// What every command runs with.
#[derive(Debug, Clone)]
pub struct Context {
    pub settings: Settings,
    pub output: Output,
    pub connect_timeout: Duration,
    /// Where the reviewer's kept checkpoints live (see [`crate::witness::state_dir`]).
    pub state_dir: Option<PathBuf>,
}

/// The token of the page after the one requested with `previous`: `None` when the listing is
/// complete. A control plane that hands back the token it was given would page forever; that
/// is an error, not a loop.
pub fn next_page(previous: &str, next: String) -> Result<Option<String>, CliError> {
    if next.is_empty() {
        Ok(None)
    } else if next == previous {
        Err(CliError::Other(
            "the control plane returned the same page token twice; the listing is incomplete"
                .to_owned(),
        ))
    } else {
        Ok(Some(next))
    }
}

impl Context {
    /// Connects to the configured control plane.
    pub async fn connect(&self) -> Result<Connection, CliError> {
        client::connect(&self.settings, self.connect_timeout).await
    }
}

/// Runs one command. `control-plane` and `completions` also run before settings are resolved
/// (see [`crate::run`]), so a broken CLI config never stops them.
pub fn run(context: &Context, command: Command) -> Result<u8, CliError> {
    match command {
        Command::Services => client::runtime()?.block_on(services::services(context)),
        Command::Points { service } => {
            client::runtime()?.block_on(services::points(context, &service))
        }
        Command::Session(command) => client::runtime()?.block_on(session::run(context, command)),
        Command::Capture(args) => client::runtime()?.block_on(capture::run(context, args)),
        Command::Audit(command) => audit::run(context, command),
        Command::Pki(command) => pki::run(context, command),
        Command::Demo(command) => demo::run(context, command),
        Command::Quickstart(args) => quickstart::run(context, args),
        Command::Completions { shell } => completions::run(shell),
        // Handled before settings exist (see `crate::run`); unreachable here.
        Command::ControlPlane { .. } => Err(CliError::Other(
            "internal: control-plane is run before settings are resolved".into(),
        )),
        Command::Sidecar { .. } => Err(CliError::Other(
            "internal: sidecar is run before settings are resolved".into(),
        )),
    }
}

/// `AGENT_MODE_IN_PROCESS` → `in-process`: a protobuf enum name for people.
pub fn enum_label(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// A fresh request id, so the audit log can correlate this command's calls.
pub fn request_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cli-{:x}-{:x}", std::process::id(), nanos)
}
