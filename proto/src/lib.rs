//! Loupe's wire contract: the protobuf messages and gRPC services of package `loupe.v1`,
//! documented in the `.proto` files under `proto/loupe/v1/`, which are the source of truth.
//!
//! Why a crate of its own: anything that speaks to Loupe — an agent, the control plane, the
//! CLI, a service owner's own tooling — needs the messages, and nothing else from here. So this
//! crate holds only the messages and the generated code, like `console-api` does for
//! tokio-console: `prost`, and `tonic`'s code-generation support only with a feature — no TLS,
//! no transport, no crypto. The generated gRPC stubs are behind features, so a crate takes only
//! the side it speaks (and with neither, only the messages and `prost`):
//!
//! - `client`: `v1::*_client` (what the CLI and the control plane's agent connections use);
//! - `server`: `v1::*_server` (what the agent and the control plane implement).
//!
//! [`names`] states the syntax of point, service and user names once, for every part, and
//! [`ready`] the line a Loupe process prints once it serves: both are part of the contract.
//!
//! How peers trust each other (mTLS, identity, tokens) is `loupe-trust`; the audit formats are
//! `loupe-audit`.

/// Messages and services of package `loupe.v1`.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
    include!(concat!(env!("OUT_DIR"), "/loupe.v1.rs"));
}

pub mod names;
pub mod ready;
