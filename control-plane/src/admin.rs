//! The operator's one-shot commands of `loupe-control-plane` (also `loupe control-plane …`),
//! run beside or instead of the server, never by it:
//!
//! - `migrate`: copy a SQLite deployment's audit log and sessions into an empty PostgreSQL
//!   database, verified, in one transaction (see [`crate::audit::migrate`]).
//! - `verify`: check the audit log in a database — typically one just restored from a backup
//!   — against the audit key and a checkpoint a reviewer kept (see [`crate::audit::check`]).
//!
//! Each prints one result line on stdout, or one error line on stderr that says what to do.
//! Exit codes: 0 done; 8 the log (or the copy) does not verify — the number `loupe` uses for a
//! failed audit verification; 78 the arguments cannot be used (a missing data directory, an
//! unreadable key, a bad URL); 70 anything else (an unreachable database, a non-empty target).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use loupe_audit::checkpoint::NoteVerifier;
use loupe_audit::verify::Verified;

use crate::audit::check::{CheckError, verify_stored};
use crate::audit::migrate::{MigrateError, Migrated, migrate};
use crate::audit::{AuditStore, Database, SqliteStore, sqlite};
use crate::exit_code::{EXIT_CONFIG, EXIT_FAILURE, EXIT_UNVERIFIED};
use crate::server::startup::audit_signer;

/// The one-shot commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Copy a SQLite deployment's audit log and sessions into an empty PostgreSQL database,
    /// byte for byte, in one transaction, verified before it commits. Stop the control plane
    /// first; the SQLite database is only read.
    Migrate(MigrateArgs),
    /// Verify the audit log in a database (e.g. one restored from a backup) with the audit key
    /// and against a checkpoint you kept.
    Verify(VerifyArgs),
}

/// `migrate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The control plane's data directory (holding audit.sqlite).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The new, empty PostgreSQL database (`postgres://user@host/db`).
    #[arg(long, value_name = "URL", env = "LOUPE_DATABASE", hide_env_values = true)]
    pub database: String,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// `verify`'s arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The PostgreSQL database to verify (`postgres://user@host/db`).
    #[arg(
        long,
        value_name = "URL",
        env = "LOUPE_DATABASE",
        hide_env_values = true,
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    pub database: Option<String>,
    /// Or the data directory of a SQLite deployment (its control plane stopped).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// The key the log is verified with, and the checkpoint it must extend.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    /// The audit log's checkpoint-signing key (as the control plane's `--audit-signing-key`).
    #[arg(long, value_name = "FILE")]
    pub audit_signing_key: PathBuf,
    /// A checkpoint a reviewer kept (signed note): the log must extend it — no rollback, no
    /// other history.
    #[arg(long, value_name = "FILE")]
    pub kept_checkpoint: Option<PathBuf>,
}

/// Runs `command`; returns the process's exit status.
pub fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Migrate(args) => run_migrate(&args),
        Command::Verify(args) => run_verify(&args),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(Failure { code, message }) => {
            eprintln!("loupe-control-plane: {message}");
            ExitCode::from(code)
        }
    }
}

/// A command's failure: its exit status and what to tell the operator.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn config(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_CONFIG,
            message: message.into(),
        }
    }
}

/// The verifier of the key at `args.audit_signing_key`, and the kept checkpoint's note.
fn key_and_kept(args: &KeyArgs) -> Result<(NoteVerifier, Option<String>), Failure> {
    let key = audit_signer(&args.audit_signing_key)
        .map_err(|e| Failure::config(e.to_string()))?
        .verifier();
    let kept = args.kept_checkpoint.as_deref().map(read_note).transpose()?;
    Ok((key, kept))
}

fn read_note(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::config(format!(
            "kept checkpoint {}: {e}: give a checkpoint note a reviewer kept (`loupe audit verify` keeps one in the reviewer's state directory, witness/*.checkpoint)",
            path.display()
        ))
    })
}

fn database(url: &str) -> Result<Database, Failure> {
    Database::parse(url).map_err(|e| Failure::config(format!("--database: {e}")))
}

fn run_migrate(args: &MigrateArgs) -> Result<String, Failure> {
    let (key, kept) = key_and_kept(&args.key)?;
    let target = database(&args.database)?;
    let mut reported = 0;
    let mut progress = |copied: u64, total: u64| {
        // About every tenth of the log, and at the end.
        if copied == total || copied - reported >= (total / 10).max(1) {
            reported = copied;
            eprintln!("loupe-control-plane: copied {copied} of {total} events");
        }
    };
    let migrated = migrate(
        &args.data_dir,
        &target,
        &key,
        kept.as_deref(),
        &mut progress,
    )
    .map_err(migrate_failure)?;
    let Migrated {
        events,
        sessions,
        checkpoints,
        verified,
    } = migrated;
    Ok(format!(
        "migrated {events} events, {sessions} sessions and {checkpoints} archived checkpoints; {}{}; start the control plane with --database",
        describe(&verified),
        kept.map_or("", |_| ", extending the kept checkpoint")
    ))
}

fn migrate_failure(error: MigrateError) -> Failure {
    let code = match &error {
        MigrateError::NoSource(_) | MigrateError::EmptySource(_) => EXIT_CONFIG,
        MigrateError::Copy(_) | MigrateError::SourceCheckpoint { .. } => EXIT_UNVERIFIED,
        _ => EXIT_FAILURE,
    };
    Failure {
        code,
        message: format!("migrate: {error}; nothing was written to the database"),
    }
}

fn run_verify(args: &VerifyArgs) -> Result<String, Failure> {
    let (key, kept) = key_and_kept(&args.key)?;
    let readers = match (&args.database, &args.data_dir) {
        (Some(url), _) => database(url)?.readers(),
        (None, Some(dir)) if sqlite::exists_in(dir) => SqliteStore::open(dir)
            .map_err(|e| Failure::config(e.to_string()))?
            .readers(),
        (None, Some(dir)) => {
            return Err(Failure::config(format!(
                "no audit log in {}: give --data-dir the control plane's data directory",
                dir.display()
            )));
        }
        (None, None) => return Err(Failure::config("give --database or --data-dir")),
    };
    let unavailable = |e: crate::audit::StoreError| Failure {
        code: EXIT_FAILURE,
        message: format!("verify: {e}"),
    };
    let mut reader = readers.open_snapshot().map_err(unavailable)?;
    match verify_stored(reader.as_mut(), &key, kept.as_deref()) {
        Ok(verified) => Ok(format!(
            "{}{}",
            describe(&verified),
            kept.map_or("", |_| ", extending the kept checkpoint")
        )),
        Err(CheckError::Store(e)) => Err(unavailable(e)),
        Err(CheckError::Verify(e)) => Err(Failure {
            code: EXIT_UNVERIFIED,
            message: format!(
                "verify: {e}: do not serve from this database; restore another backup, or keep it for investigation"
            ),
        }),
    }
}

fn describe(verified: &Verified) -> String {
    format!("{verified} (log {})", verified.origin)
}
