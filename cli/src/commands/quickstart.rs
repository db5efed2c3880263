//! `loupe quickstart`: all of Loupe on this machine in one command — a development PKI, the
//! shipped policies, a control plane and the demo checkout service, plus a CLI config with one
//! profile per demo user — then a walkthrough of a whole inspection with the real CLI: an SRE
//! opens a session with a reason, captures with a condition (a card token comes out redacted),
//! asks for a `payments.` point and waits for security's approval (her own does not count),
//! closes the sessions, and an auditor reads and verifies the log. It ends by saying where
//! everything is and how to go on by hand; `--keep-running` leaves the services up until
//! Ctrl-C.
//!
//! Each walkthrough step runs this same binary as a child (`loupe --profile alice …`), the way
//! a person would type it, and checks its exit code: the quickstart exits 0 only when every
//! step did what it should, so CI runs it as a test of the whole product.
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
    let children = Children::new([control_plane, demo]);
    let stopper = children.stop_on_signal();
    let walkthrough = Walkthrough {
        config: config_path.clone(),
        state: dir.join("reviewer"),
    };
    if let Err(error) = walkthrough.run() {
        children.stop();
        return Err(error);
    }
    let text = next_steps(
        &dir,
        pki_state,
        &address,
        &http,
        &config_path,
        args.keep_running,
    );
    let result = context.output.object(
        &text,
        &json!({
            "dir": dir,
            "control_plane": address,
            "demo_http": http,
            "config": config_path,
        }),
    );
    if result.is_ok() && args.keep_running {
        wait_for_stop_signal();
        eprintln!("stopping the demo and the control plane…");
    }
    drop(stopper);
    children.stop();
    result.map(|()| exit::OK)
}

/// The control plane and the demo, stopped together on exit, error, Ctrl-C or SIGTERM.
#[derive(Clone)]
struct Children(std::sync::Arc<std::sync::Mutex<Vec<Running>>>);

impl Children {
    fn new(running: impl IntoIterator<Item = Running>) -> Children {
        Children(std::sync::Arc::new(std::sync::Mutex::new(
            running.into_iter().collect(),
        )))
    }

    /// Stops every child (the demo first: it was started last).
    fn stop(&self) {
        let mut running = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(child) = running.pop() {
            child.stop();
        }
    }

    /// A watcher thread: on Ctrl-C or SIGTERM it stops the children and exits 130.
    fn stop_on_signal(&self) -> std::thread::JoinHandle<()> {
        let children = self.clone();
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(super::demo::wait_for_stop_signal());
            eprintln!("\ninterrupted: stopping the demo and the control plane…");
            children.stop();
            std::process::exit(i32::from(exit::INTERRUPTED));
        })
    }
}

/// The scripted inspection, run with the real CLI.
struct Walkthrough {
    /// The CLI config with one profile per demo user.
    config: PathBuf,
    /// The auditor's state folder (where `audit verify` keeps the checkpoint it verified).
    state: PathBuf,
}

/// How long the demo's agent has to register with the control plane.
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);

impl Walkthrough {
    fn command(&self, profile: &str, args: &[&str]) -> Result<Command, CliError> {
        let exe =
            std::env::current_exe().map_err(|e| quickstart_error("cannot find this program", e))?;
        let mut command = Command::new(exe);
        command
            .env("LOUPE_CONFIG", &self.config)
            .env("LOUPE_STATE_DIR", &self.state)
            .env_remove("LOUPE_PROFILE")
            .env_remove("LOUPE_OUTPUT")
            .env_remove("LOUPE_ADDRESS")
            .env_remove("LOUPE_CERT")
            .env_remove("LOUPE_KEY")
            .env_remove("LOUPE_CA")
            .arg("--profile")
            .arg(profile)
            .args(args)
            .stdin(Stdio::null());
        Ok(command)
    }

    /// Shows the command, runs it with its output on this terminal, checks its exit code.
    fn show(&self, profile: &str, args: &[&str], expect: u8, why: &str) -> Result<(), CliError> {
        println!("\n# {why}");
        println!("$ loupe --profile {profile} {}", shell_words(args));
        let status = self
            .command(profile, args)?
            .status()
            .map_err(|e| quickstart_error("cannot run the CLI", e))?;
        self.check(profile, args, status.code(), expect)
    }

    /// Runs the command with JSON output and returns it parsed, showing the command.
    fn json(
        &self,
        profile: &str,
        args: &[&str],
        expect: u8,
        why: &str,
    ) -> Result<serde_json::Value, CliError> {
        println!("\n# {why}");
        println!("$ loupe --profile {profile} {}", shell_words(args));
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let output = self
            .command(profile, &full)?
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| quickstart_error("cannot run the CLI", e))?;
        self.check(profile, args, output.status.code(), expect)?;
        serde_json::from_slice(&output.stdout).map_err(|e| {
            quickstart_error(&format!("`loupe {}` printed no JSON", shell_words(args)), e)
        })
    }

    fn check(
        &self,
        profile: &str,
        args: &[&str],
        code: Option<i32>,
        expect: u8,
    ) -> Result<(), CliError> {
        if code == Some(i32::from(expect)) {
            return Ok(());
        }
        Err(quickstart_error(
            &format!(
                "`loupe --profile {profile} {}` exited with {code:?}, expected {expect}",
                shell_words(args)
            ),
            "see its output above",
        ))
    }

    fn run(&self) -> Result<(), CliError> {
        self.wait_for_registration()?;
        self.show(
            "alice",
            &["services"],
            exit::OK,
            "alice (sre) sees what is running",
        )?;
        self.show(
            "alice",
            &["points", "checkout"],
            exit::OK,
            "…and the snapshot points of the checkout",
        )?;

        let session = self.json(
            "alice",
            &[
                "session",
                "open",
                "--service",
                "checkout",
                "--points",
                "checkout.*",
                "--ttl",
                "10m",
                "--reason",
                "quickstart: discounts look wrong for Gold customers",
                "--ticket",
                "INC-1042",
            ],
            exit::OK,
            "alice opens a session with a reason; policy lets sre in for up to 30 minutes",
        )?;
        let session_id = text_field(&session, "id")?;
        println!("session {session_id} is {}", text_field(&session, "state")?);

        self.show(
            "alice",
            &[
                "capture",
                "checkout.apply_discount",
                "--session",
                &session_id,
                "--count",
                "2",
                "--where",
                "order.total_cents > 10000u && order.user.tier == \"Gold\"",
                "--timeout",
                "60s",
            ],
            exit::OK,
            "two snapshots of big Gold orders; card_token comes out redacted inside the service",
        )?;

        let pending = self.json(
            "alice",
            &[
                "session",
                "open",
                "--service",
                "checkout",
                "--points",
                "payments.charge",
                "--ttl",
                "5m",
                "--reason",
                "quickstart: was the Gold discount charged?",
            ],
            exit::PENDING_APPROVAL,
            "payments. points follow the two-person rule: the session waits for security",
        )?;
        let pending_id = text_field(&pending, "id")?;
        let approvers: Vec<String> = pending["approvers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "session {pending_id} is {}; may approve: {}",
            text_field(&pending, "state")?,
            approvers.join(", ")
        );
        self.show(
            "alice",
            &["session", "approve", &pending_id],
            exit::DENIED,
            "alice cannot approve her own session",
        )?;
        self.show(
            "carol",
            &["session", "approve", &pending_id],
            exit::OK,
            "carol (security) approves it",
        )?;
        self.show(
            "alice",
            &[
                "capture",
                "payments.charge",
                "--session",
                &pending_id,
                "--count",
                "1",
                "--timeout",
                "60s",
            ],
            exit::OK,
            "now the charge can be seen — the processor key is a Secret and never leaves",
        )?;
        for id in [&session_id, &pending_id] {
            self.show(
                "alice",
                &["session", "close", id],
                exit::OK,
                "alice closes the session when she is done",
            )?;
        }
        self.show(
            "dave",
            &["audit", "query", "--session", &session_id],
            exit::OK,
            "dave (auditors) reads who looked at what, when and why",
        )?;
        self.show(
            "dave",
            &["audit", "verify"],
            exit::OK,
            "…and verifies the log's signed checkpoint, keeping it to check the next one against",
        )?;
        Ok(())
    }

    /// Waits until the demo's agent has registered (its lease makes it visible).
    fn wait_for_registration(&self) -> Result<(), CliError> {
        let deadline = std::time::Instant::now() + REGISTRATION_TIMEOUT;
        loop {
            let output = self
                .command("alice", &["--output", "json", "services"])?
                .stderr(Stdio::null())
                .output()
                .map_err(|e| quickstart_error("cannot run the CLI", e))?;
            if output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains("checkout")
            {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(quickstart_error(
                    "the demo's agent did not register",
                    format!("not within {} s", REGISTRATION_TIMEOUT.as_secs()),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn text_field(value: &serde_json::Value, key: &str) -> Result<String, CliError> {
    value[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| quickstart_error("unexpected CLI output", format!("no `{key}` in {value}")))
}

/// Arguments as a person would type them.
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"&|<>*$;".contains(c)) {
                format!("'{}'", a.replace('\'', "'\\''"))
            } else {
                (*a).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn next_steps(
    dir: &Path,
    pki_state: &str,
    address: &str,
    http: &str,
    config: &Path,
    keep_running: bool,
) -> String {
    let logs = dir.join("logs");
    let ending = if keep_running {
        "Ctrl-C stops everything."
    } else {
        "The walkthrough is done and the services stop now; `loupe quickstart --keep-running` keeps them up to try the commands above."
    };
    format!(
        "\nThat was a whole inspection. Everything is in {dir}:\n\
         \x20 dev PKI         {pki} ({pki_state})\n\
         \x20 control plane   {address}  (log: {logs}/control-plane.log)\n\
         \x20 demo checkout   http://{http}  (log: {logs}/demo.log)\n\
         \x20 CLI config      {config}  (profiles alice, bob: sre; carol: security; dave: auditors; erin: none)\n\
         \n\
         To go on by hand (with `loupe quickstart --keep-running`, in another terminal):\n\
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
         {ending}",
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
