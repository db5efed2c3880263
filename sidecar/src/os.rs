//! The system calls the sidecar needs that std does not wrap: `pidfd_open`, `poll` on a
//! pidfd, `process_vm_readv`, for probes `perf_event_open` with its ring buffer (`mmap`), and
//! the SIGTERM/SIGINT handler that asks the sidecar to stop (`sigaction`).
//! They are kept here, each behind a safe function or type, so that the rest of the crate has
//! no `unsafe` at all.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A file descriptor that refers to process `pid` itself, not to its number: it stays bound to
/// that process after it exits, so a recycled pid can never be mistaken for it.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd_open returned a bad fd"))?;
    // SAFETY: the kernel just returned `fd` to this process as a new descriptor, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` has exited; a pidfd becomes readable when it does.
pub fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; poll only writes `revents`.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    // An error polling a descriptor this process owns cannot say the target lives: fail closed.
    ready != 0
}

/// Copies `buf.len()` bytes at `address` in process `pid` into `buf`, without stopping it.
/// Returns how many bytes were copied; fewer than asked means the range ran into memory that
/// is not mapped (the kernel stops at the first page it cannot read).
pub fn process_vm_readv(pid: i32, address: u64, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: address as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is valid for writes of its length for the whole
    // call; `remote` is only an address in the other process, which the kernel checks.
    let copied = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    usize::try_from(copied).map_err(|_| io::Error::last_os_error())
}

/// Set by the SIGTERM/SIGINT handler; read by whoever runs the sidecar.
static STOP_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    // Only an atomic store: the one kind of thing a signal handler may safely do.
    STOP_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGTERM and SIGINT set the returned flag instead of killing the process, so that the
/// sidecar closes its probes and ends its captures before it exits.
pub fn stop_on_termination_signals() -> io::Result<&'static std::sync::atomic::AtomicBool> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid value of the C struct (empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SA_RESTART: a system call the signal lands in resumes instead of failing with EINTR.
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is fully initialised and its handler only stores to an atomic,
        // which is async-signal-safe; the old action is not asked for.
        let result = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(&STOP_REQUESTED)
}

/// The effective user id of this process, for permission errors that say who is asking.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `struct perf_event_attr` as of `PERF_ATTR_SIZE_VER7` (Linux 5.13+): the fields a uprobe
/// sampler sets; the rest stay zero.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PerfEventAttr {
    pub kind: u32,
    pub size: u32,
    pub config: u64,
    pub sample_period: u64,
    pub sample_type: u64,
    pub read_format: u64,
    pub flags: u64,
    pub wakeup_events: u32,
    pub bp_type: u32,
    /// For a uprobe: a pointer to the NUL-terminated path of the probed file.
    pub config1: u64,
    /// For a uprobe: the probe's offset in that file.
    pub config2: u64,
    pub branch_sample_type: u64,
    pub sample_regs_user: u64,
    pub sample_stack_user: u32,
    pub clockid: i32,
    pub sample_regs_intr: u64,
    pub aux_watermark: u32,
    pub sample_max_stack: u16,
    pub reserved_2: u16,
    pub aux_sample_size: u32,
    pub reserved_3: u32,
    pub sig_data: u64,
}

/// `PERF_ATTR_SIZE_VER7`.
pub const PERF_ATTR_SIZE: u32 = 128;
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == PERF_ATTR_SIZE as usize);

/// Opens a uprobe's perf event on thread `tid` (any CPU), close-on-exec. `path` is the probed
/// file, which the kernel resolves during this call.
pub fn perf_event_open_uprobe(
    attr: &PerfEventAttr,
    path: &std::ffi::CStr,
    probe_offset: u64,
    tid: i32,
) -> io::Result<OwnedFd> {
    let mut attr = *attr;
    attr.config1 = path.as_ptr() as u64;
    attr.config2 = probe_offset;
    // The kernel copies the path during the call, and `path` outlives it.
    perf_event_open(&attr, tid)
}

/// `PERF_TYPE_BREAKPOINT` and `HW_BREAKPOINT_X` from `linux/hw_breakpoint.h`.
const PERF_TYPE_BREAKPOINT: u32 = 5;
const HW_BREAKPOINT_X: u32 = 4;

/// Opens a hardware execute breakpoint at `address` in thread `tid`, counting hits only.
///
/// The sidecar never arms one: it exists so that the probe benchmark can measure what one
/// debug exception (#DB) costs on the host. A uprobe whose instruction is stepped out of line
/// ends in a #DB too, so this is the floor under the single-stepped case that no setting of
/// the sidecar's can go below (a hypervisor that intercepts #DB makes it several µs).
pub fn perf_event_open_execute_breakpoint(address: u64, tid: i32) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_BREAKPOINT,
        bp_type: HW_BREAKPOINT_X,
        // bp_addr and bp_len share their places with config1 and config2.
        config1: address,
        config2: std::mem::size_of::<libc::c_long>() as u64,
        flags: PERF_ATTR_EXCLUDE_KERNEL_AND_HV,
        ..PerfEventAttr::default()
    };
    perf_event_open(&attr, tid)
}

/// `exclude_kernel` and `exclude_hv`, bits 5 and 6 of perf_event_attr's flags.
const PERF_ATTR_EXCLUDE_KERNEL_AND_HV: u64 = (1 << 5) | (1 << 6);

/// Opens the perf event `attr` describes on thread `tid` (any CPU), close-on-exec.
fn perf_event_open(attr: &PerfEventAttr, tid: i32) -> io::Result<OwnedFd> {
    let mut attr = *attr;
    attr.size = PERF_ATTR_SIZE;
    // SAFETY: `attr` is a fully initialized perf_event_attr of the size it declares, and any
    // pointer in it (a uprobe's path) is the caller's, valid for the call; pid/cpu/group/flags
    // are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid,
            -1i32,
            -1i32,
            libc::c_ulong::from(PERF_FLAG_FD_CLOEXEC),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd =
        i32::try_from(fd).map_err(|_| io::Error::other("perf_event_open returned a bad fd"))?;
    // SAFETY: the kernel just returned `fd` to this process as a new descriptor, owned by no one.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const PERF_FLAG_FD_CLOEXEC: u32 = 8;

/// A perf event's ring buffer, mapped read-write (so the reader can advance `data_tail`),
/// unmapped when dropped.
pub struct Ring {
    base: *mut u8,
    len: usize,
    data_offset: u64,
    data_size: u64,
}

// SAFETY: the mapping belongs to this value alone; nothing in it is tied to a thread.
unsafe impl Send for Ring {}

/// Offsets in `struct perf_event_mmap_page`.
const DATA_HEAD: usize = 1024;
const DATA_TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;

impl Ring {
    /// Maps the metadata page and `pages` (a power of two) data pages of event `fd`.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, pages: usize) -> io::Result<Ring> {
        let page = 4096usize;
        let len = page * (pages + 1);
        // SAFETY: a new shared mapping of a perf event fd this process owns; the kernel checks
        // the length; the result is checked against MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = Ring {
            base: base.cast(),
            len,
            data_offset: 0,
            data_size: 0,
        };
        ring.data_offset = ring.load(DATA_OFFSET);
        ring.data_size = ring.load(DATA_SIZE);
        if ring.data_offset == 0 {
            ring.data_offset = page as u64;
        }
        if ring.data_size == 0 || ring.data_offset + ring.data_size > len as u64 {
            ring.data_size = (len - page) as u64;
        }
        Ok(ring)
    }

    fn atomic(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: `offset` is one of the 8-byte aligned u64 fields of the metadata page, which
        // is mapped for the life of `self`; the kernel writes it concurrently, hence atomic.
        unsafe { &*self.base.add(offset).cast::<std::sync::atomic::AtomicU64>() }
    }

    fn load(&self, offset: usize) -> u64 {
        self.atomic(offset)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Copies out every byte the kernel has written since the last call and gives the space
    /// back to it. The records come out whole (the caller parses them).
    pub fn drain(&self, out: &mut Vec<u8>) {
        let head = self.load(DATA_HEAD);
        let tail = self.load(DATA_TAIL);
        let size = self.data_size;
        let available = head.wrapping_sub(tail).min(size);
        let start = (tail % size) as usize;
        let first = (available as usize).min(size as usize - start);
        let second = available as usize - first;
        out.reserve(available as usize);
        // SAFETY: the data area is `data_size` bytes at `data_offset` inside the mapping, and
        // `start + first` and `second` stay within it; the kernel does not write the bytes
        // between tail and head until the tail is moved past them (below). `out` has room for
        // `available` more bytes, which are initialized by the copies before `set_len`.
        unsafe {
            let data = self.base.add(self.data_offset as usize);
            let end = out.as_mut_ptr().add(out.len());
            std::ptr::copy_nonoverlapping(data.add(start), end, first);
            std::ptr::copy_nonoverlapping(data, end.add(first), second);
            out.set_len(out.len() + available as usize);
        }
        self.atomic(DATA_TAIL).store(
            tail.wrapping_add(available),
            std::sync::atomic::Ordering::Release,
        );
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping made in `map`, unmapped once here.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}
