//! Several control-plane replicas on one PostgreSQL database, as real processes: a throwaway
//! cluster (the control plane's test harness, `control-plane/tests/pg`), one `loupe
//! control-plane` process per replica — same PKI, keys and policies, each with its own data
//! directory and address — and demo checkout instances: by default one per replica, instance
//! `checkout-<i>` registering with replica `i` (registrations are in the database, so every
//! replica lists and arms all of them), or one only ([`Demo::OnlyWith`]). Everything stops when
//! the handle drops (the cluster when the test binary exits).
//!
//! For what the engineer sees across replicas: a `loupe` CLI config naming every replica
//! ([`Replicas::cli_config`]) and the CLI as a real process whose output lines are read as they
//! arrive ([`Cli`]).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loupe_control_plane::config::FileConfig;
use loupe_devstack::stack;
use loupe_devstack::supervise::Stderr;

use crate::{Client, Deployment, LOUPE_ENV, PATIENCE, Process, wait_for_instances};

#[path = "../../control-plane/tests/pg/mod.rs"]
pub mod pg;

/// Which demo checkout instances register, and with which replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demo {
    /// One per replica: instance `checkout-<i>` registers with replica `i`.
    EachReplica,
    /// One, instance `checkout-0`, registering with replica `i` alone.
    OnlyWith(usize),
}

/// Replicas sharing one database, with the checkout instances registered as [`Demo`] says.
pub struct Replicas {
    // Fields drop in this order: the processes stop before their files go.
    /// The checkout instances (`checkout-<i>` registered with `replicas[i]`, or `checkout-0`
    /// alone).
    pub checkouts: Vec<Process>,
    pub replicas: Vec<Process>,
    pub deployment: Deployment,
    /// The database they share (a fresh one on this binary's cluster).
    pub database: String,
    /// Every replica's configuration before its own data directory, database and address.
    config: FileConfig,
}

impl Replicas {
    /// Starts `count` replicas on a fresh database named after `test`, and a checkout instance
    /// (`per_second` synthetic requests) registered with each; returns once every replica
    /// lists every instance. `None` when PostgreSQL is missing and not required (see
    /// [`pg::database`]). `exe` is `env!("CARGO_BIN_EXE_loupe-e2e")`.
    pub async fn start(exe: &str, test: &str, count: usize, per_second: u32) -> Option<Replicas> {
        Replicas::start_with(exe, test, count, per_second, Demo::EachReplica, |_| {}).await
    }

    /// As [`Replicas::start`], with the checkout instances of `demo` and every replica's
    /// configuration changed by `adjust`; returns once every replica lists every instance.
    pub async fn start_with(
        exe: &str,
        test: &str,
        count: usize,
        per_second: u32,
        demo: Demo,
        adjust: impl Fn(&mut FileConfig),
    ) -> Option<Replicas> {
        // The harness's client blocks (it runs a runtime of its own): off this one's threads.
        let database = tokio::task::block_in_place(|| pg::database(test))?;
        let deployment = Deployment::new(exe);
        let mut config = deployment.config();
        adjust(&mut config);
        let replicas: Vec<Process> = (0..count)
            .map(|index| start_replica(&deployment, &config, &database, index, None))
            .collect();
        let registering: Vec<usize> = match demo {
            Demo::EachReplica => (0..count).collect(),
            Demo::OnlyWith(index) => vec![index],
        };
        let mut checkouts = Vec::with_capacity(registering.len());
        for (n, &index) in registering.iter().enumerate() {
            let instance = format!("checkout-{n}");
            checkouts.push(deployment.start_checkout_with_traffic(
                &replicas[index].address,
                &instance,
                per_second,
            ));
        }
        // Registrations are shared: every replica lists every instance once all registered.
        for replica in &replicas {
            let mut alice = deployment.client(&replica.address, "alice").await;
            wait_for_instances(&mut alice, "checkout", registering.len()).await;
        }
        Some(Replicas {
            checkouts,
            replicas,
            deployment,
            database,
            config,
        })
    }

    /// `loupe capture checkout.apply_discount` in `session` as alice, with the CLI config at
    /// `config`, for more snapshots than any test waits for: it runs until stopped.
    pub fn capture(&self, config: &Path, session: &str) -> Cli {
        self.capture_with(config, session, &[])
    }

    /// [`Replicas::capture`] with more flags (e.g. `--resume-for`).
    pub fn capture_with(&self, config: &Path, session: &str, flags: &[&str]) -> Cli {
        let mut args = vec![
            "capture",
            "checkout.apply_discount",
            "--session",
            session,
            "--count",
            "100000",
        ];
        args.extend_from_slice(flags);
        Cli::start(&self.deployment.exe, config, "alice", &args)
    }

    /// Kills replica `index` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, index: usize) {
        self.replicas[index].kill();
    }

    /// Starts replica `index` again (after [`Replicas::kill`]) on the address it had, so that
    /// clients configured with it find it, and waits until it answers and lists a checkout
    /// instance.
    pub async fn restart(&mut self, index: usize) {
        let address = self.replicas[index].address.clone();
        self.replicas[index] = start_replica(
            &self.deployment,
            &self.config,
            &self.database,
            index,
            Some(&address),
        );
        let mut alice = self.client(index, "alice").await;
        wait_for_instances(&mut alice, "checkout", 1).await;
    }

    /// The replicas' shared configuration, as each is started.
    pub fn config(&self) -> &FileConfig {
        &self.config
    }

    /// Changes the replicas' shared configuration for every later [`Replicas::restart`]: a
    /// rolling change is this, then a kill and restart of each replica in turn.
    pub fn reconfigure(&mut self, adjust: impl FnOnce(&mut FileConfig)) {
        adjust(&mut self.config);
    }

    /// A client of replica `index` acting as `user`.
    pub async fn client(&self, index: usize, user: &str) -> Client {
        self.deployment
            .client(&self.replicas[index].address, user)
            .await
    }
}

/// Starts replica `index` of `deployment` on `database` with the replicas' shared `config`,
/// listening on `listen` (any free port when `None`).
fn start_replica(
    deployment: &Deployment,
    config: &FileConfig,
    database: &str,
    index: usize,
    listen: Option<&str>,
) -> Process {
    let mut config = config.clone();
    config.data_dir = Some(deployment.data_dir.join(format!("replica-{index}")));
    config.database = Some(database.to_owned());
    if let Some(listen) = listen {
        config.listen = Some(listen.to_owned());
    }
    let path: PathBuf = deployment
        .dir
        .path()
        .join(format!("control-plane-{index}.toml"));
    stack::write_control_plane_config(&path, &config).expect("write a replica's config");
    Process::start(stack::control_plane(
        &deployment.exe,
        &path,
        PATIENCE,
        Stderr::Inherit,
    ))
}

/// A session on `checkout.apply_discount` opened by `client` (for ten minutes); its id.
pub async fn open_session(client: &mut Client) -> String {
    crate::opened_session(client, &["checkout.apply_discount"], 600)
        .await
        .id
}

/// A capture of `checkout.apply_discount` in `session` whose condition never holds: it arms,
/// delivers nothing (so the replica holding it commits nothing of its own) and runs until
/// something ends it.
pub fn idle_capture(session: &str) -> crate::pb::BrokeredCaptureRequest {
    crate::pb::BrokeredCaptureRequest {
        session_id: session.to_owned(),
        point: "checkout.apply_discount".into(),
        condition: "false".into(),
        max_snapshots: 5,
        timeout_seconds: 0,
        ..crate::pb::BrokeredCaptureRequest::default()
    }
}

/// Reads `stream` until an instance reports itself armed.
pub async fn until_armed(stream: &mut tonic::Streaming<crate::pb::CaptureEvent>) {
    loop {
        let event = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("armed in time")
            .expect("the capture stream does not fail")
            .expect("the capture stream goes on until armed");
        if let Some(crate::pb::capture_event::Event::Instance(i)) = event.event
            && i.state == crate::pb::InstanceState::Armed as i32
        {
            return;
        }
    }
}

/// Reads `stream` until its end (at most `within`), and returns how it ended.
pub async fn until_end(
    stream: &mut tonic::Streaming<crate::pb::CaptureEvent>,
    within: std::time::Duration,
) -> crate::pb::CaptureEnd {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("the capture did not end within {within:?}"))
            .expect("the capture stream does not fail")
            .expect("the capture says how it ended before its stream closes");
        if let Some(crate::pb::capture_event::Event::End(end)) = event.event {
            return end;
        }
    }
}

impl Replicas {
    /// Writes a `loupe` CLI config (a profile per user) naming every replica, in `order` (indices
    /// into `replicas`), as one comma-separated `address`; returns its path.
    pub fn cli_config(&self, order: &[usize]) -> PathBuf {
        let addresses: Vec<&str> = order
            .iter()
            .map(|&index| self.replicas[index].address.as_str())
            .collect();
        self.deployment.write_cli_config(&addresses.join(","))
    }
}

/// One line the CLI printed, with when it was read.
#[derive(Debug, Clone)]
pub struct Line {
    pub at: Instant,
    pub stream: Channel,
    pub text: String,
}

/// Which of the CLI's outputs a [`Line`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Stdout,
    Stderr,
}

impl Line {
    /// The line as JSON, if it is a JSON object on stdout (`--output jsonl`).
    pub fn json(&self) -> Option<serde_json::Value> {
        if self.stream != Channel::Stdout {
            return None;
        }
        serde_json::from_str::<serde_json::Value>(&self.text)
            .ok()
            .filter(serde_json::Value::is_object)
    }

    /// The snapshot this line prints, if it is one.
    pub fn snapshot(&self) -> Option<serde_json::Value> {
        self.json().filter(|v| v.get("session_id").is_some())
    }

    /// The failover record this line prints, if it is one.
    pub fn failover(&self) -> Option<serde_json::Value> {
        self.json().and_then(|v| v.get("failover").cloned())
    }
}

/// The `loupe` CLI as a real process (`--output jsonl`), with every line it prints read as it
/// arrives; killed when dropped.
pub struct Cli {
    child: Child,
    lines: mpsc::Receiver<Line>,
    /// Every line read so far, in order.
    pub seen: Vec<Line>,
    what: String,
}

impl Cli {
    /// Starts `loupe --profile USER --output jsonl ARGS…` with the CLI config at `config`.
    pub fn start(exe: &Path, config: &Path, user: &str, args: &[&str]) -> Cli {
        let mut command = Command::new(exe);
        for name in LOUPE_ENV {
            command.env_remove(name);
        }
        command
            .env("LOUPE_CONFIG", config)
            .env("NO_COLOR", "1")
            .args(["--profile", user, "--output", "jsonl"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("loupe --profile {user} {}", args.join(" "));
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        read_lines(stdout, Channel::Stdout, tx.clone());
        read_lines(stderr, Channel::Stderr, tx);
        Cli {
            child,
            lines,
            seen: Vec::new(),
            what,
        }
    }

    /// Reads lines until one satisfies `wanted` (returned), for at most `within`; panics with
    /// everything read when none does.
    pub fn until(&mut self, what: &str, within: Duration, wanted: impl Fn(&Line) -> bool) -> Line {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "`{}`: no {what} within {within:?}:\n{}",
                    self.what,
                    self.transcript()
                ),
            }
        }
    }

    /// Reads until `count` more snapshots satisfying `wanted` arrived; returns them.
    pub fn snapshots(
        &mut self,
        count: usize,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        (0..count)
            .map(|_| {
                let line = self.until("snapshot", PATIENCE, |l| {
                    l.snapshot().is_some_and(|s| wanted(&s))
                });
                line.snapshot().unwrap_or_default()
            })
            .collect()
    }

    /// Sends SIGINT (Ctrl-C).
    pub fn interrupt(&self) {
        signal(self.child.id(), "-INT");
    }

    /// Waits for the exit (at most `within`), reading every line left; the exit code.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the CLI") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` still running after {within:?}:\n{}",
                self.what,
                self.transcript()
            );
            self.drain(Duration::from_millis(20));
        };
        // The readers end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        status.code()
    }

    fn drain(&mut self, within: Duration) {
        if let Ok(line) = self.lines.recv_timeout(within) {
            self.seen.push(line);
        }
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.lines_of(Channel::Stderr)
    }

    fn lines_of(&self, stream: Channel) -> String {
        let lines: Vec<&str> = self
            .seen
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.as_str())
            .collect();
        lines.join("\n")
    }

    /// Everything read so far, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.lines_of(Channel::Stdout),
            self.lines_of(Channel::Stderr)
        )
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(pipe: impl Read + Send + 'static, stream: Channel, tx: mpsc::Sender<Line>) {
    std::thread::spawn(move || {
        for text in BufReader::new(pipe).lines() {
            let Ok(text) = text else { return };
            let line = Line {
                at: Instant::now(),
                stream,
                text,
            };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
}

/// Sends `signal` (`-INT`, `-KILL`…) to `pid` with kill(1): no unsafe code for it.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
