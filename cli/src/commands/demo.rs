//! `loupe demo checkout`: the demo service of [`loupe_devstack::demo`], stopped cleanly by Ctrl-C or
//! SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::Context;
use crate::cli::{DemoArgs, DemoCommand};
use crate::client::check_exists;
use crate::error::CliError;
use crate::exit;
use loupe_devstack::demo::{self, DemoOptions};
use loupe_devstack::pki::PkiLayout;

/// The service name the demo registers as, and so the agent certificate it needs.
const DEMO_SERVICE: &str = "checkout";

/// Runs `loupe demo …`.
pub fn run(context: &Context, command: DemoCommand) -> Result<u8, CliError> {
    match command {
        DemoCommand::Checkout(args) => checkout(context, args),
    }
}

fn options(context: &Context, args: DemoArgs) -> Result<DemoOptions, CliError> {
    let layout = PkiLayout::at(&args.tls_dir);
    let leaf = layout.agent(DEMO_SERVICE);
    let hint = "--tls-dir";
    check_exists(&leaf.cert, "agent certificate", hint)?;
    check_exists(&leaf.key, "agent key", hint)?;
    check_exists(&layout.ca_cert(), "CA certificate", hint)?;
    let control_plane_address = args
        .control_plane
        .or_else(|| {
            let addresses = context.settings.addresses.as_ref();
            addresses.map(|a| a.first().to_owned())
        })
        .ok_or_else(|| {
            CliError::Usage(
                "no control plane address (set --control-plane HOST:PORT or --address)".into(),
            )
        })?;
    Ok(DemoOptions {
        http_listen: args.http_listen,
        agent_listen: args.agent_listen,
        tls: layout.tls_paths(&leaf),
        control_plane_address,
        control_plane_identity: context.settings.control_plane_identity.clone(),
        traffic_per_second: args.traffic,
        instance: args.instance,
        without_agent: args.bench_without_agent,
    })
}

fn checkout(context: &Context, args: DemoArgs) -> Result<u8, CliError> {
    let options = options(context, args)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Signals are watched on a runtime of their own; the demo runs on this thread, outside
    // any runtime, so it is free to start its own.
    let signals = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the signal handler", e))?;
    let flag = Arc::clone(&stop);
    signals.spawn(async move {
        wait_for_stop_signal().await;
        flag.store(true, Ordering::SeqCst);
    });
    let result = demo::run(options, stop);
    signals.shutdown_background();
    result.map_err(|e| CliError::Other(format!("demo: {e}")))?;
    Ok(exit::OK)
}

/// Ctrl-C, or SIGTERM where there is one.
pub async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
