//! The three system calls the sidecar needs that std does not wrap: `pidfd_open`, `poll` on a
//! pidfd, and `process_vm_readv`. They are kept here, each behind a safe function, so that the
//! rest of the crate has no `unsafe` at all.
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

/// The effective user id of this process, for permission errors that say who is asking.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
