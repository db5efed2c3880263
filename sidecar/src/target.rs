//! The process a sidecar inspects: found by pid or pid file, held by a pidfd so that a recycled
//! pid is never read, and described by its `/proc` entries (start time, owner, mappings).
//!
//! Every refusal says what to do about it: a process that is gone, a permission the sidecar
//! lacks (CAP_SYS_PTRACE, Yama's `ptrace_scope`, another user's process), a pid file that does
//! not hold a pid.
//!
//! Pid reuse: the pidfd is opened first and the start time read after it, so the process the
//! pidfd holds is the one whose start time is recorded; every memory read is confirmed by the
//! pidfd afterwards (`Target::read`), so bytes from a process that has exited (whose pid could
//! since name another) are never used.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::os;

/// Why the sidecar cannot attach to, or keep reading, its target.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    #[error("cannot read pid file {path}: {source}")]
    PidFile { path: PathBuf, source: io::Error },
    #[error("pid file {path} does not hold a process id (it holds {content:?})")]
    PidFileContent { path: PathBuf, content: String },
    #[error("pid {pid} is not a valid process id")]
    BadPid { pid: i64 },
    #[error(
        "process {pid} does not exist (it exited, or the pid is from another PID namespace; the sidecar must share the target's PID namespace, e.g. Kubernetes `shareProcessNamespace: true`)"
    )]
    Gone { pid: i32 },
    #[error("no permission to inspect process {pid}: {advice}")]
    Permission { pid: i32, advice: String },
    #[error("process {pid}: reading {what}: {source}")]
    Proc {
        pid: i32,
        what: String,
        source: io::Error,
    },
    #[error("process {pid}: {what} is malformed: {detail}")]
    ProcFormat {
        pid: i32,
        what: String,
        detail: String,
    },
}

/// A process being inspected.
#[derive(Debug)]
pub struct Target {
    pid: i32,
    pidfd: OwnedFd,
    /// Clock ticks after boot at which it started (`/proc/PID/stat` field 22).
    start_time: u64,
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    pub path: Option<String>,
}

impl Mapping {
    /// The `/proc/PID/map_files` name of this mapping: the exact file mapped, even if it was
    /// deleted or replaced on disk since, and seen through the target's mount namespace.
    pub fn map_file(&self, pid: i32) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.start, self.end
        ))
    }
}

/// Why a read of the target's memory gave no bytes to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFault {
    /// The address is not mapped (EFAULT), or the range runs into a page that is not.
    Unmapped,
    /// Only some of the bytes could be read; the rest is unmapped.
    Partial,
    /// The process exited (its pid may already name another).
    Gone,
    /// The kernel refused (EPERM): capabilities dropped, or ptrace_scope raised, since attach.
    Permission,
    Other,
}

impl ReadFault {
    /// The words a snapshot shows for this fault.
    pub fn detail(self) -> &'static str {
        match self {
            ReadFault::Unmapped => "unreadable: the address is not mapped in the target (EFAULT)",
            ReadFault::Partial => {
                "unreadable: the value runs into memory that is not mapped (partial read)"
            }
            ReadFault::Gone => "unreadable: the target process exited",
            ReadFault::Permission => "unreadable: the kernel refused the read (EPERM)",
            ReadFault::Other => "unreadable: the read failed",
        }
    }
}

impl Target {
    /// Attaches to `pid`: holds it by a pidfd and records its start time. Nothing is stopped.
    pub fn attach(pid: i64) -> Result<Target, AttachError> {
        let pid = i32::try_from(pid)
            .ok()
            .filter(|pid| *pid > 0)
            .ok_or(AttachError::BadPid { pid })?;
        let pidfd = os::pidfd_open(pid).map_err(|error| match error.raw_os_error() {
            Some(libc::ESRCH) => AttachError::Gone { pid },
            _ => AttachError::Proc {
                pid,
                what: "a pidfd (pidfd_open needs Linux 5.3 or later)".into(),
                source: error,
            },
        })?;
        let start_time = read_start_time(pid)?;
        let target = Target {
            pid,
            pidfd,
            start_time,
        };
        target.check_readable()?;
        Ok(target)
    }

    /// Attaches to the process whose pid `path` holds.
    pub fn attach_pid_file(path: &Path) -> Result<Target, AttachError> {
        let content = std::fs::read_to_string(path).map_err(|source| AttachError::PidFile {
            path: path.to_owned(),
            source,
        })?;
        let pid = content
            .trim()
            .parse::<i64>()
            .map_err(|_| AttachError::PidFileContent {
                path: path.to_owned(),
                content: content.chars().take(64).collect(),
            })?;
        Target::attach(pid)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Whether the process has exited. Once true, it stays true.
    pub fn exited(&self) -> bool {
        os::pidfd_exited(&self.pidfd)
    }

    /// Whether `/proc/PID` still describes the process attached to (same start time): false
    /// once it has exited, even if its pid was taken by another process.
    pub fn still_same_process(&self) -> bool {
        !self.exited() && read_start_time(self.pid).ok() == Some(self.start_time)
    }

    /// Reads `buf.len()` bytes at `address`, all or nothing: a short read is a fault, never
    /// bytes to decode. The pidfd is checked after the read, so bytes from a process that had
    /// exited before the read completed are discarded rather than used.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), ReadFault> {
        let result = os::process_vm_readv(self.pid, address, buf);
        if self.exited() {
            return Err(ReadFault::Gone);
        }
        match result {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(0) => Err(ReadFault::Unmapped),
            Ok(_) => Err(ReadFault::Partial),
            Err(error) => Err(match error.raw_os_error() {
                Some(libc::EFAULT) => ReadFault::Unmapped,
                Some(libc::ESRCH) => ReadFault::Gone,
                Some(libc::EPERM) => ReadFault::Permission,
                _ => ReadFault::Other,
            }),
        }
    }

    /// The target's mappings, in address order.
    pub fn mappings(&self) -> Result<Vec<Mapping>, AttachError> {
        let text = self.read_proc("maps")?;
        text.lines()
            .map(parse_mapping)
            .collect::<Result<Vec<_>, String>>()
            .map_err(|detail| AttachError::ProcFormat {
                pid: self.pid,
                what: format!("/proc/{}/maps", self.pid),
                detail,
            })
    }

    /// The path of the target's executable as the kernel names it (may end in " (deleted)").
    pub fn exe_path(&self) -> Result<String, AttachError> {
        let path = format!("/proc/{}/exe", self.pid);
        std::fs::read_link(&path)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|source| self.proc_error("exe", source))
    }

    /// A path as the target sees it (through its root, so a container's files are found).
    pub fn in_root(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(relative)
    }

    fn read_proc(&self, entry: &str) -> Result<String, AttachError> {
        std::fs::read_to_string(format!("/proc/{}/{entry}", self.pid))
            .map_err(|source| self.proc_error(entry, source))
    }

    fn proc_error(&self, entry: &str, source: io::Error) -> AttachError {
        proc_error(self.pid, entry, source)
    }

    /// Fails with an actionable error unless the sidecar may read this process: its maps (the
    /// same check the kernel applies to `process_vm_readv`) and one byte of its memory.
    fn check_readable(&self) -> Result<(), AttachError> {
        let mappings = self.mappings()?;
        let Some(readable) = mappings.iter().find(|m| m.perms.starts_with('r')) else {
            return Ok(());
        };
        let mut byte = [0u8; 1];
        match os::process_vm_readv(self.pid, readable.start, &mut byte) {
            Ok(_) => Ok(()),
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {
                Err(AttachError::Gone { pid: self.pid })
            }
            Err(error) if error.raw_os_error() == Some(libc::EPERM) => Err(permission(self.pid)),
            // The kernel allowed the read; the page just was not readable. That is a question
            // for each value, not for attaching.
            Err(error) if error.raw_os_error() == Some(libc::EFAULT) => Ok(()),
            Err(error) => Err(self.proc_error("memory (process_vm_readv)", error)),
        }
    }
}

fn proc_error(pid: i32, entry: &str, source: io::Error) -> AttachError {
    match source.kind() {
        io::ErrorKind::NotFound => AttachError::Gone { pid },
        io::ErrorKind::PermissionDenied => permission(pid),
        _ => AttachError::Proc {
            pid,
            what: format!("/proc/{pid}/{entry}"),
            source,
        },
    }
}

/// What to do when the kernel refuses: who is asking, who owns the target, and the setting
/// that decides (capability, Yama).
pub(crate) fn permission(pid: i32) -> AttachError {
    let me = os::effective_uid();
    let owner = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".into());
    let yama = match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_owned())
        .as_deref()
    {
        Ok("3") => "; Yama ptrace_scope is 3, which forbids every process (even root) to read another's memory until reboot".to_owned(),
        Ok(scope @ ("1" | "2")) => format!("; Yama ptrace_scope is {scope}, so being the same user is not enough: CAP_SYS_PTRACE is required"),
        _ => String::new(),
    };
    AttachError::Permission {
        pid,
        advice: format!(
            "the target runs as uid {owner} and this sidecar as uid {me} without CAP_SYS_PTRACE{yama}. \
             Grant it with {}, or in Kubernetes \
             `securityContext.capabilities.add: [\"SYS_PTRACE\"]` (with `shareProcessNamespace: true`)",
            crate::grant::setcap("cap_sys_ptrace")
        ),
    }
}

/// Field 22 of `/proc/PID/stat`, counted after the command name (which may hold spaces and
/// parentheses, so the text after its last `)` is what is split).
fn read_start_time(pid: i32) -> Result<u64, AttachError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|source| proc_error(pid, "stat", source))?;
    parse_start_time(&stat).ok_or_else(|| AttachError::ProcFormat {
        pid,
        what: format!("/proc/{pid}/stat"),
        detail: "no start time after the command name".into(),
    })
}

fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    // Fields from 3 (state) on; start time is field 22.
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn parse_mapping(line: &str) -> Result<Mapping, String> {
    let bad = || format!("unexpected line {line:?}");
    let mut parts = line.splitn(6, ' ');
    let range = parts.next().ok_or_else(bad)?;
    let perms = parts.next().ok_or_else(bad)?;
    let offset = parts.next().ok_or_else(bad)?;
    let dev = parts.next().ok_or_else(bad)?;
    let inode = parts.next().ok_or_else(bad)?;
    let path = parts.next().map(str::trim).filter(|p| !p.is_empty());
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let hex = |text: &str| u64::from_str_radix(text, 16).map_err(|_| bad());
    Ok(Mapping {
        start: hex(start)?,
        end: hex(end)?,
        perms: perms.to_owned(),
        offset: hex(offset)?,
        dev: dev.to_owned(),
        inode: inode.parse().map_err(|_| bad())?,
        path: path.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_found_after_a_command_with_parentheses_and_spaces() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("1234 (x) S 1"), None);
    }

    #[test]
    fn maps_lines_parse_with_and_without_paths() {
        let file = parse_mapping(
            "55d0c7a00000-55d0c7a01000 r-xp 00001000 fd:01 1234                       /usr/bin/a b",
        )
        .expect("parses");
        assert_eq!(file.start, 0x55d0c7a00000);
        assert_eq!(file.offset, 0x1000);
        assert_eq!(file.inode, 1234);
        assert_eq!(file.path.as_deref(), Some("/usr/bin/a b"));
        let anon = parse_mapping("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 ").expect("parses");
        assert_eq!(anon.path, None);
        assert!(parse_mapping("garbage").is_err());
    }

    #[test]
    fn this_process_attaches_and_reads_itself() {
        let target = Target::attach(i64::from(std::process::id())).expect("attach to self");
        assert!(!target.exited());
        assert!(target.still_same_process());
        let value: u64 = 0x1122_3344_5566_7788;
        let mut buf = [0u8; 8];
        target
            .read(std::ptr::addr_of!(value) as u64, &mut buf)
            .expect("read own stack");
        assert_eq!(u64::from_ne_bytes(buf), value);
        assert_eq!(target.read(8, &mut buf), Err(ReadFault::Unmapped));
        // A value that runs off the end of a mapping into a gap is a partial read: a fault,
        // never the bytes that happened to be readable.
        let mappings = target.mappings().expect("own maps");
        let edge = mappings
            .windows(2)
            .find(|pair| pair[0].perms.starts_with('r') && pair[0].end < pair[1].start)
            .map(|pair| pair[0].end)
            .expect("a readable mapping followed by a gap");
        let mut straddling = [0u8; 16];
        assert_eq!(
            target.read(edge - 8, &mut straddling),
            Err(ReadFault::Partial)
        );
        assert!(matches!(Target::attach(0), Err(AttachError::BadPid { .. })));
        assert!(matches!(
            Target::attach(i64::from(i32::MAX)),
            Err(AttachError::Gone { .. })
        ));
    }
}
