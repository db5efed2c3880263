//! Just enough HTTP/1.1 for the demo service and its traffic generator: reading one request or
//! response from a stream with every size bounded, and writing one back.
//!
//! The demo is something people point tools at by hand, so a malformed or hostile request must
//! get a 4xx and never a panic or an unbounded allocation: the request line and headers are
//! capped together at [`MAX_HEAD_BYTES`], bodies at [`MAX_BODY_BYTES`] and must come with a
//! `Content-Length` (no chunked encoding — nothing here needs it).

use std::io::{self, BufRead, Read, Write};

/// Request line plus headers.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest body accepted (an order is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the client asked to keep the connection open (HTTP/1.1 default).
    pub keep_alive: bool,
}

impl Request {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request (or response) could not be read. [`HttpError::status`] says what to answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("malformed HTTP message: {0}")]
    Malformed(&'static str),
    #[error("request line and headers exceed {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("body of {0} bytes exceeds the {MAX_BODY_BYTES}-byte limit")]
    BodyTooLarge(u64),
    #[error("transfer encodings are not supported; send a Content-Length")]
    TransferEncoding,
    #[error("the peer closed the connection mid-message")]
    Truncated,
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

impl HttpError {
    /// The status to answer with, or `None` when the connection is beyond answering.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Malformed(_) | HttpError::Truncated => Some(400),
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge(_) => Some(413),
            HttpError::TransferEncoding => Some(501),
            HttpError::Io(_) => None,
        }
    }
}

/// Reads one line into `line` (without the line ending), charging it to `budget`.
/// Returns `false` at a clean end of stream before any byte.
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    budget: &mut usize,
) -> Result<bool, HttpError> {
    line.clear();
    // One byte over the budget tells "too long" apart from "exactly fits".
    let limit = u64::try_from(*budget).unwrap_or(u64::MAX).saturating_add(1);
    let read = reader.take(limit).read_until(b'\n', line)?;
    if read == 0 {
        return Ok(false);
    }
    if read > *budget {
        return Err(HttpError::HeadTooLarge);
    }
    *budget -= read;
    if line.last() != Some(&b'\n') {
        return Err(HttpError::Truncated);
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(true)
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads the header block after the start line.
fn read_headers(
    reader: &mut impl BufRead,
    budget: &mut usize,
) -> Result<Vec<(String, String)>, HttpError> {
    let mut headers = Vec::new();
    let mut line = Vec::new();
    loop {
        if !read_line(reader, &mut line, budget)? {
            return Err(HttpError::Truncated);
        }
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::HeadTooLarge);
        }
        let text =
            std::str::from_utf8(&line).map_err(|_| HttpError::Malformed("header is not UTF-8"))?;
        if text.starts_with([' ', '\t']) {
            return Err(HttpError::Malformed("folded header lines are not accepted"));
        }
        let (name, value) = text
            .split_once(':')
            .ok_or(HttpError::Malformed("header line without `:`"))?;
        if !is_token(name) {
            return Err(HttpError::Malformed("invalid header name"));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(HttpError::Malformed("control character in a header value"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// The body length the headers announce (0 without one); refuses chunked bodies, conflicting
/// lengths and anything over [`MAX_BODY_BYTES`].
fn content_length(headers: &[(String, String)]) -> Result<usize, HttpError> {
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return Err(HttpError::TransferEncoding);
    }
    let mut length: Option<u64> = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::Malformed("Content-Length is not a number"));
        }
        let parsed = value
            .parse::<u64>()
            .map_err(|_| HttpError::BodyTooLarge(u64::MAX))?;
        if length.is_some_and(|known| known != parsed) {
            return Err(HttpError::Malformed("conflicting Content-Length headers"));
        }
        length = Some(parsed);
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY_BYTES as u64 {
        return Err(HttpError::BodyTooLarge(length));
    }
    // Bounded by MAX_BODY_BYTES just above.
    Ok(length as usize)
}

fn read_body(reader: &mut impl BufRead, length: usize) -> Result<Vec<u8>, HttpError> {
    let mut body = vec![0; length];
    reader
        .read_exact(&mut body)
        .map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => HttpError::Truncated,
            _ => HttpError::Io(error),
        })?;
    Ok(body)
}

/// Reads one request. `Ok(None)`: the client closed the connection cleanly between requests.
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, HttpError> {
    let mut budget = MAX_HEAD_BYTES;
    let mut line = Vec::new();
    if !read_line(reader, &mut line, &mut budget)? {
        return Ok(None);
    }
    let text = std::str::from_utf8(&line)
        .map_err(|_| HttpError::Malformed("request line is not UTF-8"))?;
    let mut parts = text.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(
            "request line is not `METHOD /path HTTP/1.1`",
        ));
    };
    if !is_token(method) {
        return Err(HttpError::Malformed("invalid method"));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err(HttpError::Malformed("the target must be a path"));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => {
            return Err(HttpError::Malformed(
                "only HTTP/1.0 and HTTP/1.1 are spoken",
            ));
        }
    };
    let headers = read_headers(reader, &mut budget)?;
    let length = content_length(&headers)?;
    let body = read_body(reader, length)?;
    let connection = headers
        .iter()
        .find(|(n, _)| n == "connection")
        .map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some(value) if value.contains("close") => false,
        Some(value) if value.contains("keep-alive") => true,
        _ => http11,
    };
    let path = target.split(['?', '#']).next().unwrap_or(target).to_owned();
    Ok(Some(Request {
        method: method.to_owned(),
        path,
        headers,
        body,
        keep_alive,
    }))
}

/// A response as the traffic generator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one response (with a `Content-Length`, as [`write_response`] always sends).
pub fn read_response(reader: &mut impl BufRead) -> Result<Response, HttpError> {
    let mut budget = MAX_HEAD_BYTES;
    let mut line = Vec::new();
    if !read_line(reader, &mut line, &mut budget)? {
        return Err(HttpError::Truncated);
    }
    let text =
        std::str::from_utf8(&line).map_err(|_| HttpError::Malformed("status line is not UTF-8"))?;
    let mut parts = text.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(HttpError::Malformed("status line is not `HTTP/1.1 200 OK`"));
    };
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(HttpError::Malformed("status line is not `HTTP/1.1 200 OK`"));
    }
    let status = code
        .parse()
        .map_err(|_| HttpError::Malformed("status code is not a number"))?;
    let headers = read_headers(reader, &mut budget)?;
    let length = content_length(&headers)?;
    let body = read_body(reader, length)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a complete response with a JSON (or plain) body.
pub fn write_response(
    writer: &mut impl Write,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in extra_headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    writer.write_all(body)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<Request>, HttpError> {
        read_request(&mut io::BufReader::new(raw))
    }

    fn status_of(raw: &[u8]) -> Option<u16> {
        match parse(raw) {
            Ok(request) => panic!("accepted {request:?}"),
            Err(error) => error.status(),
        }
    }

    #[test]
    fn parses_a_get_and_a_post_with_a_body() {
        let request = parse(b"GET /health?x=1 HTTP/1.1\r\nHost: demo\r\n\r\n")
            .expect("valid")
            .expect("a request");
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/health");
        assert_eq!(request.header("host"), Some("demo"));
        assert!(request.keep_alive);
        assert!(request.body.is_empty());

        let request = parse(
            b"POST /checkout HTTP/1.0\r\ncontent-length: 7\r\nX-Request-Id: r-1\r\n\r\n{\"a\":1}",
        )
        .expect("valid")
        .expect("a request");
        assert_eq!(request.body, b"{\"a\":1}");
        assert_eq!(request.header("x-request-id"), Some("r-1"));
        assert!(!request.keep_alive, "HTTP/1.0 closes by default");
    }

    #[test]
    fn reads_requests_back_to_back_and_a_clean_close() {
        let raw = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut reader = io::BufReader::new(&raw[..]);
        let a = read_request(&mut reader).expect("a").expect("a");
        let b = read_request(&mut reader).expect("b").expect("b");
        assert_eq!((a.path.as_str(), b.path.as_str()), ("/a", "/b"));
        assert!(!b.keep_alive);
        assert!(read_request(&mut reader).expect("eof").is_none());
    }

    #[test]
    fn malformed_requests_are_400() {
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /x\r\n\r\n",
            b"GET /x HTTP/2.0\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1 extra\r\n\r\n",
            b"G(T /x HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /x HTTP/1.1\r\nbad name: v\r\n\r\n",
            b"GET /x HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
            b"GET /x HTTP/1.1\r\nA: \x01\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            b"GET /x HTTP/1.1\r\nHost: a\r\n",
            b"GET /x HTTP/1.1",
            b"\xff\xfe /x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                status_of(raw),
                Some(400),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn oversized_heads_and_bodies_are_refused_without_reading_them() {
        let long_header = format!(
            "GET /x HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(status_of(long_header.as_bytes()), Some(431));
        let many_headers = format!(
            "GET /x HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(status_of(many_headers.as_bytes()), Some(431));
        let big = format!(
            "POST /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        assert_eq!(status_of(big.as_bytes()), Some(413));
        let huge = "POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(status_of(huge.as_bytes()), Some(413));
        let chunked = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(status_of(chunked.as_bytes()), Some(501));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let alphabet = b"GET POST /:\r\n HTTP/1.1 Content-Length: 0123456789\xff\x00";
        for _ in 0..5_000 {
            let len = (next() % 200) as usize;
            let raw: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = parse(&raw);
            let _ = read_response(&mut io::BufReader::new(&raw[..]));
        }
    }

    #[test]
    fn a_written_response_reads_back() {
        let mut out = Vec::new();
        write_response(&mut out, 200, &[("X-Request-Id", "r-1")], b"{}", true).expect("write");
        let response = read_response(&mut io::BufReader::new(&out[..])).expect("read");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"{}");
        assert!(
            response
                .headers
                .contains(&("x-request-id".to_owned(), "r-1".to_owned()))
        );
    }
}
