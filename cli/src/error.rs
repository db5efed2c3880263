//! The CLI's errors: each says what went wrong and what to do about it, and carries the exit
//! code (see [`crate::exit`]) scripts rely on.
//!
//! gRPC statuses from the control plane become errors in [`CliError::from_status`]: the
//! server's message is shown as it is (a `PERMISSION_DENIED` message already names the
//! policies and the reason), with a hint added for the codes a user can act on.

use std::path::PathBuf;

use loupe_trust::tls::TlsError;
use tonic::{Code, Status};

use crate::exit;

/// Everything that can make a `loupe` command fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad flags, arguments or configuration.
    #[error("{0}")]
    Usage(String),
    /// A certificate, key or CA file is missing.
    #[error("{what} not found at {} (run `loupe pki init DIR` or set {flag})", path.display())]
    FileMissing {
        what: &'static str,
        path: PathBuf,
        flag: &'static str,
    },
    /// mTLS material exists but cannot be used.
    #[error("{0} (check --cert, --key and --ca)")]
    Tls(#[from] TlsError),
    /// Nobody answered at the address, or the connection broke.
    #[error("control plane unreachable at {address}: {reason} (is it running? check --address)")]
    Unreachable { address: String, reason: String },
    /// The server at the address is not the control plane we meant, or refused our certificate.
    #[error("{0}")]
    Identity(String),
    /// The control plane answered, but not with what was asked for.
    #[error("{message}")]
    Status { code: Code, message: String },
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// Audit verification failed: the log, an export or a checkpoint does not check out.
    #[error("audit verification FAILED: {0}")]
    Verification(String),
    /// The server sent something that makes no sense (a protocol bug, never user input).
    #[error("unexpected answer from the control plane: {0}")]
    Protocol(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl CliError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::FileMissing { .. } | CliError::Tls(_) | CliError::Identity(_) => {
                exit::IDENTITY
            }
            CliError::Unreachable { .. } => exit::UNAVAILABLE,
            CliError::Status { code, .. } => exit::for_code(*code),
            CliError::Verification(_) => exit::VERIFICATION_FAILED,
            CliError::Io { .. } | CliError::Protocol(_) | CliError::Other(_) => exit::FAILURE,
        }
    }

    /// Whether this is a write to a pipe whose reader has gone.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        CliError::Io {
            context: context.into(),
            source,
        }
    }

    /// A status from the control plane at `address`, with a hint on what to do.
    pub fn from_status(status: &Status, address: &str) -> Self {
        let message = crate::render::printable(status.message().trim());
        let message = message.as_ref();
        let code = status.code();
        let text = match code {
            Code::PermissionDenied => {
                if message.to_ascii_lowercase().starts_with("denied") {
                    message.to_owned()
                } else {
                    format!("denied: {message}")
                }
            }
            Code::NotFound => format!("not found: {message}"),
            Code::FailedPrecondition => {
                format!("{message} (open a new session with `loupe session open`)")
            }
            Code::InvalidArgument | Code::OutOfRange => {
                format!("invalid request: {message}")
            }
            Code::Unauthenticated => format!(
                "the control plane at {address} did not accept our certificate: {message} \
                 (check --cert and --key, and that the certificate is not expired or revoked)"
            ),
            Code::Unavailable => {
                if connection_lost(status) || message.is_empty() {
                    return CliError::Unreachable {
                        address: address.to_owned(),
                        reason: if message.is_empty() {
                            "connection lost".to_owned()
                        } else {
                            message.to_owned()
                        },
                    };
                }
                format!(
                    "the control plane at {address} is unavailable: {message} (try again later)"
                )
            }
            Code::DeadlineExceeded => format!(
                "the control plane at {address} did not answer in time: {message} \
                 (is it overloaded? try again or raise --timeout)"
            ),
            _ => format!("control plane error ({code:?}): {message}"),
        };
        CliError::Status {
            code,
            message: text,
        }
    }
}

/// Whether `status` was made on this side from a broken connection (tonic keeps the transport
/// error as its source), rather than sent by the control plane, whose own statuses (its audit log
/// failing, an instance it could not reach, a session that ended) carry a message and no source.
/// The code cannot tell them apart: a reset connection surfaces as UNAVAILABLE, UNKNOWN or
/// INTERNAL depending on where the stream was.
pub fn connection_lost(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_shows_the_servers_policies_and_reason() {
        let status = Status::permission_denied("denied by policy P1, P2: no reason given");
        let error = CliError::from_status(&status, "cp:7443");
        assert_eq!(
            error.to_string(),
            "denied by policy P1, P2: no reason given"
        );
        assert_eq!(error.exit_code(), exit::DENIED);
        let status = Status::permission_denied("policy forbid-nights: outside hours");
        let error = CliError::from_status(&status, "cp:7443");
        assert_eq!(
            error.to_string(),
            "denied: policy forbid-nights: outside hours"
        );
    }

    #[test]
    fn an_expired_session_says_to_open_a_new_one() {
        let status = Status::failed_precondition("session s-1 expired at 2026-11-30T00:00:00Z");
        let error = CliError::from_status(&status, "cp:7443");
        assert_eq!(error.exit_code(), exit::SESSION_NOT_ACTIVE);
        assert!(error.to_string().starts_with("session s-1 expired at"));
        assert!(error.to_string().contains("open a new session"));
    }

    #[test]
    fn unavailable_tells_a_broken_connection_from_the_servers_word() {
        let mut broken = Status::unavailable("tcp connect error: Connection refused");
        broken.set_source(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        let lost = CliError::from_status(&broken, "cp:7443");
        assert!(matches!(lost, CliError::Unreachable { .. }));
        assert_eq!(
            lost.to_string(),
            "control plane unreachable at cp:7443: tcp connect error: Connection refused \
             (is it running? check --address)"
        );
        let audit = CliError::from_status(
            &Status::unavailable("audit log not writable: disk full"),
            "cp:7443",
        );
        assert_eq!(
            audit.to_string(),
            "the control plane at cp:7443 is unavailable: audit log not writable: disk full \
             (try again later)"
        );
        assert_eq!(audit.exit_code(), exit::UNAVAILABLE);
    }

    #[test]
    fn missing_files_say_how_to_get_them() {
        let error = CliError::FileMissing {
            what: "certificate",
            path: PathBuf::from("/x/alice.pem"),
            flag: "--cert",
        };
        assert_eq!(
            error.to_string(),
            "certificate not found at /x/alice.pem (run `loupe pki init DIR` or set --cert)"
        );
        assert_eq!(error.exit_code(), exit::IDENTITY);
    }

    #[test]
    fn other_codes_keep_their_exit_codes() {
        for (status, code) in [
            (Status::not_found("no session s-9"), exit::NOT_FOUND),
            (Status::invalid_argument("condition: syntax"), exit::USAGE),
            (Status::unauthenticated("no client cert"), exit::IDENTITY),
            (Status::internal("boom"), exit::FAILURE),
        ] {
            assert_eq!(CliError::from_status(&status, "a:1").exit_code(), code);
        }
    }
}
