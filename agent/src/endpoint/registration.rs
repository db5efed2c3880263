//! The agent's side of the control plane's registry: registering this instance, renewing its
//! lease, and — when the agent was given no keys of its own — fetching the token-verification
//! keys the control plane publishes.
//!
//! The control plane only brokers captures to instances whose lease is live, so an agent that
//! stops renewing disappears by itself; this module's job is to keep the lease alive for as
//! long as the [`AgentHandle`](super::AgentHandle) lives, and to say how that is going
//! ([`RegistrationStatus`]) without ever troubling the host: it runs as one task on the agent's
//! own runtime, never panics, and only logs.
//!
//! Each round dials afresh with the agent's own certificate (also its client certificate),
//! re-read from disk, so a certificate rotated on disk is used from the next renewal on; the
//! server must present the configured control-plane identity, or nothing is sent. A failed
//! round is retried with bounded exponential backoff and jitter, so a fleet whose control plane
//! restarts does not come back in lockstep.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use loupe_proto::v1 as pb;
use loupe_proto::v1::control_plane_client::ControlPlaneClient;
use loupe_trust::dial::{ClientTls, DEFAULT_CONNECT_TIMEOUT};
use loupe_trust::tls::TlsPaths;
use loupe_trust::token::{KeySet, unix_now};
use tokio::sync::watch;

use super::service::point_infos;
use super::sessions::EndpointState;

/// First retry delay after a failed round.
const BACKOFF_START: Duration = Duration::from_millis(200);
/// Longest retry delay: an agent finds a restarted control plane within this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long one call may take once connected; a stuck control plane must not stall renewals.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest renewal interval, whatever the control plane says, so a zero cannot spin.
const MIN_RENEW: Duration = Duration::from_secs(1);

/// How the agent stands with the control plane's registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// The control plane accepted a registration whose lease has not run out.
    pub registered: bool,
    /// The latest failure (dial, TLS, refusal, bad key set), cleared by a round that succeeds.
    pub last_error: Option<String>,
    /// When the current lease runs out (Unix seconds); 0 before the first registration.
    pub lease_expires_unix: i64,
    /// Successful registrations after the first.
    pub renewals: u64,
    /// Whether token keys fetched from the control plane are installed (always false when the
    /// agent was given keys of its own).
    pub token_keys_installed: bool,
}

/// What the registration task needs, fixed at `start()`.
#[derive(Debug, Clone)]
pub(crate) struct RegistrationConfig {
    /// `host:port` of the control plane.
    pub address: String,
    /// The identity the control plane's certificate must name.
    pub identity: String,
    /// `host:port` the control plane should dial to reach this agent.
    pub advertise: String,
    /// The agent's own TLS material, also its client certificate.
    pub tls: TlsPaths,
    /// Install the key set from `GetTokenKeys` after each successful registration.
    pub fetch_keys: bool,
}

/// The shared, observable side of registration.
#[derive(Debug, Default)]
pub(crate) struct Registration {
    status: Mutex<RegistrationStatus>,
}

impl Registration {
    fn lock(&self) -> MutexGuard<'_, RegistrationStatus> {
        // Each critical section is a few field writes; a poisoned status is still whole.
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The status now; `registered` turns false by itself when the lease runs out.
    pub fn status(&self) -> RegistrationStatus {
        let mut status = self.lock().clone();
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        status.registered = status.registered && status.lease_expires_unix > now;
        status
    }

    fn failed(&self, error: String) {
        self.lock().last_error = Some(error);
    }
}

/// Why a round did not complete.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("cannot load the agent's TLS material: {0}")]
    Tls(#[from] loupe_trust::tls::TlsError),
    #[error(transparent)]
    Dial(#[from] loupe_trust::dial::DialError),
    #[error("{call} refused: {code:?}: {message}")]
    Refused {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{call} got no answer within {} s", CALL_TIMEOUT.as_secs())]
    Timeout { call: &'static str },
    #[error("the control plane's token keys were rejected: {0}")]
    Keys(#[from] loupe_trust::token::KeyError),
}

/// Registers and renews until `shutdown` turns true.
pub(crate) async fn run(
    config: RegistrationConfig,
    state: Arc<EndpointState>,
    registration: Arc<Registration>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(&state.instance);
    let mut tls: Option<ClientTls> = None;
    // Failed rounds since the last success: a recovery is worth an info line, a routine
    // renewal is not.
    let mut failures: u32 = 0;
    loop {
        let round = tokio::select! {
            round = register_once(&config, &state, &registration, &mut tls) => round,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let wait = match round {
            Ok(renew_after) => {
                if failures > 0 && registration.status().renewals > 0 {
                    tracing::info!(
                        control_plane = %config.address,
                        failures,
                        "loupe agent: registration with the control plane restored"
                    );
                }
                failures = 0;
                backoff.reset();
                renew_after
            }
            Err(error) => {
                let message = error.to_string();
                tracing::warn!(
                    control_plane = %config.address,
                    error = %message,
                    "loupe agent: registration with the control plane failed; retrying"
                );
                registration.failed(message);
                failures = failures.saturating_add(1);
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// One round: dial, register, fetch keys if asked. Returns when to renew.
async fn register_once(
    config: &RegistrationConfig,
    state: &EndpointState,
    registration: &Registration,
    tls: &mut Option<ClientTls>,
) -> Result<Duration, RoundError> {
    // Re-read the certificate each round so a rotation on disk is used; a broken file on disk
    // keeps the last good material, as the server side does.
    let client_tls = match ClientTls::load(&config.tls) {
        Ok(fresh) => {
            *tls = Some(fresh.clone());
            fresh
        }
        Err(error) => match tls.as_ref() {
            Some(last_good) => {
                tracing::warn!(%error, "loupe agent: new TLS material rejected for registration; keeping the old");
                last_good.clone()
            }
            None => return Err(error.into()),
        },
    };
    let channel = client_tls
        .dial(&config.address, &config.identity, DEFAULT_CONNECT_TIMEOUT)
        .await?;
    let mut client = ControlPlaneClient::new(channel);

    let request = pb::RegisterRequest {
        service: state.service.clone(),
        instance: state.instance.clone(),
        address: config.advertise.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        mode: state.mode as i32,
        points: point_infos(),
    };
    let response = call("Register", client.register(request)).await?;
    let now = unix_now();
    let first = {
        let mut status = registration.lock();
        let first = status.lease_expires_unix == 0;
        if !first {
            status.renewals += 1;
        }
        status.registered = true;
        status.lease_expires_unix = response.lease_expires_unix;
        first
    };
    if first {
        tracing::info!(
            control_plane = %config.address,
            advertised = %config.advertise,
            lease_expires_unix = response.lease_expires_unix,
            "loupe agent: registered with the control plane"
        );
    } else {
        tracing::debug!(
            lease_expires_unix = response.lease_expires_unix,
            "loupe agent: lease renewed"
        );
    }
    let renew_after = renew_interval(&response, now);

    if config.fetch_keys {
        let keys = call(
            "GetTokenKeys",
            client.get_token_keys(pb::GetTokenKeysRequest {}),
        )
        .await?;
        let keys = KeySet::from_jwks_json(keys.jwks_json.as_bytes())?;
        state.install_keys(keys, "the control plane");
        registration.lock().token_keys_installed = true;
    }
    registration.lock().last_error = None;
    Ok(renew_after)
}

/// Awaits a unary call with a deadline, turning its failure into a [`RoundError`].
async fn call<T>(
    call: &'static str,
    future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, RoundError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(RoundError::Refused {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }),
        Err(_) => Err(RoundError::Timeout { call }),
    }
}

/// When to renew: what the control plane asks, but never so late that the lease lapses first
/// (a control plane asking for a renewal after its own lease is misconfigured), and never
/// faster than [`MIN_RENEW`].
fn renew_interval(response: &pb::RegisterResponse, now: u64) -> Duration {
    let asked = Duration::from_secs(u64::from(response.renew_after_seconds));
    let remaining = u64::try_from(response.lease_expires_unix)
        .unwrap_or(0)
        .saturating_sub(now);
    let latest = Duration::from_secs(remaining) / 2;
    let renew = if asked.is_zero() || (asked >= Duration::from_secs(remaining) && remaining > 0) {
        latest
    } else {
        asked
    };
    renew.max(MIN_RENEW)
}

/// Exponential backoff from [`BACKOFF_START`] to [`BACKOFF_CAP`], each delay drawn uniformly
/// from its upper half.
struct Backoff {
    next: Duration,
    rng: u64,
}

impl Backoff {
    fn new(seed: &str) -> Backoff {
        // Jitter only needs instances to differ, not unpredictability: the instance id and the
        // start time are enough, and keep the crate free of a random-number dependency.
        let mut rng = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for byte in seed.bytes() {
            rng = (rng ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        Backoff {
            next: BACKOFF_START,
            rng: rng | 1,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_START;
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = ceiling / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_millis(self.rng % (spread + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_inside_bounds() {
        let mut backoff = Backoff::new("checkout-1");
        let mut ceiling = BACKOFF_START;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(BACKOFF_CAP);
        }
        assert_eq!(backoff.next, BACKOFF_CAP);
        backoff.reset();
        assert!(backoff.next_delay() <= BACKOFF_START);
    }

    #[test]
    fn renewal_follows_the_control_plane_within_the_lease() {
        let now = 1_000;
        let response = |renew, expires| pb::RegisterResponse {
            lease_expires_unix: expires,
            renew_after_seconds: renew,
        };
        assert_eq!(
            renew_interval(&response(10, 1_030), now),
            Duration::from_secs(10)
        );
        // Asked to renew after the lease ends: renew halfway instead.
        assert_eq!(
            renew_interval(&response(60, 1_030), now),
            Duration::from_secs(15)
        );
        // Nothing usable said: halfway, and never faster than once a second.
        assert_eq!(
            renew_interval(&response(0, 1_030), now),
            Duration::from_secs(15)
        );
        assert_eq!(renew_interval(&response(0, 0), now), MIN_RENEW);
    }
}
