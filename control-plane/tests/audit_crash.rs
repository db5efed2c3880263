//! Crash safety with real processes and real signals: a child process appends in a loop and
//! prints every acknowledged sequence number; the parent kills it with SIGKILL at a random
//! moment, reopens the log (which re-verifies itself) and checks that every acknowledged
//! event is there with the leaf hash the child was given. Repeated, on the same log.
//!
//! The child is this test binary itself, re-executed with `--exact` and an environment
//! variable that selects child mode.

mod fixture;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use loupe_audit::merkle::{from_hex, to_hex};

const TEST_NAME: &str = "sigkill_at_random_moments_never_loses_an_acknowledged_event";
const CHILD_DIR_ENV: &str = "LOUPE_AUDIT_CRASH_CHILD_DIR";
const ROUNDS: usize = 9;

/// Child mode: append from several threads forever, printing `ack <seq> <leaf hash>` after
/// each durable append.
fn child(dir: &str) -> ! {
    let log = Arc::new(fixture::open(std::path::Path::new(dir)));
    let start = log.size();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                loop {
                    let receipt = log
                        .append_blocking(fixture::event(start + w * 1_000_000 + i))
                        .expect("append");
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "ack {} {}", receipt.seq, to_hex(&receipt.leaf_hash));
                    let _ = out.flush();
                    i += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    std::process::exit(1)
}

/// A small PRNG seeded from the clock: the kill moments differ from run to run, and the seed
/// is printed so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_at_random_moments_never_loses_an_acknowledged_event() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        child(&dir);
    }
    let seed = std::env::var("LOUPE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash test seed: {seed} (set LOUPE_CRASH_SEED to replay)");
    let mut rng = XorShift(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acknowledged: Vec<(u64, [u8; 32])> = Vec::new();

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let acks = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acks = acks.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut parts = line.split(' ');
                    if parts.next() != Some("ack") {
                        continue;
                    }
                    let seq = parts.next().and_then(|s| s.parse::<u64>().ok());
                    let leaf = parts.next().and_then(from_hex);
                    if let (Some(seq), Some(leaf)) = (seq, leaf) {
                        acks.lock().expect("acks").push((seq, leaf));
                    }
                }
            })
        };
        // Most rounds wait for the first acknowledgement, so they kill a log that is writing;
        // every third round kills at a random moment from the start, which may land in the
        // start-up check or the first checkpoint.
        let while_writing = round % 3 != 2;
        let deadline = Instant::now() + Duration::from_secs(60);
        while while_writing && acks.lock().expect("acks").is_empty() {
            assert!(
                Instant::now() < deadline,
                "round {round}: child never appended"
            );
            assert!(
                child.try_wait().expect("child status").is_none(),
                "round {round}: child exited early"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 400));
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        let status = child.wait().expect("reap child");
        assert!(!status.success());
        reader.join().expect("reader");
        let round_acks = std::mem::take(&mut *acks.lock().expect("acks"));
        assert!(!while_writing || !round_acks.is_empty());
        acknowledged.extend(round_acks);

        // Reopening re-verifies every stored event and the latest checkpoint.
        let log = fixture::open(dir.path());
        let size = log.size();
        for (seq, leaf) in &acknowledged {
            assert!(
                *seq < size,
                "round {round}: acknowledged event {seq} lost (log has {size})"
            );
            let proof = log.inclusion_proof(*seq, size).expect("proof");
            assert_eq!(&proof.leaf_hash, leaf, "round {round}: event {seq} changed");
        }
        log.close().expect("close");
        eprintln!(
            "round {round}: {size} events, {} acknowledged so far",
            acknowledged.len()
        );
    }
    assert!(
        acknowledged.len() > 100,
        "too few acknowledged appends to mean anything"
    );
    let mut seqs: Vec<u64> = acknowledged.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        acknowledged.len(),
        "a sequence number was acknowledged twice"
    );
}
