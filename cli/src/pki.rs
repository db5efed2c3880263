//! Placeholder for the dev PKI (written on another branch); only the signatures the CLI calls.

use std::path::{Path, PathBuf};

/// Options of the dev PKI.
#[derive(Debug, Clone, Default)]
pub struct PkiOptions {}

/// Why the dev PKI failed.
#[derive(Debug, thiserror::Error)]
#[error("the dev PKI is not available in this build")]
pub struct PkiError;

/// Where the dev PKI's files live.
#[derive(Debug, Clone)]
pub struct PkiLayout {
    dir: PathBuf,
}

impl PkiLayout {
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn control_plane(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.join("control-plane.pem"),
            self.dir.join("control-plane.key"),
        )
    }
    pub fn agent(&self, service: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.join("agents");
        (
            dir.join(format!("{service}.pem")),
            dir.join(format!("{service}.key")),
        )
    }
    pub fn user(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.dir.join("users");
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    }
    pub fn token_signing_key(&self) -> PathBuf {
        self.dir.join("token-signing.pem")
    }
    pub fn token_keys(&self) -> PathBuf {
        self.dir.join("token-keys.jwks")
    }
    pub fn audit_signing_key(&self) -> PathBuf {
        self.dir.join("audit-signing.key")
    }
    pub fn audit_verifier(&self) -> PathBuf {
        self.dir.join("audit-verifier.pub")
    }
}

pub fn init(_dir: &Path, _options: &PkiOptions) -> Result<PkiLayout, PkiError> {
    Err(PkiError)
}

pub fn issue_user(_dir: &Path, _name: &str, _options: &PkiOptions) -> Result<PathBuf, PkiError> {
    Err(PkiError)
}

pub fn issue_agent(
    _dir: &Path,
    _service: &str,
    _options: &PkiOptions,
) -> Result<PathBuf, PkiError> {
    Err(PkiError)
}
