//! Loupe's control plane. For now, its tamper-evident audit log ([`audit`]), its policy
//! engine ([`policy`]) and the session lifecycle ([`session`]).

pub mod audit;
pub mod policy;
pub mod session;
