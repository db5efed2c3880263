//! A really full disk: the log runs on a size-limited tmpfs, a file fills it, appends are
//! refused with a typed "storage is full" error, and once space returns appends succeed again
//! with no gap and the log still verifies. Finally the file system is made read-only and the
//! log refuses to start on it.
//!
//! Mounting needs root. Without it the test says so and returns — unless
//! `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (as in CI), where being unable to mount is a failure.

mod fixture;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use loupe_audit::event::Detail;
use loupe_audit::verify::verify_export;
use loupe_control_plane::audit::{AppendError, AuditLog, AuditLogConfig, StoreError};

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Option<Mount> {
    let status = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "loupe-audit-test",
        ])
        .arg(at)
        .status();
    match status {
        Ok(s) if s.success() => Some(Mount(at.to_owned())),
        other => {
            let why = format!("cannot mount a tmpfs at {} ({other:?})", at.display());
            if std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1") {
                panic!("{why}, and LOUPE_REQUIRE_PRIVILEGED_TESTS=1 requires this test to run");
            }
            eprintln!("SKIPPED the disk-full test: {why}; run as root to include it");
            None
        }
    }
}

/// Writes into `path` until the file system says it is full.
fn fill_up(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the tmpfs failed unexpectedly: {e}"),
        }
    }
    let _ = file.sync_all();
    written
}

fn big_event(i: u64) -> loupe_audit::event::NewEvent {
    fixture::event(i).detail("padding", Detail::Text("x".repeat(2000)))
}

#[test]
fn a_full_disk_refuses_appends_and_the_log_recovers_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let Some(_mount) = mount_tmpfs(&mnt, "8m") else {
        return;
    };
    let data = mnt.join("audit");
    let log = AuditLog::open(&data, fixture::signer(), AuditLogConfig::default()).expect("open");
    for i in 0..100 {
        log.append_blocking(big_event(i))
            .expect("append with space");
    }

    let filler = mnt.join("filler");
    let filled = fill_up(&filler);
    assert!(filled > 0);
    let mut accepted = 100u64;
    let refusal = loop {
        match log.append_blocking(big_event(accepted)) {
            Ok(receipt) => {
                assert_eq!(receipt.seq, accepted);
                accepted += 1;
                assert!(accepted < 10_000, "appends never failed on a full disk");
            }
            Err(e) => break e,
        }
    };
    assert!(
        matches!(refusal, AppendError::Storage(StoreError::Full(_))),
        "expected a typed disk-full error, got {refusal:?}"
    );
    assert!(refusal.to_string().contains("full"), "{refusal}");
    // Still full: still refused, nothing acknowledged.
    assert!(log.append_blocking(big_event(accepted)).is_err());
    assert_eq!(log.size(), accepted);

    std::fs::remove_file(&filler).expect("free space");
    let receipt = log
        .append_blocking(big_event(accepted))
        .expect("append after space returned");
    assert_eq!(receipt.seq, accepted, "no gap after the refused appends");
    let checkpoint = log.checkpoint_blocking().expect("checkpoint");
    assert_eq!(checkpoint.checkpoint.size, accepted + 1);
    let mut export = Vec::new();
    log.export_jsonl(&mut export).expect("export");
    let verified = verify_export(export.as_slice(), log.verifier(), None).expect("verifies");
    assert_eq!(verified.events, accepted + 1);
    log.close().expect("close");
    drop(log);

    // Reopening re-verifies everything written around the failures.
    let log = AuditLog::open(&data, fixture::signer(), AuditLogConfig::default()).expect("reopen");
    assert_eq!(log.size(), accepted + 1);
    log.close().expect("close");
    drop(log);

    // A read-only file system: the log must refuse to start rather than run unable to write.
    let remount = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .expect("remount");
    assert!(remount.success(), "remounting read-only failed");
    let result = AuditLog::open(&data, fixture::signer(), AuditLogConfig::default());
    match result {
        Err(e) => eprintln!("refused on a read-only file system: {e}"),
        Ok(log) => {
            // SQLite may open the database read-only; then the first append must fail.
            let err = log
                .append_blocking(big_event(accepted + 1))
                .expect_err("append on a read-only file system");
            assert!(matches!(err, AppendError::Storage(_)), "{err:?}");
        }
    }
}
