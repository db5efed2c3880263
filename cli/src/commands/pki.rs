//! `loupe pki init DIR` and `loupe pki issue user|agent`: the development PKI, made by
//! [`loupe_devstack::pki`], and what to put in a config file to use it.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::Context;
use crate::cli::{IssueArgs, IssueCommand, PkiCommand, PkiInitArgs};
use crate::error::CliError;
use crate::exit;
use loupe_devstack::pki::{self, IssueOptions, LeafPaths, PkiError, PkiLayout, PkiOptions};

/// The address the config snippet names when none is configured.
const DEFAULT_ADDRESS: &str = "127.0.0.1:7443";

/// Runs `loupe pki …`.
pub fn run(context: &Context, command: PkiCommand) -> Result<u8, CliError> {
    match command {
        PkiCommand::Init(args) => init(context, args),
        PkiCommand::Issue(IssueCommand::User { name, args }) => {
            let leaf =
                pki::issue_user(&args.dir, &name, &issue_options(&args)).map_err(pki_error)?;
            report_issued(context, "user", &name, &leaf)
        }
        PkiCommand::Issue(IssueCommand::Agent { service, args }) => {
            let leaf =
                pki::issue_agent(&args.dir, &service, &issue_options(&args)).map_err(pki_error)?;
            report_issued(context, "agent", &service, &leaf)
        }
    }
}

fn issue_options(args: &IssueArgs) -> IssueOptions {
    let defaults = IssueOptions::default();
    IssueOptions {
        days: args.days.unwrap_or(defaults.days),
        lifetime: args.lifetime,
        replace: args.replace,
    }
}

/// The PKI's errors already say what to do; bad names and lifetimes are usage errors.
fn pki_error(error: PkiError) -> CliError {
    match error {
        PkiError::BadName { .. } | PkiError::BadLifetime { .. } => {
            CliError::Usage(error.to_string())
        }
        _ => CliError::Other(format!("dev PKI: {error}")),
    }
}

fn report_issued(
    context: &Context,
    kind: &str,
    name: &str,
    leaf: &LeafPaths,
) -> Result<u8, CliError> {
    context.output.object(
        &format!(
            "issued {kind} {name}\n  {}\n  {}",
            leaf.cert.display(),
            leaf.key.display()
        ),
        &json!({ "kind": kind, "name": name, "cert": absolute(&leaf.cert), "key": absolute(&leaf.key) }),
    )?;
    Ok(exit::OK)
}

/// An absolute form of `path` for the config snippet, so it works from any directory.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A config file snippet with one profile per user of the PKI at `layout`.
pub fn config_snippet(
    layout: &PkiLayout,
    users: &[String],
    trust_domain: &str,
    address: &str,
) -> String {
    let mut text = String::from("# ~/.config/loupe/config.toml\n");
    if let Some(first) = users.first() {
        text.push_str(&format!("profile = \"{first}\"\n"));
    }
    text.push_str(&format!(
        "control_plane_identity = \"spiffe://{trust_domain}/control-plane\"\n"
    ));
    for user in users {
        let leaf = layout.user(user);
        text.push_str(&format!(
            "\n[profiles.{user}]\naddress = \"{address}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\naudit_verifier = \"{}\"\n",
            absolute(&leaf.cert).display(),
            absolute(&leaf.key).display(),
            absolute(&layout.ca_cert()).display(),
            absolute(&layout.audit_verifier()).display(),
        ));
    }
    text
}

fn init(context: &Context, args: PkiInitArgs) -> Result<u8, CliError> {
    let defaults = PkiOptions::default();
    let options = PkiOptions {
        trust_domain: args.trust_domain.unwrap_or(defaults.trust_domain),
        services: if args.services.is_empty() {
            defaults.services
        } else {
            args.services
        },
        users: if args.users.is_empty() {
            defaults.users
        } else {
            args.users
        },
        ca_days: args.ca_days.unwrap_or(defaults.ca_days),
        leaf_days: args.days.unwrap_or(defaults.leaf_days),
    };
    let layout = pki::init(&args.dir, &options).map_err(pki_error)?;
    let control_plane = layout.control_plane();
    let mut written: Vec<(String, PathBuf)> = vec![
        ("CA certificate".into(), layout.ca_cert()),
        ("control plane certificate".into(), control_plane.cert),
        ("control plane key".into(), control_plane.key),
        ("token signing key".into(), layout.token_signing_key()),
        ("token key set (for agents)".into(), layout.token_keys()),
        ("audit signing key".into(), layout.audit_signing_key()),
        (
            "audit verifier key (pin it)".into(),
            layout.audit_verifier(),
        ),
    ];
    for service in &options.services {
        let leaf = layout.agent(service);
        written.push((format!("agent {service} certificate"), leaf.cert));
        written.push((format!("agent {service} key"), leaf.key));
    }
    for user in &options.users {
        let leaf = layout.user(user);
        written.push((format!("user {user} certificate"), leaf.cert));
        written.push((format!("user {user} key"), leaf.key));
    }
    let address = context
        .settings
        .addresses
        .as_ref()
        .map_or_else(|| DEFAULT_ADDRESS.to_owned(), ToString::to_string);
    let snippet = config_snippet(&layout, &options.users, &options.trust_domain, &address);
    let mut text = format!("wrote a development PKI in {}:\n", args.dir.display());
    for (what, path) in &written {
        text.push_str(&format!("  {what:<30} {}\n", path.display()));
    }
    text.push_str(
        "\nTo use it, put this in ~/.config/loupe/config.toml (pick a user with --profile):\n\n",
    );
    text.push_str(&snippet);
    context.output.object(
        &text,
        &json!({
            "dir": absolute(&args.dir),
            "trust_domain": options.trust_domain,
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
        let layout = PkiLayout::at("/srv/pki");
        let users: Vec<String> = ["alice", "carol"].iter().map(|s| (*s).to_owned()).collect();
        let snippet = config_snippet(&layout, &users, "loupe.dev", "127.0.0.1:7443");
        let file = crate::config::FileConfig::parse(&snippet, Path::new("/c.toml")).unwrap();
        assert_eq!(file.default_profile.as_deref(), Some("alice"));
        assert_eq!(file.profiles.len(), 2);
        let carol = &file.profiles["carol"];
        assert_eq!(carol.cert, Some(PathBuf::from("/srv/pki/users/carol.pem")));
        assert_eq!(
            carol.audit_verifier,
            Some(PathBuf::from("/srv/pki/audit-verifier.pub"))
        );
        assert_eq!(
            file.base.control_plane_identity.as_deref(),
            Some("spiffe://loupe.dev/control-plane")
        );
    }

    #[test]
    fn init_then_issue_writes_what_the_layout_names() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        let options = PkiOptions {
            users: vec!["alice".into()],
            ..PkiOptions::default()
        };
        let layout = pki::init(&pki_dir, &options).unwrap();
        assert!(layout.user("alice").cert.exists());
        let leaf = pki::issue_user(&pki_dir, "zoe", &IssueOptions::default()).unwrap();
        assert_eq!(leaf, layout.user("zoe"));
        let again = pki::issue_user(&pki_dir, "zoe", &IssueOptions::default()).unwrap_err();
        assert_eq!(pki_error(again).exit_code(), exit::FAILURE);
        let bad = pki::issue_user(&pki_dir, "Zoe/../x", &IssueOptions::default()).unwrap_err();
        assert_eq!(pki_error(bad).exit_code(), exit::USAGE);
    }
}
