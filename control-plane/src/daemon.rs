//! Placeholder for the control plane's entry point (written on another branch).

use std::ffi::OsString;
use std::process::ExitCode;

pub fn run_from_args(_args: impl IntoIterator<Item = OsString>) -> ExitCode {
    eprintln!("loupe-control-plane: not available in this build");
    ExitCode::FAILURE
}
