//! The audit log fails closed while its PostgreSQL database is unreachable, keeps running, and
//! recovers by itself once the database is back. A binary of its own: it stops the cluster that
//! every test of a binary shares.

mod backend;
mod fixture;
mod pg;

use backend::Backend;
use loupe_audit::verify::verify_export;
use loupe_control_plane::audit::log::ReadError;
use loupe_control_plane::audit::{AppendError, Filter, StoreError};

#[test]
fn an_unreachable_database_refuses_appends_and_the_log_recovers_by_itself() {
    let Some(backend) =
        Backend::postgres("an_unreachable_database_refuses_appends_and_the_log_recovers_by_itself")
    else {
        return;
    };
    let log = backend.open();
    for i in 0..5 {
        log.append_blocking(fixture::event(i)).expect("append");
    }
    assert_eq!(
        log.query(&Filter::default(), None, 100)
            .expect("read")
            .events
            .len(),
        5
    );

    pg::cluster().stop();
    // Every decision is refused while the database is gone — each one, not just the first —
    // and says why; reads fail as clearly.
    for i in 5..8 {
        match log.append_blocking(fixture::event(i)) {
            Err(AppendError::Storage(StoreError::Unavailable(reason))) => {
                assert!(!reason.is_empty());
            }
            other => panic!("append {i} with the database down: {other:?}"),
        }
    }
    assert!(matches!(
        log.query(&Filter::default(), None, 100),
        Err(ReadError::Store(StoreError::Unavailable(_)))
    ));
    assert_eq!(log.size(), 5, "nothing refused was acknowledged");

    pg::cluster().restart();
    // The same log, not reopened: it reconnects by itself, and nothing refused is in the log.
    let receipt = log
        .append_blocking(fixture::event(5))
        .expect("append after recovery");
    assert_eq!(receipt.seq, 5);
    let events = log
        .query(&Filter::default(), None, 100)
        .expect("read after recovery");
    assert_eq!(events.events.len(), 6);
    let mut export = Vec::new();
    log.export_jsonl(&mut export).expect("export");
    let verified =
        verify_export(export.as_slice(), log.verifier(), None).expect("the log verifies");
    assert_eq!(verified.events, 6);
    log.close().expect("close");
    drop(log);
    assert_eq!(backend.open().size(), 6);
}
