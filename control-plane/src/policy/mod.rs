//! Policy: who may do what, on which service or point, under which verified facts — decided by
//! Cedar against the schema, policies and users in a policy directory (`policies/` ships the
//! defaults).
//!
//! - [`names`]: validated user identities, service, point and group names — the only way a
//!   string becomes a Cedar entity id.
//! - [`request`]: typed requests ([`AuthzRequest`]) and the facts they carry; the context
//!   builder that keeps approvals distinct and drops the requester's own.
//! - [`bundle`]: loading and strictly validating a policy directory ([`PolicyBundle`]).
//! - [`decide`]: answering a request with a [`Decision`] that names the policies behind it and
//!   explains a denial; who could approve a pending session.
//! - [`engine`]: [`PolicyEngine`], the set in force, hot-swapped on reload.
//!
//! Identities: a `User` entity id is the caller's verified identity string, exactly as read
//! from their certificate (`spiffe://loupe.dev/user/alice`, or the CN without a SPIFFE SAN), so
//! users from another trust domain never alias; the user's `name` attribute is what messages
//! show. Group memberships come only from `entities.json`.
//!
//! Writing audit events (`policy.loaded`, `policy.rejected`, decisions) is the caller's job: a
//! [`Decision`] carries the policy ids and [`PolicyBundle::version`], a failed reload its
//! [`PolicyError`].

pub mod bundle;
pub mod decide;
pub mod engine;
pub mod names;
pub mod request;

pub use bundle::{KnownUser, PolicyBundle, PolicyError, PolicyProblem};
pub use decide::{Approver, Decision};
pub use engine::{PolicyEngine, PreparedReload, ReloadOutcome};
pub use names::{NameError, PointName, ServiceName, UserId};
pub use request::{
    Action, ApprovalFacts, AuthzRequest, ContextError, RequestContext, Resource,
    SessionControlFacts, SessionFacts,
};
