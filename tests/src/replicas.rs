//! Several control-plane replicas on one PostgreSQL database, as real processes: a throwaway
//! cluster (the control plane's test harness, `control-plane/tests/pg`), one `loupe
//! control-plane` process per replica — same PKI, keys and policies, each with its own data
//! directory and address — and demo checkout instances: by default one per replica, instance
//! `checkout-<i>` registering with replica `i` (registrations are in the database, so every
//! replica lists and arms all of them), or one only ([`Demo::OnlyWith`]). Everything stops when
//! the handle drops (the cluster when the test binary exits).

use std::path::PathBuf;

use loupe_control_plane::config::FileConfig;
use loupe_devstack::stack;
use loupe_devstack::supervise::Stderr;

use crate::{Client, Deployment, PATIENCE, Process, wait_for_instances};

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
}

impl Replicas {
    /// Starts `count` replicas on a fresh database named after `test`, and a checkout instance
    /// (`per_second` synthetic requests) registered with each; returns once every replica
    /// lists its instance. `None` when PostgreSQL is missing and not required (see
    /// [`pg::database`]). `exe` is `env!("CARGO_BIN_EXE_loupe-e2e")`.
    pub async fn start(exe: &str, test: &str, count: usize, per_second: u32) -> Option<Replicas> {
        Replicas::start_with(exe, test, count, per_second, Demo::EachReplica, |_| {}).await
    }

    /// As [`Replicas::start`], with the checkout instances of `demo` and every replica's
    /// configuration changed by `adjust`; returns once each instance is listed by the replica
    /// it registered with.
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
        let replicas: Vec<Process> = (0..count)
            .map(|index| start_replica(&deployment, &database, index, &adjust))
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
        for &index in &registering {
            let mut alice = deployment.client(&replicas[index].address, "alice").await;
            wait_for_instances(&mut alice, "checkout", 1).await;
        }
        Some(Replicas {
            checkouts,
            replicas,
            deployment,
            database,
        })
    }

    /// A client of replica `index` acting as `user`.
    pub async fn client(&self, index: usize, user: &str) -> Client {
        self.deployment
            .client(&self.replicas[index].address, user)
            .await
    }
}

/// Starts replica `index` of `deployment` on `database`, its configuration changed by
/// `adjust`.
fn start_replica(
    deployment: &Deployment,
    database: &str,
    index: usize,
    adjust: &impl Fn(&mut FileConfig),
) -> Process {
    let mut config = deployment.config();
    adjust(&mut config);
    config.data_dir = Some(deployment.data_dir.join(format!("replica-{index}")));
    config.database = Some(database.to_owned());
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
