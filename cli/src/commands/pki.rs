//! `loupe pki init DIR` and `loupe pki issue user|agent`: the development PKI, made by
//! [`crate::pki`], and what to put in a config file to use it.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::Context;
use crate::cli::{IssueCommand, PkiCommand};
use crate::config::DEFAULT_CONTROL_PLANE_IDENTITY;
use crate::error::CliError;
use crate::exit;
use crate::pki::{self, PkiLayout, PkiOptions};

/// The users the dev PKI issues by default, with their groups in `policies/entities.json`.
const DEFAULT_USERS: [(&str, &str); 5] = [
    ("alice", "sre"),
    ("bob", "sre"),
    ("carol", "security"),
    ("dave", "auditors"),
    ("erin", "no group"),
];

/// Runs `loupe pki …`.
pub fn run(context: &Context, command: PkiCommand) -> Result<u8, CliError> {
    match command {
        PkiCommand::Init { dir } => init(context, &dir),
        PkiCommand::Issue(IssueCommand::User { name, dir }) => {
            pki::issue_user(&dir, &name, &PkiOptions::default()).map_err(pki_error)?;
            let (cert, key) = PkiLayout::at(&dir).user(&name);
            report_issued(context, "user", &name, &cert, &key)
        }
        PkiCommand::Issue(IssueCommand::Agent { service, dir }) => {
            pki::issue_agent(&dir, &service, &PkiOptions::default()).map_err(pki_error)?;
            let (cert, key) = PkiLayout::at(&dir).agent(&service);
            report_issued(context, "agent", &service, &cert, &key)
        }
    }
}

fn pki_error(error: pki::PkiError) -> CliError {
    CliError::Other(format!("dev PKI: {error}"))
}

fn report_issued(
    context: &Context,
    kind: &str,
    name: &str,
    cert: &Path,
    key: &Path,
) -> Result<u8, CliError> {
    context.output.object(
        &format!(
            "issued {kind} {name}\n  {}\n  {}",
            cert.display(),
            key.display()
        ),
        &json!({ "kind": kind, "name": name, "cert": cert, "key": key }),
    )?;
    Ok(exit::OK)
}

/// An absolute form of `path` for the config snippet, so it works from any directory.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A config file snippet with one profile per default user of the PKI at `layout`.
pub fn config_snippet(layout: &PkiLayout, address: &str) -> String {
    let mut text = String::from("# ~/.config/loupe/config.toml\nprofile = \"alice\"\n");
    for (user, group) in DEFAULT_USERS {
        let (cert, key) = layout.user(user);
        text.push_str(&format!(
            "\n[profiles.{user}]  # {group}\naddress = \"{address}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\ncontrol_plane_identity = \"{DEFAULT_CONTROL_PLANE_IDENTITY}\"\naudit_verifier = \"{}\"\n",
            absolute(&cert).display(),
            absolute(&key).display(),
            absolute(&layout.ca_cert()).display(),
            absolute(&layout.audit_verifier()).display(),
        ));
    }
    text
}

fn init(context: &Context, dir: &Path) -> Result<u8, CliError> {
    let layout = pki::init(dir, &PkiOptions::default()).map_err(pki_error)?;
    let mut written = vec![
        ("CA certificate", layout.ca_cert()),
        ("control plane certificate", layout.control_plane().0),
        ("control plane key", layout.control_plane().1),
        ("token signing key", layout.token_signing_key()),
        ("token key set (for agents)", layout.token_keys()),
        ("audit signing key", layout.audit_signing_key()),
        ("audit verifier key (pin this)", layout.audit_verifier()),
    ];
    for (user, _) in DEFAULT_USERS {
        let (cert, key) = layout.user(user);
        written.push(("user certificate", cert));
        written.push(("user key", key));
    }
    let address = context
        .settings
        .address
        .clone()
        .unwrap_or_else(|| "127.0.0.1:7443".to_owned());
    let snippet = config_snippet(&layout, &address);
    let mut text = format!("wrote a development PKI in {}:\n", dir.display());
    for (what, path) in &written {
        text.push_str(&format!("  {:<30} {}\n", what, path.display()));
    }
    text.push_str(
        "\nTo use it, put this in ~/.config/loupe/config.toml (pick a user with --profile):\n\n",
    );
    text.push_str(&snippet);
    context.output.object(
        &text,
        &json!({
            "dir": absolute(dir),
            "files": written.iter().map(|(what, path)| json!({"what": what, "path": absolute(path)})).collect::<Vec<_>>(),
            "config": snippet,
        }),
    )?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snippet_is_a_config_the_cli_reads() {
        let layout = PkiLayout::at(Path::new("/srv/pki"));
        let snippet = config_snippet(&layout, "127.0.0.1:7443");
        let file = crate::config::FileConfig::parse(&snippet, Path::new("/c.toml")).unwrap();
        assert_eq!(file.default_profile.as_deref(), Some("alice"));
        assert_eq!(file.profiles.len(), 5);
        let carol = &file.profiles["carol"];
        assert_eq!(carol.cert, Some(PathBuf::from("/srv/pki/users/carol.pem")));
        assert_eq!(
            carol.audit_verifier,
            Some(PathBuf::from("/srv/pki/audit-verifier.pub"))
        );
    }
}
