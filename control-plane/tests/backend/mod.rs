//! Where a test's audit log lives — a temporary SQLite directory, or a database of its own on
//! the test binary's PostgreSQL cluster (see `pg/mod.rs`) — so that the tests that hold for
//! any store run on both: [`on_both_backends!`] makes each named test body a test per backend.

#![allow(dead_code)]

use std::path::Path;

use loupe_control_plane::audit::{AuditLog, AuditLogConfig, Database, PostgresStore};

use crate::{fixture, pg};

/// A log's storage, kept for as long as the test runs (and reopened as often as it likes).
pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres {
        url: String,
        /// For the files a test writes beside the log (exports).
        scratch: tempfile::TempDir,
    },
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    /// A new database for `test`; `None` when PostgreSQL is missing and not required.
    pub fn postgres(test: &str) -> Option<Backend> {
        Some(Backend::Postgres {
            url: pg::database(test)?,
            scratch: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// Opens (or reopens, re-verifying) the log with the default configuration.
    pub fn open(&self) -> AuditLog {
        self.open_with(AuditLogConfig::default())
    }

    pub fn open_with(&self, config: AuditLogConfig) -> AuditLog {
        match self {
            Backend::Sqlite(dir) => {
                AuditLog::open(dir.path(), fixture::signer(), config).expect("open audit log")
            }
            Backend::Postgres { url, .. } => {
                let store = PostgresStore::open(Database::parse(url).expect("url"))
                    .expect("open the PostgreSQL store");
                AuditLog::open_with_store(store, fixture::signer(), config).expect("open audit log")
            }
        }
    }

    /// The PostgreSQL database's URL, for a test that reaches into the database as someone
    /// with write access to it could; `None` on SQLite.
    pub fn postgres_url(&self) -> Option<&str> {
        match self {
            Backend::Sqlite(_) => None,
            Backend::Postgres { url, .. } => Some(url),
        }
    }

    /// A private directory for files the test writes.
    pub fn scratch(&self) -> &Path {
        match self {
            Backend::Sqlite(dir) => dir.path(),
            Backend::Postgres { scratch, .. } => scratch.path(),
        }
    }
}

/// Makes each named `fn(&Backend)` a test on SQLite (`sqlite::name`) and on PostgreSQL
/// (`postgres::name`).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&$crate::backend::Backend::sqlite());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(backend) = $crate::backend::Backend::postgres(stringify!($name)) {
                        super::$name(&backend);
                    }
                }
            )*
        }
    };
}
