//! mTLS material for every hop: loading certificates, keys, CA bundles and CRLs from files with
//! errors that name the file, building rustls configurations that require and verify client
//! certificates, and reloading all of it from disk without a restart.
//!
//! Servers get a [`ReloadingServerTls`]: its `ServerConfig` resolves the certificate and verifies
//! clients through indirections that [`ReloadingServerTls::reload_if_changed`] swaps, so new
//! handshakes use new files while established connections keep what they negotiated. A bad new
//! file is refused and the old material kept.
//!
//! Only TLS 1.3, and TLS 1.2 with AEAD suites (the ring provider offers no others), are enabled.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// Where a party's mTLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle that peers' certificates must chain to.
    pub ca: PathBuf,
    /// Optional PEM CRL(s) of that CA.
    pub crl: Option<PathBuf>,
}

/// Why mTLS material could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not valid PEM: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error("{path} holds no private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: unsupported private key: {reason}")]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: CA bundle rejected: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("{path}: CRL rejected: {reason}")]
    BadCrl { path: PathBuf, reason: String },
    #[error("TLS configuration failed: {0}")]
    Config(String),
}

/// The crypto provider every Loupe endpoint uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM certificate chain.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads a PEM private key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => TlsError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = load_certificates(cert_path)?;
    let key = load_private_key(key_path)?;
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnsupportedKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(other) => Err(TlsError::BadPem {
            path: cert_path.to_owned(),
            reason: other.to_string(),
        }),
    }
}

/// Loads a CA bundle as trust roots.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

pub(crate) fn load_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read(path)?;
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCrl {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if crls.is_empty() {
        return Err(TlsError::BadCrl {
            path: path.to_owned(),
            reason: "no -----BEGIN X509 CRL----- block".into(),
        });
    }
    Ok(crls)
}

/// A verifier that requires a client certificate chaining to `ca`, checked against the CRLs.
pub fn client_verifier(
    paths: &TlsPaths,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = Arc::new(load_roots(&paths.ca)?);
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider));
    if let Some(crl) = &paths.crl {
        builder = builder
            .with_crls(load_crls(crl)?)
            .allow_unknown_revocation_status();
    }
    builder.build().map_err(|e| match &paths.crl {
        Some(crl) => TlsError::BadCrl {
            path: crl.clone(),
            reason: e.to_string(),
        },
        None => TlsError::BadCa {
            path: paths.ca.clone(),
            reason: e.to_string(),
        },
    })
}

/// A client configuration presenting `paths.cert` and trusting `paths.ca`.
pub fn client_config(paths: &TlsPaths) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let certified = load_certified_key(&paths.cert, &paths.key, &provider)?;
    let roots = load_roots(&paths.ca)?;
    let key = load_private_key(&paths.key)?;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certified.cert.clone(), key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// File modification times, to notice changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamps(Vec<Option<SystemTime>>);

impl Stamps {
    fn of(paths: &TlsPaths) -> Stamps {
        let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut stamps = vec![stamp(&paths.cert), stamp(&paths.key), stamp(&paths.ca)];
        stamps.push(paths.crl.as_deref().and_then(stamp));
        Stamps(stamps)
    }
}

struct Current {
    key: Arc<CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// A server's mTLS material that reloads from disk.
pub struct ReloadingServerTls {
    paths: TlsPaths,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Current>,
    stamps: Mutex<Stamps>,
}

impl fmt::Debug for ReloadingServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingServerTls")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl ReloadingServerTls {
    /// Loads everything now; any problem is an error naming the file.
    pub fn load(paths: TlsPaths) -> Result<Arc<ReloadingServerTls>, TlsError> {
        let provider = provider();
        let stamps = Stamps::of(&paths);
        let current = Self::read(&paths, &provider)?;
        Ok(Arc::new(ReloadingServerTls {
            paths,
            provider,
            current: ArcSwap::from_pointee(current),
            stamps: Mutex::new(stamps),
        }))
    }

    fn read(paths: &TlsPaths, provider: &Arc<CryptoProvider>) -> Result<Current, TlsError> {
        Ok(Current {
            key: Arc::new(load_certified_key(&paths.cert, &paths.key, provider)?),
            verifier: client_verifier(paths, provider)?,
        })
    }

    pub fn paths(&self) -> &TlsPaths {
        &self.paths
    }

    /// Re-reads the files if any changed. `Ok(true)` when new material is in use; on error the
    /// old material stays in use until the files change again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = Stamps::of(&self.paths);
        let mut seen = self
            .stamps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == now {
            return Ok(false);
        }
        *seen = now;
        drop(seen);
        let current = Self::read(&self.paths, &self.provider)?;
        self.current.store(Arc::new(current));
        Ok(true)
    }

    /// The leaf certificate in use (DER).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current.load().key.cert[0].clone()
    }

    /// A server configuration that always uses the current material.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(CurrentVerifier(Arc::clone(self))))
            .with_cert_resolver(Arc::new(CurrentCertificate(Arc::clone(self))));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct CurrentCertificate(Arc<ReloadingServerTls>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current.load().key))
    }
}

#[derive(Debug)]
struct CurrentVerifier(Arc<ReloadingServerTls>);

impl ClientCertVerifier for CurrentVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints would borrow from material that can be swapped out; they are optional.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current
            .load()
            .verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current
            .load()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current
            .load()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current.load().verifier.supported_verify_schemes()
    }
}
