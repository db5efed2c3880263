//! The `loupe.v1.ControlPlane` tonic service: each RPC identifies its caller from the client
//! certificate, and then runs the same three steps before it hands over to the module that
//! owns the call: the caller's refusal budget ([`refusals`]), the bounds of the request's
//! fields ([`admission`]), and — once answered — a refusal charged to the caller. No decisions
//! live here.

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

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Caller::of(request, &self.state.identity)
    }

    /// Serves `call` for `caller` with `handler`, unless the caller is limited or the request
    /// breaks a bound (`bounds`); charges a refusal to the caller.
    async fn serve<T>(
        &self,
        caller: &Caller,
        call: Call,
        bounds: Result<(), Violation>,
        handler: impl Future<Output = Result<T, Status>>,
    ) -> Answer<T> {
        refusals::admit(&self.state, caller, call).await?;
        let result = match admission::admit(&self.state, caller, call, bounds).await {
            Ok(()) => handler.await,
            Err(status) => Err(status),
        };
        refusals::charge(&self.state, caller, &result);
        result.map(Response::new)
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ControlPlaneRpc for ControlPlaneService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Answer<pb::RegisterResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::register(&request);
        self.serve(
            &caller,
            Call::Register,
            bounds,
            discovery::register(&self.state, &caller, request),
        )
        .await
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Answer<pb::ListServicesResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::list_services(&request);
        self.serve(
            &caller,
            Call::ListServices,
            bounds,
            discovery::list_services(&self.state, &caller, request),
        )
        .await
    }

    async fn list_points(
        &self,
        request: Request<pb::ListPointsRequest>,
    ) -> Answer<pb::ListPointsResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::list_points(&request);
        self.serve(
            &caller,
            Call::ListPoints,
            bounds,
            discovery::list_points(&self.state, &caller, request),
        )
        .await
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Answer<pb::OpenSessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::open_session(&request);
        self.serve(
            &caller,
            Call::OpenSession,
            bounds,
            opening::open(&self.state, &caller, request),
        )
        .await
    }

    async fn approve_session(
        &self,
        request: Request<pb::ApproveSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::approve_session(&request);
        self.serve(
            &caller,
            Call::ApproveSession,
            bounds,
            transitions::approve(&self.state, &caller, request),
        )
        .await
    }

    async fn deny_session(
        &self,
        request: Request<pb::DenySessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::end_session(&request.session_id, &request.reason);
        self.serve(
            &caller,
            Call::DenySession,
            bounds,
            transitions::deny_session(&self.state, &caller, request),
        )
        .await
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::end_session(&request.session_id, &request.reason);
        self.serve(
            &caller,
            Call::CloseSession,
            bounds,
            transitions::end(
                &self.state,
                &caller,
                &request.session_id,
                &request.reason,
                &request.request_id,
                Ending::Close,
            ),
        )
        .await
    }

    async fn revoke_session(
        &self,
        request: Request<pb::AdminRevokeSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::end_session(&request.session_id, &request.reason);
        self.serve(
            &caller,
            Call::RevokeSession,
            bounds,
            transitions::end(
                &self.state,
                &caller,
                &request.session_id,
                &request.reason,
                &request.request_id,
                Ending::Revoke,
            ),
        )
        .await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Answer<pb::ListSessionsResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::list_sessions(&request);
        self.serve(&caller, Call::ListSessions, bounds, async {
            views::list(&self.state, &caller, request)
        })
        .await
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::get_session(&request);
        self.serve(&caller, Call::GetSession, bounds, async {
            views::get(&self.state, &caller, request)
        })
        .await
    }

    type CaptureStream = ReceiverStream<Result<pb::CaptureEvent, Status>>;

    async fn capture(
        &self,
        request: Request<pb::BrokeredCaptureRequest>,
    ) -> Answer<Self::CaptureStream> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::capture(&request);
        self.serve(
            &caller,
            Call::Capture,
            bounds,
            capture::capture(&self.state, &caller, request),
        )
        .await
    }

    type QueryAuditStream = ReceiverStream<Result<pb::AuditRecord, Status>>;

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Answer<Self::QueryAuditStream> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        let bounds = admission::query_audit(&request);
        self.serve(
            &caller,
            Call::QueryAudit,
            bounds,
            review::query(&self.state, &caller, request),
        )
        .await
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Answer<pb::CheckpointResponse> {
        let caller = self.caller(&request)?;
        self.serve(
            &caller,
            Call::GetCheckpoint,
            Ok(()),
            review::checkpoint(&self.state, &caller),
        )
        .await
    }

    async fn prove_inclusion(
        &self,
        request: Request<pb::ProveInclusionRequest>,
    ) -> Answer<pb::ProveInclusionResponse> {
        let caller = self.caller(&request)?;
        self.serve(
            &caller,
            Call::ProveInclusion,
            Ok(()),
            review::prove_inclusion(&self.state, &caller, request.into_inner()),
        )
        .await
    }

    async fn prove_consistency(
        &self,
        request: Request<pb::ProveConsistencyRequest>,
    ) -> Answer<pb::ProveConsistencyResponse> {
        let caller = self.caller(&request)?;
        self.serve(
            &caller,
            Call::ProveConsistency,
            Ok(()),
            review::prove_consistency(&self.state, &caller, request.into_inner()),
        )
        .await
    }

    async fn get_token_keys(
        &self,
        request: Request<pb::GetTokenKeysRequest>,
    ) -> Answer<pb::GetTokenKeysResponse> {
        let caller = self.caller(&request)?;
        self.serve(&caller, Call::GetTokenKeys, Ok(()), async {
            Ok(pb::GetTokenKeysResponse {
                jwks_json: self.state.minter.key_set().to_jwks_json(),
            })
        })
        .await
    }
}
