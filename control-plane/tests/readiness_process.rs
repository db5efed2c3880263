//! The real `loupe-control-plane` process on the throwaway PostgreSQL cluster (see
//! `pg/mod.rs`) with `--health-listen`: its ready line names the probes' address, `/readyz`
//! answers 503 while the cluster is stopped and 200 again once it is back (the process kept
//! running), and SIGTERM ends it cleanly. A binary of its own: it stops its cluster.

mod pg;
mod probe;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use loupe_audit::checkpoint::NoteSigner;
use loupe_trust::authority::{Authority, LeafSpec};
use loupe_trust::token::SigningKey;
use probe::{eventually, get};

const BIN: &str = env!("CARGO_BIN_EXE_loupe-control-plane");
const TRUST_DOMAIN: &str = "loupe.test";

/// Writes the files the control plane reads (certificates, keys) and returns its flags.
fn control_plane_flags(dir: &Path, database: &str) -> Vec<String> {
    let authority = Authority::for_tests("loupe-test-ca").expect("ca");
    let leaf = authority
        .issue(&LeafSpec::server_and_client(
            "control-plane",
            Some(&format!("spiffe://{TRUST_DOMAIN}/control-plane")),
        ))
        .expect("control-plane certificate");
    let file = |name: &str, contents: &str| -> String {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect(name);
        path.display().to_string()
    };
    let (_, pkcs8) = SigningKey::generate("").expect("token key");
    let token_pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8)
    );
    let audit = NoteSigner::generate(&format!("{TRUST_DOMAIN}/audit")).expect("audit key");
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    [
        ("--listen", "127.0.0.1:0".to_owned()),
        ("--health-listen", "127.0.0.1:0".to_owned()),
        ("--trust-domain", TRUST_DOMAIN.to_owned()),
        ("--data-dir", dir.join("data").display().to_string()),
        ("--database", database.to_owned()),
        ("--policy-dir", policies.display().to_string()),
        ("--cert", file("control-plane.pem", &leaf.cert_pem)),
        ("--key", file("control-plane.key", &leaf.key_pem)),
        ("--ca", file("ca.pem", authority.cert_pem())),
        ("--token-signing-key", file("token.pem", &token_pem)),
        (
            "--audit-signing-key",
            file("audit.key", &audit.private_key()),
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// Starts the process and reads the probes' address from its ready line.
fn start(flags: &[String]) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start loupe-control-plane");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let health = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("health="))
        .unwrap_or_else(|| panic!("no health address in {line:?}"))
        .parse()
        .expect("an address");
    (child, health)
}

#[test]
fn the_process_is_ready_only_while_its_database_answers() {
    let Some(url) = pg::database("the_process_is_ready_only_while_its_database_answers") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, health) = start(&control_plane_flags(dir.path(), &url));
    assert_eq!(get(health, "/readyz"), 200);

    pg::cluster().stop();
    eventually(health, "/readyz", 503);
    assert_eq!(get(health, "/healthz"), 200);
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the process exited"
    );

    pg::cluster().restart();
    eventually(health, "/readyz", 200);

    // SIGTERM: a clean stop (the final checkpoint is signed into the database).
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "{exit}");
}
