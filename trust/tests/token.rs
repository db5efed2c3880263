//! Session-token verification against forged, tampered, stale and misdirected tokens.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use loupe_trust::token::{
    Confirmation, KeySet, SessionClaims, SigningKey, TokenError, TokenErrorClass, TokenLimits,
    TokenRedaction, VerificationPolicy, audience_for,
};

const NOW: u64 = 1_800_000_000;
const CP_CERT: &[u8] = b"control-plane certificate DER";

fn key(kid: &str) -> SigningKey {
    SigningKey::generate(kid).expect("key").0
}

fn claims() -> SessionClaims {
    SessionClaims {
        iss: "spiffe://loupe.test/control-plane".into(),
        aud: audience_for("checkout"),
        sub: "spiffe://loupe.test/user/alice".into(),
        sid: "sess-1".into(),
        jti: "tok-1".into(),
        iat: NOW - 10,
        nbf: NOW - 10,
        exp: NOW + 300,
        points: vec!["checkout.apply_discount".into()],
        limits: TokenLimits {
            max_snapshots: 5,
            max_bytes: 65_536,
            rate: 10.0,
        },
        redact: TokenRedaction::default(),
        cnf: Confirmation::for_certificate(CP_CERT),
    }
}

fn policy(keys: &[&SigningKey]) -> VerificationPolicy {
    let mut set = KeySet::new();
    for key in keys {
        set.insert(key.kid(), key.public_key());
    }
    VerificationPolicy {
        keys: set,
        issuer: "spiffe://loupe.test/control-plane".into(),
        audience: audience_for("checkout"),
        leeway: Duration::from_secs(5),
        max_lifetime: Duration::from_secs(3_600),
    }
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).expect("json"))
}

/// Replaces the payload of a signed token, keeping its header and signature.
fn with_payload(token: &str, payload: &serde_json::Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(payload), parts[2])
}

#[test]
fn a_genuine_token_verifies() {
    let key = key("k1");
    let token = key.mint(&claims()).expect("mint");
    let verified = policy(&[&key]).verify(&token, CP_CERT, NOW).expect("valid");
    assert_eq!(verified, claims());
    verified.grants("checkout.apply_discount").expect("granted");
}

#[test]
fn rotation_accepts_any_key_in_the_set_and_refuses_others() {
    let (old, new, stranger) = (key("2026-10"), key("2026-11"), key("2026-11"));
    let policy = policy(&[&old, &new]);
    for signer in [&old, &new] {
        let token = signer.mint(&claims()).expect("mint");
        policy.verify(&token, CP_CERT, NOW).expect("in key set");
    }
    // Same kid as a trusted key, different private key: the signature fails.
    let token = stranger.mint(&claims()).expect("mint");
    assert_eq!(
        policy.verify(&token, CP_CERT, NOW),
        Err(TokenError::BadSignature)
    );
    let unknown = key("retired");
    let token = unknown.mint(&claims()).expect("mint");
    assert_eq!(
        policy.verify(&token, CP_CERT, NOW),
        Err(TokenError::UnknownKeyId("retired".into()))
    );
}

#[test]
fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let key = key("k1");
    let payload = serde_json::to_value(claims()).expect("json");
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none", "typ": "loupe-session+jwt", "kid": "k1"})),
        b64(&payload)
    );
    let err = policy(&[&key])
        .verify(&none, CP_CERT, NOW)
        .expect_err("none");
    assert!(
        matches!(err, TokenError::UnsupportedAlgorithm(ref a) if a == "none"),
        "{err:?}"
    );
    assert_eq!(err.class(), TokenErrorClass::Unauthenticated);

    // HS256 keyed with the (public) Ed25519 key: the classic algorithm-confusion forgery.
    let header = b64(&serde_json::json!({"alg": "HS256", "typ": "loupe-session+jwt", "kid": "k1"}));
    let signing_input = format!("{header}.{}", b64(&payload));
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.public_key()),
        signing_input.as_bytes(),
    );
    let forged = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    let err = policy(&[&key])
        .verify(&forged, CP_CERT, NOW)
        .expect_err("hs256");
    assert!(
        matches!(err, TokenError::UnsupportedAlgorithm(ref a) if a == "HS256"),
        "{err:?}"
    );
}

#[test]
fn tampered_payload_or_signature_is_refused() {
    let key = key("k1");
    let token = key.mint(&claims()).expect("mint");
    let mut widened = serde_json::to_value(claims()).expect("json");
    widened["points"] = serde_json::json!(["checkout.apply_discount", "payments.charge"]);
    let tampered = with_payload(&token, &widened);
    assert_eq!(
        policy(&[&key]).verify(&tampered, CP_CERT, NOW),
        Err(TokenError::BadSignature)
    );
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut signature = URL_SAFE_NO_PAD.decode(&parts[2]).expect("b64");
    signature[10] ^= 1;
    parts[2] = URL_SAFE_NO_PAD.encode(signature);
    assert_eq!(
        policy(&[&key]).verify(&parts.join("."), CP_CERT, NOW),
        Err(TokenError::BadSignature)
    );
    assert!(matches!(
        policy(&[&key]).verify("not-a-token", CP_CERT, NOW),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        policy(&[&key]).verify("a.b.c", CP_CERT, NOW),
        Err(TokenError::Malformed(_))
    ));
}

/// A key pair whose PKCS#8 is kept, so tests can sign arbitrary JSON payloads.
struct Forger {
    key: SigningKey,
    pair: ring::signature::Ed25519KeyPair,
}

impl Forger {
    fn new(kid: &str) -> Forger {
        let (key, der) = SigningKey::generate(kid).expect("key");
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&der).expect("pkcs8");
        Forger { key, pair }
    }

    fn sign(&self, payload: &serde_json::Value) -> String {
        let header = b64(&serde_json::json!({
            "alg": "EdDSA", "typ": "loupe-session+jwt", "kid": self.key.kid()
        }));
        let input = format!("{header}.{}", b64(payload));
        let signature = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn sign_edited(&self, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut payload = serde_json::to_value(claims()).expect("json");
        edit(&mut payload);
        self.sign(&payload)
    }
}

#[test]
fn a_genuinely_signed_header_with_extensions_it_must_understand_is_refused() {
    // RFC 7515 §4.1.11: a verifier that does not understand a `crit` extension (such as
    // RFC 7797's unencoded payload) must refuse the token, whoever signed it.
    let forger = Forger::new("k1");
    for header in [
        serde_json::json!({"alg": "EdDSA", "typ": "loupe-session+jwt", "kid": "k1", "crit": ["exp"], "exp": 1}),
        serde_json::json!({"alg": "EdDSA", "typ": "loupe-session+jwt", "kid": "k1", "crit": ["b64"], "b64": false}),
    ] {
        let input = format!(
            "{}.{}",
            b64(&header),
            b64(&serde_json::to_value(claims()).expect("json"))
        );
        let signature = forger.pair.sign(input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        let err = policy(&[&forger.key])
            .verify(&token, CP_CERT, NOW)
            .expect_err("crit");
        assert!(matches!(err, TokenError::Malformed(_)), "{err:?}");
    }
}

#[test]
fn claims_are_checked_by_name() {
    let forger = Forger::new("k1");
    let policy = policy(&[&forger.key]);
    let check = |token: String| policy.verify(&token, CP_CERT, NOW);

    assert_eq!(
        check(forger.sign_edited(|_| {})).map(|c| c.sid),
        Ok("sess-1".into())
    );
    assert_eq!(
        check(forger.sign_edited(|c| c["exp"] = serde_json::json!("1800000300"))),
        Err(TokenError::InvalidClaim {
            claim: "exp",
            reason: "must be a number of Unix seconds".into()
        })
    );
    for claim in ["aud", "iss", "sub", "sid", "jti", "iat", "nbf", "exp"] {
        let err = check(forger.sign_edited(|c| {
            c.as_object_mut().expect("object").remove(claim);
        }))
        .expect_err(claim);
        assert_eq!(
            err,
            TokenError::MissingClaim(claim_static(claim)),
            "{claim}"
        );
    }
    assert!(matches!(
        check(forger.sign_edited(|c| c["aud"] = serde_json::json!("loupe-agent/payments"))),
        Err(TokenError::WrongAudience { .. })
    ));
    assert!(matches!(
        check(forger.sign_edited(|c| c["aud"] = serde_json::json!(["loupe-agent/checkout"]))),
        Err(TokenError::InvalidClaim { claim: "aud", .. })
    ));
    assert!(matches!(
        check(forger.sign_edited(|c| c["iss"] = serde_json::json!("spiffe://evil/cp"))),
        Err(TokenError::WrongIssuer { .. })
    ));
    assert!(matches!(
        check(forger.sign_edited(|c| c["exp"] = serde_json::json!(NOW - 6))),
        Err(TokenError::Expired { .. })
    ));
    // Within the leeway an expiry just passed is still accepted.
    assert!(check(forger.sign_edited(|c| c["exp"] = serde_json::json!(NOW - 4))).is_ok());
    assert!(matches!(
        check(forger.sign_edited(|c| c["nbf"] = serde_json::json!(NOW + 60))),
        Err(TokenError::NotYetValid { .. })
    ));
    assert!(matches!(
        check(forger.sign_edited(|c| c["iat"] = serde_json::json!(NOW + 60))),
        Err(TokenError::IssuedInFuture { .. })
    ));
    assert!(matches!(
        check(forger.sign_edited(|c| c["exp"] = serde_json::json!(NOW - 10 + 7_200))),
        Err(TokenError::LifetimeTooLong {
            lifetime: 7_200,
            max: 3_600
        })
    ));
}

fn claim_static(name: &str) -> &'static str {
    ["aud", "iss", "sub", "sid", "jti", "iat", "nbf", "exp"]
        .into_iter()
        .find(|c| *c == name)
        .expect("known claim")
}

#[test]
fn a_token_presented_over_another_certificate_is_refused() {
    let key = key("k1");
    let token = key.mint(&claims()).expect("mint");
    let err = policy(&[&key])
        .verify(&token, b"some other client certificate", NOW)
        .expect_err("replayed");
    assert_eq!(err, TokenError::ConfirmationMismatch);
    assert_eq!(err.class(), TokenErrorClass::PermissionDenied);
}

#[test]
fn points_must_be_granted_exactly() {
    let claims = claims();
    assert!(claims.grants("checkout.apply_discount").is_ok());
    for point in [
        "checkout",
        "checkout.apply_discount.inner",
        "payments.charge",
        "",
    ] {
        assert_eq!(
            claims.grants(point),
            Err(TokenError::PointNotGranted(point.into()))
        );
    }
}

#[test]
fn key_sets_round_trip_as_jwks_and_reject_other_key_types() {
    let (a, b) = (key("a"), key("b"));
    let mut set = KeySet::new();
    set.insert(a.kid(), a.public_key());
    set.insert(b.kid(), b.public_key());
    let json = set.to_jwks_json();
    let parsed = KeySet::from_jwks_json(json.as_bytes()).expect("parses");
    assert_eq!(parsed.kids().collect::<Vec<_>>(), ["a", "b"]);
    let rsa = r#"{"keys":[{"kty":"RSA","crv":"","kid":"r","x":""}]}"#;
    assert!(KeySet::from_jwks_json(rsa.as_bytes()).is_err());
    assert!(KeySet::from_jwks_json(br#"{"keys":[]}"#).is_err());
    assert!(KeySet::from_jwks_json(b"nonsense").is_err());
}
