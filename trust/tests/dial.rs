//! Dialing a peer over real mTLS on loopback: the server must present a leaf SVID naming the
//! identity dialed, in its trust domain, not revoked by the dialer's CRL. This is the dial every
//! hop uses (CLI → control plane, agent → control plane, control plane → agent).

use std::path::{Path, PathBuf};
use std::time::Duration;

use loupe_trust::authority::{Authority, LeafSpec, SerialNumber};
use loupe_trust::dial::{ClientTls, DialError};
use loupe_trust::identity::IdentityError;
use loupe_trust::tls::{ReloadingServerTls, TlsPaths};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONTROL_PLANE: &str = "spiffe://loupe.test/control-plane";
const AGENT: &str = "spiffe://loupe.test/agent/checkout";

struct Pki {
    dir: tempfile::TempDir,
    authority: Authority,
    ca: PathBuf,
}

/// A leaf: subject CN, URI SANs, serial, and whether it also names 127.0.0.1 (and localhost).
struct Spec<'a> {
    cn: &'a str,
    uris: &'a [&'a str],
    serial: u64,
    ip: bool,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let authority = Authority::for_tests("Dial Test CA").expect("CA");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, authority.cert_pem()).expect("write CA");
        Pki { dir, authority, ca }
    }

    /// Writes `<stem>.pem` and `<stem>.key`, valid as server and client.
    fn issue(&self, stem: &str, spec: &Spec<'_>) -> TlsPaths {
        let mut leaf = spec
            .uris
            .iter()
            .fold(LeafSpec::server_and_client(spec.cn, None), |leaf, uri| {
                leaf.with_uri(uri)
            })
            .serial(spec.serial);
        if !spec.ip {
            leaf = leaf.without_loopback_names();
        }
        let leaf = self.authority.issue(&leaf).expect("leaf");
        let paths = TlsPaths {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
            ca: self.ca.clone(),
            crl: None,
        };
        std::fs::write(&paths.cert, leaf.cert_pem).expect("write cert");
        std::fs::write(&paths.key, leaf.key_pem).expect("write key");
        paths
    }

    /// A CRL revoking `serials`.
    fn crl(&self, name: &str, serials: &[u64]) -> PathBuf {
        let serials: Vec<SerialNumber> = serials.iter().map(|s| SerialNumber::from(*s)).collect();
        let path = self.dir.path().join(name);
        let crl = self.authority.crl(&serials).expect("crl");
        std::fs::write(&path, crl).expect("write crl");
        path
    }

    fn client(&self, crl: Option<&Path>) -> ClientTls {
        let mut paths = self.issue(
            "client",
            &Spec {
                cn: "client",
                uris: &["spiffe://loupe.test/user/alice"],
                serial: 1,
                ip: false,
            },
        );
        paths.crl = crl.map(Path::to_owned);
        ClientTls::load(&paths).expect("client TLS")
    }
}

/// A TLS server presenting `paths` that answers the HTTP/2 preface with an empty SETTINGS
/// frame; returns its address.
async fn serve(paths: TlsPaths) -> String {
    let tls = ReloadingServerTls::load(paths).expect("server TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config().expect("config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    address
}

async fn dial(client: &ClientTls, address: &str, expected: &str) -> Result<(), DialError> {
    client
        .dial(address, expected, Duration::from_secs(5))
        .await
        .map(drop)
}

async fn server_presenting(pki: &Pki, spec: Spec<'_>) -> String {
    serve(pki.issue("server", &spec)).await
}

#[tokio::test]
async fn a_server_is_its_one_uri_san_and_never_its_cn() {
    let pki = Pki::new();
    let client = pki.client(None);

    // The real control plane, with no name or address in its certificate: the address
    // dialed is never consulted.
    let real = Spec {
        cn: "anything",
        uris: &[CONTROL_PLANE],
        serial: 10,
        ip: false,
    };
    let address = server_presenting(&pki, real).await;
    dial(&client, &address, CONTROL_PLANE)
        .await
        .expect("the real control plane");

    // A certificate whose CN spells the control plane's ID, with no URI SAN.
    let cn_only = Spec {
        cn: CONTROL_PLANE,
        uris: &[],
        serial: 11,
        ip: true,
    };
    let address = server_presenting(&pki, cn_only).await;
    let error = dial(&client, &address, CONTROL_PLANE)
        .await
        .expect_err("a CN is no identity");
    assert!(
        matches!(
            error,
            DialError::UnidentifiedPeer {
                reason: IdentityError::NoUriSan,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("no URI SAN"), "{error}");

    // Two URI SANs, the expected one first.
    let two = Spec {
        cn: "two",
        uris: &[CONTROL_PLANE, AGENT],
        serial: 12,
        ip: true,
    };
    let address = server_presenting(&pki, two).await;
    let error = dial(&client, &address, CONTROL_PLANE)
        .await
        .expect_err("two URI SANs identify nobody");
    assert!(
        matches!(
            error,
            DialError::UnidentifiedPeer {
                reason: IdentityError::SeveralUriSans { count: 2 },
                ..
            }
        ),
        "{error:?}"
    );

    // The right path in another trust domain.
    let foreign = Spec {
        cn: "foreign",
        uris: &["spiffe://evil.test/control-plane"],
        serial: 13,
        ip: true,
    };
    let address = server_presenting(&pki, foreign).await;
    let error = dial(&client, &address, CONTROL_PLANE)
        .await
        .expect_err("a foreign trust domain");
    assert!(
        matches!(
            error,
            DialError::UnidentifiedPeer {
                reason: IdentityError::ForeignTrustDomain { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("outside the trust domain `loupe.test`"),
        "{error}"
    );

    // A genuine SVID of another workload: somebody else is there, and the error says who.
    let agent = Spec {
        cn: "agent",
        uris: &[AGENT],
        serial: 14,
        ip: true,
    };
    let address = server_presenting(&pki, agent).await;
    match dial(&client, &address, CONTROL_PLANE).await {
        Err(DialError::WrongPeer {
            address: dialed,
            peer,
        }) => {
            assert_eq!(dialed, address);
            assert_eq!(peer.presented, AGENT);
            assert_eq!(peer.expected, CONTROL_PLANE);
        }
        other => panic!("expected WrongPeer, got {other:?}"),
    }

    // An identity to dial that is no SPIFFE ID is the caller's mistake, said before dialing.
    assert!(matches!(
        client
            .dial(&address, "control-plane", Duration::from_secs(5))
            .await,
        Err(DialError::BadIdentity { .. })
    ));
}

#[tokio::test]
async fn a_revoked_server_certificate_is_refused_when_dialing() {
    let pki = Pki::new();
    // The control plane's certificate, revoked; one without a name or address and one with
    // 127.0.0.1, so the refusal cannot come from a name check.
    for (serial, ip) in [(20, false), (21, true)] {
        let address = server_presenting(
            &pki,
            Spec {
                cn: "control plane",
                uris: &[CONTROL_PLANE],
                serial,
                ip,
            },
        )
        .await;
        dial(&pki.client(None), &address, CONTROL_PLANE)
            .await
            .expect("without a CRL the certificate is accepted");
        let crl = pki.crl(&format!("revoked-{serial}.crl"), &[serial]);
        let error = dial(&pki.client(Some(&crl)), &address, CONTROL_PLANE)
            .await
            .expect_err("a revoked server certificate");
        assert!(
            matches!(error, DialError::BadPeerCertificate { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("Revoked"), "{error}");
        // A CRL that revokes someone else changes nothing.
        let other = pki.crl(&format!("other-{serial}.crl"), &[999]);
        dial(&pki.client(Some(&other)), &address, CONTROL_PLANE)
            .await
            .expect("not revoked");
    }
}

#[tokio::test]
async fn a_revoked_agent_is_not_dialed() {
    // The control plane's dial to an agent: same rule, the agent's identity expected.
    let pki = Pki::new();
    let address = server_presenting(
        &pki,
        Spec {
            cn: "agent checkout",
            uris: &[AGENT],
            serial: 30,
            ip: true,
        },
    )
    .await;
    let crl = pki.crl("agent.crl", &[30]);
    let control_plane = {
        let mut paths = pki.issue(
            "control-plane",
            &Spec {
                cn: "control plane",
                uris: &[CONTROL_PLANE],
                serial: 31,
                ip: false,
            },
        );
        paths.crl = Some(crl);
        ClientTls::load(&paths).expect("control plane TLS")
    };
    let error = dial(&control_plane, &address, AGENT)
        .await
        .expect_err("a revoked agent");
    assert!(error.to_string().contains("Revoked"), "{error}");
    // A lazily dialed channel (how the control plane reaches agents) fails at its first use.
    let channel = control_plane
        .dial_lazy(&address, AGENT, Duration::from_secs(5))
        .expect("lazy channel");
    let mut client = loupe_proto::v1::agent_client::AgentClient::new(channel);
    let status = client
        .describe(loupe_proto::v1::DescribeRequest::default())
        .await
        .expect_err("never reaches the agent");
    let text = format!("{status:?}");
    assert!(text.contains("Revoked"), "{text}");
}
