//! What the control plane reads from files when it opens, each step failing with a
//! [`StartError`] that names the file and what is wrong with it: its own identity (which must
//! be the control plane's of its trust domain — every event it causes names it), the
//! token-signing keys, the audit-signing key, and the audit database with the sessions it
//! keeps. Nothing here runs once the control plane serves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use loupe_audit::checkpoint::NoteSigner;
use loupe_trust::identity::{CnMapping, IdentityRules, control_plane_identity};
use loupe_trust::token::{SigningKey, derived_kid};

use super::StartError;
use super::table::SessionTable;
use crate::audit::{AuditLog, AuditLogConfig, Database, OpenError, PostgresStore, SqliteStore};
use crate::config::Config;
use crate::state::{StoredSession, import_legacy_sessions};
use crate::tokens::TokenMinter;

/// The rules callers are identified by: the trust domain's, with the configured CN mappings
/// (each CA file read now).
pub(super) fn identity_rules(config: &Config) -> Result<IdentityRules, StartError> {
    let mut mappings = Vec::with_capacity(config.cn_mappings.len());
    for mapping in &config.cn_mappings {
        let failed = |reason: String| StartError::CnMapping {
            path: mapping.ca.clone(),
            reason,
        };
        let ca =
            loupe_trust::tls::load_certificates(&mapping.ca).map_err(|e| failed(e.to_string()))?;
        let Some(first) = ca.first() else {
            return Err(failed("it holds no certificate".to_owned()));
        };
        mappings.push(
            CnMapping::new(first, &mapping.common_name, &mapping.spiffe_id)
                .map_err(|e| failed(e.to_string()))?,
        );
    }
    let failed = |reason: String| StartError::CnMapping {
        path: config.tls.ca.clone(),
        reason,
    };
    IdentityRules::new(&config.trust_domain)
        .map_err(|e| failed(e.to_string()))?
        .with_cn_mappings(mappings)
        .map_err(|e| failed(e.to_string()))
}

/// The control plane's own identity, from the certificate it presents (`certificate`, read from
/// `path`): it must be the control plane of `trust_domain`.
pub(super) fn own_identity(
    trust_domain: &str,
    path: &Path,
    certificate: &[u8],
) -> Result<String, StartError> {
    let failed = |reason: String| StartError::OwnIdentity {
        path: path.to_path_buf(),
        reason,
    };
    let own = IdentityRules::new(trust_domain)
        .map_err(|e| failed(e.to_string()))?
        .identify(certificate)
        .map_err(|e| failed(e.to_string()))?;
    let expected = control_plane_identity(trust_domain);
    if own.id != expected {
        return Err(failed(format!(
            "it names `{}`, but a control plane in trust domain `{trust_domain}` must be `{expected}`",
            own.id
        )));
    }
    Ok(expected)
}

/// The token-signing keys at `paths`, each named by the key id derived from its public key.
pub(super) fn token_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>, StartError> {
    let mut keys = Vec::with_capacity(paths.len());
    for path in paths {
        let failed = |reason: String| StartError::TokenKey {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        let named = |kid: String| {
            SigningKey::from_pkcs8_pem(kid, pem.as_bytes()).map_err(|e| failed(e.to_string()))
        };
        let kid = derived_kid(&named(String::new())?.public_key());
        keys.push(named(kid)?);
    }
    Ok(keys)
}

/// The minter of tokens issued as `issuer`, its keys published where the configuration says.
pub(super) fn token_minter(config: &Config, issuer: &str) -> Result<TokenMinter, StartError> {
    let keys = token_keys(&config.token_signing_keys)?;
    let minter = TokenMinter::new(keys, issuer.to_owned(), config.token_lifetime_seconds)?;
    if let Some(path) = &config.token_keys_publish {
        minter.publish(path)?;
    }
    Ok(minter)
}

/// The key the audit log's checkpoints are signed with, read from `path`.
pub(crate) fn audit_signer(path: &Path) -> Result<NoteSigner, StartError> {
    let failed = |reason: String| StartError::AuditKey {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    NoteSigner::from_private_key(text.trim()).map_err(|e| failed(e.to_string()))
}

/// The audit log — in `database` (PostgreSQL, shared with other replicas) if given, else in
/// SQLite in `data_dir` (sessions of earlier versions imported first) — re-verified as it
/// opens, and the session table it keeps current.
pub(super) fn audit_and_sessions(
    data_dir: &Path,
    database: Option<&str>,
    signer: NoteSigner,
) -> Result<(AuditLog, Arc<SessionTable>), StartError> {
    let audit = match database {
        Some(url) => {
            let store = Database::parse(url)
                .and_then(PostgresStore::open)
                .map_err(OpenError::Store)?;
            AuditLog::open_with_store(store, signer, AuditLogConfig::default())?
        }
        None => {
            let mut store = SqliteStore::open(data_dir).map_err(OpenError::Store)?;
            import_legacy_sessions(data_dir, &mut store)?;
            AuditLog::open_with_store(store, signer, AuditLogConfig::default())?
        }
    };
    let loaded = audit
        .sessions()?
        .iter()
        .map(StoredSession::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let sessions = Arc::new(SessionTable::new(loaded));
    audit.observe_state(sessions.clone());
    Ok((audit, sessions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unreadable_token_key_names_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        match token_keys(std::slice::from_ref(&missing)) {
            Err(StartError::TokenKey { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected a token key error, got {other:?}"),
        }
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").expect("write");
        match token_keys(std::slice::from_ref(&garbage)) {
            Err(StartError::TokenKey { path, .. }) => assert_eq!(path, garbage),
            other => panic!("expected a token key error, got {other:?}"),
        }
        assert!(
            token_keys(&[])
                .expect("no keys is no error here")
                .is_empty()
        );
    }

    #[test]
    fn a_missing_or_malformed_audit_key_names_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("audit.key");
        assert!(matches!(
            audit_signer(&missing),
            Err(StartError::AuditKey { path, .. }) if path == missing
        ));
        std::fs::write(&missing, "PRIVATE+KEY+nonsense\n").expect("write");
        assert!(matches!(
            audit_signer(&missing),
            Err(StartError::AuditKey { path, .. }) if path == missing
        ));
    }

    #[test]
    fn a_fresh_data_directory_opens_with_no_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = NoteSigner::generate("loupe-test").expect("a signer");
        let (_audit, sessions) = audit_and_sessions(dir.path(), None, signer).expect("opens");
        assert!(sessions.all().is_empty());
    }
}
