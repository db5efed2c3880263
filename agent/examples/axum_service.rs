//! An axum service with Loupe: the lines a service owner adds are the ones marked `Loupe:`.
//! Everything else (axum, `tower-http`'s `TraceLayer`, a `tracing` subscriber) such a service
//! already has.
//!
//! The agent needs a certificate naming its service and a control plane to register with. With
//! the quickstart's (`loupe quickstart --keep-running` in another terminal, whose PKI holds an
//! agent certificate for `checkout`):
//!
//! ```text
//! LOUPE_PKI=~/.local/state/loupe/quickstart/pki LOUPE_CONTROL_PLANE=127.0.0.1:PORT \
//!     cargo run -p loupe-agent --example axum_service
//! curl -X POST -H 'x-request-id: r-42' localhost:3000/checkout
//! loupe capture checkout.place_order --session S --where 'ctx.request_id == "r-42"'
//! ```

use std::path::PathBuf;

use axum::Router;
use axum::extract::Request;
use axum::routing::post;
use loupe_agent::{Agent, CorrelationLayer, snapshot};
use tower_http::trace::TraceLayer;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Loupe: record span fields, so a snapshot carries the request's `ctx.request_id`.
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(CorrelationLayer::new()),
    )?;

    // Loupe: the in-process agent. It registers with the control plane over mTLS and serves
    // captures on a thread and runtime of its own; dropping the handle stops it.
    let pki = PathBuf::from(std::env::var("LOUPE_PKI")?);
    let _agent = Agent::builder()
        .service("checkout")
        .tls(
            pki.join("agents/checkout.pem"),
            pki.join("agents/checkout.key"),
            pki.join("ca.pem"),
        )
        .control_plane("spiffe://loupe.dev/control-plane")
        .control_plane_address(std::env::var("LOUPE_CONTROL_PLANE")?)
        .start()?;

    let app = Router::new().route("/checkout", post(place_order)).layer(
        TraceLayer::new_for_http().make_span_with(|request: &Request| {
            // Loupe: a request id among the span's fields (`ctx.request_id`; other fields
            // reach `ctx` when a capture asks for them or its condition reads them).
            let request_id = request
                .headers()
                .get("x-request-id")
                .and_then(|value| value.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", request_id, path = request.uri().path())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn place_order(body: String) -> String {
    let items = body.lines().count() as u64;
    let total_cents = 1_250 * items.max(1);
    // Loupe: a snapshot point. Disarmed it costs a relaxed load; armed, the agent captures
    // these fields (redacted, bounded) when a capture's condition holds.
    snapshot!("checkout.place_order", items, total_cents);
    format!("{{\"total_cents\":{total_cents}}}")
}
