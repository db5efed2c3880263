//! Certificate authorities and leaf certificates: the one place in the project that makes
//! certificates. The development PKI (`loupe_devstack::pki`) issues its agents', users' and
//! control plane's certificates through it; tests use it directly for what a PKI must also be
//! checked against — leaves with no URI SAN or several, expired or not yet valid ones, the
//! wrong key usage, revoked ones and their CRLs.
//!
//! Here, beside the rules that read certificates ([`crate::identity`]), so that what is issued
//! and what is checked are kept together; behind the `authority` feature, so that nothing that
//! runs Loupe carries a certificate generator.
//!
//! Tests of certificate parsing itself (`loupe-trust`'s) build odd shapes with rcgen directly:
//! those certificates are a parser's input, not a PKI.
//!
//! A leaf is a client certificate (EKU clientAuth), a server's (serverAuth, and by default
//! `localhost` and `127.0.0.1` in its SANs: every server of a dev stack is on loopback), or
//! both. Keys are
//! ECDSA P-256 (rcgen's default), fresh per certificate.

use std::net::{IpAddr, Ipv4Addr};

pub use rcgen::SerialNumber;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType,
};
use ring::rand::SecureRandom as _;
use time::{Duration, OffsetDateTime};

/// Why a certificate could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    #[error("cannot make the certificate: {0}")]
    Certificate(String),
    /// The private key given is not a key rcgen can sign with.
    #[error("unusable private key: {0}")]
    Key(String),
    #[error("the system random number generator failed")]
    Random,
}

impl From<rcgen::Error> for AuthorityError {
    fn from(error: rcgen::Error) -> AuthorityError {
        AuthorityError::Certificate(error.to_string())
    }
}

/// What goes into one leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    /// URI SANs in order: an SVID has exactly one; tests make broken ones with none or more.
    pub uris: Vec<String>,
    /// A TLS server (EKU serverAuth).
    pub server: bool,
    /// Also names `localhost` and `127.0.0.1` (DNS and IP SANs): what a server on loopback
    /// needs for clients that check names; Loupe's own clients check only the URI SAN.
    pub loopback_names: bool,
    /// A TLS client (EKU clientAuth).
    pub client: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// `None`: a random 128-bit serial, so certificates issued at different times never share
    /// one (a CRL names certificates by serial).
    pub serial: Option<u64>,
}

impl LeafSpec {
    /// A client certificate named `common_name`, with `uri` as its only URI SAN, valid from an
    /// hour ago for a day.
    pub fn client(common_name: &str, uri: Option<&str>) -> LeafSpec {
        let now = OffsetDateTime::now_utc();
        LeafSpec {
            common_name: common_name.to_owned(),
            uris: uri.map(str::to_owned).into_iter().collect(),
            server: false,
            loopback_names: false,
            client: true,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
            serial: None,
        }
    }

    /// A server certificate only (it cannot dial out with it).
    pub fn server(common_name: &str, uri: Option<&str>) -> LeafSpec {
        LeafSpec {
            server: true,
            loopback_names: true,
            client: false,
            ..LeafSpec::client(common_name, uri)
        }
    }

    /// Serves and dials out with the same identity (agents, the control plane).
    pub fn server_and_client(common_name: &str, uri: Option<&str>) -> LeafSpec {
        LeafSpec {
            server: true,
            loopback_names: true,
            ..LeafSpec::client(common_name, uri)
        }
    }

    /// Adds a URI SAN after the others.
    pub fn with_uri(mut self, uri: &str) -> LeafSpec {
        self.uris.push(uri.to_owned());
        self
    }

    pub fn valid(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> LeafSpec {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Names neither `localhost` nor `127.0.0.1`: only the URI SANs identify it.
    pub fn without_loopback_names(mut self) -> LeafSpec {
        self.loopback_names = false;
        self
    }

    pub fn serial(mut self, serial: u64) -> LeafSpec {
        self.serial = Some(serial);
        self
    }

    fn params(&self) -> Result<CertificateParams, AuthorityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = dn;
        params.serial_number = Some(match self.serial {
            Some(serial) => SerialNumber::from(serial),
            None => random_serial()?,
        });
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let mut sans = self
            .uris
            .iter()
            .map(|uri| Ok(SanType::URI(uri.as_str().try_into()?)))
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        if self.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.loopback_names {
            sans.push(SanType::DnsName("localhost".try_into()?));
            sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        if self.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.subject_alt_names = sans;
        Ok(params)
    }
}

/// An issued certificate and its private key, in memory.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    pub serial: SerialNumber,
}

/// What a new CA looks like.
#[derive(Debug, Clone)]
pub struct CaSpec {
    /// Subject: organization (optional) and common name.
    pub organization: Option<String>,
    pub common_name: String,
    /// URI SANs of the CA itself (the dev PKI's names `spiffe://<trust domain>`).
    pub uris: Vec<String>,
    /// `Some(0)`: only leaves below it, so a leaked leaf key cannot act as a CA.
    pub path_length: Option<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CaSpec {
    /// A CA for tests: unconstrained, valid from a day ago for 30 days.
    pub fn for_tests(common_name: &str) -> CaSpec {
        let now = OffsetDateTime::now_utc();
        CaSpec {
            organization: None,
            common_name: common_name.to_owned(),
            uris: Vec::new(),
            path_length: None,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(30),
        }
    }
}

/// A CA able to sign leaves and CRLs.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new self-signed CA with a fresh key; the key's PEM is returned beside it for callers
    /// that keep it (the dev PKI writes it to a file).
    pub fn create(spec: &CaSpec) -> Result<(Authority, String), AuthorityError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        if let Some(organization) = &spec.organization {
            dn.push(DnType::OrganizationName, organization.as_str());
        }
        dn.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(match spec.path_length {
            Some(length) => BasicConstraints::Constrained(length),
            None => BasicConstraints::Unconstrained,
        });
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = spec
            .uris
            .iter()
            .map(|uri| Ok(SanType::URI(uri.as_str().try_into()?)))
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        params.serial_number = Some(random_serial()?);
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let cert_pem = params.self_signed(&key)?.pem();
        Ok((
            Authority {
                issuer: Issuer::new(params, key),
                cert_pem,
            },
            key_pem,
        ))
    }

    /// A CA for tests (see [`CaSpec::for_tests`]).
    pub fn for_tests(common_name: &str) -> Result<Authority, AuthorityError> {
        Ok(Authority::create(&CaSpec::for_tests(common_name))?.0)
    }

    /// An existing CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, AuthorityError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| AuthorityError::Key(e.to_string()))?;
        Ok(Authority {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA certificate (PEM): what peers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's public key (SubjectPublicKeyInfo, DER).
    pub fn public_key_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData as _;
        self.issuer.key().subject_public_key_info()
    }

    /// Issues a leaf with a fresh key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, AuthorityError> {
        let params = spec.params()?;
        let serial = params
            .serial_number
            .clone()
            .ok_or_else(|| AuthorityError::Certificate("no serial".into()))?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            serial,
        })
    }

    /// A CRL (PEM) revoking `serials`, current from a minute ago for a day.
    pub fn crl(&self, serials: &[SerialNumber]) -> Result<String, AuthorityError> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial.clone(),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// A random positive 128-bit serial.
fn random_serial() -> Result<SerialNumber, AuthorityError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthorityError::Random)?;
    // DER integers are signed; a clear top bit keeps the serial positive, a set second bit
    // keeps it from being shortened.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}
