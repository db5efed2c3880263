//! The `loupe.v1.ControlPlane` tonic service: each RPC identifies its caller from the client
//! certificate, and then runs the same three steps before it hands over to the module that
//! owns the call: the caller's refusal budget ([`refusals`]), the bounds of the request's
//! fields ([`admission`]), and — once answered — a refusal charged to the caller. Those steps
//! live in one place ([`ControlPlaneService::serve`]); each RPC only names its call, the bounds
//! of its request and its handler. No decisions live here.

use std::sync::Arc;

use loupe_proto::v1 as pb;
use loupe_proto::v1::control_plane_server::ControlPlane as ControlPlaneRpc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::admission::{self, Call};
use super::caller::Caller;
use super::transitions::{self, Ending};
use super::{ControlPlane, capture, discovery, opening, refusals, review, views};
use crate::bounds::Violation;

/// The service over the shared state.
#[derive(Debug, Clone)]
pub struct ControlPlaneService {
    state: Arc<ControlPlane>,
}

impl ControlPlaneService {
    pub fn new(state: Arc<ControlPlane>) -> ControlPlaneService {
        ControlPlaneService { state }
    }

    /// Serves `call`: identifies the caller, admits them unless they are limited or the request
    /// breaks a bound (`bounds`), hands over to `handler`, and charges a refusal to the caller.
    async fn serve<Req, T>(
        &self,
        request: Request<Req>,
        call: Call,
        bounds: impl FnOnce(&Req) -> Result<(), Violation>,
        handler: impl AsyncFnOnce(&Arc<ControlPlane>, &Caller, Req) -> Result<T, Status>,
    ) -> Answer<T> {
        let caller = Caller::of(&request, &self.state.identity)?;
        let request = request.into_inner();
        let bounds = bounds(&request);
        refusals::admit(&self.state, &caller, call).await?;
        let result = match admission::admit(&self.state, &caller, call, bounds).await {
            Ok(()) => handler(&self.state, &caller, request).await,
            Err(status) => Err(status),
        };
        refusals::charge(&self.state, &caller, &result);
        result.map(Response::new)
    }
}

type Answer<T> = Result<Response<T>, Status>;

/// For calls whose requests have no field to bound.
fn unbounded<Req>(_: &Req) -> Result<(), Violation> {
    Ok(())
}

#[tonic::async_trait]
impl ControlPlaneRpc for ControlPlaneService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Answer<pb::RegisterResponse> {
        let (call, bounds) = (Call::Register, admission::register);
        self.serve(request, call, bounds, discovery::register).await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Answer<pb::ListServicesResponse> {
        let (call, bounds) = (Call::ListServices, admission::list_services);
        self.serve(request, call, bounds, discovery::list_services)
            .await
    }

    async fn list_points(
        &self,
        request: Request<pb::ListPointsRequest>,
    ) -> Answer<pb::ListPointsResponse> {
        let (call, bounds) = (Call::ListPoints, admission::list_points);
        self.serve(request, call, bounds, discovery::list_points)
            .await
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Answer<pb::OpenSessionResponse> {
        let (call, bounds) = (Call::OpenSession, admission::open_session);
        self.serve(request, call, bounds, opening::open).await
    }

    async fn approve_session(
        &self,
        request: Request<pb::ApproveSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let (call, bounds) = (Call::ApproveSession, admission::approve_session);
        self.serve(request, call, bounds, transitions::approve)
            .await
    }

    async fn deny_session(
        &self,
        request: Request<pb::DenySessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let bounds = |r: &pb::DenySessionRequest| admission::end_session(&r.session_id, &r.reason);
        self.serve(
            request,
            Call::DenySession,
            bounds,
            transitions::deny_session,
        )
        .await
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let bounds = |r: &pb::CloseSessionRequest| admission::end_session(&r.session_id, &r.reason);
        let close = async |cp: &Arc<ControlPlane>, caller: &Caller, r: pb::CloseSessionRequest| {
            let (id, reason, request_id) = (&r.session_id, &r.reason, &r.request_id);
            transitions::end(cp, caller, id, reason, request_id, Ending::Close).await
        };
        self.serve(request, Call::CloseSession, bounds, close).await
    }

    async fn revoke_session(
        &self,
        request: Request<pb::AdminRevokeSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let bounds =
            |r: &pb::AdminRevokeSessionRequest| admission::end_session(&r.session_id, &r.reason);
        let revoke =
            async |cp: &Arc<ControlPlane>, caller: &Caller, r: pb::AdminRevokeSessionRequest| {
                let (id, reason, request_id) = (&r.session_id, &r.reason, &r.request_id);
                transitions::end(cp, caller, id, reason, request_id, Ending::Revoke).await
            };
        self.serve(request, Call::RevokeSession, bounds, revoke)
            .await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Answer<pb::ListSessionsResponse> {
        let (call, bounds) = (Call::ListSessions, admission::list_sessions);
        self.serve(request, call, bounds, async |cp, caller, r| {
            views::list(cp, caller, r)
        })
        .await
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let (call, bounds) = (Call::GetSession, admission::get_session);
        self.serve(request, call, bounds, async |cp, caller, r| {
            views::get(cp, caller, r).await
        })
        .await
    }

    type CaptureStream = capture::CaptureStream;

    async fn capture(
        &self,
        request: Request<pb::BrokeredCaptureRequest>,
    ) -> Answer<Self::CaptureStream> {
        let (call, bounds) = (Call::Capture, admission::capture);
        self.serve(request, call, bounds, capture::capture).await
    }

    type QueryAuditStream = ReceiverStream<Result<pb::AuditRecord, Status>>;

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Answer<Self::QueryAuditStream> {
        let (call, bounds) = (Call::QueryAudit, admission::query_audit);
        self.serve(request, call, bounds, review::query).await
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Answer<pb::CheckpointResponse> {
        self.serve(
            request,
            Call::GetCheckpoint,
            unbounded,
            async |cp, caller, _| review::checkpoint(cp, caller).await,
        )
        .await
    }

    async fn prove_inclusion(
        &self,
        request: Request<pb::ProveInclusionRequest>,
    ) -> Answer<pb::ProveInclusionResponse> {
        let call = Call::ProveInclusion;
        self.serve(request, call, unbounded, review::prove_inclusion)
            .await
    }

    async fn prove_consistency(
        &self,
        request: Request<pb::ProveConsistencyRequest>,
    ) -> Answer<pb::ProveConsistencyResponse> {
        let call = Call::ProveConsistency;
        self.serve(request, call, unbounded, review::prove_consistency)
            .await
    }

    async fn get_token_keys(
        &self,
        request: Request<pb::GetTokenKeysRequest>,
    ) -> Answer<pb::GetTokenKeysResponse> {
        self.serve(request, Call::GetTokenKeys, unbounded, async |cp, _, _| {
            Ok(pb::GetTokenKeysResponse {
                jwks_json: cp.minter.key_set().to_jwks_json(),
            })
        })
        .await
    }
}
