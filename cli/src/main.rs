fn main() -> std::process::ExitCode {
    loupe_cli::main()
}
