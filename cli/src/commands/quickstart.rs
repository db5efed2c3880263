//! `loupe quickstart`: all of Loupe on this machine in one command — a development PKI, the
//! shipped policies, a control plane and the demo checkout service, plus a CLI config with one
//! profile per demo user — then a walkthrough of a whole inspection with the real CLI: an SRE
//! opens a session with a reason, captures with a condition (a card token comes out redacted),
//! asks for a `payments.` point and waits for security's approval (her own does not count),
//! closes the sessions, and an auditor reads and verifies the log. It ends by saying where
//! everything is and how to go on by hand; `--keep-running` leaves the services up until
//! Ctrl-C.
//!
//! Beside the checkout, which carries the in-process agent, it runs a native demo with no
//! Loupe in it (`inventory`, a C program built at start-up) and the sidecar beside that
//! ([`native`]); the walkthrough captures one of its watch points (a global read from the
//! process's memory) and one of its probe points (a function's arguments at its entry), in a
//! session of their own, audited like the rest. Where this machine cannot run the sidecar (no
//! C compiler, no right to read another process or to open uprobes) it says what is missing
//! and goes on without that part: the quickstart must work on any developer machine.
//!
//! Each walkthrough step runs this same binary as a child (`loupe --profile alice …`), the way
//! a person would type it, and checks its exit code: the quickstart exits 0 only when every
//! step did what it should, so CI runs it as a test of the whole product.
//!
//! Everything lives in one folder (`--dir`, default `<state>/quickstart`, see
//! [`crate::witness::state_dir`]); a second run reuses its PKI and audit log. The control
//! plane and the demo run as child processes of this same binary (`loupe control-plane`,
//! `loupe demo checkout`), each announcing readiness with one stdout line; their logs go to
//! `<dir>/logs/`. The pieces — PKI, policies, the control plane's config, launching and
//! supervising the children — are `loupe_devstack`'s, shared with the end-to-end tests. Ctrl-C in the terminal reaches the whole process group, so both stop
//! cleanly; on SIGTERM to this process alone, it forwards SIGTERM to them (through `kill`),
//! and after a grace period kills what is left.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use loupe_devstack::native::INVENTORY;
use loupe_devstack::pki::{self, PkiLayout, PkiOptions};
use loupe_devstack::stack::{self, CheckoutLaunch, ControlPlanePlaces};
use loupe_devstack::supervise::{STOP_GRACE, Stderr, Supervised};
use serde_json::json;

mod native;

use super::Context;
use super::pki::config_snippet;
use crate::cli::QuickstartArgs;
use crate::error::CliError;
use crate::exit;

/// How long a child has to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn quickstart_error(what: &str, error: impl std::fmt::Display) -> CliError {
    CliError::Other(format!("quickstart: {what}: {error}"))
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| CliError::io(format!("writing {}", path.display()), e))
}

/// Starts a child of this same binary, its stderr to `log`.
fn start(launch: loupe_devstack::supervise::Launch) -> Result<Supervised, CliError> {
    let name = launch.name.clone();
    Supervised::start(launch).map_err(|e| quickstart_error(&format!("starting the {name}"), e))
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
    stack::write_shipped_policies(&dir.join("policies"))
        .map_err(|e| quickstart_error("policies", e))?;
    let empty_config = dir.join("demo-cli.toml");
    write(
        &empty_config,
        "# The demo's CLI settings come from its flags.\n",
    )?;
    let cp_config = dir.join("control-plane.toml");
    let places = ControlPlanePlaces {
        listen: args.listen.clone(),
        trust_domain: options.trust_domain.clone(),
        data_dir: dir.join("data"),
        policy_dir: dir.join("policies"),
    };
    stack::write_control_plane_config(&cp_config, &stack::control_plane_config(&layout, &places))
        .map_err(|e| quickstart_error("control-plane config", e))?;

    let exe =
        std::env::current_exe().map_err(|e| quickstart_error("cannot find this program", e))?;
    let control_plane = start(stack::control_plane(
        &exe,
        &cp_config,
        READY_TIMEOUT,
        Stderr::File(dir.join("logs/control-plane.log")),
    ))?;
    let Some(address) = control_plane.ready().get("listen").map(str::to_owned) else {
        return Err(quickstart_error(
            "the control plane's ready line has no address",
            control_plane.ready(),
        ));
    };
    let demo = start(stack::checkout(
        &exe,
        &CheckoutLaunch {
            pki_dir: pki_dir.clone(),
            control_plane: address.clone(),
            trust_domain: options.trust_domain.clone(),
            http_listen: args.http_listen.to_string(),
            traffic_per_second: None,
            instance: None,
            cli_settings: empty_config,
        },
        READY_TIMEOUT,
        Stderr::File(dir.join("logs/demo.log")),
    ))?;

    let sidecar_part = native::start(&native::Places {
        exe: &exe,
        dir: &dir,
        pki_dir: &pki_dir,
        trust_domain: &options.trust_domain,
        control_plane: &address,
        ready_within: READY_TIMEOUT,
    })?;

    let config_path = dir.join("config.toml");
    write(
        &config_path,
        &config_snippet(&layout, &options.users, &options.trust_domain, &address),
    )?;
    let http = demo.ready().get("http").unwrap_or("?").to_owned();
    let (sidecar, native_children) = match sidecar_part {
        native::SidecarPart::Running(running) => {
            let native::Running {
                inventory,
                sidecar,
                compile_command,
                probes,
            } = *running;
            (
                SidecarStatus::Running {
                    compile_command,
                    target_pid: inventory.pid(),
                    agent: sidecar.ready().get("agent").unwrap_or("?").to_owned(),
                    probes,
                },
                vec![inventory, sidecar],
            )
        }
        native::SidecarPart::Skipped(reason) => (SidecarStatus::Skipped(reason), Vec::new()),
    };
    let children = Children::new([control_plane, demo].into_iter().chain(native_children));
    let stopper = children.stop_on_signal();
    let walkthrough = Walkthrough {
        config: config_path.clone(),
        state: dir.join("reviewer"),
        sidecar: sidecar.clone(),
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
        &sidecar,
        &config_path,
        args.keep_running,
    );
    let result = context.output.object(
        &text,
        &json!({
            "dir": dir,
            "control_plane": address,
            "demo_http": http,
            "sidecar": sidecar.summary(),
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
struct Children(std::sync::Arc<std::sync::Mutex<Vec<Supervised>>>);

impl Children {
    fn new(running: impl IntoIterator<Item = Supervised>) -> Children {
        Children(std::sync::Arc::new(std::sync::Mutex::new(
            running.into_iter().collect(),
        )))
    }

    /// Stops every child, the last started first (the sidecar before its target, the demos
    /// before the control plane).
    fn stop(&self) {
        let mut running = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(mut child) = running.pop() {
            child.terminate(STOP_GRACE);
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

/// Whether the sidecar part runs, for the walkthrough and the summary.
#[derive(Debug, Clone)]
enum SidecarStatus {
    Running {
        compile_command: String,
        target_pid: u32,
        /// The sidecar's agent endpoint.
        agent: String,
        /// Whether its probe point is served on this machine.
        probes: native::Probes,
    },
    /// Why this machine cannot run it.
    Skipped(String),
}

impl SidecarStatus {
    fn summary(&self) -> serde_json::Value {
        match self {
            SidecarStatus::Running {
                target_pid,
                agent,
                probes: native::Probes::Served,
                ..
            } => json!({ "service": INVENTORY, "target_pid": target_pid, "agent": agent }),
            SidecarStatus::Running {
                target_pid,
                agent,
                probes: native::Probes::Skipped(why),
                ..
            } => json!({
                "service": INVENTORY,
                "target_pid": target_pid,
                "agent": agent,
                "probes_skipped": why,
            }),
            SidecarStatus::Skipped(reason) => json!({ "skipped": reason }),
        }
    }
}

/// The scripted inspection, run with the real CLI.
struct Walkthrough {
    /// The CLI config with one profile per demo user.
    config: PathBuf,
    /// The auditor's state folder (where `audit verify` keeps the checkpoint it verified).
    state: PathBuf,
    sidecar: SidecarStatus,
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
        self.wait_for_registration("checkout")?;
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
        self.capture_one(
            &pending_id,
            "payments.charge",
            "now the charge can be seen — the processor key is a Secret and never leaves",
        )?;
        let native_session = self.sidecar_steps()?;
        for id in [
            Some(&session_id),
            Some(&pending_id),
            native_session.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
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
        if let Some(id) = &native_session {
            self.show(
                "dave",
                &["audit", "query", "--session", id],
                exit::OK,
                "…the sidecar's captures too, recorded the same way",
            )?;
        }
        self.show(
            "dave",
            &["audit", "verify"],
            exit::OK,
            "…and verifies the log's signed checkpoint, keeping it to check the next one against",
        )?;
        Ok(())
    }

    /// The native demo through its sidecar: one watch point and one probe point captured in
    /// a session of their own; returns that session, or `None` (saying why) when this machine
    /// cannot run the sidecar.
    fn sidecar_steps(&self) -> Result<Option<String>, CliError> {
        let (compile_command, target_pid, probes) = match &self.sidecar {
            SidecarStatus::Running {
                compile_command,
                target_pid,
                probes,
                ..
            } => (compile_command, *target_pid, probes),
            SidecarStatus::Skipped(reason) => {
                println!(
                    "\n# The sidecar part is skipped on this machine, and the walkthrough goes on without it:\n# {}",
                    reason.replace('\n', "\n# ")
                );
                return Ok(None);
            }
        };
        println!(
            "\n# inventory is a native program with no Loupe in it, built with `{compile_command}`;\n\
             # `loupe sidecar --pid {target_pid}` runs beside it with a reviewed points file"
        );
        self.wait_for_registration(INVENTORY)?;
        self.show(
            "alice",
            &["points", INVENTORY],
            exit::OK,
            match probes {
                native::Probes::Served => {
                    "its points: a watch point (a global) and a probe point (a function's entry), with their DWARF types"
                }
                native::Probes::Skipped(_) => {
                    "its points: a watch point (a global), with its DWARF type; the probe point is not served here (below)"
                }
            },
        )?;
        let session = self.json(
            "alice",
            &[
                "session",
                "open",
                "--service",
                INVENTORY,
                "--points",
                "inventory.*",
                "--ttl",
                "10m",
                "--reason",
                "quickstart: are reservations taking stock?",
                "--ticket",
                "INC-1043",
            ],
            exit::OK,
            "alice opens a session on it: the same policies, tokens and audit as in-process",
        )?;
        let session_id = text_field(&session, "id")?;
        println!("session {session_id} is {}", text_field(&session, "state")?);
        self.capture_one(
            &session_id,
            "inventory.stock",
            "a watch point: g_stock read from the process's memory without stopping it (the supplier token comes out redacted)",
        )?;
        match probes {
            native::Probes::Served => self.capture_one(
                &session_id,
                native::PROBE_POINT,
                "a probe point: reserve()'s arguments at its entry, trapped by a uprobe that is removed when the capture ends",
            )?,
            native::Probes::Skipped(why) => println!(
                "\n# This machine allows reading the process but not uprobes, so {why}",
            ),
        }
        Ok(Some(session_id))
    }

    /// alice captures one snapshot of `point` in `session`.
    fn capture_one(&self, session: &str, point: &str, why: &str) -> Result<(), CliError> {
        self.show(
            "alice",
            &[
                "capture",
                point,
                "--session",
                session,
                "--count",
                "1",
                "--timeout",
                "60s",
            ],
            exit::OK,
            why,
        )
    }

    /// Waits until an agent of `service` has registered (its lease makes it visible).
    fn wait_for_registration(&self, service: &str) -> Result<(), CliError> {
        let deadline = std::time::Instant::now() + REGISTRATION_TIMEOUT;
        loop {
            let output = self
                .command("alice", &["--output", "json", "services"])?
                .stderr(Stdio::null())
                .output()
                .map_err(|e| quickstart_error("cannot run the CLI", e))?;
            if output.status.success()
                && String::from_utf8_lossy(&output.stdout).contains(&format!("\"{service}\""))
            {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(quickstart_error(
                    &format!("the agent of {service} did not register"),
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
    sidecar: &SidecarStatus,
    config: &Path,
    keep_running: bool,
) -> String {
    let logs = dir.join("logs");
    let native = match sidecar {
        SidecarStatus::Running {
            target_pid, agent, ..
        } => format!(
            "\x20 native demo     inventory, pid {target_pid}  (log: {logs}/inventory.log)\n\
             \x20 sidecar         {agent}, points {points}  (log: {logs}/sidecar.log)\n",
            logs = logs.display(),
            points = dir.join("native/inventory.points.toml").display(),
        ),
        SidecarStatus::Skipped(_) => {
            "\x20 native demo     not run here (see above why)\n".to_owned()
        }
    };
    let native_steps = by_hand_native_steps(sidecar);
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
         {native}\
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
         {native_steps}\
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

/// The walkthrough's by-hand lines for the native demo: only the points its sidecar serves
/// on this machine, none when it did not run.
fn by_hand_native_steps(sidecar: &SidecarStatus) -> &'static str {
    match sidecar {
        SidecarStatus::Running {
            probes: native::Probes::Served,
            ..
        } => {
            "\x20 loupe session open --service inventory --points 'inventory.*' --reason \"stock check\"   # the sidecar's points\n\
             \x20 loupe capture inventory.reserve --session SESSION --count 5 --where 'quantity > 2'\n"
        }
        SidecarStatus::Running {
            probes: native::Probes::Skipped(_),
            ..
        } => {
            "\x20 loupe session open --service inventory --points inventory.stock --reason \"stock check\"   # the sidecar's watch point\n\
             \x20 loupe capture inventory.stock --session SESSION --count 3\n"
        }
        SidecarStatus::Skipped(_) => "",
    }
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

    fn running(probes: native::Probes) -> SidecarStatus {
        SidecarStatus::Running {
            compile_command: "cc -g -O2 inventory.c".to_owned(),
            target_pid: 42,
            agent: "127.0.0.1:1".to_owned(),
            probes,
        }
    }

    #[test]
    fn the_by_hand_steps_name_only_points_served_here() {
        let served = by_hand_native_steps(&running(native::Probes::Served));
        assert!(
            served.contains("loupe capture inventory.reserve"),
            "{served}"
        );

        let watches_only = by_hand_native_steps(&running(native::Probes::Skipped(
            "no uprobe PMU".to_owned(),
        )));
        assert!(
            !watches_only.contains("inventory.reserve"),
            "{watches_only}"
        );
        assert!(
            watches_only.contains("loupe capture inventory.stock"),
            "{watches_only}"
        );

        let not_run = by_hand_native_steps(&SidecarStatus::Skipped("no cc".to_owned()));
        assert!(!not_run.contains("inventory"), "{not_run}");
    }
}
