//! The `loupe` command: what engineers, approvers and reviewers touch.
//!
//! - [`cli`]: the command line (clap).
//! - [`config`]: settings from the config file, its profiles, the environment and flags.
//! - [`output`]: `--output table|json|jsonl`, terminals, colors.
//! - [`client`]: dialing the control plane over mTLS with its identity checked.
//! - [`error`] and [`exit`]: what went wrong, what to do, and the exit codes scripts rely on.
//! - [`duration`] and [`when`]: durations and times as people type them.
//! - [`witness`]: the reviewer's kept audit checkpoint.
//! - [`commands`]: what each command does.
//! - [`render`]: snapshots, values and tables as text and JSON for people and scripts.
//!
//! The binary (`src/main.rs`) only calls [`main`], so that end-to-end tests can run the very
//! same entry point as a separate process, and rely on [`exit`]'s constants.

// Module docs are written for the engineer who maintains the module and link the private items
// they explain; `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod duration;
pub mod error;
pub mod exit;
pub mod output;
pub mod render;
pub mod when;
pub mod witness;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::commands::Context;
use crate::config::{Addresses, FileConfig, Layer, Settings};
use crate::error::CliError;
use crate::output::Output;

/// The `loupe` program, from `std::env::args_os()`.
pub fn main() -> ExitCode {
    run(std::env::args_os())
}

/// The `loupe` program with these arguments (the first is the program name).
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().collect();
    // `loupe control-plane ARGS…` hands ARGS over untouched: the control plane has its own
    // flags (`--config` among them), which the CLI's global flags would otherwise capture.
    if args.get(1).is_some_and(|a| a == "control-plane") {
        return commands::control_plane::run(args[2..].to_vec());
    }
    // `loupe sidecar ARGS…` likewise: the sidecar's `--pid`, `--cert`… are its own.
    if args.get(1).is_some_and(|a| a == "sidecar") {
        return commands::sidecar::run(args[2..].to_vec());
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(exit::USAGE));
        }
    };
    // Reached only with CLI flags before `control-plane`, which then apply to nothing.
    if let Command::ControlPlane { args } = cli.command {
        return commands::control_plane::run(args);
    }
    if let Command::Sidecar { args } = cli.command {
        return commands::sidecar::run(args);
    }
    let code = match execute(cli) {
        Ok(code) => code,
        // The reader of a pipe went away (`| head`): it has what it wanted.
        Err(error) if error.is_broken_pipe() => exit::OK,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    };
    exit::to_exit_code(code)
}

fn execute(cli: Cli) -> Result<u8, CliError> {
    if let Command::Completions { shell } = cli.command {
        return commands::completions::run(shell);
    }
    let env = |name: &str| std::env::var(name).ok();
    let settings = settings(&cli.global, &env)?;
    let context = Context {
        output: Output::for_stdout(settings.output.as_deref())?,
        settings,
        connect_timeout: cli.global.connect_timeout,
        state_dir: witness::state_dir(&env),
    };
    commands::run(&context, cli.command)
}

/// The settings for `global` flags, with the environment read through `env`.
pub fn settings(
    global: &GlobalArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, CliError> {
    let file = FileConfig::load(global.config.as_deref(), env)?;
    let address = global
        .address
        .as_deref()
        .map(Addresses::parse)
        .transpose()
        .map_err(|e| CliError::Usage(format!("--address: {e}")))?;
    let flags = Layer {
        address,
        cert: global.cert.clone(),
        key: global.key.clone(),
        ca: global.ca.clone(),
        crl: global.crl.clone(),
        control_plane_identity: global.control_plane_identity.clone(),
        output: global.output.clone(),
        audit_verifier: None,
    };
    config::resolve(
        &file,
        global.profile.as_deref(),
        Layer::from_env(env)?,
        env("LOUPE_PROFILE"),
        flags,
    )
}
