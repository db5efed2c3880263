//! The redaction corpus: secret-bearing values of every class the scanner knows, and benign
//! look-alikes, each captured through the real `snapshot!` path the way a program would hand
//! it over (struct fields, map keys, enum variants, `?Debug`, `%Display`, bytes, span fields,
//! panicking and failing `Serialize` impls, nested JSON), encoded to protobuf `Snapshot` bytes.
//!
//! A secret leaks when any 8-byte window of its secret part appears in the encoded bytes. A
//! benign value is over-redacted when it does not come out intact or anything in its snapshot
//! was withheld. Targets: no leak, at most 5 % of benign values over-redacted. The test prints
//! both numbers.
//!
//! Every credential here is made up: bodies come from a fixed pseudo-random generator, shaped
//! like the real formats and valid for none.

mod support;

use std::fmt;
use std::sync::{Mutex, Once};

use base64::Engine as _;

use loupe_agent::{CaptureSpec, CorrelationLayer, EngineConfig, RateLimit, snapshot};
use loupe_proto::v1::{Snapshot, value::Kind};
use prost::Message;
use serde::ser::{Error as _, SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use support::drain;
use tracing_subscriber::layer::SubscriberExt;

/// How a value reaches the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// A string in a struct field with a neutral name.
    Field,
    /// A value under a named struct field (the name given with the case).
    NamedField,
    /// A value under a named map key.
    NamedKey,
    /// A map whose key is the text.
    MapKey,
    /// A unit enum variant whose name is the text.
    Variant,
    /// A map keyed by a unit variant named by the case's name.
    VariantKey,
    /// `?value` of a struct holding the text.
    Debug,
    /// `%value` of the text.
    Display,
    /// The text as bytes, between non-UTF-8 bytes.
    Bytes,
    /// A span field of the current span.
    SpanField,
    /// The message of a panicking `Serialize`.
    Panic,
    /// The message of a failing `Serialize`.
    SerializeError,
    /// A JSON document, as a string field.
    NestedJson,
    /// A JSON document parsed into a `serde_json::Value`, captured as maps and lists.
    JsonValue,
    /// The text split into lines, one string each.
    Lines,
    /// The text as an unsigned integer.
    Integer,
}

use Carrier::*;

/// One corpus entry: `text` is what the program holds, `secret` the part that must not leave
/// (for benign entries: the part that must come out intact).
struct Case {
    class: &'static str,
    name: &'static str,
    text: String,
    secret: String,
    carrier: Carrier,
}

fn case(class: &'static str, carrier: Carrier, text: impl Into<String>, secret: &str) -> Case {
    Case {
        class,
        name: "note",
        text: text.into(),
        secret: secret.to_owned(),
        carrier,
    }
}

fn named(class: &'static str, carrier: Carrier, name: &'static str, value: &str) -> Case {
    Case {
        class,
        name,
        text: value.to_owned(),
        secret: value.to_owned(),
        carrier,
    }
}

/// A fixed pseudo-random body of `len` characters from `alphabet`.
fn body(seed: u64, len: usize, alphabet: &str) -> String {
    let alphabet = alphabet.as_bytes();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            alphabet[((state >> 33) % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALPHA: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &str = "0123456789abcdef";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BECH32: &str = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";

/// Carriers a value-shaped secret is handed over by, in rotation.
const VALUE_CARRIERS: &[Carrier] = &[
    Field,
    Debug,
    Display,
    Bytes,
    SpanField,
    Panic,
    SerializeError,
    MapKey,
    Variant,
    NestedJson,
    NamedKey,
];

/// Provider tokens as (token, secret part): the part after the provider's public prefix.
fn provider_tokens() -> Vec<(String, String)> {
    let mut seed = 0;
    let mut token = |prefix: &str, len: usize, alphabet: &str| {
        seed += 1;
        format!("{prefix}{}", body(seed, len, alphabet))
    };
    let prefixed = |token: String| {
        // Public prefixes end at the last `_`, `-` or `.` among the first 24 bytes, or are
        // the first four bytes (AKIA, AIza, dapi, …).
        let head = &token[..token.len().min(24)];
        let cut = head.rfind(['_', '-', '.']).map_or(4, |at| at + 1);
        let secret = token[cut..].to_owned();
        (token, secret)
    };
    let webhook = |token: String, secret: String| (token, secret);
    vec![
        token("ghp_", 36, ALNUM),
        token("gho_", 36, ALNUM),
        token("ghs_", 36, ALNUM),
        token("ghu_", 36, ALNUM),
        token(
            "github_pat_11",
            80,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_",
        ),
        token("glpat-", 20, B64URL),
        token("xoxb-2315-6789012345-", 24, ALNUM),
        token("xoxp-2315-6789012345-", 32, ALNUM),
        format!(
            "hooks.slack.com/services/T0{}/B0{}/{}",
            body(90, 8, UPPER),
            body(91, 8, UPPER),
            body(92, 24, ALNUM)
        ),
        token("sk_live_", 24, ALNUM),
        token("rk_live_", 24, ALNUM),
        token("whsec_", 32, ALNUM),
        token("AKIA", 16, UPPER),
        token("ASIA", 16, UPPER),
        token("AIza", 35, B64URL),
        token("ya29.a0", 60, B64URL),
        token("GOCSPX-", 28, B64URL),
        token("SK", 32, HEX),
        format!("SG.{}.{}", body(93, 22, B64URL), body(94, 43, B64URL)),
        token("key-", 32, HEX),
        format!("{}-us14", body(95, 32, HEX)),
        token("npm_", 36, ALNUM),
        token("pypi-AgEIcHlwaS5vcmc", 60, B64URL),
        token("shpat_", 32, HEX),
        token("shpss_", 32, HEX),
        token("HRKU-AA", 58, B64URL),
        token("dop_v1_", 64, HEX),
        format!(
            "M{}.{}.{}",
            body(96, 25, ALNUM),
            body(97, 6, B64URL),
            body(98, 38, B64URL)
        ),
        format!(
            "discord.com/api/webhooks/123456789012345678/{}",
            body(99, 68, B64URL)
        ),
        format!("5432167890:AA{}", body(100, 33, B64URL)),
        token("sk-proj-", 74, B64URL),
        token("sk-", 48, ALNUM),
        token("sk-ant-api03-", 93, B64URL),
        token("hf_", 34, ALNUM),
        token("dapi", 32, HEX),
        token("dp.pt.", 43, ALNUM),
        token("hvs.CAESI", 90, B64URL),
        token("ATATT3xFfGF0", 180, B64URL),
        token("lin_api_", 40, ALNUM),
        format!("PMAK-{}-{}", body(101, 24, HEX), body(102, 34, HEX)),
        token("pul-", 40, HEX),
        token("sntryu_", 64, HEX),
        token("sq0atp-", 22, B64URL),
        token("sq0csp-", 43, B64URL),
        token("NRAK-", 27, UPPER),
        format!("dt0c01.{}.{}", body(103, 24, UPPER), body(104, 64, UPPER)),
        token("glc_", 40, B64),
        format!("glsa_{}_{}", body(105, 32, ALNUM), body(106, 8, HEX)),
        format!("00{}", body(107, 40, ALNUM)),
        token("AGE-SECRET-KEY-1", 58, BECH32),
        token("shippo_live_", 40, HEX),
        format!("FLWSECK-{}-X", body(108, 32, HEX)),
        token("EAACEdEose0cBA", 120, ALNUM),
        token("AAAAAAAAAAAAAAAAAAAAA", 90, ALNUM),
        token("AKCp", 69, ALNUM),
        token("secret_", 43, ALNUM),
        token("ntn_", 46, ALNUM),
        token("glrt-", 20, B64URL),
        token("dckr_pat_", 27, B64URL),
        token("tskey-auth-", 40, ALNUM),
        token("xkeysib-", 81, HEX),
        token("rubygems_", 48, HEX),
        token("sbp_", 40, HEX),
        token("gsk_", 52, ALNUM),
        token("r8_", 37, ALNUM),
        token("glcbt-64_", 20, ALNUM),
        token("gloas-", 64, B64URL),
        token("glft-", 20, B64URL),
        token("glimt-", 25, B64URL),
        token("glagent-", 50, B64URL),
        token("glsoat-", 20, B64URL),
        token("glffct-", 20, B64URL),
        token("xoxe-1-", 146, UPPER),
        token("xoxe.xoxb-1-", 163, UPPER),
        format!(
            "xoxo-1234567890-2345678901-3456789012-{}",
            body(109, 32, HEX)
        ),
        token("ABIA", 16, UPPER),
        token("ACCA", 16, UPPER),
        token("A3TX", 16, UPPER),
        token("LTAI", 20, ALNUM),
        format!("v1.0-{}-{}", body(110, 24, HEX), body(111, 146, HEX)),
        token("api_org_", 34, ALPHA),
        token("eyJrIjoi", 72, ALNUM),
        token("hvb.", 138, B64URL),
        token("s.", 24, ALNUM),
        token("sha256~", 43, B64URL),
        token("tfp_", 59, B64URL),
        token("fio-u-", 64, B64URL),
        token("tk-us-", 48, B64URL),
        token("EZTK", 54, ALNUM),
        format!(
            "A3-{}-{}-{}-{}-{}",
            body(112, 6, UPPER),
            body(113, 11, UPPER),
            body(114, 5, UPPER),
            body(115, 5, UPPER),
            body(116, 5, UPPER)
        ),
        token("p8e-", 32, ALNUM),
        token("4b1d", 38, ALNUM),
        token("fo1_", 43, B64URL),
        token("fm2_", 120, B64),
        token("sm_pat_", 16, ALNUM),
        token("s-s4t2ud-", 64, HEX),
        format!("pat{}.{}", body(117, 14, ALNUM), body(118, 64, HEX)),
        token("phx_", 43, ALNUM),
        token("sb_secret_", 31, B64URL),
        token("tvly-dev-", 32, ALNUM),
        token("1//0", 100, B64URL),
        format!(
            "acme.webhook.office.com/webhookb2/{}@{}/IncomingWebhook/{}/{}",
            body(119, 36, HEX),
            body(120, 36, HEX),
            body(121, 32, HEX),
            body(122, 36, HEX)
        ),
        format!(
            "api.telegram.org/bot5432167890:AA{}/sendMessage",
            body(123, 33, B64URL)
        ),
    ]
    .into_iter()
    .map(
        |token| match token.find("://").or_else(|| token.find(".com/")) {
            // Webhook URLs: the secret is the last path segment.
            Some(_) => {
                let secret = token.rsplit('/').next().unwrap_or_default().to_owned();
                webhook(format!("https://{token}"), secret)
            }
            None => prefixed(token),
        },
    )
    .collect()
}

fn secret_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Provider tokens, each in a sentence so the token must be found inside text.
    for (index, (token, secret)) in provider_tokens().into_iter().enumerate() {
        let carrier = VALUE_CARRIERS[index % VALUE_CARRIERS.len()];
        let text = match carrier {
            MapKey | Variant => token.clone(),
            NestedJson => format!(r#"{{"service":"upload","key":"{token}"}}"#),
            _ => format!("using {token} for upload"),
        };
        cases.push(case("provider-token", carrier, text, &secret));
    }

    // Tokens known by a part inside them rather than a prefix: an Azure AD client secret
    // (`…8Q~…`), a Facebook app token (`app_id|app_secret`) and a MaxMind license key
    // (`…_mmk`).
    let azure_secret = format!("{}8Q~{}", body(1030, 3, ALNUM), body(1031, 34, ALNUM));
    let facebook_secret = body(1032, 32, HEX);
    let maxmind_key = format!("{}_{}_mmk", body(1034, 6, ALNUM), body(1035, 29, ALNUM));
    for (index, (text, secret)) in [
        (
            format!("using {azure_secret} for graph"),
            azure_secret.clone(),
        ),
        (
            format!("graph?client=1234567890123456|{facebook_secret}"),
            facebook_secret.clone(),
        ),
        (
            format!("geoipupdate with {maxmind_key} failed"),
            maxmind_key.clone(),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Debug, Field, Display][index];
        cases.push(case("provider-token", carrier, text, &secret));
    }

    // Names: a sensitive word anywhere in the name withholds an ordinary-looking value.
    let names: &[&'static str] = &[
        "customer_ssn",
        "card_cvc",
        "auth_code",
        "passwords",
        "user_passwords",
        "db_pass",
        "smtp_password",
        "apiKeys",
        "APIKey",
        "x-api-key",
        "client_secret",
        "refresh_tokens",
        "session_id",
        "secret_id",
        "AccountKey",
        "mfa_code",
        "otp_code",
        "recovery_codes",
        "verification_code",
        "social_security_number",
        "cardPin",
        "jwt_secret",
        "webhook_secret",
        "signing_key",
        "encryption_key",
        "connection_string",
        "sentry_dsn",
        "pwd",
        "Set-Cookie",
        "sid",
        "X-Amz-Security-Token",
        "csrftoken",
        "PHPSESSID",
        "authToken",
        "private_key",
        "passphrase",
        "passcode",
        "DBPASS",
        "AUTHKEY",
        "subscription_key",
        "Passwort",
        "mot_de_passe",
        "access_code",
        "code_verifier",
        "seedPhrase",
        "x-functions-key",
        "contrasena",
        "senha",
        "Kennwort",
        "wachtwoord",
        "haslo",
        "salasana",
    ];
    let name_carriers = [
        NamedField, NamedKey, Debug, NestedJson, Display, VariantKey, Display, Display, Display,
        Display,
    ];
    for (index, &name) in names.iter().enumerate() {
        let value = format!("Vq{}", body(200 + index as u64, 10, ALNUM));
        let carrier = name_carriers[index % name_carriers.len()];
        let layout = index % name_carriers.len();
        let mut entry = named("name", carrier, name, &value);
        // The Display carriers present the labelled value in different text formats.
        entry.text = match layout {
            4 => format!("name: alice\n{name}: {value}\nrole: admin"),
            6 => format!("a=1&{name}={value}&b=2"),
            7 => format!("<req><{name}>{value}</{name}></req>"),
            8 => format!("<{name} value=\"{value}\"/>"),
            9 => format!("{{\"user\":\"alice\",\"{name}\":\"{value}\"}}"),
            _ => value.clone(),
        };
        cases.push(entry);
    }
    // Escaped JSON inside Debug text (a String holding JSON, printed with `?`).
    for (index, name) in ["password", "api_key", "token", "client_secret"]
        .iter()
        .enumerate()
    {
        let value = format!("Wx{}", body(300 + index as u64, 12, ALNUM));
        cases.push(case(
            "escaped-json",
            Debug,
            format!("{{\"user\":\"bob\",\"{name}\":\"{value}\"}}"),
            &value,
        ));
    }

    // Credentials in URLs and connection strings.
    let password = |seed| format!("Pz{}", body(seed, 14, ALNUM));
    let urls = [
        (
            format!("postgres://app:{}@db.internal:5432/orders", password(400)),
            password(400),
        ),
        (
            format!(
                "mongodb+srv://svc:{}@cluster0.abcde.mongodb.net/x",
                password(401)
            ),
            password(401),
        ),
        (
            format!("redis://:{}@cache:6379/0", password(402)),
            password(402),
        ),
        (
            format!("amqp://guest:{}@mq:5672/", password(403)),
            password(403),
        ),
        (
            format!("https://{}@github.com/org/repo.git", body(404, 40, ALNUM)),
            body(404, 40, ALNUM),
        ),
        (
            format!(
                "Server=db;Database=shop;User Id=sa;Password={};",
                password(405)
            ),
            password(405),
        ),
        (
            format!("Driver={{ODBC}};Uid=app;Pwd={};", password(406)),
            password(406),
        ),
        (
            format!(
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={}==;EndpointSuffix=core.windows.net",
                body(407, 86, B64)
            ),
            body(407, 86, B64),
        ),
        (
            format!(
                "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={}=",
                body(408, 43, B64)
            ),
            body(408, 43, B64),
        ),
        (
            format!(
                "https://acct.blob.core.windows.net/c/f?sv=2022-11-02&se=2026-12-01&sig={}%3D",
                body(409, 40, ALNUM)
            ),
            body(409, 40, ALNUM),
        ),
        (
            format!(
                "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={}",
                body(410, 64, HEX)
            ),
            body(410, 64, HEX),
        ),
        (
            format!(
                "https://storage.googleapis.com/b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature={}",
                body(411, 64, HEX)
            ),
            body(411, 64, HEX),
        ),
        (
            format!("mysql://root:{}@10.0.0.5/app", password(412)),
            password(412),
        ),
        (
            format!("ftp://deploy:{}@files.example.com/", password(413)),
            password(413),
        ),
    ];
    for (index, (text, secret)) in urls.into_iter().enumerate() {
        let carrier = [Field, Debug, Display, SpanField, Bytes, NestedJson, Panic][index % 7];
        cases.push(case("url-credential", carrier, text, &secret));
    }

    // Authorization headers of any scheme.
    let response = body(500, 32, HEX);
    let token = body(501, 40, HEX);
    let signature = body(502, 64, HEX);
    let negotiate = format!("YIIGhgYGKwYBBQUCoIIGej{}", body(503, 60, B64));
    let basic = "YWRtaW46Y29ycmVjdCBob3JzZQ==".to_owned(); // admin:correct horse
    let bearer = body(504, 40, B64URL);
    let headers = [
        (
            format!(
                "Authorization: Digest username=\"admin\", realm=\"api\", nonce=\"{}\", uri=\"/\", response=\"{response}\"",
                body(505, 16, HEX)
            ),
            response.clone(),
        ),
        (format!("Authorization: Token {token}"), token.clone()),
        (
            format!(
                "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261201/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}"
            ),
            signature.clone(),
        ),
        (
            format!("Authorization: Negotiate {negotiate}"),
            negotiate.clone(),
        ),
        (format!("Proxy-Authorization: Basic {basic}"), basic.clone()),
        (
            format!("curl -H 'Authorization: Bearer {bearer}' https://api"),
            bearer.clone(),
        ),
        (format!("Token {token} was rotated"), token.clone()),
        (
            format!("Digest username=\"ops\", response=\"{response}\""),
            response.clone(),
        ),
    ];
    for (index, (text, secret)) in headers.into_iter().enumerate() {
        let carrier = [
            Display, Debug, Field, SpanField, Bytes, Display, Field, Debug,
        ][index];
        cases.push(case("authorization", carrier, text, &secret));
    }

    // Cookies: sensitive and session-ish names among harmless ones.
    let cookies = [
        ("session", body(600, 24, ALNUM)),
        ("csrftoken", body(601, 32, ALNUM)),
        ("sid", body(602, 24, ALNUM)),
        ("JSESSIONID", body(603, 32, HEX)),
        ("remember_token", body(604, 30, ALNUM)),
        ("_gh_sess", body(605, 40, B64URL)),
        ("laravel_session", body(606, 40, ALNUM)),
    ];
    for (index, (cookie, value)) in cookies.into_iter().enumerate() {
        let text = if index % 2 == 0 {
            format!("Cookie: theme=dark; {cookie}={value}; lang=en")
        } else {
            format!("Set-Cookie: {cookie}={value}; Path=/; HttpOnly")
        };
        let carrier = [Display, Field, Debug, SpanField][index % 4];
        cases.push(case("cookie", carrier, text, &value));
    }

    // Card numbers as integers and text; only real brands with Luhn.
    for (index, card) in [
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "3530111333300000",
        "2223003122003222",
    ]
    .iter()
    .enumerate()
    {
        cases.push(case("card-integer", Integer, *card, card));
        let spaced: String = card
            .chars()
            .enumerate()
            .flat_map(|(i, c)| (i > 0 && i % 4 == 0).then_some(' ').into_iter().chain([c]))
            .collect();
        let carrier = [Field, Debug, Bytes, Display, SpanField, NestedJson][index];
        cases.push(case(
            "card-text",
            carrier,
            format!("paid with {spaced}"),
            card,
        ));
    }

    // Private keys: whole, and split over several strings.
    for (index, kind) in [
        "RSA PRIVATE KEY",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
    ]
    .iter()
    .enumerate()
    {
        let lines: Vec<String> = (0..4)
            .map(|line| body(700 + index as u64 * 10 + line, 64, B64))
            .collect();
        let pem = format!(
            "-----BEGIN {kind}-----\n{}\n-----END {kind}-----\n",
            lines.join("\n")
        );
        let carrier = [Lines, NestedJson, Debug, Lines][index];
        let text = if carrier == NestedJson {
            format!(
                r#"{{"type":"service_account","private_key_id":"k1","client_email":"x@y.iam.gserviceaccount.com","pk":"{}"}}"#,
                pem.replace('\n', "\\n")
            )
        } else {
            pem
        };
        for line in &lines {
            cases.push(case("private-key", carrier, text.clone(), line));
        }
    }

    // Credentials documents and keys encoded whole in base64, where no label names them (a
    // Kubernetes Secret's data, a CI variable holding a key file).
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let key_lines: Vec<String> = (0..3).map(|line| body(1020 + line, 64, B64)).collect();
    let private_key = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        key_lines.join("\n")
    );
    let registry_auth = encode(&format!("ci:{}", body(1023, 20, ALNUM)));
    for (index, document) in [
        private_key.clone(),
        format!(
            "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"shop\",\n  \"private_key\": {:?}\n}}\n",
            private_key
        ),
        format!(r#"{{"auths":{{"registry.example.com":{{"auth":"{registry_auth}"}}}}}}"#),
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user:\n    token: {}\n",
            body(1024, 40, ALNUM)
        ),
        format!(r#"{{"username":"ci","password":"{}"}}"#, body(1025, 20, ALNUM)),
    ]
    .iter()
    .enumerate()
    {
        let encoded = encode(document);
        let carrier = [Field, Lines, Debug, SpanField, NestedJson][index];
        cases.push(case("encoded", carrier, encoded.clone(), &encoded));
    }

    // JWTs and an AWS secret key by its label.
    for seed in 0..3 {
        let jwt = format!(
            "eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}",
            body(800 + seed, 40, B64URL),
            body(810 + seed, 43, B64URL)
        );
        let carrier = [Display, Bytes, MapKey][seed as usize];
        cases.push(case("jwt", carrier, format!("jwt {jwt}"), &jwt));
    }
    let aws_secret = body(820, 40, B64);
    cases.push(case(
        "aws-secret",
        Display,
        format!("aws_secret_access_key = {aws_secret}"),
        &aws_secret,
    ));

    // Shapes a holdout corpus found leaking: escapes before a token or a label, bracketed
    // form names, YAML blocks and multi-line strings, Debug newtypes and variants, JWTs with
    // spaced headers or joined to a word, URL passwords with `/`, Redis passwords alone.
    let token = format!("ghp_{}", body(1000, 36, ALNUM));
    for (index, before) in ["\\n", "\\t", "\\u003e", "%3D", "%22"].iter().enumerate() {
        let carrier = [Debug, Field, NestedJson, Display, Bytes][index];
        cases.push(case(
            "escaped",
            carrier,
            format!("line one{before}{token} line two"),
            &token,
        ));
    }
    let pin = body(1001, 12, ALNUM);
    cases.push(case(
        "escaped",
        Display,
        format!("a: 1\\npass: {pin}"),
        &pin,
    ));
    let session = body(1002, 24, ALNUM);
    cases.push(case(
        "escaped",
        Field,
        format!("x=1\\u0026session={session}"),
        &session,
    ));
    let form_password = body(1003, 16, ALNUM);
    for text in [
        format!("user[password]={form_password}&user[email]=a%40b.c"),
        format!("user%5Bpassword%5D={form_password}&user%5Bemail%5D=a%40b.c"),
    ] {
        cases.push(case("escaped", Display, text, &form_password));
    }
    let block = body(1004, 32, B64);
    cases.push(case(
        "multi-line",
        Display,
        format!("db:\n  password: |\n    {block}\n  user: bob\n"),
        &block,
    ));
    cases.push(case(
        "multi-line",
        Field,
        format!("client_secret: >-\n  {block}\nnext: 1"),
        &block,
    ));
    cases.push(case(
        "multi-line",
        Field,
        format!("password:\n  {block}\nuser: bob"),
        &block,
    ));
    cases.push(case(
        "multi-line",
        Display,
        format!("password = \"\"\"\n{block}\n\"\"\"\n"),
        &block,
    ));
    let newtype = body(1005, 24, ALNUM);
    for text in [
        format!("ApiKey(\"{newtype}\")"),
        format!("Some(Credential::Password(\"{newtype}\"))"),
        format!("[SessionToken(\"{newtype}\")]"),
    ] {
        cases.push(case("debug-newtype", Display, text, &newtype));
    }
    for (index, jwt) in [
        format!(
            "eyAiYWxnIjogIkhTMjU2In0.eyAic3ViIjogIm9wcyJ9.{}",
            body(1006, 43, B64URL)
        ),
        format!(
            "ewogImFsZyI6ICJIUzI1NiJ9.ewogInN1YiI6ICJvcHMifQ.{}",
            body(1007, 43, B64URL)
        ),
    ]
    .iter()
    .enumerate()
    {
        let signature = jwt.rsplit('.').next().unwrap_or_default();
        let text = [format!("forwarded {jwt} upstream"), format!("jwt-{jwt}")][index].clone();
        cases.push(case("jwt", Display, text, signature));
    }
    let url_password = format!("Pz/{}", body(1008, 14, ALNUM));
    cases.push(case(
        "url-credential",
        Display,
        format!("https://ops:{url_password}@git.internal/acme/app.git"),
        &url_password,
    ));
    let redis_password = body(1009, 16, ALNUM);
    cases.push(case(
        "url-credential",
        Field,
        format!("redis://{redis_password}@cache.internal:6379/0"),
        &redis_password,
    ));

    // Command lines: a flag's value as the next word, or the next argument, and a label at
    // the end of one line with its value on the next.
    let argument = body(1011, 16, ALNUM);
    cases.push(case(
        "command-line",
        Display,
        format!("mysql --user app --password {argument} orders"),
        &argument,
    ));
    cases.push(case(
        "command-line",
        Field,
        format!("deploy --api-key \"{argument}\" --region eu"),
        &argument,
    ));
    cases.push(case(
        "command-line",
        Lines,
        format!("psql\n--password\n{argument}\n--host\ndb"),
        &argument,
    ));
    cases.push(case(
        "command-line",
        Lines,
        format!("db:\n  password:\n    {argument}\n  host: db"),
        &argument,
    ));

    // A tool's own short flag for its password, and SQL's quoted passwords.
    let short = body(1012, 16, ALNUM);
    for (index, text) in [
        format!("mysql -h db.internal -u root -p{short} orders"),
        format!(r#"["mysqldump", "-uroot", "-p{short}", "orders"]"#),
        format!("sshpass -p '{short}' ssh deploy@10.0.0.7"),
        format!("docker login -u ci -p {short} registry.example.com"),
        format!("redis-cli -h cache -a {short} PING"),
        format!("/usr/bin/openssl enc -aes-256-cbc -k {short} -in backup.tar"),
        format!("curl -sS -u admin:{short} https://api.internal/v1/jobs"),
        format!("curl --user deploy:{short} -X POST https://ci.internal/hook"),
        format!("ALTER USER app WITH PASSWORD '{short}'"),
        format!("CREATE USER 'app'@'%' IDENTIFIED BY '{short}';"),
        format!("ALTER ROLE replicator WITH LOGIN PASSWORD E'{short}';"),
        format!("db.internal:5432:orders:app:{short}"),
        format!("# ~/.pgpass\n*:*:*:replicator:{short}\n"),
        format!("curl -fsSu deploy:{short} https://ci.internal/hook"),
        // More tools' own flags, and a flag grouped with others, its value joined.
        format!("mariadb-dump -u backup -p{short} --all-databases"),
        format!("mongosh --host db -u admin -p {short} admin"),
        format!(r#"sqlcmd -S sql01 -U sa -P {short} -Q "SELECT 1""#),
        format!("ldapsearch -x -D cn=admin,dc=example -w {short} -b dc=example"),
        format!("zip -r -P {short} backup.zip /srv/data"),
        format!("7z a -p{short} backup.7z /srv/data"),
        format!("smbclient //files/share -U svc%{short} -c ls"),
        format!("curl -suadmin:{short} https://api.internal/v1/jobs"),
        format!("rabbitmqadmin -u guest -p {short} list queues"),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Display, Debug, Field, Bytes, SpanField][index % 5];
        cases.push(case("command-line", carrier, text, &short));
    }
    // MySQL's double-quoted passwords, and a double-quoted value after a sensitive word.
    let double = body(1017, 16, ALNUM);
    for (index, text) in [
        format!(r#"CREATE USER 'app'@'%' IDENTIFIED BY "{double}";"#),
        format!(r#"ALTER USER 'app'@'%' IDENTIFIED WITH mysql_native_password BY "{double}""#),
        format!(r#"GRANT ALL ON shop.* TO 'app'@'%' IDENTIFIED BY "{double}""#),
        format!(r#"ALTER USER app IDENTIFIED BY "{double}" ACCOUNT UNLOCK"#),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Debug, Display, Field, Debug][index];
        cases.push(case("command-line", carrier, text, &double));
    }

    // Directives at the start of a line: configuration files and protocol transcripts.
    let directive = body(1013, 16, ALNUM);
    for (index, text) in [
        format!("bind 0.0.0.0\nrequirepass {directive}\nmaxmemory 2gb"),
        format!("USER deploy\r\nPASS {directive}\r\n"),
        format!("a001 LOGIN ops@example.com {directive}"),
        format!("AUTH {directive}"),
        format!("machine api.example.com login ops password {directive}"),
        format!("machine api.example.com\n  login ops\n  password {directive}\n"),
        format!("FROM node:22\nENV STRIPE_API_KEY {directive}\nRUN npm ci"),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Display, Field, Bytes, SpanField][index % 4];
        cases.push(case("directive", carrier, text, &directive));
    }
    // The same directives where Debug writes each line break as an escape (a transcript or a
    // configuration file held in a struct's field), and an IMAP login in lower case.
    let escaped = body(1016, 16, ALNUM);
    for (index, text) in [
        format!("bind 0.0.0.0\\nrequirepass {escaped}\\nmaxmemory 2gb"),
        format!("USER deploy\\r\\nPASS {escaped}\\r\\n"),
        format!("machine api.example.com\\n  login ops\\n  password {escaped}\\n"),
        format!("FROM node:22\\nENV STRIPE_API_KEY {escaped}\\nRUN npm ci"),
        format!("* OK IMAP4rev1 ready\\na001 LOGIN ops@example.com {escaped}"),
        format!("a002 login ops@example.com {escaped}"),
    ]
    .into_iter()
    .enumerate()
    {
        // Written with the escapes themselves, as Debug writes them.
        let carrier = [Display, Field, Bytes, SpanField][index % 4];
        cases.push(case("directive", carrier, text, &escaped));
    }
    for text in [
        format!("bind 0.0.0.0\nrequirepass {escaped}\n"),
        format!("USER deploy\nPASS {escaped}\n"),
    ] {
        cases.push(case("directive", Debug, text, &escaped));
    }
    // A SASL LOGIN exchange in an SMTP transcript: the password answers its base64 prompt.
    let sasl = body(1033, 16, B64);
    for carrier in [Display, Debug] {
        let text =
            format!("AUTH LOGIN\r\n334 VXNlcm5hbWU6\r\nYWRh\r\n334 UGFzc3dvcmQ6\r\n{sasl}\r\n");
        cases.push(case("directive", carrier, text, &sasl));
    }

    // A sensitive name given as a neighbouring value, as name/value lists write it.
    let named_value = body(1010, 20, ALNUM);
    for text in [
        format!(
            r#"[{{"name":"HOME","value":"/root"}},{{"name":"DB_PASSWORD","value":"{named_value}"}}]"#
        ),
        format!(
            r#"{{"Name":"/prod/app/db_password","Type":"SecureString","Value":"{named_value}"}}"#
        ),
        format!(r#"{{"settings":[{{"key":"stripe_api_key","value":"{named_value}"}}]}}"#),
    ] {
        cases.push(case("name-as-value", JsonValue, text, &named_value));
    }
    // The name after its value, in text.
    let named_after = body(1015, 20, ALNUM);
    for (index, text) in [
        format!(r#"[{{"value":"{named_after}","name":"DB_PASSWORD"}}]"#),
        format!(r#"<add value="{named_after}" key="StripeApiKey"/>"#),
        format!("env:\n  - value: {named_after}\n    name: DB_PASSWORD\n"),
    ]
    .into_iter()
    .enumerate()
    {
        // Not Debug for the YAML: escaped line breaks are a known miss (redaction's docs).
        let carrier = [Debug, Display, Field][index];
        cases.push(case("name-as-value", carrier, text, &named_after));
    }
    // The name after its value: a `serde_json::Value` object's keys come sorted, and an
    // upper-case `Value` sorts before `key` and `name`.
    for text in [
        format!(r#"[{{"Value":"{named_after}","key":"DB_PASSWORD"}}]"#),
        format!(
            r#"{{"Type":"SecureString","Value":"{named_after}","name":"/prod/app/stripe_api_key"}}"#
        ),
    ] {
        cases.push(case("name-as-value", JsonValue, text, &named_after));
    }
    for (index, text) in [
        format!(r#"[{{"name":"HOME","value":"/root"}},{{"name":"DB_PASSWORD","value":"{named_value}"}}]"#),
        format!(r#"{{"Name":"/prod/app/db_password","Type":"SecureString","Value":"{named_value}"}}"#),
        format!(r#"<appSettings><add key="StripeApiKey" value="{named_value}"/></appSettings>"#),
        format!("env:\n  - name: DB_PASSWORD\n    value: {named_value}\n  - name: HOME\n    value: /root"),
        format!(r#"<property name="password" value="{named_value}"/>"#),
        format!(r#"[("HOME", "/root"), ("DB_PASSWORD", "{named_value}")]"#),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [NestedJson, Display, Debug, Field, Bytes, Display][index];
        cases.push(case("name-as-value", carrier, text, &named_value));
    }

    // A passphrase of several words, the one assignment on its line.
    let phrase = "correct horse battery staple";
    for (index, text) in [
        format!("db.password={phrase}\ndb.user=ada"),
        format!("[vault]\npassphrase = {phrase}\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Display, Field][index];
        cases.push(case("passphrase", carrier, text, phrase));
    }
    // ... and on a line of several assignments, up to the next one.
    let phrase = "tangerine otter velvet quarry";
    for (index, text) in [
        format!("user=ada password={phrase} host=db.internal"),
        format!("level=warn user=ada passphrase={phrase} attempt=2"),
        format!("login failed: user=ada pass={phrase}\nretrying"),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Display, Debug, Field][index];
        cases.push(case("passphrase", carrier, text, phrase));
    }

    // Labels in other scripts, inside text.
    let foreign = body(1014, 16, ALNUM);
    for (index, text) in [
        format!("usuario: ada\ncontraseña: {foreign}"),
        format!("логин=ada пароль={foreign}"),
        format!(r#"{{"usuario":"ada","Contraseña":"{foreign}"}}"#),
        format!("Пароль: {foreign}"),
        format!("login=ada&hasło={foreign}"),
        format!("用户名：ada，pin={foreign}"),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Display, Debug, Field, Display, Debug, Field][index];
        cases.push(case("foreign-label", carrier, text, &foreign));
    }
    // In capitals outside ASCII, as a label and as a name.
    let capitals = body(1016, 16, ALNUM);
    for (index, text) in [
        format!("ПАРОЛЬ: {capitals}"),
        format!("ЛОГИН=ada ПАРОЛЬ={capitals}"),
    ]
    .into_iter()
    .enumerate()
    {
        let carrier = [Display, Debug][index];
        cases.push(case("foreign-label", carrier, text, &capitals));
    }
    for (index, name) in ["ПАРОЛЬ", "userПароль", "HASŁO"].into_iter().enumerate() {
        let carrier = [NamedField, NamedKey, NamedField][index];
        cases.push(named("foreign-label", carrier, name, &capitals));
    }

    // Values the agent cuts, and values cut before they reach it.
    for pad in [240usize, 250, 254] {
        let token = format!("ghp_{}", body(900 + pad as u64, 36, ALNUM));
        cases.push(case(
            "truncated",
            Field,
            format!("{} {token}", "a".repeat(pad)),
            &token,
        ));
    }
    let span_token = format!("glpat-{}", body(910, 20, B64URL));
    cases.push(case(
        "truncated",
        SpanField,
        format!("{} {span_token}", "s".repeat(500)),
        &span_token,
    ));
    let panic_token = format!("sk_live_{}", body(911, 24, ALNUM));
    cases.push(case(
        "truncated",
        Panic,
        format!("{} {panic_token}", "p".repeat(190)),
        &panic_token,
    ));
    cases
}

fn benign_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let names: &[(&'static str, &str)] = &[
        ("token_count", "1234"),
        ("max_tokens", "4096"),
        ("prompt_tokens", "812"),
        ("completion_tokens", "377"),
        ("token_type", "access"),
        ("password_policy_version", "v3"),
        ("password_min_length", "12"),
        (
            "public_key",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        ),
        ("client_id", "9f3c2a7e-52b1-4f0e-8d0c-7b6a5e4d3c2b"),
        ("transaction_id", "txn_3MtwBwLkdIwHu7ix28a3tqPa"),
        ("session_count", "17"),
        ("auth_method", "oauth"),
        ("secret_name", "prod/db/primary"),
        ("session_timeout", "1800"),
        ("signature_algorithm", "RS256"),
        ("token_expires_at", "2026-12-01T10:00:00Z"),
        ("cookie_name", "theme"),
        ("has_password", "true"),
        ("key_id", "kid-2026-11"),
        ("primary_key", "order_id"),
        ("author", "Ada Lovelace"),
        ("shipping_address", "221B Baker Street"),
        ("classname", "CheckoutService"),
        ("total_tokens", "1189"),
        ("password_strength", "strong"),
        ("auth_provider", "okta"),
        ("jwt_issuer", "https://auth.example.com"),
        ("oauth_provider", "github"),
        ("session_duration_ms", "1532"),
        ("tokens_per_second", "250"),
        ("auth_latency_ms", "23"),
        ("cookie_secure", "true"),
        (
            "secret_arn",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db",
        ),
        ("password_requirements", "min 12 chars"),
        ("active_sessions", "42"),
        ("csrf_protection", "enabled"),
    ];
    for (index, (name, value)) in names.iter().enumerate() {
        let carrier = [NamedField, NamedKey, Display][index % 3];
        let mut entry = named("harmless-name", carrier, name, value);
        if carrier == Display {
            entry.text = format!("{name}: {value}");
        }
        cases.push(entry);
    }
    // Long integers that are not cards: timestamps and snowflake ids, made Luhn-valid.
    for value in [
        1_733_000_000_000u64,
        1_733_011_223_344,
        1_733_000_000_000_000,
        1_733_000_000_000_000_000,
        1_541_815_603_606_036_480,
        175_928_847_299_117_063,
        1_234_567_890_123_456,
        9_007_199_254_740_993,
    ] {
        let luhn_valid = (0..10)
            .map(|last| value - value % 10 + last)
            .find(|candidate| luhn(&candidate.to_string()))
            .expect("a last digit makes it Luhn-valid");
        cases.push(case(
            "integer",
            Integer,
            luhn_valid.to_string(),
            &luhn_valid.to_string(),
        ));
    }
    let texts = [
        "550e8400-e29b-41d4-a716-446655440000",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
        "sk-learn 1.3.2 installed",
        "the bearer of bad news",
        "Basic plan, billed monthly",
        "Token expired, please sign in again",
        "https://example.com/search?q=loupe&page=2",
        "postgres://db.internal:5432/orders",
        "git@github.com:acme/shop.git",
        "2026-12-01T10:11:12.123456789Z",
        "ada@example.com",
        "+1 415 555 0100",
        "Asia/Tokyo",
        "Cookie: theme=dark; lang=en",
        "Authorization header missing",
        "card ending 4242",
        "SKU-000123",
        "order 1733000000001 shipped",
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
        "<note>call back after 5pm</note>",
        "retry in 30s (attempt 3 of 5)",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
        "Digest of the week: 3 incidents",
        "user=ada role=admin region=eu-west-1",
        "{\"token_count\": 12, \"model\": \"large\"}",
        "password_policy: strict",
        "GET /api/v1/orders/8842?expand=items",
        // Look-alikes of the escape, newtype, YAML and URL rules.
        "Some(OrderId(1042)) after Retry(3)",
        "line one\\nnext line\\tand a tab",
        "name: |\n  a folded description\nnext: 1",
        "https://host:8080/users/@alice",
        "a new ewe with eyes",
        "filter[status]=shipped&page%5Bsize%5D=20",
        "[{\"name\":\"HOME\",\"value\":\"/root\"},{\"key\":\"retries\",\"value\":\"7\"}]",
        "Supports Bearer authentication for all v2 endpoints",
        "cargo test --workspace --all-targets -- --nocapture",
        "checked out branch sk-fix-payment-webhook-retry-backoff-logic",
        "see https://sl.wikipedia.org/wiki/Seznam_slovenskih_narodnih_jedi_in_pijac_po_regijah_ter_zgodovinskih_obdobjih_od_srednjega_veka_do_danasnjih_dni",
        "artifact digest sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c",
        // Look-alikes of the tools' short flags: a port, a user, a prompt for the password.
        "docker run -p 8080:80 -u app shop:latest",
        "ssh -p 2222 deploy@10.0.0.7",
        "mysql -h db -u root -p orders",
        "curl -u admin https://api.internal/v1/jobs",
        "SELECT password_changed_at FROM users WHERE name = 'ada'",
        // Look-alikes of the line directives.
        "PASSED 12 tests",
        "default password policy is strict",
        "machine learning model loaded after the login page",
        "ENV NODE_ENV production",
        "password reset requested for ada",
        "2 login attempts failed",
        "retry\\nPASS rate 98 percent\\n",
        "first line\\npassword policy updated",
        r#"the "token" field is optional"#,
        r#"IDENTIFIED BY is not "supported" here"#,
        r#"search by "token" or "user""#,
        // Look-alikes of the short provider prefixes (`s.`, `pat`, `v1.0-`, `4b1d`, `A3-`).
        "calls s.ReadAll(r) then s.CloseWithError(err)",
        "pattern.matcher.group(1) from patience.test.util",
        "release v1.0-rc.2-2024-11-30 is tagged",
        "layer 4b1d3c2a of the image is cached",
        "paper size A3-landscape, 2 copies",
        // Look-alikes of the labels in other scripts.
        "descripción: pedido enviado",
        "Straße: Hauptstraße 5, Köln",
        "статус=доставлен",
        // Look-alikes of the tokens known by a part inside them.
        "see ~/.config/loupe and v2Q~draft",
        "ids 1733000000000000|1733000000000001|1733000000000002",
        // Look-alikes of short flags given together.
        "curl -fsSLo install.sh https://get.example.com",
        // Look-alikes found in review: prose quoting a name after a sensitive word, and a
        // pipe-delimited line with a microsecond timestamp.
        r#"unexpected token "}" at line 3"#,
        "1712345678901234|550e8400-e29b-41d4-a716-446655440000",
        // A log line's words after a value that no sensitive label names stay.
        "user=ada status=ok took 3ms retries=0",
        // Look-alikes of a prefix-less format: snake_case names, one ending in `_mmk`.
        "handle_request_with_retries_and_backoff_mmkv",
        "cache_mmk load_mmk_index",
        // The same letters on other tools' lines: a port, an archive's path, a width.
        "ssh -p 2222 deploy@10.0.0.7 && zipinfo -P backup.zip",
        "tar -czf /backups/2026-12-04.tgz -P /srv/data",
        "curl -sSL -o install.sh https://example.com/install.sh",
    ];
    for (index, text) in texts.iter().enumerate() {
        let carrier = [Field, Debug, Display, Bytes, SpanField, NestedJson, MapKey][index % 7];
        cases.push(case("text", carrier, *text, text));
    }
    // Look-alikes of the encoded documents: the same shapes holding nothing secret.
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    for (index, document) in [
        r#"{"user":"ada","page":2,"sort":"created_at"}"#,
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUEXAMPLE\n-----END CERTIFICATE-----\n",
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  region: eu-west-1\n",
    ]
    .iter()
    .enumerate()
    {
        let carrier = [Field, Debug, SpanField][index];
        cases.push(case(
            "encoded",
            carrier,
            encode(document),
            &encode(document),
        ));
    }
    // Look-alikes of the name/value pairs in a `serde_json::Value`: names that name nothing.
    for (text, shown) in [
        (
            r#"[{"name":"HOME","value":"/root"},{"name":"REGION","value":"eu-west-1"}]"#,
            "eu-west-1",
        ),
        (
            r#"{"Name":"/prod/app/max_connections","Type":"String","Value":"200"}"#,
            "200",
        ),
        (r#"{"key":"token_count","value":"4096"}"#, "4096"),
        (
            r#"{"Value":"/srv/checkout","key":"WORKDIR"}"#,
            "/srv/checkout",
        ),
    ] {
        cases.push(case("name-as-value", JsonValue, text, shown));
    }
    for (text, shown) in [
        (
            r#"[{"value":"/srv/checkout","name":"WORKDIR"}]"#,
            "/srv/checkout",
        ),
        (
            r#"{"value":"eu-west-1","name":"REGION","other":{"name":"DB_PASSWORD"}}"#,
            "eu-west-1",
        ),
    ] {
        cases.push(case("name-as-value", Display, text, shown));
    }
    cases
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, byte)| {
            let digit = u32::from(byte - b'0');
            if i % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// What the program hands to `snapshot!`, by carrier.
struct Held<'c>(&'c Case);

fn leak(text: &str) -> &'static str {
    Box::leak(text.to_owned().into_boxed_str())
}

impl Serialize for Held<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let case = self.0;
        match case.carrier {
            Field | Display | Debug | SpanField => {
                let mut record = serializer.serialize_struct("Record", 1)?;
                record.serialize_field("note", &case.text)?;
                record.end()
            }
            NamedField => {
                let mut record = serializer.serialize_struct("Record", 1)?;
                record.serialize_field(leak(case.name), &case.text)?;
                record.end()
            }
            NamedKey => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(case.name, &case.text)?;
                map.end()
            }
            MapKey => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(&case.text, &1u32)?;
                map.end()
            }
            Variant => serializer.serialize_unit_variant("Kind", 0, leak(&case.text)),
            VariantKey => {
                struct Key(&'static str);
                impl Serialize for Key {
                    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                        s.serialize_unit_variant("Field", 0, self.0)
                    }
                }
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(&Key(leak(case.name)), &case.text)?;
                map.end()
            }
            Bytes => {
                let mut bytes = vec![0xff, 0xfe, b' '];
                bytes.extend_from_slice(case.text.as_bytes());
                bytes.extend_from_slice(&[b' ', 0xc3, 0x28]);
                serializer.serialize_bytes(&bytes)
            }
            Panic => panic!("upload failed: {}", case.text),
            SerializeError => Err(S::Error::custom(format!("cannot encode {}", case.text))),
            NestedJson => {
                let json = if case.text.starts_with('{') {
                    case.text.clone()
                } else {
                    let mut document = serde_json::Map::new();
                    document.insert(case.name.to_owned(), case.text.clone().into());
                    serde_json::to_string(&document).expect("json")
                };
                let mut record = serializer.serialize_struct("Record", 1)?;
                record.serialize_field("payload", &json)?;
                record.end()
            }
            JsonValue => serde_json::from_str::<serde_json::Value>(&case.text)
                .expect("the case is JSON")
                .serialize(serializer),
            Lines => {
                let lines: Vec<&str> = case.text.lines().collect();
                lines.serialize(serializer)
            }
            Integer => serializer.serialize_u64(case.text.parse().expect("digits")),
        }
    }
}

impl fmt::Debug for Held<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A derived Debug of a struct with the case's field.
        write!(f, "Record {{ {}: {:?} }}", self.0.name, self.0.text)
    }
}

impl fmt::Display for Held<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

fn hit_serde(held: &Held<'_>) {
    snapshot!("corpus.serde", held);
}

fn hit_debug(held: &Held<'_>) {
    snapshot!("corpus.debug", ?held);
}

fn hit_display(held: &Held<'_>) {
    snapshot!("corpus.display", %held);
}

fn hit_plain() {
    snapshot!("corpus.span");
}

fn configure_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The corpus panics on purpose; the default hook would print every message.
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_purpose = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|message| message.starts_with("upload failed: "));
            if !on_purpose {
                default_hook(info);
            }
        }));
        loupe_agent::Engine::global()
            .configure(EngineConfig {
                // Hundreds of captures in a row: the CPU budget is not what this measures.
                cpu_budget: 1.0,
                ..EngineConfig::default()
            })
            .expect("config");
    });
}

/// Captures `case` the way its carrier says, and returns the snapshot and its encoding.
/// Captures run one at a time: the tests share their points.
fn capture(case: &Case) -> (Snapshot, Vec<u8>) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    configure_once();
    let point = match case.carrier {
        Debug => "corpus.debug",
        Display => "corpus.display",
        SpanField => "corpus.span",
        _ => "corpus.serde",
    };
    // A span field reaches snapshots when a capture asks for it (`note` is not a default).
    let spec = CaptureSpec::new("corpus", point)
        .max_snapshots(1)
        .span_fields(["note"])
        .rate(RateLimit {
            per_second: 1e6,
            burst: 1_000,
        });
    let mut stream = loupe_agent::arm(spec).expect("armed");
    let held = Held(case);
    match case.carrier {
        Debug => hit_debug(&held),
        Display => hit_display(&held),
        SpanField => {
            let subscriber = tracing_subscriber::registry().with(CorrelationLayer::new());
            tracing::subscriber::with_default(subscriber, || {
                let span = tracing::info_span!("request", note = %case.text);
                let _entered = span.enter();
                hit_plain();
            });
        }
        _ => hit_serde(&held),
    }
    let mut snapshots = drain(&mut stream);
    assert_eq!(snapshots.len(), 1, "{} {:?}", case.class, case.carrier);
    let snapshot = snapshots.remove(0);
    let encoded = snapshot.encode_to_vec();
    (snapshot, encoded)
}

/// Whether a benign case came out intact: nothing withheld, and its value visible as the
/// carrier shows it (an integer as itself, Debug text with its escapes).
fn kept_intact(case: &Case, snapshot: &Snapshot, encoded: &[u8]) -> bool {
    if !snapshot.redacted.is_empty() {
        return false;
    }
    match case.carrier {
        Integer => {
            let expected: u64 = case.secret.parse().expect("digits");
            snapshot.fields.iter().any(|field| {
                field.value.as_ref().and_then(|v| v.kind.as_ref()) == Some(&Kind::Uint(expected))
            })
        }
        Debug => {
            let escaped = format!("{:?}", case.secret);
            contains(encoded, escaped.trim_matches('"').as_bytes())
        }
        // Inside the JSON document, quotes and backslashes are escaped (unless the text is
        // the document itself).
        NestedJson if !case.text.starts_with('{') => {
            let escaped = serde_json::to_string(&case.secret).expect("json");
            contains(encoded, escaped.trim_matches('"').as_bytes())
        }
        _ => contains(encoded, case.secret.as_bytes()),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The first 8-byte window of `secret` found in `encoded`.
fn leaked_window<'s>(encoded: &[u8], secret: &'s str) -> Option<&'s str> {
    let window = secret.len().min(8);
    (0..=secret.len() - window)
        .filter_map(|start| secret.get(start..start + window))
        .find(|part| contains(encoded, part.as_bytes()))
}

/// The leaks among `cases`, one line each.
fn leaks_of<'c>(cases: impl IntoIterator<Item = &'c Case>) -> Vec<String> {
    let mut leaks = Vec::new();
    for case in cases {
        assert!(
            case.secret.len() >= 8,
            "{}: secret too short to test",
            case.class
        );
        let (_, encoded) = capture(case);
        if let Some(window) = leaked_window(&encoded, &case.secret) {
            leaks.push(format!(
                "[{}] via {:?}: {:?} leaked from {:?}",
                case.class, case.carrier, window, case.text
            ));
        }
    }
    leaks
}

/// One test per class, so a regression names its class.
macro_rules! class_tests {
    ($($test:ident: $class:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let cases = secret_cases();
            let class: Vec<&Case> = cases.iter().filter(|case| case.class == $class).collect();
            assert!(!class.is_empty());
            let leaks = leaks_of(class);
            assert!(leaks.is_empty(), "{}", leaks.join("\n"));
        }
    )*};
}

class_tests! {
    provider_tokens_do_not_leak: "provider-token",
    sensitive_words_anywhere_in_names_withhold: "name",
    escaped_json_in_debug_does_not_leak: "escaped-json",
    url_and_connection_string_credentials_do_not_leak: "url-credential",
    authorization_headers_of_any_scheme_do_not_leak: "authorization",
    session_cookies_do_not_leak: "cookie",
    card_integers_do_not_leak: "card-integer",
    card_text_does_not_leak: "card-text",
    private_keys_split_over_strings_do_not_leak: "private-key",
    jwts_do_not_leak: "jwt",
    tokens_and_labels_after_escapes_do_not_leak: "escaped",
    values_on_the_lines_after_their_label_do_not_leak: "multi-line",
    debug_newtypes_named_like_secrets_do_not_leak: "debug-newtype",
    values_named_by_a_neighbouring_name_do_not_leak: "name-as-value",
    command_line_values_do_not_leak: "command-line",
    directives_at_line_starts_do_not_leak: "directive",
    labelled_aws_secret_keys_do_not_leak: "aws-secret",
    values_cut_here_or_upstream_do_not_leak: "truncated",
    encoded_documents_do_not_leak: "encoded",
}

#[test]
fn corpus_leaks_nothing_and_keeps_benign_values() {
    let secrets = secret_cases();
    let benign = benign_cases();
    assert!(secrets.len() >= 150, "{} secrets", secrets.len());
    assert!(benign.len() >= 60, "{} benign values", benign.len());

    let leaks = leaks_of(&secrets);
    let mut withheld = Vec::new();
    for case in &benign {
        let (snapshot, encoded) = capture(case);
        if !kept_intact(case, &snapshot, &encoded) {
            withheld.push(format!(
                "[{}] via {:?}: {:?} withheld",
                case.class, case.carrier, case.text
            ));
        }
    }
    let over_redacted = withheld.len() as f64 / benign.len() as f64;
    println!(
        "redaction corpus: {} secrets, {} leaked; {} benign, {} withheld ({:.1} %)",
        secrets.len(),
        leaks.len(),
        benign.len(),
        withheld.len(),
        over_redacted * 100.0
    );
    for line in leaks.iter().chain(&withheld) {
        println!("  {line}");
    }
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    assert!(
        over_redacted <= 0.05,
        "{:.1} % of benign values withheld:\n{}",
        over_redacted * 100.0,
        withheld.join("\n")
    );
}
