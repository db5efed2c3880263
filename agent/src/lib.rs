//! Loupe's in-process agent: named snapshot points that cost nothing while no one is looking
//! and yield bounded, redacted snapshots while a capture is armed.
//!
//! ```
//! #[derive(serde::Serialize)]
//! struct Cart { total_cents: u64 }
//!
//! fn apply_discount(cart: &Cart, coupon: Option<&str>) {
//!     loupe_agent::snapshot!("checkout.apply_discount", cart, ?coupon);
//! }
//! # apply_discount(&Cart { total_cents: 1 }, None);
//! ```
//!
//! - [`snapshot!`] plants a point, [`declare_point`] adds one at start-up; [`point`] lists them
//!   all.
//! - [`Engine`] arms captures ([`CaptureSpec`]) and hands back a [`CaptureStream`].
//! - [`redaction`] decides what never leaves the process; [`Secret`] marks what never does.
//! - [`condition`] compiles CEL conditions; [`CorrelationLayer`] gives them `ctx`.
//! - `Agent` (feature `endpoint`, on by default) serves the points over mTLS gRPC to the
//!   control plane, enforcing session tokens. A library that only plants points turns default
//!   features off and carries no TLS or gRPC transport; the service binary turns it on.
//!
//! The host comes first: a disarmed point is one relaxed load; an armed one never blocks,
//! never panics into the caller, bounds everything it keeps, and counts everything it drops.

// Module docs are written for the engineer who maintains the module and link the private items
// they explain; `cargo doc --document-private-items` renders those links.
#![allow(rustdoc::private_intra_doc_links)]

pub mod capture;
pub mod condition;
pub mod context;
#[cfg(feature = "endpoint")]
pub mod endpoint;
pub mod limits;
mod macros;
pub mod point;
pub mod redaction;
pub mod secret;
mod text;
pub mod uncaptured;
pub mod value;

pub use capture::budget::RateLimit;
pub use capture::callsite::Callsite;
pub use capture::engine::{ArmError, Engine};
pub use capture::serialize::field::{FieldValue, SerializeField};
pub use capture::spec::{CaptureSpec, EngineConfig};
pub use capture::stream::CaptureStream;
pub use capture::{CaptureCounters, CaptureStatus, EndReason};
pub use context::{CorrelationLayer, ThreadInfo};
#[cfg(feature = "endpoint")]
pub use endpoint::registration::RegistrationStatus;
#[cfg(feature = "endpoint")]
pub use endpoint::{Agent, AgentBuilder, AgentHandle, AgentMode, StartError};
pub use limits::{CaptureLimits, LimitRequest};
pub use point::{
    DeclareError, DeclaredPoint, Point, PointRegistry, SiteKind, declare_point,
    declare_point_of_kind, serve_declared_points_only,
};
pub use redaction::RedactionAdditions;
pub use secret::Secret;
pub use uncaptured::{Uncaptured, UncapturedReason};

/// Arms a capture on the process-wide engine. Shorthand for `PointRegistry::global().arm(spec)`.
pub fn arm(spec: CaptureSpec) -> Result<CaptureStream, ArmError> {
    PointRegistry::global().arm(spec)
}

/// What `snapshot!` expands to; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::capture::callsite::Callsite;
    pub use crate::capture::serialize::field::FieldValue;
    pub use crate::point::{CALLSITES, assert_point_name};
    pub use linkme;
}
