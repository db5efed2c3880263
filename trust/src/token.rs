//! Session tokens: the claims the control plane mints and every agent verifies on its own.
//!
//! A token is a JWS compact serialization (RFC 7515) with header
//! `{"alg":"EdDSA","typ":"loupe-session+jwt","kid":…}`. Minting and verification live here, in
//! one place both sides depend on, so the two cannot drift apart.
//!
//! Verification is deliberately explicit rather than delegated to a generic JWT library. Loupe
//! tokens have exactly one algorithm, Ed25519 (RFC 8037), so the JWS steps are a few lines over
//! `ring` (which TLS already brings): the algorithm is pinned from the header before any key
//! is chosen, the signature over `header.payload` is checked with the key named by `kid`, and
//! then every claim is checked here, by name, so a refusal says exactly which claim was wrong
//! and why — `exp` given as a string is refused as a malformed claim, not ignored. A generic
//! JWT crate would bring RSA, ECDSA and HMAC implementations into every agent only to refuse
//! them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// The one JWS algorithm a session token may carry (RFC 8037: Ed25519).
pub const TOKEN_ALGORITHM: &str = "EdDSA";
/// The `typ` header of a session token.
pub const TOKEN_TYPE: &str = "loupe-session+jwt";
/// The most clock skew the agent tolerates, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 5;

/// The audience of tokens for agents of `service`.
pub fn audience_for(service: &str) -> String {
    format!("loupe-agent/{service}")
}

/// What a session token grants: one engineer, one session, a list of points, until `exp`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The control plane's identity.
    pub iss: String,
    /// `loupe-agent/<service>`.
    pub aud: String,
    /// The engineer the session belongs to.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// Unique per token.
    pub jti: String,
    /// Unix seconds.
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// The exact points this token may arm.
    pub points: Vec<String>,
    pub limits: TokenLimits,
    /// Redaction the session adds on top of the agent's.
    #[serde(default)]
    pub redact: TokenRedaction,
    /// Proof of possession: the control plane's client certificate (RFC 8705).
    pub cnf: Confirmation,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenLimits {
    pub max_snapshots: u64,
    /// Bytes per snapshot.
    pub max_bytes: u64,
    /// Snapshots per second.
    pub rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenRedaction {
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// base64url (no padding) of the SHA-256 of the certificate's DER.
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

impl Confirmation {
    /// The confirmation for a certificate, given its DER bytes.
    pub fn for_certificate(der: &[u8]) -> Confirmation {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Confirmation {
            x5t_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()),
        }
    }
}

/// Why a token was refused. Each kind maps to one gRPC status class through
/// [`TokenError::class`]; messages name the claim and never include key material.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("session token is malformed: {0}")]
    Malformed(String),
    #[error("session token algorithm must be EdDSA; got {0}")]
    UnsupportedAlgorithm(String),
    #[error("session token type must be `{TOKEN_TYPE}`; got {0:?}")]
    WrongType(Option<String>),
    #[error("session token has no `kid` header")]
    MissingKeyId,
    #[error(
        "session token key id `{0}` is not in this agent's key set (rotated out, or not yet distributed)"
    )]
    UnknownKeyId(String),
    #[error("session token signature does not verify")]
    BadSignature,
    #[error("session token claim `{0}` is missing")]
    MissingClaim(&'static str),
    #[error("session token claim `{claim}` is invalid: {reason}")]
    InvalidClaim { claim: &'static str, reason: String },
    #[error("session token expired at {exp} (now {now}); ask the control plane for a new one")]
    Expired { exp: u64, now: u64 },
    #[error("session token is not valid before {nbf} (now {now}); check the clocks")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("session token was issued in the future ({iat}, now {now}); check the clocks")]
    IssuedInFuture { iat: u64, now: u64 },
    #[error("session token lives {lifetime} s; this agent accepts at most {max} s")]
    LifetimeTooLong { lifetime: u64, max: u64 },
    #[error("session token is for `{got}`, not this agent (`{expected}`)")]
    WrongAudience { expected: String, got: String },
    #[error(
        "session token was issued by `{got}`, not by the configured control plane `{expected}`"
    )]
    WrongIssuer { expected: String, got: String },
    #[error(
        "session token is bound to another client certificate (cnf mismatch): it was presented by a peer that does not hold the control plane's key"
    )]
    ConfirmationMismatch,
    #[error("point `{0}` is not among the points this session token grants")]
    PointNotGranted(String),
    #[error("session `{0}` has been revoked")]
    Revoked(String),
}

/// The gRPC status class a refusal belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorClass {
    /// The token does not prove anything: UNAUTHENTICATED.
    Unauthenticated,
    /// The token is genuine but does not allow this: PERMISSION_DENIED.
    PermissionDenied,
}

impl TokenError {
    pub fn class(&self) -> TokenErrorClass {
        match self {
            TokenError::ConfirmationMismatch
            | TokenError::PointNotGranted(_)
            | TokenError::Revoked(_)
            | TokenError::WrongAudience { .. } => TokenErrorClass::PermissionDenied,
            _ => TokenErrorClass::Unauthenticated,
        }
    }

    /// A short stable label for counters and logs, e.g. `token_expired`.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "token_malformed",
            TokenError::UnsupportedAlgorithm(_) => "token_algorithm",
            TokenError::WrongType(_) => "token_type",
            TokenError::MissingKeyId | TokenError::UnknownKeyId(_) => "token_unknown_key",
            TokenError::BadSignature => "token_signature",
            TokenError::MissingClaim(_) | TokenError::InvalidClaim { .. } => "token_claims",
            TokenError::Expired { .. } => "token_expired",
            TokenError::NotYetValid { .. } | TokenError::IssuedInFuture { .. } => {
                "token_not_yet_valid"
            }
            TokenError::LifetimeTooLong { .. } => "token_lifetime",
            TokenError::WrongAudience { .. } => "token_audience",
            TokenError::WrongIssuer { .. } => "token_issuer",
            TokenError::ConfirmationMismatch => "token_cnf_mismatch",
            TokenError::PointNotGranted(_) => "point_not_in_token",
            TokenError::Revoked(_) => "session_revoked",
        }
    }
}

/// Errors loading keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 PEM: {0}")]
    PrivateKey(String),
    #[error(
        "key set is not valid JSON ({{\"keys\":[{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":…,\"x\":…}}]}}): {0}"
    )]
    KeySetFormat(String),
    #[error("key `{kid}` in the key set is unusable: {reason}")]
    KeySetEntry { kid: String, reason: String },
    #[error("key set has no keys")]
    EmptyKeySet,
}

/// A signing key with its key id.
pub struct SigningKey {
    kid: String,
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// From an Ed25519 private key in PKCS#8 PEM.
    pub fn from_pkcs8_pem(kid: impl Into<String>, pem: &[u8]) -> Result<SigningKey, KeyError> {
        let der = pem_body(pem, "PRIVATE KEY").map_err(KeyError::PrivateKey)?;
        SigningKey::from_pkcs8_der(kid, &der)
    }

    /// From an Ed25519 private key in PKCS#8 DER.
    pub fn from_pkcs8_der(kid: impl Into<String>, der: &[u8]) -> Result<SigningKey, KeyError> {
        use ring::signature::KeyPair as _;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(SigningKey {
            kid: kid.into(),
            pair,
            public,
        })
    }

    /// A fresh key (PKCS#8 DER, for writing to disk) — for development PKI and tests.
    pub fn generate(kid: impl Into<String>) -> Result<(SigningKey, Vec<u8>), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| KeyError::PrivateKey(e.to_string()))?;
        let der = pkcs8.as_ref().to_vec();
        Ok((SigningKey::from_pkcs8_der(kid, &der)?, der))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Signs `claims` into a token.
    pub fn mint(&self, claims: &SessionClaims) -> Result<String, TokenError> {
        let header = JwsHeader {
            alg: TOKEN_ALGORITHM.to_owned(),
            typ: Some(TOKEN_TYPE.to_owned()),
            kid: Some(self.kid.clone()),
        };
        let encode = |part: Result<Vec<u8>, serde_json::Error>| {
            part.map(|json| URL_SAFE_NO_PAD.encode(json))
                .map_err(|e| TokenError::Malformed(format!("cannot sign: {e}")))
        };
        let signing_input = format!(
            "{}.{}",
            encode(serde_json::to_vec(&header))?,
            encode(serde_json::to_vec(claims))?
        );
        let signature = self.pair.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}

/// The key id of an Ed25519 public key: its RFC 7638 JWK thumbprint (base64url SHA-256 of
/// the canonical `{"crv","kty","x"}` JSON). Derived rather than configured, so every tool that
/// loads the same key file names it the same way.
pub fn derived_kid(public: &[u8; 32]) -> String {
    let b64 = URL_SAFE_NO_PAD;
    // Members in lexicographic order, no whitespace, as RFC 7638 section 3 requires.
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        b64.encode(public)
    );
    b64.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
}

/// The public keys an agent accepts tokens from, by key id (several, for rotation).
#[derive(Clone, Default)]
pub struct KeySet {
    keys: BTreeMap<String, [u8; 32]>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Serialize, Deserialize)]
struct Jwk {
    kty: String,
    crv: String,
    kid: String,
    x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    usage: Option<String>,
}

impl KeySet {
    pub fn new() -> KeySet {
        KeySet::default()
    }

    pub fn insert(&mut self, kid: impl Into<String>, public_key: [u8; 32]) {
        self.keys.insert(kid.into(), public_key);
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a JWK set of Ed25519 (`OKP`) keys.
    pub fn from_jwks_json(json: &[u8]) -> Result<KeySet, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|e| KeyError::KeySetFormat(e.to_string()))?;
        let mut keys = KeySet::new();
        for jwk in set.keys {
            let entry = |reason: &str| KeyError::KeySetEntry {
                kid: jwk.kid.clone(),
                reason: reason.to_owned(),
            };
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                return Err(entry(
                    "only Ed25519 keys (kty OKP, crv Ed25519) are accepted",
                ));
            }
            if jwk.alg.as_deref().is_some_and(|alg| alg != "EdDSA") {
                return Err(entry("alg must be EdDSA"));
            }
            let raw = URL_SAFE_NO_PAD
                .decode(jwk.x.trim_end_matches('='))
                .map_err(|_| entry("x is not base64url"))?;
            let public: [u8; 32] = raw
                .try_into()
                .map_err(|_| entry("x must be a 32-byte Ed25519 public key"))?;
            keys.insert(jwk.kid.clone(), public);
        }
        if keys.is_empty() {
            return Err(KeyError::EmptyKeySet);
        }
        Ok(keys)
    }

    /// The JWK set form, for publishing.
    pub fn to_jwks_json(&self) -> String {
        let set = JwkSet {
            keys: self
                .keys
                .iter()
                .map(|(kid, public)| Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    kid: kid.clone(),
                    x: URL_SAFE_NO_PAD.encode(public),
                    alg: Some("EdDSA".into()),
                    usage: Some("sig".into()),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&set).unwrap_or_default()
    }
}

/// What an agent checks a token against.
#[derive(Debug, Clone)]
pub struct VerificationPolicy {
    pub keys: KeySet,
    /// The control plane's identity, required as `iss`.
    pub issuer: String,
    /// `loupe-agent/<service>`, required as `aud`.
    pub audience: String,
    /// Clock skew tolerated; capped at [`MAX_LEEWAY_SECS`].
    pub leeway: Duration,
    /// Longest `exp - iat` accepted.
    pub max_lifetime: Duration,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl VerificationPolicy {
    /// Verifies `token` as presented over a connection whose peer certificate is `peer_cert_der`.
    /// `point`, when given, must be among the granted points.
    pub fn verify(
        &self,
        token: &str,
        peer_cert_der: &[u8],
        now: u64,
    ) -> Result<SessionClaims, TokenError> {
        let jws = CompactJws::split(token)?;
        let header = jws.header()?;
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(TokenError::WrongType(header.typ));
        }
        let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
        let public = self
            .keys
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKeyId(kid.clone()))?;
        jws.check_signature(public)?;
        let claims = check_claim_shapes(jws.payload()?)?;
        let leeway = self.leeway.as_secs().min(MAX_LEEWAY_SECS);

        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer {
                expected: self.issuer.clone(),
                got: claims.iss,
            });
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience {
                expected: self.audience.clone(),
                got: claims.aud,
            });
        }
        if claims.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired {
                exp: claims.exp,
                now,
            });
        }
        if claims.nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid {
                nbf: claims.nbf,
                now,
            });
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture {
                iat: claims.iat,
                now,
            });
        }
        if claims.exp <= claims.iat || claims.exp <= claims.nbf {
            return Err(TokenError::InvalidClaim {
                claim: "exp",
                reason: "must be after iat and nbf".into(),
            });
        }
        let lifetime = claims.exp - claims.iat;
        if lifetime > self.max_lifetime.as_secs() {
            return Err(TokenError::LifetimeTooLong {
                lifetime,
                max: self.max_lifetime.as_secs(),
            });
        }
        if claims.cnf != Confirmation::for_certificate(peer_cert_der) {
            return Err(TokenError::ConfirmationMismatch);
        }
        Ok(claims)
    }
}

impl SessionClaims {
    /// Refuses `point` unless the token grants it exactly.
    pub fn grants(&self, point: &str) -> Result<(), TokenError> {
        if self.points.iter().any(|granted| granted == point) {
            Ok(())
        } else {
            Err(TokenError::PointNotGranted(point.to_owned()))
        }
    }
}

/// The JOSE header fields Loupe reads and writes.
#[derive(Serialize, Deserialize)]
struct JwsHeader {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// A token split into its three base64url parts, not yet trusted.
struct CompactJws<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> CompactJws<'a> {
    fn split(token: &'a str) -> Result<CompactJws<'a>, TokenError> {
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(header), Some(payload), Some(signature), None) => Ok(CompactJws {
                header,
                payload,
                signature,
            }),
            _ => Err(TokenError::Malformed(
                "expected three dot-separated parts (JWS compact serialization)".into(),
            )),
        }
    }

    /// The header, with the algorithm pinned to EdDSA before anything else is read.
    fn header(&self) -> Result<JwsHeader, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(self.header)
            .map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
        let value: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|_| TokenError::Malformed("header is not JSON".into()))?;
        match value.get("alg").and_then(serde_json::Value::as_str) {
            Some(TOKEN_ALGORITHM) => {}
            Some(other) => return Err(TokenError::UnsupportedAlgorithm(other.to_owned())),
            None => return Err(TokenError::UnsupportedAlgorithm("none given".into())),
        }
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood or the token
        // refused; Loupe understands none (an unencoded payload, RFC 7797, would change what
        // the signature covers).
        if value.get("crit").is_some() {
            return Err(TokenError::Malformed(
                "header lists `crit` extensions; Loupe tokens use none".into(),
            ));
        }
        serde_json::from_value(value).map_err(|e| TokenError::Malformed(format!("header: {e}")))
    }

    /// Checks the Ed25519 signature over `header.payload` (RFC 7515 §5.2, RFC 8037 §3.1).
    fn check_signature(&self, public: &[u8; 32]) -> Result<(), TokenError> {
        let signature = URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| TokenError::Malformed("signature is not base64url".into()))?;
        let signing_input = format!("{}.{}", self.header, self.payload);
        UnparsedPublicKey::new(&ED25519, public)
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)
    }

    fn payload(&self) -> Result<serde_json::Value, TokenError> {
        let raw = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| TokenError::Malformed("payload is not base64url".into()))?;
        serde_json::from_slice(&raw)
            .map_err(|_| TokenError::Malformed("payload is not JSON".into()))
    }
}

/// Checks that each required claim is present with the right JSON type, so a refusal names
/// the claim, then deserializes.
fn check_claim_shapes(claims: serde_json::Value) -> Result<SessionClaims, TokenError> {
    use serde_json::Value;
    let Value::Object(map) = &claims else {
        return Err(TokenError::Malformed("claims are not a JSON object".into()));
    };
    let need = |name: &'static str, ok: fn(&Value) -> bool, what: &str| match map.get(name) {
        None | Some(Value::Null) => Err(TokenError::MissingClaim(name)),
        Some(value) if ok(value) => Ok(()),
        Some(_) => Err(TokenError::InvalidClaim {
            claim: name,
            reason: format!("must be {what}"),
        }),
    };
    let non_empty_string = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    let unix_seconds = |v: &Value| v.is_u64();
    need("iss", non_empty_string, "a non-empty string")?;
    need("aud", non_empty_string, "a single non-empty string")?;
    need("sub", non_empty_string, "a non-empty string")?;
    need("sid", non_empty_string, "a non-empty string")?;
    need("jti", non_empty_string, "a non-empty string")?;
    need("iat", unix_seconds, "a number of Unix seconds")?;
    need("nbf", unix_seconds, "a number of Unix seconds")?;
    need("exp", unix_seconds, "a number of Unix seconds")?;
    need("points", Value::is_array, "an array of point names")?;
    need("limits", Value::is_object, "an object")?;
    need("cnf", Value::is_object, "an object with x5t#S256")?;
    serde_json::from_value(claims).map_err(|e| TokenError::Malformed(e.to_string()))
}

fn pem_body(pem: &[u8], label: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not UTF-8 text".to_owned())?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no `{begin}` line"))?;
    let rest = &text[start + begin.len()..];
    let stop = rest.find(&end).ok_or_else(|| format!("no `{end}` line"))?;
    let body: String = rest[..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("body is not base64: {e}"))
}

/// PEM text for PKCS#8 DER (for writing generated keys).
pub fn pkcs8_pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}
