//! A development PKI: one directory holding everything a local Loupe deployment needs to speak
//! mTLS and sign what it signs — a CA, the control plane's and agents' certificates, engineers'
//! client certificates, the session-token signing key with its published key set, and the audit
//! log's checkpoint key.
//!
//! **For development only.** The CA key sits in a plain file next to everything it signs, there
//! is no revocation list and no hardware protection. Production brings its own CA (SPIFFE/SPIRE,
//! a corporate CA, cert-manager…) and only has to follow the identity conventions in
//! `loupe_trust::identity`; nothing in Loupe depends on certificates coming from here.
//!
//! [`PkiLayout`] is the single source of file names, so that the CLI, the control-plane
//! configuration and the quickstart agree on them:
//!
//! ```text
//! <dir>/                       0700 when created here
//!   ca.pem          ca.key                     ECDSA P-256 CA, path length 0
//!   control-plane.pem control-plane.key        spiffe://<td>/control-plane, server+client
//!   agents/<service>.pem agents/<service>.key  spiffe://<td>/agent/<service>, server+client
//!   users/<name>.pem users/<name>.key          spiffe://<td>/user/<name>, client only
//!   token-signing.pem                          Ed25519 PKCS#8, signs session tokens
//!   token-keys.jwks                            its public JWK set, what agents trust
//!   audit-signing.key                          signed-note signer key for audit checkpoints
//!   audit-verifier.pub                         its verifier key, what a reviewer pins
//! ```
//!
//! Secrets (`*.key`, `token-signing.pem`) are created with mode 0600 from the start — never
//! written first and restricted afterwards, which would leave a window in which they are
//! readable — and every file is written to a temporary name and renamed into place, so a reader
//! (a control plane reloading its certificate) never sees half a file.
//!
//! The CA certificate carries the trust domain as its own SPIFFE id (`spiffe://<td>`), so issuing
//! more leaves later needs nothing but the directory.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use loupe_audit::checkpoint::NoteSigner;
use loupe_trust::identity::{
    agent_identity, ca_trust_domain, control_plane_identity, user_identity,
};
use loupe_trust::tls::TlsPaths;
use loupe_trust::token::{KeySet, SigningKey, pkcs8_pem};
use time::{Duration, OffsetDateTime};

use loupe_trust::authority::{Authority, AuthorityError, CaSpec, LeafSpec};

/// The trust domain of the shipped policies (`policies/entities.json`).
pub const DEFAULT_TRUST_DOMAIN: &str = "loupe.dev";
/// The service the quickstart's demo runs.
pub const DEFAULT_SERVICES: &[&str] = &["checkout"];
/// The users of the shipped example entities (`policies/entities.json`).
pub const DEFAULT_USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin"];
/// Short on purpose: a development CA that leaks should stop mattering soon.
pub const DEFAULT_CA_DAYS: u32 = 90;
/// Leaves live a week; `loupe pki issue --replace` renews them.
pub const DEFAULT_LEAF_DAYS: u32 = 7;
/// Upper bound for any lifetime given on the command line (ten years).
pub const MAX_DAYS: u32 = 3650;

/// Mode of private keys and of directories created here.
const SECRET_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// Tolerated clock skew between the machine issuing and the machines verifying.
const BACKDATE: Duration = Duration::minutes(5);

/// What [`init`] creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiOptions {
    /// `loupe.dev` unless given; the `<td>` in every SPIFFE id.
    pub trust_domain: String,
    /// One agent certificate per service.
    pub services: Vec<String>,
    /// One client certificate per user.
    pub users: Vec<String>,
    /// Lifetime of the CA.
    pub ca_days: u32,
    /// Lifetime of every leaf (capped at the CA's expiry).
    pub leaf_days: u32,
}

impl Default for PkiOptions {
    fn default() -> Self {
        PkiOptions {
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            services: DEFAULT_SERVICES.iter().map(|s| (*s).to_owned()).collect(),
            users: DEFAULT_USERS.iter().map(|s| (*s).to_owned()).collect(),
            ca_days: DEFAULT_CA_DAYS,
            leaf_days: DEFAULT_LEAF_DAYS,
        }
    }
}

/// How [`issue_user`] and [`issue_agent`] issue. The trust domain is not an option: it is the
/// one the existing CA was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueOptions {
    /// Lifetime of the leaf (capped at the CA's expiry).
    pub days: u32,
    /// A lifetime given as a duration, used instead of `days` (short-lived certificates).
    pub lifetime: Option<std::time::Duration>,
    /// Replace an existing certificate and key of that name (renewal). Without it an existing
    /// leaf is an [`PkiError::AlreadyExists`] error.
    pub replace: bool,
}

impl Default for IssueOptions {
    fn default() -> Self {
        IssueOptions {
            days: DEFAULT_LEAF_DAYS,
            lifetime: None,
            replace: false,
        }
    }
}

/// What kind of name was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    User,
    Service,
    TrustDomain,
}

impl NameKind {
    /// What a name of this kind may be, in words.
    fn rule(&self) -> &'static str {
        match self {
            NameKind::User => loupe_proto::names::USER_NAME_RULE,
            NameKind::Service => loupe_proto::names::SERVICE_NAME_RULE,
            NameKind::TrustDomain => "lowercase DNS-like labels, e.g. `loupe.dev`",
        }
    }
}

impl std::fmt::Display for NameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameKind::User => "user name",
            NameKind::Service => "service name",
            NameKind::TrustDomain => "trust domain",
        })
    }
}

/// Why the PKI could not be created or extended. Every variant names what it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error(
        "{path} already exists; refusing to overwrite it. To start over remove the directory \
         (every certificate it issued stops being trusted); to add or renew certificates from \
         the existing CA use `loupe pki issue` (with --replace to renew)"
    )]
    AlreadyExists { path: PathBuf },
    #[error(
        "{dir} is not a Loupe development PKI: {missing} is missing. Create one with \
         `loupe pki init {dir}`"
    )]
    NotAPki { dir: PathBuf, missing: PathBuf },
    #[error("invalid {kind} {name:?}: {reason} (expected {})", kind.rule())]
    BadName {
        kind: NameKind,
        name: String,
        reason: &'static str,
    },
    #[error("invalid lifetime of {days} days for the {what}: must be between 1 and {MAX_DAYS}")]
    BadLifetime { what: &'static str, days: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Key { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where every file of a development PKI lives. Computes paths only; it does not check that the
/// files exist, so it also names the files [`init`] is about to create. Names passed to
/// [`agent`](PkiLayout::agent) and [`user`](PkiLayout::user) are joined as they are: check
/// untrusted ones with [`validate_name`] first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiLayout {
    dir: PathBuf,
}

impl PkiLayout {
    /// The layout of the PKI in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> PkiLayout {
        PkiLayout { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a CA (certificate and key) is present, i.e. whether [`init`] already ran here.
    pub fn has_ca(&self) -> bool {
        self.ca_cert().exists() && self.ca_key().exists()
    }

    /// The CA certificate every party trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA's private key; only `issue_*` reads it.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    pub fn control_plane(&self) -> LeafPaths {
        self.leaf(&self.dir, "control-plane")
    }

    pub fn agents_dir(&self) -> PathBuf {
        self.dir.join("agents")
    }

    /// The certificate of the agent(s) of `service`.
    pub fn agent(&self, service: &str) -> LeafPaths {
        self.leaf(&self.agents_dir(), service)
    }

    pub fn users_dir(&self) -> PathBuf {
        self.dir.join("users")
    }

    /// An engineer's, approver's or reviewer's client certificate.
    pub fn user(&self, name: &str) -> LeafPaths {
        self.leaf(&self.users_dir(), name)
    }

    /// Ed25519 PKCS#8 PEM key the control plane signs session tokens with.
    pub fn token_signing_key(&self) -> PathBuf {
        self.dir.join("token-signing.pem")
    }

    /// The JWK set of token-signing public keys agents accept.
    pub fn token_keys(&self) -> PathBuf {
        self.dir.join("token-keys.jwks")
    }

    /// The signed-note signer key (`PRIVATE+KEY+…`) for audit checkpoints.
    pub fn audit_signing_key(&self) -> PathBuf {
        self.dir.join("audit-signing.key")
    }

    /// The signed-note verifier key a reviewer pins to check checkpoints.
    pub fn audit_verifier(&self) -> PathBuf {
        self.dir.join("audit-verifier.pub")
    }

    /// mTLS material for a party holding `leaf`, trusting this PKI's CA.
    pub fn tls_paths(&self, leaf: &LeafPaths) -> TlsPaths {
        TlsPaths {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            ca: self.ca_cert(),
            crl: None,
        }
    }

    fn leaf(&self, dir: &Path, stem: &str) -> LeafPaths {
        LeafPaths {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }

    /// Every file `init` creates for `options`.
    fn files(&self, options: &PkiOptions) -> Vec<PathBuf> {
        let mut files = vec![self.ca_cert(), self.ca_key()];
        let cp = self.control_plane();
        files.extend([cp.cert, cp.key]);
        for service in &options.services {
            let leaf = self.agent(service);
            files.extend([leaf.cert, leaf.key]);
        }
        for user in &options.users {
            let leaf = self.user(user);
            files.extend([leaf.cert, leaf.key]);
        }
        files.extend([
            self.token_signing_key(),
            self.token_keys(),
            self.audit_signing_key(),
            self.audit_verifier(),
        ]);
        files
    }
}

/// Checks a user or service name by the contract's rules (`loupe_proto::names`). The name
/// becomes a file name and a SPIFFE path segment, and those rules admit nothing that could
/// escape either (`/`, `..`, spaces, a leading `-`).
pub fn validate_name(kind: NameKind, name: &str) -> Result<(), PkiError> {
    let checked = match kind {
        NameKind::User => loupe_proto::names::check_user_name(name),
        NameKind::Service => loupe_proto::names::check_service_name(name),
        NameKind::TrustDomain => return validate_trust_domain(name),
    };
    checked.map_err(|error| PkiError::BadName {
        kind,
        name: name.to_owned(),
        reason: error.reason(),
    })
}

/// Checks a trust domain: lowercase DNS-like labels (`loupe.dev`), as SPIFFE requires.
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), PkiError> {
    let bad = |reason| {
        Err(PkiError::BadName {
            kind: NameKind::TrustDomain,
            name: trust_domain.to_owned(),
            reason,
        })
    };
    if trust_domain.is_empty() {
        return bad("it is empty");
    }
    if trust_domain.len() > 255 {
        return bad("it is too long");
    }
    if !trust_domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return bad("it contains a character that is not allowed");
    }
    if trust_domain.split('.').any(str::is_empty) {
        return bad("it has an empty label");
    }
    Ok(())
}

fn validate_days(what: &'static str, days: u32) -> Result<(), PkiError> {
    if days == 0 || days > MAX_DAYS {
        return Err(PkiError::BadLifetime { what, days });
    }
    Ok(())
}

/// The key id of a token-signing key: its RFC 7638 JWK thumbprint. Derived from the key rather
/// than stored next to it, so whoever loads `token-signing.pem` arrives at the same `kid` as
/// `token-keys.jwks` without another file to keep in sync.
pub fn token_key_id(public_key: &[u8; 32]) -> String {
    loupe_trust::token::derived_kid(public_key)
}

/// Loads `token-signing.pem` with its key id ([`token_key_id`]).
pub fn load_token_signing_key(path: &Path) -> Result<SigningKey, PkiError> {
    let pem = std::fs::read(path).map_err(io(path))?;
    let key_error = |reason: String| PkiError::Key {
        path: path.to_owned(),
        reason,
    };
    // The kid depends on the public key, which is known only once the key is parsed.
    let probe = SigningKey::from_pkcs8_pem("", &pem).map_err(|e| key_error(e.to_string()))?;
    SigningKey::from_pkcs8_pem(token_key_id(&probe.public_key()), &pem)
        .map_err(|e| key_error(e.to_string()))
}

/// Creates a development PKI in `dir` (created 0700 if missing). Refuses if any file it would
/// write already exists, so an existing CA is never replaced by accident.
pub fn init(dir: &Path, options: &PkiOptions) -> Result<PkiLayout, PkiError> {
    validate_trust_domain(&options.trust_domain)?;
    for service in &options.services {
        validate_name(NameKind::Service, service)?;
    }
    for user in &options.users {
        validate_name(NameKind::User, user)?;
    }
    validate_days("CA", options.ca_days)?;
    validate_days("leaf certificates", options.leaf_days)?;

    let layout = PkiLayout::at(dir);
    // Checked up front so that a refused init leaves nothing behind; the no-clobber publish in
    // `write_file` still guards against a race with another writer.
    if let Some(existing) = layout.files(options).into_iter().find(|p| p.exists()) {
        return Err(PkiError::AlreadyExists { path: existing });
    }
    create_dir(dir)?;
    create_dir(&layout.agents_dir())?;
    create_dir(&layout.users_dir())?;
    match write_pki(&layout, options) {
        Ok(()) => Ok(layout),
        // Half a PKI would make the next `init` refuse with a confusing "already exists"; no
        // file existed before, so every one of them is ours to remove. Not on `AlreadyExists`
        // though: that is another writer racing us, and its files are not ours.
        Err(e) => {
            if !matches!(e, PkiError::AlreadyExists { .. }) {
                for path in layout.files(options) {
                    let _ = std::fs::remove_file(path);
                }
            }
            Err(e)
        }
    }
}

fn write_pki(layout: &PkiLayout, options: &PkiOptions) -> Result<(), PkiError> {
    let now = OffsetDateTime::now_utc();
    let ca_until = now + Duration::days(i64::from(options.ca_days));
    let ca = Ca::create(layout, &options.trust_domain, now, ca_until)?;
    let td = options.trust_domain.as_str();
    let leaf_until = (now + Duration::days(i64::from(options.leaf_days))).min(ca_until);

    ca.issue(
        &layout.control_plane(),
        &LeafSpec::server_and_client("control-plane", Some(&control_plane_identity(td)))
            .valid(now - BACKDATE, leaf_until),
        false,
    )?;
    for service in unique(&options.services) {
        ca.issue(
            &layout.agent(service),
            &agent_leaf(td, service, now, leaf_until),
            false,
        )?;
    }
    for user in unique(&options.users) {
        ca.issue(
            &layout.user(user),
            &user_leaf(td, user, now, leaf_until),
            false,
        )?;
    }
    write_token_keys(layout)?;
    write_audit_keys(layout, td)
}

/// `names` without repeats, in order: `--user alice --user alice` means one alice.
fn unique(names: &[String]) -> impl Iterator<Item = &str> {
    names
        .iter()
        .enumerate()
        .filter(|(i, name)| !names[..*i].contains(name))
        .map(|(_, name)| name.as_str())
}

/// Issues (or with `replace`, renews) a client certificate for user `name` from the CA in `dir`.
pub fn issue_user(dir: &Path, name: &str, options: &IssueOptions) -> Result<LeafPaths, PkiError> {
    validate_name(NameKind::User, name)?;
    issue(dir, options, |layout, td, now, until| {
        (layout.user(name), user_leaf(td, name, now, until))
    })
}

/// Issues (or with `replace`, renews) the certificate of the agent(s) of `service` from the CA in
/// `dir`.
pub fn issue_agent(
    dir: &Path,
    service: &str,
    options: &IssueOptions,
) -> Result<LeafPaths, PkiError> {
    validate_name(NameKind::Service, service)?;
    issue(dir, options, |layout, td, now, until| {
        (layout.agent(service), agent_leaf(td, service, now, until))
    })
}

fn issue(
    dir: &Path,
    options: &IssueOptions,
    spec: impl FnOnce(&PkiLayout, &str, OffsetDateTime, OffsetDateTime) -> (LeafPaths, LeafSpec),
) -> Result<LeafPaths, PkiError> {
    validate_days("leaf certificate", options.days)?;
    let layout = PkiLayout::at(dir);
    let ca = Ca::load(&layout)?;
    let now = OffsetDateTime::now_utc();
    if ca.not_after <= now {
        return Err(PkiError::Certificate {
            path: layout.ca_cert(),
            reason: format!(
                "the CA expired at {}; create a new PKI with `loupe pki init`",
                ca.not_after
            ),
        });
    }
    let lifetime = match options.lifetime {
        Some(lifetime) if lifetime < std::time::Duration::from_secs(1) => {
            return Err(PkiError::BadLifetime {
                what: "leaf certificate (--lifetime must be at least 1s)",
                days: 0,
            });
        }
        Some(lifetime) => Duration::try_from(lifetime).unwrap_or(Duration::MAX),
        None => Duration::days(i64::from(options.days)),
    };
    let until = now
        .checked_add(lifetime)
        .unwrap_or(ca.not_after)
        .min(ca.not_after);
    let (paths, spec) = spec(&layout, &ca.trust_domain, now, until);
    if !options.replace {
        for path in [&paths.cert, &paths.key] {
            if path.exists() {
                return Err(PkiError::AlreadyExists { path: path.clone() });
            }
        }
    }
    // An `init` predating the directory, or one removed by hand: recreate it private.
    if let Some(parent) = paths.cert.parent() {
        create_dir(parent)?;
    }
    ca.issue(&paths, &spec, options.replace)?;
    Ok(paths)
}

/// Agents serve the control plane and dial it to register: server and client.
fn agent_leaf(td: &str, service: &str, now: OffsetDateTime, until: OffsetDateTime) -> LeafSpec {
    LeafSpec::server_and_client(
        &format!("agent {service}"),
        Some(&agent_identity(td, service)),
    )
    .valid(now - BACKDATE, until)
}

/// People only ever dial: client only. The CN repeats the name for humans reading the
/// certificate; it identifies nobody (see `loupe_trust::identity`).
fn user_leaf(td: &str, name: &str, now: OffsetDateTime, until: OffsetDateTime) -> LeafSpec {
    LeafSpec::client(name, Some(&user_identity(td, name))).valid(now - BACKDATE, until)
}

/// The dev PKI's CA, able to sign: an [`Authority`] that knows its files and trust domain.
struct Ca {
    authority: Authority,
    trust_domain: String,
    not_after: OffsetDateTime,
}

fn authority_error(path: &Path) -> impl FnOnce(AuthorityError) -> PkiError + '_ {
    move |e| PkiError::Certificate {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Ca {
    fn create(
        layout: &PkiLayout,
        trust_domain: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Ca, PkiError> {
        let cert_path = layout.ca_cert();
        let (authority, key_pem) = Authority::create(&CaSpec {
            organization: Some("Loupe (development only)".to_owned()),
            common_name: format!("Loupe development CA for {trust_domain}"),
            uris: vec![format!("spiffe://{trust_domain}")],
            // Only leaves below it: a leaked leaf cannot act as a CA.
            path_length: Some(0),
            not_before: now - Duration::hours(1),
            not_after: until,
        })
        .map_err(authority_error(&cert_path))?;
        // Key first: a certificate without its key is useless, a key without its certificate
        // is just an orphan to clean up.
        write_file(&layout.ca_key(), key_pem.as_bytes(), Secret::Yes, false)?;
        write_file(
            &cert_path,
            authority.cert_pem().as_bytes(),
            Secret::No,
            false,
        )?;
        Ok(Ca {
            authority,
            trust_domain: trust_domain.to_owned(),
            not_after: until,
        })
    }

    fn load(layout: &PkiLayout) -> Result<Ca, PkiError> {
        let cert_path = layout.ca_cert();
        let key_path = layout.ca_key();
        for path in [&cert_path, &key_path] {
            if !path.exists() {
                return Err(PkiError::NotAPki {
                    dir: layout.dir().to_owned(),
                    missing: path.clone(),
                });
            }
        }
        let cert_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let der = pem_certificate_der(&cert_pem).ok_or_else(|| PkiError::Certificate {
            path: cert_path.clone(),
            reason: "no -----BEGIN CERTIFICATE----- block".to_owned(),
        })?;
        let (trust_domain, not_after) =
            ca_trust_domain(&der).map_err(|e| PkiError::Certificate {
                path: cert_path.clone(),
                reason: format!(
                    "not a Loupe development CA (a CA naming spiffe://<trust domain>): {e}"
                ),
            })?;
        let not_after =
            OffsetDateTime::from_unix_timestamp(not_after).map_err(|e| PkiError::Certificate {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        let authority = Authority::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            AuthorityError::Key(reason) => PkiError::Key {
                path: key_path.clone(),
                reason,
            },
            other => PkiError::Certificate {
                path: cert_path.clone(),
                reason: other.to_string(),
            },
        })?;
        if authority.public_key_der() != public_key_der(&der).unwrap_or_default() {
            return Err(PkiError::Key {
                path: key_path,
                reason: format!(
                    "does not belong to the CA certificate {}",
                    cert_path.display()
                ),
            });
        }
        Ok(Ca {
            authority,
            trust_domain,
            not_after,
        })
    }

    fn issue(&self, paths: &LeafPaths, spec: &LeafSpec, replace: bool) -> Result<(), PkiError> {
        let leaf = self
            .authority
            .issue(spec)
            .map_err(authority_error(&paths.cert))?;
        write_file(&paths.key, leaf.key_pem.as_bytes(), Secret::Yes, replace)?;
        write_file(&paths.cert, leaf.cert_pem.as_bytes(), Secret::No, replace)
    }
}

fn write_token_keys(layout: &PkiLayout) -> Result<(), PkiError> {
    let key = new_token_signing_key(&layout.token_signing_key())?;
    let mut keys = KeySet::new();
    keys.insert(key.kid().to_owned(), key.public_key());
    write_file(
        &layout.token_keys(),
        keys.to_jwks_json().as_bytes(),
        Secret::No,
        false,
    )
}

/// Writes a fresh token-signing key to `path` (PKCS#8 PEM, mode 0600; refused if the file
/// exists) and returns it with its key id ([`token_key_id`]): the dev PKI's first key, and the
/// next one when a deployment rotates (see the README's rotation procedure).
pub fn new_token_signing_key(path: &Path) -> Result<SigningKey, PkiError> {
    let key_error = |e: loupe_trust::token::KeyError| PkiError::Key {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let (probe, pkcs8) = SigningKey::generate("").map_err(key_error)?;
    let kid = token_key_id(&probe.public_key());
    write_file(path, pkcs8_pem(&pkcs8).as_bytes(), Secret::Yes, false)?;
    SigningKey::from_pkcs8_der(kid, &pkcs8).map_err(key_error)
}

fn write_audit_keys(layout: &PkiLayout, trust_domain: &str) -> Result<(), PkiError> {
    let path = layout.audit_signing_key();
    // The key's name is the audit log's origin: `<td>/audit`.
    let signer =
        NoteSigner::generate(&format!("{trust_domain}/audit")).map_err(|e| PkiError::Key {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    write_file(
        &path,
        format!("{}\n", signer.private_key()).as_bytes(),
        Secret::Yes,
        false,
    )?;
    write_file(
        &layout.audit_verifier(),
        format!("{}\n", signer.verifier()).as_bytes(),
        Secret::No,
        false,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Yes,
    No,
}

/// Creates `dir` with mode 0700 if it is missing; an existing directory is left as it is.
fn create_dir(dir: &Path) -> Result<(), PkiError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io(dir))
}

/// Writes `contents` to a temporary file in the same directory, created with its final mode,
/// flushes it to disk, then moves it to `path`. Without `replace`, an existing `path` is an
/// error and stays untouched.
fn write_file(path: &Path, contents: &[u8], secret: Secret, replace: bool) -> Result<(), PkiError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mode = match secret {
        Secret::Yes => SECRET_MODE,
        Secret::No => PUBLIC_MODE,
    };
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        });
    if let Err(source) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(PkiError::Io {
            path: temporary,
            source,
        });
    }
    let published = if replace {
        std::fs::rename(&temporary, path).map_err(io(path))
    } else {
        publish_new(&temporary, path)
    };
    let _ = std::fs::remove_file(&temporary);
    published
}

/// Moves `temporary` to `path` only if `path` does not exist. A hard link fails atomically on
/// an existing target, which a rename would silently replace.
fn publish_new(temporary: &Path, path: &Path) -> Result<(), PkiError> {
    match std::fs::hard_link(temporary, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(PkiError::AlreadyExists {
            path: path.to_owned(),
        }),
        // File systems without hard links: check, then rename (racy, but only there).
        Err(_) if !path.exists() => std::fs::rename(temporary, path).map_err(io(path)),
        Err(_) => Err(PkiError::AlreadyExists {
            path: path.to_owned(),
        }),
    }
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    String::from_utf8(bytes).map_err(|_| PkiError::Certificate {
        path: path.to_owned(),
        reason: "not PEM text (not UTF-8)".to_owned(),
    })
}

/// The DER of the first certificate in PEM text.
fn pem_certificate_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let stop = start + pem[start..].find(END)?;
    let body: String = pem[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The SubjectPublicKeyInfo DER of a certificate, to check that a key belongs to it.
fn public_key_der(cert_der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    Some(cert.public_key().raw.to_vec())
}
