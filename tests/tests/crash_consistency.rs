//! One decision, one transaction, under real crashes: engineers open, close and revoke
//! sessions concurrently while the control plane is killed with SIGKILL at a random moment;
//! after every restart the log and the session state must agree — each session's state is the
//! one its last event implies, no event names a session that does not exist, every action a
//! client was told succeeded is there — and the log verifies (the control plane re-verifies
//! it on start, and refuses to start otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loupe_tests::{Client, Deployment, audit_events, open_request, pb, wait_for_instances};

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");
const ROUNDS: usize = 6;
const POINT: &str = "checkout.apply_discount";

/// What a client was told succeeded.
#[derive(Clone, Debug)]
enum Ack {
    Opened(String),
    Closed(String),
    Revoked(String),
}

/// One engineer's loop: open a session, then close it (or have carol revoke it), forever.
async fn engineer(mut me: Client, mut carol: Client, revoke: bool, acks: Arc<Mutex<Vec<Ack>>>) {
    loop {
        let opened = me
            .open_session(open_request(&[POINT], 600, "INC-4711 crash drill"))
            .await;
        let Some(id) = opened
            .ok()
            .and_then(|r| r.into_inner().session)
            .map(|s| s.id)
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        acks.lock().expect("acks").push(Ack::Opened(id.clone()));
        let ended = if revoke {
            carol
                .revoke_session(pb::AdminRevokeSessionRequest {
                    session_id: id.clone(),
                    reason: "drill".into(),
                    ..Default::default()
                })
                .await
                .map(|_| Ack::Revoked(id))
        } else {
            me.close_session(pb::CloseSessionRequest {
                session_id: id.clone(),
                reason: "done".into(),
                ..Default::default()
            })
            .await
            .map(|_| Ack::Closed(id))
        };
        if let Ok(ack) = ended {
            acks.lock().expect("acks").push(ack);
        }
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::SessionState::try_from(state) {
        Ok(pb::SessionState::Pending) => "pending",
        Ok(pb::SessionState::Active) => "active",
        Ok(pb::SessionState::Closed) => "closed",
        Ok(pb::SessionState::Expired) => "expired",
        Ok(pb::SessionState::Revoked) => "revoked",
        Ok(pb::SessionState::Denied) => "denied",
        _ => "unknown",
    }
}

/// The state each session's allowed events imply, in log order.
fn implied_states(events: &[serde_json::Value]) -> BTreeMap<String, &'static str> {
    let mut implied = BTreeMap::new();
    for event in events {
        let (Some(session), Some(action)) = (event["session"].as_str(), event["action"].as_str())
        else {
            continue;
        };
        if event["decision"]["outcome"] != "allow" {
            continue;
        }
        let state = match action {
            "session.requested" => "pending",
            "session.opened" => "active",
            "session.closed" => "closed",
            "session.revoked" => "revoked",
            "session.denied" => "denied",
            "session.expired" => "expired",
            _ => continue,
        };
        implied.insert(session.to_owned(), state);
    }
    implied
}

/// Checks the invariants on a freshly restarted control plane.
async fn check_agreement(deployment: &Deployment, address: &str, acks: &[Ack], round: usize) {
    // carol may revoke every session of checkout, so she sees them all; dave reads the log.
    let mut carol = deployment.client(address, "carol").await;
    let mut dave = deployment.client(address, "dave").await;
    let mut stored: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut page_token = String::new();
    loop {
        let page = carol
            .list_sessions(pb::ListSessionsRequest {
                service: "checkout".into(),
                page_token,
                ..Default::default()
            })
            .await
            .expect("list sessions")
            .into_inner();
        stored.extend(
            page.sessions
                .into_iter()
                .map(|s| (s.id, state_name(s.state))),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let events = audit_events(&mut dave, pb::QueryAuditRequest::default()).await;
    let implied = implied_states(&events);
    for (id, state) in &stored {
        assert_eq!(
            implied.get(id),
            Some(state),
            "round {round}: session {id} is {state}, but its last event says {:?}",
            implied.get(id)
        );
    }
    let ghosts: BTreeSet<&String> = implied
        .keys()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        ghosts.is_empty(),
        "round {round}: the log records sessions that do not exist: {ghosts:?}"
    );
    for ack in acks {
        let (id, want) = match ack {
            Ack::Opened(id) => (id, None),
            Ack::Closed(id) => (id, Some("closed")),
            Ack::Revoked(id) => (id, Some("revoked")),
        };
        let got = stored.get(id);
        assert!(
            got.is_some(),
            "round {round}: acknowledged session {id} is gone"
        );
        if let Some(want) = want {
            assert_eq!(got, Some(&want), "round {round}: acknowledged {ack:?} lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_concurrent_clients_never_splits_the_log_from_the_state() {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("crash-consistency seed: {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let deployment = Deployment::new(EXE);
    let mut acknowledged: Vec<Ack> = Vec::new();
    for round in 0..ROUNDS {
        let mut control_plane = deployment.start_control_plane();
        let address = control_plane.address.clone();
        if round > 0 {
            // What the previous crash left is checked before anyone acts again.
            check_agreement(&deployment, &address, &acknowledged, round).await;
        }
        let checkout = deployment.start_checkout(&address, &format!("checkout-{round}"));
        let mut alice = deployment.client(&address, "alice").await;
        wait_for_instances(&mut alice, "checkout", 1).await;
        let acks = Arc::new(Mutex::new(Vec::new()));
        let mut engineers = Vec::new();
        for (i, user) in ["alice", "bob", "alice", "bob", "alice", "bob"]
            .iter()
            .enumerate()
        {
            let me = deployment.client(&address, user).await;
            let carol = deployment.client(&address, "carol").await;
            engineers.push(tokio::spawn(engineer(me, carol, i % 2 == 1, acks.clone())));
        }
        tokio::time::sleep(Duration::from_millis(300 + next() % 1200)).await;
        control_plane.kill();
        for engineer in &engineers {
            engineer.abort();
        }
        drop(checkout);
        let round_acks = std::mem::take(&mut *acks.lock().expect("acks"));
        eprintln!("round {round}: {} acknowledged actions", round_acks.len());
        acknowledged.extend(round_acks);
    }
    let control_plane = deployment.start_control_plane();
    check_agreement(&deployment, &control_plane.address, &acknowledged, ROUNDS).await;
    assert!(
        acknowledged.len() > 50,
        "too few acknowledged actions to mean anything: {}",
        acknowledged.len()
    );
}
