//! Loupe's control plane. For now, its tamper-evident audit log ([`audit`]).

pub mod audit;
