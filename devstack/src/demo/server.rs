//! The demo's HTTP server: axum on a tokio runtime of its own, with the middleware a service
//! owner already has — a request id and `tower-http`'s `TraceLayer` — so each request runs in
//! a `request` span carrying `request_id`, `method` and `path`, and Loupe's
//! `CorrelationLayer` hands those to every snapshot taken while the request is served
//! (`ctx.request_id` in conditions).
//!
//! The request id is a small middleware of the demo's own rather than `tower-http`'s
//! `request-id` feature: that one keeps any client-supplied id verbatim, while the demo keeps a
//! client's `X-Request-Id` only when it is short and plain (it travels into snapshots and
//! conditions) and otherwise mints `r-<hex>`; it also spares the `uuid` crate.
//!
//! Bounds: bodies over [`MAX_BODY_BYTES`] get 413 (declared lengths before any byte is read),
//! hyper bounds request heads (431/400 past its limits) and answers malformed requests with
//! 400. An idle or slow connection costs a task, not a worker, so it cannot starve the others.
//! Stopping waits [`STOP_GRACE`] for requests in progress, then drops what is left.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;

use super::checkout::{Checkout, Reply};

/// Largest body accepted (an order is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest client-supplied request id kept; longer (or odd) ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 64;
/// How long requests in progress have to finish once the server is asked to stop.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The request id header, read from requests and echoed on every response.
const X_REQUEST_ID: &str = "x-request-id";

/// The id of the request being served: the client's when usable, else minted here.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// A running HTTP server. [`HttpServer::stop`] (or dropping it) stops it and joins its thread.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves on `listener`, with `dispatch` as the tracing subscriber of every thread of its
    /// runtime (it should hold `loupe_agent::CorrelationLayer`, so captures see
    /// `ctx.request_id`), whatever the process's global subscriber is.
    pub fn start(listener: std::net::TcpListener, dispatch: Dispatch) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = runtime(dispatch.clone())?;
        let listener = {
            let _runtime = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let app = router(Arc::new(Checkout::default()));
        let (stop, stopping) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("checkout-http".into())
            .spawn(move || {
                let _subscriber = tracing::dispatcher::set_default(&dispatch);
                runtime.block_on(serve(listener, app, stopping));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(HttpServer {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in progress finish (up to [`STOP_GRACE`]), and joins.
    pub fn stop(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

thread_local! {
    /// The demo's subscriber on each runtime thread, for the thread's whole life.
    static SUBSCRIBER: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// A multi-threaded runtime whose threads all trace to `dispatch`.
fn runtime(dispatch: Dispatch) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("checkout-worker")
        .enable_all()
        .on_thread_start(move || {
            let guard = tracing::dispatcher::set_default(&dispatch);
            SUBSCRIBER.with(|slot| *slot.borrow_mut() = Some(guard));
        })
        .on_thread_stop(|| {
            SUBSCRIBER.with(|slot| drop(slot.borrow_mut().take()));
        })
        .build()
}

/// Serves until `stopping` turns true, then gives requests in progress [`STOP_GRACE`].
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stopping: watch::Receiver<bool>,
) {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let mut graceful = stopping.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|stop| *stop).await;
    });
    let deadline = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        result = server.into_future() => {
            if let Err(error) = result {
                tracing::warn!(%error, "checkout: the HTTP server stopped");
            }
        }
        () = deadline => tracing::warn!("checkout: requests still open after the grace period"),
    }
}

/// The routes, inside the request id and the `request` span.
pub fn router(checkout: Arc<Checkout>) -> Router {
    let ids = Arc::new(AtomicU64::new(1));
    Router::new()
        .route(
            "/health",
            get(|| async { Checkout::health() })
                .fallback(|| async { method_not_allowed("GET, HEAD", "use GET") }),
        )
        .route(
            "/checkout",
            post(checkout_handler).fallback(|| async { method_not_allowed("POST", "use POST") }),
        )
        .fallback(|| async {
            Reply::error(
                StatusCode::NOT_FOUND,
                "no such endpoint; try POST /checkout or GET /health",
            )
        })
        .with_state(checkout)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(middleware::from_fn_with_state(ids, request_id))
}

fn method_not_allowed(allow: &'static str, message: &str) -> Response {
    let mut response = Reply::error(StatusCode::METHOD_NOT_ALLOWED, message).into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The span every request runs in; its fields reach snapshots as `ctx.<name>`.
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |id| &id.0);
    tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path = request.uri().path(),
    )
}

/// Puts the request's [`RequestId`] on it and echoes it as `X-Request-Id` on the response.
async fn request_id(
    State(ids): State<Arc<AtomicU64>>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| usable_request_id(id))
        .map_or_else(
            || format!("r-{:x}", ids.fetch_add(1, Ordering::Relaxed)),
            str::to_owned,
        );
    let header = HeaderValue::from_str(&id);
    request.extensions_mut().insert(RequestId(id.into()));
    let mut response = next.run(request).await;
    if let Ok(header) = header {
        response.headers_mut().insert(X_REQUEST_ID, header);
    }
    response
}

/// Short and plain: it ends up in snapshots, conditions and logs.
fn usable_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `POST /checkout`: an order as JSON, or no body for a generated one.
async fn checkout_handler(State(checkout): State<Arc<Checkout>>, request: Request) -> Reply {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|id| Arc::clone(&id.0))
        .unwrap_or_else(|| Arc::from(""));
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return body_too_large();
    }
    match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => checkout.checkout(&body, &request_id),
        // Without a declared length, running past the limit is what fails a read.
        Err(_) if declared.is_none() => body_too_large(),
        Err(error) => Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("cannot read the body: {error}"),
        ),
    }
}

fn body_too_large() -> Reply {
    Reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body exceeds the {MAX_BODY_BYTES}-byte limit"),
    )
}
