//! A throwaway PostgreSQL cluster for the tests of one test binary: its own data directory
//! and a free loopback port, started on first use, shared by the binary's tests (each takes a
//! database of its own), stopped and removed when the binary exits.
//!
//! - The binaries come from `PATH` or Debian's `/usr/lib/postgresql/<version>/bin`.
//! - `initdb` refuses to run as root, so as root the cluster runs as `nobody` (through
//!   `setpriv`); its directory is made theirs.
//! - The cluster accepts TCP on 127.0.0.1 only, with password (SCRAM) authentication; no Unix
//!   socket.
//! - Removal does not depend on the test binary ending well: a small reaper process waits on
//!   a pipe the binary holds, and when the binary exits — normally, by a panic or killed — the
//!   pipe closes and the reaper stops the cluster and deletes its directory.
//! - With [`tls_database`], the cluster also accepts TLS (`ssl=on`) with the certificate the
//!   test gives it.
//! - PostgreSQL missing: with `LOUPE_REQUIRE_PRIVILEGED_TESTS=1` (CI) the test fails; otherwise
//!   it is skipped with the reason printed.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    password: String,
    /// Server options beyond address and port (TLS, when started with it).
    options: String,
    /// Root runs PostgreSQL as this user.
    run_as: Option<&'static str>,
    /// Closing it (when the binary exits) makes the reaper stop and remove the cluster.
    _reaper: Mutex<(Child, ChildStdin)>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The server's certificate chain and key (PEM), for a cluster that speaks TLS.
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The URL of a new, empty database on this binary's cluster; `None` (after printing why)
/// when PostgreSQL is not installed and the privileged tests are not required.
pub fn database(test: &str) -> Option<String> {
    database_on(test, || Cluster::start(None))
}

/// As [`database`], on a cluster that also accepts TLS (`ssl=on`) with `tls` — the first call
/// in a binary decides how its cluster starts.
pub fn tls_database(test: &str, tls: &ServerTls) -> Option<String> {
    database_on(test, || Cluster::start(Some(tls)))
}

fn database_on(test: &str, start: impl FnOnce() -> Result<Cluster, String>) -> Option<String> {
    let cluster = match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(reason) => {
            if std::env::var("LOUPE_REQUIRE_PRIVILEGED_TESTS").as_deref() == Ok("1") {
                panic!(
                    "{test}: PostgreSQL is required (LOUPE_REQUIRE_PRIVILEGED_TESTS=1): {reason}"
                );
            }
            eprintln!("SKIPPED {test}: {reason}");
            return None;
        }
    };
    let name = format!(
        "t{}_{}",
        DATABASES.fetch_add(1, Ordering::SeqCst),
        std::process::id()
    );
    let mut admin = postgres::Client::connect(&cluster.url("postgres"), postgres::NoTls)
        .expect("connect to the test cluster");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    Some(cluster.url(&name))
}

/// This binary's cluster (started by [`database`]).
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get() {
        Some(Ok(cluster)) => cluster,
        _ => panic!("the test cluster is not running"),
    }
}

/// Where PostgreSQL's server binaries are, if installed.
fn find_binaries() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    // The newest version first.
    debian.sort();
    debian.reverse();
    in_path
        .chain(debian)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Cluster {
    fn start(tls: Option<&ServerTls>) -> Result<Cluster, String> {
        let bin = find_binaries().ok_or(
            "PostgreSQL is not installed (no initdb/pg_ctl in PATH or /usr/lib/postgresql/*/bin; Debian: apt-get install postgresql)",
        )?;
        let run_as = is_root().then_some("nobody");
        let dir =
            std::env::temp_dir().join(format!("loupe-pg-{}-{}", std::process::id(), free_port()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let reaper = Self::reaper(&bin, &dir, run_as)?;
        let password = format!(
            "pw{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, &password).map_err(|e| e.to_string())?;
        let options = match tls {
            None => String::new(),
            Some(tls) => Self::write_tls(&dir, tls)?,
        };
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:"), &dir.display().to_string()])
                .status()
                .map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("chown of {} to {user} failed", dir.display()));
            }
        }
        let run = |program: &str, args: &[&str]| -> Result<(), String> {
            let mut command = match run_as {
                Some(user) => {
                    let mut c = Command::new("setpriv");
                    c.args(["--reuid", user, "--regid", "nogroup", "--clear-groups"])
                        .arg(bin.join(program));
                    c
                }
                None => Command::new(bin.join(program)),
            };
            let out = command
                .args(args)
                .current_dir(&dir)
                .output()
                .map_err(|e| format!("{program}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let data_arg = data.display().to_string();
        run(
            "initdb",
            &[
                "-D",
                &data_arg,
                "--username=loupe",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        )?;
        // Tests commit durably (fsync on, as in production); a port taken meanwhile is tried
        // again with another.
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let server_options = Self::server_options(port, &options);
            let log = dir.join("server.log").display().to_string();
            match run(
                "pg_ctl",
                &[
                    "-D",
                    &data_arg,
                    "-l",
                    &log,
                    "-o",
                    &server_options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => {
                    return Ok(Cluster {
                        bin,
                        dir,
                        port,
                        password,
                        options,
                        run_as,
                        _reaper: Mutex::new(reaper),
                    });
                }
                Err(e) => {
                    last = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
                }
            }
        }
        Err(last)
    }

    /// The server's options on `port`, with `extra` (TLS) after them.
    fn server_options(port: u16, extra: &str) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c max_connections=200 {extra}"
        )
    }

    /// Writes the server's certificate and key into `dir` (PostgreSQL refuses a key others can
    /// read) and returns the options that turn TLS on with them.
    fn write_tls(dir: &Path, tls: &ServerTls) -> Result<String, String> {
        use std::os::unix::fs::PermissionsExt;
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        std::fs::write(&cert, &tls.cert_pem).map_err(|e| format!("{}: {e}", cert.display()))?;
        std::fs::write(&key, &tls.key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", key.display()))?;
        Ok(format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        ))
    }

    /// A process that, once this binary's end closes its standard input, stops the cluster
    /// and removes `dir`.
    fn reaper(bin: &Path, dir: &Path, run_as: Option<&str>) -> Result<(Child, ChildStdin), String> {
        let pg_ctl = bin.join("pg_ctl").display().to_string();
        let data = dir.join("data").display().to_string();
        let stop = match run_as {
            Some(user) => format!(
                "setpriv --reuid {user} --regid nogroup --clear-groups '{pg_ctl}' -D '{data}' -m immediate stop"
            ),
            None => format!("'{pg_ctl}' -D '{data}' -m immediate stop"),
        };
        let script = format!(
            "read _ ; {stop} >/dev/null 2>&1 ; rm -rf '{}'",
            dir.display()
        );
        // In a process group of its own, so that whatever ends the test binary's group
        // (a timeout killing it) leaves the reaper to clean up.
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the cluster's reaper: {e}"))?;
        let stdin = child.stdin.take().ok_or("the reaper has no stdin")?;
        Ok((child, stdin))
    }

    /// A client program of the cluster's version (`pg_dump`, `pg_restore`, …).
    pub fn tool(&self, name: &str) -> PathBuf {
        // `initdb` may be a link from a directory of its own into the version's directory,
        // which has the client programs too.
        std::fs::canonicalize(self.bin.join("initdb"))
            .ok()
            .and_then(|initdb| Some(initdb.parent()?.join(name)))
            .filter(|tool| tool.is_file())
            .unwrap_or_else(|| self.bin.join(name))
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://loupe:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data").display().to_string();
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", user, "--regid", "nogroup", "--clear-groups"])
                    .arg(self.bin.join("pg_ctl"));
                c
            }
            None => Command::new(self.bin.join("pg_ctl")),
        };
        let status = command
            .args(["-D", &data])
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    /// Stops the server at once (as a crash or an outage would).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        let options = Self::server_options(self.port, &self.options);
        let log = self.dir.join("server.log").display().to_string();
        self.pg_ctl(&["-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
    }
}
