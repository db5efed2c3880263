//! One armed probe: kernel uprobes opened with `perf_event_open` on every thread of the
//! target, each with its own ring buffer of samples (registers and a bounded copy of the user
//! stack at the trap), read without ever stopping the target.
//!
//! **Events.** The uprobe PMU's type comes from `/sys/bus/event_source/devices/uprobe/type`;
//! `config1` is the probed file through `/proc/PID/map_files/<range>` (the exact inode mapped,
//! even if deleted or replaced on disk, and inside a container), `config2` its file offset.
//! Every hit is sampled (`sample_period = 1`) with `PERF_SAMPLE_TID | TIME | REGS_USER |
//! STACK_USER` ([`STACK_BYTES`] of stack).
//!
//! **Threads.** A per-thread event samples only its thread, and events on different tasks
//! cannot share a ring buffer, so there is one event and one [`RING_PAGES`]-page ring per
//! thread. Threads started later are found by rescanning `/proc/PID/task` (every 100 ms while
//! armed, see `crate::sidecar`); threads that are gone have their ring drained and closed.
//! `inherit` is not used: an inherited event cannot be told apart from one opened by a rescan,
//! so both together would sample a thread twice, and inheritance alone misses threads created
//! while arming. The cost: a new thread's hits in its first ≤ 100 ms trap (every thread of the
//! process pays the trap once any event exists) but are not sampled; they are still priced by
//! the breaker through the other threads' counts only, which is why the breaker's estimate
//! is a lower bound for processes that start threads constantly.
//!
//! **Disarm is close.** `PERF_EVENT_IOC_DISABLE` leaves the breakpoint in the target's code;
//! only closing every descriptor removes it, which dropping an [`Uprobe`] does. A sidecar that
//! dies (even by SIGKILL) has its descriptors closed by the kernel, so it cannot leave a trap
//! behind.
//!
//! **Counting.** Reading an event's descriptor gives its exact hit count, including hits whose
//! records the ring had no room for; `PERF_RECORD_LOST` records say how many samples were
//! dropped, and both are reported.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::os::{PerfEventAttr, Ring, perf_event_open_uprobe};

/// Data pages of each thread's ring buffer (32 KiB: about 50 samples of 600 bytes between two
/// reads; more are counted as lost).
pub const RING_PAGES: usize = 8;
/// Bytes of the user stack copied at each hit: enough for arguments passed on the stack.
pub const STACK_BYTES: u32 = 512;

const SAMPLE_TID: u64 = 1 << 1;
const SAMPLE_TIME: u64 = 1 << 2;
const SAMPLE_REGS_USER: u64 = 1 << 12;
const SAMPLE_STACK_USER: u64 = 1 << 13;
const RECORD_LOST: u32 = 2;
const RECORD_SAMPLE: u32 = 9;

/// The perf register indexes sampled, in the order the kernel writes them (ascending bit):
/// ax, bx, cx, dx, si, di, bp, sp, ip, then r8..r15. Segment registers are left out (the
/// kernel refuses ds/es/fs/gs on x86-64).
const REGS_MASK: u64 = 0x1ff | (0xff << 16);

/// DWARF register number → position in the sampled registers (see [`REGS_MASK`]).
const DWARF_TO_SAMPLED: [usize; 17] = [
    0,  // rax
    3,  // rdx
    2,  // rcx
    1,  // rbx
    4,  // rsi
    5,  // rdi
    6,  // rbp
    7,  // rsp
    9,  // r8
    10, // r9
    11, // r10
    12, // r11
    13, // r12
    14, // r13
    15, // r14
    16, // r15
    8,  // rip
];

/// Why a probe could not be armed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    #[error(
        "this kernel has no uprobe PMU (/sys/bus/event_source/devices/uprobe/type is missing): it needs CONFIG_UPROBE_EVENTS, and /sys mounted in the sidecar's namespace"
    )]
    NoUprobePmu,
    #[error(
        "not allowed to open a uprobe (perf_event_open: {source}); perf_event_paranoid is {paranoid}. {}",
        uprobes_grant()
    )]
    Permission {
        source: std::io::Error,
        paranoid: String,
    },
    #[error("this sidecar has probe points but lacks CAP_SYS_ADMIN. {}", uprobes_grant())]
    NoCapSysAdmin,
    #[error("cannot open a uprobe on {path} at offset {offset:#x} for thread {tid}: {source}")]
    Open {
        path: String,
        offset: u64,
        tid: i32,
        source: std::io::Error,
    },
    #[error("cannot list the threads of process {pid}: {source}")]
    Tasks { pid: i32, source: std::io::Error },
}

/// What to grant for uprobes, said wherever they are refused.
fn uprobes_grant() -> String {
    format!(
        "Uprobes need CAP_SYS_ADMIN (CAP_PERFMON is not enough since Linux commit ba677dbe77af): run the sidecar as root or grant it with {}, or in Kubernetes `securityContext.capabilities.add: [SYS_ADMIN, SYS_PTRACE]`",
        crate::grant::setcap("cap_sys_admin,cap_sys_ptrace")
    )
}

/// The state at one hit: the thread, its registers, and the top of its stack.
#[derive(Debug, Clone)]
pub struct Hit {
    pub tid: u32,
    pub time_ns: u64,
    regs: Vec<u64>,
    /// The bytes at `rsp` onwards, as copied by the kernel at the trap.
    pub stack: Vec<u8>,
}

impl Hit {
    /// A register by DWARF number, if it was sampled.
    pub fn register(&self, dwarf: u16) -> Option<u64> {
        let index = *DWARF_TO_SAMPLED.get(usize::from(dwarf))?;
        self.regs.get(index).copied()
    }

    /// A hit with these sampled registers (in sampling order) and stack, for tests.
    #[cfg(test)]
    pub(crate) fn for_test(regs: Vec<u64>, stack: Vec<u8>) -> Hit {
        Hit {
            tid: 0,
            time_ns: 0,
            regs,
            stack,
        }
    }

    /// `len` bytes at `address`, if they lie in the stack copied at the trap.
    pub fn stack_bytes(&self, address: u64, len: u64) -> Option<&[u8]> {
        let sp = self.register(crate::location::RSP)?;
        let start = usize::try_from(address.checked_sub(sp)?).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.stack.get(start..end)
    }
}

struct ThreadEvent {
    file: File,
    ring: Ring,
}

/// One probe's events on every thread of the target. Dropping it closes them all, which
/// removes the breakpoint.
pub struct Uprobe {
    pid: i32,
    path: CString,
    offset: u64,
    attr: PerfEventAttr,
    threads: BTreeMap<i32, ThreadEvent>,
    /// Hits counted by events of threads that have since exited.
    hits_of_closed: u64,
    lost: u64,
    buffer: Vec<u8>,
}

/// The uprobe PMU's type number.
pub fn uprobe_pmu() -> Result<u32, ProbeError> {
    std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or(ProbeError::NoUprobePmu)
}

/// Whether this process could arm a uprobe at all: the uprobe PMU exists and CAP_SYS_ADMIN is
/// effective. The sidecar refuses to start probe points without them, and a launcher (the
/// quickstart) asks first to decide whether to serve its watch points alone.
pub fn check_privileges() -> Result<(), ProbeError> {
    uprobe_pmu()?;
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    if effective & (1 << CAP_SYS_ADMIN) == 0 {
        return Err(ProbeError::NoCapSysAdmin);
    }
    Ok(())
}

impl Uprobe {
    /// Opens the probe on every thread of `pid`: `file` (a map_files path) at `offset`.
    pub fn open(pid: i32, file: &Path, offset: u64) -> Result<Uprobe, ProbeError> {
        let attr = PerfEventAttr {
            kind: uprobe_pmu()?,
            sample_period: 1,
            sample_type: SAMPLE_TID | SAMPLE_TIME | SAMPLE_REGS_USER | SAMPLE_STACK_USER,
            sample_regs_user: REGS_MASK,
            sample_stack_user: STACK_BYTES,
            ..PerfEventAttr::default()
        };
        let path = CString::new(file.as_os_str().as_bytes()).map_err(|_| ProbeError::Open {
            path: file.display().to_string(),
            offset,
            tid: pid,
            source: std::io::Error::other("the path contains a NUL byte"),
        })?;
        let mut probe = Uprobe {
            pid,
            path,
            offset,
            attr,
            threads: BTreeMap::new(),
            hits_of_closed: 0,
            lost: 0,
            buffer: Vec::new(),
        };
        probe.rescan(&mut |_| {})?;
        if probe.threads.is_empty() {
            return Err(ProbeError::Tasks {
                pid,
                source: std::io::Error::from_raw_os_error(libc::ESRCH),
            });
        }
        Ok(probe)
    }

    /// Opens events on threads started since the last scan; drains and closes those of
    /// threads that are gone (their last samples go to `each`).
    pub fn rescan(&mut self, each: &mut dyn FnMut(Hit)) -> Result<(), ProbeError> {
        let tasks = list_tasks(self.pid)?;
        let gone: Vec<i32> = self
            .threads
            .keys()
            .filter(|tid| !tasks.contains(tid))
            .copied()
            .collect();
        for tid in gone {
            if let Some(thread) = self.threads.remove(&tid) {
                self.drain_one(&thread, each);
                self.hits_of_closed += read_count(&thread.file);
            }
        }
        for tid in tasks {
            if self.threads.contains_key(&tid) {
                continue;
            }
            match self.open_thread(tid) {
                Ok(thread) => {
                    self.threads.insert(tid, thread);
                }
                // The thread exited between the listing and the open.
                Err(ProbeError::Open { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn open_thread(&self, tid: i32) -> Result<ThreadEvent, ProbeError> {
        let fd: OwnedFd = perf_event_open_uprobe(&self.attr, &self.path, self.offset, tid)
            .map_err(|source| match source.raw_os_error() {
                Some(libc::EACCES | libc::EPERM) => ProbeError::Permission {
                    source,
                    paranoid: std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_else(|_| "unknown".into()),
                },
                _ => ProbeError::Open {
                    path: self.path.to_string_lossy().into_owned(),
                    offset: self.offset,
                    tid,
                    source,
                },
            })?;
        let ring = Ring::map(fd.as_fd(), RING_PAGES).map_err(|source| ProbeError::Open {
            path: self.path.to_string_lossy().into_owned(),
            offset: self.offset,
            tid,
            source,
        })?;
        Ok(ThreadEvent {
            file: File::from(fd),
            ring,
        })
    }

    /// Passes every sample recorded since the last call to `each`, thread by thread.
    pub fn drain(&mut self, each: &mut dyn FnMut(Hit)) {
        let threads = std::mem::take(&mut self.threads);
        for thread in threads.values() {
            self.drain_one(thread, each);
        }
        self.threads = threads;
    }

    fn drain_one(&mut self, thread: &ThreadEvent, each: &mut dyn FnMut(Hit)) {
        self.buffer.clear();
        thread.ring.drain(&mut self.buffer);
        let mut at = 0usize;
        while let Some(header) = self.buffer.get(at..at + 8) {
            let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let size = usize::from(u16::from_le_bytes([header[6], header[7]]));
            if size < 8 {
                break; // a corrupt record: the rest of this read cannot be framed
            }
            let Some(body) = self.buffer.get(at + 8..at + size) else {
                break;
            };
            match kind {
                RECORD_SAMPLE => {
                    if let Some(hit) = parse_sample(body) {
                        each(hit);
                    }
                }
                RECORD_LOST => {
                    let lost = body
                        .get(8..16)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                        .unwrap_or(0);
                    self.lost = self.lost.saturating_add(lost);
                }
                _ => {}
            }
            at += size;
        }
    }

    /// Every hit of this probe so far, on threads with an event (exact, lost samples
    /// included).
    pub fn hits(&self) -> u64 {
        self.threads
            .values()
            .map(|thread| read_count(&thread.file))
            .fold(self.hits_of_closed, u64::saturating_add)
    }

    /// Samples the rings had no room for.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Threads with an event open.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

/// A hardware execute breakpoint at `address` in this process's thread `tid`, counting only,
/// for as long as the value lives.
///
/// Not a probe: the benchmark's measure of one debug exception (#DB) on this host, the floor
/// under a single-stepped uprobe, whose out-of-line step ends in one (see
/// `os::perf_event_open_execute_breakpoint`). [`DebugTrapCounter::hits`] shows that the
/// breakpoint really fired.
pub struct DebugTrapCounter {
    file: File,
}

impl DebugTrapCounter {
    /// Opens the breakpoint; needs what a uprobe needs (root, or a permissive
    /// `perf_event_paranoid`).
    pub fn open(address: u64, tid: i32) -> std::io::Result<DebugTrapCounter> {
        let fd = crate::os::perf_event_open_execute_breakpoint(address, tid)?;
        Ok(DebugTrapCounter {
            file: File::from(fd),
        })
    }

    /// The breakpoint's hits so far.
    pub fn hits(&self) -> u64 {
        read_count(&self.file)
    }
}

fn read_count(mut file: &File) -> u64 {
    let mut count = [0u8; 8];
    match file.read(&mut count) {
        Ok(8) => u64::from_le_bytes(count),
        _ => 0,
    }
}

fn list_tasks(pid: i32) -> Result<Vec<i32>, ProbeError> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|source| ProbeError::Tasks { pid, source })?;
    Ok(entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// A `PERF_RECORD_SAMPLE` body with the sample type [`Uprobe::open`] asks for.
fn parse_sample(body: &[u8]) -> Option<Hit> {
    let mut at = 0usize;
    let u64_at = |at: &mut usize| -> Option<u64> {
        let value = u64::from_le_bytes(body.get(*at..*at + 8)?.try_into().ok()?);
        *at += 8;
        Some(value)
    };
    let pid_tid = u64_at(&mut at)?;
    let tid = (pid_tid >> 32) as u32;
    let time_ns = u64_at(&mut at)?;
    let abi = u64_at(&mut at)?;
    let mut regs = Vec::new();
    if abi != 0 {
        for _ in 0..REGS_MASK.count_ones() {
            regs.push(u64_at(&mut at)?);
        }
    }
    let size = usize::try_from(u64_at(&mut at)?).ok()?;
    let mut stack = Vec::new();
    if size != 0 {
        let data = body.get(at..at.checked_add(size)?)?;
        at += size;
        let dynamic = usize::try_from(u64_at(&mut at)?).ok()?;
        stack.extend_from_slice(&data[..dynamic.min(size)]);
    }
    Some(Hit {
        tid,
        time_ns,
        regs,
        stack,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_parses_into_registers_by_dwarf_number_and_the_stack() {
        let mut body = Vec::new();
        body.extend_from_slice(&(((42u64) << 32) | 40).to_le_bytes());
        body.extend_from_slice(&1234u64.to_le_bytes());
        body.extend_from_slice(&2u64.to_le_bytes()); // PERF_SAMPLE_REGS_ABI_64
        for index in 0..REGS_MASK.count_ones() as u64 {
            body.extend_from_slice(&(100 + index).to_le_bytes());
        }
        body.extend_from_slice(&16u64.to_le_bytes());
        body.extend_from_slice(&[7u8; 16]);
        body.extend_from_slice(&8u64.to_le_bytes());
        let hit = parse_sample(&body).expect("parses");
        assert_eq!(hit.tid, 42);
        assert_eq!(hit.time_ns, 1234);
        assert_eq!(hit.register(5), Some(105), "rdi is perf index 5");
        assert_eq!(hit.register(1), Some(103), "rdx is perf index 3");
        assert_eq!(hit.register(8), Some(109), "r8 follows ip");
        assert_eq!(hit.register(7), Some(107), "rsp");
        assert_eq!(hit.stack, [7u8; 8], "only the dynamic size is valid");
        assert_eq!(hit.stack_bytes(107, 8), Some(&[7u8; 8][..]));
        assert_eq!(hit.stack_bytes(108, 8), None);
        assert!(
            parse_sample(&body[..30]).is_none(),
            "a short record is refused"
        );
    }
}
