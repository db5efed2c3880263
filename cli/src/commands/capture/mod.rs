//! `loupe capture POINT --session S`: arms a point through the control plane and prints what
//! the instances capture as it arrives.
//!
//! While waiting, a status line on stderr (only when stderr is a terminal) shows hits and
//! snapshots captured out of those asked for, instances armed out of those targeted, and the
//! time left before the session (or `--timeout`) ends the capture. Instance failures are
//! printed as they happen, the end reason when the capture ends.
//!
//! When the control plane replica holding the stream goes away, the capture continues through
//! another configured address as a new capture in the same session, and the gap is reported:
//! a line on stderr, and with `--output json|jsonl` a `{"failover": …}` record among the
//! snapshots ([`failover`] says when, how and for how long it tries).
//!
//! Exit codes: 0 when the capture ended normally (enough snapshots, `--timeout`, or every
//! instance finished); 5 when the session ended it (expired, closed, revoked) or is not
//! active; 10 when the session is still pending approval; 6 when no replica took a lost
//! capture over in time, the control plane refused it as unavailable (its audit log failing),
//! or every targeted instance failed before delivering anything; 130 after
//! Ctrl-C, which drops the stream (the control plane disarms the instances) and prints the
//! summary first — 130 and not 0 so a script can tell an interrupted capture from a complete
//! one.
//!
//! `--save DIR` writes each snapshot to `DIR/<session>-<capture>-<point>-<instance>-<seq>.json`
//! (the capture id is the control plane's, unique per capture, so captures never share names).
//! A file is only ever created, owner-readable only: opened with `O_CREAT|O_EXCL|O_NOFOLLOW`, so
//! an existing file is never overwritten and a symbolic link planted at the name is never
//! followed — either ends the capture with an error naming the path.

pub mod failover;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use loupe_proto::v1::capture_event::Event;
use loupe_proto::v1::{
    BrokeredCaptureRequest, CaptureEnd, CaptureEndReason, CaptureEvent, GetSessionRequest,
    InstanceState, InstanceStatus, SessionInfo, SessionState, Snapshot,
};
use tonic::{Code, Status, Streaming};

use self::failover::Loss;
use super::session::state_label;
use super::{Context, enum_label, request_id};
use crate::cli::CaptureArgs;
use crate::client::Connection;
use crate::duration::format_duration;
use crate::error::{CliError, connection_lost};
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
    /// The control plane said how the capture ended.
    End(CaptureEnd),
    Interrupted,
    /// A failure that another replica would not mend.
    Broken(CliError),
    /// The replica holding the stream went away, for this reason: resume elsewhere.
    Lost(String),
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
    let timeout_seconds = checked_timeout(&args)?;
    let connection = context.connect().await?;
    let session = match active_session(&connection, &args.session).await? {
        Some(session) => session,
        None => return Ok(exit::PENDING_APPROVAL),
    };
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
    // A connection lost under the first call is a capture to resume like any other.
    let first = match connection.client.clone().capture(request.clone()).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if connection_lost(&status) => Err(printable(status.message()).into_owned()),
        Err(status) => return Err(connection.error(&status)),
    };
    let mut watch = Watch::new(context, &args, session.expires_unix);
    let ending = watch
        .follow_through_failovers(connection, first, &request)
        .await;
    watch.conclude(ending)
}

/// Checks the arguments before anything is dialed; the timeout in seconds (0: none).
fn checked_timeout(args: &CaptureArgs) -> Result<u32, CliError> {
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
    Ok(timeout_seconds)
}

/// The session, if it is active; `None` (after saying so) if it is pending approval. The
/// session's expiry drives the status line; asking first also turns "not active" into a clear
/// message before anything is armed.
async fn active_session(
    connection: &Connection,
    session_id: &str,
) -> Result<Option<SessionInfo>, CliError> {
    let session = connection
        .client
        .clone()
        .get_session(GetSessionRequest {
            session_id: session_id.to_owned(),
        })
        .await
        .map_err(|s| connection.error(&s))?
        .into_inner()
        .session
        .ok_or_else(|| CliError::Protocol("the response carries no session".into()))?;
    match SessionState::try_from(session.state) {
        Ok(SessionState::Active) => Ok(Some(session)),
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
            Ok(None)
        }
        _ => Err(CliError::Status {
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
        }),
    }
}

/// What one message (or the lack of one) on the capture stream means: an event, nothing, or
/// how the stream ended.
fn step(
    message: Result<Option<CaptureEvent>, Status>,
    address: &str,
) -> Result<Option<Event>, Ending> {
    match message {
        Ok(Some(event)) => Ok(event.event),
        Ok(None) => Err(Ending::Lost(
            "the capture stream ended without saying why".into(),
        )),
        Err(status) if connection_lost(&status) => {
            Err(Ending::Lost(printable(status.message()).into_owned()))
        }
        Err(status) => Err(Ending::Broken(CliError::from_status(&status, address))),
    }
}

/// One `loupe capture` as it runs, across failovers: what it shows, where snapshots go, and
/// when it must end.
struct Watch<'a> {
    context: &'a Context,
    save: Option<PathBuf>,
    progress: Progress,
    status: StatusLine,
    started: Instant,
    deadline: Option<Instant>,
    /// `--resume-for`: how long a lost capture is tried elsewhere.
    resume_for: Duration,
    session_expires_unix: i64,
    /// The current capture's id (from its first snapshot) and, per instance, the last
    /// sequence number received in it: what a gap report says.
    capture_id: Option<String>,
    last_sequences: BTreeMap<String, u64>,
    interrupt: Pin<Box<dyn Future<Output = std::io::Result<()>>>>,
}

impl<'a> Watch<'a> {
    fn new(context: &'a Context, args: &CaptureArgs, session_expires_unix: i64) -> Watch<'a> {
        let started = Instant::now();
        Watch {
            context,
            save: args.save.clone(),
            progress: Progress {
                wanted: args.count,
                ..Progress::default()
            },
            status: StatusLine {
                enabled: std::io::stderr().is_terminal(),
                shown: false,
            },
            started,
            deadline: args.timeout.map(|t| started + t),
            resume_for: args.resume_for,
            session_expires_unix,
            capture_id: None,
            last_sequences: BTreeMap::new(),
            interrupt: Box::pin(tokio::signal::ctrl_c()),
        }
    }

    /// Time left before the session (or `--timeout`) ends the capture.
    fn left(&self) -> Option<Duration> {
        let session_left = until_unix(self.session_expires_unix);
        let timeout_left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        Some(timeout_left.map_or(session_left, |t| t.min(session_left)))
    }

    fn redraw(&mut self) {
        let line = self.progress.line(self.left());
        self.status.draw(&line);
    }

    /// Follows the capture until it ends, resuming it through another replica whenever the
    /// one holding it is lost (see [`failover`]).
    /// `leg` is the capture's stream, or why the connection was lost before it began.
    async fn follow_through_failovers(
        &mut self,
        mut connection: Connection,
        mut leg: Result<Streaming<CaptureEvent>, String>,
        request: &BrokeredCaptureRequest,
    ) -> Ending {
        loop {
            let ending = match leg {
                // The stream is dropped once followed, which cancels the call: the control
                // plane disarms the instances.
                Ok(mut stream) => self.follow(&mut stream, &connection).await,
                Err(reason) => Ending::Lost(reason),
            };
            let Ending::Lost(reason) = ending else {
                return ending;
            };
            if let Some(end) = self.settled_without_resuming() {
                return Ending::End(end);
            }
            match self.resume(&connection, reason, request).await {
                Ok((resumed, stream)) => (connection, leg) = (resumed, Ok(stream)),
                Err(ending) => return ending,
            }
        }
    }

    /// Reads `stream` until the capture ends, breaks, or is interrupted.
    async fn follow(
        &mut self,
        stream: &mut Streaming<CaptureEvent>,
        connection: &Connection,
    ) -> Ending {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let message = tokio::select! {
                _ = &mut self.interrupt => return Ending::Interrupted,
                _ = tick.tick() => None,
                message = stream.message() => Some(message),
            };
            let Some(message) = message else {
                self.redraw();
                continue;
            };
            match step(message, &connection.address) {
                Ok(Some(Event::Snapshot(snapshot))) => {
                    if let Err(error) = self.snapshot(snapshot) {
                        return Ending::Broken(error);
                    }
                }
                Ok(Some(Event::Instance(instance))) => self.instance(&instance),
                Ok(Some(Event::End(end))) if end_is_the_replicas(&end) => {
                    return Ending::Lost(shutting_down(&end));
                }
                Ok(Some(Event::End(end))) => return Ending::End(end),
                Ok(None) => {}
                Err(ending) => return ending,
            }
        }
    }

    /// Shows (and saves) one snapshot.
    fn snapshot(&mut self, snapshot: Snapshot) -> Result<(), CliError> {
        self.progress.captured += 1;
        if let Some(drops) = &snapshot.drops {
            self.progress
                .hits
                .insert(snapshot.instance.clone(), drops.hits);
        }
        self.capture_id = Some(snapshot.capture_id.clone());
        self.last_sequences
            .insert(snapshot.instance.clone(), snapshot.sequence);
        self.status.clear();
        let output = self.context.output;
        if self.progress.captured > 1 && output.is_human() {
            // A blank line between trees.
            crate::output::print_text("")?;
        }
        output.stream_item(
            || render::snapshot_tree(&snapshot, output.style()),
            || render::snapshot_json(&snapshot),
        )?;
        if let Some(dir) = &self.save {
            save(dir, &snapshot)?;
        }
        self.redraw();
        Ok(())
    }

    /// Shows an instance's change of state.
    fn instance(&mut self, instance: &InstanceStatus) {
        self.progress.armed = instance.armed;
        self.progress.targeted = instance.targeted;
        if InstanceState::try_from(instance.state) == Ok(InstanceState::Failed) {
            self.progress.failed += 1;
        }
        if let Some(text) = instance_message(instance) {
            self.status.message(&text);
        }
        self.redraw();
    }

    /// After a loss: the end the capture reached anyway (every snapshot asked for received, or
    /// `--timeout` passed), so that nothing is resumed for nothing.
    fn settled_without_resuming(&self) -> Option<CaptureEnd> {
        let reason = if self.progress.captured >= self.progress.wanted {
            CaptureEndReason::Complete
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            CaptureEndReason::Timeout
        } else {
            return None;
        };
        Some(CaptureEnd {
            reason: reason as i32,
            delivered: self.progress.captured,
            failed_instances: self.progress.failed,
            detail: "the control plane went away before confirming the end".into(),
        })
    }

    /// Resumes the capture through another address, reporting the loss and then the gap; the
    /// ending instead when it cannot be resumed or Ctrl-C comes first.
    async fn resume(
        &mut self,
        lost: &Connection,
        reason: String,
        request: &BrokeredCaptureRequest,
    ) -> Result<(Connection, Streaming<CaptureEvent>), Ending> {
        if self.resume_for.is_zero() {
            return Err(Ending::Broken(failover::not_resuming(
                &lost.address,
                &reason,
            )));
        }
        let loss = Loss {
            address: lost.address.clone(),
            index: lost.index,
            reason,
            at: Instant::now(),
            resume_for: self.resume_for,
            capture_id: self.capture_id.take(),
            last_sequences: std::mem::take(&mut self.last_sequences),
        };
        let settings = &self.context.settings;
        let configured = settings
            .addresses
            .as_ref()
            .map_or(1, |a| a.as_slice().len());
        self.status.message(&failover::lost_line(&loss, configured));
        let request = failover::continuation(
            request,
            self.progress.captured,
            self.deadline,
            Instant::now(),
        );
        let timeout = self.context.connect_timeout;
        let resumed = tokio::select! {
            _ = &mut self.interrupt => return Err(Ending::Interrupted),
            resumed = failover::resume(settings, timeout, &loss, &request) => resumed,
        };
        let (connection, stream, gap) = resumed.map_err(Ending::Broken)?;
        self.status.message(&gap.line());
        if !self.context.output.is_human() {
            crate::output::print_json_line(&gap.json()).map_err(Ending::Broken)?;
        }
        Ok((connection, stream))
    }

    /// Says how the capture ended; the exit code.
    fn conclude(mut self, ending: Ending) -> Result<u8, CliError> {
        self.status.clear();
        let elapsed = format_duration(self.started.elapsed());
        match ending {
            Ending::End(end) => {
                let mut text = format!(
                    "capture ended: {} — {} snapshot(s) received in {elapsed}",
                    end_reason_label(end.reason),
                    self.progress.captured
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
                    self.progress.captured
                );
                Ok(exit::INTERRUPTED)
            }
            Ending::Broken(error) => {
                eprintln!(
                    "capture stopped after {} snapshot(s)",
                    self.progress.captured
                );
                Err(error)
            }
            // Never reaches here: a loss is resumed or becomes `Broken`.
            Ending::Lost(reason) => Err(CliError::Other(format!("capture lost: {reason}"))),
        }
    }
}

/// Why a capture the replica ended by shutting down is lost, for the gap report.
fn shutting_down(end: &CaptureEnd) -> String {
    if end.detail.is_empty() {
        "it is shutting down".to_owned()
    } else {
        format!("it is shutting down: {}", printable(&end.detail))
    }
}

/// Whether the control plane ended the capture because the replica itself is going away (a
/// capture worth resuming elsewhere), not for a reason of the session's or the capture's.
fn end_is_the_replicas(end: &CaptureEnd) -> bool {
    CaptureEndReason::try_from(end.reason) == Ok(CaptureEndReason::Shutdown)
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
    fn only_losing_the_replica_is_resumed_never_an_end_or_the_control_planes_refusal() {
        let lost = |message| matches!(step(message, "cp:1"), Err(Ending::Lost(_)));
        let mut reset = Status::unknown("h2 protocol error: connection reset");
        reset.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(lost(Err(reset)), "a transport error, whatever its code");
        assert!(
            lost(Ok(None)),
            "a stream closed without saying how it ended"
        );
        // Sent by the control plane: its audit log failing is exit 6 at once.
        match step(Err(Status::unavailable("audit log not writable")), "cp:1") {
            Err(Ending::Broken(error)) => assert_eq!(error.exit_code(), exit::UNAVAILABLE),
            _ => panic!("a refusal the control plane sent is not a lost replica"),
        }
        let end = |reason: CaptureEndReason| CaptureEnd {
            reason: reason as i32,
            ..CaptureEnd::default()
        };
        assert!(end_is_the_replicas(&end(CaptureEndReason::Shutdown)));
        for reason in [
            CaptureEndReason::SessionRevoked,
            CaptureEndReason::SessionExpired,
            CaptureEndReason::SessionClosed,
            CaptureEndReason::Complete,
            CaptureEndReason::Timeout,
            CaptureEndReason::CertificateExpired,
            CaptureEndReason::InstancesDone,
        ] {
            assert!(!end_is_the_replicas(&end(reason)), "{reason:?}");
        }
        assert_eq!(
            shutting_down(&end(CaptureEndReason::Shutdown)),
            "it is shutting down"
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
