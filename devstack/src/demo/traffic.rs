//! Synthetic traffic: a thread sending varied checkouts to the demo's own HTTP port at a fixed
//! rate, so an engineer trying Loupe sees hits at once — every tier, coupons on some orders,
//! and many totals over 100 € (`order.total_cents > 10000u` matches quickly).
//!
//! It is an ordinary HTTP client over loopback ([`Client`]: hyper's HTTP/1.1 connection, kept
//! alive between requests), so captures see exactly what a real request produces. Failures
//! are logged at debug level and retried on a fresh connection; the rate never bursts to catch
//! up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::order::{self, Rng};

/// How long one request (connecting included) may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read; the demo's answers are well under it.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The running generator; stops with the flag it was given.
pub struct Traffic {
    thread: Option<JoinHandle<()>>,
    /// Requests answered 200 so far.
    pub ok: Arc<AtomicU64>,
}

impl Traffic {
    /// Sends `per_second` checkouts a second to `target` until `stop` is set. Zero sends none.
    pub fn start(
        target: SocketAddr,
        per_second: u32,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Traffic> {
        let ok = Arc::new(AtomicU64::new(0));
        if per_second == 0 {
            return Ok(Traffic { thread: None, ok });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let counter = Arc::clone(&ok);
        let thread = std::thread::Builder::new()
            .name("checkout-traffic".into())
            .spawn(move || runtime.block_on(run(target, per_second, &stop, &counter)))?;
        Ok(Traffic {
            thread: Some(thread),
            ok,
        })
    }

    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(target: SocketAddr, per_second: u32, stop: &AtomicBool, ok: &AtomicU64) {
    let interval = Duration::from_secs(1) / per_second;
    let mut rng = Rng::from_clock();
    let mut client = Client::new(target);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            // Short sleeps so a stop is noticed quickly even at low rates.
            tokio::time::sleep((next - now).min(Duration::from_millis(50))).await;
            continue;
        }
        // Falling behind (a slow machine) skips ahead rather than bursting.
        next = (next + interval).max(now);
        let body = match serde_json::to_vec(&order::generated(&mut rng)) {
            Ok(body) => body,
            Err(_) => continue,
        };
        match client.post_checkout(body, None).await {
            Ok(answer) if answer.status == StatusCode::OK => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(answer) => {
                tracing::debug!(status = %answer.status, "checkout traffic: unexpected status");
            }
            Err(error) => tracing::debug!(%error, "checkout traffic: request failed"),
        }
    }
}

/// Why a request to the demo failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] axum::http::Error),
    #[error("cannot read the response body: {0}")]
    Body(#[from] axum::Error),
    #[error("no answer within {} s", IO_TIMEOUT.as_secs())]
    Timeout,
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP/1.1 client of the demo keeping one connection alive; a failed exchange drops the
/// connection, and the next request opens a fresh one.
pub struct Client {
    target: SocketAddr,
    connection: Option<SendRequest<Body>>,
    /// Connections opened so far.
    pub connections: u64,
}

impl Client {
    pub fn new(target: SocketAddr) -> Client {
        Client {
            target,
            connection: None,
            connections: 0,
        }
    }

    /// `POST /checkout` with a JSON `body`, and an `X-Request-Id` when given.
    pub async fn post_checkout(
        &mut self,
        body: Vec<u8>,
        request_id: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let mut request = Request::post("/checkout")
            .header(header::HOST, self.target.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        self.send(request.body(Body::from(body))?).await
    }

    /// `method path` without a body.
    pub async fn request(&mut self, method: Method, path: &str) -> Result<Answer, ClientError> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.target.to_string())
            .body(Body::empty())?;
        self.send(request).await
    }

    /// Sends `request` and reads the whole answer, within [`IO_TIMEOUT`].
    pub async fn send(&mut self, request: Request<Body>) -> Result<Answer, ClientError> {
        tokio::time::timeout(IO_TIMEOUT, self.exchange(request))
            .await
            .unwrap_or(Err(ClientError::Timeout))
    }

    async fn exchange(&mut self, request: Request<Body>) -> Result<Answer, ClientError> {
        // Taken out for the exchange and put back only after a complete one, so a failure
        // anywhere leaves no half-used connection behind.
        let mut connection = match self.connection.take() {
            Some(connection) if !connection.is_closed() => connection,
            _ => self.connect().await?,
        };
        connection.ready().await?;
        let response = connection.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(Body::new(body), MAX_RESPONSE_BYTES).await?;
        let closing = parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closing {
            self.connection = Some(connection);
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    async fn connect(&mut self) -> Result<SendRequest<Body>, ClientError> {
        let stream = tokio::net::TcpStream::connect(self.target).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "checkout traffic: connection ended");
            }
        });
        self.connections += 1;
        Ok(sender)
    }
}
