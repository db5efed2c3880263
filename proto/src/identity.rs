//! Who is on the other end of an mTLS connection, read from the certificate it presented.
//!
//! The identity is the certificate's SPIFFE-style URI SAN (`spiffe://<trust-domain>/user/alice`,
//! `…/agent/<service>`, `…/control-plane`), falling back to the subject CN when it has none.
//! Groups and roles never come from the certificate: policy decides those.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The identity of a certificate holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The SPIFFE URI SAN, else the subject CN.
    pub id: String,
    /// Unix seconds after which the certificate is no longer valid.
    pub not_after: i64,
    /// Unix seconds before which it is not yet valid.
    pub not_before: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("peer certificate is not valid X.509 DER: {0}")]
    Malformed(String),
    #[error("peer certificate has neither a spiffe:// URI SAN nor a subject CN to identify it")]
    Anonymous,
}

impl PeerIdentity {
    pub fn from_certificate_der(der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
        let spiffe = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                        Some((*uri).to_owned())
                    }
                    _ => None,
                })
            });
        let id = match spiffe {
            Some(uri) => uri,
            None => cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .filter(|cn| !cn.is_empty())
                .map(str::to_owned)
                .ok_or(IdentityError::Anonymous)?,
        };
        Ok(PeerIdentity {
            id,
            not_after: cert.validity().not_after.timestamp(),
            not_before: cert.validity().not_before.timestamp(),
        })
    }
}

/// `spiffe://<trust-domain>/agent/<service>`.
pub fn agent_identity(trust_domain: &str, service: &str) -> String {
    format!("spiffe://{trust_domain}/agent/{service}")
}

/// `spiffe://<trust-domain>/user/<name>`.
pub fn user_identity(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/user/{name}")
}

/// `spiffe://<trust-domain>/control-plane`.
pub fn control_plane_identity(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}/control-plane")
}
