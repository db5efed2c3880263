//! Moving bytes between Loupe peers over mTLS: accepting connections ([`accept`]) and dialing a
//! peer while checking it is the identity meant ([`dial`]). Every endpoint — agent, control
//! plane, CLI — uses these two, so there is one place where a connection's security is decided.

pub mod accept;
pub mod dial;
