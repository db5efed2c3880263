//! Asks the control plane's plain-HTTP probes (`/healthz`, `/readyz`) as a supervisor would.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The status code of `GET path`.
pub fn get(address: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: probe\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// Asks until `path` answers `status` (a log reconnects on its own schedule).
pub fn eventually(address: SocketAddr, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = get(address, path);
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path}: {got}, expected {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
