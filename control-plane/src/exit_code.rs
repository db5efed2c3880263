//! The exit statuses of `loupe-control-plane` and its admin commands, in one place for the
//! daemon and the commands beside it (`migrate`), which share their meaning.

/// Exit status for a configuration the process cannot use (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;
/// Exit status for a failure after start (sysexits `EX_SOFTWARE`).
pub const EXIT_FAILURE: u8 = 70;
/// Exit status when the log does not verify (as `loupe audit verify`).
pub const EXIT_UNVERIFIED: u8 = 8;
