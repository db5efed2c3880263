//! The control plane's side of its connections to agents: one channel per agent address,
//! dialed lazily and reused by every call, each presenting the client certificate that tokens
//! sent on it are bound to; and the revocation fan-out that tells every live instance of a
//! service that a session ended, so tokens already minted stop working before their `exp`.
//!
//! An agent that does not answer within [`ANSWER_TIMEOUT`] is given up on: one stuck agent
//! holds up neither a capture's other instances nor a revocation's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use loupe_proto::v1 as pb;
use loupe_proto::v1::agent_client::AgentClient;
use loupe_trust::dial::ClientTls;
use loupe_trust::identity::agent_identity;
use loupe_trust::tls::{TlsError, TlsPaths};
use loupe_trust::token::Confirmation;
use tokio::task::JoinSet;
use tonic::Status;
use tonic::transport::Channel;

use super::{ControlPlane, now};
use crate::registry::Instance;
use crate::session::Session;

/// How long an agent may take to answer one call (connect, token check, and for arming the
/// condition's compilation).
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Channels to agents, one per address, dialed lazily and reused by every capture — and the
/// client certificate they present, which every token sent on them is bound to.
///
/// The certificate is reloaded when its files change ([`AgentDialer::reload`]): a new
/// generation starts with no channels, and a channel is always handed out with the binding of
/// its own generation, so a token never names a certificate its connection does not present.
pub struct AgentDialer {
    paths: TlsPaths,
    trust_domain: String,
    current: ArcSwap<Generation>,
}

/// One loaded client certificate and the channels that present it.
struct Generation {
    tls: ClientTls,
    binding: Confirmation,
    channels: Mutex<HashMap<(String, String), Channel>>,
}

impl Generation {
    fn new(tls: ClientTls) -> Generation {
        Generation {
            binding: Confirmation::for_certificate(tls.certificate()),
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl AgentDialer {
    pub fn new(tls: ClientTls, paths: TlsPaths, trust_domain: String) -> AgentDialer {
        AgentDialer {
            paths,
            trust_domain,
            current: ArcSwap::from_pointee(Generation::new(tls)),
        }
    }

    /// A channel to the agent of `service` at `address` — its certificate must name
    /// `spiffe://<trust-domain>/agent/<service>` — with the binding for tokens sent on it.
    pub(crate) fn channel(
        &self,
        service: &str,
        address: &str,
    ) -> Result<(Channel, Confirmation), Status> {
        let generation = self.current.load_full();
        let key = (service.to_owned(), address.to_owned());
        let mut channels = generation
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let channel = match channels.get(&key) {
            Some(channel) => channel.clone(),
            None => {
                let channel = generation
                    .tls
                    .dial_lazy(
                        address,
                        &agent_identity(&self.trust_domain, service),
                        ANSWER_TIMEOUT,
                    )
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                channels.insert(key, channel.clone());
                channel
            }
        };
        Ok((channel, generation.binding.clone()))
    }

    /// Hex SHA-256 of the client certificate presented now.
    pub fn certificate_fingerprint(&self) -> String {
        super::caller::fingerprint(self.current.load().tls.certificate())
    }

    /// Rereads the client certificate and key; later captures dial with them.
    pub fn reload(&self) -> Result<(), TlsError> {
        let tls = ClientTls::load(&self.paths)?;
        self.current.store(Arc::new(Generation::new(tls)));
        Ok(())
    }

    /// Drops the channel to `address` (its instance is gone).
    pub fn forget(&self, address: &str) {
        self.current
            .load()
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(_, a), _| a != address);
    }
}

/// Tells every live instance of the session's service to end its captures of the session and
/// refuse its tokens, waiting at most a few seconds for them all.
pub(crate) async fn revoke_on_agents(cp: &Arc<ControlPlane>, session: &Session) {
    let instances: Vec<Instance> = match cp.registry.instances(&session.service, now()).await {
        Ok(instances) => instances,
        Err(error) => {
            // The tokens' `exp` and the agents' own expiry still end the captures.
            tracing::error!(session = %session.id, %error, "cannot read the agents to revoke a session on");
            return;
        }
    };
    let until = now().saturating_add(cp.config.token_lifetime_seconds + 5);
    let mut calls = JoinSet::new();
    for instance in instances {
        let channel = match cp.agents.channel(
            &instance.announcement.service,
            &instance.announcement.address.to_string(),
        ) {
            Ok((channel, _)) => channel,
            Err(status) => {
                tracing::warn!(instance = %instance.announcement.instance, error = %status.message(), "cannot reach an agent to revoke a session");
                continue;
            }
        };
        let session_id = session.id.clone();
        calls.spawn(async move {
            let request = pb::RevokeSessionRequest {
                session_id,
                until_unix: i64::try_from(until).unwrap_or(i64::MAX),
            };
            let result = tokio::time::timeout(
                ANSWER_TIMEOUT,
                AgentClient::new(channel).revoke_session(request),
            )
            .await;
            (instance.announcement.instance, result)
        });
    }
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok((instance, Ok(Ok(response)))) => {
                tracing::info!(session = %session.id, %instance, ended = response.into_inner().captures_ended, "session revoked on agent")
            }
            Ok((instance, Ok(Err(status)))) => {
                tracing::warn!(session = %session.id, %instance, error = %status.message(), "agent refused the revocation")
            }
            Ok((instance, Err(_))) => {
                tracing::warn!(session = %session.id, %instance, "agent did not answer the revocation in time")
            }
            Err(error) => tracing::error!(%error, "revocation task failed"),
        }
    }
}
