//! The `loupe.v1.ControlPlane` tonic service: each RPC identifies its caller from the client
//! certificate and hands over to the module that owns the call. No decisions live here.

use std::sync::Arc;

use loupe_proto::v1 as pb;
use loupe_proto::v1::control_plane_server::ControlPlane as ControlPlaneRpc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::caller::Caller;
use super::{ControlPlane, broker, discovery, review, sessions};

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
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ControlPlaneRpc for ControlPlaneService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Answer<pb::RegisterResponse> {
        let caller = self.caller(&request)?;
        discovery::register(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Answer<pb::ListServicesResponse> {
        let caller = self.caller(&request)?;
        discovery::list_services(&self.state, &caller)
            .await
            .map(Response::new)
    }

    async fn list_points(
        &self,
        request: Request<pb::ListPointsRequest>,
    ) -> Answer<pb::ListPointsResponse> {
        let caller = self.caller(&request)?;
        discovery::list_points(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Answer<pb::OpenSessionResponse> {
        let caller = self.caller(&request)?;
        sessions::open(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn approve_session(
        &self,
        request: Request<pb::ApproveSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        sessions::approve(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn deny_session(
        &self,
        request: Request<pb::DenySessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        sessions::deny_session(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        sessions::end(
            &self.state,
            &caller,
            &request.session_id,
            &request.reason,
            &request.request_id,
            false,
        )
        .await
        .map(Response::new)
    }

    async fn revoke_session(
        &self,
        request: Request<pb::AdminRevokeSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        let request = request.into_inner();
        sessions::end(
            &self.state,
            &caller,
            &request.session_id,
            &request.reason,
            &request.request_id,
            true,
        )
        .await
        .map(Response::new)
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Answer<pb::ListSessionsResponse> {
        let caller = self.caller(&request)?;
        sessions::list(&self.state, &caller, request.into_inner()).map(Response::new)
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Answer<pb::SessionResponse> {
        let caller = self.caller(&request)?;
        sessions::get(&self.state, &caller, request.into_inner()).map(Response::new)
    }

    type CaptureStream = ReceiverStream<Result<pb::CaptureEvent, Status>>;

    async fn capture(
        &self,
        request: Request<pb::BrokeredCaptureRequest>,
    ) -> Answer<Self::CaptureStream> {
        let caller = self.caller(&request)?;
        broker::capture(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    type QueryAuditStream = ReceiverStream<Result<pb::AuditRecord, Status>>;

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Answer<Self::QueryAuditStream> {
        let caller = self.caller(&request)?;
        review::query(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Answer<pb::CheckpointResponse> {
        let caller = self.caller(&request)?;
        review::checkpoint(&self.state, &caller)
            .await
            .map(Response::new)
    }

    async fn prove_inclusion(
        &self,
        request: Request<pb::ProveInclusionRequest>,
    ) -> Answer<pb::ProveInclusionResponse> {
        let caller = self.caller(&request)?;
        review::prove_inclusion(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn prove_consistency(
        &self,
        request: Request<pb::ProveConsistencyRequest>,
    ) -> Answer<pb::ProveConsistencyResponse> {
        let caller = self.caller(&request)?;
        review::prove_consistency(&self.state, &caller, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_token_keys(
        &self,
        request: Request<pb::GetTokenKeysRequest>,
    ) -> Answer<pb::GetTokenKeysResponse> {
        self.caller(&request)?;
        Ok(Response::new(pb::GetTokenKeysResponse {
            jwks_json: self.state.minter.key_set().to_jwks_json(),
        }))
    }
}
