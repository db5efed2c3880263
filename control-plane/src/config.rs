//! The control plane's configuration: a TOML file, overridden field by field by command-line
//! flags, checked completely before anything starts.
//!
//! ```toml
//! listen = "127.0.0.1:7443"
//! # health_listen = "127.0.0.1:7480"  # plain-HTTP /healthz and /readyz for supervisors
//! trust_domain = "loupe.dev"
//! data_dir = "/var/lib/loupe"          # audit.sqlite: the audit log and the sessions
//! # database = "postgres://loupe@db.internal/loupe"  # instead of audit.sqlite: PostgreSQL,
//! #                                    # shared by any number of control-plane replicas
//! policy_dir = "/etc/loupe/policies"   # schema, *.cedar, entities.json
//!
//! [tls]
//! cert = "control-plane.pem"
//! key = "control-plane.key"
//! ca = "ca.pem"
//! # crl = "ca.crl"
//!
//! [tokens]
//! signing_keys = ["token-signing.pem"] # oldest first; the last signs
//! publish = "token-keys.jwks"          # where agents load the key set from (optional)
//! lifetime_seconds = 300
//!
//! [audit]
//! signing_key = "audit-signing.key"
//!
//! [sessions]
//! max_ttl_seconds = 3600               # hard cap, whatever policy allows
//! pending_timeout_seconds = 900
//!
//! [registry]
//! lease_seconds = 30
//!
//! [limits]                             # see `crate::bounds` for the fixed bounds on input
//! refusal_burst = 60                   # refused calls one identity may make in a burst,
//! refusals_per_minute = 60             #   and then per minute; past that RESOURCE_EXHAUSTED
//! captures_per_user = 4                # concurrent captures of one engineer
//! instances_per_agent_identity = 256   # live instances one agent identity may register
//!                                      #   (on PostgreSQL: counted over every replica)
//!
//! # Off by default. Only for a CA that cannot issue SPIFFE X.509-SVIDs: a certificate with no
//! # URI SAN, signed by this CA's key, whose subject CN is exactly `common_name`, acts as
//! # `spiffe_id`. Repeat the table for each person or workload.
//! # [[identity.cn_mappings]]
//! # ca = "legacy-ca.pem"                # the issuing CA; it must also be in tls.ca
//! # common_name = "alice"
//! # spiffe_id = "spiffe://loupe.dev/user/alice"
//! ```
//!
//! Relative paths in the file are relative to the file's directory, so a config directory can
//! move as a whole. Every error names the file and the field (`config.toml: tls.cert: …`), and
//! unknown fields are errors: a misspelt `max_ttl_secnds` must not silently leave the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use loupe_trust::identity::{IdentityRules, SpiffeId};
use loupe_trust::tls::TlsPaths;
use serde::{Deserialize, Serialize};

/// Why the configuration cannot be used. Each names the file (or flag) and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{origin}: `{field}` is required (set it in the config file or pass --{flag})")]
    Missing {
        origin: String,
        field: &'static str,
        flag: &'static str,
    },
    #[error("{origin}: `{field}`: {message}")]
    Invalid {
        origin: String,
        field: &'static str,
        message: String,
    },
    #[error("cannot write the configuration as TOML: {0}")]
    Serialize(String),
}

/// Command-line flags; each overrides the file's field of the same name.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve on (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// SPIFFE trust domain of every identity (e.g. loupe.dev).
    #[arg(long, value_name = "DOMAIN")]
    pub trust_domain: Option<String>,
    /// Directory for the state and audit databases.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL database for the audit log and the sessions, shared by every replica
    /// (`postgres://user@host/db`; TLS: `?sslmode=verify-full&sslrootcert=CA.pem`); without
    /// it, SQLite in the data directory.
    #[arg(long, value_name = "URL", env = "LOUPE_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Address for the plain-HTTP probes `/healthz` and `/readyz` (host:port); off unless
    /// given. Bind it where only the supervisor reaches it.
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<String>,
    /// Directory with the Cedar schema, policies and entities.
    #[arg(long, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// The control plane's certificate (PEM), presented to engineers and agents.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that peers' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Certificate revocation list (PEM).
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// Token-signing key (Ed25519 PKCS#8 PEM); repeat for rotation, oldest first.
    #[arg(long = "token-signing-key", value_name = "FILE")]
    pub token_signing_keys: Vec<PathBuf>,
    /// Where to write the token key set (JWKS) for agents.
    #[arg(long, value_name = "FILE")]
    pub token_keys_publish: Option<PathBuf>,
    /// The audit log's checkpoint-signing key (signed-note private key).
    #[arg(long, value_name = "FILE")]
    pub audit_signing_key: Option<PathBuf>,
    /// Hard cap on a session's ttl, whatever policy allows.
    #[arg(long, value_name = "SECONDS")]
    pub max_ttl_seconds: Option<u64>,
}

/// Everything the control plane needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `/healthz` and `/readyz` are served, if anywhere (see [`crate::health`]).
    pub health_listen: Option<SocketAddr>,
    pub trust_domain: String,
    pub data_dir: PathBuf,
    /// The PostgreSQL database (URL) instead of SQLite in `data_dir`, if configured.
    pub database: Option<String>,
    pub policy_dir: PathBuf,
    pub tls: TlsPaths,
    /// Oldest first; the last signs.
    pub token_signing_keys: Vec<PathBuf>,
    pub token_keys_publish: Option<PathBuf>,
    pub token_lifetime_seconds: u64,
    pub audit_signing_key: PathBuf,
    pub max_ttl_seconds: u64,
    pub pending_timeout_seconds: u64,
    pub lease_seconds: u64,
    /// Explicit CN → SPIFFE ID mappings for a non-SPIFFE CA; empty unless configured.
    pub cn_mappings: Vec<CnMappingConfig>,
    pub limits: Limits,
}

/// One `[[identity.cn_mappings]]` entry, checked for syntax; the CA file is read at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CnMappingConfig {
    pub ca: PathBuf,
    pub common_name: String,
    pub spiffe_id: String,
}

/// How much one identity may take of the control plane (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Refused calls one identity may make at once before it is limited.
    pub refusal_burst: u32,
    /// Refused calls one identity regains per minute.
    pub refusals_per_minute: u32,
    /// Concurrent captures of one engineer. Below an agent's own capture slots (16 by
    /// default, 4 per session), so one engineer cannot take every slot of an instance.
    pub captures_per_user: u32,
    /// Live instances one agent identity may hold at once.
    pub instances_per_agent_identity: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            refusal_burst: 60,
            refusals_per_minute: 60,
            captures_per_user: 4,
            instances_per_agent_identity: u32::try_from(
                crate::bounds::DEFAULT_INSTANCES_PER_IDENTITY,
            )
            .unwrap_or(u32::MAX),
        }
    }
}

pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 300;
pub const DEFAULT_MAX_TTL_SECONDS: u64 = 3600;
pub const DEFAULT_PENDING_TIMEOUT_SECONDS: u64 = 900;
pub const DEFAULT_LEASE_SECONDS: u64 = 30;

/// The configuration file's form: what `--config` reads and what tools that set up a control
/// plane (the quickstart, the end-to-end tests) write, through [`FileConfig::to_toml`], so that
/// the file format is stated here only. Relative paths are relative to the file's directory.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `host:port` for the plain-HTTP probes; absent, none are served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `postgres://…`: the database replicas share; absent, the embedded SQLite in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: TlsSection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tokens: TokensSection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub audit: AuditSection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub sessions: SessionsSection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub registry: RegistrySection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub identity: IdentitySection,
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: LimitsSection,
}

/// `[identity]`: mappings for a CA that cannot issue SPIFFE certificates.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cn_mappings: Vec<CnMappingConfig>,
}

/// `[tls]`: the control plane's certificate, key, client CA and optional CRL.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
}

/// `[tokens]`: session-token signing keys (oldest first) and where their public set goes.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokensSection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_seconds: Option<u64>,
}

/// `[audit]`: the key that signs the log's checkpoints.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
}

/// `[sessions]`: hard caps on sessions, whatever policy allows.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_timeout_seconds: Option<u64>,
}

/// `[registry]`: agent leases.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
}

/// `[limits]`: what one identity may take of the control plane.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal_burst: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusals_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captures_per_user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances_per_agent_identity: Option<u32>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl FileConfig {
    /// The file's text, as `--config` reads it.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }
}

impl Config {
    /// Reads `flags.config` (if given) and applies the flags over it.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        let (file, check) = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let check = Check {
                    origin: path.display().to_string(),
                    base: path.parent().map(Path::to_owned).unwrap_or_default(),
                };
                (Self::parse(path, &text)?, check)
            }
            None => (
                FileConfig::default(),
                Check {
                    origin: "flags".to_owned(),
                    base: PathBuf::new(),
                },
            ),
        };
        let listen = check.listen(flags.listen.clone().or(file.listen))?;
        let health_listen = flags
            .health_listen
            .clone()
            .or(file.health_listen)
            .map(|text| check.address("health_listen", &text))
            .transpose()?;
        let trust_domain = check.trust_domain(flags.trust_domain.clone().or(file.trust_domain))?;
        let cn_mappings = check.cn_mappings(file.identity.cn_mappings, &trust_domain)?;
        let data_dir = check
            .path(&flags.data_dir, file.data_dir)
            .ok_or_else(|| check.missing("data_dir", "data-dir"))?;
        let database = check.database(flags.database.clone().or(file.database))?;
        let policy_dir = check
            .path(&flags.policy_dir, file.policy_dir)
            .ok_or_else(|| check.missing("policy_dir", "policy-dir"))?;
        let tls = check.tls(flags, file.tls)?;
        let token_signing_keys = check.token_signing_keys(flags, file.tokens.signing_keys)?;
        let token_lifetime_seconds = check.within(
            "tokens.lifetime_seconds",
            file.tokens
                .lifetime_seconds
                .unwrap_or(DEFAULT_TOKEN_LIFETIME_SECONDS),
            10..=3600,
        )?;
        let audit_signing_key = check
            .path(&flags.audit_signing_key, file.audit.signing_key)
            .ok_or_else(|| check.missing("audit.signing_key", "audit-signing-key"))?;
        let max_ttl_seconds = check.within(
            "sessions.max_ttl_seconds",
            flags
                .max_ttl_seconds
                .or(file.sessions.max_ttl_seconds)
                .unwrap_or(DEFAULT_MAX_TTL_SECONDS),
            1..=86_400,
        )?;
        let pending_timeout_seconds = check.within(
            "sessions.pending_timeout_seconds",
            file.sessions
                .pending_timeout_seconds
                .unwrap_or(DEFAULT_PENDING_TIMEOUT_SECONDS),
            1..=86_400,
        )?;
        let lease_seconds = check.within(
            "registry.lease_seconds",
            file.registry.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS),
            3..=3600,
        )?;
        let limits = check.limits(&file.limits)?;
        Ok(Config {
            listen,
            health_listen,
            trust_domain,
            data_dir,
            database,
            policy_dir,
            tls,
            token_signing_keys,
            token_keys_publish: check.path(&flags.token_keys_publish, file.tokens.publish),
            token_lifetime_seconds,
            audit_signing_key,
            max_ttl_seconds,
            pending_timeout_seconds,
            lease_seconds,
            cn_mappings,
            limits,
        })
    }

    fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }
}

/// Checking one configuration: where its values came from (for errors that name the file or
/// the flags) and what its relative paths are relative to. Each method checks one setting.
struct Check {
    origin: String,
    base: PathBuf,
}

impl Check {
    fn missing(&self, field: &'static str, flag: &'static str) -> ConfigError {
        ConfigError::Missing {
            origin: self.origin.clone(),
            field,
            flag,
        }
    }

    fn invalid(&self, field: &'static str, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            field,
            message,
        }
    }

    /// A path from a flag as given, or from the file relative to the file.
    fn path(&self, flag: &Option<PathBuf>, file: Option<PathBuf>) -> Option<PathBuf> {
        flag.clone().or(file.map(|p| self.base.join(p)))
    }

    fn within<T: PartialOrd + std::fmt::Display>(
        &self,
        field: &'static str,
        value: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(self.invalid(
                field,
                format!("{value} is outside {}..={}", range.start(), range.end()),
            ))
        }
    }

    fn listen(&self, text: Option<String>) -> Result<SocketAddr, ConfigError> {
        let text = text.ok_or_else(|| self.missing("listen", "listen"))?;
        self.address("listen", &text)
    }

    fn address(&self, field: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse()
            .map_err(|_| self.invalid(field, format!("`{text}` is not an IP:port address")))
    }

    fn trust_domain(&self, trust_domain: Option<String>) -> Result<String, ConfigError> {
        let trust_domain =
            trust_domain.ok_or_else(|| self.missing("trust_domain", "trust-domain"))?;
        match IdentityRules::new(&trust_domain) {
            Ok(_) => Ok(trust_domain),
            Err(reason) => Err(self.invalid(
                "trust_domain",
                format!("`{trust_domain}` is not a SPIFFE trust domain: {reason}"),
            )),
        }
    }

    /// Each mapping names a user or workload of `trust_domain` and a non-empty CN; its CA path
    /// is resolved like any path of the file.
    fn cn_mappings(
        &self,
        mut mappings: Vec<CnMappingConfig>,
        trust_domain: &str,
    ) -> Result<Vec<CnMappingConfig>, ConfigError> {
        for mapping in &mut mappings {
            mapping.ca = self.base.join(&mapping.ca);
            let id = SpiffeId::parse(&mapping.spiffe_id).map_err(|reason| {
                self.invalid(
                    "identity.cn_mappings.spiffe_id",
                    format!("`{}` is not a SPIFFE ID: {reason}", mapping.spiffe_id),
                )
            })?;
            if id.trust_domain() != trust_domain || id.path().is_empty() {
                return Err(self.invalid(
                    "identity.cn_mappings.spiffe_id",
                    format!(
                        "`{id}` must name a user or workload in the trust domain `{trust_domain}`"
                    ),
                ));
            }
            if mapping.common_name.is_empty() {
                return Err(self.invalid("identity.cn_mappings.common_name", "is empty".to_owned()));
            }
        }
        Ok(mappings)
    }

    fn database(&self, database: Option<String>) -> Result<Option<String>, ConfigError> {
        if let Some(url) = &database
            && let Err(e) = crate::audit::Database::parse(url)
        {
            return Err(self.invalid("database", e.to_string()));
        }
        Ok(database)
    }

    fn tls(&self, flags: &Flags, file: TlsSection) -> Result<TlsPaths, ConfigError> {
        Ok(TlsPaths {
            cert: self
                .path(&flags.cert, file.cert)
                .ok_or_else(|| self.missing("tls.cert", "cert"))?,
            key: self
                .path(&flags.key, file.key)
                .ok_or_else(|| self.missing("tls.key", "key"))?,
            ca: self
                .path(&flags.ca, file.ca)
                .ok_or_else(|| self.missing("tls.ca", "ca"))?,
            crl: self.path(&flags.crl, file.crl),
        })
    }

    /// The flags' keys replace the file's list; at least one key is required.
    fn token_signing_keys(
        &self,
        flags: &Flags,
        file: Vec<PathBuf>,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let keys: Vec<PathBuf> = if flags.token_signing_keys.is_empty() {
            file.into_iter().map(|p| self.base.join(p)).collect()
        } else {
            flags.token_signing_keys.clone()
        };
        if keys.is_empty() {
            return Err(self.missing("tokens.signing_keys", "token-signing-key"));
        }
        Ok(keys)
    }

    fn limits(&self, file: &LimitsSection) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let limit = |field: &'static str, value: Option<u32>, default: u32, max: u32| {
            self.within(field, value.unwrap_or(default), 1..=max)
        };
        Ok(Limits {
            refusal_burst: limit(
                "limits.refusal_burst",
                file.refusal_burst,
                defaults.refusal_burst,
                100_000,
            )?,
            refusals_per_minute: limit(
                "limits.refusals_per_minute",
                file.refusals_per_minute,
                defaults.refusals_per_minute,
                100_000,
            )?,
            captures_per_user: limit(
                "limits.captures_per_user",
                file.captures_per_user,
                defaults.captures_per_user,
                1024,
            )?,
            instances_per_agent_identity: limit(
                "limits.instances_per_agent_identity",
                file.instances_per_agent_identity,
                defaults.instances_per_agent_identity,
                100_000,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_as_written() {
        let file = FileConfig {
            listen: Some("127.0.0.1:0".into()),
            trust_domain: Some("loupe.dev".into()),
            data_dir: Some("/var/lib/loupe \"x\"".into()),
            tls: TlsSection {
                cert: Some("cp.pem".into()),
                crl: Some("ca.crl".into()),
                ..TlsSection::default()
            },
            tokens: TokensSection {
                signing_keys: vec!["old.pem".into(), "new.pem".into()],
                lifetime_seconds: Some(60),
                ..TokensSection::default()
            },
            sessions: SessionsSection {
                max_ttl_seconds: Some(600),
                pending_timeout_seconds: None,
            },
            identity: IdentitySection {
                cn_mappings: vec![CnMappingConfig {
                    ca: "legacy.pem".into(),
                    common_name: "svc".into(),
                    spiffe_id: "spiffe://loupe.dev/agent/svc".into(),
                }],
            },
            ..FileConfig::default()
        };
        let text = file.to_toml().unwrap();
        assert_eq!(Config::parse(Path::new("c.toml"), &text).unwrap(), file);
        assert!(
            !text.contains("[limits]"),
            "empty sections are left out:\n{text}"
        );
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("control-plane.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    const FULL: &str = r#"
listen = "127.0.0.1:0"
trust_domain = "loupe.dev"
data_dir = "data"
policy_dir = "/etc/loupe/policies"
[tls]
cert = "cp.pem"
key = "cp.key"
ca = "ca.pem"
[tokens]
signing_keys = ["old.pem", "new.pem"]
[audit]
signing_key = "audit.key"
"#;

    #[test]
    fn relative_paths_follow_the_file_and_flags_override_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = write(dir.path(), FULL);
        let flags = Flags {
            config: Some(config_path),
            max_ttl_seconds: Some(600),
            key: Some(PathBuf::from("/elsewhere/cp.key")),
            ..Flags::default()
        };
        let config = Config::load(&flags).expect("valid");
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.policy_dir, PathBuf::from("/etc/loupe/policies"));
        assert_eq!(config.tls.cert, dir.path().join("cp.pem"));
        assert_eq!(config.tls.key, PathBuf::from("/elsewhere/cp.key"));
        assert_eq!(
            config.token_signing_keys,
            vec![dir.path().join("old.pem"), dir.path().join("new.pem")]
        );
        assert_eq!(config.max_ttl_seconds, 600);
        assert_eq!(config.lease_seconds, DEFAULT_LEASE_SECONDS);
        assert_eq!(
            config.database, None,
            "SQLite unless a database is configured"
        );
    }

    #[test]
    fn the_probes_are_off_unless_an_address_is_given_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |text: &str, flag: Option<&str>| {
            Config::load(&Flags {
                config: Some(write(dir.path(), text)),
                health_listen: flag.map(str::to_owned),
                ..Flags::default()
            })
        };
        assert_eq!(load(FULL, None).expect("valid").health_listen, None);
        let file = format!("health_listen = \"127.0.0.1:7480\"\n{FULL}");
        assert_eq!(
            load(&file, None).expect("valid").health_listen,
            Some("127.0.0.1:7480".parse().expect("address"))
        );
        assert_eq!(
            load(&file, Some("0.0.0.0:9000"))
                .expect("valid")
                .health_listen,
            Some("0.0.0.0:9000".parse().expect("address"))
        );
        let error = load(FULL, Some("localhost")).expect_err("not an address");
        assert!(error.to_string().contains("`health_listen`"), "{error}");
    }

    #[test]
    fn a_database_comes_from_the_file_or_the_flag_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |text: &str, flag: Option<&str>| {
            Config::load(&Flags {
                config: Some(write(dir.path(), text)),
                database: flag.map(str::to_owned),
                ..Flags::default()
            })
        };
        let file = format!("database = \"postgres://loupe@db.internal/loupe\"\n{FULL}");
        assert_eq!(
            load(&file, None).expect("valid").database.as_deref(),
            Some("postgres://loupe@db.internal/loupe")
        );
        assert_eq!(
            load(&file, Some("postgres://other@db2/loupe"))
                .expect("valid")
                .database
                .as_deref(),
            Some("postgres://other@db2/loupe")
        );
        let error = load(FULL, Some("postgres://loupe:hunter2@db:port/loupe")).expect_err("bad");
        let text = error.to_string();
        assert!(text.contains("`database`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let typo = write(
            dir.path(),
            &format!("{FULL}\n[sessions]\nmax_ttl_secnds = 5\n"),
        );
        let error = Config::load(&Flags {
            config: Some(typo.clone()),
            ..Flags::default()
        })
        .expect_err("unknown field");
        let text = error.to_string();
        assert!(text.contains("control-plane.toml"), "{text}");
        assert!(text.contains("max_ttl_secnds"), "{text}");

        let no_cert = write(dir.path(), &FULL.replace("cert = \"cp.pem\"\n", ""));
        let error = Config::load(&Flags {
            config: Some(no_cert),
            ..Flags::default()
        })
        .expect_err("missing cert");
        assert!(
            error.to_string().contains("`tls.cert` is required"),
            "{error}"
        );
        assert!(error.to_string().contains("--cert"), "{error}");

        let bad_listen = write(dir.path(), &FULL.replace("127.0.0.1:0", "localhost"));
        let error = Config::load(&Flags {
            config: Some(bad_listen),
            ..Flags::default()
        })
        .expect_err("bad listen");
        assert!(error.to_string().contains("`listen`"), "{error}");
    }

    #[test]
    fn cn_mappings_are_off_by_default_and_checked_when_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |text: &str| {
            Config::load(&Flags {
                config: Some(write(dir.path(), text)),
                ..Flags::default()
            })
        };
        assert!(load(FULL).expect("valid").cn_mappings.is_empty());
        let mapping = |id: &str| {
            format!(
                "{FULL}\n[[identity.cn_mappings]]\nca = \"legacy.pem\"\ncommon_name = \"alice\"\nspiffe_id = \"{id}\"\n"
            )
        };
        let config = load(&mapping("spiffe://loupe.dev/user/alice")).expect("valid");
        assert_eq!(
            config.cn_mappings,
            vec![CnMappingConfig {
                ca: dir.path().join("legacy.pem"),
                common_name: "alice".into(),
                spiffe_id: "spiffe://loupe.dev/user/alice".into(),
            }]
        );
        for bad in [
            "spiffe://elsewhere.dev/user/alice",
            "spiffe://loupe.dev",
            "alice",
        ] {
            let error = load(&mapping(bad)).expect_err(bad);
            assert!(
                error.to_string().contains("identity.cn_mappings.spiffe_id"),
                "{error}"
            );
        }
    }
}
