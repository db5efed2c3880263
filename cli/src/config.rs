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
//! - The control plane's address may be several (replicas on one database): `--address`,
//!   `$LOUPE_ADDRESS` and the file's `address` take a comma-separated list, and the file also
//!   takes `addresses = ["…", "…"]` (one or the other in a table, not both). Every form is read
//!   by one rule, [`Addresses::parse`]; a later layer replaces the whole list. Which address is
//!   dialed when is [`crate::client`]'s business.
//!
//! ```toml
//! profile = "dev"                      # the profile used when none is chosen
//! control_plane_identity = "spiffe://loupe.dev/control-plane"
//!
//! [profiles.dev]
//! address = "127.0.0.1:7443"
//! # addresses = ["cp-1:7443", "cp-2:7443"]  # replicas, tried in this order
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

/// The control plane's addresses, in the order they are tried; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Addresses(Vec<String>);

impl Addresses {
    /// The one rule for reading addresses, wherever they come from: `host:port`s separated by
    /// commas, blanks around each ignored; none empty, none listed twice.
    pub fn parse(text: &str) -> Result<Addresses, String> {
        if text.trim().is_empty() {
            return Err("no address given (expected host:port[,host:port…])".to_owned());
        }
        let mut list: Vec<String> = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(format!(
                    "`{text}` holds an empty address (expected host:port[,host:port…])"
                ));
            }
            loupe_trust::dial::split_host_port(item)
                .map_err(|why| format!("`{item}` is not a host:port address: {why}"))?;
            if list.iter().any(|known| known == item) {
                return Err(format!("`{item}` is listed twice"));
            }
            list.push(item.to_owned());
        }
        Ok(Addresses(list))
    }

    /// The addresses, in order.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The first address: where a single connection goes (an agent's registration, the demo).
    pub fn first(&self) -> &str {
        // `parse` never yields an empty list: `"".split(',')` has one (empty) item.
        self.0.first().map_or("", String::as_str)
    }
}

impl TryFrom<String> for Addresses {
    type Error = String;

    fn try_from(text: String) -> Result<Addresses, String> {
        Addresses::parse(&text)
    }
}

/// Comma-separated, as [`Addresses::parse`] reads them.
impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// The control plane's identity when none is configured: the one the dev PKI's default trust
/// domain gives it.
pub fn default_control_plane_identity() -> String {
    loupe_trust::identity::control_plane_identity(loupe_devstack::pki::DEFAULT_TRUST_DOMAIN)
}

/// One layer of settings; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub address: Option<Addresses>,
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
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Layer, CliError> {
        let text = |name: &str| var(name).filter(|v| !v.is_empty());
        let address = text("LOUPE_ADDRESS")
            .map(|t| Addresses::parse(&t))
            .transpose()
            .map_err(|e| CliError::Usage(format!("$LOUPE_ADDRESS: {e}")))?;
        Ok(Layer {
            address,
            cert: text("LOUPE_CERT").map(PathBuf::from),
            key: text("LOUPE_KEY").map(PathBuf::from),
            ca: text("LOUPE_CA").map(PathBuf::from),
            crl: text("LOUPE_CRL").map(PathBuf::from),
            control_plane_identity: text("LOUPE_CONTROL_PLANE_IDENTITY"),
            output: text("LOUPE_OUTPUT"),
            audit_verifier: text("LOUPE_AUDIT_VERIFIER").map(PathBuf::from),
        })
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
        addresses_as_address(&mut table).map_err(|e| bad(&e))?;
        let base: Layer = toml::Value::Table(table).try_into().map_err(|e| bad(&e))?;
        let mut profiles = BTreeMap::new();
        match profiles_value {
            None => {}
            Some(toml::Value::Table(entries)) => {
                for (name, mut value) in entries {
                    let in_profile =
                        |e: &dyn std::fmt::Display| bad(&format_args!("[profiles.{name}]: {e}"));
                    if let toml::Value::Table(table) = &mut value {
                        addresses_as_address(table).map_err(|e| in_profile(&e))?;
                    }
                    let layer: Layer = value.try_into().map_err(|e| in_profile(&e))?;
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

/// A table's `addresses = ["…", …]` as the `address` it is equivalent to (the items joined by
/// commas), so that [`Addresses::parse`] reads both; a table may set one of them, not both.
fn addresses_as_address(table: &mut toml::Table) -> Result<(), String> {
    let Some(list) = table.remove("addresses") else {
        return Ok(());
    };
    if table.contains_key("address") {
        return Err("set `address` or `addresses`, not both".to_owned());
    }
    let items = match list {
        toml::Value::Array(items) => items,
        _ => return Err("`addresses` must be a list of \"host:port\" strings".to_owned()),
    };
    let items = items
        .into_iter()
        .map(|item| match item {
            toml::Value::String(text) => Ok(text),
            other => Err(format!(
                "`addresses` holds {other}, not a \"host:port\" string"
            )),
        })
        .collect::<Result<Vec<String>, String>>()?;
    table.insert("address".to_owned(), toml::Value::String(items.join(",")));
    Ok(())
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
    pub addresses: Option<Addresses>,
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
        addresses: merged.address,
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

    fn listed(addresses: &Option<Addresses>) -> Option<String> {
        addresses.as_ref().map(Addresses::to_string)
    }

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
        .expect("a valid environment")
    }

    #[test]
    fn file_then_profile_then_env_then_flags() {
        let file = file();
        let settings = resolve(&file, None, Layer::default(), None, Layer::default()).unwrap();
        assert_eq!(settings.profile.as_deref(), Some("dev"));
        assert_eq!(listed(&settings.addresses).as_deref(), Some("dev:1"));
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
        assert_eq!(listed(&settings.addresses).as_deref(), Some("env:1"));
        assert_eq!(settings.output.as_deref(), Some("jsonl"));

        let flags = Layer {
            address: Some(Addresses::parse("flag:1").unwrap()),
            ..Layer::default()
        };
        let settings = resolve(&file, None, from_env, None, flags).unwrap();
        assert_eq!(listed(&settings.addresses).as_deref(), Some("flag:1"));
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
        assert_eq!(listed(&settings.addresses).as_deref(), Some("staging:443"));
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
        assert_eq!(listed(&settings.addresses).as_deref(), Some("dev:1"));
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
    fn several_addresses_are_read_by_one_rule_wherever_they_come_from() {
        let path = Path::new("/c.toml");
        let list = |text: &str| {
            let file = FileConfig::parse(text, path).expect("parse");
            let settings = resolve(&file, None, Layer::default(), None, Layer::default());
            listed(&settings.expect("resolve").addresses)
        };
        let three = Some("a:1,b:2,[::1]:3".to_owned());
        assert_eq!(list("address = \"a:1, b:2 ,[::1]:3\""), three);
        assert_eq!(list("addresses = [\"a:1\", \"b:2\", \"[::1]:3\"]"), three);
        assert_eq!(
            list("[profiles.p]\naddresses = [\"a:1\", \"b:2\"]\n").as_deref(),
            None,
            "a profile applies only when chosen"
        );
        // A single address, as before.
        assert_eq!(list("address = \"a:1\"").as_deref(), Some("a:1"));
        let from_env = env(&[("LOUPE_ADDRESS", "e:1,f:2")]);
        assert_eq!(listed(&from_env.address).as_deref(), Some("e:1,f:2"));

        // A later layer replaces the whole list.
        let file = FileConfig::parse("addresses = [\"a:1\", \"b:2\"]", path).unwrap();
        let settings = resolve(&file, None, from_env, None, Layer::default()).unwrap();
        assert_eq!(listed(&settings.addresses).as_deref(), Some("e:1,f:2"));
        assert_eq!(
            settings.addresses.as_ref().map(Addresses::first),
            Some("e:1")
        );
    }

    #[test]
    fn bad_address_lists_say_what_is_wrong_and_where() {
        let path = Path::new("/c.toml");
        for (text, needle) in [
            ("address = \"a:1,,b:2\"", "empty address"),
            ("address = \"a:1,a:1\"", "`a:1` is listed twice"),
            (
                "addresses = [\"a:1\", \"nowhere\"]",
                "`nowhere` is not a host:port",
            ),
            ("addresses = []", "no address given"),
            ("addresses = [1]", "not a \"host:port\" string"),
            ("addresses = \"a:1\"", "must be a list"),
            ("address = \"a:1\"\naddresses = [\"b:1\"]", "not both"),
            ("[profiles.p]\naddresses = [\"a:0\"]", "[profiles.p]"),
        ] {
            let error = FileConfig::parse(text, path).unwrap_err();
            assert_eq!(error.exit_code(), crate::exit::USAGE, "{text}");
            let message = error.to_string();
            assert!(message.contains("/c.toml"), "{message}");
            assert!(message.contains(needle), "{text}: {message}");
        }
        let error =
            Layer::from_env(&|name| (name == "LOUPE_ADDRESS").then(|| "a:1,".into())).unwrap_err();
        assert!(error.to_string().starts_with("$LOUPE_ADDRESS: "), "{error}");
        assert_eq!(error.exit_code(), crate::exit::USAGE);
    }

    #[test]
    fn where_the_file_is_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "address = \"x:1\"\n").unwrap();
        let p = path.to_string_lossy().into_owned();
        let var = move |name: &str| (name == "LOUPE_CONFIG").then(|| p.clone());
        let loaded = FileConfig::load(None, &var).unwrap();
        assert_eq!(listed(&loaded.base.address).as_deref(), Some("x:1"));

        let missing = dir.path().join("missing.toml");
        assert!(FileConfig::load(Some(&missing), &|_| None).is_err());
        let home = dir.path().to_string_lossy().into_owned();
        let var = move |name: &str| (name == "HOME").then(|| home.clone());
        assert_eq!(FileConfig::load(None, &var).unwrap(), FileConfig::default());
    }
}
