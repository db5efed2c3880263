//! `loupe capture POINT --session S`: arms a point through the control plane and prints what
//! the instances capture as it arrives.
//!
//! While waiting, a status line on stderr (only when stderr is a terminal) shows hits and
//! snapshots captured out of those asked for, instances armed out of those targeted, and the
//! time left before the session (or `--timeout`) ends the capture. Instance failures are
//! printed as they happen, the end reason when the capture ends.
//!
//! Exit codes: 0 when the capture ended normally (enough snapshots, `--timeout`, or every
//! instance finished); 5 when the session ended it (expired, closed, revoked) or is not
//! active; 10 when the session is still pending approval; 6 when the control plane shut down,
//! the stream broke, or every targeted instance failed before delivering anything; 130 after
//! Ctrl-C, which drops the stream (the control plane disarms the instances) and prints the
//! summary first — 130 and not 0 so a script can tell an interrupted capture from a complete
//! one.
//!
//! `--save DIR` writes each snapshot to `DIR/<session>-<capture>-<point>-<instance>-<seq>.json`
//! (the capture id is the control plane's, unique per capture, so captures never share names).
//! A file is only ever created, owner-readable only: opened with `O_CREAT|O_EXCL|O_NOFOLLOW`, so
//! an existing file is never overwritten and a symbolic link planted at the name is never
//! followed — either ends the capture with an error naming the path.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use loupe_proto::v1::capture_event::Event;
use loupe_proto::v1::{
    BrokeredCaptureRequest, CaptureEnd, CaptureEndReason, GetSessionRequest, InstanceState,
    InstanceStatus, SessionState, Snapshot,
};
use tonic::Code;

use super::session::state_label;
use super::{Context, enum_label, request_id};
use crate::cli::CaptureArgs;
use crate::duration::format_duration;
use crate::error::CliError;
use crate::exit;
use crate::render;
use crate::render::printable;
use crate::when::until_unix;

/// Progress of one capture, as the status line and the summary show it.
#[derive(Debug, Default)]
struct Progress {
    captured: u64,
    wanted: u64,
    /// Latest hit counter reported by each instance.
    hits: BTreeMap<String, u64>,
    armed: u32,
    targeted: u32,
    failed: u32,
}

impl Progress {
    fn line(&self, left: Option<Duration>) -> String {
        // Hits are only known from the counters snapshots carry; none yet says nothing.
        let mut line = if self.hits.is_empty() {
            String::new()
        } else {
            format!("hits {}  ", self.hits.values().sum::<u64>())
        };
        line.push_str(&format!(
            "captured {}/{}  instances armed {}/{}",
            self.captured, self.wanted, self.armed, self.targeted
        ));
        if self.failed > 0 {
            line.push_str(&format!("  failed {}", self.failed));
        }
        if let Some(left) = left {
            line.push_str(&format!("  ends in {}", format_duration(left)));
        }
        line
    }
}

/// A one-line status on stderr, redrawn in place; nothing at all when stderr is not a terminal.
struct StatusLine {
    enabled: bool,
    shown: bool,
}

impl StatusLine {
    fn draw(&mut self, text: &str) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
            self.shown = true;
        }
    }

    fn clear(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.shown = false;
        }
    }

    /// Prints a message on stderr above the status line.
    fn message(&mut self, text: &str) {
        self.clear();
        eprintln!("{text}");
    }
}

/// What ended the capture loop.
enum Ending {
    End(CaptureEnd),
    Interrupted,
    Broken(CliError),
}

/// A file-name-safe form of an id or point name.
fn file_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `DIR/<session>-<capture>-<point>-<instance>-<seq>.json`.
pub fn save_path(dir: &Path, snapshot: &Snapshot) -> PathBuf {
    dir.join(format!(
        "{}-{}-{}-{}-{}.json",
        file_part(&snapshot.session_id),
        file_part(&snapshot.capture_id),
        file_part(&snapshot.point),
        file_part(&snapshot.instance),
        snapshot.sequence
    ))
}

fn save(dir: &Path, snapshot: &Snapshot) -> Result<PathBuf, CliError> {
    let path = save_path(dir, snapshot);
    let text = serde_json::to_vec_pretty(&render::snapshot_json(snapshot))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let mut file = create_new(&path)?;
    if let Err(e) = file.write_all(&text).and_then(|()| file.sync_all()) {
        // Nothing half-written stays behind.
        let _ = std::fs::remove_file(&path);
        return Err(CliError::io(
            format!("saving the snapshot to {}", path.display()),
            e,
        ));
    }
    Ok(path)
}

/// Creates `path`, owner-readable only, if nothing is there — not a file, not a link — and
/// without following a link.
fn create_new(path: &Path) -> Result<File, CliError> {
    let opened = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path);
    opened.map_err(|e| {
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if is_link || e.raw_os_error() == Some(libc::ELOOP) {
            CliError::Other(format!(
                "refusing to save a snapshot to {}: it is a symbolic link, and --save never \
                 follows links (remove it, or save to a folder only you can write)",
                path.display()
            ))
        } else if e.kind() == std::io::ErrorKind::AlreadyExists {
            CliError::Other(format!(
                "refusing to save a snapshot to {}: the file exists, and --save never \
                 overwrites",
                path.display()
            ))
        } else {
            CliError::io(format!("saving the snapshot to {}", path.display()), e)
        }
    })
}

/// The end reason for people.
pub fn end_reason_label(reason: i32) -> String {
    CaptureEndReason::try_from(reason).map_or_else(
        |_| format!("reason-{reason}"),
        |r| enum_label(r.as_str_name(), "CAPTURE_END_REASON_"),
    )
}

/// The exit code for how a capture ended.
pub fn end_exit_code(end: &CaptureEnd) -> u8 {
    match CaptureEndReason::try_from(end.reason) {
        Ok(CaptureEndReason::Complete | CaptureEndReason::Timeout) => exit::OK,
        Ok(CaptureEndReason::InstancesDone) => {
            if end.delivered == 0 && end.failed_instances > 0 {
                exit::UNAVAILABLE
            } else {
                exit::OK
            }
        }
        Ok(
            CaptureEndReason::SessionExpired
            | CaptureEndReason::SessionClosed
            | CaptureEndReason::SessionRevoked,
        ) => exit::SESSION_NOT_ACTIVE,
        Ok(CaptureEndReason::Shutdown) => exit::UNAVAILABLE,
        Ok(CaptureEndReason::CertificateExpired) => exit::IDENTITY,
        _ => exit::FAILURE,
    }
}

fn instance_message(status: &InstanceStatus) -> Option<String> {
    match InstanceState::try_from(status.state) {
        Ok(InstanceState::Failed) => {
            let mut text = format!("instance {} failed", status.instance);
            if !status.code.is_empty() {
                text.push_str(&format!(": {}", status.code));
            }
            if !status.detail.is_empty() {
                text.push_str(&format!(": {}", status.detail));
            }
            Some(text)
        }
        Ok(InstanceState::Ended) => Some(format!("instance {} ended", status.instance)),
        _ => None,
    }
    .map(|text| printable(&text).into_owned())
}

/// Runs `loupe capture`.
pub async fn run(context: &Context, args: CaptureArgs) -> Result<u8, CliError> {
    if args.count == 0 {
        return Err(CliError::Usage("--count must be at least 1".into()));
    }
    let timeout_seconds = match args.timeout {
        None => 0,
        Some(t) => u32::try_from(t.as_secs().max(1))
            .map_err(|_| CliError::Usage("--timeout is too long".into()))?,
    };
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::io(format!("creating --save folder {}", dir.display()), e))?;
    }
    let mut connection = context.connect().await?;

    // The session's expiry drives the status line; asking first also turns "not active" into
    // a clear message before anything is armed.
    let session = connection
        .client
        .get_session(GetSessionRequest {
            session_id: args.session.clone(),
        })
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner()
        .session
        .ok_or_else(|| CliError::Protocol("the response carries no session".into()))?;
    match SessionState::try_from(session.state) {
        Ok(SessionState::Active) => {}
        Ok(SessionState::Pending) => {
            let text = format!(
                "session {} is pending approval from {} (an approver runs `loupe session approve {}`)",
                session.id,
                if session.awaiting_approval_from.is_empty() {
                    "an approver".to_owned()
                } else {
                    session.awaiting_approval_from.join(", ")
                },
                session.id
            );
            eprintln!("{}", printable(&text));
            return Ok(exit::PENDING_APPROVAL);
        }
        _ => {
            return Err(CliError::Status {
                code: Code::FailedPrecondition,
                message: printable(&format!(
                    "session {} is {}{} (open a new one with `loupe session open`)",
                    session.id,
                    state_label(session.state),
                    if session.end_reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", session.end_reason)
                    }
                ))
                .into_owned(),
            });
        }
    }

    let request = BrokeredCaptureRequest {
        session_id: args.session.clone(),
        point: args.point.clone(),
        condition: args.condition.clone().unwrap_or_default(),
        max_snapshots: args.count,
        instances: args.instances.clone(),
        timeout_seconds,
        request_id: request_id(),
        ..BrokeredCaptureRequest::default()
    };
    let mut stream = connection
        .client
        .capture(request)
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner();

    let started = Instant::now();
    let deadline = args.timeout.map(|t| started + t);
    let left = || {
        let session_left = until_unix(session.expires_unix);
        let timeout_left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        Some(timeout_left.map_or(session_left, |t| t.min(session_left)))
    };
    let mut status = StatusLine {
        enabled: std::io::stderr().is_terminal(),
        shown: false,
    };
    let mut progress = Progress {
        wanted: args.count,
        ..Progress::default()
    };
    let style = context.output.style();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let ending = loop {
        tokio::select! {
            _ = &mut ctrl_c => break Ending::Interrupted,
            _ = tick.tick() => status.draw(&progress.line(left())),
            message = stream.message() => match message {
                Ok(Some(event)) => match event.event {
                    Some(Event::Snapshot(snapshot)) => {
                        progress.captured += 1;
                        if let Some(drops) = &snapshot.drops {
                            progress.hits.insert(snapshot.instance.clone(), drops.hits);
                        }
                        status.clear();
                        if progress.captured > 1 && context.output.is_human() {
                            // A blank line between trees.
                            crate::output::print_text("")?;
                        }
                        context.output.stream_item(
                            || render::snapshot_tree(&snapshot, style),
                            || render::snapshot_json(&snapshot),
                        )?;
                        if let Some(dir) = &args.save {
                            match save(dir, &snapshot) {
                                Ok(_) => {}
                                Err(e) => break Ending::Broken(e),
                            }
                        }
                        status.draw(&progress.line(left()));
                    }
                    Some(Event::Instance(instance)) => {
                        progress.armed = instance.armed;
                        progress.targeted = instance.targeted;
                        if InstanceState::try_from(instance.state) == Ok(InstanceState::Failed) {
                            progress.failed += 1;
                        }
                        if let Some(text) = instance_message(&instance) {
                            status.message(&text);
                        }
                        status.draw(&progress.line(left()));
                    }
                    Some(Event::End(end)) => break Ending::End(end),
                    None => {}
                },
                Ok(None) => {
                    break Ending::Broken(CliError::Unreachable {
                        address: connection.address.clone(),
                        reason: "the capture stream ended without saying why".into(),
                    })
                }
                Err(status) => break Ending::Broken(connection.error(&status)),
            },
        }
    };
    // Dropping the stream cancels the call, which tells the control plane to disarm.
    drop(stream);
    status.clear();
    let elapsed = format_duration(started.elapsed());
    match ending {
        Ending::End(end) => {
            let mut text = format!(
                "capture ended: {} — {} snapshot(s) delivered in {elapsed}",
                end_reason_label(end.reason),
                end.delivered
            );
            if end.failed_instances > 0 {
                text.push_str(&format!(", {} instance(s) failed", end.failed_instances));
            }
            if !end.detail.is_empty() {
                text.push_str(&format!(" ({})", printable(&end.detail)));
            }
            eprintln!("{text}");
            Ok(end_exit_code(&end))
        }
        Ending::Interrupted => {
            eprintln!(
                "capture interrupted — {} snapshot(s) received in {elapsed}; the instances are disarmed",
                progress.captured
            );
            Ok(exit::INTERRUPTED)
        }
        Ending::Broken(error) => {
            eprintln!("capture stopped after {} snapshot(s)", progress.captured);
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_file_names_are_safe_and_unique() {
        let snapshot = Snapshot {
            session_id: "s-1".into(),
            capture_id: "cap-9".into(),
            point: "checkout.apply_discount".into(),
            instance: "host/1:pid".into(),
            sequence: 7,
            ..Snapshot::default()
        };
        assert_eq!(
            save_path(Path::new("/tmp/x"), &snapshot),
            PathBuf::from("/tmp/x/s-1-cap-9-checkout.apply_discount-host_1_pid-7.json")
        );
    }

    fn snapshot(capture: &str) -> Snapshot {
        Snapshot {
            session_id: "s-1".into(),
            capture_id: capture.into(),
            point: "checkout.apply_discount".into(),
            instance: "i-1".into(),
            sequence: 1,
            ..Snapshot::default()
        }
    }

    #[test]
    fn saving_never_overwrites_and_two_captures_never_share_a_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = save(dir.path(), &snapshot("cap-1")).expect("saved");
        let second = save(dir.path(), &snapshot("cap-2")).expect("saved");
        assert_ne!(first, second);
        let kept = std::fs::read(&first).expect("first file");
        let error = save(dir.path(), &snapshot("cap-1")).expect_err("exists");
        assert!(error.to_string().contains("never overwrites"), "{error}");
        assert_eq!(std::fs::read(&first).expect("first file"), kept);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("victim");
        std::fs::write(&target, "precious").expect("victim");
        let planted = save_path(dir.path(), &snapshot("cap-1"));
        std::os::unix::fs::symlink(&target, &planted).expect("symlink");
        let error = save(dir.path(), &snapshot("cap-1")).expect_err("a link");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&target).expect("victim"),
            "precious"
        );
        // A dangling link too: nothing is created at its target.
        let nowhere = dir.path().join("nowhere");
        let dangling = save_path(dir.path(), &snapshot("cap-2"));
        std::os::unix::fs::symlink(&nowhere, &dangling).expect("symlink");
        let error = save(dir.path(), &snapshot("cap-2")).expect_err("a link");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(!nowhere.exists());
    }

    #[test]
    fn end_reasons_map_to_exit_codes() {
        let end = |reason: CaptureEndReason, delivered, failed| CaptureEnd {
            reason: reason as i32,
            delivered,
            failed_instances: failed,
            detail: String::new(),
        };
        assert_eq!(end_exit_code(&end(CaptureEndReason::Complete, 5, 0)), 0);
        assert_eq!(end_exit_code(&end(CaptureEndReason::Timeout, 0, 0)), 0);
        assert_eq!(
            end_exit_code(&end(CaptureEndReason::CertificateExpired, 1, 0)),
            exit::IDENTITY
        );
        assert_eq!(
            end_exit_code(&end(CaptureEndReason::InstancesDone, 2, 1)),
            0
        );
        assert_eq!(
            end_exit_code(&end(CaptureEndReason::InstancesDone, 0, 2)),
            6
        );
        assert_eq!(
            end_exit_code(&end(CaptureEndReason::SessionExpired, 1, 0)),
            5
        );
        assert_eq!(
            end_exit_code(&end(CaptureEndReason::SessionRevoked, 1, 0)),
            5
        );
        assert_eq!(end_exit_code(&end(CaptureEndReason::Shutdown, 1, 0)), 6);
        assert_eq!(
            end_reason_label(CaptureEndReason::SessionExpired as i32),
            "session-expired"
        );
    }

    #[test]
    fn the_status_line_shows_progress_and_time_left() {
        let mut progress = Progress {
            captured: 2,
            wanted: 5,
            armed: 2,
            targeted: 3,
            ..Progress::default()
        };
        progress.hits.insert("a".into(), 10);
        progress.hits.insert("b".into(), 4);
        assert_eq!(
            progress.line(Some(Duration::from_secs(125))),
            "hits 14  captured 2/5  instances armed 2/3  ends in 2m5s"
        );
        assert_eq!(
            Progress::default().line(None),
            "captured 0/0  instances armed 0/0"
        );
        let failed = InstanceStatus {
            instance: "b".into(),
            state: InstanceState::Failed as i32,
            code: "UNAVAILABLE".into(),
            detail: "connection refused".into(),
            armed: 1,
            targeted: 2,
        };
        assert_eq!(
            instance_message(&failed).as_deref(),
            Some("instance b failed: UNAVAILABLE: connection refused")
        );
    }
}
