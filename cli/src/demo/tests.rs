//! The demo in-process: its HTTP endpoints over a real socket, what a capture of its points
//! sees (the request id from the span, the card token redacted, the processor key withheld),
//! its traffic, and `run`'s errors. The agent endpoint itself is covered in `loupe-agent`.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use loupe_agent::CaptureSpec;
use loupe_proto::v1::{self as pb, value::Kind};

use super::http::{self, MAX_BODY_BYTES};
use super::server::HttpServer;
use super::*;

const PATIENCE: Duration = Duration::from_secs(20);

fn server() -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    HttpServer::start(listener, dispatch()).expect("server starts")
}

/// Sends `raw` on a new connection and reads one response.
fn exchange(addr: SocketAddr, raw: &[u8]) -> http::Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(raw).expect("send");
    http::read_response(&mut BufReader::new(stream)).expect("a response")
}

fn post(addr: SocketAddr, body: &str, extra: &str) -> http::Response {
    exchange(
        addr,
        format!(
            "POST /checkout HTTP/1.1\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn json(response: &http::Response) -> serde_json::Value {
    serde_json::from_slice(&response.body).expect("a JSON body")
}

const ORDER: &str = r#"{
    "user": {"id": 7, "email": "ada@example.com", "tier": "Gold",
             "address": {"street": "1 Row", "city": "London", "zip": "NW1", "country": "GB"}},
    "items": [{"sku": "SKU-1", "qty": 3, "price_cents": 4000},
              {"sku": "SKU-2", "qty": 1, "price_cents": 500}],
    "card_token": "tok_4242424242424242",
    "coupon": "SPRING10"
}"#;

#[test]
fn answers_health_and_checkout() {
    let server = server();
    let addr = server.local_addr();

    let health = exchange(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(health.status, 200);
    assert_eq!(json(&health)["status"], "ok");

    let receipt = post(addr, ORDER, "X-Request-Id: r-given\r\n");
    assert_eq!(
        receipt.status,
        200,
        "{}",
        String::from_utf8_lossy(&receipt.body)
    );
    let body = json(&receipt);
    assert_eq!(body["total_cents"], 12_500);
    assert_eq!(body["discount_pct"], 20, "gold 10 % + SPRING10");
    assert_eq!(body["charged_cents"], 10_000);
    assert_eq!(body["request_id"], "r-given");

    let generated = post(addr, "", "");
    assert_eq!(generated.status, 200);
    let id = json(&generated)["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(id.starts_with("r-"), "{id}");
    assert!(
        generated
            .headers
            .contains(&("x-request-id".to_owned(), id.clone()))
    );
}

#[test]
fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let server = server();
    let addr = server.local_addr();
    assert_eq!(post(addr, "{not json", "").status, 400);
    let no_items = ORDER.replace(
        r#"[{"sku": "SKU-1", "qty": 3, "price_cents": 4000},
              {"sku": "SKU-2", "qty": 1, "price_cents": 500}]"#,
        "[]",
    );
    assert_eq!(post(addr, &no_items, "").status, 422);
    assert_eq!(exchange(addr, b"NONSENSE\r\n\r\n").status, 400);
    assert_eq!(exchange(addr, b"GET /nowhere HTTP/1.1\r\n\r\n").status, 404);
    let wrong_method = exchange(addr, b"GET /checkout HTTP/1.1\r\n\r\n");
    assert_eq!(wrong_method.status, 405);
    assert!(
        wrong_method
            .headers
            .contains(&("allow".to_owned(), "POST".to_owned()))
    );
    let oversized = format!(
        "POST /checkout HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    assert_eq!(exchange(addr, oversized.as_bytes()).status, 413);
    // A client that connects and says nothing, and one that sends half a request, cost a
    // worker each for a bounded time; the others keep answering meanwhile.
    let _silent = TcpStream::connect(addr).expect("connect");
    let mut half = TcpStream::connect(addr).expect("connect");
    half.write_all(b"POST /checkout HTTP/1.1\r\nContent-Le")
        .expect("send");
    assert_eq!(exchange(addr, b"GET /health HTTP/1.1\r\n\r\n").status, 200);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = server();
    let stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut reader = BufReader::new(stream);
    for _ in 0..3 {
        reader
            .get_ref()
            .write_all(b"GET /health HTTP/1.1\r\n\r\n")
            .expect("send");
        assert_eq!(
            http::read_response(&mut reader).expect("response").status,
            200
        );
    }
}

fn field<'a>(snapshot: &'a pb::Snapshot, name: &str) -> Option<&'a Kind> {
    snapshot
        .fields
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.value.as_ref())
        .and_then(|v| v.kind.as_ref())
}

fn member<'a>(value: Option<&'a Kind>, name: &str) -> Option<&'a Kind> {
    match value? {
        Kind::Struct(s) => s
            .fields
            .iter()
            .find(|f| f.name == name)
            .and_then(|f| f.value.as_ref())
            .and_then(|v| v.kind.as_ref()),
        _ => None,
    }
}

#[test]
fn a_capture_sees_the_request_id_and_no_card_token_or_processor_key() {
    let server = server();
    let addr = server.local_addr();
    let mut discount = loupe_agent::arm(
        CaptureSpec::new("demo-test", "checkout.apply_discount")
            .condition(r#"ctx.request_id == "r-capture-me" && order.total_cents > 10000u"#)
            .max_snapshots(1)
            .duration(PATIENCE),
    )
    .expect("arm apply_discount");
    let mut charge = loupe_agent::arm(
        CaptureSpec::new("demo-test", "payments.charge")
            .condition(r#"ctx.request_id == "r-capture-me""#)
            .max_snapshots(1)
            .duration(PATIENCE),
    )
    .expect("arm payments.charge");
    assert_eq!(post(addr, ORDER, "").status, 200, "another request first");
    assert_eq!(
        post(addr, ORDER, "X-Request-Id: r-capture-me\r\n").status,
        200
    );

    let snapshot = discount
        .blocking_next()
        .expect("a snapshot of apply_discount");
    let trace = snapshot.trace.clone().unwrap_or_default();
    let request_id = trace
        .span_fields
        .iter()
        .find(|f| f.name == "request_id")
        .and_then(|f| f.value.as_ref())
        .and_then(|v| v.kind.as_ref());
    assert!(
        matches!(request_id, Some(Kind::String(s)) if s.value == "r-capture-me"),
        "{request_id:?}"
    );
    let order = field(&snapshot, "order");
    assert!(
        matches!(member(order, "total_cents"), Some(Kind::Uint(12_500))),
        "{order:?}"
    );
    assert!(
        matches!(member(order, "card_token"), Some(Kind::Redacted(_))),
        "card_token is redacted: {order:?}"
    );
    assert!(
        matches!(field(&snapshot, "coupon"), Some(Kind::String(s)) if s.value.contains("SPRING10")),
        "{:?}",
        field(&snapshot, "coupon")
    );

    let snapshot = charge
        .blocking_next()
        .expect("a snapshot of payments.charge");
    assert!(
        matches!(field(&snapshot, "processor_key"), Some(Kind::Redacted(_))),
        "{:?}",
        field(&snapshot, "processor_key")
    );
    assert!(
        !format!("{snapshot:?}").contains("pk_live_demo_never_leaves"),
        "the processor key never leaves"
    );
}

#[test]
fn every_point_is_registered() {
    let names: Vec<&str> = loupe_agent::PointRegistry::global()
        .points()
        .map(|p| p.name())
        .collect();
    for point in [
        "checkout.apply_discount",
        "checkout.reserve_inventory",
        "payments.charge",
        "payments.refund",
    ] {
        assert!(names.contains(&point), "{point} missing from {names:?}");
    }
}

#[test]
fn synthetic_traffic_gets_answers() {
    let server = server();
    let stop = Arc::new(AtomicBool::new(false));
    let mut traffic = Traffic::start(server.local_addr(), 50, Arc::clone(&stop)).expect("start");
    let deadline = Instant::now() + PATIENCE;
    while traffic.ok.load(Ordering::Relaxed) < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join();
    assert!(traffic.ok.load(Ordering::Relaxed) >= 10);
}

fn options(dir: &std::path::Path) -> DemoOptions {
    DemoOptions {
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        agent_listen: "127.0.0.1:0".parse().expect("addr"),
        tls: TlsPaths {
            cert: dir.join("agent.crt"),
            key: dir.join("agent.key"),
            ca: dir.join("ca.pem"),
            crl: None,
        },
        control_plane_address: "127.0.0.1:7443".to_owned(),
        control_plane_identity: "spiffe://loupe.test/control-plane".to_owned(),
        traffic_per_second: 0,
        instance: Some("checkout-test".to_owned()),
    }
}

#[test]
fn run_names_the_missing_certificate() {
    let dir = PathBuf::from("/nonexistent-loupe-demo");
    let error = run(options(&dir), Arc::new(AtomicBool::new(true)))
        .expect_err("no certificate, no demo")
        .to_string();
    assert!(
        error.contains("/nonexistent-loupe-demo/agent.crt"),
        "{error}"
    );
    assert!(error.contains("agent"), "{error}");
}

#[test]
fn run_names_an_http_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let mut options = options(&PathBuf::from("/nonexistent-loupe-demo"));
    options.http_listen = addr;
    let error = run(options, Arc::new(AtomicBool::new(true)))
        .expect_err("the port is taken")
        .to_string();
    assert!(error.contains(&addr.to_string()), "{error}");
}
