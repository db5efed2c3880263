//! `loupe-agent`: the agent run beside a process (`loupe-agent sidecar …`); see
//! `loupe_sidecar::cli`.

fn main() -> std::process::ExitCode {
    loupe_sidecar::cli::main()
}
