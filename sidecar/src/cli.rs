//! The `loupe-agent sidecar` command line: attach to a running process by pid, resolve the
//! reviewed points file against its DWARF, and serve the points over the agent's mTLS endpoint
//! as a sidecar. A library function so that the end-to-end tests run the very same entry
//! point under a binary of their own.
//!
//! **Stopping.** SIGTERM (or SIGINT) stops it gracefully: the sampling loop sees the request
//! within its poll interval and closes every perf descriptor (removing the breakpoints from the
//! target's code: closing is the only thing that does), then the endpoint shuts down, which
//! ends every open capture stream with "the agent is shutting down", and the sidecar exits 0.
//! Kubernetes, systemd and the quickstart all stop a sidecar this way; SIGKILL is safe too
//! (the kernel closes the descriptors), but the engineer then sees a broken stream instead of
//! a reason.
//!
//! Exit codes: 0 after `--check` or when stopped by SIGTERM, 2 when it cannot start (the message says what to fix), 3 when
//! the target exited (its captures ended with a reason; a supervisor starts a new sidecar for
//! the new process), 4 when it cannot start because this machine or container denies it a
//! privilege it needs (reading the process, uprobes; the message says what to grant), so that
//! a supervisor can tell an environment to fix from a points file to fix.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::{PointsFile, Resolved, RunEnd, Sidecar, Target};
use clap::{Args, Parser, Subcommand};
use loupe_agent::{Agent, AgentMode};
use loupe_proto::ready::{self, ReadyLine};

/// How long the endpoint stays up after the target exits, for streams to report why they ended.
const STREAMS_GRACE: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(name = "loupe-agent", version, about = "Loupe's agent, run beside a process")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Expose reviewed watch points of a running process that knows nothing about Loupe.
    Sidecar(SidecarArgs),
}

#[derive(Args)]
struct SidecarArgs {
    /// The process to inspect.
    #[arg(long, conflicts_with = "pid_file")]
    pid: Option<i64>,
    /// A file holding the pid of the process to inspect (overrides `[target] pid_file`).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// The reviewed points file (TOML).
    #[arg(long)]
    points: PathBuf,
    /// Resolve every point, print what each watches, and exit without serving.
    #[arg(long)]
    check: bool,
    /// Serve the file's watch points only: its probe points are still resolved (the file is
    /// checked whole) but not served, so no uprobe and no CAP_SYS_ADMIN is needed (for a
    /// machine or cluster that denies uprobes).
    #[arg(long)]
    watches_only: bool,
    /// The service the target belongs to; tokens must name it.
    #[arg(long, required_unless_present = "check")]
    service: Option<String>,
    /// This instance's name (default: host name and pid).
    #[arg(long)]
    instance: Option<String>,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, required_unless_present = "check")]
    cert: Option<PathBuf>,
    #[arg(long, required_unless_present = "check")]
    key: Option<PathBuf>,
    #[arg(long, required_unless_present = "check")]
    ca: Option<PathBuf>,
    #[arg(long)]
    crl: Option<PathBuf>,
    /// The control plane's SPIFFE ID, the one caller this agent serves.
    #[arg(long, required_unless_present = "check")]
    control_plane: Option<String>,
    /// Register with the control plane at this host:port (token keys are fetched from it).
    #[arg(long)]
    control_plane_address: Option<String>,
    /// The host:port the control plane should dial this agent at.
    #[arg(long)]
    advertise_address: Option<String>,
    /// A JWK set file with the token-verification keys (instead of fetching them).
    #[arg(long)]
    token_keys: Option<PathBuf>,
}

/// Runs `loupe-agent` with the process's arguments.
pub fn main() -> ExitCode {
    main_from_args(std::env::args_os())
}

/// Runs `loupe-agent` with these arguments, the first being the program's name (`loupe
/// sidecar …` runs `["loupe", "sidecar", …]`).
pub fn main_from_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let Command::Sidecar(args) = cli.command;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
    match run(args) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("loupe-agent sidecar: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Exit code: cannot start, the message says what to fix.
const CANNOT_START: u8 = 2;
/// Exit code: the target exited.
const TARGET_EXITED: u8 = 3;
/// Exit code: a privilege the sidecar needs is denied here.
const PRIVILEGE_MISSING: u8 = 4;

/// Why the sidecar did not start, and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            code: CANNOT_START,
            message,
        }
    }
}

impl From<crate::AttachError> for Failure {
    fn from(error: crate::AttachError) -> Failure {
        let code = match error {
            crate::AttachError::Permission { .. } => PRIVILEGE_MISSING,
            _ => CANNOT_START,
        };
        Failure {
            code,
            message: error.to_string(),
        }
    }
}

impl From<crate::SidecarError> for Failure {
    fn from(error: crate::SidecarError) -> Failure {
        use crate::uprobe::ProbeError;
        let code = match error {
            crate::SidecarError::Probe(
                ProbeError::NoUprobePmu | ProbeError::NoCapSysAdmin | ProbeError::Permission { .. },
            )
            | crate::SidecarError::Object(crate::elf::ObjectError::Attach(
                crate::AttachError::Permission { .. },
            )) => PRIVILEGE_MISSING,
            _ => CANNOT_START,
        };
        Failure {
            code,
            message: error.to_string(),
        }
    }
}

fn run(args: SidecarArgs) -> Result<ExitCode, Failure> {
    let points = PointsFile::load(&args.points).map_err(|e| e.to_string())?;
    let target = match (
        args.pid,
        args.pid_file.as_ref().or(points.pid_file.as_ref()),
    ) {
        (Some(pid), _) => Target::attach(pid),
        (None, Some(path)) => Target::attach_pid_file(path),
        (None, None) => {
            return Err(String::from(
                "no target: give --pid, --pid-file, or `pid_file` under [target] in the points file",
            )
            .into());
        }
    }?;
    let mut resolved = Resolved::attach_points(target, &points.watches, &points.probes)?;
    if args.watches_only && !resolved.probes.is_empty() {
        let names: Vec<&str> = resolved
            .probes
            .iter()
            .map(|probe| probe.spec.name.as_str())
            .collect();
        eprintln!(
            "loupe-agent sidecar: --watches-only: probe point(s) {} resolve but are not served",
            names.join(", ")
        );
        resolved.probes.clear();
    }
    if args.check {
        print_check(&resolved);
        return Ok(ExitCode::SUCCESS);
    }
    let pid = resolved.target.pid();
    let sidecar = Sidecar::declare(resolved)?;
    let stop = crate::os::stop_on_termination_signals()
        .map_err(|e| Failure::from(format!("cannot handle SIGTERM: {e}")))?;
    let mut agent = Agent::builder()
        .mode(AgentMode::Sidecar)
        .service(args.service.unwrap_or_default())
        .listen(args.listen)
        .control_plane(args.control_plane.unwrap_or_default());
    if let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) {
        agent = agent.tls(cert, key, ca);
    }
    if let Some(instance) = args.instance {
        agent = agent.instance(instance);
    }
    if let Some(crl) = args.crl {
        agent = agent.crl(crl);
    }
    if let Some(address) = args.control_plane_address {
        agent = agent.control_plane_address(address);
    }
    if let Some(address) = args.advertise_address {
        agent = agent.advertise_address(address);
    }
    if let Some(keys) = args.token_keys {
        agent = agent.token_keys_file(keys);
    }
    let handle = agent
        .start()
        .map_err(|e| Failure::from(format!("cannot start the agent endpoint: {e}")))?;
    // The ready line: scripts and tests wait for it. A pid and an address never contain
    // whitespace, so the line is always well-formed.
    if let Ok(ready) = ReadyLine::new(ready::SIDECAR)
        .and_then(|line| line.with("pid", pid))
        .and_then(|line| line.with("agent", handle.local_addr()))
    {
        println!("{ready}");
    }
    match sidecar.run(stop) {
        RunEnd::TargetGone => {
            eprintln!(
                "loupe-agent sidecar: process {pid} exited; its captures ended with a reason, and this sidecar stops"
            );
            // Let every stream carry its end reason to the control plane before the endpoint
            // shuts down (which would end them as "shutting down" instead).
            let deadline = Instant::now() + STREAMS_GRACE;
            while handle.counters().captures_active > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            drop(handle);
            Ok(ExitCode::from(TARGET_EXITED))
        }
        RunEnd::Stopped => {
            // The probes are closed already (`run` closes them before it returns); dropping
            // the endpoint ends the open streams with "the agent is shutting down".
            let open = handle.counters().captures_active;
            drop(handle);
            eprintln!(
                "loupe-agent sidecar: stopped on request: every probe closed (no breakpoint left in process {pid}), {open} open capture(s) ended"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_check(resolved: &Resolved) {
    println!("process {}", resolved.target.pid());
    for object in &resolved.objects {
        println!(
            "  object {} (build-id {}, DWARF from {}, load bias {:#x})",
            object.path,
            if object.build_id.is_empty() {
                "none"
            } else {
                &object.build_id
            },
            object.debug_file,
            object.bias
        );
    }
    for watch in &resolved.watches {
        let path = if watch.spec.path.is_empty() {
            String::new()
        } else {
            format!(".{}", watch.spec.path.join("."))
        };
        println!(
            "  watch {} = {}{path} : {} at {:#x} ({}:{}), field `{}`, every {} ms",
            watch.spec.name,
            watch.spec.symbol,
            watch.type_name,
            watch.address,
            watch.decl_file,
            watch.decl_line,
            watch.spec.field,
            watch.spec.interval.as_millis()
        );
    }
    for probe in &resolved.probes {
        println!(
            "  probe {} = {} at {:#x}{} ({}:{}), uprobe at file offset {:#x}, {} instruction",
            probe.spec.name,
            probe.qualified_name,
            probe.entry,
            if probe.after_endbr64 {
                " (+4 after endbr64)"
            } else {
                ""
            },
            probe.decl_file,
            probe.decl_line,
            probe.file_offset,
            probe.cost.describe(),
        );
        for param in &probe.params {
            println!(
                "    {}: {}, {}",
                param.name,
                param.type_name,
                param.location.describe()
            );
        }
    }
}
