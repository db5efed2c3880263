//! The tamper-evident audit log: every decision and state change, written durably before the
//! action it records takes effect, in an RFC 6962 Merkle tree with signed checkpoints.
//!
//! - [`log`]: [`AuditLog`], the running log — group-committed appends, checkpoints, proofs,
//!   export, and the self-check on start.
//! - [`store`]: the narrow storage interface the log writes through.
//! - [`sqlite`]: the embedded SQLite backend.
//! - [`fault`]: a storage wrapper that fails on command, to test the fail-closed paths.
//! - [`tree`]: the in-memory cache of full-subtree hashes that answers proofs.
//! - [`query`]: filters, pages and cursors for reading.
//! - [`ocsf`]: the OCSF rendering of events for SIEMs.
//!
//! The event format, hashing, checkpoints and offline verification live in
//! [`loupe_proto::audit`], so a reviewer's tools need no server.

pub mod fault;
pub mod log;
pub mod ocsf;
pub mod query;
pub mod sqlite;
pub mod store;
pub mod tree;

pub use log::{
    AppendError, AuditLog, AuditLogConfig, InclusionProof, OpenError, QueryStream, ReadError,
    Receipt, SignedCheckpoint,
};
pub use query::{Cursor, Filter, Page};
pub use sqlite::SqliteStore;
pub use store::{AuditReader, AuditStore, ReaderSource, StoreError, StoredEvent};
