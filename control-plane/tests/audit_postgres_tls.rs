//! TLS to the database, against a throwaway cluster started with `ssl=on` and a certificate
//! from Loupe's own authority (`loupe_trust::authority`). A binary of its own: its cluster
//! speaks TLS.
//!
//! - With the CA that issued the server's certificate, the log connects over TLS (the server
//!   says so) and works.
//! - With another CA, or a host name the certificate does not hold, it refuses to connect.
//! - A CA file that cannot be read is refused when the URL is parsed, naming the file.

mod fixture;
mod pg;

use std::path::PathBuf;
use std::sync::OnceLock;

use loupe_control_plane::audit::{AuditLog, AuditLogConfig, Database, PostgresStore, StoreError};
use loupe_trust::authority::{Authority, LeafSpec};

/// The database's CA, another CA, and the directory holding their files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: pg::ServerTls,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let authority = Authority::for_tests("loupe-test-database-ca").expect("ca");
        let other = Authority::for_tests("loupe-test-other-ca").expect("other ca");
        // Names `localhost` and `127.0.0.1`.
        let leaf = authority
            .issue(&LeafSpec::server("database", None))
            .expect("server certificate");
        let ca = dir.path().join("db-ca.pem");
        let other_ca = dir.path().join("other-ca.pem");
        std::fs::write(&ca, authority.cert_pem()).expect("ca file");
        std::fs::write(&other_ca, other.cert_pem()).expect("other ca file");
        Pki {
            _dir: dir,
            ca,
            other_ca,
            server: pg::ServerTls {
                cert_pem: leaf.cert_pem,
                key_pem: leaf.key_pem,
            },
        }
    })
}

/// `url` (which dials 127.0.0.1) with `host` as the name TLS checks and `query` added.
fn with_host(url: &str, host: &str, query: &str) -> String {
    let url = url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    format!("{url}?hostaddr=127.0.0.1&{query}")
}

fn verify_full(ca: &std::path::Path) -> String {
    format!("sslmode=verify-full&sslrootcert={}", ca.display())
}

fn open(url: &str) -> Result<PostgresStore, StoreError> {
    PostgresStore::open(Database::parse(url)?)
}

/// Connections to `dbname` that the server reports as TLS.
fn tls_connections(admin_url: &str, dbname: &str) -> i64 {
    let mut client = postgres::Client::connect(admin_url, postgres::NoTls).expect("connect");
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE ssl AND datname = $1",
            &[&dbname],
        )
        .expect("pg_stat_ssl")
        .get(0)
}

#[test]
fn with_the_right_ca_the_log_runs_over_tls() {
    let Some(url) = pg::tls_database("tls_right_ca", &pki().server) else {
        return;
    };
    let dbname = url.rsplit('/').next().expect("dbname").to_owned();
    let tls_url = with_host(&url, "localhost", &verify_full(&pki().ca));
    let store = open(&tls_url).expect("connects over TLS");
    let log = AuditLog::open_with_store(store, fixture::signer(), AuditLogConfig::default())
        .expect("open");
    for i in 0..5 {
        log.append_blocking(fixture::event(i)).expect("append");
    }
    assert!(
        tls_connections(&url, &dbname) >= 1,
        "the server saw no TLS connection"
    );
    log.close().expect("close");

    // `sslrootcert` alone means verify-full, and `require` verifies as fully.
    for query in [
        format!("sslrootcert={}", pki().ca.display()),
        format!("sslmode=require&sslrootcert={}", pki().ca.display()),
    ] {
        open(&with_host(&url, "localhost", &query)).expect(&query);
        let error = open(&with_host(&url, "db.elsewhere", &query))
            .err()
            .expect("a wrong name is refused in every TLS mode");
        assert!(error.to_string().contains("not valid for name"), "{error}");
    }
}

#[test]
fn another_ca_is_refused() {
    let Some(url) = pg::tls_database("tls_other_ca", &pki().server) else {
        return;
    };
    let error = open(&with_host(&url, "localhost", &verify_full(&pki().other_ca)))
        .err()
        .expect("a server certificate from another CA was accepted");
    let text = error.to_string();
    assert!(text.contains("TLS handshake"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(!text.contains("pw"), "the password leaked: {text}");
}

#[test]
fn a_host_name_the_certificate_does_not_hold_is_refused() {
    let Some(url) = pg::tls_database("tls_wrong_name", &pki().server) else {
        return;
    };
    let error = open(&with_host(&url, "db.elsewhere", &verify_full(&pki().ca)))
        .err()
        .expect("a certificate for another name was accepted");
    assert!(error.to_string().contains("not valid for name"), "{error}");
    // An address the certificate names works as the name checked.
    open(&with_host(&url, "127.0.0.1", &verify_full(&pki().ca))).expect("127.0.0.1 is named");
}

#[test]
fn a_ca_file_that_cannot_be_read_is_refused_naming_it() {
    let missing = std::env::temp_dir().join("loupe-no-such-ca.pem");
    let url = format!(
        "postgres://loupe:secret@localhost:5432/loupe?sslmode=verify-full&sslrootcert={}",
        missing.display()
    );
    let error = Database::parse(&url).expect_err("a missing CA file");
    let text = error.to_string();
    assert!(text.contains("loupe-no-such-ca.pem"), "{text}");
    assert!(text.contains("sslrootcert"), "{text}");
    assert!(!text.contains("secret"), "{text}");
}
