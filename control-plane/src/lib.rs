//! Loupe's control plane. For now, its tamper-evident audit log ([`audit`]), its policy
//! engine ([`policy`]), the session lifecycle ([`session`]) and token minting ([`tokens`]).

pub mod audit;
pub mod policy;
pub mod session;
pub mod tokens;
