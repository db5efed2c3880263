//! How two Loupe processes come to trust each other: mTLS material with reload ([`tls`]), who
//! a peer is from its certificate ([`identity`], SPIFFE X.509-SVIDs), accepting and dialing
//! connections with the peer's identity checked ([`accept`], [`dial`]), and the session tokens
//! the control plane mints and every agent verifies ([`token`]). Behind the `authority`
//! feature, [`authority`] issues certificates by these rules, for the development PKI and
//! tests.
//!
//! Why a crate of its own: both sides of every connection need exactly these rules — the agent
//! checks the control plane calling it and the tokens it presents, the control plane checks
//! agents and engineers, the CLI dials the control plane — and each rule must be stated once so
//! the sides cannot drift apart. It is kept apart from the wire contract (`loupe-proto`), which
//! any service can depend on for the messages alone, and from the audit formats
//! (`loupe-audit`), which agents never need. Dependencies stay those TLS already brings
//! (`rustls` on `ring`, `tonic`'s channel): tokens are EdDSA only and are checked over `ring`
//! directly rather than through a general JWT library, and certificates are read by the small
//! strict DER reader in `certificate` rather than a general X.509 library.

pub mod accept;
#[cfg(feature = "authority")]
pub mod authority;
mod certificate;
pub mod dial;
pub mod identity;
pub mod tls;
pub mod token;
