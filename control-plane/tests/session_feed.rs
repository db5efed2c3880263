//! How a replica learns what other replicas did to sessions, on a real PostgreSQL cluster (see
//! `pg/mod.rs`): the feed of `audit::notify` against logs that write as other replicas would.
//!
//! - A session's end is announced (`NOTIFY`) by the transaction that records it, and only an
//!   end is.
//! - A replica following the database gets every change others commit, in commit order, and a
//!   change whose notification was lost (the listening connection cut) is swept up anyway.
//! - One session is read as stored now, not as a replica last heard.

mod backend;
mod fixture;
mod pg;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backend::Backend;
use fixture::session_event;
use loupe_audit::event::Action;
use loupe_control_plane::audit::notify::{CHANNEL, LISTENER_NAME};
use loupe_control_plane::audit::{AuditLog, Database, SessionFeed, SessionRow};
use postgres::fallible_iterator::FallibleIterator;

/// Records `action` on `session` and stores it as `state` at `version`, through `log`.
fn put(log: &AuditLog, session: &str, action: Action, state: &str, version: u64) {
    log.append_with_state_blocking(
        vec![session_event(session, action)],
        vec![fixture::session_row(session, state, version)],
    )
    .expect("append");
}

/// A feed followed on a thread of its own; its rows arrive on `rows`, and it stops when
/// dropped.
struct Following {
    rows: mpsc::Receiver<SessionRow>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Following {
    fn start(url: &str, after: u64) -> Following {
        let feed = SessionFeed::new(Database::parse(url).expect("url"));
        let (tx, rows) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            feed.follow(after, &|| stopping.load(Ordering::SeqCst), &mut |changed| {
                for row in changed {
                    let _ = tx.send(row);
                }
            });
        });
        Following {
            rows,
            stop,
            thread: Some(thread),
        }
    }

    /// The next row heard, within `within`.
    fn next(&self, within: Duration) -> SessionRow {
        self.rows
            .recv_timeout(within)
            .expect("a session change heard in time")
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn a_session_end_is_announced_by_the_transaction_that_records_it_and_only_an_end_is() {
    let Some(backend) = Backend::postgres("a_session_end_is_announced") else {
        return;
    };
    let Backend::Postgres { url, .. } = &backend else {
        unreachable!("a PostgreSQL backend");
    };
    let log = backend.open();
    let mut listener = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    listener
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .expect("listen");
    put(&log, "ses-1", Action::SessionOpened, "active", 1);
    put(&log, "ses-1", Action::SessionRevoked, "revoked", 2);
    put(&log, "ses-2", Action::SessionDenied, "denied", 1);
    let mut heard = Vec::new();
    let mut notifications = listener.notifications();
    let mut waiting = notifications.timeout_iter(Duration::from_secs(2));
    while let Some(notification) = waiting.next().expect("notifications") {
        assert_eq!(notification.channel(), CHANNEL);
        heard.push(notification.payload().to_owned());
    }
    // The opening announced nothing; the revocation and the denial, each once.
    assert_eq!(heard, vec!["ses-1", "ses-2"]);
    log.close().expect("close");
}

#[test]
fn a_follower_hears_what_others_commit_and_sweeps_up_what_it_missed() {
    let Some(backend) = Backend::postgres("a_follower_hears_what_others_commit") else {
        return;
    };
    let Backend::Postgres { url, .. } = &backend else {
        unreachable!("a PostgreSQL backend");
    };
    let other = backend.open();
    put(&other, "ses-before", Action::SessionOpened, "active", 1);
    let following = Following::start(url, other.size());
    // What was there before it started following, it is not told again.
    put(&other, "ses-1", Action::SessionOpened, "active", 1);
    let opened = following.next(Duration::from_secs(5));
    assert_eq!((opened.id.as_str(), opened.version), ("ses-1", 1));
    let revoked_at = Instant::now();
    put(&other, "ses-1", Action::SessionRevoked, "revoked", 2);
    let revoked = following.next(Duration::from_secs(5));
    assert_eq!((revoked.state.as_str(), revoked.version), ("revoked", 2));
    println!("revocation heard after {:?}", revoked_at.elapsed());

    // The listening connection is cut, and an end committed before it listens again: its
    // notification reaches no one, and the sweep after reconnecting finds it.
    let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("admin");
    let cut: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND datname = current_database()",
            &[&LISTENER_NAME],
        )
        .expect("cut the listener")
        .get(0);
    assert_eq!(cut, 1);
    put(&other, "ses-2", Action::SessionOpened, "active", 1);
    put(&other, "ses-2", Action::SessionClosed, "closed", 2);
    let mut heard = vec![following.next(Duration::from_secs(10))];
    while heard.last().is_some_and(|row| row.version < 2) {
        heard.push(following.next(Duration::from_secs(10)));
    }
    let last = heard.last().expect("heard");
    assert_eq!((last.id.as_str(), last.state.as_str()), ("ses-2", "closed"));
    assert!(
        following.rows.try_recv().is_err(),
        "nothing heard twice or out of order"
    );
    drop(following);
    other.close().expect("close");
}

#[test]
fn one_session_is_read_as_stored_now() {
    let Some(backend) = Backend::postgres("one_session_is_read_as_stored_now") else {
        return;
    };
    let Backend::Postgres { url, .. } = &backend else {
        unreachable!("a PostgreSQL backend");
    };
    let other = backend.open();
    let feed = SessionFeed::new(Database::parse(url).expect("url"));
    assert_eq!(feed.session("ses-1").expect("read"), None);
    put(&other, "ses-1", Action::SessionOpened, "active", 1);
    assert_eq!(
        feed.session("ses-1").expect("read").map(|r| r.version),
        Some(1)
    );
    put(&other, "ses-1", Action::SessionClosed, "closed", 2);
    let stored = feed.session("ses-1").expect("read").expect("stored");
    assert_eq!((stored.state.as_str(), stored.version), ("closed", 2));

    // A database that cannot be reached: the read fails, saying so, rather than answering
    // from memory.
    let unreachable = SessionFeed::new(
        Database::parse("postgres://loupe:pw@127.0.0.1:1/loupe?connect_timeout=2").expect("url"),
    );
    let down = unreachable.session("ses-1");
    assert!(
        matches!(
            down,
            Err(loupe_control_plane::audit::StoreError::Unavailable(_))
        ),
        "{down:?}"
    );
    other.close().expect("close");
}
