//! Peer identity from real certificates, by the SPIFFE X.509-SVID rules.

use loupe_trust::identity::{
    CnMapping, IdentityError, IdentityRules, SpiffeId, SpiffeIdError, ca_trust_domain,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

const TD: &str = "loupe.test";

fn rules() -> IdentityRules {
    IdentityRules::new(TD).expect("trust domain")
}

fn uri(text: &str) -> SanType {
    SanType::URI(text.try_into().expect("uri"))
}

fn leaf_params(cn: Option<&str>, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

fn self_signed(params: CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    params.self_signed(&key).expect("cert").der().to_vec()
}

fn certificate(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
    self_signed(leaf_params(cn, sans))
}

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let der = params.self_signed(&key).expect("CA").der().to_vec();
        Ca { params, key, der }
    }

    fn issue(&self, params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        params
            .signed_by(&key, &issuer)
            .expect("leaf")
            .der()
            .to_vec()
    }
}

#[test]
fn the_one_uri_san_is_the_identity_and_the_cn_is_ignored() {
    let der = certificate(
        Some("spiffe://loupe.test/user/mallory"),
        vec![
            SanType::DnsName("alice.example".try_into().expect("dns")),
            uri("spiffe://loupe.test/user/alice"),
        ],
    );
    let identity = rules().identify(&der).expect("identity");
    assert_eq!(identity.id, "spiffe://loupe.test/user/alice");
    assert!(identity.not_after > identity.not_before);
}

#[test]
fn a_cn_spelling_a_spiffe_id_identifies_nobody() {
    for cn in [
        "spiffe://loupe.test/user/carol",
        "spiffe://loupe.test/control-plane",
        "legacy-client",
    ] {
        let der = certificate(Some(cn), vec![]);
        assert_eq!(rules().identify(&der), Err(IdentityError::NoUriSan), "{cn}");
    }
    let error = rules()
        .identify(&certificate(Some("carol"), vec![]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no URI SAN"), "{error}");
}

#[test]
fn two_uri_sans_identify_nobody_whatever_the_order() {
    for sans in [
        vec![
            uri("spiffe://loupe.test/user/alice"),
            uri("spiffe://loupe.test/user/carol"),
        ],
        vec![
            uri("https://example.com/x"),
            uri("spiffe://loupe.test/user/alice"),
        ],
    ] {
        assert_eq!(
            rules().identify(&certificate(Some("alice"), sans)),
            Err(IdentityError::SeveralUriSans { count: 2 })
        );
    }
}

#[test]
fn the_trust_domain_must_be_the_configured_one() {
    let der = certificate(None, vec![uri("spiffe://evil.test/user/alice")]);
    assert_eq!(
        rules().identify(&der),
        Err(IdentityError::ForeignTrustDomain {
            id: "spiffe://evil.test/user/alice".into(),
            expected: TD.into(),
        })
    );
}

#[test]
fn uris_that_are_not_spiffe_ids_are_refused_with_the_reason() {
    for (text, reason) in [
        ("https://loupe.test/user/alice", SpiffeIdError::Scheme),
        (
            "spiffe://Loupe.test/user/a",
            SpiffeIdError::TrustDomainCharacter,
        ),
        (
            "spiffe://loupe.test:443/user/a",
            SpiffeIdError::TrustDomainCharacter,
        ),
        (
            "spiffe://u@loupe.test/user/a",
            SpiffeIdError::TrustDomainCharacter,
        ),
        ("spiffe://loupe.test/user//a", SpiffeIdError::EmptySegment),
        ("spiffe://loupe.test/user/a/", SpiffeIdError::EmptySegment),
        (
            "spiffe://loupe.test/user/../admin",
            SpiffeIdError::DotSegment,
        ),
        (
            "spiffe://loupe.test/user/a?x=1",
            SpiffeIdError::PathCharacter,
        ),
        ("spiffe://loupe.test/user/a#f", SpiffeIdError::PathCharacter),
        (
            "spiffe://loupe.test/user/a%2Fb",
            SpiffeIdError::PathCharacter,
        ),
    ] {
        let der = certificate(None, vec![uri(text)]);
        assert_eq!(
            rules().identify(&der),
            Err(IdentityError::NotSpiffe {
                uri: text.into(),
                reason: reason.clone()
            }),
            "{text}"
        );
        assert_eq!(SpiffeId::parse(text), Err(reason), "{text}");
    }
    let long = format!("spiffe://loupe.test/{}", "a".repeat(2048));
    assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong));
    let id = SpiffeId::parse("spiffe://loupe.test/agent/checkout").expect("valid");
    assert_eq!(id.trust_domain(), "loupe.test");
    assert_eq!(id.path(), "/agent/checkout");
}

#[test]
fn only_leaf_svids_identify() {
    // The trust domain's own ID names no workload.
    let der = certificate(None, vec![uri("spiffe://loupe.test")]);
    assert!(matches!(
        rules().identify(&der),
        Err(IdentityError::NoPath { .. })
    ));
    // A CA certificate is no leaf, even with a workload ID.
    let mut ca = leaf_params(None, vec![uri("spiffe://loupe.test/user/alice")]);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    assert!(matches!(
        rules().identify(&self_signed(ca)),
        Err(IdentityError::NotALeaf { .. })
    ));
    // Key usage: digitalSignature required, certificate and CRL signing forbidden.
    for (usages, problem) in [
        (vec![], "it has no key usage extension"),
        (
            vec![KeyUsagePurpose::KeyEncipherment],
            "digitalSignature is missing",
        ),
        (
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            "keyCertSign is set",
        ),
        (
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign],
            "cRLSign is set",
        ),
    ] {
        let mut params = leaf_params(None, vec![uri("spiffe://loupe.test/user/alice")]);
        params.key_usages = usages;
        assert_eq!(
            rules().identify(&self_signed(params)),
            Err(IdentityError::KeyUsage {
                id: "spiffe://loupe.test/user/alice".into(),
                problem
            })
        );
    }
}

#[test]
fn garbage_is_refused() {
    assert!(matches!(
        rules().identify(b"\x30\x03garbage"),
        Err(IdentityError::Malformed(_))
    ));
}

#[test]
fn a_cn_mapping_applies_only_to_its_ca_its_cn_and_certificates_without_uri_sans() {
    let legacy = Ca::new("Legacy CA");
    let impostor = Ca::new("Legacy CA"); // same name, different key
    let mapping =
        CnMapping::new(&legacy.der, "alice", "spiffe://loupe.test/user/alice").expect("mapping");
    let rules = rules().with_cn_mappings(vec![mapping]).expect("rules");

    let mapped = legacy.issue(leaf_params(Some("alice"), vec![]));
    assert_eq!(
        rules.identify(&mapped).expect("mapped").id,
        "spiffe://loupe.test/user/alice"
    );
    // Another CN of the same CA, the same CN from a CA that only shares the name, and the
    // CN written as a SPIFFE ID: nobody.
    for der in [
        legacy.issue(leaf_params(Some("carol"), vec![])),
        impostor.issue(leaf_params(Some("alice"), vec![])),
        legacy.issue(leaf_params(Some("spiffe://loupe.test/user/alice"), vec![])),
    ] {
        assert_eq!(rules.identify(&der), Err(IdentityError::NoUriSan));
    }
    // A certificate with a URI SAN is never mapped: a broken SVID does not fall back.
    let broken = legacy.issue(leaf_params(
        Some("alice"),
        vec![
            uri("spiffe://loupe.test/user/a"),
            uri("spiffe://loupe.test/user/b"),
        ],
    ));
    assert_eq!(
        rules.identify(&broken),
        Err(IdentityError::SeveralUriSans { count: 2 })
    );
    // Mappings must stay inside the trust domain and name a workload.
    for id in ["spiffe://evil.test/user/alice", "spiffe://loupe.test"] {
        let mapping = CnMapping::new(&legacy.der, "alice", id).expect("syntax");
        assert!(matches!(
            IdentityRules::new(TD)
                .expect("td")
                .with_cn_mappings(vec![mapping]),
            Err(IdentityError::BadMapping(_))
        ));
    }
}

#[test]
fn a_signing_certificate_names_its_trust_domain() {
    let mut params = leaf_params(Some("CA"), vec![uri("spiffe://loupe.test")]);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let (td, _) = ca_trust_domain(&self_signed(params)).expect("CA");
    assert_eq!(td, "loupe.test");
    let leaf = certificate(None, vec![uri("spiffe://loupe.test/user/alice")]);
    assert!(ca_trust_domain(&leaf).is_err());
}
