//! `loupe sidecar [ARGS...]`: the sidecar agent (`loupe-agent sidecar`), so that the one binary
//! `cargo run -p loupe` builds runs every process of the quickstart, the sidecar beside its
//! native demo included. Arguments pass through untouched, and its exit code is ours. The
//! sidecar serves only the points of its points file: the demo's `snapshot!` callsites linked
//! into this binary stay out of its registry (`loupe_agent::serve_declared_points_only`).

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the sidecar with `args` (without a program name).
pub fn run(args: Vec<OsString>) -> ExitCode {
    let program = [OsString::from("loupe"), OsString::from("sidecar")];
    loupe_sidecar::cli::main_from_args(program.into_iter().chain(args))
}
