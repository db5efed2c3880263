//! Loupe on one machine: everything the quickstart and the end-to-end tests need to run the
//! whole product locally, in one place, so that they run it the same way.
//!
//! - [`pki`]: the development PKI (CA, certificates, token and audit keys) in one folder, issued
//!   through `loupe_trust::authority`, the project's one certificate builder.
//! - [`stack`]: the shipped policies, the control plane's configuration for a dev PKI (written
//!   through the control plane's own config type), and how to launch the control plane and the
//!   demo as processes.
//! - [`supervise`]: starting those processes, waiting for their ready lines, stopping them.
//! - [`demo`]: the demo checkout service — axum with `tower-http` tracing and snapshot points —
//!   that the quickstart inspects.
//! - [`native`]: the native demo (a C program that knows nothing about Loupe, built at
//!   start-up) and the sidecar launched beside it with its reviewed points file.
//!
//! Nothing here is needed to run Loupe in production; the `loupe` binary carries it for
//! `loupe quickstart`, `loupe pki` and `loupe demo`, as one binary for everything (as Vault and
//! Consul ship theirs).

// Module docs are written for the engineer who maintains the module and link the private items
// they explain; `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod demo;
pub mod native;
pub mod pki;
pub mod stack;
pub mod supervise;
