fn main() -> std::process::ExitCode {
    loupe_control_plane::daemon::run_from_args(std::env::args_os())
}
