//! The sidecar's `loupe-agent` entry point under a name of its own, for the end-to-end tests to
//! start as a process: `loupe-agent-e2e sidecar …` is exactly `loupe-agent sidecar …`. It is a
//! binary of its own (not a subcommand of `loupe-e2e`) so that the demo's `snapshot!` points,
//! linked into `loupe-e2e`, never join the sidecar's registry.

fn main() -> std::process::ExitCode {
    loupe_sidecar::cli::main()
}
