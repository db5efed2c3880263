//! Redaction through the whole capture path: nothing sensitive leaves a snapshot, whatever its
//! shape — nested maps, map keys, enum payloads, Debug strings, numbers, truncated strings —
//! and a request can add rules but never remove one.

#[path = "../fixtures/order.rs"]
mod order;
mod support;

use std::collections::BTreeMap;

use loupe_agent::{CaptureSpec, EngineConfig, LimitRequest, RateLimit, Secret, snapshot};
use loupe_proto::v1::{Snapshot, value::Kind};
use serde::Serialize;
use support::*;

const CARD: &str = "4111111111111111";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

fn capture_once(spec: CaptureSpec, hit: impl FnOnce()) -> Snapshot {
    // This binary's tests hit points in parallel, unoptimized, with secrets to scan: together
    // they can pass the default 1 % CPU budget, and a skipped hit is not what is tested here.
    loupe_agent::Engine::global()
        .configure(EngineConfig {
            cpu_budget: 1.0,
            ..EngineConfig::default()
        })
        .expect("config");
    let mut stream = loupe_agent::arm(spec.max_snapshots(1).rate(RateLimit {
        per_second: 1_000.0,
        burst: 10,
    }))
    .expect("armed");
    hit();
    let status = stream.status();
    let mut snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 1, "{status:?}");
    snapshots.remove(0)
}

fn assert_absent(snapshot: &Snapshot, secret: &str) {
    let text = snapshot_text(snapshot);
    assert!(!text.contains(secret), "{secret:?} leaked in:\n{text}");
}

/// Each of `shown` is in the snapshot: what a rule must not withhold.
fn assert_shown(snapshot: &Snapshot, shown: &[&str]) {
    let text = snapshot_text(snapshot);
    for shown in shown {
        assert!(text.contains(shown), "{shown:?} withheld from:\n{text}");
    }
}

/// True when any run of `min` consecutive bytes of `secret` appears in the snapshot.
fn leaks_part(snapshot: &Snapshot, secret: &str, min: usize) -> bool {
    let text = snapshot_text(snapshot);
    (0..=secret.len().saturating_sub(min)).any(|start| {
        secret.is_char_boundary(start)
            && secret.is_char_boundary(start + min)
            && text.contains(&secret[start..start + min])
    })
}

fn paths(snapshot: &Snapshot) -> Vec<String> {
    snapshot.redacted.iter().map(|r| r.path.clone()).collect()
}

/// Arms `point` with `condition` (at most ten elements a collection), runs `hit` once, and
/// checks that the hit was counted and `sent` snapshots were sent: 1 when the condition held,
/// 0 when what it reads was withheld from it.
fn assert_condition_sends(point: &str, condition: &str, sent: u64, hit: impl FnOnce()) {
    let limits = LimitRequest {
        max_collection_len: Some(10),
        ..LimitRequest::default()
    };
    assert_condition_sends_within(point, condition, limits, sent, hit);
}

/// [`assert_condition_sends`] with the capture armed with `limits`.
fn assert_condition_sends_within(
    point: &str,
    condition: &str,
    limits: LimitRequest,
    sent: u64,
    hit: impl FnOnce(),
) {
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s", point)
            .condition(condition)
            .limits(limits)
            .max_snapshots(1)
            .rate(RateLimit {
                per_second: 1_000.0,
                burst: 10,
            }),
    )
    .expect("armed");
    hit();
    let counters = stream.status().counters;
    assert_eq!(counters.sent, sent, "{condition}: {counters:?}");
    assert_eq!(counters.hits, 1, "{condition}: {counters:?}");
    while stream.try_next().is_some() {}
}

#[test]
fn the_reference_order_comes_out_with_its_card_token_redacted() {
    fn hit(order: &order::Order) {
        snapshot!("redact.order", order);
    }
    let order = order::Order::reference(3);
    let snapshot = capture_once(CaptureSpec::new("s", "redact.order"), || hit(&order));
    assert!(matches!(
        member(field(&snapshot, "order"), "card_token"),
        Kind::Redacted(_)
    ));
    assert_absent(&snapshot, "4242424242424242");
    assert_eq!(paths(&snapshot), ["order.card_token"]);
    // Ordinary data is untouched.
    assert_eq!(
        string(member(member(field(&snapshot, "order"), "user"), "email")).value,
        "ada@example.com"
    );
}

#[test]
fn secrets_are_never_captured_whatever_their_name_or_sigil() {
    #[derive(Serialize)]
    struct Config {
        endpoint: &'static str,
        processor: Secret<String>,
    }
    fn hit(config: &Config, key: &Secret<String>) {
        snapshot!("redact.secret_type", config, key, ?key, debug_config = ?config.endpoint);
    }
    let config = Config {
        endpoint: "https://pay.example",
        processor: Secret::new("sk_live_abcdefghijklmnop".into()),
    };
    let key = Secret::new("plain-looking-value".to_owned());
    let snapshot = capture_once(CaptureSpec::new("s", "redact.secret_type"), || {
        hit(&config, &key)
    });
    assert_eq!(
        redaction_reason(member(field(&snapshot, "config"), "processor")),
        "type:Secret"
    );
    assert!(matches!(field(&snapshot, "key"), Kind::Redacted(_)));
    assert_absent(&snapshot, "sk_live_abcdefghijklmnop");
    assert_absent(&snapshot, "plain-looking-value");
    assert_eq!(
        serde_json::to_string(&key).expect("serializes"),
        "\"[redacted]\"",
        "other serializers see a placeholder too"
    );
    assert_eq!(format!("{key:?}"), "Secret([redacted])");
}

#[test]
fn sensitive_names_are_withheld_at_every_level() {
    fn hit(password: &str, headers: &BTreeMap<String, BTreeMap<String, String>>) {
        snapshot!("redact.names", password, headers);
    }
    let mut inner = BTreeMap::new();
    inner.insert("Authorization".to_owned(), "Basic dXNlcjpwYXNz".to_owned());
    inner.insert("X-Api-Key".to_owned(), "k-123456".to_owned());
    inner.insert("accept".to_owned(), "text/html".to_owned());
    let mut headers = BTreeMap::new();
    headers.insert("request".to_owned(), inner);
    let snapshot = capture_once(CaptureSpec::new("s", "redact.names"), || {
        hit("hunter2-hunter2", &headers)
    });
    assert!(matches!(field(&snapshot, "password"), Kind::Redacted(_)));
    assert_absent(&snapshot, "hunter2");
    assert_absent(&snapshot, "dXNlcjpwYXNz");
    assert_absent(&snapshot, "k-123456");
    let text = snapshot_text(&snapshot);
    assert!(text.contains("text/html"), "ordinary values survive");
    let paths = paths(&snapshot);
    assert!(paths.contains(&"password".to_owned()), "{paths:?}");
    assert!(
        paths.contains(&r#"headers["request"]["Authorization"]"#.to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&r#"headers["request"]["X-Api-Key"]"#.to_owned()),
        "{paths:?}"
    );
}

#[test]
fn map_keys_that_carry_secrets_are_masked() {
    fn hit(by_card: &BTreeMap<String, u32>) {
        snapshot!("redact.map_keys", by_card);
    }
    let mut by_card = BTreeMap::new();
    by_card.insert(format!("card {CARD}"), 3);
    let snapshot = capture_once(CaptureSpec::new("s", "redact.map_keys"), || hit(&by_card));
    assert_absent(&snapshot, CARD);
    assert!(!snapshot.redacted.is_empty());
}

#[test]
fn enum_payloads_are_redacted_by_name_and_by_pattern() {
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum Payment {
        Card {
            number: String,
            cvv: String,
            holder: String,
        },
        Token(String),
        Cash,
    }
    fn hit(payments: &[Payment]) {
        snapshot!("redact.enums", payments);
    }
    let payments = vec![
        Payment::Card {
            number: CARD.to_owned(),
            cvv: "737".to_owned(),
            holder: "Ada Lovelace".to_owned(),
        },
        Payment::Token(JWT.to_owned()),
        Payment::Cash,
    ];
    let snapshot = capture_once(CaptureSpec::new("s", "redact.enums"), || hit(&payments));
    assert_absent(&snapshot, CARD);
    assert_absent(&snapshot, JWT);
    assert_absent(&snapshot, "737");
    assert!(snapshot_text(&snapshot).contains("Ada Lovelace"));
    let paths = paths(&snapshot);
    assert!(paths.iter().any(|p| p == "payments[0].cvv"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "payments[0].number"), "{paths:?}");
    // `Token(…)`: a positional payload is labelled by its variant's name, withheld whole.
    assert!(paths.iter().any(|p| p == "payments[1]"), "{paths:?}");
}

#[test]
fn debug_and_display_strings_are_scanned() {
    #[derive(Debug)]
    #[allow(dead_code)]
    struct Request {
        path: &'static str,
        header: String,
        card: &'static str,
    }
    fn hit(request: &Request, line: &str) {
        snapshot!("redact.debug", ?request, %line);
    }
    let request = Request {
        path: "/checkout",
        header: format!("Bearer {JWT}"),
        card: "4111-1111-1111-1111",
    };
    let line = "user=ada key=AKIAIOSFODNN7EXAMPLE";
    let snapshot = capture_once(CaptureSpec::new("s", "redact.debug"), || {
        hit(&request, line)
    });
    assert_absent(&snapshot, "4111-1111-1111-1111");
    assert!(!leaks_part(&snapshot, JWT, 12));
    assert_absent(&snapshot, "AKIAIOSFODNN7EXAMPLE");
    let text = snapshot_text(&snapshot);
    assert!(
        text.contains("/checkout") && text.contains("user=ada"),
        "{text}"
    );
}

#[test]
fn numbers_that_are_card_numbers_are_withheld_and_others_kept() {
    fn hit(card_like: u64, order_id: u64, signed: i64) {
        snapshot!("redact.numbers", card_like, order_id, signed);
    }
    let snapshot = capture_once(CaptureSpec::new("s", "redact.numbers"), || {
        hit(
            4_111_111_111_111_111,
            4_111_111_111_111_112,
            5_555_555_555_554_444,
        )
    });
    assert!(matches!(field(&snapshot, "card_like"), Kind::Redacted(_)));
    assert_eq!(
        field(&snapshot, "order_id"),
        &Kind::Uint(4_111_111_111_111_112)
    );
    assert!(matches!(field(&snapshot, "signed"), Kind::Redacted(_)));
}

#[test]
fn truncation_never_shows_part_of_a_secret() {
    struct Padded(usize, &'static str);
    impl std::fmt::Display for Padded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for _ in 0..self.0 {
                f.write_str("a")?;
            }
            f.write_str(" ")?;
            f.write_str(self.1)?;
            f.write_str(" tail")
        }
    }
    fn hit(serde_string: &str, display: &Padded) {
        snapshot!("redact.truncation", serde_string, %display);
    }
    // Secrets that start just before the 255-byte cut, at every offset around it. (Key and
    // token prefixes are recognised at the start of a word, hence the space before them.)
    for pad in 230..256 {
        for secret in [JWT, CARD, "AKIAIOSFODNN7EXAMPLE"] {
            let serde_string = format!("{} {secret} tail", "a".repeat(pad));
            let display = Padded(pad, secret);
            let snapshot = capture_once(CaptureSpec::new("s", "redact.truncation"), || {
                hit(&serde_string, &display)
            });
            assert!(
                !leaks_part(&snapshot, secret, 6),
                "pad {pad}: part of {secret} leaked: {}",
                snapshot_text(&snapshot)
            );
        }
    }
}

#[test]
fn requests_add_keywords_and_patterns() {
    fn hit(coupon: &str, note: &str, email: &str) {
        snapshot!("redact.additions", coupon, note, email);
    }
    let snapshot = capture_once(
        CaptureSpec::new("s", "redact.additions")
            .redact_keywords(["coupon"])
            .redact_patterns([r"INTERNAL-\d{4}"]),
        || {
            hit(
                "SPRING10",
                "ticket INTERNAL-1234 escalated",
                "ada@example.com",
            )
        },
    );
    assert!(matches!(field(&snapshot, "coupon"), Kind::Redacted(_)));
    assert_absent(&snapshot, "SPRING10");
    assert_absent(&snapshot, "INTERNAL-1234");
    assert!(string(field(&snapshot, "note")).value.contains("escalated"));
    assert_eq!(string(field(&snapshot, "email")).value, "ada@example.com");
    // Without the additions the same capture keeps them: additions are per request.
    let plain = capture_once(CaptureSpec::new("s", "redact.additions"), || {
        hit(
            "SPRING10",
            "ticket INTERNAL-1234 escalated",
            "ada@example.com",
        )
    });
    assert_eq!(string(field(&plain, "coupon")).value, "SPRING10");
}

#[test]
fn loosening_limits_does_not_loosen_redaction() {
    fn hit(api_key: &str, blob: &str) {
        snapshot!("redact.loosened", api_key, blob);
    }
    let blob = format!("{}{CARD}", "b".repeat(3_000));
    let snapshot = capture_once(
        CaptureSpec::new("s", "redact.loosened").limits(LimitRequest {
            max_string_bytes: Some(u32::MAX),
            ..LimitRequest::default()
        }),
        || hit("ak_live_0123456789", &blob),
    );
    assert!(matches!(field(&snapshot, "api_key"), Kind::Redacted(_)));
    assert_absent(&snapshot, CARD);
}

/// Hits after the first are answered from what the thread learned of each struct type: they
/// must redact exactly as the first did, for sensitive fields, for two types that share a
/// name but not their fields, for a field list that changes between hits (a skipped field), and
/// with a stricter rule set armed in between.
#[test]
fn repeated_hits_redact_as_the_first() {
    mod a {
        #[derive(serde::Serialize)]
        pub struct Item {
            pub sku: &'static str,
            pub api_key: &'static str,
        }
    }
    mod b {
        #[derive(serde::Serialize)]
        pub struct Item {
            pub api_key_count: u32,
            pub coupon: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            pub password: Option<&'static str>,
            pub note: &'static str,
        }
    }
    fn hit(first: &a::Item, second: &b::Item) {
        snapshot!("redact.repeated", first, second);
    }
    let first = a::Item {
        sku: "SKU-1",
        api_key: "k-live-0042",
    };
    let with_password = b::Item {
        api_key_count: 3,
        coupon: "SPRING",
        password: Some("hunter2-hunter2"),
        note: "plain",
    };
    let without_password = b::Item {
        api_key_count: 3,
        coupon: "SPRING",
        password: None,
        note: "plain",
    };
    for round in 0..3 {
        for second in [&without_password, &with_password, &without_password] {
            let snapshot = capture_once(CaptureSpec::new("s", "redact.repeated"), || {
                hit(&first, second)
            });
            assert!(
                matches!(
                    member(field(&snapshot, "first"), "api_key"),
                    Kind::Redacted(_)
                ),
                "round {round}"
            );
            assert_absent(&snapshot, "k-live-0042");
            assert_absent(&snapshot, "hunter2");
            assert_eq!(
                string(member(field(&snapshot, "first"), "sku")).value,
                "SKU-1"
            );
            assert_eq!(
                member(field(&snapshot, "second"), "api_key_count"),
                &Kind::Uint(3)
            );
            assert_eq!(
                string(member(field(&snapshot, "second"), "coupon")).value,
                "SPRING"
            );
            assert_eq!(
                string(member(field(&snapshot, "second"), "note")).value,
                "plain"
            );
        }
        // A stricter rule set on the same types: its own answers, not the builtin set's.
        let strict = CaptureSpec::new("s", "redact.repeated").redact_keywords(["coupon"]);
        let snapshot = capture_once(strict, || hit(&first, &with_password));
        assert!(matches!(
            member(field(&snapshot, "second"), "coupon"),
            Kind::Redacted(_)
        ));
        assert_absent(&snapshot, "SPRING");
    }
}

/// A condition's capture holds only what the condition reads, so a PEM key's BEGIN line can sit
/// in a value it leaves out — another member, an element's other member, another point field.
/// The key's body is still withheld from the condition, as the snapshot withholds it, whatever
/// its form (a long line, short lines, Debug text, encryption headers before the base64), so a
/// condition cannot test what the snapshot would not show; ordinary text stays readable.
#[test]
fn a_condition_cannot_read_the_body_of_a_key_whose_begin_line_it_does_not_read() {
    #[derive(Serialize)]
    struct Credential {
        begin: &'static str,
        body: &'static str,
    }
    #[derive(Serialize)]
    struct Vault {
        entries: Vec<Credential>,
        lines: Vec<&'static str>,
        note: &'static str,
        extra: BTreeMap<&'static str, &'static str>,
    }
    fn open(vault: &Vault, begin: &str, body: &str, shown: &str) {
        snapshot!("redact.vault", vault, begin, body, ?shown);
    }
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const BODY: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";
    let vault = Vault {
        entries: vec![Credential {
            begin: "-----BEGIN RSA PRIVATE KEY-----",
            body: "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,AB12\n\nMIIEvQIBAD",
        }],
        lines: vec![
            BEGIN,
            "MIIEvQIBADANBgkq",
            "x4Rz9Q==",
            "-----END PRIVATE KEY-----",
        ],
        note: "Payment declined for order 48213 by issuing bank",
        extra: [("a", BEGIN), ("z", BODY)].into_iter().collect(),
    };
    // The first conditions show the values are readable: what withholds the bodies below is
    // the key rule, not the names or a limit.
    for (condition, sent) in [
        ("vault.entries.exists(c, c.body.size() > 10)", 1),
        ("vault.note.contains('declined')", 1),
        ("vault.entries.exists(c, c.body.contains('MIIEvQ'))", 0),
        ("body.startsWith('MIIEvQ')", 0),
        ("shown.contains('MIIEvQ')", 0),
        ("vault.lines.exists(l, l.startsWith('x4'))", 0),
        ("vault.lines.exists(l, l.startsWith('MIIE'))", 0),
        ("vault.extra.z.startsWith('MIIEvQ')", 0),
        (
            "vault.entries.filter(c, c.body.contains('MIIEvQ')).size() == 1",
            0,
        ),
    ] {
        assert_condition_sends("redact.vault", condition, sent, || {
            open(&vault, BEGIN, BODY, BODY);
        });
    }
}

/// A condition reads no member past where the snapshot stops (the member limit counts the
/// members it leaves out too), so a member's `Serialize` that the snapshot never runs cannot
/// panic in the condition's capture and take the key state of the members before it along.
#[test]
fn a_condition_reads_no_member_past_the_snapshots_member_limit() {
    struct Boom;
    impl Serialize for Boom {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            panic!("a Serialize that panics");
        }
    }
    #[derive(Serialize)]
    struct Wide {
        pem: &'static str,
        f01: u8,
        f02: u8,
        f03: u8,
        f04: u8,
        f05: u8,
        f06: u8,
        f07: u8,
        f08: u8,
        f09: u8,
        f10: u8,
        f11: u8,
        f12: u8,
        f13: u8,
        f14: u8,
        f15: u8,
        f16: u8,
        f17: u8,
        f18: u8,
        f19: u8,
        f20: u8,
        boom: Boom,
    }
    fn open(wide: &Wide, body: &str) {
        snapshot!("redact.wide", wide, body);
    }
    let wide = Wide {
        pem: "-----BEGIN PRIVATE KEY-----",
        f01: 1,
        f02: 2,
        f03: 3,
        f04: 4,
        f05: 5,
        f06: 6,
        f07: 7,
        f08: 8,
        f09: 9,
        f10: 10,
        f11: 11,
        f12: 12,
        f13: 13,
        f14: 14,
        f15: 15,
        f16: 16,
        f17: 17,
        f18: 18,
        f19: 19,
        f20: 20,
        boom: Boom,
    };
    let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";
    let mut stream = loupe_agent::arm(
        CaptureSpec::new("s", "redact.wide")
            .condition("has(wide.boom) || body.startsWith('MIIEvQ')")
            .max_snapshots(1)
            .rate(RateLimit {
                per_second: 1_000.0,
                burst: 10,
            }),
    )
    .expect("armed");
    open(&wide, body);
    let counters = stream.status().counters;
    assert_eq!(counters.hits, 1, "{counters:?}");
    assert_eq!(counters.sent, 0, "read the key's body: {counters:?}");
    while stream.try_next().is_some() {}
}

/// A value whose only label is its type or variant name — a newtype (`ApiKey(String)`, whose
/// name serde hands over and a snapshot otherwise drops), a tuple struct, a newtype or tuple
/// variant — is withheld by that name as a field of that name would be, in the snapshot and in
/// what a condition reads (the direct path declines it). Values with named fields are judged
/// by those names, and harmless newtypes are kept.
#[test]
fn values_labelled_only_by_their_type_or_variant_name_are_withheld() {
    #[derive(Serialize)]
    struct ApiKey(String);
    #[derive(Serialize)]
    struct Password(String, u32);
    #[derive(Serialize)]
    struct OrderId(u64);
    #[derive(Serialize)]
    struct Pin(u32);
    #[derive(Serialize)]
    #[allow(dead_code)]
    enum Credential {
        SessionToken(String),
        ClientSecret(String, String),
        Anonymous,
    }
    #[derive(Serialize)]
    struct Account {
        key: ApiKey,
        login: Password,
        order: OrderId,
        lock: Pin,
        credentials: Vec<Credential>,
    }
    fn hit(account: &Account) {
        snapshot!("redact.newtypes", account);
    }
    const KEY: &str = "Pz4nU61Q8llETNrKq7GqPDq";
    const PASSWORD: &str = "Qw7nV62R9mmFUOsL";
    const TOKEN: &str = "b5a68459d9450604bf30c71f";
    const SECRET: &str = "Nq7GqPDqcvcjefTATZsKd";
    let account = Account {
        key: ApiKey(KEY.to_owned()),
        login: Password(PASSWORD.to_owned(), 3),
        order: OrderId(1042),
        lock: Pin(4821),
        credentials: vec![
            Credential::SessionToken(TOKEN.to_owned()),
            Credential::ClientSecret("app".to_owned(), SECRET.to_owned()),
            Credential::Anonymous,
        ],
    };
    let snapshot = capture_once(CaptureSpec::new("s", "redact.newtypes"), || hit(&account));
    for secret in [KEY, PASSWORD, TOKEN, SECRET] {
        assert_absent(&snapshot, secret);
    }
    let text = snapshot_text(&snapshot);
    assert!(
        text.contains("1042"),
        "the harmless newtype is kept: {text}"
    );
    let paths = paths(&snapshot);
    for path in [
        "account.key",
        "account.login",
        "account.lock",
        "account.credentials",
    ] {
        assert!(
            paths.iter().any(|p| p.starts_with(path)),
            "{path}: {paths:?}"
        );
    }

    for (condition, sent) in [
        // Numbers compared are answered directly, without a capture: that path must decline
        // a newtype its name withholds, and leave it to the capture, which withholds it.
        ("account.order == 1042u", 1),
        ("account.lock == 4821u", 0),
        ("account.key.startsWith('Pz4')", 0),
        ("account.key == 'Pz4nU61Q8llETNrKq7GqPDq'", 0),
    ] {
        assert_condition_sends("redact.newtypes", condition, sent, || hit(&account));
    }
}

/// A struct's `value` is withheld when the `name` or `key` before it names a secret, as a
/// name/value list writes it (`EnvVar { name: "DB_PASSWORD", value }`, an AWS parameter's
/// path): in the snapshot and in what a condition reads, numbers compared directly included.
#[test]
fn a_value_named_by_its_neighbouring_name_is_withheld() {
    #[derive(Serialize)]
    struct EnvVar {
        name: &'static str,
        value: &'static str,
    }
    #[derive(Serialize)]
    struct Setting {
        key: &'static str,
        value: u64,
    }
    /// A name names the first value after it; a condition that reads only `value` judges
    /// `val` in the pair all the same, and sees what the snapshot shows.
    #[derive(Serialize)]
    struct TwoValues {
        name: &'static str,
        val: &'static str,
        value: &'static str,
    }
    #[derive(Serialize)]
    struct Pod {
        env: Vec<EnvVar>,
        setting: Setting,
        other: Setting,
        two_values: TwoValues,
    }
    fn hit(pod: &Pod) {
        snapshot!("redact.pairs", pod);
    }
    const PASSWORD: &str = "Qw7nV62R9mmFUOsL";
    let pod = Pod {
        env: vec![
            EnvVar {
                name: "HOME",
                value: "/root",
            },
            EnvVar {
                name: "DB_PASSWORD",
                value: PASSWORD,
            },
        ],
        setting: Setting {
            key: "/prod/checkout/card_pin",
            value: 4821,
        },
        other: Setting {
            key: "retries",
            value: 7,
        },
        two_values: TwoValues {
            name: "DB_PASSWORD",
            val: PASSWORD,
            value: "visible-second",
        },
    };
    let snapshot = capture_once(CaptureSpec::new("s", "redact.pairs"), || hit(&pod));
    assert_absent(&snapshot, PASSWORD);
    assert_shown(&snapshot, &["/root", "DB_PASSWORD", "visible-second"]);
    let paths = paths(&snapshot);
    for path in ["pod.env[1].value", "pod.setting.value"] {
        assert!(paths.iter().any(|p| p == path), "{path}: {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("pod.other")),
        "{paths:?}"
    );

    for (condition, sent) in [
        ("pod.other.value == 7u", 1),
        ("pod.env.exists(e, e.value == '/root')", 1),
        ("pod.setting.value == 4821u", 0),
        ("pod.env.exists(e, e.value.startsWith('Qw7'))", 0),
        ("pod.two_values.value == 'visible-second'", 1),
        ("pod.two_values.val.startsWith('Qw7')", 0),
    ] {
        assert_condition_sends("redact.pairs", condition, sent, || hit(&pod));
    }
}

/// A value whose name comes after it (`{value, name}` as a struct declares it, or a map that
/// iterates so) is withheld when that name names a secret: a text, and a whole nested value,
/// for the snapshot and for what a condition reads; a harmless name leaves its value shown.
#[test]
fn a_value_named_by_a_name_after_it_is_withheld() {
    #[derive(Serialize)]
    struct Credentials {
        user: &'static str,
        pin: u64,
    }
    #[derive(Serialize)]
    struct ValueFirst<T> {
        value: T,
        name: &'static str,
    }
    #[derive(Serialize)]
    struct Vars {
        home: ValueFirst<&'static str>,
        db: ValueFirst<&'static str>,
        nested: ValueFirst<Credentials>,
        after: u64,
    }
    fn hit(vars: &Vars, setting: &BTreeMap<&str, &str>) {
        snapshot!("redact.name_after_value", vars, setting);
    }
    const PASSWORD: &str = "Qw7nV62R9mmFUOsL";
    let vars = Vars {
        home: ValueFirst {
            value: "/root",
            name: "HOME",
        },
        db: ValueFirst {
            value: PASSWORD,
            name: "DB_PASSWORD",
        },
        nested: ValueFirst {
            value: Credentials {
                user: "svc-visible-user",
                pin: 730_519,
            },
            name: "/prod/checkout/db_credentials",
        },
        after: 42,
    };
    // Sorted keys: an upper-case `Value` comes before `key`.
    let setting = BTreeMap::from([("Value", PASSWORD), ("key", "stripe_api_key")]);
    let snapshot = capture_once(CaptureSpec::new("s", "redact.name_after_value"), || {
        hit(&vars, &setting)
    });
    for secret in [PASSWORD, "svc-visible-user", "730519"] {
        assert_absent(&snapshot, secret);
    }
    assert_shown(
        &snapshot,
        &[
            "/root",
            "HOME",
            "DB_PASSWORD",
            "db_credentials",
            "stripe_api_key",
        ],
    );
    let paths = paths(&snapshot);
    for path in ["vars.db.value", "vars.nested.value", "setting[\"Value\"]"] {
        assert!(paths.iter().any(|p| p == path), "{path}: {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.starts_with("vars.home")),
        "{paths:?}"
    );
    let fields = snapshot_text(&snapshot);
    assert!(
        fields.contains("42"),
        "what follows the pair is kept: {fields}"
    );

    for (condition, sent) in [
        ("vars.home.value == '/root'", 1),
        ("vars.db.value.startsWith('Qw7')", 0),
        ("vars.nested.value.pin == 730519u", 0),
        ("setting.Value.startsWith('Qw7')", 0),
        ("vars.after == 42u", 1),
    ] {
        assert_condition_sends("redact.name_after_value", condition, sent, || {
            hit(&vars, &setting)
        });
    }
}

/// A map's `value` entry is withheld when a `name` or `key` entry before it names a secret, as
/// a struct's field is: a name/value list held as `serde_json::Value` (its objects' keys come
/// sorted, so `name` and `key` come before `value`) or as a map, for the snapshot and for what
/// a condition reads, even when the condition reads only the value.
#[test]
fn a_map_value_named_by_its_neighbouring_name_entry_is_withheld() {
    fn hit(
        env: &serde_json::Value,
        parameter: &serde_json::Value,
        setting: &BTreeMap<&str, &str>,
        two_values: &BTreeMap<&str, &str>,
    ) {
        snapshot!("redact.map_pairs", env, parameter, setting, two_values);
    }
    const PASSWORD: &str = "Qw7nV62R9mmFUOsL";
    let env = serde_json::json!([
        {"name": "HOME", "value": "/root"},
        {"name": "DB_PASSWORD", "value": PASSWORD},
    ]);
    let parameter = serde_json::json!({
        "Name": "/prod/app/db_password",
        "Type": "SecureString",
        "Value": PASSWORD,
    });
    let setting = BTreeMap::from([("key", "stripe_api_key"), ("value", PASSWORD)]);
    // A name names the first value after it, as in a struct; the condition, which reads only
    // `value`, judges `val` in the pair all the same, and sees what the snapshot shows.
    let two_values = BTreeMap::from([
        ("name", "DB_PASSWORD"),
        ("val", PASSWORD),
        ("value", "visible-second"),
    ]);
    let snapshot = capture_once(CaptureSpec::new("s", "redact.map_pairs"), || {
        hit(&env, &parameter, &setting, &two_values)
    });
    assert_absent(&snapshot, PASSWORD);
    assert_shown(
        &snapshot,
        &[
            "/root",
            "DB_PASSWORD",
            "SecureString",
            "stripe_api_key",
            "visible-second",
        ],
    );
    for (condition, sent) in [
        ("env.exists(e, e.value == '/root')", 1),
        ("env.exists(e, e.value.startsWith('Qw7'))", 0),
        ("parameter.Value.startsWith('Qw7')", 0),
        ("setting.value.startsWith('Qw7')", 0),
        ("parameter.Type == 'SecureString'", 1),
        ("two_values.value == 'visible-second'", 1),
    ] {
        assert_condition_sends("redact.map_pairs", condition, sent, || {
            hit(&env, &parameter, &setting, &two_values)
        });
    }
}

/// A pair written as a two-element tuple or list, `("DB_PASSWORD", "…")` (as
/// `std::env::vars().collect::<Vec<_>>()` serializes), is judged by its first element, for the
/// snapshot and for a condition alike; a longer list is not a pair.
#[test]
fn the_second_of_a_pair_named_by_the_first_is_withheld() {
    fn hit(vars: &[(&str, &str)], arrays: &[[&str; 2]], lists: &[Vec<&str>]) {
        snapshot!("redact.tuple_pairs", vars, arrays, lists);
    }
    const PASSWORD: &str = "Zx8mQ41vLkP0s9Ht";
    let vars = [("HOME", "/root"), ("DB_PASSWORD", PASSWORD)];
    let arrays = [["STRIPE_API_KEY", PASSWORD], ["region", "eu-west-1"]];
    let lists = [
        vec!["password", PASSWORD],
        vec!["password", "visible-third", "x"],
    ];
    let snapshot = capture_once(CaptureSpec::new("s", "redact.tuple_pairs"), || {
        hit(&vars, &arrays, &lists)
    });
    assert_absent(&snapshot, PASSWORD);
    assert_shown(
        &snapshot,
        &["/root", "DB_PASSWORD", "eu-west-1", "visible-third"],
    );
    for (condition, sent) in [
        ("vars.exists(v, v[1] == '/root')", 1),
        ("vars.exists(v, v[1].startsWith('Zx8'))", 0),
        ("arrays.exists(a, a[1].startsWith('Zx8'))", 0),
        ("lists.exists(l, l[1].startsWith('Zx8'))", 0),
        ("lists.exists(l, l[1] == 'visible-third')", 1),
    ] {
        assert_condition_sends("redact.tuple_pairs", condition, sent, || {
            hit(&vars, &arrays, &lists)
        });
    }
}

/// A pair as a tuple struct or a tuple variant of two fields, `Var("DB_PASSWORD", "…")`, is
/// judged by its first field like a tuple, for the snapshot and a condition alike.
#[test]
fn the_second_field_of_a_positional_pair_named_by_the_first_is_withheld() {
    #[derive(Serialize)]
    struct Var(&'static str, &'static str);
    #[derive(Serialize)]
    enum Env {
        Var(&'static str, &'static str),
    }
    fn hit(vars: &[Var], env: &Env) {
        snapshot!("redact.positional_pairs", vars, env);
    }
    const PASSWORD: &str = "Zx8mQ41vLkP0s9Ht";
    let vars = [Var("HOME", "/root"), Var("DB_PASSWORD", PASSWORD)];
    let env = Env::Var("STRIPE_API_KEY", PASSWORD);
    let snapshot = capture_once(CaptureSpec::new("s", "redact.positional_pairs"), || {
        hit(&vars, &env)
    });
    assert_absent(&snapshot, PASSWORD);
    assert!(snapshot_text(&snapshot).contains("/root"));
    for (condition, sent) in [
        ("vars.exists(v, v['1'] == '/root')", 1),
        ("vars.exists(v, v['1'].startsWith('Zx8'))", 0),
    ] {
        assert_condition_sends("redact.positional_pairs", condition, sent, || {
            hit(&vars, &env)
        });
    }
}

/// A name cut by the capture's string limit cannot be judged, so the value beside it is
/// withheld: with strings of 16 bytes, `MY_APP_DATABASE_PASSWORD` shows as `MY_APP_DATABASE_`,
/// which names nothing, and the password after it must not show, to the snapshot or to a
/// condition.
#[test]
fn a_value_named_by_a_cut_name_is_withheld() {
    #[derive(Serialize)]
    struct EnvVar {
        name: &'static str,
        value: &'static str,
    }
    fn hit(vars: &[(&str, &str)], env: &EnvVar) {
        snapshot!("redact.cut_names", vars, env);
    }
    const PASSWORD: &str = "Zx8mQ41vLkP0s9Ht";
    let vars = [("MY_APP_DATABASE_PASSWORD", PASSWORD)];
    let env = EnvVar {
        name: "MY_APP_DATABASE_PASSWORD",
        value: PASSWORD,
    };
    let cut = LimitRequest {
        max_string_bytes: Some(16),
        ..LimitRequest::default()
    };
    let snapshot = capture_once(
        CaptureSpec::new("s", "redact.cut_names").limits(cut),
        || hit(&vars, &env),
    );
    assert_absent(&snapshot, &PASSWORD[..8]);
    for condition in [
        "vars[0][1].startsWith('Zx8')",
        "env.value.startsWith('Zx8')",
    ] {
        assert_condition_sends_within("redact.cut_names", condition, cut, 0, || hit(&vars, &env));
    }
}

/// A label left open (`--password`) is closed by the value after it even when that value is
/// withheld unscanned (a newtype named like a secret), as the condition's key follower closes
/// it on walking that value: a condition never reads a text the snapshot masks.
#[test]
fn a_withheld_value_closes_a_label_left_open_for_the_snapshot_and_the_condition_alike() {
    #[derive(Serialize)]
    struct ApiKey(&'static str);
    fn hit(args: &[&str], key: &ApiKey, note: &str) {
        snapshot!("redact.label_closed", args, key, note);
    }
    let args = ["deploy", "--password"];
    let key = ApiKey("plain-visible");
    let note = "shown-text";
    let snapshot = capture_once(CaptureSpec::new("s", "redact.label_closed"), || {
        hit(&args, &key, note)
    });
    assert_absent(&snapshot, "plain-visible");
    let text = snapshot_text(&snapshot);
    assert!(text.contains("shown-text"), "{text}");
    assert_condition_sends("redact.label_closed", "note.startsWith('shown')", 1, || {
        hit(&args, &key, note)
    });
}
