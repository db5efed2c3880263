//! Loupe's control plane. For now, its tamper-evident audit log ([`audit`]), its policy
//! engine ([`policy`]), the session lifecycle ([`session`]), token minting ([`tokens`]) and
//! the agent registry ([`registry`]).

pub mod audit;
pub mod daemon;
pub mod policy;
pub mod registry;
pub mod session;
pub mod tokens;
