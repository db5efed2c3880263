//! Identity end to end: certificates issued by the deployment's own CA that are no SPIFFE
//! X.509-SVID of a user act as nobody at the control plane, and a CLI given a CRL that revokes
//! the control plane's certificate refuses to talk to it (exit 7). Real processes over real
//! mTLS on loopback; the forged certificates are signed with the real CA key, as an insider
//! with a misconfigured or compromised issuance path would have them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use loupe_cli::exit;
use loupe_devstack::pki::PkiLayout;
use loupe_tests::{Deployment, LOUPE_ENV, Running, TRUST_DOMAIN, assert_status, open_request, pb};
use loupe_trust::authority::{Authority, LeafSpec, SerialNumber};
use loupe_trust::dial::ClientTls;
use tonic::Code;

const EXE: &str = env!("CARGO_BIN_EXE_loupe-e2e");

/// The deployment's CA, able to sign.
fn ca(pki: &PkiLayout) -> Authority {
    let key = std::fs::read_to_string(pki.ca_key()).expect("CA key");
    let cert = std::fs::read_to_string(pki.ca_cert()).expect("CA cert");
    Authority::from_pem(&cert, &key).expect("CA")
}

/// A client certificate of the deployment's CA with subject CN `cn` and URI SANs `uris`.
fn forge(pki: &PkiLayout, dir: &Path, stem: &str, cn: &str, uris: &[String]) -> ClientTls {
    let spec = uris
        .iter()
        .fold(LeafSpec::client(cn, None), |spec, uri| spec.with_uri(uri));
    let leaf = ca(pki).issue(&spec).expect("certificate");
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    std::fs::write(&cert_path, leaf.cert_pem).expect("write cert");
    std::fs::write(&key_path, leaf.key_pem).expect("write key");
    ClientTls::load(&loupe_trust::tls::TlsPaths {
        cert: cert_path,
        key: key_path,
        ca: pki.ca_cert(),
        crl: None,
    })
    .expect("forged TLS material")
}

fn user(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/user/{name}")
}

fn approve(id: &str) -> pb::ApproveSessionRequest {
    pb::ApproveSessionRequest {
        session_id: id.into(),
        comment: "ok".into(),
        request_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_that_are_no_user_svid_act_as_nobody() {
    let world = Running::start(EXE, |_| {}).await;
    let pki = &world.deployment.pki;
    let dir = world.deployment.dir.path();
    let mut alice = world.client("alice").await;
    // `payments.charge` needs an approval from security, which carol is in.
    let session = alice
        .open_session(open_request(
            &["checkout.*", "payments.charge"],
            300,
            "identity review",
        ))
        .await
        .expect("opens")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(session.state, pb::SessionState::Pending as i32);

    let forged = [
        // The subject CN spells carol's SPIFFE ID; there is no URI SAN.
        (
            forge(pki, dir, "cn-carol", &user("carol"), &[]),
            "no URI SAN",
        ),
        // Carol's ID first, then another: which one would it be?
        (
            forge(pki, dir, "two", "carol", &[user("carol"), user("erin")]),
            "2 URI SANs",
        ),
        // Carol's path in another trust domain.
        (
            forge(
                pki,
                dir,
                "foreign",
                "carol",
                &["spiffe://evil.test/user/carol".to_owned()],
            ),
            "outside the trust domain",
        ),
    ];
    for (tls, says) in &forged {
        let mut nobody = world
            .deployment
            .client_with(&world.control_plane.address, tls)
            .await;
        assert_status(
            nobody.approve_session(approve(&session.id)).await,
            Code::Unauthenticated,
            says,
        );
        assert_status(
            nobody
                .list_sessions(pb::ListSessionsRequest::default())
                .await,
            Code::Unauthenticated,
            says,
        );
    }

    // The session waited for the real carol, and hers is the only approval.
    let mut carol = world.client("carol").await;
    let approved = carol
        .approve_session(approve(&session.id))
        .await
        .expect("carol approves")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(approved.state, pb::SessionState::Active as i32);
    assert_eq!(approved.approvals.len(), 1);
}

/// A CRL revoking the certificate at `cert`, signed by the deployment's CA.
fn crl_revoking(pki: &PkiLayout, cert: &Path, out: PathBuf) -> PathBuf {
    let der = loupe_trust::tls::load_certificates(cert).expect("certificate")[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("X.509");
    crl_revoking_serial(pki, SerialNumber::from_slice(parsed.raw_serial()), out)
}

fn crl_revoking_serial(pki: &PkiLayout, serial: SerialNumber, out: PathBuf) -> PathBuf {
    let crl = ca(pki).crl(&[serial]).expect("crl");
    std::fs::write(&out, crl).expect("write crl");
    out
}

/// `loupe --profile alice --output json ARGS…` against `config`; exit code and stderr.
fn loupe(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut command = Command::new(EXE);
    for name in LOUPE_ENV {
        command.env_remove(name);
    }
    let output = command
        .env("LOUPE_CONFIG", config)
        .env("NO_COLOR", "1")
        .args(["--profile", "alice", "--output", "json"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the CLI");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_cli_refuses_a_control_plane_whose_certificate_its_crl_revokes() {
    let deployment = Deployment::new(EXE);
    let control_plane = deployment.start_control_plane();
    let config = deployment.write_cli_config(&control_plane.address);
    let (code, stderr) = loupe(&config, &["services"]);
    assert_eq!(code, Some(i32::from(exit::OK)), "{stderr}");

    let crl = crl_revoking(
        &deployment.pki,
        &deployment.pki.control_plane().cert,
        deployment.dir.path().join("revokes-control-plane.crl"),
    );
    let crl_arg = crl.display().to_string();
    let (code, stderr) = loupe(&config, &["--crl", &crl_arg, "services"]);
    assert_eq!(code, Some(i32::from(exit::IDENTITY)), "{stderr}");
    assert!(stderr.contains("Revoked"), "{stderr}");
}

/// An instance of `checkout` whose serving certificate — a genuine agent SVID of the CA — the
/// control plane's CRL revokes; it registers with the real (unrevoked) agent certificate. The
/// control plane must refuse to dial it, so no token ever reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_does_not_dial_an_agent_whose_certificate_is_revoked() {
    let deployment = Deployment::new(EXE);
    let pki = &deployment.pki;
    let dir = deployment.dir.path();

    // The revoked serving certificate.
    let leaf = ca(pki)
        .issue(
            &LeafSpec::server_and_client(
                "agent checkout (revoked)",
                Some(&format!("spiffe://{TRUST_DOMAIN}/agent/checkout")),
            )
            .serial(0x0bad),
        )
        .expect("certificate");
    let paths = loupe_trust::tls::TlsPaths {
        cert: dir.join("revoked-agent.pem"),
        key: dir.join("revoked-agent.key"),
        ca: pki.ca_cert(),
        crl: None,
    };
    std::fs::write(&paths.cert, leaf.cert_pem).expect("write cert");
    std::fs::write(&paths.key, leaf.key_pem).expect("write key");
    let crl = crl_revoking_serial(pki, SerialNumber::from(0x0bad_u64), dir.join("agent.crl"));

    // The instance: a TLS server that counts the handshakes it completes.
    let tls = loupe_trust::tls::ReloadingServerTls::load(paths).expect("server TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config().expect("config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = std::sync::Arc::clone(&handshakes);
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if acceptor.accept(tcp).await.is_ok() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });

    let control_plane = deployment.start_control_plane_with(|c| c.tls.crl = Some(crl.clone()));
    let agent_tls = ClientTls::load(&pki.tls_paths(&pki.agent("checkout"))).expect("agent TLS");
    let mut registrar = deployment
        .client_with(&control_plane.address, &agent_tls)
        .await;
    registrar
        .register(pb::RegisterRequest {
            service: "checkout".into(),
            instance: "revoked-1".into(),
            address: address.clone(),
            version: "1".into(),
            mode: pb::AgentMode::InProcess as i32,
            points: vec![pb::PointInfo {
                name: "checkout.apply_discount".into(),
                ..pb::PointInfo::default()
            }],
        })
        .await
        .expect("registered with the unrevoked certificate");

    let mut alice = deployment.client(&control_plane.address, "alice").await;
    let session = alice
        .open_session(open_request(
            &["checkout.apply_discount"],
            300,
            "revocation",
        ))
        .await
        .expect("opens")
        .into_inner()
        .session
        .expect("session");
    let mut stream = alice
        .capture(pb::BrokeredCaptureRequest {
            session_id: session.id.clone(),
            point: "checkout.apply_discount".into(),
            max_snapshots: 1,
            timeout_seconds: 10,
            ..pb::BrokeredCaptureRequest::default()
        })
        .await
        .map(tonic::Response::into_inner);
    let mut failures = Vec::new();
    if let Ok(stream) = &mut stream {
        while let Ok(Some(event)) = stream.message().await {
            match event.event {
                Some(pb::capture_event::Event::Instance(status))
                    if status.state == pb::InstanceState::Failed as i32 =>
                {
                    failures.push(status.detail);
                }
                Some(pb::capture_event::Event::Snapshot(_)) => panic!("a snapshot arrived"),
                Some(pb::capture_event::Event::End(_)) => break,
                _ => {}
            }
        }
    } else if let Err(status) = &stream {
        failures.push(status.message().to_owned());
    }
    assert!(
        failures.iter().any(|f| f.contains("Revoked")),
        "the dial fails on the revocation: {failures:?}"
    );
    assert_eq!(
        handshakes.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the control plane never completed a handshake with the revoked agent"
    );
    server.abort();
}
