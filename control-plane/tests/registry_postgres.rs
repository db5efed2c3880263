//! The agent registry on a real PostgreSQL cluster (see `pg/mod.rs`), as several replicas use
//! it: each `Registry` here is one replica's, all on one database.
//!
//! - A registration through one replica is listed by every other; a renewal through another
//!   is the same instance, its registration time kept; a move is seen everywhere.
//! - The per-identity cap counts every replica's instances, also when replicas race for the
//!   last slot.
//! - A lease that ran out is gone from every replica's reads at once, and every replica's
//!   sweep reports it once.
//! - A burst of reads shares a bounded number of connections.
//! - A database that cannot be reached fails registrations and reads as unavailable.

mod pg;

use std::net::SocketAddr;
use std::sync::Arc;

use loupe_control_plane::audit::{Database, PostgresStore, StoreError};
use loupe_control_plane::registry::{
    Announcement, Registration, RegistrationError, Registry, Rules, shared,
};
use loupe_proto::v1::PointInfo;

const NOW: u64 = 1_800_000_000;
const LEASE: u64 = 30;
const TRUST_DOMAIN: &str = "loupe.test";

/// `count` replicas' registries on a fresh database (schema migrated as a replica's audit
/// store migrates it), each allowing `cap` instances per identity.
fn replicas(test: &str, count: usize, cap: usize) -> Option<Vec<Arc<Registry>>> {
    let url = tokio::task::block_in_place(|| pg::database(test))?;
    let database = Database::parse(&url).expect("url");
    let store = tokio::task::block_in_place(|| PostgresStore::open(database.clone()))
        .expect("the schema migrates");
    tokio::task::block_in_place(|| drop(store));
    Some(
        (0..count)
            .map(|_| {
                Arc::new(Registry::shared(
                    Rules::new(TRUST_DOMAIN, LEASE, cap),
                    database.clone(),
                ))
            })
            .collect(),
    )
}

fn identity(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/agent/{service}")
}

fn announcement(service: &str, instance: &str, port: u16) -> Announcement {
    Announcement {
        service: service.into(),
        instance: instance.into(),
        address: SocketAddr::from(([127, 0, 0, 1], port)),
        version: "1.0.0".into(),
        mode: 1,
        points: vec![PointInfo {
            name: format!("{service}.total"),
            ..PointInfo::default()
        }],
    }
}

async fn names(registry: &Registry, service: &str, now: u64) -> Vec<String> {
    registry
        .instances(service, now)
        .await
        .expect("the database answers")
        .into_iter()
        .map(|i| i.announcement.instance)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_through_one_replica_is_one_instance_on_every_replica() {
    let Some(replicas) = replicas(
        "a_registration_through_one_replica_is_one_instance_on_every_replica",
        3,
        4,
    ) else {
        return;
    };
    let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);
    let id = identity("checkout");
    let first = announcement("checkout", "host-1", 7001);
    a.announce(&id, first.clone(), NOW)
        .await
        .expect("registers through A");
    for replica in [a, b, c] {
        assert_eq!(names(replica, "checkout", NOW + 1).await, ["host-1"]);
        let live = replica.live(NOW + 1).await.expect("listed");
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].announcement, first);
        let points = replica.points("checkout", NOW + 1).await.expect("points");
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].0.name, "checkout.total");
    }

    // Renewed through B: the same instance, first registered at NOW, leased from the renewal.
    assert_eq!(
        b.check(&id, &first, NOW + 10).await,
        Ok(Registration::Renewal)
    );
    let lease = b
        .announce(&id, first.clone(), NOW + 10)
        .await
        .expect("renews through B");
    assert_eq!(lease, NOW + 10 + LEASE);
    let seen = c.instances("checkout", NOW + 11).await.expect("read");
    assert_eq!(seen.len(), 1, "one instance, not two: {seen:?}");
    assert_eq!(seen[0].registered_at, NOW);
    assert_eq!(seen[0].lease_expires_at, NOW + 10 + LEASE);

    // Moved through C (another address): every replica dials the new one.
    let moved = announcement("checkout", "host-1", 7002);
    assert_eq!(
        c.check(&id, &moved, NOW + 12).await,
        Ok(Registration::Moved)
    );
    c.announce(&id, moved.clone(), NOW + 12)
        .await
        .expect("moves");
    let seen = a.instances("checkout", NOW + 13).await.expect("read");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].announcement.address, moved.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_counts_every_replicas_instances() {
    let Some(replicas) = replicas("the_cap_counts_every_replicas_instances", 3, 2) else {
        return;
    };
    let id = identity("checkout");
    replicas[0]
        .announce(&id, announcement("checkout", "h-0", 7000), NOW)
        .await
        .expect("first slot, through A");
    replicas[1]
        .announce(&id, announcement("checkout", "h-1", 7001), NOW)
        .await
        .expect("second slot, through B");
    let third = announcement("checkout", "h-2", 7002);
    for refused in [
        replicas[2].check(&id, &third, NOW).await,
        replicas[2]
            .announce(&id, third.clone(), NOW)
            .await
            .map(|_| Registration::New),
    ] {
        assert!(
            matches!(
                refused,
                Err(RegistrationError::TooManyInstances { held: 2, .. })
            ),
            "{refused:?}"
        );
    }
    // A renewal through C is no new instance.
    replicas[2]
        .announce(&id, announcement("checkout", "h-0", 7000), NOW + 5)
        .await
        .expect("a renewal through another replica");
    // Another identity's cap is its own.
    replicas[2]
        .announce(
            &identity("inventory"),
            announcement("inventory", "h-0", 7100),
            NOW,
        )
        .await
        .expect("another identity");
    // Once h-1's lease ran out (h-0 was renewed), there is room again.
    replicas[2]
        .announce(&id, third, NOW + LEASE)
        .await
        .expect("room once a lease ran out");
    assert_eq!(
        names(&replicas[0], "checkout", NOW + LEASE).await,
        ["h-0", "h-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_for_the_last_slot_admit_one() {
    let Some(replicas) = replicas("replicas_racing_for_the_last_slot_admit_one", 8, 1) else {
        return;
    };
    // A race is lost or won by timing: several rounds, each a service (identity) of its own.
    for round in 0..6 {
        let service = format!("race{round}");
        let mut racing = tokio::task::JoinSet::new();
        for (i, replica) in replicas.iter().enumerate() {
            let replica = Arc::clone(replica);
            let (id, service) = (identity(&service), service.clone());
            let port = 7000 + u16::try_from(i).expect("few");
            racing.spawn(async move {
                replica
                    .announce(&id, announcement(&service, &format!("h-{i}"), port), NOW)
                    .await
            });
        }
        let mut admitted = 0;
        while let Some(result) = racing.join_next().await {
            match result.expect("task") {
                Ok(_) => admitted += 1,
                Err(RegistrationError::TooManyInstances { .. }) => {}
                Err(other) => panic!("unexpected: {other}"),
            }
        }
        assert_eq!(admitted, 1, "round {round}: one slot, one instance");
        assert_eq!(names(&replicas[0], &service, NOW).await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_ran_out_is_gone_from_every_replica_and_each_sweep_sees_it_go() {
    let Some(replicas) = replicas(
        "a_lease_that_ran_out_is_gone_from_every_replica_and_each_sweep_sees_it_go",
        2,
        4,
    ) else {
        return;
    };
    let id = identity("checkout");
    // Each replica's first sweep marks where it starts looking from.
    for replica in &replicas {
        assert!(replica.expire(NOW).await.expect("sweeps").is_empty());
    }
    replicas[0]
        .announce(&id, announcement("checkout", "h-0", 7000), NOW)
        .await
        .expect("registers");
    replicas[1]
        .announce(&id, announcement("checkout", "h-1", 7001), NOW + 10)
        .await
        .expect("registers");
    for replica in &replicas {
        assert_eq!(
            names(replica, "checkout", NOW + LEASE - 1).await,
            ["h-0", "h-1"]
        );
        assert_eq!(names(replica, "checkout", NOW + LEASE).await, ["h-1"]);
        assert!(
            replica
                .live(NOW + LEASE + 10)
                .await
                .expect("read")
                .is_empty()
        );
    }
    for replica in &replicas {
        let gone: Vec<String> = replica
            .expire(NOW + LEASE)
            .await
            .expect("sweeps")
            .into_iter()
            .map(|i| i.announcement.instance)
            .collect();
        assert_eq!(gone, ["h-0"], "every replica's sweep sees it go");
        assert!(
            replica
                .expire(NOW + LEASE)
                .await
                .expect("sweeps")
                .is_empty()
        );
    }
    // Long gone rows are deleted, and a new registration of the name starts afresh.
    replicas[0]
        .expire(NOW + LEASE + 10 + 601)
        .await
        .expect("sweeps");
    replicas[1]
        .announce(&id, announcement("checkout", "h-0", 7000), NOW + 700)
        .await
        .expect("registers again");
    let again = replicas[0]
        .instances("checkout", NOW + 700)
        .await
        .expect("read");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].registered_at, NOW + 700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_reads_shares_a_bounded_number_of_connections() {
    let test = "a_burst_of_reads_shares_a_bounded_number_of_connections";
    let Some(url) = tokio::task::block_in_place(|| pg::database(test)) else {
        return;
    };
    let database = Database::parse(&url).expect("url");
    tokio::task::block_in_place(|| PostgresStore::open(database.clone()).map(drop))
        .expect("the schema migrates");
    let registry = Arc::new(Registry::shared(
        Rules::new(TRUST_DOMAIN, LEASE, 4),
        database,
    ));
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let registry = Arc::clone(&registry);
        reads.spawn(async move { registry.live(NOW).await });
    }
    while let Some(read) = reads.join_next().await {
        read.expect("task").expect("every read is answered");
    }
    // The connections the burst opened are kept, idle, for the next reads.
    let open: i64 = tokio::task::block_in_place(|| {
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("admin");
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = $1 AND datname = current_database()",
                &[&shared::APPLICATION_NAME],
            )
            .expect("count")
            .get(0)
    });
    assert!((1..=8).contains(&open), "{open} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_registrations_and_reads_as_unavailable() {
    // Nothing listens on the discard port of the loopback.
    let database =
        Database::parse("postgres://loupe@127.0.0.1:9/loupe?connect_timeout=2").expect("url");
    let registry = Registry::shared(Rules::new(TRUST_DOMAIN, LEASE, 4), database);
    let id = identity("checkout");
    let first = announcement("checkout", "h-0", 7000);
    assert!(matches!(
        registry.check(&id, &first, NOW).await,
        Err(RegistrationError::Store(StoreError::Unavailable(_)))
    ));
    assert!(matches!(
        registry.announce(&id, first, NOW).await,
        Err(RegistrationError::Store(StoreError::Unavailable(_)))
    ));
    assert!(matches!(
        registry.instances("checkout", NOW).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        registry.live(NOW).await,
        Err(StoreError::Unavailable(_))
    ));
    // A refusal by the rules needs no database.
    assert!(matches!(
        registry
            .announce(&id, announcement("payments", "h-0", 7000), NOW)
            .await,
        Err(RegistrationError::WrongService { .. })
    ));
}
