//! Bounded everything, end to end: oversize strings cost the log a few hundred bytes, refused
//! callers are rate limited, one agent identity cannot make listings unanswerable, every list
//! pages under the response cap (and the CLI follows the pages), and one engineer cannot take
//! every capture slot. Real processes over real mTLS, a real SQLite log on disk.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use loupe_tests::{
    Client, Deployment, PATIENCE, Running, assert_status, audit_events, eventually, open_request,
    pb, wait_for_instances,
};
use prost::Message;
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

/// The control plane's response cap (`MAX_RESPONSE_BYTES`).
const RESPONSE_CAP: usize = 8 * 1024 * 1024;

/// Bytes of every file under `dir` (the SQLite databases with their WAL and shared memory).
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("data folder")
        .flatten()
        .map(|entry| {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                folder_bytes(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Runs the `loupe` CLI as `user` with JSON output and returns the parsed stdout.
fn cli_json(
    deployment: &Deployment,
    control_plane: &str,
    user: &str,
    args: &[&str],
) -> serde_json::Value {
    let config = deployment.write_cli_config(control_plane);
    let output = Command::new(EXE)
        .env_remove("LOUPE_PROFILE")
        .env_remove("LOUPE_OUTPUT")
        .env_remove("LOUPE_ADDRESS")
        .env("LOUPE_CONFIG", &config)
        .env("LOUPE_STATE_DIR", deployment.dir.path().join("cli-state"))
        .env("NO_COLOR", "1")
        .args(["--profile", user, "--output", "json"])
        .args(args)
        .output()
        .expect("the CLI runs");
    assert!(
        output.status.success(),
        "loupe {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_refused_oversize_audit_queries_grow_the_data_folder_by_less_than_a_mebibyte() {
    // The folder is measured with the control plane stopped, so that SQLite has folded its
    // write-ahead log into the databases: what is measured is what the log keeps.
    let deployment = Deployment::new(EXE);
    let mut control_plane = deployment.start_control_plane();
    control_plane.terminate();
    let before = folder_bytes(&deployment.data_dir);

    let mut control_plane = deployment.start_control_plane();
    let mut erin = deployment.client(&control_plane.address, "erin").await;
    let huge = "a".repeat(1_000_000);
    for _ in 0..40 {
        let result = erin
            .query_audit(pb::QueryAuditRequest {
                actor: huge.clone(),
                ..pb::QueryAuditRequest::default()
            })
            .await
            .map(|_| ());
        assert_status(
            result,
            Code::InvalidArgument,
            "`actor` is 1000000 bytes; at most 256",
        );
    }
    // The refusals are on record, with the length and digest of what was sent, not the text.
    let mut dave = deployment.client(&control_plane.address, "dave").await;
    let refused = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            actor: "spiffe://loupe.dev/user/erin".into(),
            action: "audit.read".into(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert_eq!(refused.len(), 40, "{refused:?}");
    for event in &refused {
        assert_eq!(event["details"]["field"], "actor");
        assert_eq!(event["details"]["length"], 1_000_000);
        assert_eq!(event["details"]["sha256"].as_str().map(str::len), Some(64));
        assert!(event.to_string().len() < 2048, "{event}");
    }
    control_plane.terminate();
    let grown = folder_bytes(&deployment.data_dir).saturating_sub(before);
    eprintln!("40 refused 1 MB audit queries grew the data folder by {grown} bytes");
    assert!(
        grown < 1024 * 1024,
        "40 refused calls grew the data folder by {grown} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_deny_reasons_and_comments_are_bounded() {
    let world = Running::start(EXE, |_| {}).await;
    let mut alice = world.client("alice").await;
    let session = alice
        .open_session(open_request(&["checkout.apply_discount"], 300, "bounds"))
        .await
        .expect("opens")
        .into_inner()
        .session
        .expect("session");
    let long = "r".repeat(4096);
    assert_status(
        alice
            .close_session(pb::CloseSessionRequest {
                session_id: session.id.clone(),
                reason: long.clone(),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "`reason` is 4096 bytes; at most 1024",
    );
    assert_status(
        alice
            .approve_session(pb::ApproveSessionRequest {
                session_id: session.id.clone(),
                comment: long.clone(),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "`comment` is 4096 bytes",
    );
    assert_status(
        alice
            .get_session(pb::GetSessionRequest {
                session_id: "s".repeat(100),
            })
            .await,
        Code::InvalidArgument,
        "`session_id` is 100 bytes; at most 64",
    );
    // A reason at the bound closes it.
    alice
        .close_session(pb::CloseSessionRequest {
            session_id: session.id.clone(),
            reason: "r".repeat(1024),
            request_id: String::new(),
        })
        .await
        .expect("a reason at the bound is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_callers_are_rate_limited_and_the_limiting_is_recorded_once() {
    let world = Running::start(EXE, |c| {
        c.limits.refusal_burst = Some(5);
        c.limits.refusals_per_minute = Some(6);
    })
    .await;
    let mut erin = world.client("erin").await;
    let missing = || pb::GetSessionRequest {
        session_id: "ses-00000000000000000000".into(),
    };
    for _ in 0..5 {
        assert_status(
            erin.get_session(missing()).await,
            Code::NotFound,
            "no session",
        );
    }
    // The bucket is empty: every call is refused at once, even one that would succeed.
    for _ in 0..30 {
        assert_status(
            erin.get_session(missing()).await,
            Code::ResourceExhausted,
            "too many refused calls",
        );
    }
    assert_status(
        erin.list_services(pb::ListServicesRequest::default()).await,
        Code::ResourceExhausted,
        "at most 5 at once and 6 a minute",
    );
    // Other identities are not limited.
    let mut alice = world.client("alice").await;
    wait_for_instances(&mut alice, "checkout", 1).await;

    // Recorded once for the window, not once per call.
    let mut dave = world.client("dave").await;
    let limited = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            action: "caller.limited".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(limited[0]["actor"]["id"], "spiffe://loupe.dev/user/erin");
    assert_eq!(limited[0]["decision"]["outcome"], "deny");
    let from_erin = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            actor: "spiffe://loupe.dev/user/erin".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(from_erin.len() <= 6, "{} events from erin", from_erin.len());

    // A token comes back every ten seconds.
    eventually("erin is served again", || {
        let mut erin = erin.clone();
        async move {
            erin.list_services(pb::ListServicesRequest::default())
                .await
                .ok()
        }
    })
    .await;
}

fn hostile_registration(instance: String, version: String) -> pb::RegisterRequest {
    pb::RegisterRequest {
        service: "inventory".into(),
        instance,
        address: "127.0.0.1:9".into(),
        version,
        mode: pb::AgentMode::InProcess as i32,
        points: (0..16)
            .map(|i| pb::PointInfo {
                name: format!("inventory.{}{i:03}", "p".repeat(115)),
                fields: vec![pb::FieldInfo {
                    name: "f".repeat(128),
                    r#type: "t".repeat(256),
                }],
                ..pb::PointInfo::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_hostile_registrations_do_not_break_listing_for_other_users() {
    let world = Running::start(EXE, |c| c.limits.instances_per_agent_identity = Some(32)).await;
    let mut rogue = world.agent("inventory").await;
    let mut accepted = 0;
    let mut capped = 0;
    for i in 0..1000 {
        // The first ones carry near-1-MiB versions (a dozen used to break every listing), the
        // rest every string at its bound.
        let version = if i < 20 {
            "v".repeat(900_000)
        } else {
            "v".repeat(64)
        };
        let instance = format!("{i:04}{}", "i".repeat(124));
        match rogue
            .register(hostile_registration(instance, version))
            .await
        {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument | Code::ResourceExhausted
                    ),
                    "{status:?}"
                );
                if status.message().contains("instances_per_agent_identity") {
                    capped += 1;
                }
            }
        }
    }
    assert!(accepted <= 1000 - 20, "{accepted}");
    assert!(capped >= 1, "the instance cap never answered");

    // Every other user still lists services, in pages under the cap.
    let mut alice = world.client("alice").await;
    let mut token = String::new();
    let mut inventory = 0;
    let mut checkout = 0;
    loop {
        let page = alice
            .list_services(pb::ListServicesRequest {
                page_size: 500,
                page_token: token.clone(),
            })
            .await
            .expect("ListServices answers")
            .into_inner();
        assert!(page.encoded_len() < RESPONSE_CAP);
        for service in &page.services {
            match service.name.as_str() {
                "inventory" => inventory += service.instances.len(),
                "checkout" => checkout += service.instances.len(),
                _ => {}
            }
            assert!(service.instances.iter().all(|i| i.version.len() <= 64));
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(checkout, 1);
    assert!(inventory <= 32, "{inventory} live inventory instances");
    // And the CLI as well.
    let listed = cli_json(
        &world.deployment,
        &world.control_plane.address,
        "alice",
        &["services"],
    );
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(names.contains(&"checkout"), "{names:?}");
}

/// Registers (and keeps renewing) an instance of `checkout` with `count` points under
/// `checkout.wide.`, each name near the bound.
async fn register_wide_instance(world: &Running, count: usize) -> tokio::task::JoinHandle<()> {
    let mut agent = world.agent("checkout").await;
    let request = pb::RegisterRequest {
        service: "checkout".into(),
        instance: "wide-1".into(),
        address: "127.0.0.1:9".into(),
        version: "1.0.0".into(),
        mode: pb::AgentMode::InProcess as i32,
        points: (0..count)
            .map(|i| pb::PointInfo {
                name: format!("checkout.wide.{}{i:04}", "w".repeat(110)),
                ..pb::PointInfo::default()
            })
            .collect(),
    };
    agent
        .register(request.clone())
        .await
        .expect("a wide instance within the bounds registers");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = agent.register(request.clone()).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_under_the_response_cap_and_the_cli_lists_everything() {
    let world = Running::start(EXE, |_| {}).await;
    let renewing = register_wide_instance(&world, 256).await;
    let mut alice = world.client("alice").await;
    // Each session covers 256 points of 128 bytes (the longest point name): ~35 KiB of listing
    // per session, so 160 of them are ~5 MiB — past the cap for one answer.
    let sessions = 160;
    for _ in 0..sessions {
        let mut request = open_request(&["checkout.wide.*"], 600, &"r".repeat(1024));
        request.ticket = "T".repeat(128);
        alice
            .open_session(request)
            .await
            .expect("a session of 256 points opens");
    }
    let mut token = String::new();
    let mut listed = 0;
    let mut pages = 0;
    loop {
        let page = alice
            .list_sessions(pb::ListSessionsRequest {
                page_size: 500,
                page_token: token.clone(),
                ..pb::ListSessionsRequest::default()
            })
            .await
            .expect("each page answers")
            .into_inner();
        let bytes = page.encoded_len();
        assert!(bytes < RESPONSE_CAP, "a page of {bytes} bytes");
        listed += page.sessions.len();
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, sessions);
    assert!(pages > 1, "one page held everything");

    // Points page too (a small page size makes several pages).
    let mut token = String::new();
    let mut points = Vec::new();
    loop {
        let page = alice
            .list_points(pb::ListPointsRequest {
                service: "checkout".into(),
                page_size: 50,
                page_token: token.clone(),
            })
            .await
            .expect("ListPoints")
            .into_inner();
        assert!(page.points.len() <= 50);
        points.extend(
            page.points
                .into_iter()
                .filter_map(|p| p.point.map(|p| p.name)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let wide = points
        .iter()
        .filter(|p| p.starts_with("checkout.wide."))
        .count();
    assert_eq!(wide, 256);
    let mut sorted = points.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, points, "pages neither repeat nor reorder");

    // The CLI follows the pages.
    let cli_sessions = cli_json(
        &world.deployment,
        &world.control_plane.address,
        "alice",
        &["session", "list"],
    );
    assert_eq!(cli_sessions.as_array().map(Vec::len), Some(sessions));
    let cli_points = cli_json(
        &world.deployment,
        &world.control_plane.address,
        "alice",
        &["points", "checkout"],
    );
    assert_eq!(cli_points.as_array().map(Vec::len), Some(points.len()));
    renewing.abort();
}

fn long_capture(session: &str) -> pb::BrokeredCaptureRequest {
    pb::BrokeredCaptureRequest {
        session_id: session.into(),
        point: "checkout.apply_discount".into(),
        max_snapshots: 10_000,
        rate_per_second: 1.0,
        ..pb::BrokeredCaptureRequest::default()
    }
}

async fn open(client: &mut Client) -> String {
    client
        .open_session(open_request(&["checkout.apply_discount"], 600, "slots"))
        .await
        .expect("opens")
        .into_inner()
        .session
        .expect("session")
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engineer_cannot_take_every_capture_slot() {
    let world = Running::start(EXE, |_| {}).await;
    let mut alice = world.client("alice").await;
    // Four captures over two sessions: the default cap.
    let mut held = Vec::new();
    for _ in 0..2 {
        let session = open(&mut alice).await;
        for _ in 0..2 {
            held.push(
                alice
                    .capture(long_capture(&session))
                    .await
                    .expect("within the cap")
                    .into_inner(),
            );
        }
    }
    // A fifth, even in a fresh session the agent would still have slots for, is refused.
    let third = open(&mut alice).await;
    assert_status(
        alice.capture(long_capture(&third)).await.map(|_| ()),
        Code::ResourceExhausted,
        "captures_per_user = 4",
    );
    // Another engineer still captures.
    let mut bob = world.client("bob").await;
    let bobs = open(&mut bob).await;
    let mut request = long_capture(&bobs);
    request.max_snapshots = 1;
    request.rate_per_second = 0.0;
    let mut stream = bob
        .capture(request)
        .await
        .expect("bob has slots of his own")
        .into_inner();
    let mut got = 0;
    while let Some(event) = tokio::time::timeout(PATIENCE * 2, stream.message())
        .await
        .expect("bob's capture moves")
        .expect("bob's stream")
    {
        if matches!(event.event, Some(pb::capture_event::Event::Snapshot(_))) {
            got += 1;
        }
    }
    assert_eq!(got, 1);
    // Ending one of alice's captures gives her slot back.
    held.pop();
    eventually("alice's slot comes back", || {
        let mut alice = alice.clone();
        let third = third.clone();
        async move { alice.capture(long_capture(&third)).await.ok() }
    })
    .await;
    // The refusal is on record.
    let mut dave = world.client("dave").await;
    let refused = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: third.clone(),
            action: "capture.started".into(),
            outcome: "deny".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert!(
        refused.iter().any(|e| e["decision"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("captures_per_user"))),
        "{refused:?}"
    );
    drop(held);
}
