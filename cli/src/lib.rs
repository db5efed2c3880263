//! The `loupe` command: what engineers, approvers and reviewers touch.
//!
//! - [`demo`]: the demo checkout service the quickstart inspects.
//!
//! The binary (`src/main.rs`) only calls [`main`], so that end-to-end tests can run the very
//! same entry point as a separate process.

pub mod demo;
pub mod pki;
pub mod render;

use std::process::ExitCode;

/// The `loupe` program, from `std::env::args_os()`.
pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
