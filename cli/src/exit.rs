//! Exit codes: the numbers scripts can rely on, and the mapping from gRPC statuses to them.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | anything else (an unexpected failure) |
//! | 2 | usage: a bad flag, argument, duration or configuration, or a request the control plane found malformed (`INVALID_ARGUMENT`, e.g. a CEL condition that does not compile) |
//! | 3 | denied by policy (`PERMISSION_DENIED`) |
//! | 4 | not found: no such session, service, point or audit event (`NOT_FOUND`) |
//! | 5 | the session is not active: expired, closed, revoked or denied (`FAILED_PRECONDITION`), or a capture ended because the session ended |
//! | 6 | the control plane is unreachable or unavailable, including an audit log that cannot be written (`UNAVAILABLE`, `DEADLINE_EXCEEDED`) |
//! | 7 | a certificate or identity problem: missing or unreadable certificate or key, a control plane that presented another identity, or a certificate the control plane refused (`UNAUTHENTICATED`) |
//! | 8 | audit verification failed: the log, an export or a checkpoint does not verify (tampering, rollback or a split view) |
//! | 10 | the session was opened and is pending approval |
//! | 130 | a capture or a follow was interrupted with Ctrl-C (after printing its summary) |
//!
//! The numbers are part of the CLI's interface: they never change meaning.

use std::process::ExitCode;

use tonic::Code;

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const DENIED: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const SESSION_NOT_ACTIVE: u8 = 5;
pub const UNAVAILABLE: u8 = 6;
pub const IDENTITY: u8 = 7;
pub const VERIFICATION_FAILED: u8 = 8;
pub const PENDING_APPROVAL: u8 = 10;
/// 128 + SIGINT, as shells report a process ended by Ctrl-C.
pub const INTERRUPTED: u8 = 130;

/// The text `loupe --help` shows under the commands.
pub const HELP: &str = "\
Exit codes:
  0    success
  1    anything else
  2    usage: bad flags, arguments, configuration, or a malformed request (e.g. a bad CEL condition)
  3    denied by policy
  4    not found (session, service, point, audit event)
  5    session not active (expired, closed, revoked, denied)
  6    control plane unreachable or unavailable (including a failing audit log)
  7    certificate or identity problem
  8    audit verification failed (tampering, rollback, split view)
  10   session pending approval
  130  interrupted (Ctrl-C) after printing a summary";

/// The exit code for a gRPC status code returned by the control plane.
pub fn for_code(code: Code) -> u8 {
    match code {
        Code::Ok => OK,
        Code::InvalidArgument | Code::OutOfRange => USAGE,
        Code::PermissionDenied => DENIED,
        Code::NotFound => NOT_FOUND,
        Code::FailedPrecondition => SESSION_NOT_ACTIVE,
        Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE,
        Code::Unauthenticated => IDENTITY,
        _ => FAILURE,
    }
}

/// Converts an exit code to what `main` returns.
pub fn to_exit_code(code: u8) -> ExitCode {
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_documented_codes() {
        let table = [
            (Code::Ok, 0),
            (Code::InvalidArgument, 2),
            (Code::PermissionDenied, 3),
            (Code::NotFound, 4),
            (Code::FailedPrecondition, 5),
            (Code::Unavailable, 6),
            (Code::DeadlineExceeded, 6),
            (Code::Unauthenticated, 7),
            (Code::Internal, 1),
            (Code::Unknown, 1),
            (Code::AlreadyExists, 1),
        ];
        for (code, expected) in table {
            assert_eq!(for_code(code), expected, "{code:?}");
        }
    }

    #[test]
    fn the_help_text_lists_every_code() {
        for code in [
            OK,
            FAILURE,
            USAGE,
            DENIED,
            NOT_FOUND,
            SESSION_NOT_ACTIVE,
            UNAVAILABLE,
            IDENTITY,
            VERIFICATION_FAILED,
            PENDING_APPROVAL,
            INTERRUPTED,
        ] {
            assert!(
                HELP.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code} "))),
                "{code} missing from the help text"
            );
        }
    }
}
