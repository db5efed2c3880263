//! Loupe's control plane. For now, its tamper-evident audit log ([`audit`]) and its policy
//! engine ([`policy`]).

pub mod audit;
pub mod policy;
