//! How snapshots reach their stream: a hit only queues its snapshot and wakes nobody; the
//! agent's thread wakes the streams whose snapshots wait, and a capture's end wakes its stream
//! so that it sees the end, whether the stream is read from async code or a plain thread.

use std::time::Duration;

use loupe_agent::{CaptureSpec, EndReason, RateLimit, snapshot};

// One point per test: tests run at once, and a capture receives every hit of its point.
fn hit_async(value: u64) {
    snapshot!("test.delivery.async", value);
}

fn hit_blocking(value: u64) {
    snapshot!("test.delivery.blocking", value);
}

fn never_hit(value: u64) {
    snapshot!("test.delivery.idle", value);
}

fn never_hit_in_a_runtime(value: u64) {
    snapshot!("test.delivery.runtime", value);
}

fn spec(point: &str) -> CaptureSpec {
    CaptureSpec::new("s-delivery", point).rate(RateLimit {
        per_second: 1_000.0,
        burst: 100,
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("runtime")
}

/// Far longer than the drain tick; reaching it means a wake was lost.
const PATIENCE: Duration = Duration::from_secs(5);

#[test]
fn a_waiting_stream_receives_what_a_hit_queued_and_ends_with_the_capture() {
    let runtime = runtime();
    let mut stream = loupe_agent::arm(spec("test.delivery.async").max_snapshots(2)).expect("armed");
    let reader = runtime.spawn(async move {
        let mut values = Vec::new();
        while let Some(snapshot) = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("a snapshot or the end within the patience")
        {
            values.push(snapshot.sequence);
        }
        (values, stream.status().ended)
    });
    // The reader is waiting on an empty queue when the hits come.
    std::thread::sleep(Duration::from_millis(50));
    hit_async(1);
    std::thread::sleep(Duration::from_millis(20));
    hit_async(2);
    hit_async(3);
    let (sequences, ended) = runtime.block_on(reader).expect("reader");
    assert_eq!(sequences, [1, 2]);
    assert_eq!(ended, Some(EndReason::Completed));
}

#[test]
fn disarming_ends_a_stream_that_waits_for_nothing() {
    let runtime = runtime();
    let _ = never_hit;
    let stream = loupe_agent::arm(spec("test.delivery.idle")).expect("armed");
    let id = stream.capture_id();
    let reader = runtime.spawn(async move {
        let mut stream = stream;
        tokio::time::timeout(PATIENCE, stream.next()).await
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(loupe_agent::Engine::global().disarm(&id, EndReason::Disarmed));
    let next = runtime.block_on(reader).expect("reader");
    assert!(matches!(next, Ok(None)), "{next:?}");
}

#[test]
fn a_blocking_reader_receives_within_ticks_and_sees_the_end() {
    let mut stream =
        loupe_agent::arm(spec("test.delivery.blocking").max_snapshots(1)).expect("armed");
    let (read, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let first = stream.blocking_next().map(|s| s.sequence);
        let end = stream.blocking_next();
        let _ = read.send((first, end.is_none()));
    });
    std::thread::sleep(Duration::from_millis(20));
    hit_blocking(7);
    // A lost wake leaves the reader parked for ever: waited for at most PATIENCE, it fails.
    let (first, ended) = outcome
        .recv_timeout(PATIENCE)
        .expect("the blocking reader got its snapshot and the end in time");
    assert_eq!(first, Some(1));
    assert!(ended);
}

/// Parking a runtime's thread would stall every task on it for a drain tick a call: the
/// blocking reader refuses, and says what to use.
#[test]
fn the_blocking_reader_refuses_to_park_a_runtime_thread() {
    never_hit_in_a_runtime(0);
    let mut stream = loupe_agent::arm(spec("test.delivery.runtime")).expect("armed");
    let refused = runtime().block_on(async {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.blocking_next()))
    });
    let message = refused.expect_err("parked inside a runtime");
    let message = message
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| message.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("await next() instead"), "{message}");
    stream.disarm();
}
