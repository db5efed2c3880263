//! Cost of the redaction checks on the capture path: one name, one short string, and all the
//! checks for the reference `Order` payload (about 20 field names and 10 short strings).

use std::hint::black_box;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use loupe_agent::redaction::{AdditionOrigin, RedactionAdditions, RedactionRules, ScanState};

/// Field names of the reference `Order` payload, in capture order.
const ORDER_FIELD_NAMES: &[&str] = &[
    "id",
    "user",
    "id",
    "email",
    "tier",
    "address",
    "street",
    "city",
    "zip",
    "country",
    "items",
    "sku",
    "qty",
    "price_cents",
    "total_cents",
    "currency",
    "card_token",
    "created_at",
    "sku",
    "price_cents",
];

/// String values of the reference `Order` payload.
const ORDER_STRINGS: &[&str] = &[
    "alice@example.com",
    "Gold",
    "221B Baker Street",
    "London",
    "NW1 6XE",
    "GB",
    "SKU-000123",
    "SKU-004567",
    "EUR",
    "tok_1NXWPm2eZvKYlo2C",
];

fn names(c: &mut Criterion) {
    let rules = RedactionRules::builtin();
    let mut group = c.benchmark_group("sensitive_name");
    // The floor of this machine and harness, to read the others against.
    group.bench_function("baseline_len", |b| b.iter(|| black_box("user_id").len()));
    for name in [
        "id",
        "user_id",
        "price_cents",
        "shipping_address",
        "card_token",
        "Set-Cookie",
    ] {
        // Reduced to a bool inside the routine, as the engine would branch on it, so the
        // harness does not time moving and dropping the result.
        group.bench_function(name, |b| {
            b.iter(|| rules.sensitive_name(black_box(name)).is_some())
        });
    }
    group.finish();
}

fn strings(c: &mut Criterion) {
    let rules = RedactionRules::builtin();
    let mut group = c.benchmark_group("mask_secrets");
    for (label, text) in [
        ("empty", ""),
        ("short_10b", "SKU-000123"),
        ("ordinary_17b", "alice@example.com"),
        ("ordinary_30b", "221B Baker Street, London NW1"),
        (
            "debug_120b",
            "User { id: 42, email: \"alice@example.com\", tier: Gold, address: Address { city: \"London\", zip: \"NW1 6XE\" } }",
        ),
        ("card_found", "card 4111 1111 1111 1111"),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| rules.mask_secrets(black_box(text), true))
        });
    }
    group.finish();
}

fn order_payload(c: &mut Criterion) {
    let builtin = RedactionRules::builtin();
    let with_request = builtin
        .with_additions(&RedactionAdditions {
            keywords: vec!["loyalty_id".into(), "date_of_birth".into()],
            patterns: vec![
                r"\bEMP-[0-9]{6}\b".into(),
                r"(?i)internal-ref-[a-z0-9]+".into(),
            ],
            origin: AdditionOrigin::Request,
        })
        .expect("valid additions");
    let mut group = c.benchmark_group("order_payload");
    for (label, rules) in [
        ("builtin", &builtin),
        ("with_request_additions", &with_request),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| {
                let mut withheld = 0usize;
                for name in ORDER_FIELD_NAMES {
                    withheld += usize::from(rules.sensitive_name(black_box(name)).is_some());
                }
                for text in ORDER_STRINGS {
                    withheld += usize::from(rules.mask_secrets(black_box(text), true).is_some());
                }
                for value in [42u64, 7, 1_732_460_807_124, 1999, 4999] {
                    withheld += usize::from(rules.sensitive_u64(black_box(value)).is_some());
                }
                withheld
            })
        });
    }
    group.finish();
}

/// Texts a condition's capture leaves out, as the key follower and the full scan each read
/// them: what `condition::cost::FOLLOWED_BYTES_PER_SCANNED_BYTE` is calibrated from (the ratio
/// of the two per text, read in one run).
fn follow_against_scan(c: &mut Criterion) {
    let rules = RedactionRules::builtin();
    let sentence = "Customer asked to move delivery to the side door; call before 6pm. ";
    let debug = "Order { id: 1042, user: User { id: 42, email: \"alice@example.com\", tier: Gold }, \
                 items: [Item { sku: \"SKU-000123\", qty: 2, price_cents: 1999 }] } ";
    // Base64 documents with nothing secret in them, each decoded and judged (`encoded.rs`):
    // the costliest text a byte the scan meets in ordinary data.
    let document = base64::engine::general_purpose::STANDARD
        .encode(r#"{"user":"ada","page":2,"sort":"created_at","limit":100}"#)
        + " ";
    let command_line = "rsync -avz --delete -e ssh /srv/data/ backup01:/srv/data/ -v -x ";
    let texts = [
        ("sku_10b", "SKU-000123".to_owned()),
        (
            "base64_documents_4kib",
            document.repeat(4096 / document.len() + 1)[..4096].to_owned(),
        ),
        ("sentence_255b", sentence.repeat(4)[..255].to_owned()),
        (
            "debug_4kib",
            debug.repeat(4096 / debug.len() + 1)[..4096].to_owned(),
        ),
        // A command line of many flags: each flag reads the words before it for the tools
        // whose password flags it knows.
        (
            "command_line_4kib",
            command_line.repeat(4096 / command_line.len() + 1)[..4096].to_owned(),
        ),
    ];
    let mut group = c.benchmark_group("follow_against_scan");
    for (label, text) in &texts {
        group.throughput(criterion::Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("scan/{label}"), |b| {
            b.iter(|| {
                let mut state = ScanState::default();
                rules
                    .mask_in_sequence(black_box(text), true, &mut state)
                    .is_some()
            })
        });
        group.bench_function(format!("follow/{label}"), |b| {
            b.iter(|| {
                let mut state = ScanState::default();
                rules.follow_carried_state(black_box(text), true, &mut state);
                state.private_key_open()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, names, strings, order_payload, follow_against_scan);
criterion_main!(benches);
