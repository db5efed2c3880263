//! A throwaway PKI for endpoint tests: CAs, leaf certificates with SPIFFE URI SANs, CRLs and
//! token keys, written as PEM files into a temporary directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub use loupe_trust::authority::LeafSpec;
use loupe_trust::authority::{Authority, SerialNumber};
use loupe_trust::token::{KeySet, SigningKey};

pub const TRUST_DOMAIN: &str = "loupe.test";

pub fn control_plane_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/control-plane")
}

/// A test CA: the project's one certificate builder (`loupe_trust::authority`), with
/// sequential serials and files written where a test wants them.
pub struct Ca {
    authority: Authority,
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

impl Ca {
    pub fn new(name: &str) -> Ca {
        let authority = Authority::for_tests(name).expect("CA");
        Ca {
            pem: authority.cert_pem().to_owned(),
            authority,
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
        let issued = self.authority.issue(&spec.serial(serial)).expect("leaf");
        let leaf = Leaf {
            cert: dir.join(format!("{file_stem}.crt")),
            key: dir.join(format!("{file_stem}.key")),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            der: issued.der,
            serial,
        };
        std::fs::write(&leaf.cert, &leaf.cert_pem).expect("write cert");
        std::fs::write(&leaf.key, &leaf.key_pem).expect("write key");
        leaf
    }

    /// A CRL revoking `serials`, written to `ca.crl.pem`.
    pub fn crl(&self, dir: &Path, serials: &[u64]) -> PathBuf {
        let serials: Vec<SerialNumber> = serials.iter().map(|s| SerialNumber::from(*s)).collect();
        let path = dir.join("ca.crl.pem");
        std::fs::write(&path, self.authority.crl(&serials).expect("crl")).expect("write crl");
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
                Some(&format!("spiffe://{TRUST_DOMAIN}/agent/{service}")),
            ),
        );
        let control_plane = ca.issue(
            dir.path(),
            "control-plane",
            LeafSpec::client("control plane", Some(&control_plane_id())),
        );
        let engineer = ca.issue(
            dir.path(),
            "alice",
            LeafSpec::client(
                "alice",
                Some(&format!("spiffe://{TRUST_DOMAIN}/user/alice")),
            ),
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
