//! A throwaway PKI for endpoint tests: CAs, leaf certificates with SPIFFE URI SANs, CRLs and
//! token keys, written as PEM files into a temporary directory.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use loupe_trust::token::{KeySet, SigningKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub const TRUST_DOMAIN: &str = "loupe.test";

pub fn control_plane_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/control-plane")
}

pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
    next_serial: std::cell::Cell<u64>,
}

/// An issued certificate with its key, as PEM files.
#[derive(Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    pub serial: u64,
}

/// What to put in a leaf certificate.
pub struct LeafSpec {
    pub name: String,
    pub uri: Option<String>,
    pub server: bool,
    /// With `server`: also valid as a client certificate (an agent dialing out to register,
    /// a control plane that both serves and calls agents).
    pub also_client: bool,
    pub valid_from: OffsetDateTime,
    pub valid_until: OffsetDateTime,
    /// More URI SANs after `uri` (an SVID has exactly one: these make broken ones).
    pub more_uris: Vec<String>,
}

impl LeafSpec {
    pub fn client(name: &str, uri: Option<String>) -> LeafSpec {
        LeafSpec {
            name: name.to_owned(),
            uri,
            server: false,
            also_client: false,
            valid_from: OffsetDateTime::now_utc() - Duration::hours(1),
            valid_until: OffsetDateTime::now_utc() + Duration::hours(1),
            more_uris: Vec::new(),
        }
    }

    pub fn server(name: &str, uri: Option<String>) -> LeafSpec {
        LeafSpec {
            server: true,
            ..LeafSpec::client(name, uri)
        }
    }

    /// A certificate that serves and also dials out with the same identity.
    pub fn both(name: &str, uri: Option<String>) -> LeafSpec {
        LeafSpec {
            also_client: true,
            ..LeafSpec::server(name, uri)
        }
    }

    pub fn with_uri(mut self, uri: &str) -> LeafSpec {
        self.more_uris.push(uri.to_owned());
        self
    }

    pub fn valid(mut self, from: OffsetDateTime, until: OffsetDateTime) -> LeafSpec {
        self.valid_from = from;
        self.valid_until = until;
        self
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA cert").pem();
        Ca {
            params,
            key,
            pem,
            next_serial: std::cell::Cell::new(100),
        }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &self.pem).expect("write CA");
        path
    }

    pub fn issue(&self, dir: &Path, file_stem: &str, spec: LeafSpec) -> Leaf {
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.name.as_str());
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = spec.valid_from;
        params.not_after = spec.valid_until;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let mut sans = Vec::new();
        if let Some(uri) = &spec.uri {
            sans.push(SanType::URI(uri.as_str().try_into().expect("uri")));
        }
        for uri in &spec.more_uris {
            sans.push(SanType::URI(uri.as_str().try_into().expect("uri")));
        }
        if spec.server {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            if spec.also_client {
                params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth);
            }
            sans.push(SanType::DnsName("localhost".try_into().expect("dns")));
            sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("leaf key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("leaf cert");
        let leaf = Leaf {
            cert: dir.join(format!("{file_stem}.crt")),
            key: dir.join(format!("{file_stem}.key")),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            serial,
        };
        std::fs::write(&leaf.cert, &leaf.cert_pem).expect("write cert");
        std::fs::write(&leaf.key, &leaf.key_pem).expect("write key");
        leaf
    }

    /// A CRL revoking `serials`, written to `ca.crl.pem`.
    pub fn crl(&self, dir: &Path, serials: &[u64]) -> PathBuf {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&self.params, &self.key);
        let crl = params.signed_by(&issuer).expect("crl");
        let path = dir.join("ca.crl.pem");
        std::fs::write(&path, crl.pem().expect("crl pem")).expect("write crl");
        path
    }
}

/// Everything an agent test needs: a CA, the agent's server certificate, the control plane's
/// client certificate, an engineer's, and a token-signing key.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_path: PathBuf,
    pub agent: Leaf,
    pub control_plane: Leaf,
    pub engineer: Leaf,
    pub signer: SigningKey,
    /// The signer's Ed25519 private key (PKCS#8 DER), for hand-made tokens.
    pub signer_pkcs8: Vec<u8>,
    pub keys: KeySet,
}

impl TestPki {
    pub fn new(service: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("Loupe Test CA");
        let ca_path = ca.write(dir.path(), "ca");
        let agent = ca.issue(
            dir.path(),
            "agent",
            LeafSpec::server(
                &format!("agent {service}"),
                Some(format!("spiffe://{TRUST_DOMAIN}/agent/{service}")),
            ),
        );
        let control_plane = ca.issue(
            dir.path(),
            "control-plane",
            LeafSpec::client("control plane", Some(control_plane_id())),
        );
        let engineer = ca.issue(
            dir.path(),
            "alice",
            LeafSpec::client("alice", Some(format!("spiffe://{TRUST_DOMAIN}/user/alice"))),
        );
        let (signer, signer_pkcs8) = SigningKey::generate("k1").expect("signing key");
        let mut keys = KeySet::new();
        keys.insert(signer.kid(), signer.public_key());
        TestPki {
            dir,
            ca,
            ca_path,
            agent,
            control_plane,
            engineer,
            signer,
            signer_pkcs8,
            keys,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
