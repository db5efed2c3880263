//! Control-plane figures over real processes and real mTLS on loopback, in one run:
//!
//! - anchor: `GetTokenKeys`, an mTLS round trip that decides and records nothing;
//! - `OpenSession`: policy for the point, then one durable commit of the two audit events
//!   (requested, opened) with the session row and the checkpoint covering them — p50/p99
//!   against the budget of p99 ≤ 10 ms;
//! - `Capture` calls per second (arm one instance, one snapshot, end), sequentially;
//! - snapshots brokered per second through one capture of two instances, each snapshot audited
//!   before it is sent, and the point-hit → snapshot-received latency on the client.
//!
//! `cargo bench -p loupe-tests --bench control_plane` (latency distributions need every sample,
//! which criterion does not report, so this bench prints its own percentiles).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loupe_tests::latency::report;
use loupe_tests::{Deployment, pb, wait_for_instances};

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run quickly then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 50 } else { 2000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(n, quick));
}

async fn run(n: usize, quick: bool) {
    let deployment = Deployment::new(EXE);
    let control_plane = deployment.start_control_plane();
    let _one = deployment.start_checkout_with_traffic(&control_plane.address, "checkout-1", 1500);
    let _two = deployment.start_checkout_with_traffic(&control_plane.address, "checkout-2", 1500);
    let mut alice = deployment.client(&control_plane.address, "alice").await;
    wait_for_instances(&mut alice, "checkout", 2).await;

    // Warm up connections, caches and the SQLite files.
    for _ in 0..20 {
        let _ = alice.get_token_keys(pb::GetTokenKeysRequest {}).await;
    }
    let open_request = pb::OpenSessionRequest {
        service: "checkout".into(),
        points: vec!["checkout.apply_discount".into()],
        ttl_seconds: 600,
        reason: "benchmark".into(),
        ticket: String::new(),
        request_id: String::new(),
    };
    for _ in 0..20 {
        alice
            .open_session(open_request.clone())
            .await
            .expect("open");
    }

    let mut anchor = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        alice
            .get_token_keys(pb::GetTokenKeysRequest {})
            .await
            .expect("keys");
        anchor.push(start.elapsed());
    }
    let (anchor_p50, anchor_p99) = report("anchor GetTokenKeys (mTLS RTT)", anchor);

    let mut opens = Vec::with_capacity(n);
    let mut session = None;
    for _ in 0..n {
        let start = Instant::now();
        let opened = alice
            .open_session(open_request.clone())
            .await
            .expect("open");
        opens.push(start.elapsed());
        session = opened.into_inner().session;
    }
    let (open_p50, open_p99) = report("OpenSession (policy + durable audit)", opens);
    println!(
        "{:<34} p50 {:.1}x anchor, p99 {:.1}x anchor; budget p99 <= 10 ms: {}",
        "",
        open_p50.as_secs_f64() / anchor_p50.as_secs_f64(),
        open_p99.as_secs_f64() / anchor_p99.as_secs_f64(),
        if open_p99 <= Duration::from_millis(10) {
            "met"
        } else {
            "MISSED"
        }
    );
    let session = session.expect("a session").id;

    let calls = if quick { 10 } else { 200 };
    let started = Instant::now();
    let mut capture_calls = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let mut stream = alice
            .capture(pb::BrokeredCaptureRequest {
                session_id: session.clone(),
                point: "checkout.apply_discount".into(),
                max_snapshots: 1,
                timeout_seconds: 10,
                ..pb::BrokeredCaptureRequest::default()
            })
            .await
            .expect("capture")
            .into_inner();
        while stream.message().await.expect("stream").is_some() {}
        capture_calls.push(start.elapsed());
    }
    let elapsed = started.elapsed();
    report("Capture call, 1 snapshot, 2 inst.", capture_calls);
    println!(
        "{:<34} {:.0} capture calls/s (sequential)",
        "",
        calls as f64 / elapsed.as_secs_f64()
    );

    let wanted = if quick { 200 } else { 10000 };
    let mut stream = alice
        .capture(pb::BrokeredCaptureRequest {
            session_id: session.clone(),
            point: "checkout.apply_discount".into(),
            max_snapshots: wanted,
            rate_per_second: 1000.0,
            timeout_seconds: 60,
            ..pb::BrokeredCaptureRequest::default()
        })
        .await
        .expect("capture")
        .into_inner();
    let mut latencies = Vec::new();
    let mut first = None;
    let mut received = 0u64;
    while let Some(event) = stream.message().await.expect("stream") {
        if let Some(pb::capture_event::Event::End(end)) = &event.event {
            println!("{:<34} ended: {end:?}", "");
        }
        if let Some(pb::capture_event::Event::Instance(status)) = &event.event
            && status.state != pb::InstanceState::Armed as i32
        {
            println!("{:<34} instance: {status:?}", "");
        }
        if let Some(pb::capture_event::Event::Snapshot(snapshot)) = event.event {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos();
            let hit = u128::try_from(snapshot.wall_time_unix_nanos).unwrap_or(0);
            latencies.push(Duration::from_nanos(
                u64::try_from(now.saturating_sub(hit)).unwrap_or(u64::MAX),
            ));
            first.get_or_insert_with(Instant::now);
            received += 1;
        }
    }
    let window = first.map(|f| f.elapsed()).unwrap_or_default();
    println!(
        "{:<34} {received} snapshots in {:.2} s = {:.0} snapshots/s (each audited before sending)",
        "brokered snapshots, 2 instances",
        window.as_secs_f64(),
        received as f64 / window.as_secs_f64().max(1e-9)
    );
    report("point hit -> snapshot at client", latencies);

    // The same through the CLI: `loupe capture --output jsonl`, a line per snapshot, read here
    // as it is printed.
    let count = if quick { 20 } else { 500 };
    let user = deployment.pki.user("alice");
    let cli_config = deployment.dir.path().join("cli.toml");
    std::fs::write(&cli_config, "# settings from the environment\n").expect("CLI config");
    let mut cli = std::process::Command::new(EXE)
        .env("LOUPE_CONFIG", &cli_config)
        .env("LOUPE_ADDRESS", &control_plane.address)
        .env("LOUPE_CERT", &user.cert)
        .env("LOUPE_KEY", &user.key)
        .env("LOUPE_CA", deployment.pki.ca_cert())
        .env(
            "LOUPE_CONTROL_PLANE_IDENTITY",
            loupe_trust::identity::control_plane_identity(loupe_tests::TRUST_DOMAIN),
        )
        .args([
            "--output",
            "jsonl",
            "capture",
            "checkout.apply_discount",
            "--session",
        ])
        .arg(&session)
        .args(["--count", &count.to_string(), "--timeout", "60s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the CLI starts");
    let stdout = cli.stdout.take().expect("piped");
    let mut printed = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let Ok(line) = line else { break };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(hit) = json["wall_time_unix_nanos"].as_u64() {
            printed.push(Duration::from_nanos(
                u64::try_from(now.saturating_sub(u128::from(hit))).unwrap_or(u64::MAX),
            ));
        }
    }
    let _ = cli.wait();
    let (cli_p50, _) = report("point hit -> printed by the CLI", printed);
    println!(
        "{:<34} budget p50 <= 20 ms: {}",
        "",
        if cli_p50 <= Duration::from_millis(20) {
            "met"
        } else {
            "MISSED"
        }
    );
}
