//! Reaching the control plane: the mTLS material from the settings, a dial that checks the
//! server's identity, and errors that say which file, address or identity is at fault.
//!
//! Several addresses (replicas of one control plane on one database, all presenting the same
//! control-plane identity, checked on every dial as for one): they are dialed in the order
//! configured, and the first that answers is used — gRPC's `pick_first`, so every command of
//! one engineer goes where the list says while that replica is up. An address where nobody
//! answers ([`DialError::Unreachable`]: refused, reset, timed out) is skipped for the next;
//! any other failure (another identity, a refused certificate, a bad address) stops at once,
//! because the list is one control plane and an impostor in it is an error to see, not to route
//! around.
//!
//! A call is moved to another address only when nothing was sent: the dial is eager (TLS and
//! the identity check complete before [`connect`] returns), so a failed dial sent no request.
//! Once a request has gone out, a broken connection leaves its outcome unknown, and it is not
//! sent again: the control plane reads `request_id` as a correlation id for the audit log only
//! (a repeated id is a new decision, recorded again), so a retried `OpenSession` could open a
//! second session, a retried approval record a second approval. The caller sees exit 6 and
//! checks (`loupe session list`). The one call the CLI does send again is `Capture`, whose effect
//! lasts only as long as its stream (see `commands::capture::failover`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use loupe_proto::v1::control_plane_client::ControlPlaneClient;
use loupe_trust::dial::{ClientTls, DialError};
use loupe_trust::tls::TlsPaths;
use tonic::Status;
use tonic::transport::Channel;

use crate::config::{Addresses, Settings};
use crate::error::CliError;

/// Largest message accepted from the control plane (snapshots are capped at 64 KiB by
/// default; this leaves room for raised limits).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A connected control-plane client, with what errors need to name.
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: ControlPlaneClient<Channel>,
    pub address: String,
    /// Where `address` is in the configured list.
    pub index: usize,
    pub identity: String,
}

impl Connection {
    /// The error for a failed call.
    pub fn error(&self, status: &Status) -> CliError {
        CliError::from_status(status, &self.address)
    }
}

/// The mTLS file paths from the settings, each checked to exist.
pub fn tls_paths(settings: &Settings) -> Result<TlsPaths, CliError> {
    let need = |value: &Option<PathBuf>, what: &'static str, flag: &'static str, env: &str| {
        let path = value.clone().ok_or_else(|| {
            CliError::Usage(format!(
                "no {what} configured (set {flag}, ${env} or `{}` in a config profile; \
                 `loupe pki init DIR` makes a dev PKI)",
                flag.trim_start_matches("--")
            ))
        })?;
        check_exists(&path, what, flag)?;
        Ok::<_, CliError>(path)
    };
    Ok(TlsPaths {
        cert: need(&settings.cert, "certificate", "--cert", "LOUPE_CERT")?,
        key: need(&settings.key, "private key", "--key", "LOUPE_KEY")?,
        ca: need(&settings.ca, "CA certificate", "--ca", "LOUPE_CA")?,
        crl: match &settings.crl {
            Some(crl) => {
                check_exists(crl, "CRL", "--crl")?;
                Some(crl.clone())
            }
            None => None,
        },
    })
}

/// [`CliError::FileMissing`] unless `path` exists.
pub fn check_exists(path: &Path, what: &'static str, flag: &'static str) -> Result<(), CliError> {
    if path.exists() {
        Ok(())
    } else {
        Err(CliError::FileMissing {
            what,
            path: path.to_owned(),
            flag,
        })
    }
}

/// Dials the configured control plane and checks it is the configured identity: the first
/// configured address that answers (see the module docs).
pub async fn connect(settings: &Settings, timeout: Duration) -> Result<Connection, CliError> {
    connect_from(settings, timeout, 0).await
}

/// [`connect`], trying the addresses from the one at `start` on, round the list (so
/// `start = lost + 1` tries the lost one last).
pub async fn connect_from(
    settings: &Settings,
    timeout: Duration,
    start: usize,
) -> Result<Connection, CliError> {
    let addresses = configured_addresses(settings)?;
    let paths = tls_paths(settings)?;
    let tls = ClientTls::load(&paths)?;
    let identity = settings.control_plane_identity.clone();
    let list = addresses.as_slice();
    let mut unreachable = Vec::new();
    for index in (0..list.len()).map(|i| (start + i) % list.len()) {
        let address = &list[index];
        match tls.dial(address, &identity, timeout).await {
            Ok(channel) => {
                let client =
                    ControlPlaneClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
                return Ok(Connection {
                    client,
                    address: address.clone(),
                    index,
                    identity,
                });
            }
            Err(DialError::Unreachable { address, reason }) => unreachable.push((address, reason)),
            Err(other) => return Err(dial_error(other, &identity)),
        }
    }
    Err(none_answered(unreachable))
}

fn configured_addresses(settings: &Settings) -> Result<&Addresses, CliError> {
    settings.addresses.as_ref().ok_or_else(|| {
        CliError::Usage(
            "no control plane address configured (set --address, $LOUPE_ADDRESS or `address` \
             in a config profile)"
                .to_owned(),
        )
    })
}

/// The error when no address answered: each address with its reason.
fn none_answered(mut unreachable: Vec<(String, String)>) -> CliError {
    if unreachable.len() == 1 {
        let (address, reason) = unreachable.remove(0);
        return CliError::Unreachable { address, reason };
    }
    let addresses: Vec<&str> = unreachable.iter().map(|(a, _)| a.as_str()).collect();
    let reasons: Vec<String> = unreachable
        .iter()
        .map(|(a, r)| format!("{a}: {r}"))
        .collect();
    CliError::Unreachable {
        address: format!("any of {}", addresses.join(", ")),
        reason: reasons.join("; "),
    }
}

/// Tells "nobody there" (exit 6) from "somebody else there" or "a certificate refused"
/// (exit 7), by the kind of dial failure.
pub fn dial_error(error: DialError, identity: &str) -> CliError {
    match error {
        DialError::BadAddress { address } => CliError::Usage(format!(
            "`{address}` is not a host:port address (check --address)"
        )),
        DialError::BadIdentity { expected, reason } => CliError::Usage(format!(
            "the control plane identity `{expected}` is not a SPIFFE ID: {reason} (check \
             --control-plane-identity)"
        )),
        DialError::Tls(error) => CliError::Tls(error),
        DialError::Refused { address, alert } => CliError::Identity(format!(
            "the control plane at {address} refused our client certificate ({alert}); check \
             --cert and --key: the certificate must be issued by the control plane's CA, not \
             expired or revoked"
        )),
        DialError::WrongPeer { address, peer } => CliError::Identity(format!(
            "the server at {address} is not {identity} (it presented {}) \
             (check --address and --control-plane-identity)",
            peer.presented
        )),
        DialError::UnidentifiedPeer { address, reason } => CliError::Identity(format!(
            "the server at {address} is not {identity}: {reason} \
             (check --address and --control-plane-identity)"
        )),
        DialError::BadPeerCertificate { address, reason } => CliError::Identity(format!(
            "TLS with {address} failed on a certificate: {reason} (check --ca, and that \
             --cert is issued by the control plane's CA and not expired or revoked)"
        )),
        DialError::Unreachable { address, reason } => CliError::Unreachable { address, reason },
        other => CliError::Other(other.to_string()),
    }
}

/// A single-threaded runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::io("starting the async runtime", e))
}

#[cfg(test)]
mod tests {
    use loupe_trust::dial::WrongPeer;

    use super::*;

    #[test]
    fn dial_failures_tell_absence_from_impostors() {
        let refused = dial_error(
            DialError::Unreachable {
                address: "127.0.0.1:1".into(),
                reason: "tcp connect error: Connection refused".into(),
            },
            "spiffe://loupe.dev/control-plane",
        );
        assert_eq!(refused.exit_code(), crate::exit::UNAVAILABLE);
        assert_eq!(
            refused.to_string(),
            "control plane unreachable at 127.0.0.1:1: tcp connect error: Connection refused \
             (is it running? check --address)"
        );
        let impostor = dial_error(
            DialError::WrongPeer {
                address: "h:1".into(),
                peer: WrongPeer {
                    expected: "spiffe://loupe.dev/control-plane".into(),
                    presented: "spiffe://loupe.dev/agent/x".into(),
                },
            },
            "spiffe://loupe.dev/control-plane",
        );
        assert_eq!(impostor.exit_code(), crate::exit::IDENTITY);
        assert_eq!(
            impostor.to_string(),
            "the server at h:1 is not spiffe://loupe.dev/control-plane (it presented \
             spiffe://loupe.dev/agent/x) (check --address and --control-plane-identity)"
        );
        // A reason that merely mentions certificates is still "nobody there": the kind
        // decides, not the words.
        let broken = dial_error(
            DialError::Unreachable {
                address: "h:1".into(),
                reason: "connection reset while sending the certificate".into(),
            },
            "spiffe://loupe.dev/control-plane",
        );
        assert_eq!(broken.exit_code(), crate::exit::UNAVAILABLE);
        let bad = dial_error(
            DialError::BadAddress {
                address: "nowhere".into(),
            },
            "x",
        );
        assert_eq!(bad.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn missing_material_is_named() {
        let settings = Settings {
            profile: None,
            addresses: Some(Addresses::parse("a:1").unwrap()),
            cert: Some(PathBuf::from("/nonexistent/alice.pem")),
            key: Some(PathBuf::from("/nonexistent/alice.key")),
            ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            crl: None,
            control_plane_identity: "x".into(),
            output: None,
            audit_verifier: None,
        };
        let error = tls_paths(&settings).unwrap_err();
        assert_eq!(
            error.to_string(),
            "certificate not found at /nonexistent/alice.pem (run `loupe pki init DIR` or set --cert)"
        );
        let error = tls_paths(&Settings {
            cert: None,
            ..settings
        })
        .unwrap_err();
        assert_eq!(error.exit_code(), crate::exit::USAGE);
        assert!(error.to_string().contains("$LOUPE_CERT"), "{error}");
    }
}
