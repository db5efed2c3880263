//! Where the CLI's settings come from, and which one wins.
//!
//! Layers, later wins: the config file's top level, then the chosen profile in it
//! (`[profiles.NAME]`), then the environment, then command-line flags.
//!
//! - The file is `--config FILE`, else `$LOUPE_CONFIG`, else `$XDG_CONFIG_HOME/loupe/config.toml`,
//!   else `~/.config/loupe/config.toml`. A missing default file is fine (everything can come
//!   from the environment and flags); a missing file that was named explicitly is an error.
//! - The profile is `--profile`, else `$LOUPE_PROFILE`, else the file's `profile = "…"`; a
//!   profile that is named but not defined is an error, so a typo never silently falls back
//!   to another control plane.
//! - Relative paths in the file are relative to the file's directory, so a config next to its
//!   PKI can be moved together with it.
//! - Environment: `LOUPE_ADDRESS`, `LOUPE_CERT`, `LOUPE_KEY`, `LOUPE_CA`, `LOUPE_CRL`,
//!   `LOUPE_CONTROL_PLANE_IDENTITY`, `LOUPE_OUTPUT`, `LOUPE_AUDIT_VERIFIER`.
//!
//! ```toml
//! profile = "dev"                      # the profile used when none is chosen
//! control_plane_identity = "spiffe://loupe.dev/control-plane"
//!
//! [profiles.dev]
//! address = "127.0.0.1:7443"
//! cert = "pki/users/alice.pem"
//! key = "pki/users/alice.key"
//! ca = "pki/ca.pem"
//! # crl = "pki/ca.crl"                # revocations checked on every dial
//! audit_verifier = "pki/audit-verifier.pub"
//! output = "table"                     # table | json | jsonl
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::CliError;

/// The control plane's identity when none is configured: the one the dev PKI's default trust
/// domain gives it.
pub fn default_control_plane_identity() -> String {
    loupe_trust::identity::control_plane_identity(loupe_devstack::pki::DEFAULT_TRUST_DOMAIN)
}

/// One layer of settings; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub address: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    pub control_plane_identity: Option<String>,
    pub output: Option<String>,
    pub audit_verifier: Option<PathBuf>,
}

impl Layer {
    /// `self` with every field `over` sets replaced by it.
    pub fn overridden_by(self, over: Layer) -> Layer {
        Layer {
            address: over.address.or(self.address),
            cert: over.cert.or(self.cert),
            key: over.key.or(self.key),
            ca: over.ca.or(self.ca),
            crl: over.crl.or(self.crl),
            control_plane_identity: over.control_plane_identity.or(self.control_plane_identity),
            output: over.output.or(self.output),
            audit_verifier: over.audit_verifier.or(self.audit_verifier),
        }
    }

    /// The layer read from the environment through `var`.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Layer {
        let text = |name: &str| var(name).filter(|v| !v.is_empty());
        Layer {
            address: text("LOUPE_ADDRESS"),
            cert: text("LOUPE_CERT").map(PathBuf::from),
            key: text("LOUPE_KEY").map(PathBuf::from),
            ca: text("LOUPE_CA").map(PathBuf::from),
            crl: text("LOUPE_CRL").map(PathBuf::from),
            control_plane_identity: text("LOUPE_CONTROL_PLANE_IDENTITY"),
            output: text("LOUPE_OUTPUT"),
            audit_verifier: text("LOUPE_AUDIT_VERIFIER").map(PathBuf::from),
        }
    }

    fn resolve_paths(mut self, base: &Path) -> Layer {
        for path in [
            &mut self.cert,
            &mut self.key,
            &mut self.ca,
            &mut self.crl,
            &mut self.audit_verifier,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        self
    }
}

/// The parsed config file: a top-level layer, named profiles, and the default profile's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    pub path: Option<PathBuf>,
    pub default_profile: Option<String>,
    pub base: Layer,
    pub profiles: BTreeMap<String, Layer>,
}

impl FileConfig {
    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, CliError> {
        let bad = |e: &dyn std::fmt::Display| {
            CliError::Usage(format!("config file {}: {e}", path.display()))
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(&e))?;
        let default_profile = match table.remove("profile") {
            None => None,
            Some(toml::Value::String(name)) => Some(name),
            Some(_) => return Err(bad(&"`profile` must be a string")),
        };
        let profiles_value = table.remove("profiles");
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let base: Layer = toml::Value::Table(table).try_into().map_err(|e| bad(&e))?;
        let mut profiles = BTreeMap::new();
        match profiles_value {
            None => {}
            Some(toml::Value::Table(entries)) => {
                for (name, value) in entries {
                    let layer: Layer = value
                        .try_into()
                        .map_err(|e| bad(&format_args!("[profiles.{name}]: {e}")))?;
                    profiles.insert(name, layer.resolve_paths(base_dir));
                }
            }
            Some(_) => return Err(bad(&"`profiles` must be a table of [profiles.NAME]")),
        }
        Ok(FileConfig {
            path: Some(path.to_owned()),
            default_profile,
            base: base.resolve_paths(base_dir),
            profiles,
        })
    }

    /// Reads the config file, if there is one (see the module docs for where).
    pub fn load(
        explicit: Option<&Path>,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<FileConfig, CliError> {
        let from_env = var("LOUPE_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let (path, required) = match explicit.map(Path::to_owned).or(from_env) {
            Some(path) => (path, true),
            None => match default_config_path(var) {
                Some(path) => (path, false),
                None => return Ok(FileConfig::default()),
            },
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => FileConfig::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(FileConfig::default())
            }
            Err(e) => Err(CliError::Usage(format!(
                "cannot read config file {}: {e} (check --config or $LOUPE_CONFIG)",
                path.display()
            ))),
        }
    }
}

fn default_config_path(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = var("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("loupe/config.toml"));
    }
    var("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".config/loupe/config.toml"))
}

/// The settings a command runs with, every layer applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The profile applied, if any.
    pub profile: Option<String>,
    pub address: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// CRL(s) of the CA, checked against the control plane's certificate on every dial.
    pub crl: Option<PathBuf>,
    pub control_plane_identity: String,
    /// As configured; checked where it is used.
    pub output: Option<String>,
    pub audit_verifier: Option<PathBuf>,
}

/// Applies file < profile < environment < flags. `flag_profile` is `--profile`.
pub fn resolve(
    file: &FileConfig,
    flag_profile: Option<&str>,
    env: Layer,
    env_profile: Option<String>,
    flags: Layer,
) -> Result<Settings, CliError> {
    let profile = flag_profile
        .map(str::to_owned)
        .or(env_profile.filter(|p| !p.is_empty()))
        .or(file.default_profile.clone());
    let mut merged = file.base.clone();
    if let Some(name) = &profile {
        let Some(layer) = file.profiles.get(name) else {
            let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
            let place = file.path.as_ref().map_or_else(
                || "no config file was found".to_owned(),
                |p| format!("not in {}", p.display()),
            );
            let known = if known.is_empty() {
                "none defined".to_owned()
            } else {
                format!("known: {}", known.join(", "))
            };
            return Err(CliError::Usage(format!(
                "profile `{name}` not found: {place} ({known}); add [profiles.{name}] or pick \
                 another with --profile"
            )));
        };
        merged = merged.overridden_by(layer.clone());
    }
    let merged = merged.overridden_by(env).overridden_by(flags);
    Ok(Settings {
        profile,
        address: merged.address,
        cert: merged.cert,
        key: merged.key,
        ca: merged.ca,
        crl: merged.crl,
        control_plane_identity: merged
            .control_plane_identity
            .unwrap_or_else(default_control_plane_identity),
        output: merged.output,
        audit_verifier: merged.audit_verifier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
profile = "dev"
address = "file:1"
output = "json"

[profiles.dev]
address = "dev:1"
cert = "pki/users/alice.pem"
ca = "/abs/ca.pem"

[profiles.staging]
address = "staging:443"
control_plane_identity = "spiffe://staging/control-plane"
"#;

    fn file() -> FileConfig {
        FileConfig::parse(FILE, Path::new("/home/a/.config/loupe/config.toml")).expect("parse")
    }

    fn env(pairs: &[(&str, &str)]) -> Layer {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Layer::from_env(&move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn file_then_profile_then_env_then_flags() {
        let file = file();
        let settings = resolve(&file, None, Layer::default(), None, Layer::default()).unwrap();
        assert_eq!(settings.profile.as_deref(), Some("dev"));
        assert_eq!(settings.address.as_deref(), Some("dev:1"));
        assert_eq!(settings.output.as_deref(), Some("json"));
        assert_eq!(
            settings.cert,
            Some(PathBuf::from("/home/a/.config/loupe/pki/users/alice.pem"))
        );
        assert_eq!(settings.ca, Some(PathBuf::from("/abs/ca.pem")));
        assert_eq!(
            settings.control_plane_identity,
            "spiffe://loupe.dev/control-plane"
        );

        let from_env = env(&[("LOUPE_ADDRESS", "env:1"), ("LOUPE_OUTPUT", "jsonl")]);
        let settings = resolve(&file, None, from_env.clone(), None, Layer::default()).unwrap();
        assert_eq!(settings.address.as_deref(), Some("env:1"));
        assert_eq!(settings.output.as_deref(), Some("jsonl"));

        let flags = Layer {
            address: Some("flag:1".into()),
            ..Layer::default()
        };
        let settings = resolve(&file, None, from_env, None, flags).unwrap();
        assert_eq!(settings.address.as_deref(), Some("flag:1"));
        assert_eq!(settings.output.as_deref(), Some("jsonl"));
    }

    #[test]
    fn profile_choice_flag_over_env_over_file() {
        let file = file();
        let settings = resolve(
            &file,
            None,
            Layer::default(),
            Some("staging".into()),
            Layer::default(),
        )
        .unwrap();
        assert_eq!(settings.address.as_deref(), Some("staging:443"));
        assert_eq!(
            settings.control_plane_identity,
            "spiffe://staging/control-plane"
        );
        // The staging profile sets no cert: the top level has none either.
        assert_eq!(settings.cert, None);

        let settings = resolve(
            &file,
            Some("dev"),
            Layer::default(),
            Some("staging".into()),
            Layer::default(),
        )
        .unwrap();
        assert_eq!(settings.address.as_deref(), Some("dev:1"));
    }

    #[test]
    fn an_unknown_profile_is_an_error_naming_the_known_ones() {
        let error = resolve(
            &file(),
            Some("prod"),
            Layer::default(),
            None,
            Layer::default(),
        )
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("profile `prod` not found"), "{text}");
        assert!(text.contains("known: dev, staging"), "{text}");
        assert_eq!(error.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_usage_errors() {
        let path = Path::new("/c.toml");
        for text in [
            "adress = \"x\"",
            "[profiles.a]\ncrt = \"x\"",
            "profile = 3",
            "= =",
        ] {
            let error = FileConfig::parse(text, path).unwrap_err();
            assert_eq!(error.exit_code(), crate::exit::USAGE, "{text}");
            assert!(error.to_string().contains("/c.toml"), "{error}");
        }
    }

    #[test]
    fn where_the_file_is_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "address = \"x:1\"\n").unwrap();
        let p = path.to_string_lossy().into_owned();
        let var = move |name: &str| (name == "LOUPE_CONFIG").then(|| p.clone());
        let loaded = FileConfig::load(None, &var).unwrap();
        assert_eq!(loaded.base.address.as_deref(), Some("x:1"));

        let missing = dir.path().join("missing.toml");
        assert!(FileConfig::load(Some(&missing), &|_| None).is_err());
        let home = dir.path().to_string_lossy().into_owned();
        let var = move |name: &str| (name == "HOME").then(|| home.clone());
        assert_eq!(FileConfig::load(None, &var).unwrap(), FileConfig::default());
    }
}
