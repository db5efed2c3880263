//! The demo in-process: its HTTP endpoints over a real socket, what a capture of its points
//! sees (the request id from the span, the card token redacted, the processor key withheld),
//! its traffic, and `run`'s errors. The agent endpoint itself is covered in `loupe-agent`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use loupe_agent::CaptureSpec;
use loupe_proto::v1::{self as pb, value::Kind};

use super::server::{HttpServer, MAX_BODY_BYTES};
use super::traffic::{Answer, Client};
use super::*;

const PATIENCE: Duration = Duration::from_secs(20);

fn server() -> HttpServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    HttpServer::start(listener, dispatch(true)).expect("server starts")
}

/// Runs the client's requests to completion on a runtime of the test's own.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

fn post(addr: SocketAddr, body: &str, request_id: Option<&str>) -> Answer {
    block_on(Client::new(addr).post_checkout(body.as_bytes().to_vec(), request_id))
        .expect("an answer")
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    block_on(Client::new(addr).request(Method::GET, path)).expect("an answer")
}

/// Sends `raw` on a new connection and reads until the server closes it.
fn exchange_raw(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(raw).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_slice(&answer.body).expect("a JSON body")
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

    let health = get(addr, "/health");
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(json(&health)["status"], "ok");
    let head = block_on(Client::new(addr).request(Method::HEAD, "/health")).expect("an answer");
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());

    let receipt = post(addr, ORDER, Some("r-given"));
    assert_eq!(
        receipt.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&receipt.body)
    );
    let body = json(&receipt);
    assert_eq!(body["total_cents"], 12_500);
    assert_eq!(body["discount_pct"], 20, "gold 10 % + SPRING10");
    assert_eq!(body["charged_cents"], 10_000);
    assert_eq!(body["request_id"], "r-given");
    assert_eq!(receipt.headers["x-request-id"], "r-given");

    let generated = post(addr, "", None);
    assert_eq!(generated.status, StatusCode::OK);
    let id = json(&generated)["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(id.starts_with("r-"), "{id}");
    assert_eq!(generated.headers["x-request-id"], id.as_str());

    let odd = post(addr, "", Some("r-<script>"));
    let replaced = json(&odd)["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        replaced.starts_with("r-") && replaced != "r-<script>",
        "an odd client id is replaced: {replaced}"
    );
}

#[test]
fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let server = server();
    let addr = server.local_addr();
    assert_eq!(
        post(addr, "{not json", None).status,
        StatusCode::BAD_REQUEST
    );
    let no_items = ORDER.replace(
        r#"[{"sku": "SKU-1", "qty": 3, "price_cents": 4000},
              {"sku": "SKU-2", "qty": 1, "price_cents": 500}]"#,
        "[]",
    );
    assert_eq!(
        post(addr, &no_items, None).status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let nonsense = exchange_raw(addr, b"NONSENSE\r\n\r\n");
    assert!(nonsense.starts_with("HTTP/1.1 400"), "{nonsense}");
    assert_eq!(get(addr, "/nowhere").status, StatusCode::NOT_FOUND);
    let wrong_method = get(addr, "/checkout");
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.headers["allow"], "POST");
    let oversized = format!(
        "POST /checkout HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    let oversized = exchange_raw(addr, oversized.as_bytes());
    assert!(oversized.starts_with("HTTP/1.1 413"), "{oversized}");
    let chunked = format!(
        "POST /checkout HTTP/1.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        MAX_BODY_BYTES + 1,
        " ".repeat(MAX_BODY_BYTES + 1)
    );
    let chunked = exchange_raw(addr, chunked.as_bytes());
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    // A client that connects and says nothing, and one that sends half a request, hold a
    // connection each; the others keep answering meanwhile.
    let _silent = TcpStream::connect(addr).expect("connect");
    let mut half = TcpStream::connect(addr).expect("connect");
    half.write_all(b"POST /checkout HTTP/1.1\r\nContent-Le")
        .expect("send");
    assert_eq!(get(addr, "/health").status, StatusCode::OK);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = server();
    let mut client = Client::new(server.local_addr());
    block_on(async {
        for _ in 0..3 {
            let answer = client
                .request(Method::GET, "/health")
                .await
                .expect("an answer");
            assert_eq!(answer.status, StatusCode::OK);
        }
    });
    assert_eq!(client.connections, 1);
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
    assert_eq!(
        post(addr, ORDER, None).status,
        StatusCode::OK,
        "another request first"
    );
    assert_eq!(
        post(addr, ORDER, Some("r-capture-me")).status,
        StatusCode::OK
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
        without_agent: false,
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
