//! The pieces of a whole Loupe on one machine, as the quickstart and the end-to-end tests put
//! them together: the shipped policies, the control plane's configuration for a dev PKI, and
//! how to launch the control plane and the demo checkout as processes of a `loupe` executable.
//!
//! The configuration is a [`FileConfig`] — the control plane's own type for its file — so the
//! format is stated once, in `loupe_control_plane::config`; callers adjust fields (a shorter
//! lease, a CRL) on the value before it is written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loupe_control_plane::config::{AuditSection, FileConfig, TlsSection, TokensSection};
use loupe_proto::ready;
use loupe_trust::identity::control_plane_identity;

use crate::pki::PkiLayout;
use crate::supervise::{Launch, Stderr};

/// The shipped policies (schema, policies, entities), compiled in so that a dev stack works
/// from an installed binary too.
pub const SHIPPED_POLICIES: [(&str, &str); 3] = [
    (
        "default.cedar",
        include_str!("../../policies/default.cedar"),
    ),
    (
        "entities.json",
        include_str!("../../policies/entities.json"),
    ),
    (
        "loupe.cedarschema",
        include_str!("../../policies/loupe.cedarschema"),
    ),
];

/// Why a piece of the stack could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StackError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] loupe_control_plane::config::ConfigError),
}

/// Writes [`SHIPPED_POLICIES`] into `dir` (created if missing), replacing what is there.
pub fn write_shipped_policies(dir: &Path) -> Result<(), StackError> {
    std::fs::create_dir_all(dir).map_err(|source| StackError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for (name, text) in SHIPPED_POLICIES {
        write(&dir.join(name), text)?;
    }
    Ok(())
}

/// Where a dev control plane listens and keeps its files.
#[derive(Debug, Clone)]
pub struct ControlPlanePlaces {
    pub listen: String,
    pub trust_domain: String,
    pub data_dir: PathBuf,
    pub policy_dir: PathBuf,
}

/// The control plane's configuration for the dev PKI `pki`: its certificate, the CA, the token
/// and audit keys of the PKI, token keys published into the PKI folder (where the demo's agent
/// finds them), and defaults for everything else.
pub fn control_plane_config(pki: &PkiLayout, places: &ControlPlanePlaces) -> FileConfig {
    let cert = pki.control_plane();
    FileConfig {
        listen: Some(places.listen.clone()),
        trust_domain: Some(places.trust_domain.clone()),
        data_dir: Some(places.data_dir.clone()),
        policy_dir: Some(places.policy_dir.clone()),
        tls: TlsSection {
            cert: Some(cert.cert),
            key: Some(cert.key),
            ca: Some(pki.ca_cert()),
            crl: None,
        },
        tokens: TokensSection {
            signing_keys: vec![pki.token_signing_key()],
            publish: Some(pki.token_keys()),
            lifetime_seconds: None,
        },
        audit: AuditSection {
            signing_key: Some(pki.audit_signing_key()),
        },
        ..FileConfig::default()
    }
}

/// Writes `config` to `path` as the control plane reads it.
pub fn write_control_plane_config(path: &Path, config: &FileConfig) -> Result<(), StackError> {
    let text = config.to_toml()?;
    write(path, &format!("# Written by Loupe's dev stack.\n{text}"))
}

/// Launches `exe control-plane --config CONFIG`, ready when it prints its listen address.
pub fn control_plane(exe: &Path, config: &Path, ready_within: Duration, stderr: Stderr) -> Launch {
    let mut command = Command::new(exe);
    // Its settings come from the file alone, never from whoever starts it.
    command
        .env_remove("LOUPE_PROFILE")
        .env_remove("LOUPE_CONFIG")
        .arg("control-plane")
        .arg("--config")
        .arg(config);
    Launch {
        name: "control plane".into(),
        command,
        ready_process: ready::CONTROL_PLANE.into(),
        ready_within,
        stderr,
    }
}

/// What the demo checkout is started with.
#[derive(Debug, Clone)]
pub struct CheckoutLaunch {
    /// The dev PKI folder (the agent's certificate for `checkout`, the CA, published token keys).
    pub pki_dir: PathBuf,
    pub control_plane: String,
    pub trust_domain: String,
    pub http_listen: String,
    /// Synthetic checkouts per second; `None` for the demo's default.
    pub traffic_per_second: Option<u32>,
    pub instance: Option<String>,
    /// A CLI settings file for the child, so that nothing comes from whoever runs it.
    pub cli_settings: PathBuf,
}

/// The demo checkout's process name on its ready line.
pub const CHECKOUT: &str = "checkout";

/// Launches `exe demo checkout …`, ready when it prints its addresses.
pub fn checkout(
    exe: &Path,
    launch: &CheckoutLaunch,
    ready_within: Duration,
    stderr: Stderr,
) -> Launch {
    let mut command = Command::new(exe);
    command
        .env_remove("LOUPE_PROFILE")
        .env("LOUPE_CONFIG", &launch.cli_settings)
        .args(["demo", "checkout", "--tls-dir"])
        .arg(&launch.pki_dir)
        .arg("--control-plane")
        .arg(&launch.control_plane)
        .arg("--control-plane-identity")
        .arg(control_plane_identity(&launch.trust_domain))
        .arg("--http-listen")
        .arg(&launch.http_listen);
    if let Some(per_second) = launch.traffic_per_second {
        command.arg("--traffic").arg(per_second.to_string());
    }
    if let Some(instance) = &launch.instance {
        command.arg("--instance").arg(instance);
    }
    Launch {
        name: "demo checkout".into(),
        command,
        ready_process: CHECKOUT.into(),
        ready_within,
        stderr,
    }
}

fn write(path: &Path, text: &str) -> Result<(), StackError> {
    std::fs::write(path, text).map_err(|source| StackError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, PkiOptions};

    #[test]
    fn the_control_plane_reads_the_config_written_for_a_dev_pki() {
        let dir = tempfile::tempdir().unwrap();
        let layout = pki::init(&dir.path().join("pki"), &PkiOptions::default()).unwrap();
        let places = ControlPlanePlaces {
            listen: "127.0.0.1:0".into(),
            trust_domain: pki::DEFAULT_TRUST_DOMAIN.into(),
            data_dir: dir.path().join("data"),
            policy_dir: dir.path().join("policies"),
        };
        write_shipped_policies(&places.policy_dir).unwrap();
        let path = dir.path().join("control-plane.toml");
        write_control_plane_config(&path, &control_plane_config(&layout, &places)).unwrap();
        let flags = loupe_control_plane::config::Flags {
            config: Some(path),
            ..Default::default()
        };
        let config = loupe_control_plane::config::Config::load(&flags).unwrap();
        assert_eq!(config.tls.cert, layout.control_plane().cert);
        assert_eq!(config.token_signing_keys, vec![layout.token_signing_key()]);
        assert_eq!(config.token_keys_publish, Some(layout.token_keys()));
        assert_eq!(config.audit_signing_key, layout.audit_signing_key());
        assert_eq!(config.policy_dir, places.policy_dir);
    }
}
