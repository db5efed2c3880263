//! Who is calling: the identity in the client certificate the TLS handshake verified, checked
//! again on every call (an HTTP/2 connection can outlive its certificate), and the audit actor
//! it becomes. Nothing in a request body can change who the caller is.

use loupe_audit::event::Actor;
use loupe_trust::identity::{IdentityRules, PeerIdentity};
use tonic::{Request, Status};

use crate::policy::UserId;

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub identity: PeerIdentity,
    pub actor: Actor,
}

impl Caller {
    /// The caller of `request`, from its verified client certificate, identified by `rules`.
    pub fn of<T>(request: &Request<T>, rules: &IdentityRules) -> Result<Caller, Status> {
        let chain = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "no client certificate: the control plane serves only mTLS peers",
            )
        })?;
        let leaf = chain
            .first()
            .ok_or_else(|| Status::unauthenticated("empty client certificate chain"))?;
        let identity = rules
            .identify(leaf)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let now = i64::try_from(super::now()).unwrap_or(i64::MAX);
        if now >= identity.not_after {
            return Err(Status::unauthenticated(format!(
                "the client certificate of `{}` expired at {}; reconnect with a renewed certificate",
                identity.id,
                super::utc(u64::try_from(identity.not_after).unwrap_or(0))
            )));
        }
        if now < identity.not_before {
            return Err(Status::unauthenticated(format!(
                "the client certificate of `{}` is not valid before {}",
                identity.id,
                super::utc(u64::try_from(identity.not_before).unwrap_or(0))
            )));
        }
        let actor = Actor {
            id: identity.id.clone(),
            cert_sha256: fingerprint(leaf),
        };
        Ok(Caller { identity, actor })
    }

    /// The caller as a policy principal.
    pub fn user(&self) -> Result<UserId, Status> {
        UserId::parse(&self.identity.id).map_err(|e| {
            Status::permission_denied(format!("`{}` cannot act as a user: {e}", self.identity.id))
        })
    }
}

/// Hex SHA-256 of a certificate's DER: the fingerprint audit events carry.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
