//! Dialing a Loupe peer over mTLS, and refusing it unless its certificate names the identity
//! the caller meant to reach.
//!
//! Loupe peers are named by SPIFFE identities, not DNS names: an agent's address comes from its
//! own registration, so what proves the control plane reached the right agent is that the
//! certificate at that address chains to the CA, is not revoked by the configured CRLs, *and* is
//! an X.509-SVID for `spiffe://<td>/agent/<service>` ([`crate::identity`] states that rule). The
//! server certificate is therefore verified by rustls' WebPKI verifier (chain, server-auth key
//! usage, revocation) and then identified; the host name in the address is not consulted. The
//! connector always speaks TLS — there is no plaintext path to fall into.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::identity::{IdentityError, IdentityRules, SpiffeId, SpiffeIdError};
use crate::tls::{
    TlsError, TlsPaths, load_certified_key, load_crls, load_private_key, load_roots, provider,
};

/// How long a dial may take, TCP and TLS together, unless the caller says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer could not be reached, or was not the peer meant. Callers branch on the kind —
/// nobody there ([`DialError::Unreachable`]), somebody else there ([`DialError::WrongPeer`]),
/// a certificate refused by either side — so each is its own variant, never only text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    #[error("`{address}` is not a host:port address")]
    BadAddress { address: String },
    #[error("the identity to dial, `{expected}`, is not a SPIFFE ID: {reason}")]
    BadIdentity {
        expected: String,
        reason: SpiffeIdError,
    },
    /// Our own TLS material cannot make a client configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Nobody answered, or the connection broke before any certificate was judged.
    #[error("cannot reach {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The server's certificate is a valid SVID of someone other than the identity dialed.
    #[error("the server at {address} is not the peer dialed: {peer}")]
    WrongPeer { address: String, peer: WrongPeer },
    /// The server's certificate verifies but identifies nobody (no SPIFFE ID, a CA, another
    /// trust domain…).
    #[error("the server at {address} identifies nobody: {reason}")]
    UnidentifiedPeer {
        address: String,
        reason: IdentityError,
    },
    /// The server's certificate does not verify: unknown issuer, expired, revoked….
    #[error("the server at {address} presented a certificate that does not verify: {reason}")]
    BadPeerCertificate { address: String, reason: String },
    /// The server refused our client certificate.
    #[error("the server at {address} refused our client certificate ({alert})")]
    Refused { address: String, alert: String },
}

/// The peer's certificate named someone other than the identity dialed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the peer presented `{presented}`, not the expected `{expected}`")]
pub struct WrongPeer {
    pub expected: String,
    pub presented: String,
}

/// A client's mTLS material: its certificate and key, the CA it trusts for peers, and the CRLs
/// that revoke some of them. Cheap to clone; build one per process and dial many peers with it,
/// and load it again to pick up changed files (the agent does each registration round, the
/// control plane when its TLS files change, the CLI each run).
#[derive(Clone)]
pub struct ClientTls {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    crls: Arc<Vec<CertificateRevocationListDer<'static>>>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<rustls::pki_types::PrivateKeyDer<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Loads `paths.cert`, `paths.key`, `paths.ca` and `paths.crl`; any problem names the file.
    pub fn load(paths: &TlsPaths) -> Result<ClientTls, TlsError> {
        let provider = provider();
        let certified = load_certified_key(&paths.cert, &paths.key, &provider)?;
        let crls = match &paths.crl {
            Some(crl) => load_crls(crl)?,
            None => Vec::new(),
        };
        Ok(ClientTls {
            roots: Arc::new(load_roots(&paths.ca)?),
            crls: Arc::new(crls),
            chain: certified.cert.clone(),
            key: Arc::new(load_private_key(&paths.key)?),
            provider,
        })
    }

    /// The client certificate presented (DER), e.g. to bind session tokens to it.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// A rustls configuration that accepts only a server whose identity is `expected`.
    pub fn config_for(&self, expected: &SpiffeId) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::clone(&self.roots),
            Arc::clone(&self.provider),
        );
        if !self.crls.is_empty() {
            // As on accept: a CRL revokes what it lists; a certificate from an issuer with no
            // CRL configured is not refused for that.
            webpki = webpki
                .with_crls(self.crls.iter().cloned())
                .allow_unknown_revocation_status();
        }
        let verifier = IdentityVerifier {
            provider: Arc::clone(&self.provider),
            webpki: webpki
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?,
            rules: IdentityRules::for_peer(expected),
            expected: expected.as_str().to_owned(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A channel to `address` (`host:port`) whose server must be `expected`. Connects now, and
    /// waits for the server to accept our certificate, so an unreachable peer, a wrong server
    /// certificate or a refused client certificate is an error here, not at the first call.
    pub async fn dial(
        &self,
        address: &str,
        expected: &str,
        timeout: Duration,
    ) -> Result<Channel, DialError> {
        let (endpoint, connector) = self.endpoint(address, expected, timeout)?;
        let channel = endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| dial_failure(address, &e))?;
        match self.refusal(address, expected, timeout).await {
            Some(alert) => Err(DialError::Refused {
                address: address.to_owned(),
                alert,
            }),
            None => Ok(channel),
        }
    }

    /// Whether the server at `address` refused our client certificate: `Some(alert)` if so.
    /// With TLS 1.3 a client finishes its handshake before the server has judged
    /// the client certificate, so a refusal would otherwise surface only at the first call, as
    /// a bare transport error. This opens a separate connection, sends the HTTP/2 preface, and
    /// waits for the server's first frame (accepted) or its alert (refused). `None` also when
    /// the answer is anything else: the real call reports that.
    pub async fn refusal(
        &self,
        address: &str,
        expected: &str,
        timeout: Duration,
    ) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (_, mut connector) = self.endpoint(address, expected, timeout).ok()?;
        let uri: http::Uri = format!("http://{address}").parse().ok()?;
        let probe = async {
            let mut stream = tower_service::Service::call(&mut connector, uri)
                .await
                .ok()?
                .into_inner();
            // The HTTP/2 connection preface and an empty SETTINGS frame.
            let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            if let Err(error) = stream.write_all(&hello).await {
                return alert_in(&error);
            }
            let _ = stream.flush().await;
            let mut first = [0u8; 9];
            match stream.read(&mut first).await {
                Ok(_) => None,
                Err(error) => alert_in(&error),
            }
        };
        tokio::time::timeout(timeout, probe).await.ok().flatten()
    }

    /// Like [`ClientTls::dial`], but connects on first use (and reconnects after failures).
    pub fn dial_lazy(
        &self,
        address: &str,
        expected: &str,
        timeout: Duration,
    ) -> Result<Channel, DialError> {
        let (endpoint, connector) = self.endpoint(address, expected, timeout)?;
        Ok(endpoint.connect_with_connector_lazy(connector))
    }

    fn endpoint(
        &self,
        address: &str,
        expected: &str,
        timeout: Duration,
    ) -> Result<(Endpoint, TlsConnector), DialError> {
        let bad = || DialError::BadAddress {
            address: address.to_owned(),
        };
        let (host, _) = split_host_port(address).map_err(|_| bad())?;
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
        let expected = SpiffeId::parse(expected).map_err(|reason| DialError::BadIdentity {
            expected: expected.to_owned(),
            reason,
        })?;
        let config = self.config_for(&expected)?;
        // The scheme only fills the `:scheme` pseudo-header; the connector below always does
        // TLS, whatever the URI says.
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|_| bad())?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let connector = TlsConnector {
            config,
            server_name,
            timeout,
        };
        Ok((endpoint, connector))
    }
}

/// Splits `host:port` (a name, an IPv4 address, or an IPv6 address in brackets) into the
/// host (without brackets) and a port from 1 to 65535; the error says what is wrong.
pub fn split_host_port(address: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = address.rsplit_once(':').ok_or("no port")?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or("the port must be a number from 1 to 65535")?;
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.strip_suffix(']').ok_or("unclosed `[`")?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| "not an IPv6 address in brackets")?;
            v6
        }
        None if host.is_empty() || host.contains(':') || host.contains('/') => {
            return Err("the host is empty or not a name or IP address");
        }
        None => host,
    };
    Ok((host, port))
}

/// The TLS alert an I/O error carries, if it is one the peer sent.
fn alert_in(error: &std::io::Error) -> Option<String> {
    let text = error.to_string();
    text.find("received fatal alert")
        .map(|at| text[at..].to_owned())
}

/// What a failed connection says, by kind: the verifier's own refusal and rustls' certificate
/// and alert errors are found in the cause chain (rustls errors travel inside `io::Error`,
/// whose `source` skips them, hence the look inside each).
fn dial_failure(address: &str, error: &(dyn std::error::Error + 'static)) -> DialError {
    let address = address.to_owned();
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = rustls_error(current) {
            return match tls {
                rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                    match other.0.downcast_ref::<PeerRefusal>() {
                        Some(PeerRefusal::WrongPeer(peer)) => DialError::WrongPeer {
                            address,
                            peer: peer.clone(),
                        },
                        Some(PeerRefusal::Unidentified(reason)) => DialError::UnidentifiedPeer {
                            address,
                            reason: reason.clone(),
                        },
                        None => DialError::BadPeerCertificate {
                            address,
                            reason: tls.to_string(),
                        },
                    }
                }
                rustls::Error::InvalidCertificate(_) => DialError::BadPeerCertificate {
                    address,
                    reason: tls.to_string(),
                },
                rustls::Error::AlertReceived(alert) => DialError::Refused {
                    address,
                    alert: format!("received fatal alert: {alert:?}"),
                },
                _ => DialError::Unreachable {
                    address,
                    reason: error_chain(error),
                },
            };
        }
        cause = current.source();
    }
    DialError::Unreachable {
        address,
        reason: error_chain(error),
    }
}

/// `error` as a rustls error, directly or as the payload of an `io::Error`.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    error.downcast_ref::<rustls::Error>().or_else(|| {
        error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })
}

/// The full cause of a tonic transport error, which hides the useful part a few levels down.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// TCP, then TLS, for each connection tonic opens.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    timeout: Duration,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let server_name = self.server_name.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::other("address has no host:port"))?
                .as_str()
                .to_owned();
            let connect = async {
                let tcp = TcpStream::connect(&authority).await?;
                tcp.set_nodelay(true)?;
                connector.connect(server_name, tcp).await
            };
            let stream = tokio::time::timeout(timeout, connect).await.map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no TLS connection within {} ms", timeout.as_millis()),
                )
            })??;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Why the verifier refused a server's certificate, carried through rustls (inside
/// `CertificateError::Other`) so that [`dial_failure`] can hand it back typed. rustls shows it
/// with `Debug` in its own error text, so `Debug` is the plain message.
#[derive(Clone, thiserror::Error)]
enum PeerRefusal {
    #[error(transparent)]
    WrongPeer(WrongPeer),
    #[error(transparent)]
    Unidentified(IdentityError),
}

impl std::fmt::Debug for PeerRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Chains to the CA, is valid for server auth, is not revoked, and is an SVID naming the
/// expected identity.
#[derive(Debug)]
struct IdentityVerifier {
    provider: Arc<CryptoProvider>,
    webpki: Arc<WebPkiServerVerifier>,
    rules: IdentityRules,
    expected: String,
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => {}
            // rustls checks the name last, after the chain, the key usage and revocation have
            // passed (`WebPkiServerVerifier::verify_server_cert`; a test pins this order). Peers
            // are named by SPIFFE ID, checked below, not by the address dialed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(other) => return Err(other),
        }
        let refuse = |refusal: PeerRefusal| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
                refusal,
            ))))
        };
        let identity = self
            .rules
            .identify(end_entity.as_ref())
            .map_err(|e| refuse(PeerRefusal::Unidentified(e)))?;
        if identity.id != self.expected {
            return Err(refuse(PeerRefusal::WrongPeer(WrongPeer {
                expected: self.expected.clone(),
                presented: identity.id,
            })));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
