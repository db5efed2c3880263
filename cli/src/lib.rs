//! The `loupe` command: what engineers, approvers and reviewers touch.
//!
//! - [`config`]: settings from the config file, its profiles, the environment and flags.
//! - [`output`]: `--output table|json|jsonl`, terminals, colors.
//! - [`client`]: dialing the control plane over mTLS with its identity checked.
//! - [`error`] and [`exit`]: what went wrong, what to do, and the exit codes scripts rely on.
//! - [`duration`] and [`when`]: durations and times as people type them.
//! - [`witness`]: the reviewer's kept audit checkpoint.
//! - [`pki`]: the development PKI; [`render`]: snapshots and tables for people;
//!   [`demo`]: the demo checkout service the quickstart inspects.
//!
//! The binary (`src/main.rs`) only calls [`main`], so that end-to-end tests can run the very
//! same entry point as a separate process, and rely on [`exit`]'s constants.

pub mod client;
pub mod config;
pub mod demo;
pub mod duration;
pub mod error;
pub mod exit;
pub mod output;
pub mod pki;
pub mod render;
pub mod when;
pub mod witness;

use std::process::ExitCode;

/// The `loupe` program, from `std::env::args_os()`.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
