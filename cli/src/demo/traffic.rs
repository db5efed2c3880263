//! Synthetic traffic: a thread sending varied checkouts to the demo's own HTTP port at a fixed
//! rate, so an engineer trying Loupe sees hits at once — every tier, coupons on some orders,
//! and many totals over 100 € (`order.total_cents > 10000u` matches quickly).
//!
//! It is an ordinary HTTP client over loopback, so captures see exactly what a real request
//! produces. Failures are logged at debug level and retried on a fresh connection; the rate
//! never bursts to catch up.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http;
use super::order::{self, Rng};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

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
        let counter = Arc::clone(&ok);
        let thread = std::thread::Builder::new()
            .name("checkout-traffic".into())
            .spawn(move || run(target, per_second, &stop, &counter))?;
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

fn run(target: SocketAddr, per_second: u32, stop: &AtomicBool, ok: &AtomicU64) {
    let interval = Duration::from_secs(1) / per_second;
    let mut rng = Rng::from_clock();
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            // Short sleeps so a stop is noticed quickly even at low rates.
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        // Falling behind (a slow machine) skips ahead rather than bursting.
        next = (next + interval).max(now);
        let body = match serde_json::to_vec(&order::generated(&mut rng)) {
            Ok(body) => body,
            Err(_) => continue,
        };
        match send(&mut connection, target, &body) {
            Ok(200) => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => tracing::debug!(status, "checkout traffic: unexpected status"),
            Err(error) => {
                tracing::debug!(%error, "checkout traffic: request failed");
            }
        }
    }
}

fn send(
    connection: &mut Option<BufReader<TcpStream>>,
    target: SocketAddr,
    body: &[u8],
) -> Result<u16, http::HttpError> {
    // Taken out for the request and put back only after a complete exchange, so a failure
    // anywhere leaves no half-used connection behind.
    let mut reader = match connection.take() {
        Some(reader) => reader,
        None => {
            let stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            stream.set_nodelay(true)?;
            BufReader::new(stream)
        }
    };
    let head = format!(
        "POST /checkout HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = reader.get_ref();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let response = http::read_response(&mut reader)?;
    let closing = response
        .headers
        .iter()
        .any(|(name, value)| name == "connection" && value.eq_ignore_ascii_case("close"));
    if !closing {
        *connection = Some(reader);
    }
    Ok(response.status)
}
