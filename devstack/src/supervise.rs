//! Starting Loupe processes and knowing when they serve: spawn, wait for the ready line
//! ([`loupe_proto::ready`]), stop with SIGTERM and a grace period, kill what lingers.
//!
//! One implementation for the quickstart (children's stderr to log files, errors that quote the
//! log's tail) and the end-to-end tests (stderr inherited, so a failing test shows it). Stdout
//! is drained for the child's whole life once the ready line is read, so a child never blocks
//! on a full pipe. A [`Supervised`] process is stopped when its handle drops, so neither a
//! failed quickstart nor a failed test leaves processes behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use loupe_proto::ready::ReadyLine;

/// How long a child has to stop after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where a child's stderr goes.
#[derive(Debug, Clone)]
pub enum Stderr {
    /// This process's stderr (tests: the output shows up with the failure).
    Inherit,
    /// A log file, created (truncated) at start; its tail is quoted when the child fails.
    File(PathBuf),
}

/// How to start one process and recognise its ready line.
#[derive(Debug)]
pub struct Launch {
    /// What the process is, for messages ("control plane").
    pub name: String,
    pub command: Command,
    /// The process name its ready line starts with ([`ReadyLine::process`]).
    pub ready_process: String,
    /// How long it has to print the line.
    pub ready_within: Duration,
    pub stderr: Stderr,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuperviseError {
    #[error("cannot create the log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("the {name} {state}{log}")]
    NotReady {
        name: String,
        /// "exited (…)" or "was not ready within N s".
        state: String,
        /// "; its log … ends with: …" when stderr went to a file.
        log: String,
        exit: Option<ExitStatus>,
    },
}

/// A started process that has printed its ready line.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    name: String,
    ready: ReadyLine,
}

impl Supervised {
    /// Spawns the process and waits for its ready line; a process that exits or stays silent
    /// is killed and reported.
    pub fn start(launch: Launch) -> Result<Supervised, SuperviseError> {
        let Launch {
            name,
            mut command,
            ready_process,
            ready_within,
            stderr,
        } = launch;
        let stderr_to = match &stderr {
            Stderr::Inherit => Stdio::inherit(),
            Stderr::File(path) => std::fs::File::create(path)
                .map_err(|source| SuperviseError::Log {
                    path: path.clone(),
                    source,
                })?
                .into(),
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_to)
            .spawn()
            .map_err(|source| SuperviseError::Spawn {
                name: name.clone(),
                source,
            })?;
        let ready = child
            .stdout
            .take()
            .and_then(|stdout| wait_for_ready(stdout, &ready_process, ready_within));
        match ready {
            Some(Ok(ready)) => Ok(Supervised { child, name, ready }),
            Some(Err(outcome)) => Err(not_ready(child, name, outcome, ready_within, &stderr)),
            None => Err(not_ready(
                child,
                name,
                NotReady::OutputClosed,
                ready_within,
                &stderr,
            )),
        }
    }

    /// The line the process announced itself with.
    pub fn ready(&self) -> &ReadyLine {
        &self.ready
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited, without waiting.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends SIGTERM, waits up to `grace` for the exit, then kills; returns the exit code
    /// (`None` when killed by a signal).
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.code();
        }
        // `kill` rather than a signal call: no unsafe code for what a command does as well.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    eprintln!("the {} did not stop on SIGTERM; killed", self.name);
                    self.kill();
                    return None;
                }
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate(STOP_GRACE);
        }
    }
}

/// Stops a child that never announced itself and says why, quoting its log.
fn not_ready(
    mut child: Child,
    name: String,
    outcome: NotReady,
    waited: Duration,
    stderr: &Stderr,
) -> SuperviseError {
    // A child whose output closed has exited or is about to: its status can trail the end of
    // its output by a moment, and it is what the message should say.
    let exit = match outcome {
        NotReady::OutputClosed => exit_status_within(&mut child, EXIT_STATUS_WAIT),
        NotReady::TimedOut => child.try_wait().ok().flatten(),
    };
    let _ = child.kill();
    let _ = child.wait();
    let state = match exit {
        Some(status) => format!("exited ({status})"),
        None if matches!(outcome, NotReady::OutputClosed) => {
            "closed its output without a ready line".to_owned()
        }
        None => format!("was not ready within {} s", waited.as_secs()),
    };
    let log = match stderr {
        Stderr::Inherit => String::new(),
        Stderr::File(path) => format!(
            "; its log {} ends with:\n{}",
            path.display(),
            log_tail(path)
        ),
    };
    SuperviseError::NotReady {
        name,
        state,
        log,
        exit,
    }
}

/// Why no ready line came.
#[derive(Debug, Clone, Copy)]
enum NotReady {
    /// The child's stdout ended first (it exited, or closed it).
    OutputClosed,
    /// The wait ran out.
    TimedOut,
}

/// How long an exited child's status may trail the end of its output.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// The child's exit status once it is known, waiting up to `wait` for it.
fn exit_status_within(child: &mut Child, wait: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + wait;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Reads stdout until the ready line of `process`, the deadline, or the end of output, then
/// keeps draining it on the same thread for the child's life. `None` when no reader thread
/// could be started.
fn wait_for_ready(
    stdout: std::process::ChildStdout,
    process: &str,
    within: Duration,
) -> Option<Result<ReadyLine, NotReady>> {
    let (tx, rx) = mpsc::channel();
    let process = process.to_owned();
    let spawned = std::thread::Builder::new()
        .name("loupe-ready-reader".into())
        .spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ready) = ReadyLine::parse(&line).filter(|r| r.process() == process)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(ready);
                }
            }
        });
    spawned.ok()?;
    Some(rx.recv_timeout(within).map_err(|error| match error {
        mpsc::RecvTimeoutError::Disconnected => NotReady::OutputClosed,
        mpsc::RecvTimeoutError::Timeout => NotReady::TimedOut,
    }))
}

/// The last lines of a log, to show why a child failed.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str, stderr: Stderr) -> Launch {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        Launch {
            name: "test child".into(),
            command,
            ready_process: "child".into(),
            ready_within: Duration::from_secs(10),
            stderr,
        }
    }

    #[test]
    fn the_ready_line_is_found_among_other_output_and_read_by_key() {
        let mut child = Supervised::start(shell(
            "echo starting; echo 'other ready x=1'; echo 'child ready listen=127.0.0.1:9 id=a'; \
             exec sleep 30",
            Stderr::Inherit,
        ))
        .unwrap();
        assert_eq!(child.ready().get("listen"), Some("127.0.0.1:9"));
        assert_eq!(child.ready().get("id"), Some("a"));
        assert!(!child.has_exited());
        assert_eq!(
            child.terminate(Duration::from_secs(5)),
            None,
            "sleep dies of SIGTERM"
        );
        assert!(child.has_exited());
    }

    #[test]
    fn a_child_that_exits_first_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("child.log");
        let error = Supervised::start(shell(
            "echo 'cannot bind 127.0.0.1:7443' >&2; exit 3",
            Stderr::File(log.clone()),
        ))
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("test child exited"), "{text}");
        assert!(text.contains("cannot bind 127.0.0.1:7443"), "{text}");
        assert!(matches!(
            error,
            SuperviseError::NotReady { exit: Some(status), .. } if status.code() == Some(3)
        ));
    }

    #[test]
    fn a_child_whose_exit_trails_the_end_of_its_output_is_reported_as_exited() {
        // Its output closes first and its status follows a moment later: the report waits for
        // the status instead of calling it a timeout.
        let error =
            Supervised::start(shell("exec >&-; sleep 0.3; exit 4", Stderr::Inherit)).unwrap_err();
        assert!(
            matches!(
                error,
                SuperviseError::NotReady { exit: Some(status), .. } if status.code() == Some(4)
            ),
            "{error}"
        );
    }

    #[test]
    fn a_silent_child_is_killed_after_the_wait() {
        let mut launch = shell("exec sleep 30", Stderr::Inherit);
        launch.ready_within = Duration::from_millis(200);
        let error = Supervised::start(launch).unwrap_err();
        assert!(
            error.to_string().contains("was not ready within 0 s"),
            "{error}"
        );
    }
}
