//! Loupe's control plane: the one place that decides who may look at what, for how long and
//! why — and records every decision before acting on it.
//!
//! - [`server`]: the `ControlPlane` gRPC service over mTLS and everything it runs.
//! - [`admin`]: the operator's one-shot commands (`migrate`, `verify`).
//! - [`daemon`]: the `loupe-control-plane` process (flags, config, logs, signals).
//! - [`health`]: the liveness and readiness probes for supervisors.
//! - [`config`]: the TOML configuration and its flags.
//! - [`audit`]: the tamper-evident audit log.
//! - [`policy`]: Cedar policies, validated, reloadable, explained.
//! - [`session`]: the session lifecycle rules; [`state`]: their durable storage.
//! - [`tokens`]: minting session tokens and publishing their keys.
//! - [`registry`]: live agent instances and their points — in memory with SQLite, in the shared
//!   database with PostgreSQL.
//! - [`bounds`]: the bound on every client string and list, stated once.

// Module docs are written for the engineer who maintains the module and link the private items
// they explain; `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod audit;
pub mod bounds;
pub mod config;
pub mod daemon;
pub mod exit_code;
pub mod health;
pub mod policy;
pub mod registry;
pub mod server;
pub mod session;
pub mod state;
pub mod tokens;
