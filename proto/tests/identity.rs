//! Peer identity from real certificates.

use loupe_proto::identity::{IdentityError, PeerIdentity};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

fn certificate(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    let key = KeyPair::generate().expect("key");
    params.self_signed(&key).expect("cert").der().to_vec()
}

#[test]
fn spiffe_uri_san_wins_over_cn() {
    let der = certificate(
        Some("alice-laptop"),
        vec![
            SanType::DnsName("alice.example".try_into().expect("dns")),
            SanType::URI("spiffe://loupe.test/user/alice".try_into().expect("uri")),
        ],
    );
    let identity = PeerIdentity::from_certificate_der(&der).expect("identity");
    assert_eq!(identity.id, "spiffe://loupe.test/user/alice");
    assert!(identity.not_after > identity.not_before);
}

#[test]
fn cn_is_the_fallback_and_non_spiffe_uris_are_ignored() {
    let der = certificate(
        Some("legacy-client"),
        vec![SanType::URI(
            "https://example.com/x".try_into().expect("uri"),
        )],
    );
    assert_eq!(
        PeerIdentity::from_certificate_der(&der)
            .expect("identity")
            .id,
        "legacy-client"
    );
}

#[test]
fn anonymous_and_garbage_certificates_are_refused() {
    let der = certificate(None, vec![]);
    assert_eq!(
        PeerIdentity::from_certificate_der(&der),
        Err(IdentityError::Anonymous)
    );
    assert!(matches!(
        PeerIdentity::from_certificate_der(b"\x30\x03garbage"),
        Err(IdentityError::Malformed(_))
    ));
}
