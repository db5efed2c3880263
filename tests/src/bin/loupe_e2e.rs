//! The `loupe` entry point under a name of its own, for the end-to-end tests to start as
//! processes: `loupe-e2e control-plane …` is the control plane, `loupe-e2e demo checkout …` the
//! demo service, anything else the CLI — exactly as with the shipped `loupe` binary.

fn main() -> std::process::ExitCode {
    loupe_cli::main()
}
