//! The demo's HTTP server: an accept thread handing connections to a fixed pool of workers
//! through a bounded queue, each request run inside a `request` span with its `request_id`.
//!
//! Bounded everywhere, because the demo shares a machine with whatever is being tried: a full
//! queue gets an immediate 503 rather than a backlog, an idle keep-alive connection is closed
//! after [`IDLE_TIMEOUT`], and a slow sender gets [`IO_TIMEOUT`] per read or write.

use std::io::{BufReader, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::Dispatch;

use super::checkout::Checkout;
use super::http::{self, write_response};

/// Worker threads serving requests.
pub const WORKERS: usize = 8;
/// Accepted connections waiting for a worker.
const QUEUE: usize = 64;
/// How long a keep-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write may block once a request has started.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Requests served on one connection before it is closed, so no client keeps a worker forever.
const MAX_REQUESTS_PER_CONNECTION: u32 = 10_000;
/// Longest client-supplied request id kept; longer (or odd) ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 64;

/// A running HTTP server. [`HttpServer::stop`] (or dropping it) stops and joins its threads.
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves on `listener` with `dispatch` as each worker's tracing subscriber (it should
    /// hold `loupe_agent::CorrelationLayer`, so captures see `ctx.request_id`).
    pub fn start(listener: TcpListener, dispatch: Dispatch) -> std::io::Result<HttpServer> {
        let local_addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let checkout = Arc::new(Checkout::default());
        let request_ids = Arc::new(AtomicU64::new(1));
        let (queue_tx, queue_rx) = std::sync::mpsc::sync_channel::<TcpStream>(QUEUE);
        let queue_rx = Arc::new(Mutex::new(queue_rx));
        let mut threads = Vec::with_capacity(WORKERS + 1);
        let mut server = HttpServer {
            local_addr,
            stop: Arc::clone(&stop),
            threads: Vec::new(),
        };
        for n in 0..WORKERS {
            let worker = Worker {
                queue: Arc::clone(&queue_rx),
                checkout: Arc::clone(&checkout),
                request_ids: Arc::clone(&request_ids),
                stop: Arc::clone(&stop),
            };
            let dispatch = dispatch.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("checkout-http-{n}"))
                .spawn(move || {
                    let _subscriber = tracing::dispatcher::set_default(&dispatch);
                    worker.run();
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(error) => {
                    server.threads = threads;
                    server.stop();
                    return Err(error);
                }
            }
        }
        let accept_stop = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name("checkout-accept".into())
            .spawn(move || accept_loop(listener, queue_tx, accept_stop));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => {
                server.threads = threads;
                server.stop();
                return Err(error);
            }
        }
        server.threads = threads;
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in progress finish, and joins every thread.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, queue: SyncSender<TcpStream>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(error) => {
                tracing::debug!(%error, "checkout: accept failed");
                // Out of file descriptors and the like: do not spin.
                std::thread::sleep(POLL);
                continue;
            }
        };
        // Accepted sockets may inherit the listener's non-blocking mode on some platforms.
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let _ = stream.set_nodelay(true);
        match queue.try_send(stream) {
            Ok(()) => {}
            Err(TrySendError::Full(stream)) => {
                let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                let body = br#"{"error":"the checkout is busy; try again"}"#;
                let _ = write_response(&mut &stream, 503, &[("Retry-After", "1")], body, false);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

struct Worker {
    queue: Arc<Mutex<Receiver<TcpStream>>>,
    checkout: Arc<Checkout>,
    request_ids: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            let next = {
                let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                queue.recv_timeout(POLL)
            };
            match next {
                Ok(stream) => self.serve(&stream),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Serves requests on one connection until it closes, idles out, or the server stops.
    fn serve(&self, stream: &TcpStream) {
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let mut reader = BufReader::new(stream);
        for _ in 0..MAX_REQUESTS_PER_CONNECTION {
            if reader.buffer().is_empty() && !self.wait_for_request(stream) {
                return;
            }
            let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
            let request = match http::read_request(&mut reader) {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(error) => {
                    if let Some(status) = error.status() {
                        let body = serde_json::json!({ "error": error.to_string() }).to_string();
                        let _ = write_response(&mut &*stream, status, &[], body.as_bytes(), false);
                    }
                    return;
                }
            };
            let keep_alive = request.keep_alive && !self.stop.load(Ordering::Relaxed);
            let request_id = self.request_id(&request);
            let reply = {
                let span = tracing::info_span!(
                    "request",
                    request_id = request_id.as_str(),
                    method = request.method.as_str(),
                    path = request.path.as_str()
                );
                let _entered = span.enter();
                self.checkout.handle(&request, &request_id)
            };
            let mut headers = vec![("X-Request-Id", request_id.as_str())];
            if let Some(allow) = reply.allow {
                headers.push(("Allow", allow));
            }
            let body: &[u8] = if request.method == "HEAD" {
                b""
            } else {
                reply.body.as_bytes()
            };
            if write_response(&mut &*stream, reply.status, &headers, body, keep_alive).is_err()
                || !keep_alive
            {
                return;
            }
        }
    }

    /// Waits for the next request's first byte, looking at the stop flag meanwhile. `false`:
    /// the peer closed, idled out, or the server is stopping.
    fn wait_for_request(&self, stream: &TcpStream) -> bool {
        let idle_since = Instant::now();
        if stream.set_read_timeout(Some(POLL)).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        loop {
            if self.stop.load(Ordering::Relaxed) || idle_since.elapsed() > IDLE_TIMEOUT {
                return false;
            }
            match stream.peek(&mut byte) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// The client's `X-Request-Id` when it is short and plain, else a fresh `r-<hex>`.
    fn request_id(&self, request: &http::Request) -> String {
        match request.header("x-request-id") {
            Some(id)
                if !id.is_empty()
                    && id.len() <= MAX_REQUEST_ID_LEN
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
            {
                id.to_owned()
            }
            _ => format!("r-{:x}", self.request_ids.fetch_add(1, Ordering::Relaxed)),
        }
    }
}
