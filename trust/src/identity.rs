//! Who is on the other end of an mTLS connection, read from the certificate it presented — the
//! one place that states the rule. The control plane (for every caller), the agent (for the
//! control plane calling it) and every dialer (CLI → control plane, agent → control plane,
//! control plane → agent) identify peers through [`IdentityRules::identify`].
//!
//! The rule is SPIFFE's X.509-SVID (`spiffe/standards/X509-SVID.md` with `SPIFFE-ID.md`):
//!
//! - the certificate carries **exactly one** URI SAN, and it is a valid SPIFFE ID
//!   (`spiffe://<trust-domain>/<path>`: lowercase trust domain of `a-z 0-9 . - _`, path segments
//!   of `a-z A-Z 0-9 . - _`, none empty, `.` or `..`, no trailing `/`, no query, fragment, port
//!   or user info, at most 2048 bytes);
//! - it is a **leaf** SVID: its path is not empty, basic constraints do not say CA, and its key
//!   usage includes digitalSignature and neither keyCertSign nor cRLSign;
//! - its trust domain is the configured one.
//!
//! The subject CN is never an identity by itself: a certificate whose CN spells
//! `spiffe://…/user/carol` is nobody. An operator with a non-SPIFFE CA may configure explicit
//! [`CnMapping`]s (off by default): a certificate with **no** URI SAN, **signed by that CA's
//! key**, whose CN is exactly the mapped name, is the mapped SPIFFE ID (which must be a leaf ID
//! in the trust domain). A certificate with URI SANs is never mapped, so a broken SVID cannot
//! fall back to its CN. Groups and roles never come from the certificate: policy decides those.

use std::fmt;

use crate::certificate::Certificate;

/// The longest SPIFFE ID (SPIFFE-ID.md §2.3), and the longest trust domain (§2.1).
const MAX_SPIFFE_ID_BYTES: usize = 2048;
const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// A syntactically valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    id: String,
    /// Where the path starts in `id` (the trust domain ends there).
    path_at: usize,
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    #[error("it does not start with `spiffe://`")]
    Scheme,
    #[error("it is longer than {MAX_SPIFFE_ID_BYTES} bytes")]
    TooLong,
    #[error("its trust domain is empty")]
    EmptyTrustDomain,
    #[error("its trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")]
    TrustDomainTooLong,
    #[error(
        "its trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (no port, user info, query or fragment)"
    )]
    TrustDomainCharacter,
    #[error("its path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("its path has a `.` or `..` segment")]
    DotSegment,
    #[error("its path may hold only letters, digits, `.`, `-`, `_` and `/` (no query or fragment)")]
    PathCharacter,
}

impl SpiffeId {
    /// Parses `text` by the SPIFFE-ID rules.
    pub fn parse(text: &str) -> Result<SpiffeId, SpiffeIdError> {
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or(SpiffeIdError::Scheme)?;
        if text.len() > MAX_SPIFFE_ID_BYTES {
            return Err(SpiffeIdError::TooLong);
        }
        let (trust_domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        check_trust_domain(trust_domain)?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                match segment {
                    "" => return Err(SpiffeIdError::EmptySegment),
                    "." | ".." => return Err(SpiffeIdError::DotSegment),
                    _ if !segment.bytes().all(is_path_byte) => {
                        return Err(SpiffeIdError::PathCharacter);
                    }
                    _ => {}
                }
            }
        }
        Ok(SpiffeId {
            id: text.to_owned(),
            path_at: text.len() - path.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        &self.id["spiffe://".len()..self.path_at]
    }

    /// The path, `""` for a trust domain's own ID, else starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.path_at..]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

fn check_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b);
    if !trust_domain.bytes().all(allowed) {
        return Err(SpiffeIdError::TrustDomainCharacter);
    }
    Ok(())
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-".contains(&b)
}

/// The identity of a certificate holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The SPIFFE ID: the certificate's one URI SAN, or what a configured [`CnMapping`] maps
    /// its CN to.
    pub id: String,
    /// Unix seconds after which the certificate is no longer valid.
    pub not_after: i64,
    /// Unix seconds before which it is not yet valid.
    pub not_before: i64,
}

/// Why a certificate identifies nobody. The messages say what the certificate lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("peer certificate is not valid X.509 DER: {0}")]
    Malformed(String),
    #[error(
        "peer certificate has no URI SAN, so it is not a SPIFFE X.509-SVID (its subject CN is not an identity unless the operator maps it explicitly)"
    )]
    NoUriSan,
    #[error(
        "peer certificate has {count} URI SANs; a SPIFFE X.509-SVID has exactly one, so it identifies nobody"
    )]
    SeveralUriSans { count: usize },
    #[error("peer certificate's URI SAN `{uri}` is not a SPIFFE ID: {reason}")]
    NotSpiffe { uri: String, reason: SpiffeIdError },
    #[error(
        "peer certificate names `{id}`, which is a trust domain, not a workload (a leaf SVID's ID has a path)"
    )]
    NoPath { id: String },
    #[error("peer certificate `{id}` is a CA certificate, not a leaf SVID")]
    NotALeaf { id: String },
    #[error(
        "peer certificate `{id}` has the wrong key usage for a leaf SVID: {problem} (it must allow digitalSignature and neither keyCertSign nor cRLSign)"
    )]
    KeyUsage { id: String, problem: &'static str },
    #[error("peer certificate names `{id}`, outside the trust domain `{expected}`")]
    ForeignTrustDomain { id: String, expected: String },
    #[error("CN mapping: {0}")]
    BadMapping(String),
}

/// An operator's explicit mapping of a non-SPIFFE CA's certificate, by subject CN, to a SPIFFE
/// ID. Applies only to certificates with no URI SAN that the CA's key signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnMapping {
    ca_subject: Vec<u8>,
    /// The CA certificate, whose key must have signed a mapped certificate.
    ca_der: Vec<u8>,
    common_name: String,
    id: SpiffeId,
}

impl CnMapping {
    /// Maps certificates issued by the CA certificate `ca_der` with subject CN `common_name`
    /// to `id`.
    pub fn new(ca_der: &[u8], common_name: &str, id: &str) -> Result<CnMapping, IdentityError> {
        let ca = Certificate::from_der(ca_der)
            .map_err(|e| IdentityError::BadMapping(format!("CA certificate: {e}")))?;
        if !ca.extensions.is_ca {
            return Err(IdentityError::BadMapping(
                "the issuer certificate is not a CA".into(),
            ));
        }
        if common_name.is_empty() {
            return Err(IdentityError::BadMapping("the common name is empty".into()));
        }
        let id = SpiffeId::parse(id)
            .map_err(|reason| IdentityError::BadMapping(format!("`{id}`: {reason}")))?;
        Ok(CnMapping {
            ca_subject: ca.subject.to_vec(),
            ca_der: ca_der.to_vec(),
            common_name: common_name.to_owned(),
            id,
        })
    }

    /// Whether `cert` is this mapping's: issued under the CA's name, signed by its key, with
    /// exactly the mapped CN.
    fn matches(&self, cert: &Certificate<'_>) -> bool {
        if cert.issuer != self.ca_subject.as_slice() {
            return false;
        }
        match cert.subject_common_names().as_deref() {
            Ok([Some(cn)]) if *cn == self.common_name => {}
            _ => return false,
        }
        let Ok(ca) = Certificate::from_der(&self.ca_der) else {
            return false;
        };
        cert.is_signed_by(
            &ca,
            crate::tls::provider().signature_verification_algorithms.all,
        )
    }
}

/// How peers are identified in one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRules {
    trust_domain: String,
    cn_mappings: Vec<CnMapping>,
}

impl IdentityRules {
    /// Strict SVID rules for `trust_domain`, with no CN mappings.
    pub fn new(trust_domain: &str) -> Result<IdentityRules, SpiffeIdError> {
        check_trust_domain(trust_domain)?;
        Ok(IdentityRules {
            trust_domain: trust_domain.to_owned(),
            cn_mappings: Vec::new(),
        })
    }

    /// Strict SVID rules for the trust domain of `peer`: what a dialer uses, which knows whom
    /// it means to reach. Dialers never map CNs: servers are always SVIDs.
    pub fn for_peer(peer: &SpiffeId) -> IdentityRules {
        IdentityRules {
            trust_domain: peer.trust_domain().to_owned(),
            cn_mappings: Vec::new(),
        }
    }

    /// Adds explicit CN mappings; each must map to a leaf ID in the trust domain.
    pub fn with_cn_mappings(
        mut self,
        mappings: Vec<CnMapping>,
    ) -> Result<IdentityRules, IdentityError> {
        for mapping in &mappings {
            if mapping.id.path().is_empty() {
                return Err(IdentityError::BadMapping(format!(
                    "`{}` has no path; map to a workload or user ID",
                    mapping.id
                )));
            }
            if mapping.id.trust_domain() != self.trust_domain {
                return Err(IdentityError::BadMapping(format!(
                    "`{}` is outside the trust domain `{}`",
                    mapping.id, self.trust_domain
                )));
            }
        }
        self.cn_mappings = mappings;
        Ok(self)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The identity `der` (a peer's leaf certificate, already verified against the CA by the
    /// TLS handshake) proves, by the rules in the module docs.
    pub fn identify(&self, der: &[u8]) -> Result<PeerIdentity, IdentityError> {
        let cert = read_certificate(der)?;
        let id = match cert.extensions.uri_sans.as_slice() {
            [] => self
                .cn_mappings
                .iter()
                .find(|mapping| mapping.matches(&cert))
                .map(|mapping| mapping.id.clone())
                .ok_or(IdentityError::NoUriSan)?,
            [uri] => SpiffeId::parse(uri).map_err(|reason| IdentityError::NotSpiffe {
                uri: (*uri).to_owned(),
                reason,
            })?,
            several => {
                return Err(IdentityError::SeveralUriSans {
                    count: several.len(),
                });
            }
        };
        if id.path().is_empty() {
            return Err(IdentityError::NoPath { id: id.id });
        }
        check_leaf(&cert, id.as_str())?;
        if id.trust_domain() != self.trust_domain {
            return Err(IdentityError::ForeignTrustDomain {
                id: id.id,
                expected: self.trust_domain.clone(),
            });
        }
        Ok(PeerIdentity {
            id: id.id,
            not_after: cert.not_after,
            not_before: cert.not_before,
        })
    }
}

fn read_certificate(der: &[u8]) -> Result<Certificate<'_>, IdentityError> {
    Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))
}

/// X509-SVID §4: a leaf is not a CA and signs only handshakes.
fn check_leaf(cert: &Certificate<'_>, id: &str) -> Result<(), IdentityError> {
    if cert.extensions.is_ca {
        return Err(IdentityError::NotALeaf { id: id.to_owned() });
    }
    let problem = match cert.extensions.key_usage {
        None => Some("it has no key usage extension"),
        Some(usage) if !usage.digital_signature() => Some("digitalSignature is missing"),
        Some(usage) if usage.key_cert_sign() => Some("keyCertSign is set"),
        Some(usage) if usage.crl_sign() => Some("cRLSign is set"),
        Some(_) => None,
    };
    match problem {
        Some(problem) => Err(IdentityError::KeyUsage {
            id: id.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// The trust domain a signing (CA) certificate names in its one URI SAN
/// (`spiffe://<trust-domain>`, no path — X509-SVID §4.1), and when it expires. The development
/// PKI reads its CA with this.
pub fn ca_trust_domain(der: &[u8]) -> Result<(String, i64), IdentityError> {
    let cert = read_certificate(der)?;
    let uri = match cert.extensions.uri_sans.as_slice() {
        [] => return Err(IdentityError::NoUriSan),
        [uri] => *uri,
        several => {
            return Err(IdentityError::SeveralUriSans {
                count: several.len(),
            });
        }
    };
    let id = SpiffeId::parse(uri).map_err(|reason| IdentityError::NotSpiffe {
        uri: uri.to_owned(),
        reason,
    })?;
    if !id.path().is_empty() || !cert.extensions.is_ca {
        return Err(IdentityError::Malformed(format!(
            "`{id}` is not a SPIFFE signing certificate (a CA naming spiffe://<trust domain>)"
        )));
    }
    Ok((id.trust_domain().to_owned(), cert.not_after))
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
