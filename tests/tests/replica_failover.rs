//! The engineer's side of several control-plane replicas, end to end: the `loupe` CLI as a real
//! process configured with all three replicas' addresses (one comma-separated `address` in its
//! config), three `loupe control-plane` processes on a throwaway PostgreSQL cluster, and a demo
//! checkout instance registered with each (registrations are per replica, so the capture
//! through B arms B's instance `checkout-1`, and once resumed through A, A's `checkout-0`).
//!
//! What must hold:
//! - the replica holding a capture's stream killed with SIGKILL: the CLI's capture continues
//!   through another replica, keeps printing snapshots, reports the gap (stderr and a
//!   `{"failover": …}` record), and the audit log exported afterwards (through the CLI, whose
//!   first address is now dead) verifies offline and records every snapshot the CLI printed;
//! - a revoke during a capture ends the CLI's capture with the reason, and nothing is resumed;
//! - a capture no replica can take over gives up after `--resume-for` with exit 6, saying so;
//!   with `--resume-for 0` it is not continued at all, even with replicas alive;
//! - the database unreachable: replicas refuse decisions with UNAVAILABLE and the CLI exits 6,
//!   then works again once the database is back, without restarting anything;
//! - a SIGKILL loop: a random replica killed while a CLI capture runs through it and sessions
//!   are opened through every replica, restarted, again; the log then verifies offline and
//!   holds every session a replica acknowledged and every snapshot a CLI printed.
//!
//! The time from the kill to the resumed capture is measured by the bench `failover`.
//! PostgreSQL missing: skipped with the reason printed, or failed with
//! `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (CI).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loupe_cli::exit;
use loupe_tests::replicas::{Channel, Cli, Replicas, open_session};
use loupe_tests::{Client, PATIENCE, pb};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

/// Replica A, which takes the capture over.
const A: usize = 0;
/// Replica B, which holds the capture first and is killed.
const B: usize = 1;
/// Replica C, the last resort.
const C: usize = 2;

/// The CLI dials B first, then A, then C.
const ORDER: [usize; 3] = [B, A, C];

async fn three_replicas(test: &str) -> Option<Replicas> {
    Replicas::start(EXE, test, 3, 20).await
}

/// A CLI config naming the replicas in [`ORDER`], a session alice opened through B, and her
/// `loupe capture` in it (through B, the first address), once it printed a snapshot.
async fn capturing_through_b(world: &Replicas) -> (PathBuf, String, Cli) {
    capturing_through_b_with(world, &[]).await
}

/// [`capturing_through_b`] with more flags for `loupe capture`.
async fn capturing_through_b_with(world: &Replicas, flags: &[&str]) -> (PathBuf, String, Cli) {
    let config = world.cli_config(&ORDER);
    let mut alice_b = world.client(B, "alice").await;
    let session = open_session(&mut alice_b).await;
    let mut cli = world.capture_with(&config, &session, flags);
    cli.snapshots(1, |s| s["instance"] == "checkout-1");
    (config, session, cli)
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
}

/// Ends a running capture as Ctrl-C does; it must exit 130 after its summary.
fn stop_with_ctrl_c(cli: &mut Cli) {
    cli.interrupt();
    let code = cli.wait(PATIENCE);
    assert_eq!(
        code,
        Some(i32::from(exit::INTERRUPTED)),
        "{}",
        cli.transcript()
    );
}

/// Runs a one-shot CLI command to its end; its exit code and what it printed.
fn cli_command(world: &Replicas, config: &Path, user: &str, args: &[&str]) -> (Option<i32>, Cli) {
    let mut cli = Cli::start(&world.deployment.exe, config, user, args);
    let code = cli.wait(PATIENCE * 3);
    (code, cli)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_survives_the_sigkill_of_its_replica_and_nothing_acknowledged_is_lost() {
    let Some(mut world) = three_replicas(
        "a_capture_survives_the_sigkill_of_its_replica_and_nothing_acknowledged_is_lost",
    )
    .await
    else {
        return;
    };
    let (config, _, mut cli) = capturing_through_b(&world).await;
    let before = cli.snapshots(2, |s| s["instance"] == "checkout-1");
    let lost_capture = text(&before[0]["capture_id"]).to_owned();

    // Before the kill: the CLI may notice the loss before `kill` has reaped the process.
    let killed_at = Instant::now();
    world.kill(B);
    let record = cli.until("failover record", PATIENCE, |l| l.failover().is_some());
    let failover = record.failover().unwrap_or_default();
    assert_eq!(
        failover["lost"],
        world.replicas[B].address.as_str(),
        "{failover}"
    );
    assert_eq!(
        failover["resumed_through"],
        world.replicas[A].address.as_str(),
        "the next address in the list: {failover}"
    );
    assert_eq!(
        failover["lost_capture_id"],
        lost_capture.as_str(),
        "{failover}"
    );
    let last_seen = failover["last_sequences"]["checkout-1"]
        .as_u64()
        .unwrap_or_else(|| panic!("the last sequence seen from checkout-1: {failover}"));
    assert!(
        last_seen >= 3,
        "three snapshots were printed before: {failover}"
    );
    let gap_ms = failover["gap_ms"].as_u64().expect("gap_ms");
    assert!(
        Duration::from_millis(gap_ms) <= killed_at.elapsed(),
        "the gap is measured from the loss: {failover}"
    );

    // It goes on through A, as a new capture of A's instance, numbered from 1 again.
    let after = cli.snapshots(3, |s| s["instance"] == "checkout-0");
    let resumed_capture = text(&after[0]["capture_id"]).to_owned();
    assert_ne!(resumed_capture, lost_capture);
    assert_eq!(after[0]["sequence"], 1, "{}", after[0]);
    let stderr = cli.stderr();
    assert!(
        stderr.contains(&format!(
            "lost the control plane at {} holding this capture",
            world.replicas[B].address
        )),
        "{}",
        cli.transcript()
    );
    assert!(
        stderr.contains(&format!(
            "capture resumed through {}",
            world.replicas[A].address
        )),
        "{}",
        cli.transcript()
    );
    stop_with_ctrl_c(&mut cli);

    // The log, exported through the CLI (whose first address is dead: it dials the next),
    // verifies offline and records every snapshot the CLI printed, from both captures.
    let log = tokio::task::block_in_place(|| exported_log_verifies(&world, &config));
    let printed: Vec<Value> = cli.seen.iter().filter_map(|l| l.snapshot()).collect();
    assert!(printed.len() >= 6);
    assert_recorded(&printed, &log);
}

/// The whole log exported as dave through the CLI with `config`, verified offline by the CLI
/// (exit 0); its text.
fn exported_log_verifies(world: &Replicas, config: &Path) -> String {
    let export = world.deployment.dir.path().join("audit.jsonl");
    let export_arg = export.display().to_string();
    let (code, ran) = cli_command(
        world,
        config,
        "dave",
        &["audit", "export", "--format", "jsonl", "-o", &export_arg],
    );
    assert_eq!(code, Some(0), "{}", ran.transcript());
    let (code, ran) = cli_command(
        world,
        config,
        "dave",
        &["audit", "verify", "--export", &export_arg],
    );
    assert_eq!(code, Some(0), "{}", ran.transcript());
    std::fs::read_to_string(&export).expect("export")
}

/// Asserts that every snapshot in `printed` (as the CLI printed it) has its
/// `snapshot.delivered` in the exported `log`.
fn assert_recorded(printed: &[Value], log: &str) {
    let recorded = delivered(log);
    for snapshot in printed {
        let key = (
            text(&snapshot["capture_id"]).to_owned(),
            text(&snapshot["instance"]).to_owned(),
            snapshot["sequence"].as_u64().expect("sequence"),
        );
        assert!(
            recorded.contains(&key),
            "a snapshot the CLI printed is not in the log: {key:?}"
        );
    }
}

/// `(capture id, instance, sequence)` of every `snapshot.delivered` in a JSON Lines export.
fn delivered(export: &str) -> BTreeSet<(String, String, u64)> {
    export
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["action"] == "snapshot.delivered")
        .map(|event| {
            let details = &event["details"];
            (
                text(&details["capture_id"]).to_owned(),
                text(&details["instance"]).to_owned(),
                details["sequence"].as_u64().expect("sequence"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_during_a_capture_ends_it_with_the_reason_and_nothing_is_resumed() {
    let Some(world) =
        three_replicas("a_revoke_during_a_capture_ends_it_with_the_reason_and_nothing_is_resumed")
            .await
    else {
        return;
    };
    let (config, session, mut cli) = capturing_through_b(&world).await;

    let mut carol_a = world.client(A, "carol").await;
    carol_a
        .revoke_session(pb::AdminRevokeSessionRequest {
            session_id: session.clone(),
            reason: "leaked credentials".into(),
            request_id: String::new(),
        })
        .await
        .expect("security revokes");
    assert_eq!(
        cli.wait(PATIENCE),
        Some(i32::from(exit::SESSION_NOT_ACTIVE)),
        "{}",
        cli.transcript()
    );
    let stderr = cli.stderr();
    assert!(
        stderr.contains("capture ended: session-revoked")
            && stderr.contains("revoked by spiffe://loupe.dev/user/carol: leaked credentials"),
        "the engineer is told why: {}",
        cli.transcript()
    );
    assert!(
        !stderr.contains("lost the control plane") && !stderr.contains("resumed"),
        "a session's end is never resumed: {}",
        cli.transcript()
    );
    assert!(
        cli.seen
            .iter()
            .all(|l| l.stream == Channel::Stderr || l.failover().is_none()),
        "{}",
        cli.transcript()
    );
    // Nor could it be: the session is refused through every replica.
    let (code, ran) = cli_command(
        &world,
        &config,
        "alice",
        &["capture", "checkout.apply_discount", "--session", &session],
    );
    assert_eq!(
        code,
        Some(i32::from(exit::SESSION_NOT_ACTIVE)),
        "{}",
        ran.transcript()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_nobody_can_take_over_gives_up_after_resume_for_with_exit_6() {
    let Some(mut world) =
        three_replicas("a_capture_nobody_can_take_over_gives_up_after_resume_for_with_exit_6")
            .await
    else {
        return;
    };
    // Resuming turned off: losing B ends the capture although A and C are up.
    let (_, session, mut off) = capturing_through_b_with(&world, &["--resume-for", "0"]).await;
    world.kill(B);
    assert_eq!(
        off.wait(PATIENCE),
        Some(i32::from(exit::UNAVAILABLE)),
        "{}",
        off.transcript()
    );
    let stderr = off.stderr();
    assert!(
        stderr.contains("--resume-for 0 says not to continue it") && !stderr.contains("resumed"),
        "{}",
        off.transcript()
    );

    // Resuming for 3 s, through A, with every replica then gone: it tries for 3 s, then says so.
    let config = world.cli_config(&[A, C]);
    let mut brief = world.capture_with(&config, &session, &["--resume-for", "3s"]);
    brief.snapshots(1, |s| s["instance"] == "checkout-0");
    world.kill(C);
    world.kill(A);
    let lost_at = Instant::now();
    assert_eq!(
        brief.wait(PATIENCE),
        Some(i32::from(exit::UNAVAILABLE)),
        "{}",
        brief.transcript()
    );
    let waited = lost_at.elapsed();
    let stderr = brief.stderr();
    assert!(
        stderr.contains("trying the other addresses, then this one for up to 3s")
            && stderr.contains("no configured address took the capture over within 3s"),
        "{}",
        brief.transcript()
    );
    // It gives up when the next pause would pass the window: at most the longest pause early.
    assert!(
        waited >= Duration::from_secs(2),
        "gave up after {waited:?}, before the window: {}",
        brief.transcript()
    );
    // And not long after it: the window is the one asked for, not the 30 s default.
    assert!(
        waited < Duration::from_secs(5),
        "gave up after {waited:?}, well past the window: {}",
        brief.transcript()
    );
}

/// Makes the replicas' database refuse connections (`ALLOW_CONNECTIONS false`) and cuts the
/// ones it has, or lets it accept them again; through the cluster's `postgres` database, since
/// a database cannot refuse the connection that alters it.
fn database_reachable(name: &str, reachable: bool) {
    let cluster = loupe_tests::replicas::pg::cluster().url("postgres");
    let mut admin = postgres::Client::connect(&cluster, postgres::NoTls).expect("admin");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {reachable}"
        ))
        .expect("alter the database");
    if !reachable {
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .expect("cut the replicas' connections");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_unreachable_decisions_are_refused_with_exit_6_until_it_is_back() {
    let Some(world) = three_replicas(
        "with_the_database_unreachable_decisions_are_refused_with_exit_6_until_it_is_back",
    )
    .await
    else {
        return;
    };
    let config = world.cli_config(&ORDER);
    let open_args = [
        "session",
        "open",
        "--service",
        "checkout",
        "--points",
        "checkout.apply_discount",
        "--ttl",
        "10m",
        "--reason",
        "checkout errors spiking, INC-4711",
    ];
    let database: String = tokio::task::block_in_place(|| {
        postgres::Client::connect(&world.database, postgres::NoTls)
            .expect("connect to the replicas' database")
            .query_one("SELECT current_database()", &[])
            .expect("database name")
            .get(0)
    });
    tokio::task::block_in_place(|| database_reachable(&database, false));
    let (code, ran) =
        tokio::task::block_in_place(|| cli_command(&world, &config, "alice", &open_args));
    tokio::task::block_in_place(|| database_reachable(&database, true));
    assert_eq!(
        code,
        Some(i32::from(exit::UNAVAILABLE)),
        "{}",
        ran.transcript()
    );
    assert!(
        ran.stderr().contains(&format!(
            "the control plane at {} is unavailable",
            world.replicas[B].address
        )),
        "refused by the first replica, not routed around: {}",
        ran.transcript()
    );

    // Back: the same replicas decide again, nothing restarted.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, ran) =
            tokio::task::block_in_place(|| cli_command(&world, &config, "alice", &open_args));
        if code == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after the database came back: {}",
            ran.transcript()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Rounds of the SIGKILL loop.
const ROUNDS: usize = 4;

/// A small deterministic generator (xorshift), seeded from the clock and printed, so that a
/// failing order of kills can be replayed with `LOUPE_TEST_SEED`.
struct Dice(u64);

impl Dice {
    fn new() -> Dice {
        let seed = std::env::var("LOUPE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("SIGKILL loop seed: {seed} (LOUPE_TEST_SEED={seed} replays it)");
        Dice(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Opens sessions through `clients` in turn until `stop`; the ids of those acknowledged (a
/// replica killed mid-call answers nothing, and that session is not counted).
async fn open_sessions_until(
    mut clients: Vec<Client>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let mut turn = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let count = clients.len();
        let client = &mut clients[turn % count];
        turn += 1;
        let request = loupe_tests::open_request(&["checkout.apply_discount"], 600, "kill loop");
        if let Ok(answer) = client.open_session(request).await
            && let Some(session) = answer.into_inner().session
        {
            acknowledged.push(session.id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acknowledged
}

/// Kills a random replica while a CLI capture runs through it and sessions are opened through
/// every replica, restarts it, and again; then the log verifies offline and holds every session
/// a replica acknowledged and every snapshot a CLI printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_loop_across_replicas_loses_nothing_acknowledged() {
    let Some(mut world) =
        three_replicas("a_sigkill_loop_across_replicas_loses_nothing_acknowledged").await
    else {
        return;
    };
    let mut dice = Dice::new();
    let (mut sessions, mut printed) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let victim = usize::try_from(dice.below(3)).expect("a replica index");
        let order = [victim, (victim + 1) % 3, (victim + 2) % 3];
        let config = world.cli_config(&order);
        let mut alice = world.client(victim, "alice").await;
        let session = open_session(&mut alice).await;
        sessions.push(session.clone());
        let mut cli = world.capture(&config, &session);
        tokio::task::block_in_place(|| cli.snapshots(1, |_| true));

        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::new();
        for index in order {
            clients.push(world.client(index, "alice").await);
        }
        let opener = tokio::spawn(open_sessions_until(clients, stop.clone()));
        tokio::time::sleep(Duration::from_millis(dice.below(300))).await;
        world.kill(victim);
        let victims = format!("checkout-{victim}");
        tokio::task::block_in_place(|| {
            cli.until("failover record", PATIENCE, |l| l.failover().is_some());
            cli.snapshots(2, |s| s["instance"] != victims.as_str());
            stop_with_ctrl_c(&mut cli);
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sessions.extend(opener.await.expect("the opener"));
        printed.extend(cli.seen.iter().filter_map(|l| l.snapshot()));
        world.restart(victim).await;
    }

    let config = world.cli_config(&[A, B, C]);
    let log = tokio::task::block_in_place(|| exported_log_verifies(&world, &config));
    let opened: BTreeSet<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["action"] == "session.opened")
        .filter_map(|event| event["session"].as_str().map(str::to_owned))
        .collect();
    for session in &sessions {
        assert!(
            opened.contains(session),
            "acknowledged but not in the log: {session}"
        );
    }
    assert_recorded(&printed, &log);
    assert!(
        sessions.len() > ROUNDS,
        "sessions were opened during the kills"
    );
}
