//! The agent's endpoint under attack, over real mTLS on loopback with certificates and tokens
//! made by the test PKI: who may connect (TLS refusals, CRL, the control-plane identity), what a
//! session token must prove (each forgery and misuse refused with its own gRPC status and a
//! message that helps and leaks nothing), how streams end (token `exp`, revocation, peer
//! certificate expiry), reloading certificates from disk, `start()` misconfiguration, request
//! limits, and what `Describe` reports.
//!
//! Every test starts its own agent with its own PKI. They share the process-wide capture engine,
//! so each uses session ids of its own. One background thread hits the points every millisecond
//! for as long as the binary runs, so armed captures always have something to capture.

#[path = "../fixtures/order.rs"]
mod order;
#[path = "support/pki.rs"]
mod pki;
mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use loupe_agent::{Agent, AgentBuilder, AgentHandle, EngineConfig, StartError, snapshot};
use loupe_proto::v1::agent_client::AgentClient;
use loupe_proto::v1::{CaptureRequest, DescribeRequest, RevokeSessionRequest, Snapshot};
use loupe_trust::tls::TlsPaths;
use loupe_trust::token::{
    Confirmation, SessionClaims, TokenLimits, TokenRedaction, audience_for, unix_now,
};
use pki::{Ca, Leaf, LeafSpec, TRUST_DOMAIN, TestPki, control_plane_id};
use time::OffsetDateTime;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Status, Streaming};

const SERVICE: &str = "checkout";
const POINT: &str = "checkout.apply_discount";
const OTHER_POINT: &str = "checkout.charge_card";
/// Every wait in these tests is bounded by this; none is expected to come close.
const PATIENCE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// The host program: two points, hit every millisecond by a background thread.

fn apply_discount(order: &order::Order, coupon: Option<&str>) {
    snapshot!("checkout.apply_discount", order, ?coupon);
}

fn charge_card(order_id: u64) {
    snapshot!("checkout.charge_card", order_id);
}

fn start_hitting() {
    static HITTER: Once = Once::new();
    HITTER.call_once(|| {
        std::thread::Builder::new()
            .name("host-traffic".into())
            .spawn(|| {
                let mut id = 0u64;
                loop {
                    id += 1;
                    let order = order::Order::reference(id);
                    apply_discount(&order, Some("SPRING"));
                    charge_card(id);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .expect("hitter thread");
    });
}

// ---------------------------------------------------------------------------------------------
// Log capture: some outcomes (a rejected reload) are only visible in the agent's logs.

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Recorder;

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut line = String::new();
        event.record(&mut Fields(&mut line));
        LOG.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

fn record_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(Recorder);
        tracing::subscriber::set_global_default(subscriber).expect("log recorder");
    });
}

fn logged(needle_a: &str, needle_b: &str) -> bool {
    LOG.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|line| line.contains(needle_a) && line.contains(needle_b))
}

// ---------------------------------------------------------------------------------------------
// The agent under test.

/// The engine settings every agent in this binary uses. Captures from many tests run at once
/// on a loaded machine; the default 1 % CPU budget is shared by all of them and could end a
/// capture early, which is the capture tests' subject, not this file's.
fn engine_config() -> EngineConfig {
    EngineConfig {
        cpu_budget: 0.5,
        ..EngineConfig::default()
    }
}

fn builder(pki: &TestPki) -> AgentBuilder {
    Agent::builder()
        .service(SERVICE)
        .instance("checkout-1")
        .tls(&pki.agent.cert, &pki.agent.key, &pki.ca_path)
        .control_plane(control_plane_id())
        .token_keys(pki.keys.clone())
        .engine_config(engine_config())
}

fn start(pki: &TestPki) -> AgentHandle {
    start_with(builder(pki))
}

fn start_with(builder: AgentBuilder) -> AgentHandle {
    start_hitting();
    record_logs();
    builder.start().expect("agent starts")
}

// ---------------------------------------------------------------------------------------------
// Clients.

async fn connect(
    addr: SocketAddr,
    trusted_ca_pem: &str,
    identity: Option<&Leaf>,
) -> Result<AgentClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trusted_ca_pem))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    let endpoint = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(PATIENCE);
    let channel = tokio::time::timeout(PATIENCE, endpoint.connect())
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect failed: {e:?}"))?;
    Ok(AgentClient::new(channel))
}

async fn control_plane(agent: &AgentHandle, pki: &TestPki) -> AgentClient<Channel> {
    connect(agent.local_addr(), &pki.ca.pem, Some(&pki.control_plane))
        .await
        .expect("the control plane connects")
}

fn request(token: String, point: &str) -> CaptureRequest {
    CaptureRequest {
        token,
        point: point.to_owned(),
        ..CaptureRequest::default()
    }
}

async fn open(
    client: &mut AgentClient<Channel>,
    request: CaptureRequest,
) -> Result<Streaming<Snapshot>, Status> {
    tokio::time::timeout(PATIENCE, client.capture(request))
        .await
        .expect("capture call answered")
        .map(tonic::Response::into_inner)
}

async fn refused(client: &mut AgentClient<Channel>, request: CaptureRequest) -> Status {
    match open(client, request).await {
        Ok(mut stream) => {
            let next = tokio::time::timeout(PATIENCE, stream.message()).await;
            panic!("capture was accepted (first message: {next:?})")
        }
        Err(status) => status,
    }
}

/// Asserts the status code, showing the message when it differs.
#[track_caller]
fn assert_code(status: &Status, code: Code) {
    assert_eq!(status.code(), code, "{}", status.message());
}

async fn next_snapshot(stream: &mut Streaming<Snapshot>) -> Snapshot {
    match tokio::time::timeout(PATIENCE, stream.message()).await {
        Ok(Ok(Some(snapshot))) => snapshot,
        other => panic!("expected a snapshot, got {other:?}"),
    }
}

/// Reads the stream to its end: the snapshots, and the status it ended with (`None`: cleanly).
async fn drain(stream: &mut Streaming<Snapshot>) -> (Vec<Snapshot>, Option<Status>) {
    let mut snapshots = Vec::new();
    loop {
        match tokio::time::timeout(PATIENCE, stream.message()).await {
            Ok(Ok(Some(snapshot))) => snapshots.push(snapshot),
            Ok(Ok(None)) => return (snapshots, None),
            Ok(Err(status)) => return (snapshots, Some(status)),
            Err(_) => panic!("stream did not end within {PATIENCE:?}"),
        }
    }
}

/// Tries a whole capture as `identity` trusting `ca_pem`: `Ok` with the first snapshot, or the
/// reason it failed at any stage (connect, call, or stream).
async fn try_capture(
    agent: &AgentHandle,
    ca_pem: &str,
    identity: Option<&Leaf>,
    token: String,
) -> Result<Snapshot, String> {
    let mut client = connect(agent.local_addr(), ca_pem, identity).await?;
    let mut stream = open(&mut client, request(token, POINT))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    match tokio::time::timeout(PATIENCE, stream.message()).await {
        Ok(Ok(Some(snapshot))) => Ok(snapshot),
        Ok(Ok(None)) => Err("stream ended with no snapshot".into()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("no snapshot within the wait".into()),
    }
}

/// A TLS-level refusal: the handshake fails, so the client sees a failed connect or a failed
/// call, never a snapshot, and the agent starts no capture. With TLS 1.3 the client finishes
/// its side of the handshake before the agent has judged its certificate, so the refusal
/// arrives as an alert on the first request: tonic reports UNKNOWN, UNAVAILABLE, or CANCELLED
/// when the connection closes under the request — all three mean "transport failed".
async fn assert_tls_refused(
    agent: &AgentHandle,
    ca_pem: &str,
    identity: Option<&Leaf>,
    token: String,
) {
    let started_before = agent.counters().captures_started;
    let outcome = match connect(agent.local_addr(), ca_pem, identity).await {
        Err(connect_error) => format!("connect failed: {connect_error}"),
        Ok(mut client) => match open(&mut client, request(token, POINT)).await {
            Err(status) => {
                assert!(
                    matches!(
                        status.code(),
                        Code::Unavailable | Code::Unknown | Code::Cancelled
                    ),
                    "a TLS refusal surfaces as a transport failure, got {:?}: {}",
                    status.code(),
                    status.message()
                );
                format!("call failed: {:?}", status.code())
            }
            Ok(mut stream) => match tokio::time::timeout(PATIENCE, stream.message()).await {
                Ok(Ok(Some(_))) => panic!("a snapshot was delivered over a refused handshake"),
                other => format!("stream failed: {other:?}"),
            },
        },
    };
    eprintln!("TLS refusal: {outcome}");
    assert_eq!(agent.counters().captures_started, started_before);
}

/// The positive control of a refusal test: the same agent serves the real control plane.
async fn assert_serves_control_plane(agent: &AgentHandle, pki: &TestPki) {
    let token = token_for(pki, &sid("control"));
    try_capture(agent, &pki.ca.pem, Some(&pki.control_plane), token)
        .await
        .expect("the control plane captures");
}

// ---------------------------------------------------------------------------------------------
// Tokens.

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A session id no other test uses.
fn sid(test: &str) -> String {
    format!("{test}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// Claims a control plane would mint for `leaf`: two minutes, `POINT` only, generous limits.
fn claims(session: &str, leaf: &Leaf) -> SessionClaims {
    let now = unix_now();
    SessionClaims {
        iss: control_plane_id(),
        aud: audience_for(SERVICE),
        sub: format!("spiffe://{TRUST_DOMAIN}/user/alice"),
        sid: session.to_owned(),
        jti: format!("jti-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)),
        iat: now,
        nbf: now,
        exp: now + 120,
        points: vec![POINT.to_owned()],
        limits: TokenLimits {
            max_snapshots: 10_000,
            max_bytes: 64 * 1024,
            rate: 200.0,
        },
        redact: TokenRedaction::default(),
        cnf: Confirmation::for_certificate(&leaf.der),
    }
}

fn mint(pki: &TestPki, claims: &SessionClaims) -> String {
    pki.signer.mint(claims).expect("mint")
}

fn token_for(pki: &TestPki, session: &str) -> String {
    mint(pki, &claims(session, &pki.control_plane))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token signed with the real key over any header and claims, however wrong.
fn sign_raw(pki: &TestPki, header: serde_json::Value, claims: serde_json::Value) -> String {
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pki.signer_pkcs8)
        .expect("signer key");
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = pair.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.as_ref()))
}

fn eddsa_header() -> serde_json::Value {
    serde_json::json!({"alg": "EdDSA", "typ": "loupe-session+jwt", "kid": "k1"})
}

fn claims_json(claims: &SessionClaims) -> serde_json::Value {
    serde_json::to_value(claims).expect("claims as JSON")
}

/// A refusal must say what to do and carry no key material: not the token or its signature,
/// not the verification key, not the signing key.
fn assert_leaks_nothing(message: &str, token: &str, pki: &TestPki) {
    let signature = token.rsplit('.').next().unwrap_or_default();
    assert!(!message.is_empty());
    if !token.is_empty() {
        assert!(
            !message.contains(token),
            "message quotes the token: {message}"
        );
    }
    if signature.len() > 8 {
        assert!(
            !message.contains(signature),
            "message quotes the signature: {message}"
        );
    }
    assert!(
        !message.contains(&b64(&pki.signer.public_key())),
        "message quotes the public key: {message}"
    );
    // In a PKCS#8 Ed25519 key the 32-byte seed follows a 16-byte header.
    let seed = &pki.signer_pkcs8[16..48];
    for encoded in [
        b64(seed),
        base64::engine::general_purpose::STANDARD.encode(seed),
    ] {
        assert!(
            !message.contains(&encoded),
            "message quotes the private key"
        );
    }
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}

/// Opens a capture with `token` as the control plane and expects it refused with `code` and a
/// message containing `says`.
async fn assert_token_refused(pki: &TestPki, token: String, code: Code, says: &str) {
    let agent = start(pki);
    let mut client = control_plane(&agent, pki).await;
    // The same agent serves a good token, so the refusal is the token's doing.
    let mut good = open(&mut client, request(token_for(pki, &sid("control")), POINT))
        .await
        .expect("a valid token is accepted");
    next_snapshot(&mut good).await;
    let status = refused(&mut client, request(token.clone(), POINT)).await;
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(says),
        "message {:?} should say {says:?}",
        status.message()
    );
    assert_leaks_nothing(status.message(), &token, pki);
}

// ---------------------------------------------------------------------------------------------
// Who may connect.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_a_client_certificate_is_refused() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let token = token_for(&pki, &sid("no-cert"));
    assert_tls_refused(&agent, &pki.ca.pem, None, token).await;
    assert_serves_control_plane(&agent, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_from_another_ca_is_refused() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    // Another CA issuing the very same control-plane identity.
    let rogue_ca = Ca::new("Rogue CA");
    let rogue = rogue_ca.issue(
        pki.path(),
        "rogue-control-plane",
        LeafSpec::client("control plane", Some(&control_plane_id())),
    );
    let token = mint(&pki, &claims(&sid("rogue"), &rogue));
    assert_tls_refused(&agent, &pki.ca.pem, Some(&rogue), token).await;
    assert_serves_control_plane(&agent, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_expired_client_certificate_is_refused() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let now = OffsetDateTime::now_utc();
    let expired = pki.ca.issue(
        pki.path(),
        "expired-control-plane",
        LeafSpec::client("control plane", Some(&control_plane_id())).valid(
            now - time::Duration::hours(2),
            now - time::Duration::hours(1),
        ),
    );
    let token = mint(&pki, &claims(&sid("expired-cert"), &expired));
    assert_tls_refused(&agent, &pki.ca.pem, Some(&expired), token).await;
    assert_serves_control_plane(&agent, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_not_yet_valid_client_certificate_is_refused() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let now = OffsetDateTime::now_utc();
    let future = pki.ca.issue(
        pki.path(),
        "future-control-plane",
        LeafSpec::client("control plane", Some(&control_plane_id())).valid(
            now + time::Duration::hours(1),
            now + time::Duration::hours(2),
        ),
    );
    let token = mint(&pki, &claims(&sid("future-cert"), &future));
    assert_tls_refused(&agent, &pki.ca.pem, Some(&future), token).await;
    assert_serves_control_plane(&agent, &pki).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_crl_revoking_the_control_plane_certificate_fails_the_handshake() {
    let pki = TestPki::new(SERVICE);
    let spare = pki.ca.issue(
        pki.path(),
        "spare-control-plane",
        LeafSpec::client("control plane", Some(&control_plane_id())),
    );
    let crl = pki.ca.crl(pki.path(), &[pki.control_plane.serial]);
    let agent = start_with(builder(&pki).crl(&crl));
    assert_tls_refused(
        &agent,
        &pki.ca.pem,
        Some(&pki.control_plane),
        token_for(&pki, &sid("crl-revoked")),
    )
    .await;
    // A certificate the CRL does not list still works.
    let token = mint(&pki, &claims(&sid("crl-spare"), &spare));
    try_capture(&agent, &pki.ca.pem, Some(&spare), token)
        .await
        .expect("unrevoked control-plane certificate captures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engineer_certificate_is_permission_denied_naming_both_identities() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut engineer = connect(agent.local_addr(), &pki.ca.pem, Some(&pki.engineer))
        .await
        .expect("TLS accepts a certificate of the same CA");
    let alice = format!("spiffe://{TRUST_DOMAIN}/user/alice");
    let check = |status: Status| {
        assert_code(&status, Code::PermissionDenied);
        assert!(
            status.message().contains(&control_plane_id()),
            "{}",
            status.message()
        );
        assert!(status.message().contains(&alice), "{}", status.message());
    };
    let describe = engineer.describe(DescribeRequest {}).await;
    check(describe.expect_err("Describe refused"));
    // Even a token bound to the engineer's own certificate does not help.
    let token = mint(&pki, &claims(&sid("engineer"), &pki.engineer));
    check(refused(&mut engineer, request(token, POINT)).await);
    let revoke = engineer
        .revoke_session(RevokeSessionRequest {
            session_id: "someone-else".into(),
            until_unix: 0,
        })
        .await;
    check(revoke.expect_err("RevokeSession refused"));
    assert_eq!(
        agent.counters().denied.get("peer_not_control_plane"),
        Some(&3)
    );
}

/// Certificates of the agent's own CA that are no SVID of the control plane: refused on every
/// call as `Unauthenticated` with the reason, whatever token they bring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_only_spell_the_control_plane_are_nobody() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let forged = [
        // Its CN spells the control plane's ID; no URI SAN.
        (
            pki.ca.issue(
                pki.path(),
                "cn-only",
                LeafSpec::client(&control_plane_id(), None),
            ),
            "no URI SAN",
        ),
        // The control plane's ID first, then another.
        (
            pki.ca.issue(
                pki.path(),
                "two-uris",
                LeafSpec::client("control plane", Some(&control_plane_id()))
                    .with_uri(&format!("spiffe://{TRUST_DOMAIN}/user/mallory")),
            ),
            "2 URI SANs",
        ),
        // The control plane's path in another trust domain.
        (
            pki.ca.issue(
                pki.path(),
                "foreign",
                LeafSpec::client("control plane", Some("spiffe://evil.test/control-plane")),
            ),
            "outside the trust domain",
        ),
    ];
    for (leaf, says) in &forged {
        let mut client = connect(agent.local_addr(), &pki.ca.pem, Some(leaf))
            .await
            .expect("TLS accepts a certificate of the same CA");
        let check = |status: Status| {
            assert_code(&status, Code::Unauthenticated);
            assert!(status.message().contains(says), "{}", status.message());
        };
        check(
            client
                .describe(DescribeRequest {})
                .await
                .expect_err("Describe"),
        );
        let token = mint(&pki, &claims(&sid("forged"), leaf));
        check(refused(&mut client, request(token, POINT)).await);
    }
    assert_eq!(agent.counters().denied.get("peer_identity"), Some(&6));
}

// ---------------------------------------------------------------------------------------------
// What a token must prove.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_alg_none_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let header = serde_json::json!({"alg": "none", "typ": "loupe-session+jwt", "kid": "k1"});
    let body = claims_json(&claims(&sid("alg-none"), &pki.control_plane));
    let token = format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(body.to_string().as_bytes())
    );
    assert_token_refused(&pki, token, Code::Unauthenticated, "must be EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_hs256_with_the_public_key_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let header = serde_json::json!({"alg": "HS256", "typ": "loupe-session+jwt", "kid": "k1"});
    let body = claims_json(&claims(&sid("hs256"), &pki.control_plane));
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(body.to_string().as_bytes())
    );
    // The classic confusion: the verification key, which is public, used as an HMAC secret.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &pki.signer.public_key());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", b64(tag.as_ref()));
    assert_token_refused(&pki, token, Code::Unauthenticated, "must be EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_an_unknown_kid_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let header = serde_json::json!({"alg": "EdDSA", "typ": "loupe-session+jwt", "kid": "k9"});
    let body = claims_json(&claims(&sid("kid"), &pki.control_plane));
    let token = sign_raw(&pki, header, body);
    assert_token_refused(
        &pki,
        token,
        Code::Unauthenticated,
        "`k9` is not in this agent's key set",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signed_by_another_key_with_a_known_kid_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let (impostor, _) = loupe_trust::token::SigningKey::generate("k1").expect("key");
    let token = impostor
        .mint(&claims(&sid("impostor"), &pki.control_plane))
        .expect("mint");
    assert_token_refused(
        &pki,
        token,
        Code::Unauthenticated,
        "signature does not verify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_a_tampered_payload_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let session = sid("tampered-payload");
    let token = token_for(&pki, &session);
    let parts: Vec<&str> = token.split('.').collect();
    let mut body = claims_json(&claims(&session, &pki.control_plane));
    body["points"] = serde_json::json!([POINT, OTHER_POINT]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(body.to_string().as_bytes()),
        parts[2]
    );
    assert_token_refused(
        &pki,
        forged,
        Code::Unauthenticated,
        "signature does not verify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_a_tampered_signature_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let token = token_for(&pki, &sid("tampered-signature"));
    let (input, signature) = token.rsplit_once('.').expect("three parts");
    let mut raw = URL_SAFE_NO_PAD.decode(signature).expect("signature");
    raw[10] ^= 0x01;
    let forged = format!("{input}.{}", b64(&raw));
    assert_token_refused(
        &pki,
        forged,
        Code::Unauthenticated,
        "signature does not verify",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let mut c = claims(&sid("expired"), &pki.control_plane);
    c.iat = unix_now() - 600;
    c.nbf = c.iat;
    c.exp = unix_now() - 60;
    assert_token_refused(&pki, mint(&pki, &c), Code::Unauthenticated, "expired").await;
}

/// Verification tolerates a few seconds of clock skew on `exp`, but the agent ends streams at
/// `exp` by its own clock: a token already past it must be refused, not open a stream that
/// ends at once (and might let a snapshot through first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expired_within_the_leeway_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let mut c = claims(&sid("expired-leeway"), &pki.control_plane);
    c.iat = unix_now() - 60;
    c.nbf = c.iat;
    c.exp = unix_now() - 2;
    assert_token_refused(&pki, mint(&pki, &c), Code::Unauthenticated, "expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_nbf_in_the_future_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let mut c = claims(&sid("nbf"), &pki.control_plane);
    c.nbf = unix_now() + 60;
    assert_token_refused(
        &pki,
        mint(&pki, &c),
        Code::Unauthenticated,
        "not valid before",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_exp_as_a_string_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let c = claims(&sid("exp-string"), &pki.control_plane);
    let mut body = claims_json(&c);
    body["exp"] = serde_json::json!(c.exp.to_string());
    let token = sign_raw(&pki, eddsa_header(), body);
    assert_token_refused(&pki, token, Code::Unauthenticated, "claim `exp` is invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_aud_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let mut body = claims_json(&claims(&sid("no-aud"), &pki.control_plane));
    body.as_object_mut().expect("object").remove("aud");
    let token = sign_raw(&pki, eddsa_header(), body);
    assert_token_refused(&pki, token, Code::Unauthenticated, "claim `aud` is missing").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_another_service_is_permission_denied() {
    let pki = TestPki::new(SERVICE);
    let mut c = claims(&sid("other-aud"), &pki.control_plane);
    c.aud = audience_for("payments");
    assert_token_refused(
        &pki,
        mint(&pki, &c),
        Code::PermissionDenied,
        "loupe-agent/payments",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_living_longer_than_the_maximum_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let mut c = claims(&sid("lifetime"), &pki.control_plane);
    c.exp = c.iat + 31 * 60;
    assert_token_refused(
        &pki,
        mint(&pki, &c),
        Code::Unauthenticated,
        "at most 1800 s",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_the_point_is_permission_denied() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let token = token_for(&pki, &sid("point"));
    let status = refused(&mut client, request(token.clone(), OTHER_POINT)).await;
    assert_code(&status, Code::PermissionDenied);
    assert!(
        status.message().contains(OTHER_POINT),
        "{}",
        status.message()
    );
    assert_leaks_nothing(status.message(), &token, &pki);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_replayed_over_another_control_plane_certificate_is_permission_denied() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    // A second, equally valid certificate for the control-plane identity (another replica, or
    // a thief holding a certificate but not the key of the one the token names).
    let other = pki.ca.issue(
        pki.path(),
        "control-plane-b",
        LeafSpec::client("control plane", Some(&control_plane_id())),
    );
    let session = sid("cnf");
    let token = token_for(&pki, &session);
    let mut over_b = connect(agent.local_addr(), &pki.ca.pem, Some(&other))
        .await
        .expect("B connects");
    over_b
        .describe(DescribeRequest {})
        .await
        .expect("B is the control plane");
    let status = refused(&mut over_b, request(token.clone(), POINT)).await;
    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("cnf"), "{}", status.message());
    assert_leaks_nothing(status.message(), &token, &pki);
    // The same token over the certificate it names works.
    let mut over_a = control_plane(&agent, &pki).await;
    let mut stream = open(&mut over_a, request(token, POINT))
        .await
        .expect("token accepted over its own certificate");
    next_snapshot(&mut stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_empty_tokens_are_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    for token in ["", "not-a-token", "a.b.c", "....", "eyJ.eyJ.sig"] {
        let status = refused(&mut client, request(token.to_owned(), POINT)).await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{token:?}: {}",
            status.message()
        );
        assert_leaks_nothing(status.message(), token, &pki);
    }
}

/// A token is good for one Capture call: the same token again — while its first stream is
/// open, and after it ended — is refused and counted, though it is still signed, unexpired and
/// presented over the certificate it is bound to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_token_twice_is_permission_denied_as_already_used() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let token = token_for(&pki, &sid("replay"));
    let mut first = open(&mut client, request(token.clone(), POINT))
        .await
        .expect("the first use captures");
    next_snapshot(&mut first).await;

    let status = refused(&mut client, request(token.clone(), POINT)).await;
    assert_code(&status, Code::PermissionDenied);
    assert!(
        status.message().contains("already used"),
        "{}",
        status.message()
    );
    assert_leaks_nothing(status.message(), &token, &pki);
    drop(first);
    // Over a new connection, after the first stream is gone: still spent.
    let mut again = control_plane(&agent, &pki).await;
    let status = refused(&mut again, request(token.clone(), POINT)).await;
    assert_code(&status, Code::PermissionDenied);
    let counters = agent.counters();
    assert_eq!(counters.denied.get("token_already_used"), Some(&2));
    assert_eq!(counters.captures_started, 1);
}

/// A session may hold several tokens; each is single-use, not each session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tokens_of_the_same_session_both_capture() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let session = sid("two-tokens");
    let mut first = open(&mut client, request(token_for(&pki, &session), POINT))
        .await
        .expect("the first token captures");
    let mut second = open(&mut client, request(token_for(&pki, &session), POINT))
        .await
        .expect("a second token of the same session captures");
    next_snapshot(&mut first).await;
    next_snapshot(&mut second).await;
    assert_eq!(agent.counters().denied.get("token_already_used"), None);
}

/// A token whose `jti` is longer than the agent stores is refused before it is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_an_overlong_jti_is_unauthenticated() {
    let pki = TestPki::new(SERVICE);
    let mut c = claims(&sid("long-jti"), &pki.control_plane);
    c.jti = "j".repeat(129);
    assert_token_refused(&pki, mint(&pki, &c), Code::Unauthenticated, "claim `jti`").await;
}

/// The replay cache is bounded and fails closed: full of unexpired tokens, it refuses new ones
/// (rather than forgetting a live one); once the oldest pass `exp` plus the leeway they are
/// forgotten and new tokens are accepted again — and a forgotten token is refused as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_cache_refuses_new_tokens_until_the_oldest_expire() {
    let pki = TestPki::new(SERVICE);
    let agent = start_with(
        builder(&pki)
            .replay_cache_capacity(2)
            .leeway(Duration::from_secs(1)),
    );
    let mut client = control_plane(&agent, &pki).await;
    let short_lived = |test: &str| {
        let mut c = claims(&sid(test), &pki.control_plane);
        c.exp = unix_now() + 2;
        mint(&pki, &c)
    };
    let spent = [short_lived("replay-full-a"), short_lived("replay-full-b")];
    let forgettable_at = unix_now() + 2 + 1;
    for token in &spent {
        let mut stream = open(&mut client, request(token.clone(), POINT))
            .await
            .expect("room in the cache");
        next_snapshot(&mut stream).await;
    }
    let waiting = token_for(&pki, &sid("replay-full-c"));
    let status = refused(&mut client, request(waiting.clone(), POINT)).await;
    assert_code(&status, Code::ResourceExhausted);
    assert!(
        status.message().contains("2 unexpired session tokens"),
        "{}",
        status.message()
    );
    assert_eq!(
        agent.counters().denied.get("token_replay_cache_full"),
        Some(&1)
    );

    // Past `exp` plus the leeway, the first two are forgotten.
    while unix_now() <= forgettable_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = open(&mut client, request(waiting, POINT))
        .await
        .expect("the refused token was not spent, and now there is room");
    next_snapshot(&mut stream).await;
    let status = refused(&mut client, request(spent[0].clone(), POINT)).await;
    assert_code(&status, Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
}

// ---------------------------------------------------------------------------------------------
// How streams end.

fn unix_nanos() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_nanos()).expect("nanoseconds fit")
}

fn unix_seconds_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ends_within_a_second_of_token_exp() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    // Open late in a second, the worst case for an agent that counts whole seconds from "now"
    // to `exp` (it would end the stream most of a second late).
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .subsec_millis()
        < 700
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = claims(&sid("exp"), &pki.control_plane);
    c.exp = unix_now() + 2;
    let mut stream = open(&mut client, request(mint(&pki, &c), POINT))
        .await
        .expect("capture opens");
    next_snapshot(&mut stream).await;
    let (snapshots, status) = drain(&mut stream).await;
    let ended = unix_seconds_f64();
    let status = status.expect("the stream ends with a status");
    assert_code(&status, Code::DeadlineExceeded);
    // Nothing captured after exp (50 ms for the wall clock read after the deadline check).
    let exp_nanos = i64::try_from(c.exp).expect("exp") * 1_000_000_000 + 50_000_000;
    for snapshot in &snapshots {
        assert!(snapshot.wall_time_unix_nanos <= exp_nanos);
    }
    let late = ended - c.exp as f64;
    eprintln!("stream ended {late:.3} s after exp");
    // Within a second of exp is the requirement; the extra half second is scheduling slack
    // for a loaded two-core machine (agent thread, client runtime and host traffic compete).
    assert!(late <= 1.5, "stream ended {late:.3} s after exp");
    assert!(late >= -0.05, "stream ended {:.3} s before exp", -late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_ends_the_stream_at_once_and_refuses_new_captures() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let session = sid("revoke");
    let mut stream = open(&mut client, request(token_for(&pki, &session), POINT))
        .await
        .expect("capture opens");
    next_snapshot(&mut stream).await;
    let revoked_at = Instant::now();
    let ended = client
        .revoke_session(RevokeSessionRequest {
            session_id: session.clone(),
            until_unix: 0,
        })
        .await
        .expect("revoke")
        .into_inner()
        .captures_ended;
    assert_eq!(ended, 1);
    let revoked_unix_nanos = unix_nanos();
    let (late, status) = drain(&mut stream).await;
    eprintln!(
        "revoked stream ended after {:?}, delivering {} snapshots already in flight",
        revoked_at.elapsed(),
        late.len()
    );
    // What was already on its way may still arrive; nothing captured after the revocation.
    for snapshot in &late {
        assert!(snapshot.wall_time_unix_nanos <= revoked_unix_nanos);
    }
    let status = status.expect("the stream ends with a status");
    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains("revoked"), "{}", status.message());
    // A fresh token of the revoked session is refused too.
    let status = refused(&mut client, request(token_for(&pki, &session), POINT)).await;
    assert_code(&status, Code::PermissionDenied);
    assert!(status.message().contains(&session), "{}", status.message());
    // Other sessions are unaffected.
    let mut other = open(
        &mut client,
        request(token_for(&pki, &sid("revoke-other")), POINT),
    )
    .await
    .expect("another session captures");
    next_snapshot(&mut other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_certificate_expiring_mid_stream_ends_it_and_the_connection_serves_no_more() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let now = OffsetDateTime::now_utc();
    let short = pki.ca.issue(
        pki.path(),
        "short-control-plane",
        LeafSpec::client("control plane", Some(&control_plane_id())).valid(
            now - time::Duration::hours(1),
            now + time::Duration::seconds(4),
        ),
    );
    let not_after = now.unix_timestamp() + 4;
    let mut client = connect(agent.local_addr(), &pki.ca.pem, Some(&short))
        .await
        .expect("connects while valid");
    let token = mint(&pki, &claims(&sid("cert-expiry"), &short));
    let mut stream = open(&mut client, request(token, POINT))
        .await
        .expect("capture opens");
    next_snapshot(&mut stream).await;
    let (_, status) = drain(&mut stream).await;
    let ended = unix_seconds_f64();
    let status = status.expect("the stream ends with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert!(
        status.message().contains("certificate expired"),
        "{}",
        status.message()
    );
    let late = ended - not_after as f64;
    eprintln!("stream ended {late:.3} s after the certificate's not_after");
    assert!(
        late <= 2.5,
        "ended {late:.3} s after the certificate expired"
    );
    assert!(
        late >= -1.05,
        "ended {:.3} s before the certificate expired",
        -late
    );
    // The HTTP/2 connection negotiated with that certificate is still open; calls over it
    // must not be served any more.
    while unix_seconds_f64() <= not_after as f64 + 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let describe = client.describe(DescribeRequest {}).await;
    let status = describe.expect_err("Describe over an expired certificate");
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    let token = mint(&pki, &claims(&sid("cert-expired"), &short));
    let status = refused(&mut client, request(token, POINT)).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert!(
        status.message().contains("renewed certificate"),
        "{}",
        status.message()
    );
    assert_eq!(
        agent.counters().denied.get("peer_certificate_expired"),
        Some(&2)
    );
}

/// A control plane that reads slowly must not keep a revoked stream alive: the agent stops
/// at once, and what it had queued for the stream is not delivered after the revocation. Only
/// what the transport already holds can still arrive: HTTP/2's 64 KiB stream window, plus the
/// chunk tonic has encoded and is waiting to send (at most its 32 KiB yield threshold and the
/// message that crossed it). The queues behind it (engine and stream buffers, 80 snapshots,
/// about 76 KB here) must not: without the cut this delivers about 143 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_cuts_a_stream_whose_reader_is_behind() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    // HTTP/2's default windows (64 KiB per stream and per connection) rather than tonic's
    // larger ones, so what the transport may hold is small and known.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca.pem))
        .identity(Identity::from_pem(
            &pki.control_plane.cert_pem,
            &pki.control_plane.key_pem,
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", agent.local_addr().port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connects");
    let mut client = AgentClient::new(channel);
    let session = sid("revoke-behind");
    let mut c = claims(&session, &pki.control_plane);
    c.limits.rate = 1_000.0;
    let mut stream = open(&mut client, request(mint(&pki, &c), POINT))
        .await
        .expect("capture opens");
    next_snapshot(&mut stream).await;
    // Read nothing until every buffer toward the client is full: the engine's own queue drops.
    let queue_full = || {
        loupe_agent::Engine::global()
            .captures()
            .iter()
            .any(|c| c.session_id == session && c.counters.dropped_queue_full > 0)
    };
    let deadline = Instant::now() + PATIENCE;
    while !queue_full() {
        assert!(Instant::now() < deadline, "the queue never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
        .revoke_session(RevokeSessionRequest {
            session_id: session.clone(),
            until_unix: 0,
        })
        .await
        .expect("revoke");
    let (late, status) = drain(&mut stream).await;
    let late_bytes: usize = late
        .iter()
        .map(|s| prost::Message::encoded_len(s) + 5)
        .sum();
    eprintln!(
        "after revocation: {} snapshots, {late_bytes} bytes",
        late.len()
    );
    // The window and tonic's pending chunk; not the queues.
    let largest = late
        .iter()
        .map(prost::Message::encoded_len)
        .max()
        .unwrap_or(0);
    assert!(
        late_bytes <= 65_535 + 32 * 1024 + largest + 5,
        "{late_bytes} bytes delivered after the revocation"
    );
    let status = status.expect("the stream ends with a status");
    assert_code(&status, Code::PermissionDenied);
}

/// Current-thread on purpose: while the test thread is inside `drop(agent)`, the client's
/// connection cannot make progress, like a stuck control plane. The drop must still return.
#[tokio::test(flavor = "current_thread")]
async fn dropping_the_agent_ends_its_streams_even_with_a_stuck_peer() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let mut stream = open(
        &mut client,
        request(token_for(&pki, &sid("shutdown")), POINT),
    )
    .await
    .expect("capture opens");
    next_snapshot(&mut stream).await;
    let dropping = Instant::now();
    drop(agent);
    let took = dropping.elapsed();
    eprintln!("drop(agent) took {took:?}");
    assert!(took < PATIENCE, "drop(agent) took {took:?}");
    // The stream ends (with UNAVAILABLE, or cut with the connection), never with more data
    // than was already on its way.
    let (_, status) = drain(&mut stream).await;
    let status = status.expect("the stream ends with an error status");
    assert_ne!(status.code(), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_without_a_session_id_is_invalid_argument() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let status = client
        .revoke_session(RevokeSessionRequest {
            session_id: String::new(),
            until_unix: 0,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    // Revoking a session the agent has never seen is fine: it is refused from then on.
    let session = sid("revoked-in-advance");
    let ended = client
        .revoke_session(RevokeSessionRequest {
            session_id: session.clone(),
            until_unix: 0,
        })
        .await
        .expect("revoke")
        .into_inner()
        .captures_ended;
    assert_eq!(ended, 0);
    let status = refused(&mut client, request(token_for(&pki, &session), POINT)).await;
    assert_code(&status, Code::PermissionDenied);
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_over_1024_bytes_is_invalid_argument() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let mut req = request(token_for(&pki, &sid("long-condition")), POINT);
    req.condition = format!("order.id > 0{}", " && order.id > 0".repeat(80));
    assert!(req.condition.len() > 1024);
    let status = refused(&mut client, req).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("1024"), "{}", status.message());
}

/// The condition that once took a host down: string-multiplying `.map` stages, small enough for
/// every syntactic limit. Its worst case is known at arm time and refused then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_whose_worst_case_is_over_budget_is_invalid_argument() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let mut req = request(token_for(&pki, &sid("costly-condition")), POINT);
    req.condition = format!(
        "[string(order.id)]{}.size() > 0",
        ".map(x, x + x + x + x)".repeat(13)
    );
    assert!(req.condition.len() < 1024);
    let status = refused(&mut client, req).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("cost"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_condition_and_bad_pattern_are_invalid_argument() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let mut req = request(token_for(&pki, &sid("bad-cel")), POINT);
    req.condition = "order.total_cents >".into();
    let status = refused(&mut client, req).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("condition"),
        "{}",
        status.message()
    );

    let mut req = request(token_for(&pki, &sid("bad-regex")), POINT);
    req.redact_patterns = vec!["(unclosed".into()];
    let status = refused(&mut client, req).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("(unclosed"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_the_process_does_not_have_is_not_found() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let mut c = claims(&sid("no-point"), &pki.control_plane);
    c.points = vec!["checkout.apply_discont".into()];
    let status = refused(
        &mut client,
        request(mint(&pki, &c), "checkout.apply_discont"),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(
        status.message().contains("checkout.apply_discont"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_captures_per_session_is_resource_exhausted() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let session = sid("per-session");
    let mut open_streams = Vec::new();
    for _ in 0..4 {
        let mut stream = open(&mut client, request(token_for(&pki, &session), POINT))
            .await
            .expect("within the per-session limit");
        next_snapshot(&mut stream).await;
        open_streams.push(stream);
    }
    let status = refused(&mut client, request(token_for(&pki, &session), POINT)).await;
    assert_code(&status, Code::ResourceExhausted);
    assert!(status.message().contains(&session), "{}", status.message());
    // Another session still has room.
    let mut other = open(
        &mut client,
        request(token_for(&pki, &sid("per-session-b")), POINT),
    )
    .await
    .expect("another session captures");
    next_snapshot(&mut other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_captures_on_the_agent_is_resource_exhausted() {
    let pki = TestPki::new(SERVICE);
    let agent = start_with(builder(&pki).max_captures(2, 4));
    let mut client = control_plane(&agent, &pki).await;
    let mut open_streams = Vec::new();
    for _ in 0..2 {
        let stream = open(&mut client, request(token_for(&pki, &sid("total")), POINT))
            .await
            .expect("within the agent's limit");
        open_streams.push(stream);
    }
    let status = refused(&mut client, request(token_for(&pki, &sid("total")), POINT)).await;
    assert_code(&status, Code::ResourceExhausted);
    assert_eq!(agent.counters().denied.get("too_many_captures"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_more_snapshots_than_the_token_allows_gets_the_token_number() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let mut c = claims(&sid("clamp"), &pki.control_plane);
    c.limits.max_snapshots = 3;
    let mut req = request(mint(&pki, &c), POINT);
    req.max_snapshots = 50;
    let mut stream = open(&mut client, req).await.expect("capture opens");
    let (snapshots, status) = drain(&mut stream).await;
    assert!(status.is_none(), "clean end, got {status:?}");
    assert_eq!(snapshots.len(), 3);
    // A request asking fewer gets fewer.
    let mut req = request(token_for(&pki, &sid("clamp-fewer")), POINT);
    req.max_snapshots = 2;
    let mut stream = open(&mut client, req).await.expect("capture opens");
    let (snapshots, status) = drain(&mut stream).await;
    assert!(status.is_none(), "clean end, got {status:?}");
    assert_eq!(snapshots.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Describe.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_lists_points_fields_and_counters_with_denials_by_reason() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    // One capture delivered, two refused for different reasons.
    let mut c = claims(&sid("describe"), &pki.control_plane);
    c.limits.max_snapshots = 2;
    let mut stream = open(&mut client, request(mint(&pki, &c), POINT))
        .await
        .expect("opens");
    assert_eq!(drain(&mut stream).await.0.len(), 2);
    let mut c = claims(&sid("describe-expired"), &pki.control_plane);
    c.iat = unix_now() - 600;
    c.nbf = c.iat;
    c.exp = unix_now() - 60;
    refused(&mut client, request(mint(&pki, &c), POINT)).await;
    refused(
        &mut client,
        request(token_for(&pki, &sid("describe-point")), OTHER_POINT),
    )
    .await;

    let described = client
        .describe(DescribeRequest {})
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.service, SERVICE);
    assert_eq!(described.instance, "checkout-1");
    let point = described
        .points
        .iter()
        .find(|p| p.name == POINT)
        .expect("point listed");
    let fields: Vec<(&str, &str)> = point
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.r#type.as_str()))
        .collect();
    assert_eq!(fields, [("order", "serde"), ("coupon", "debug")]);
    assert!(
        point
            .locations
            .iter()
            .any(|l| l.file.ends_with("endpoint.rs"))
    );
    assert!(described.points.iter().any(|p| p.name == OTHER_POINT));
    let counters = described.counters.expect("counters");
    assert_eq!(counters.captures_started, 1);
    assert_eq!(counters.captures_active, 0);
    assert_eq!(counters.snapshots_sent, 2);
    assert_eq!(counters.denied.get("token_expired"), Some(&1));
    assert_eq!(counters.denied.get("point_not_in_token"), Some(&1));
    assert!(described.limit_ceiling.is_some());
}

/// `snapshots_dropped` sums drops and skips (queue full, CPU budget, rate limit) over active
/// and finished captures: a capture finishing must not make it go down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_drop_counter_keeps_what_finished_captures_skipped() {
    let pki = TestPki::new(SERVICE);
    let agent = start(&pki);
    let mut client = control_plane(&agent, &pki).await;
    let session = sid("dropped");
    // Hits come about every millisecond; at 20 snapshots/s most are skipped by the rate limit.
    let mut c = claims(&session, &pki.control_plane);
    c.limits.rate = 20.0;
    let mut stream = open(&mut client, request(mint(&pki, &c), POINT))
        .await
        .expect("opens");
    next_snapshot(&mut stream).await;
    // Once the burst is spent, the rate limit skips hits.
    let skipping = || {
        loupe_agent::Engine::global()
            .captures()
            .iter()
            .any(|c| c.session_id == session && c.counters.skipped_rate > 0)
    };
    let deadline = Instant::now() + PATIENCE;
    while !skipping() {
        assert!(
            Instant::now() < deadline,
            "the rate limit never skipped a hit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let describe = |mut client: AgentClient<Channel>| async move {
        client
            .describe(DescribeRequest {})
            .await
            .expect("describe")
            .into_inner()
            .counters
            .expect("counters")
    };
    let while_active = describe(client.clone()).await;
    assert_eq!(while_active.captures_active, 1);
    assert!(while_active.snapshots_dropped > 0, "{while_active:?}");
    client
        .revoke_session(RevokeSessionRequest {
            session_id: session.clone(),
            until_unix: 0,
        })
        .await
        .expect("revoke");
    drain(&mut stream).await;
    let deadline = Instant::now() + PATIENCE;
    let finished = loop {
        let counters = describe(client.clone()).await;
        if counters.captures_active == 0 {
            break counters;
        }
        assert!(Instant::now() < deadline, "the capture never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        finished.snapshots_dropped >= while_active.snapshots_dropped,
        "dropped went from {} to {}",
        while_active.snapshots_dropped,
        finished.snapshots_dropped
    );
}

// ---------------------------------------------------------------------------------------------
// Reloading certificates from disk.

/// The leaf certificate the agent presents to a new handshake, read with a raw TLS client.
async fn presented_certificate(addr: SocketAddr, pki: &TestPki) -> Vec<u8> {
    let config = loupe_trust::tls::client_config(&TlsPaths {
        cert: pki.control_plane.cert.clone(),
        key: pki.control_plane.key.clone(),
        ca: pki.ca_path.clone(),
        crl: None,
    })
    .expect("client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let (_, connection) = tls.get_ref();
    connection.peer_certificates().expect("server certificate")[0].to_vec()
}

async fn wait_for_presented(addr: SocketAddr, pki: &TestPki, der: &[u8]) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if presented_certificate(addr, pki).await == der {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn wait_for_log(needle_a: &str, needle_b: &str) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if logged(needle_a, needle_b) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn replace(path: &Path, contents: &str) {
    std::fs::write(path, contents).expect("replace file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_handshakes_present_a_certificate_replaced_on_disk() {
    let pki = TestPki::new(SERVICE);
    let agent = start_with(builder(&pki).reload_interval(Duration::from_millis(50)));
    let addr = agent.local_addr();
    assert_eq!(presented_certificate(addr, &pki).await, pki.agent.der);
    let renewed = pki.ca.issue(
        pki.path(),
        "agent-renewed",
        LeafSpec::server(
            "agent checkout",
            Some(&format!("spiffe://{TRUST_DOMAIN}/agent/{SERVICE}")),
        ),
    );
    // Key first, then certificate: the reloader may see the pair half-written and must then
    // keep the old one until the pair is whole.
    replace(&pki.agent.key, &renewed.key_pem);
    replace(&pki.agent.cert, &renewed.cert_pem);
    assert!(
        wait_for_presented(addr, &pki, &renewed.der).await,
        "the renewed certificate is presented"
    );
    // And the control plane still captures over it.
    try_capture(
        &agent,
        &pki.ca.pem,
        Some(&pki.control_plane),
        token_for(&pki, &sid("reloaded")),
    )
    .await
    .expect("capture after reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_replacement_is_rejected_and_the_old_certificate_kept() {
    let pki = TestPki::new(SERVICE);
    let agent = start_with(builder(&pki).reload_interval(Duration::from_millis(50)));
    let addr = agent.local_addr();
    let cert_path = pki.agent.cert.display().to_string();

    // Not PEM at all.
    replace(&pki.agent.cert, "this is not a certificate\n");
    assert!(
        wait_for_log("rejected", &cert_path).await,
        "the agent logs that it rejected {cert_path}"
    );
    assert_eq!(presented_certificate(addr, &pki).await, pki.agent.der);

    // A valid certificate whose key is not the one on disk.
    let stranger = pki.ca.issue(
        pki.path(),
        "agent-stranger",
        LeafSpec::server("agent checkout", None),
    );
    replace(&pki.agent.cert, &stranger.cert_pem);
    assert!(
        wait_for_log("does not match", &cert_path).await,
        "the agent logs the key mismatch"
    );
    assert_eq!(presented_certificate(addr, &pki).await, pki.agent.der);
    try_capture(
        &agent,
        &pki.ca.pem,
        Some(&pki.control_plane),
        token_for(&pki, &sid("kept")),
    )
    .await
    .expect("capture with the kept certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_replaced_on_disk_decides_new_handshakes() {
    let pki = TestPki::new(SERVICE);
    // The agent reads its own copy of the CA bundle, which the test replaces.
    let agent_ca = pki.path().join("agent-ca.pem");
    std::fs::write(&agent_ca, &pki.ca.pem).expect("write CA");
    let agent = start_with(
        builder(&pki)
            .tls(&pki.agent.cert, &pki.agent.key, &agent_ca)
            .reload_interval(Duration::from_millis(50)),
    );
    let new_ca = Ca::new("Loupe Test CA 2");
    let new_control_plane = new_ca.issue(
        pki.path(),
        "control-plane-ca2",
        LeafSpec::client("control plane", Some(&control_plane_id())),
    );
    let new_token = || mint(&pki, &claims(&sid("ca2"), &new_control_plane));
    // Not trusted yet.
    assert_tls_refused(&agent, &pki.ca.pem, Some(&new_control_plane), new_token()).await;

    replace(&agent_ca, &new_ca.pem);
    let deadline = Instant::now() + PATIENCE;
    let mut trusted = false;
    while !trusted && Instant::now() < deadline {
        trusted = try_capture(&agent, &pki.ca.pem, Some(&new_control_plane), new_token())
            .await
            .is_ok();
        if !trusted {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        trusted,
        "a certificate of the new CA is accepted after the reload"
    );
    // The old CA is no longer trusted.
    assert_tls_refused(
        &agent,
        &pki.ca.pem,
        Some(&pki.control_plane),
        token_for(&pki, &sid("ca1")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_replaced_on_disk_revokes_new_handshakes() {
    let pki = TestPki::new(SERVICE);
    let crl = pki.ca.crl(pki.path(), &[]);
    let agent = start_with(
        builder(&pki)
            .crl(&crl)
            .reload_interval(Duration::from_millis(50)),
    );
    assert_serves_control_plane(&agent, &pki).await;
    // The CA now revokes the control plane's certificate (same file, rewritten).
    assert_eq!(pki.ca.crl(pki.path(), &[pki.control_plane.serial]), crl);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let token = token_for(&pki, &sid("crl-reload"));
        match try_capture(&agent, &pki.ca.pem, Some(&pki.control_plane), token).await {
            Err(_) => break,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => panic!("the revoked certificate is still accepted"),
        }
    }
    assert_tls_refused(
        &agent,
        &pki.ca.pem,
        Some(&pki.control_plane),
        token_for(&pki, &sid("crl-reloaded")),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// start() misconfiguration.

fn start_error(builder: AgentBuilder) -> String {
    record_logs();
    match builder.start() {
        Ok(_) => panic!("agent started with a bad configuration"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn start_names_a_missing_setting() {
    let pki = TestPki::new(SERVICE);
    let error = start_error(
        Agent::builder()
            .tls(&pki.agent.cert, &pki.agent.key, &pki.ca_path)
            .control_plane(control_plane_id())
            .token_keys(pki.keys.clone()),
    );
    assert!(
        error.contains("`service`") && error.contains("required"),
        "{error}"
    );
    let error = start_error(
        Agent::builder()
            .service(SERVICE)
            .tls(&pki.agent.cert, &pki.agent.key, &pki.ca_path)
            .token_keys(pki.keys.clone()),
    );
    assert!(error.contains("control_plane"), "{error}");
    let error = start_error(
        Agent::builder()
            .service(SERVICE)
            .control_plane(control_plane_id())
            .token_keys(pki.keys.clone()),
    );
    assert!(error.contains("tls certificate"), "{error}");
    let error = start_error(
        Agent::builder()
            .service(SERVICE)
            .tls(&pki.agent.cert, &pki.agent.key, &pki.ca_path)
            .control_plane(control_plane_id()),
    );
    assert!(error.contains("token keys"), "{error}");
}

#[test]
fn start_refuses_a_replay_cache_that_could_hold_no_token() {
    let pki = TestPki::new(SERVICE);
    let error = start_error(builder(&pki).replay_cache_capacity(0));
    assert!(error.contains("replay_cache_capacity"), "{error}");
}

#[test]
fn start_errors_say_their_kind() {
    let pki = TestPki::new(SERVICE);
    record_logs();
    let kind = |builder: AgentBuilder| builder.start().err().expect("refused");
    assert!(matches!(
        kind(builder(&pki).service("")),
        StartError::EmptyService
    ));
    assert!(matches!(
        kind(builder(&pki).replay_cache_capacity(0)),
        StartError::NoReplayCapacity
    ));
    assert!(matches!(
        kind(builder(&pki).control_plane("control-plane")),
        StartError::ControlPlaneIdentity { .. }
    ));
    match kind(builder(&pki).control_plane_address("no-port")) {
        StartError::BadAddress {
            setting, address, ..
        } => {
            assert_eq!(setting, "control_plane_address");
            assert_eq!(address, "no-port");
        }
        other => panic!("expected BadAddress, got {other:?}"),
    }
    assert!(matches!(
        kind(
            builder(&pki)
                .control_plane_address("127.0.0.1:1")
                .advertise_address("0.0.0.0:7000")
        ),
        StartError::BadAddress {
            setting: "advertise_address",
            ..
        }
    ));
}

#[test]
fn start_names_a_missing_file() {
    let pki = TestPki::new(SERVICE);
    let missing = pki.path().join("nowhere.crt");
    let error = start_error(builder(&pki).tls(&missing, &pki.agent.key, &pki.ca_path));
    assert!(error.contains(&missing.display().to_string()), "{error}");
    assert!(error.contains("cannot read"), "{error}");
    let missing_ca = pki.path().join("no-ca.pem");
    let error = start_error(builder(&pki).tls(&pki.agent.cert, &pki.agent.key, &missing_ca));
    assert!(error.contains(&missing_ca.display().to_string()), "{error}");
    let missing_keys = pki.path().join("no-keys.json");
    let error = start_error(builder(&pki).token_keys_file(&missing_keys));
    assert!(
        error.contains(&missing_keys.display().to_string()),
        "{error}"
    );
}

#[test]
fn start_names_a_file_with_bad_pem() {
    let pki = TestPki::new(SERVICE);
    let no_pem = pki.path().join("no-pem.crt");
    std::fs::write(&no_pem, "hello\n").expect("write");
    let error = start_error(builder(&pki).tls(&no_pem, &pki.agent.key, &pki.ca_path));
    assert!(error.contains(&no_pem.display().to_string()), "{error}");
    assert!(error.contains("no PEM certificate"), "{error}");

    let broken = pki.path().join("broken.crt");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!not base64!!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let error = start_error(builder(&pki).tls(&broken, &pki.agent.key, &pki.ca_path));
    assert!(error.contains(&broken.display().to_string()), "{error}");
    assert!(error.contains("not valid PEM"), "{error}");

    let no_key = pki.path().join("no-key.key");
    std::fs::write(&no_key, &pki.agent.cert_pem).expect("write");
    let error = start_error(builder(&pki).tls(&pki.agent.cert, &no_key, &pki.ca_path));
    assert!(error.contains(&no_key.display().to_string()), "{error}");
    assert!(error.contains("no private key"), "{error}");

    let bad_crl = pki.path().join("bad.crl.pem");
    std::fs::write(&bad_crl, "not a crl\n").expect("write");
    let error = start_error(builder(&pki).crl(&bad_crl));
    assert!(error.contains(&bad_crl.display().to_string()), "{error}");
    assert!(error.contains("CRL"), "{error}");

    let bad_keys = pki.path().join("keys.json");
    std::fs::write(&bad_keys, "{\"keys\": 3}").expect("write");
    let error = start_error(builder(&pki).token_keys_file(&bad_keys));
    assert!(error.contains(&bad_keys.display().to_string()), "{error}");
    assert!(error.contains("key set"), "{error}");
}

#[test]
fn start_names_a_key_that_does_not_match_the_certificate() {
    let pki = TestPki::new(SERVICE);
    let error =
        start_error(builder(&pki).tls(&pki.agent.cert, &pki.control_plane.key, &pki.ca_path));
    assert!(error.contains("does not match"), "{error}");
    assert!(
        error.contains(&pki.agent.cert.display().to_string()),
        "{error}"
    );
    assert!(
        error.contains(&pki.control_plane.key.display().to_string()),
        "{error}"
    );
}

/// Key rotation without restart: the agent re-reads its JWK set file. A token signed by a new
/// key is refused until the file lists it, then accepted; a key removed from the file stops
/// being accepted; a broken file keeps the keys in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_keys_reload_from_their_jwk_set_file() {
    let pki = TestPki::new(SERVICE);
    let keys_path = pki.path().join("keys.json");
    std::fs::write(&keys_path, pki.keys.to_jwks_json()).expect("write keys");
    let agent = start_with(
        builder(&pki)
            .token_keys_file(&keys_path)
            .reload_interval(Duration::from_millis(50)),
    );
    let mut client = control_plane(&agent, &pki).await;
    let (rotated, _) = loupe_trust::token::SigningKey::generate("k2").expect("key");
    let rotated_token = || {
        rotated
            .mint(&claims(&sid("rotated"), &pki.control_plane))
            .expect("mint")
    };
    let status = refused(&mut client, request(rotated_token(), POINT)).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    assert!(status.message().contains("`k2`"), "{}", status.message());

    // Publish k2 alongside k1.
    let mut both = pki.keys.clone();
    both.insert(rotated.kid(), rotated.public_key());
    replace(&keys_path, &both.to_jwks_json());
    let deadline = Instant::now() + PATIENCE;
    let mut stream = loop {
        match open(&mut client, request(rotated_token(), POINT)).await {
            Ok(stream) => break stream,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("k2 never accepted: {}", status.message()),
        }
    };
    next_snapshot(&mut stream).await;

    // A broken file keeps both keys.
    replace(&keys_path, "{ not json");
    assert!(
        wait_for_log("new token keys rejected", &keys_path.display().to_string()).await,
        "the agent logs the rejected key set"
    );
    let mut stream = open(
        &mut client,
        request(token_for(&pki, &sid("k1-kept")), POINT),
    )
    .await
    .expect("k1 still accepted");
    next_snapshot(&mut stream).await;

    // Retire k1.
    let mut only_k2 = loupe_trust::token::KeySet::new();
    only_k2.insert(rotated.kid(), rotated.public_key());
    replace(&keys_path, &only_k2.to_jwks_json());
    let deadline = Instant::now() + PATIENCE;
    loop {
        match open(
            &mut client,
            request(token_for(&pki, &sid("k1-retired")), POINT),
        )
        .await
        {
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
                assert!(status.message().contains("`k1`"), "{}", status.message());
                break;
            }
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => panic!("k1 still accepted after it was removed"),
        }
    }
}
