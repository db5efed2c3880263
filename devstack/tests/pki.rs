//! The development PKI: every file is there with the right mode, and everything in it works
//! with the code that will consume it — rustls and the identity reader for certificates, the
//! token verifier for the token keys, the signed-note verifier for the audit key.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use loupe_audit::checkpoint::{NoteSigner, NoteVerifier};
use loupe_devstack::pki::{
    self, IssueOptions, LeafPaths, NameKind, PkiError, PkiLayout, PkiOptions,
    load_token_signing_key,
};
use loupe_trust::identity::{IdentityRules, PeerIdentity, ca_trust_domain};
use loupe_trust::tls::{self, ReloadingServerTls};
use loupe_trust::token::{
    Confirmation, KeySet, SessionClaims, TokenLimits, TokenRedaction, VerificationPolicy,
    audience_for, unix_now,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn fresh() -> (tempfile::TempDir, PkiLayout) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = pki::init(&tmp.path().join("pki"), &PkiOptions::default()).expect("init");
    (tmp, layout)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn leaf_der(leaf: &LeafPaths) -> CertificateDer<'static> {
    tls::load_certificates(&leaf.cert).expect("leaf certificate")[0].clone()
}

/// The leaf's identity by the SVID rules, in the trust domain of the PKI's CA it sits under.
fn peer_identity(leaf: &LeafPaths) -> PeerIdentity {
    let ca = leaf
        .cert
        .ancestors()
        .map(|dir| dir.join("ca.pem"))
        .find(|ca| ca.exists())
        .expect("the PKI's CA above the leaf");
    let ca_der = tls::load_certificates(&ca).expect("CA certificate")[0].clone();
    let (trust_domain, _) = ca_trust_domain(&ca_der).expect("a SPIFFE CA");
    IdentityRules::new(&trust_domain)
        .expect("trust domain")
        .identify(&leaf_der(leaf))
        .expect("a leaf SVID")
}

fn identity(leaf: &LeafPaths) -> String {
    peer_identity(leaf).id
}

fn secrets(layout: &PkiLayout) -> Vec<std::path::PathBuf> {
    let mut secrets = vec![
        layout.ca_key(),
        layout.control_plane().key,
        layout.token_signing_key(),
        layout.audit_signing_key(),
    ];
    secrets.extend(pki::DEFAULT_SERVICES.iter().map(|s| layout.agent(s).key));
    secrets.extend(pki::DEFAULT_USERS.iter().map(|u| layout.user(u).key));
    secrets
}

fn public_files(layout: &PkiLayout) -> Vec<std::path::PathBuf> {
    let mut public = vec![
        layout.ca_cert(),
        layout.control_plane().cert,
        layout.token_keys(),
        layout.audit_verifier(),
    ];
    public.extend(pki::DEFAULT_SERVICES.iter().map(|s| layout.agent(s).cert));
    public.extend(pki::DEFAULT_USERS.iter().map(|u| layout.user(u).cert));
    public
}

#[test]
fn init_creates_every_file_secrets_private() {
    let (_tmp, layout) = fresh();
    assert_eq!(mode(layout.dir()), 0o700, "the directory it created");
    for path in secrets(&layout) {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for path in public_files(&layout) {
        let mode = mode(&path);
        assert_eq!(mode & 0o600, 0o600, "{} is the owner's", path.display());
        assert_eq!(
            mode & 0o022,
            0,
            "{} is not writable by others",
            path.display()
        );
    }
    // Nothing else: no temporary files left behind.
    let mut expected = secrets(&layout);
    expected.extend(public_files(&layout));
    let mut found = Vec::new();
    for dir in [
        layout.dir().to_owned(),
        layout.agents_dir(),
        layout.users_dir(),
    ] {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                found.push(path);
            }
        }
    }
    expected.sort();
    found.sort();
    assert_eq!(found, expected);
}

#[test]
fn leaves_carry_their_spiffe_ids() {
    let (_tmp, layout) = fresh();
    assert_eq!(
        identity(&layout.control_plane()),
        "spiffe://loupe.dev/control-plane"
    );
    assert_eq!(
        identity(&layout.agent("checkout")),
        "spiffe://loupe.dev/agent/checkout"
    );
    for user in pki::DEFAULT_USERS {
        assert_eq!(
            identity(&layout.user(user)),
            format!("spiffe://loupe.dev/user/{user}")
        );
    }
    let lifetime = |leaf: &LeafPaths| {
        let id = peer_identity(leaf);
        id.not_after - id.not_before
    };
    // Seven days, plus the five minutes of backdating for clock skew.
    assert_eq!(lifetime(&layout.user("alice")), 7 * 86_400 + 300);
}

#[test]
fn leaves_verify_against_the_ca_with_rustls() {
    let (_tmp, layout) = fresh();
    let now = UnixTime::now();

    // Clients: everyone, through the verifier every Loupe server uses.
    let cp_paths = layout.tls_paths(&layout.control_plane());
    let verifier = tls::client_verifier(&cp_paths, &tls::provider()).expect("client verifier");
    let mut clients = vec![layout.control_plane(), layout.agent("checkout")];
    clients.extend(pki::DEFAULT_USERS.iter().map(|u| layout.user(u)));
    for leaf in &clients {
        verifier
            .verify_client_cert(&leaf_der(leaf), &[], now)
            .unwrap_or_else(|e| panic!("{} as a client: {e}", leaf.cert.display()));
    }

    // Servers: the control plane and agents, for `localhost` and 127.0.0.1.
    let roots = Arc::new(tls::load_roots(&layout.ca_cert()).expect("roots"));
    let servers = WebPkiServerVerifier::builder_with_provider(roots, tls::provider())
        .build()
        .expect("server verifier");
    for leaf in [layout.control_plane(), layout.agent("checkout")] {
        for name in ["localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).expect("server name");
            servers
                .verify_server_cert(&leaf_der(&leaf), &[], &name, &[], now)
                .unwrap_or_else(|e| panic!("{} as a server: {e}", leaf.cert.display()));
        }
    }
    // A user certificate is for clients only.
    let localhost = ServerName::try_from("localhost").expect("server name");
    assert!(
        servers
            .verify_server_cert(&leaf_der(&layout.user("alice")), &[], &localhost, &[], now)
            .is_err()
    );

    // Keys match their certificates, as the loaders every endpoint uses see them.
    for leaf in clients {
        ReloadingServerTls::load(layout.tls_paths(&leaf))
            .unwrap_or_else(|e| panic!("{}: {e}", leaf.cert.display()));
        tls::client_config(&layout.tls_paths(&leaf)).expect("client config");
    }
}

#[test]
fn tokens_signed_with_the_signing_key_verify_with_the_published_keys() {
    let (_tmp, layout) = fresh();
    let signer = load_token_signing_key(&layout.token_signing_key()).expect("signing key");
    let keys = KeySet::from_jwks_json(&std::fs::read(layout.token_keys()).expect("read jwks"))
        .expect("key set");
    assert_eq!(keys.kids().collect::<Vec<_>>(), [signer.kid()]);

    let cp_cert = leaf_der(&layout.control_plane());
    let now = unix_now();
    let claims = SessionClaims {
        iss: "spiffe://loupe.dev/control-plane".into(),
        aud: audience_for("checkout"),
        sub: "spiffe://loupe.dev/user/alice".into(),
        sid: "s-1".into(),
        jti: "t-1".into(),
        iat: now,
        nbf: now,
        exp: now + 60,
        points: vec!["checkout.apply_discount".into()],
        limits: TokenLimits {
            max_snapshots: 5,
            max_bytes: 65_536,
            rate: 1.0,
        },
        redact: TokenRedaction::default(),
        cnf: Confirmation::for_certificate(&cp_cert),
    };
    let token = signer.mint(&claims).expect("mint");
    let policy = VerificationPolicy {
        keys,
        issuer: claims.iss.clone(),
        audience: claims.aud.clone(),
        leeway: Duration::from_secs(5),
        max_lifetime: Duration::from_secs(300),
    };
    assert_eq!(
        policy.verify(&token, &cp_cert, now).expect("verify"),
        claims
    );
}

#[test]
fn notes_signed_with_the_audit_key_verify_with_the_pinned_verifier() {
    let (_tmp, layout) = fresh();
    let signer = NoteSigner::from_private_key(
        &std::fs::read_to_string(layout.audit_signing_key()).expect("read"),
    )
    .expect("signer key");
    let verifier =
        NoteVerifier::parse(&std::fs::read_to_string(layout.audit_verifier()).expect("read"))
            .expect("verifier key");
    assert_eq!(verifier.name(), "loupe.dev/audit");
    let note = signer.sign("loupe.dev/audit\n3\nroot\n").expect("sign");
    assert_eq!(
        verifier.open(&note).expect("verify"),
        "loupe.dev/audit\n3\nroot\n"
    );
}

#[test]
fn init_refuses_to_overwrite_an_existing_pki() {
    let (_tmp, layout) = fresh();
    let ca_before = std::fs::read(layout.ca_cert()).expect("read");
    let err = pki::init(layout.dir(), &PkiOptions::default()).expect_err("second init");
    assert!(
        matches!(&err, PkiError::AlreadyExists { path } if *path == layout.ca_cert()),
        "{err:?}"
    );
    assert!(err.to_string().contains("loupe pki issue"), "{err}");
    assert_eq!(std::fs::read(layout.ca_cert()).expect("read"), ca_before);
}

#[test]
fn issue_adds_leaves_that_chain_to_the_same_ca() {
    let (_tmp, layout) = fresh();
    let frank = pki::issue_user(layout.dir(), "frank", &IssueOptions::default()).expect("issue");
    assert_eq!(frank, layout.user("frank"));
    assert_eq!(identity(&frank), "spiffe://loupe.dev/user/frank");
    assert_eq!(mode(&frank.key), 0o600);
    let payments =
        pki::issue_agent(layout.dir(), "payments", &IssueOptions::default()).expect("issue");
    assert_eq!(identity(&payments), "spiffe://loupe.dev/agent/payments");

    let verifier =
        tls::client_verifier(&layout.tls_paths(&layout.control_plane()), &tls::provider())
            .expect("client verifier");
    for leaf in [&frank, &payments] {
        verifier
            .verify_client_cert(&leaf_der(leaf), &[], UnixTime::now())
            .expect("chains to the CA");
        ReloadingServerTls::load(layout.tls_paths(leaf)).expect("key matches");
    }

    // Existing leaves are only replaced on request.
    let err = pki::issue_user(layout.dir(), "frank", &IssueOptions::default())
        .expect_err("already issued");
    assert!(matches!(err, PkiError::AlreadyExists { .. }), "{err:?}");
    let before = std::fs::read(&frank.cert).expect("read");
    let renew = IssueOptions {
        days: 1,
        replace: true,
        ..IssueOptions::default()
    };
    pki::issue_user(layout.dir(), "frank", &renew).expect("renew");
    assert_ne!(std::fs::read(&frank.cert).expect("read"), before);
    assert_eq!(mode(&frank.key), 0o600);
}

#[test]
fn a_custom_trust_domain_carries_over_to_issued_leaves() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = PkiOptions {
        trust_domain: "example.org".into(),
        services: vec!["inventory".into()],
        users: vec!["zoe".into()],
        ca_days: 30,
        leaf_days: 2,
    };
    assert!(!PkiLayout::at(tmp.path()).has_ca());
    let options = PkiOptions {
        users: vec!["zoe".into(), "zoe".into()],
        ..options
    };
    let layout = pki::init(tmp.path(), &options).expect("init into an existing directory");
    assert!(layout.has_ca());
    assert_eq!(
        identity(&layout.agent("inventory")),
        "spiffe://example.org/agent/inventory"
    );
    let leaf = pki::issue_user(tmp.path(), "yann", &IssueOptions::default()).expect("issue");
    assert_eq!(identity(&leaf), "spiffe://example.org/user/yann");
    assert!(!layout.user("alice").cert.exists());
}

#[test]
fn bad_names_and_missing_pki_are_clear_errors() {
    let (_tmp, layout) = fresh();
    for name in [
        "",
        "Alice",
        "../etc",
        "a/b",
        "-x",
        ".hidden",
        "a b",
        &"x".repeat(64),
    ] {
        let err =
            pki::issue_user(layout.dir(), name, &IssueOptions::default()).expect_err("bad name");
        assert!(
            matches!(&err, PkiError::BadName { kind: NameKind::User, name: n, .. } if n == name),
            "{name:?}: {err:?}"
        );
    }
    pki::issue_user(layout.dir(), &"x".repeat(63), &IssueOptions::default()).expect("63 is ok");
    pki::issue_agent(layout.dir(), "svc_1.v2-b", &IssueOptions::default()).expect("ok name");

    let empty = tempfile::tempdir().expect("tempdir");
    let err =
        pki::issue_agent(empty.path(), "checkout", &IssueOptions::default()).expect_err("no CA");
    assert!(matches!(err, PkiError::NotAPki { .. }), "{err:?}");
    assert!(err.to_string().contains("loupe pki init"), "{err}");

    let instant = IssueOptions {
        lifetime: Some(std::time::Duration::from_millis(10)),
        ..IssueOptions::default()
    };
    assert!(matches!(
        pki::issue_user(layout.dir(), "gina", &instant),
        Err(PkiError::BadLifetime { .. })
    ));
    let zero = IssueOptions {
        days: 0,
        replace: false,
        ..IssueOptions::default()
    };
    assert!(matches!(
        pki::issue_user(layout.dir(), "gina", &zero),
        Err(PkiError::BadLifetime { .. })
    ));
    let bad_domain = PkiOptions {
        trust_domain: "Loupe Dev".into(),
        ..PkiOptions::default()
    };
    assert!(matches!(
        pki::init(&empty.path().join("x"), &bad_domain),
        Err(PkiError::BadName {
            kind: NameKind::TrustDomain,
            ..
        })
    ));
    assert!(
        !empty.path().join("x").exists(),
        "nothing created on refusal"
    );
}

#[test]
fn a_corrupt_ca_key_is_an_error_not_a_panic() {
    let (_tmp, layout) = fresh();
    std::fs::write(layout.ca_key(), "not a key").expect("write");
    let err =
        pki::issue_user(layout.dir(), "frank", &IssueOptions::default()).expect_err("bad key");
    assert!(matches!(err, PkiError::Key { .. }), "{err:?}");

    let (_tmp2, other) = fresh();
    std::fs::copy(other.ca_key(), layout.ca_key()).expect("copy");
    let err = pki::issue_user(layout.dir(), "frank", &IssueOptions::default())
        .expect_err("mismatched key");
    assert!(err.to_string().contains("does not belong"), "{err}");
}

#[test]
fn token_key_id_is_the_rfc_7638_thumbprint() {
    use base64::Engine as _;
    // RFC 8037, appendix A.3.
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .expect("base64url");
    let public: [u8; 32] = x.try_into().expect("32 bytes");
    assert_eq!(
        pki::token_key_id(&public),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}
