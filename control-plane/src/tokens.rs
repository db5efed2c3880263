//! Minting session tokens: one per capture call, scoped to one point, bound to the client
//! certificate the control plane presents on that call, never outliving its session — and
//! publishing the keys agents verify them with.
//!
//! The binding (`cnf`) is given per token rather than fixed at start: the control plane's
//! certificate is reloaded when it is renewed, and each token must name the certificate of the
//! connection it travels on.
//!
//! Several signing keys may be loaded for rotation: the newest signs, and all of them are
//! published, so agents keep accepting tokens signed by the previous key until it is retired.
//! The published key set is written atomically (temporary file, then rename), so an agent
//! reloading it never reads half a file.

use std::path::Path;

use loupe_trust::token::{
    Confirmation, KeySet, SessionClaims, SigningKey, TokenError, TokenLimits, TokenRedaction,
    audience_for,
};

use crate::session::Session;

/// Why a token was not minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    #[error("session {session} is not active; captures need an active session")]
    SessionNotActive { session: String },
    #[error("point `{point}` is not in session {session}; open a session that includes it")]
    PointNotInSession { session: String, point: String },
    #[error("session {session} expires at {expires_at}; no token can be minted for it now")]
    SessionExpiring { session: String, expires_at: u64 },
    #[error("no signing key is loaded")]
    NoSigningKey,
    #[error("cannot sign the token: {0}")]
    Sign(#[from] TokenError),
    #[error("cannot write the key set to {path}: {source}")]
    WriteKeySet {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Mints tokens for the control plane.
pub struct TokenMinter {
    /// Oldest first; the last one signs.
    keys: Vec<SigningKey>,
    issuer: String,
    lifetime_seconds: u64,
}

impl std::fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenMinter")
            .field(
                "kids",
                &self.keys.iter().map(SigningKey::kid).collect::<Vec<_>>(),
            )
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    /// `keys` oldest first (the last one signs).
    pub fn new(
        keys: Vec<SigningKey>,
        issuer: impl Into<String>,
        lifetime_seconds: u64,
    ) -> Result<TokenMinter, MintError> {
        if keys.is_empty() {
            return Err(MintError::NoSigningKey);
        }
        Ok(TokenMinter {
            keys,
            issuer: issuer.into(),
            lifetime_seconds,
        })
    }

    /// Every public key agents should accept.
    pub fn key_set(&self) -> KeySet {
        let mut set = KeySet::new();
        for key in &self.keys {
            set.insert(key.kid(), key.public_key());
        }
        set
    }

    /// Writes the key set as a JWK set file, atomically.
    pub fn publish(&self, path: &Path) -> Result<(), MintError> {
        let failed = |source| MintError::WriteKeySet {
            path: path.to_owned(),
            source,
        };
        let temporary = path.with_extension("jwks.tmp");
        std::fs::write(&temporary, self.key_set().to_jwks_json()).map_err(failed)?;
        std::fs::rename(&temporary, path).map_err(failed)
    }

    /// A token for one capture of `point` in `session`, minted at `now`, bound to the client
    /// certificate of `binding`. `jti` must be unique.
    #[allow(clippy::too_many_arguments)]
    pub fn mint(
        &self,
        session: &Session,
        point: &str,
        jti: &str,
        limits: TokenLimits,
        redact: TokenRedaction,
        binding: &Confirmation,
        now: u64,
    ) -> Result<String, MintError> {
        if !session.is_active_at(now) {
            return Err(MintError::SessionNotActive {
                session: session.id.clone(),
            });
        }
        if !session.points.iter().any(|p| p == point) {
            return Err(MintError::PointNotInSession {
                session: session.id.clone(),
                point: point.to_owned(),
            });
        }
        let exp = session.token_expiry(now, self.lifetime_seconds);
        if exp <= now {
            return Err(MintError::SessionExpiring {
                session: session.id.clone(),
                expires_at: session.expires_at,
            });
        }
        let claims = SessionClaims {
            iss: self.issuer.clone(),
            aud: audience_for(&session.service),
            sub: session.requester.clone(),
            sid: session.id.clone(),
            jti: jti.to_owned(),
            iat: now,
            nbf: now,
            exp,
            points: vec![point.to_owned()],
            limits,
            redact,
            cnf: binding.clone(),
        };
        let signer = self.keys.last().ok_or(MintError::NoSigningKey)?;
        Ok(signer.mint(&claims)?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use loupe_trust::token::VerificationPolicy;

    use super::*;
    use crate::session::{Session, SessionRequest};

    const NOW: u64 = 1_800_000_000;
    const CP_CERT: &[u8] = b"control plane client certificate";
    const ISSUER: &str = "spiffe://loupe.test/control-plane";

    fn session(approvals_required: u32) -> Session {
        Session::open(
            SessionRequest {
                id: "s-1".into(),
                requester: "spiffe://loupe.test/user/alice".into(),
                service: "checkout".into(),
                points: vec!["checkout.apply_discount".into(), "checkout.total".into()],
                reason: "INC-7".into(),
                ticket: None,
                ttl_seconds: 600,
                approvals_required,
            },
            NOW,
            300,
        )
    }

    fn limits() -> TokenLimits {
        TokenLimits {
            max_snapshots: 5,
            max_bytes: 65_536,
            rate: 10.0,
        }
    }

    fn agent_policy(keys: KeySet) -> VerificationPolicy {
        VerificationPolicy {
            keys,
            issuer: ISSUER.into(),
            audience: audience_for("checkout"),
            leeway: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(1_800),
        }
    }

    fn minter(keys: Vec<SigningKey>) -> TokenMinter {
        TokenMinter::new(keys, ISSUER, 300).expect("minter")
    }

    #[test]
    fn tokens_verify_at_the_agent_scoped_to_one_point() {
        let minter = minter(vec![SigningKey::generate("k1").expect("key").0]);
        let session = session(0);
        let token = minter
            .mint(
                &session,
                "checkout.apply_discount",
                "t-1",
                limits(),
                TokenRedaction::default(),
                &Confirmation::for_certificate(CP_CERT),
                NOW,
            )
            .expect("mints");
        let claims = agent_policy(minter.key_set())
            .verify(&token, CP_CERT, NOW)
            .expect("the agent accepts it");
        assert_eq!(claims.points, ["checkout.apply_discount"]);
        assert_eq!(claims.sid, "s-1");
        assert!(
            claims.grants("checkout.total").is_err(),
            "one point per token"
        );
        assert!(
            agent_policy(minter.key_set())
                .verify(&token, b"another certificate", NOW)
                .is_err(),
            "bound to the control plane's certificate"
        );
    }

    #[test]
    fn tokens_never_outlive_the_session() {
        let minter = minter(vec![SigningKey::generate("k1").expect("key").0]);
        let session = session(0);
        let late = NOW + 500;
        let token = minter
            .mint(
                &session,
                "checkout.total",
                "t-2",
                limits(),
                TokenRedaction::default(),
                &Confirmation::for_certificate(CP_CERT),
                late,
            )
            .expect("mints");
        let claims = agent_policy(minter.key_set())
            .verify(&token, CP_CERT, late)
            .expect("valid");
        assert_eq!(claims.exp, NOW + 600, "capped at the session's expiry");
    }

    #[test]
    fn no_token_for_pending_expired_or_foreign_points() {
        let minter = minter(vec![SigningKey::generate("k1").expect("key").0]);
        let mint = |session: &Session, point: &str, now: u64| {
            minter.mint(
                session,
                point,
                "t",
                limits(),
                TokenRedaction::default(),
                &Confirmation::for_certificate(CP_CERT),
                now,
            )
        };
        assert!(matches!(
            mint(&session(1), "checkout.total", NOW),
            Err(MintError::SessionNotActive { .. })
        ));
        assert!(matches!(
            mint(&session(0), "checkout.total", NOW + 600),
            Err(MintError::SessionNotActive { .. })
        ));
        assert!(matches!(
            mint(&session(0), "payments.charge", NOW),
            Err(MintError::PointNotInSession { .. })
        ));
    }

    #[test]
    fn rotation_signs_with_the_newest_key_and_publishes_all() {
        let old = SigningKey::generate("2026-10").expect("key").0;
        let new = SigningKey::generate("2026-11").expect("key").0;
        let minter = minter(vec![old, new]);
        let token = minter
            .mint(
                &session(0),
                "checkout.total",
                "t-3",
                limits(),
                TokenRedaction::default(),
                &Confirmation::for_certificate(CP_CERT),
                NOW,
            )
            .expect("mints");
        let header = token.split('.').next().expect("header");
        let header = base64_decode(header);
        assert!(header.contains("2026-11"), "{header}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token-keys.jwks");
        minter.publish(&path).expect("published");
        let published =
            KeySet::from_jwks_json(&std::fs::read(&path).expect("read")).expect("valid key set");
        assert_eq!(published.kids().collect::<Vec<_>>(), ["2026-10", "2026-11"]);
        agent_policy(published)
            .verify(&token, CP_CERT, NOW)
            .expect("agents loading the file accept it");
    }

    fn base64_decode(part: &str) -> String {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .expect("base64url");
        String::from_utf8(bytes).expect("UTF-8 header")
    }

    #[test]
    fn a_minter_needs_a_key() {
        assert!(matches!(
            TokenMinter::new(Vec::new(), ISSUER, 300),
            Err(MintError::NoSigningKey)
        ));
    }
}
