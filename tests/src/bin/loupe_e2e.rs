//! The processes the end-to-end tests start, in one executable: `control-plane ARGS` runs the
//! `loupe-control-plane` entry point, `demo-checkout …` the demo service, anything else the
//! `loupe` CLI. Each is the very function the shipped binary's `main` calls.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("control-plane") => loupe_control_plane::daemon::run_from_args(
            std::iter::once(OsString::from("loupe-control-plane")).chain(args.into_iter().skip(2)),
        ),
        Some("demo-checkout") => demo_checkout(&args[2..]),
        _ => loupe_cli::main(),
    }
}

/// `demo-checkout --pki DIR --control-plane ADDR [--traffic N] [--instance ID]`
fn demo_checkout(args: &[OsString]) -> ExitCode {
    let mut pki = None;
    let mut control_plane = None;
    let mut traffic = 200;
    let mut instance = None;
    let mut args = args.iter().filter_map(|a| a.to_str());
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default().to_owned();
        match flag {
            "--pki" => pki = Some(value),
            "--control-plane" => control_plane = Some(value),
            "--traffic" => traffic = value.parse().unwrap_or(200),
            "--instance" => instance = Some(value),
            _ => {
                eprintln!("demo-checkout: unknown flag {flag}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(pki), Some(control_plane)) = (pki, control_plane) else {
        eprintln!("demo-checkout: --pki and --control-plane are required");
        return ExitCode::from(2);
    };
    let layout = loupe_cli::pki::PkiLayout::at(&pki);
    let options = loupe_cli::demo::DemoOptions {
        http_listen: "127.0.0.1:0".parse().expect("literal address"),
        agent_listen: "127.0.0.1:0".parse().expect("literal address"),
        tls: layout.tls_paths(&layout.agent(loupe_cli::demo::SERVICE)),
        control_plane_address: control_plane,
        control_plane_identity: loupe_proto::identity::control_plane_identity(
            loupe_cli::pki::DEFAULT_TRUST_DOMAIN,
        ),
        traffic_per_second: traffic,
        instance,
    };
    let stop = Arc::new(AtomicBool::new(false));
    match loupe_cli::demo::run(options, stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-checkout: {error}");
            ExitCode::FAILURE
        }
    }
}
