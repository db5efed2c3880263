//! Agent registrations shared by several control-plane replicas on one PostgreSQL database, end
//! to end: three `loupe control-plane` processes on a throwaway cluster and one demo checkout
//! instance registered with replica A only — as an agent behind a load balancer reaches one
//! replica. What must hold: B and C list the instance and its points, a capture through B arms
//! it and delivers its snapshots, the per-identity cap counts the instances registered through
//! every replica, a renewal through another replica is the same instance, and a lease that ran
//! out is gone from every replica's listing at once.
//!
//! PostgreSQL missing: skipped with the reason printed, or failed with
//! `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (CI).

use std::time::Duration;

use loupe_control_plane::config::FileConfig;
use loupe_tests::replicas::{Demo, Replicas};
use loupe_tests::{Client, PATIENCE, assert_status, audit_events, open_request, pb};
use loupe_trust::dial::ClientTls;
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

/// Replica A, the only one the demo instance registers with.
const A: usize = 0;
/// Replica B: captures run through it.
const B: usize = 1;
/// Replica C, which only reads.
const C: usize = 2;

/// The demo instance, registered with A.
const DEMO: &str = "checkout-0";

async fn registered_with_a(test: &str, adjust: impl Fn(&mut FileConfig)) -> Option<Replicas> {
    Replicas::start_with(EXE, test, 3, 50, Demo::OnlyWith(A), adjust).await
}

/// The instances of `checkout` that replica `index` lists, by name.
async fn listed(world: &Replicas, index: usize) -> Vec<String> {
    let mut alice = world.client(index, "alice").await;
    let services = alice
        .list_services(pb::ListServicesRequest::default())
        .await
        .expect("alice lists services")
        .into_inner()
        .services;
    let mut names: Vec<String> = services
        .into_iter()
        .filter(|s| s.name == "checkout")
        .flat_map(|s| s.instances)
        .map(|i| i.instance)
        .collect();
    names.sort();
    names
}

/// A client of replica `index` presenting the checkout agent's certificate.
async fn checkout_agent(world: &Replicas, index: usize) -> Client {
    let pki = &world.deployment.pki;
    let tls = ClientTls::load(&pki.tls_paths(&pki.agent("checkout"))).expect("agent TLS");
    world
        .deployment
        .client_with(&world.replicas[index].address, &tls)
        .await
}

/// A registration of checkout instance `instance`, at an address nothing listens on.
fn registration(instance: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        service: "checkout".into(),
        instance: instance.into(),
        address: "127.0.0.1:9".into(),
        version: "1.0.0".into(),
        mode: pb::AgentMode::InProcess as i32,
        points: vec![pb::PointInfo {
            name: "checkout.apply_discount".into(),
            ..pb::PointInfo::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_with_one_replica_is_listed_and_captured_through_every_other() {
    let Some(world) = registered_with_a(
        "an_instance_registered_with_one_replica_is_listed_and_captured_through_every_other",
        |_| {},
    )
    .await
    else {
        return;
    };
    // Listed by the replicas it never reached, at once: they read the database.
    for replica in [B, C] {
        assert_eq!(listed(&world, replica).await, [DEMO], "replica {replica}");
        let mut alice = world.client(replica, "alice").await;
        let points = alice
            .list_points(pb::ListPointsRequest {
                service: "checkout".into(),
                ..pb::ListPointsRequest::default()
            })
            .await
            .expect("points through a replica the agent never reached")
            .into_inner()
            .points;
        let discount = points
            .iter()
            .find(|p| {
                p.point
                    .as_ref()
                    .is_some_and(|p| p.name == "checkout.apply_discount")
            })
            .unwrap_or_else(|| panic!("replica {replica} lists the demo's point: {points:?}"));
        assert_eq!(discount.instances, 1);
    }

    // A session opened and a capture run through B reach the instance registered with A.
    let mut alice_b = world.client(B, "alice").await;
    let session = alice_b
        .open_session(open_request(
            &["checkout.apply_discount"],
            600,
            "checkout errors spiking, INC-4711",
        ))
        .await
        .expect("a session opens through B")
        .into_inner()
        .session
        .expect("session in the answer");
    let mut stream = alice_b
        .capture(pb::BrokeredCaptureRequest {
            session_id: session.id.clone(),
            point: "checkout.apply_discount".into(),
            max_snapshots: 3,
            timeout_seconds: 30,
            ..pb::BrokeredCaptureRequest::default()
        })
        .await
        .expect("a capture through B")
        .into_inner();
    let (mut armed, mut snapshots) = (Vec::new(), Vec::new());
    while let Some(event) = tokio::time::timeout(PATIENCE * 2, stream.message())
        .await
        .expect("the capture stream moves")
        .expect("the capture stream does not fail")
    {
        match event.event {
            Some(pb::capture_event::Event::Instance(i))
                if i.state == pb::InstanceState::Armed as i32 =>
            {
                armed.push(i.instance)
            }
            Some(pb::capture_event::Event::Snapshot(s)) => snapshots.push(s),
            _ => {}
        }
    }
    assert_eq!(armed, [DEMO]);
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");
    assert!(
        snapshots.iter().all(|s| s.instance == DEMO),
        "{snapshots:?}"
    );
    // B recorded what it armed and delivered.
    let mut dave = world.client(C, "dave").await;
    let delivered = audit_events(
        &mut dave,
        pb::QueryAuditRequest {
            session: session.id.clone(),
            action: "snapshot.delivered".into(),
            ..pb::QueryAuditRequest::default()
        },
    )
    .await;
    assert_eq!(delivered.len(), 3, "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_and_the_leases_hold_across_replicas() {
    let Some(world) = registered_with_a("the_cap_and_the_leases_hold_across_replicas", |config| {
        config.limits.instances_per_agent_identity = Some(2)
    })
    .await
    else {
        return;
    };
    // The demo (through A) and one more (through B) fill the identity's two slots.
    let mut agent_b = checkout_agent(&world, B).await;
    agent_b
        .register(registration("extra-1"))
        .await
        .expect("the second instance, through B");
    let mut agent_c = checkout_agent(&world, C).await;
    assert_status(
        agent_c.register(registration("extra-2")).await.map(drop),
        Code::ResourceExhausted,
        "instances_per_agent_identity",
    );
    // Renewed through C, extra-1 is still one instance.
    let lease = agent_c
        .register(registration("extra-1"))
        .await
        .expect("a renewal through another replica")
        .into_inner()
        .lease_expires_unix;
    for replica in [A, B, C] {
        assert_eq!(
            listed(&world, replica).await,
            [DEMO, "extra-1"],
            "replica {replica}"
        );
    }

    // Nothing renews extra-1 any more: once its lease ran out, no replica lists it — at once,
    // not after some replica's sweep — while the demo, renewed, stays.
    let lease_end = std::time::UNIX_EPOCH + Duration::from_secs(lease.unsigned_abs());
    let until_past = lease_end
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
        + Duration::from_secs(1);
    tokio::time::sleep(until_past).await;
    for replica in [A, B, C] {
        assert_eq!(listed(&world, replica).await, [DEMO], "replica {replica}");
    }
    // And its slot is free again, through any replica.
    agent_c
        .register(registration("extra-2"))
        .await
        .expect("room once a lease ran out");
    assert_eq!(listed(&world, B).await, [DEMO, "extra-2"]);
}
