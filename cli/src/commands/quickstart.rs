//! `loupe quickstart`: all of Loupe on this machine in one command, to try it — a development
//! PKI, the shipped policies, a control plane and the demo checkout service, plus a CLI config
//! with one profile per demo user — then the commands to try, until Ctrl-C.
//!
//! Everything lives in one folder (`--dir`, default `<state>/quickstart`, see
//! [`crate::witness::state_dir`]); a second run reuses its PKI and audit log. The control
//! plane and the demo run as child processes of this same binary (`loupe control-plane`,
//! `loupe demo checkout`), each announcing readiness with one stdout line; their logs go to
//! `<dir>/logs/`. Ctrl-C in the terminal reaches the whole process group, so both stop
//! cleanly; on SIGTERM to this process alone, it forwards SIGTERM to them (through `kill`),
//! and after a grace period kills what is left.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use super::Context;
use super::pki::config_snippet;
use crate::cli::QuickstartArgs;
use crate::error::CliError;
use crate::exit;
use crate::pki::{self, PkiLayout, PkiOptions};

/// The shipped policies, so the quickstart works from an installed binary too.
const POLICIES: [(&str, &str); 3] = [
    (
        "default.cedar",
        include_str!("../../../policies/default.cedar"),
    ),
    (
        "entities.json",
        include_str!("../../../policies/entities.json"),
    ),
    (
        "loupe.cedarschema",
        include_str!("../../../policies/loupe.cedarschema"),
    ),
];

/// How long a child has to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long children have to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A child process with what its errors need to name.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    /// Asks the child to stop (SIGTERM), waits up to [`STOP_GRACE`], then kills it.
    fn stop(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quickstart_error(what: &str, error: impl std::fmt::Display) -> CliError {
    CliError::Other(format!("quickstart: {what}: {error}"))
}

/// The last lines of a log, to show why a child failed.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Starts `loupe ARGS…` and waits for a stdout line starting with `ready_prefix`.
fn spawn(
    name: &'static str,
    args: &[String],
    ready_prefix: &'static str,
    log: PathBuf,
) -> Result<(Running, String), CliError> {
    let exe =
        std::env::current_exe().map_err(|e| quickstart_error("cannot find this program", e))?;
    let log_file = std::fs::File::create(&log)
        .map_err(|e| CliError::io(format!("creating {}", log.display()), e))?;
    // The children get their settings from the quickstart alone, never from the user's own
    // CLI config or profile.
    let mut child = Command::new(exe)
        .args(args)
        .env_remove("LOUPE_PROFILE")
        .env_remove("LOUPE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|e| quickstart_error(&format!("cannot start the {name}"), e))?;
    let stdout = child.stdout.take();
    let mut running = Running { child, log };
    let Some(stdout) = stdout else {
        running.stop();
        return Err(quickstart_error(name, "no stdout"));
    };
    // The reader keeps draining stdout after the ready line, so the child never blocks on a
    // full pipe.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(ready_prefix)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => Ok((running, line)),
        Err(_) => {
            let status = running.child.try_wait().ok().flatten();
            let tail = log_tail(&running.log);
            let log = running.log.display().to_string();
            running.stop();
            let state = match status {
                Some(status) => format!("exited ({status})"),
                None => format!("not ready within {} s", READY_TIMEOUT.as_secs()),
            };
            Err(quickstart_error(
                &format!("the {name} {state}; its log {log} ends with"),
                format!("\n{tail}"),
            ))
        }
    }
}

/// `key=value` from a ready line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
}

/// The control plane's configuration for the quickstart folder.
fn control_plane_config(
    dir: &Path,
    layout: &PkiLayout,
    listen: &str,
    trust_domain: &str,
) -> String {
    let cp = layout.control_plane();
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        "# Written by `loupe quickstart`; rewritten on every run.\n\
         listen = {listen:?}\n\
         trust_domain = {trust_domain:?}\n\
         data_dir = {}\n\
         policy_dir = {}\n\n\
         [tls]\ncert = {}\nkey = {}\nca = {}\n\n\
         [tokens]\nsigning_keys = [{}]\npublish = {}\nlifetime_seconds = 300\n\n\
         [audit]\nsigning_key = {}\n",
        quote(&dir.join("data")),
        quote(&dir.join("policies")),
        quote(&cp.cert),
        quote(&cp.key),
        quote(&layout.ca_cert()),
        quote(&layout.token_signing_key()),
        quote(&layout.token_keys()),
        quote(&layout.audit_signing_key()),
    )
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| CliError::io(format!("writing {}", path.display()), e))
}

/// Runs `loupe quickstart`.
pub fn run(context: &Context, args: QuickstartArgs) -> Result<u8, CliError> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => context
            .state_dir
            .as_ref()
            .map(|d| d.join("quickstart"))
            .ok_or_else(|| {
                CliError::Usage("no state folder: set --dir, $LOUPE_STATE_DIR or $HOME".into())
            })?,
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    for sub in ["logs", "policies", "data"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| CliError::io(format!("creating {}", dir.join(sub).display()), e))?;
    }
    let options = PkiOptions::default();
    let pki_dir = dir.join("pki");
    let layout = PkiLayout::at(&pki_dir);
    let pki_state = if layout.has_ca() {
        "reused"
    } else {
        pki::init(&pki_dir, &options).map_err(|e| quickstart_error("dev PKI", e))?;
        "created"
    };
    for (name, text) in POLICIES {
        write(&dir.join("policies").join(name), text)?;
    }
    let empty_config = dir.join("demo-cli.toml");
    write(
        &empty_config,
        "# The demo's CLI settings come from its flags.\n",
    )?;
    let cp_config = dir.join("control-plane.toml");
    write(
        &cp_config,
        &control_plane_config(&dir, &layout, &args.listen, &options.trust_domain),
    )?;

    let (control_plane, ready) = spawn(
        "control plane",
        &[
            "control-plane".into(),
            "--config".into(),
            cp_config.display().to_string(),
        ],
        "loupe-control-plane ready",
        dir.join("logs/control-plane.log"),
    )?;
    let Some(address) = field(&ready, "listen").map(str::to_owned) else {
        control_plane.stop();
        return Err(quickstart_error(
            "the control plane's ready line has no address",
            ready,
        ));
    };
    let (demo, demo_ready) = match spawn(
        "demo",
        &[
            "--config".into(),
            empty_config.display().to_string(),
            "demo".into(),
            "checkout".into(),
            "--tls-dir".into(),
            pki_dir.display().to_string(),
            "--control-plane".into(),
            address.clone(),
            "--control-plane-identity".into(),
            format!("spiffe://{}/control-plane", options.trust_domain),
            "--http-listen".into(),
            args.http_listen.to_string(),
        ],
        "checkout ready",
        dir.join("logs/demo.log"),
    ) {
        Ok(started) => started,
        Err(error) => {
            control_plane.stop();
            return Err(error);
        }
    };

    let config_path = dir.join("config.toml");
    write(
        &config_path,
        &config_snippet(&layout, &options.users, &options.trust_domain, &address),
    )?;
    let http = field(&demo_ready, "http").unwrap_or("?").to_owned();
    let text = next_steps(&dir, pki_state, &address, &http, &config_path);
    let result = context.output.object(
        &text,
        &json!({
            "dir": dir,
            "control_plane": address,
            "demo_http": http,
            "config": config_path,
        }),
    );
    if result.is_ok() {
        wait_for_stop_signal();
        eprintln!("stopping the demo and the control plane…");
    }
    demo.stop();
    control_plane.stop();
    result.map(|()| exit::OK)
}

fn next_steps(dir: &Path, pki_state: &str, address: &str, http: &str, config: &Path) -> String {
    let logs = dir.join("logs");
    format!(
        "Loupe is running, everything in {dir}:\n\
         \x20 dev PKI         {pki} ({pki_state})\n\
         \x20 control plane   {address}  (log: {logs}/control-plane.log)\n\
         \x20 demo checkout   http://{http}  (log: {logs}/demo.log)\n\
         \x20 CLI config      {config}  (profiles alice, bob: sre; carol: security; dave: auditors; erin: none)\n\
         \n\
         In another terminal:\n\
         \x20 export LOUPE_CONFIG={config}\n\
         \x20 loupe services\n\
         \x20 loupe points checkout\n\
         \x20 loupe session open --service checkout --points checkout.apply_discount --ttl 15m --reason \"trying Loupe\"\n\
         \x20 loupe capture checkout.apply_discount --session SESSION --count 3 --where 'order.total_cents > 5000'\n\
         \x20 loupe session open --service checkout --points 'payments.*' --reason \"refund check\"   # pending: needs security\n\
         \x20 loupe --profile carol session approve SESSION\n\
         \x20 loupe --profile dave audit query\n\
         \x20 loupe --profile dave audit verify\n\
         \n\
         Ctrl-C stops everything.",
        dir = dir.display(),
        pki = dir.join("pki").display(),
        logs = logs.display(),
        config = config.display(),
    )
}

/// Blocks until Ctrl-C or SIGTERM.
fn wait_for_stop_signal() {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(super::demo::wait_for_stop_signal());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_are_read_by_key() {
        let line = "checkout ready http=127.0.0.1:8080 agent=127.0.0.1:9 instance=i-1";
        assert_eq!(field(line, "http"), Some("127.0.0.1:8080"));
        assert_eq!(field(line, "instance"), Some("i-1"));
        assert_eq!(
            field("loupe-control-plane ready listen=127.0.0.1:7443", "listen"),
            Some("127.0.0.1:7443")
        );
        assert_eq!(field(line, "nope"), None);
    }

    #[test]
    fn the_control_plane_config_names_the_pki_files() {
        let layout = PkiLayout::at("/q/pki");
        let text = control_plane_config(Path::new("/q"), &layout, "127.0.0.1:0", "loupe.dev");
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(parsed["policy_dir"].as_str(), Some("/q/policies"));
        assert_eq!(parsed["tls"]["ca"].as_str(), Some("/q/pki/ca.pem"));
        assert_eq!(
            parsed["audit"]["signing_key"].as_str(),
            Some("/q/pki/audit-signing.key")
        );
    }
}
