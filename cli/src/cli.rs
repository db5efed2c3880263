//! The command line: every command, flag and argument, as clap parses them. What each command
//! does lives in [`crate::commands`]; this module only says what can be typed.

// The doc comments below are the command line's help text (clap prints them), where
// `<trust domain>` or `<session>` is a placeholder to fill in, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::clap_duration;

const ABOUT: &str = "Look inside live production processes, within policy, on the record.";

const LONG_ABOUT: &str = "\
Look inside live production processes, within policy, on the record.

Engineers open a session on a service's snapshot points and capture what they hold; approvers
approve sensitive sessions; reviewers query, export and verify the tamper-evident audit log.

Settings come from ~/.config/loupe/config.toml (or $LOUPE_CONFIG), then its profile
([profiles.NAME], chosen with --profile or $LOUPE_PROFILE), then the environment
($LOUPE_ADDRESS, $LOUPE_CERT, $LOUPE_KEY, $LOUPE_CA, $LOUPE_CRL, $LOUPE_CONTROL_PLANE_IDENTITY,
$LOUPE_OUTPUT), then flags; later wins.";

/// `loupe`.
#[derive(Debug, Parser)]
#[command(name = "loupe", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = crate::exit::HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Config file [default: ~/.config/loupe/config.toml, or $LOUPE_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Profile of the config file to use [env: LOUPE_PROFILE]
    #[arg(long, global = true, value_name = "NAME")]
    pub profile: Option<String>,
    /// Control plane address, host:port; replicas comma-separated, tried in order
    /// [env: LOUPE_ADDRESS]
    #[arg(long, global = true, value_name = "HOST:PORT[,…]")]
    pub address: Option<String>,
    /// Your client certificate (PEM) [env: LOUPE_CERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Your private key (PEM) [env: LOUPE_KEY]
    #[arg(long, global = true, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The CA certificate the control plane's certificate must chain to [env: LOUPE_CA]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Certificate revocation list(s) (PEM) of that CA, checked on every dial [env: LOUPE_CRL]
    #[arg(long, global = true, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// The identity the control plane's certificate must name
    /// [env: LOUPE_CONTROL_PLANE_IDENTITY] [default: spiffe://loupe.dev/control-plane]
    #[arg(long, global = true, value_name = "ID")]
    pub control_plane_identity: Option<String>,
    /// Output format [env: LOUPE_OUTPUT] [default: table on a terminal, jsonl otherwise]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub output: Option<String>,
    /// How long to wait for the control plane to answer a connection
    #[arg(long = "connect-timeout", global = true, value_name = "DURATION", value_parser = clap_duration, default_value = "5s")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Services with live instances you may inspect
    Services,
    /// The snapshot points of a service, and whose approval each needs
    Points { service: String },
    /// Open, approve, deny, close, revoke and list inspection sessions
    #[command(subcommand)]
    Session(SessionCommand),
    /// Capture snapshots at a point within an active session
    Capture(CaptureArgs),
    /// Query, follow, export and verify the audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// A development PKI: CA, control-plane, agent and user certificates, signing keys
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Run the control plane (the same as the loupe-control-plane program)
    #[command(name = "control-plane", disable_help_flag = true)]
    ControlPlane {
        /// Arguments for the control plane, e.g. --config FILE
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Run the sidecar agent beside a process (the same as `loupe-agent sidecar`)
    #[command(name = "sidecar", disable_help_flag = true)]
    Sidecar {
        /// Arguments for the sidecar, e.g. --pid PID --points FILE
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Run a demo service to inspect
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Try Loupe on this machine: a dev PKI, a control plane and the demo, until Ctrl-C
    Quickstart(QuickstartArgs),
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Where everything goes [default: ~/.local/state/loupe/quickstart]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where the control plane listens (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Where the demo's HTTP service listens (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http_listen: SocketAddr,
    /// After the walkthrough, keep the control plane and the demo running until Ctrl-C
    #[arg(long)]
    pub keep_running: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Request a session; prints it, and who may approve it if it is pending (exit 10)
    Open(OpenArgs),
    /// Approve someone else's pending session
    Approve {
        id: String,
        /// A note kept in the audit log
        #[arg(long)]
        comment: Option<String>,
    },
    /// Refuse a pending session
    Deny {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// End your session early; its captures end at once
    Close {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End anyone's session (administrators)
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Sessions you may see
    List {
        /// Only sessions in these states (comma-separated)
        #[arg(long, value_enum, value_delimiter = ',')]
        state: Vec<SessionStateArg>,
        /// Only this service
        #[arg(long)]
        service: Option<String>,
    },
    /// One session in full
    Show { id: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionStateArg {
    Pending,
    Active,
    Closed,
    Expired,
    Revoked,
    Denied,
}

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The service to inspect
    #[arg(long)]
    pub service: String,
    /// Points or namespace patterns, comma-separated (e.g. checkout.apply_discount,payments.*)
    #[arg(long, required = true, value_delimiter = ',')]
    pub points: Vec<String>,
    /// How long the session lasts once active (e.g. 90s, 15m, 1h)
    #[arg(long, value_name = "DURATION", value_parser = clap_duration, default_value = "15m")]
    pub ttl: Duration,
    /// Why; shown to approvers and kept in the audit log
    #[arg(long)]
    pub reason: String,
    /// Incident or change ticket
    #[arg(long)]
    pub ticket: Option<String>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The point to capture at
    pub point: String,
    /// The active session to capture in
    #[arg(long)]
    pub session: String,
    /// Only hits where this CEL condition holds (e.g. 'cart.total > 100')
    #[arg(long = "where", value_name = "CEL")]
    pub condition: Option<String>,
    /// Snapshots to capture in total over all instances
    #[arg(long, short = 'n', default_value_t = 10)]
    pub count: u64,
    /// Only these instances (repeat for several)
    #[arg(long = "instance", value_name = "ID")]
    pub instances: Vec<String>,
    /// Stop waiting after this long (default: when the session ends)
    #[arg(long, value_name = "DURATION", value_parser = clap_duration)]
    pub timeout: Option<Duration>,
    /// Also write each snapshot to DIR/<session>-<point>-<instance>-<seq>.json
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// If the control plane holding the capture goes away, keep trying the configured
    /// addresses this long to continue it (0: do not continue, exit 6 at once)
    #[arg(long, value_name = "DURATION", value_parser = clap_duration, default_value = "30s")]
    pub resume_for: Duration,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Events matching a filter, in sequence order
    Query(QueryArgs),
    /// Follow the log: print matching events appended from now on (with --since, from then)
    Tail(QueryArgs),
    /// Verify the log: online against the control plane and your kept checkpoint, or offline
    /// against an export
    Verify(VerifyArgs),
    /// Prove that an event is in the log, checked locally against a signed checkpoint
    Prove {
        seq: u64,
        #[command(flatten)]
        key: VerifierKeyArg,
    },
    /// Export the log as JSON Lines (verifiable offline) or as OCSF (for a SIEM)
    Export(ExportArgs),
}

#[derive(Debug, Clone, Default, Args)]
pub struct QueryArgs {
    /// Events at or after this time (RFC 3339, @unix-seconds, or a duration ago like 1h)
    #[arg(long)]
    pub since: Option<String>,
    /// Events before this time (same forms as --since)
    #[arg(long)]
    pub until: Option<String>,
    /// Actor identity, e.g. spiffe://loupe.dev/user/alice
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub point: Option<String>,
    /// e.g. session.opened, snapshot.delivered
    #[arg(long)]
    pub action: Option<String>,
    /// allow, deny or error
    #[arg(long)]
    pub outcome: Option<String>,
    /// At most this many events
    #[arg(long)]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct VerifierKeyArg {
    /// The audit log's verifier key, pinned out of band (from the profile's audit_verifier
    /// when not given) [env: LOUPE_AUDIT_VERIFIER]
    #[arg(long = "verifier-key", value_name = "FILE")]
    pub verifier_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub key: VerifierKeyArg,
    /// Verify this JSON Lines export offline instead of asking the control plane
    #[arg(long, value_name = "FILE")]
    pub export: Option<PathBuf>,
    /// With --export: a checkpoint note you kept earlier, which the export must extend
    #[arg(long, value_name = "FILE", requires = "export")]
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,
    /// Write to FILE instead of stdout
    #[arg(long = "out", short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Filters, for OCSF only (a JSON Lines export is always the whole log, so it verifies)
    #[command(flatten)]
    pub filter: QueryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Ocsf,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a development PKI in DIR, and print a config snippet using it
    Init(PkiInitArgs),
    /// Issue (or renew) another certificate from the PKI in --dir
    #[command(subcommand)]
    Issue(IssueCommand),
}

#[derive(Debug, Args)]
pub struct PkiInitArgs {
    /// The folder to create (it must not hold a PKI already)
    pub dir: PathBuf,
    /// The trust domain of every SPIFFE id [default: loupe.dev]
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Users to issue client certificates for (repeat; default: alice, bob, carol, dave, erin)
    #[arg(long = "user", value_name = "NAME")]
    pub users: Vec<String>,
    /// Services to issue agent certificates for (repeat; default: checkout)
    #[arg(long = "service", value_name = "NAME")]
    pub services: Vec<String>,
    /// Lifetime of the CA in days [default: 90]
    #[arg(long)]
    pub ca_days: Option<u32>,
    /// Lifetime of every leaf certificate in days [default: 7]
    #[arg(long)]
    pub days: Option<u32>,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The PKI's folder (made by `loupe pki init`)
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Lifetime in days [default: 7]
    #[arg(long, conflicts_with = "lifetime")]
    pub days: Option<u32>,
    /// Lifetime as a duration instead (e.g. `1h` for an incident), at least 1s
    #[arg(long, value_name = "DURATION", value_parser = clap_duration)]
    pub lifetime: Option<std::time::Duration>,
    /// Renew: replace an existing certificate and key of that name
    #[arg(long)]
    pub replace: bool,
}

#[derive(Debug, Subcommand)]
pub enum IssueCommand {
    /// A user certificate (spiffe://<trust domain>/user/NAME)
    User {
        name: String,
        #[command(flatten)]
        args: IssueArgs,
    },
    /// An agent certificate (spiffe://<trust domain>/agent/SERVICE)
    Agent {
        service: String,
        #[command(flatten)]
        args: IssueArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// The demo checkout service, with an in-process agent and synthetic traffic
    Checkout(DemoArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The PKI folder holding agents/checkout.pem and ca.pem (made by `loupe pki init`)
    #[arg(long, value_name = "DIR")]
    pub tls_dir: PathBuf,
    /// Where the control plane listens (default: the first of --address or the profile's)
    #[arg(long = "control-plane", value_name = "HOST:PORT")]
    pub control_plane: Option<String>,
    /// Where the demo's HTTP service listens
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// Where the demo's agent endpoint listens (port 0: any free port)
    #[arg(long, default_value = "127.0.0.1:0")]
    pub agent_listen: SocketAddr,
    /// Synthetic requests per second (0: none)
    #[arg(long, default_value_t = 5)]
    pub traffic: u32,
    /// The instance id to register as (default: generated)
    #[arg(long)]
    pub instance: Option<String>,
    /// Bench only: serve without the Loupe agent (the baseline of benches/host_overhead.sh)
    #[arg(long, hide = true)]
    pub bench_without_agent: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn session_open_parses_points_and_ttl() {
        let cli = Cli::try_parse_from([
            "loupe",
            "session",
            "open",
            "--service",
            "checkout",
            "--points",
            "a,b,payments.*",
            "--ttl",
            "1h30m",
            "--reason",
            "incident",
            "--output",
            "json",
        ])
        .unwrap();
        let Command::Session(SessionCommand::Open(open)) = cli.command else {
            panic!("not session open");
        };
        assert_eq!(open.points, ["a", "b", "payments.*"]);
        assert_eq!(open.ttl, Duration::from_secs(5400));
        assert_eq!(cli.global.output.as_deref(), Some("json"));
    }

    #[test]
    fn capture_resumes_for_the_documented_window_unless_told() {
        let parse = |extra: &[&str]| {
            let mut args = vec![
                "loupe",
                "capture",
                "checkout.apply_discount",
                "--session",
                "s-1",
            ];
            args.extend_from_slice(extra);
            let Command::Capture(capture) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not capture");
            };
            capture.resume_for
        };
        assert_eq!(
            parse(&[]),
            crate::commands::capture::failover::DEFAULT_RESUME_FOR
        );
        assert_eq!(parse(&["--resume-for", "2m"]), Duration::from_secs(120));
        assert_eq!(parse(&["--resume-for", "0"]), Duration::ZERO);
    }

    #[test]
    fn control_plane_takes_any_arguments() {
        // `crate::run` hands `control-plane`'s arguments over before clap sees them; clap only
        // needs to accept the subcommand for help and completions.
        let cli =
            Cli::try_parse_from(["loupe", "control-plane", "--listen", "x", "--help"]).unwrap();
        let Command::ControlPlane { args } = cli.command else {
            panic!("not control-plane");
        };
        assert_eq!(args, ["--listen", "x", "--help"]);
    }

    #[test]
    fn sidecar_takes_any_arguments() {
        let cli = Cli::try_parse_from(["loupe", "sidecar", "--pid", "7", "--help"]).unwrap();
        let Command::Sidecar { args } = cli.command else {
            panic!("not sidecar");
        };
        assert_eq!(args, ["--pid", "7", "--help"]);
    }

    #[test]
    fn a_bad_duration_is_a_usage_error() {
        let error = Cli::try_parse_from([
            "loupe",
            "capture",
            "p",
            "--session",
            "s",
            "--timeout",
            "5 minutes",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("use e.g. 90s"), "{error}");
        assert_eq!(error.exit_code(), 2);
    }
}
