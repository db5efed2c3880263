//! A hit finds its span context in the correlation layer's own records once the layer has seen
//! the thread's span stack whole, and asks the registry before then. Both must give the same
//! answer across the moment a capture is armed: a span entered before arming (which the layer
//! did not follow) and one entered after, a task span entered on another thread than the
//! request that opened it. One test in its own process, because "nothing armed" is
//! process-wide.

mod support;

use loupe_agent::{CaptureSpec, RateLimit, snapshot};
use loupe_proto::v1 as pb;
use support::*;
use tracing_subscriber::layer::SubscriberExt;

fn charge(amount: u64) {
    snapshot!("across.charge", amount);
}

fn request_id(snapshot: &pb::Snapshot) -> Option<String> {
    let trace = snapshot.trace.as_ref()?;
    let field = trace.span_fields.iter().find(|f| f.name == "request_id")?;
    Some(string(kind(field.value.as_ref())).value.clone())
}

fn span_id(snapshot: &pb::Snapshot) -> String {
    snapshot
        .trace
        .as_ref()
        .map(|trace| trace.span_id.clone())
        .unwrap_or_default()
}

fn hex(span: &tracing::Span) -> String {
    format!("{:016x}", span.id().expect("an enabled span").into_u64())
}

#[test]
fn the_span_context_is_the_same_before_and_after_the_layer_knows_the_stack() {
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry().with(loupe_agent::CorrelationLayer::new()),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        // Entered while nothing is armed: the layer neither records it nor follows it.
        let worker = tracing::info_span!("worker", request_id = "w-1");
        let in_worker = worker.enter();
        let mut stream = loupe_agent::arm(
            CaptureSpec::new("across", "across.charge")
                .rate(RateLimit {
                    per_second: 1_000.0,
                    burst: 100,
                })
                .max_snapshots(4),
        )
        .expect("armed");

        // Inside the worker span: its request span is recorded, the worker (not followed)
        // is below it on the registry's stack only.
        let first = tracing::info_span!("request", request_id = "r-1");
        first.in_scope(|| charge(1));
        drop(in_worker);

        // The exit that emptied the stack made it known: from here the layer's own records.
        let second = tracing::info_span!("request", request_id = "r-2");
        second.in_scope(|| charge(2));
        let nested = tracing::info_span!("request", request_id = "r-3");
        let inner = nested.in_scope(|| tracing::info_span!("db", statement = "select"));
        nested.in_scope(|| inner.in_scope(|| charge(3)));

        // A task span opened in a request and entered on another thread.
        let request = tracing::info_span!("request", request_id = "r-4");
        let task = request.in_scope(|| tracing::info_span!("task", step = 1));
        let elsewhere = dispatch.clone();
        let task_hex = hex(&task);
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&elsewhere, || {
                drop(tracing::info_span!("warm").entered());
                task.in_scope(|| charge(4));
            });
        })
        .join()
        .expect("the task's thread");

        let snapshots = drain(&mut stream);
        let seen: Vec<_> = snapshots
            .iter()
            .map(|s| (request_id(s), span_id(s)))
            .collect();
        assert_eq!(
            seen,
            [
                (Some("r-1".to_owned()), hex(&first)),
                (Some("r-2".to_owned()), hex(&second)),
                (Some("r-3".to_owned()), hex(&inner)),
                (Some("r-4".to_owned()), task_hex),
            ]
        );
    });
}
