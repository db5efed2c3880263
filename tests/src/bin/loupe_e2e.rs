//! The `loupe` entry point under another name, for the end-to-end tests to start as processes.
fn main() -> std::process::ExitCode {
    loupe_cli::main()
}
