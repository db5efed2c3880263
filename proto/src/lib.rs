//! The contract every part of Loupe shares.
//!
//! - [`v1`]: the protobuf messages and gRPC services of package `loupe.v1`, documented in the
//!   `.proto` files under `proto/loupe/v1/`, which are the source of truth.
//! - [`names`]: the syntax of point, service and user names, stated once for every part.
//! - [`identity`]: who a peer is, from its certificate.
//! - [`tls`]: mTLS material with reload, shared by every endpoint.
//! - [`transport`]: accepting and dialing mTLS connections, with the peer's identity checked.
//! - [`token`]: session-token claims, minting and verification, so the control plane mints
//!   exactly what agents check.

/// Messages and services of package `loupe.v1`.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
    include!(concat!(env!("OUT_DIR"), "/loupe.v1.rs"));
}

pub mod audit;
pub mod identity;
pub mod names;
pub mod tls;
pub mod token;
pub mod transport;
