//! `loupe control-plane [ARGS...]`: the control plane itself, so that one binary runs all of
//! Loupe when trying it out. Arguments pass through untouched, and its exit code is ours.

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the control plane with `args` (without a program name).
pub fn run(args: Vec<OsString>) -> ExitCode {
    let program = OsString::from("loupe control-plane");
    loupe_control_plane::daemon::run_from_args(std::iter::once(program).chain(args))
}
