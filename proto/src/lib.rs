//! The contract every part of Loupe shares.
//!
//! The protobuf messages live under [`v1`] (package `loupe.v1`); their documentation is in the
//! `.proto` files under `proto/loupe/v1/`, which are the source of truth.

/// Messages of package `loupe.v1`.
pub mod v1 {
    #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
    include!(concat!(env!("OUT_DIR"), "/loupe.v1.rs"));
}

pub mod audit;
