//! Tests of the rules as the capture engine sees them.

use super::*;

const JWT: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn additions(origin: AdditionOrigin, keywords: &[&str], patterns: &[&str]) -> RedactionAdditions {
    RedactionAdditions {
        keywords: keywords.iter().map(|keyword| keyword.to_string()).collect(),
        patterns: patterns.iter().map(|pattern| pattern.to_string()).collect(),
        origin,
    }
}

fn reasons(masked: &Masked) -> Vec<&str> {
    masked.reasons.iter().map(Reason::as_str).collect()
}

fn masked_text(rules: &RedactionRules, text: &str, complete: bool) -> Option<String> {
    rules.mask_secrets(text, complete).map(|masked| masked.text)
}

#[test]
fn rules_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RedactionRules>();
    assert_send_sync::<Reason>();
    assert_send_sync::<Masked>();
}

#[test]
fn name_reasons_say_which_keyword() {
    let rules = RedactionRules::builtin();
    assert_eq!(
        rules.sensitive_name("password").map(|r| r.to_string()),
        Some("name:password".into())
    );
    assert_eq!(
        rules.sensitive_name("Card-Number").map(|r| r.to_string()),
        Some("name:cardnumber".into())
    );
    assert_eq!(
        rules.sensitive_name("PIN").map(|r| r.to_string()),
        Some("name:pin".into())
    );
    assert_eq!(
        rules.sensitive_name("card_token").map(|r| r.to_string()),
        Some("name:token".into())
    );
    assert_eq!(rules.sensitive_name("shipping"), None);
    assert_eq!(rules.sensitive_name("classname"), None);
    assert_eq!(rules.sensitive_name("author"), None);
}

#[test]
fn order_payload_names_only_card_token_is_sensitive() {
    let rules = RedactionRules::builtin();
    let sensitive: Vec<&str> = [
        "id",
        "user",
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
    ]
    .into_iter()
    .filter(|name| rules.sensitive_name(name).is_some())
    .collect();
    assert_eq!(sensitive, ["card_token"]);
}

#[test]
fn long_names_are_checked_whole() {
    let rules = RedactionRules::builtin();
    let long = format!("{}_password", "very_long_prefix".repeat(10));
    assert_eq!(
        rules.sensitive_name(&long).map(|r| r.to_string()),
        Some("name:password".into())
    );
    assert_eq!(rules.sensitive_name(&"x".repeat(10_000)), None);
    let long_added = format!("{}_mysekret", "a".repeat(100));
    let stricter = rules
        .with_additions(&additions(AdditionOrigin::Config, &["mysekret"], &[]))
        .expect("valid");
    assert!(stricter.sensitive_name(&long_added).is_some());
}

#[test]
fn masks_each_secret_and_keeps_the_rest() {
    let rules = RedactionRules::builtin();
    let text = format!("card 4111 1111 1111 1111 jwt {JWT} done");
    let masked = rules.mask_secrets(&text, true).expect("secrets");
    assert_eq!(
        masked.text,
        "card [redacted:card-number] jwt [redacted:jwt] done"
    );
    assert_eq!(reasons(&masked), ["pattern:card-number", "pattern:jwt"]);
}

#[test]
fn secrets_at_start_and_end() {
    let rules = RedactionRules::builtin();
    assert_eq!(
        masked_text(&rules, "4111111111111111", true).as_deref(),
        Some("[redacted:card-number]")
    );
    assert_eq!(
        masked_text(&rules, "4111111111111111 then 5555555555554444", true).as_deref(),
        Some("[redacted:card-number] then [redacted:card-number]")
    );
    assert_eq!(
        masked_text(&rules, &format!("{JWT},"), true).as_deref(),
        Some("[redacted:jwt],")
    );
}

#[test]
fn repeated_reasons_are_listed_once() {
    let rules = RedactionRules::builtin();
    let masked = rules
        .mask_secrets("4111111111111111 and 4242424242424242", true)
        .expect("secrets");
    assert_eq!(reasons(&masked), ["pattern:card-number"]);
}

#[test]
fn bearer_masks_only_the_credential() {
    let rules = RedactionRules::builtin();
    assert_eq!(
        masked_text(&rules, "header Bearer abcdef0123456789", true).as_deref(),
        Some("header Bearer [redacted:bearer-token]")
    );
    // Under a sensitive header label the scheme goes too: the label withholds the whole value.
    assert_eq!(
        masked_text(&rules, "Authorization: Bearer abcdef0123456789", true).as_deref(),
        Some("Authorization: [redacted:name:authorization]")
    );
    assert_eq!(
        masked_text(&rules, &format!("Bearer {JWT}"), true).as_deref(),
        Some("Bearer [redacted:bearer-token]")
    );
}

#[test]
fn ordinary_text_is_untouched() {
    let rules = RedactionRules::builtin();
    for text in [
        "",
        "ok",
        "hello, world",
        "order 1234567890123 shipped",
        "4111111111111112",
        "2026-11-24T15:46:47.123456789Z",
        "Some(User { id: 42, email: \"a@example.com\", tier: Gold })",
        "550e8400-e29b-41d4-a716-446655440000",
        "the basic bearer of tokens",
        "日本語のテキスト",
    ] {
        assert_eq!(rules.mask_secrets(text, true), None, "{text}");
    }
}

#[test]
fn cut_text_masks_secrets_running_into_the_cut() {
    let rules = RedactionRules::builtin();
    let cut_jwt = &JWT[..30];
    assert_eq!(
        masked_text(&rules, &format!("Login {{ jwt: \"{cut_jwt}"), false).as_deref(),
        Some("Login { jwt: \"[redacted:jwt]")
    );
    assert_eq!(
        masked_text(&rules, "card: 4111 1111 11", false).as_deref(),
        Some("card: [redacted:card-number]")
    );
    assert_eq!(
        masked_text(
            &rules,
            "key: \"-----BEGIN RSA PRIVATE KEY-----\\nMIIEow",
            false
        )
        .as_deref(),
        Some("key: \"[redacted:private-key]")
    );
    // The same text, known to be whole, holds nothing that is a secret by its shape.
    assert_eq!(
        masked_text(&rules, &format!("Login {{ data: \"{cut_jwt}"), true),
        None
    );
    assert_eq!(masked_text(&rules, "card: 4111 1111 11", true), None);
    // Short cut texts are still looked at.
    assert_eq!(
        masked_text(&rules, "eyJhbG", false).as_deref(),
        Some("[redacted:jwt]")
    );
}

#[test]
fn request_additions_add_keywords_as_substrings() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(AdditionOrigin::Request, &["Loyalty-ID"], &[]))
        .expect("valid");
    assert_eq!(
        rules
            .sensitive_name("customer_loyaltyId")
            .map(|r| r.to_string()),
        Some("request-keyword:loyaltyid".into())
    );
    assert_eq!(rules.sensitive_name("loyalty"), None);
    // Built-ins still apply.
    assert!(rules.sensitive_name("password").is_some());
}

#[test]
fn additions_only_ever_add() {
    let config = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Config,
            &["tenant_secret_ref"],
            &["internal-[0-9]+"],
        ))
        .expect("valid");
    // A request that adds nothing, or adds unrelated rules, keeps every earlier rule.
    let request = config
        .with_additions(&additions(AdditionOrigin::Request, &["nickname"], &[]))
        .expect("valid");
    for rules in [&config, &request] {
        assert!(rules.sensitive_name("password").is_some());
        assert!(rules.sensitive_name("tenantSecretRef").is_some());
        assert!(rules.sensitive_name("pin").is_some());
        assert_eq!(
            masked_text(rules, "id internal-42", true).as_deref(),
            Some("id [redacted:config-pattern:#1]")
        );
        assert!(rules.mask_secrets("4111111111111111", true).is_some());
    }
    assert!(request.sensitive_name("nickname").is_some());
    assert!(config.sensitive_name("nickname").is_none());
    // The original rules are unchanged: a reference to a secret is harmless to them (`ref`
    // heads the name), which only the configuration's keyword withholds.
    assert!(
        RedactionRules::builtin()
            .sensitive_name("tenantSecretRef")
            .is_none()
    );
    assert!(
        RedactionRules::builtin()
            .sensitive_name("nickname")
            .is_none()
    );
}

#[test]
fn added_patterns_are_numbered_per_origin() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Config,
            &[],
            &["alpha[0-9]{3}", "beta[0-9]{3}"],
        ))
        .and_then(|rules| {
            rules.with_additions(&additions(AdditionOrigin::Request, &[], &["gamma[0-9]{3}"]))
        })
        .and_then(|rules| {
            rules.with_additions(&additions(AdditionOrigin::Request, &[], &["delta[0-9]{3}"]))
        })
        .expect("valid");
    let masked = rules
        .mask_secrets("alpha123 beta456 gamma789 delta000", true)
        .expect("found");
    assert_eq!(
        masked.text,
        "[redacted:config-pattern:#1] [redacted:config-pattern:#2] [redacted:request-pattern:#1] [redacted:request-pattern:#2]"
    );
    assert_eq!(
        reasons(&masked),
        [
            "config-pattern:#1",
            "config-pattern:#2",
            "request-pattern:#1",
            "request-pattern:#2"
        ]
    );
}

#[test]
fn overlapping_builtin_and_added_spans_become_one_mask() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Request,
            &[],
            &["card 4111[0-9 ]+[0-9]"],
        ))
        .expect("valid");
    let masked = rules
        .mask_secrets("x card 4111 1111 1111 1111 y", true)
        .expect("found");
    assert_eq!(masked.text, "x [redacted:request-pattern:#1] y");
    assert_eq!(
        reasons(&masked),
        ["request-pattern:#1", "pattern:card-number"]
    );
}

#[test]
fn added_patterns_that_match_empty_text_mask_nothing() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(AdditionOrigin::Request, &[], &["x*"]))
        .expect("valid");
    assert_eq!(rules.mask_secrets("abc", true), None);
    assert_eq!(
        masked_text(&rules, "axxb", true).as_deref(),
        Some("a[redacted:request-pattern:#1]b")
    );
}

#[test]
fn added_pattern_masks_respect_char_boundaries() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Config,
            &[],
            &["秘密.", "(?i)geheim"],
        ))
        .expect("valid");
    assert_eq!(
        masked_text(&rules, "a秘密です b GEHEIM", true).as_deref(),
        Some("a[redacted:config-pattern:#1]す b [redacted:config-pattern:#2]")
    );
}

#[test]
fn invalid_pattern_error_names_the_pattern() {
    let error = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Request,
            &[],
            &["ok[0-9]", "broken(["],
        ))
        .expect_err("invalid");
    let message = error.to_string();
    assert!(
        message.contains("request redaction pattern #2"),
        "{message}"
    );
    assert!(message.contains("`broken([`"), "{message}");
    assert!(matches!(
        error,
        RedactionError::InvalidPattern { number: 2, .. }
    ));
}

#[test]
fn keywords_empty_after_normalization_are_refused() {
    for keyword in ["", "__", " - $@.", "_-_"] {
        let error = RedactionRules::builtin()
            .with_additions(&additions(AdditionOrigin::Config, &[keyword], &[]))
            .expect_err("empty");
        assert!(
            matches!(error, RedactionError::EmptyKeyword { .. }),
            "{keyword:?}"
        );
    }
}

#[test]
fn sizes_are_capped() {
    let too_long = "a".repeat(MAX_PATTERN_LEN + 1);
    let error = RedactionRules::builtin()
        .with_additions(&additions(AdditionOrigin::Request, &[], &[&too_long]))
        .expect_err("too long");
    assert!(
        matches!(error, RedactionError::PatternTooLong { len, .. } if len == MAX_PATTERN_LEN + 1)
    );
    assert!(
        error.to_string().len() < 200,
        "the pattern is not echoed whole"
    );

    let many: Vec<String> = (0..=MAX_PATTERNS).map(|n| format!("p{n}x")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let error = RedactionRules::builtin()
        .with_additions(&additions(AdditionOrigin::Request, &[], &many))
        .expect_err("too many");
    assert_eq!(error, RedactionError::TooManyPatterns { max: MAX_PATTERNS });

    // The cap holds across configuration and request together.
    let config = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Config,
            &[],
            &many[..MAX_PATTERNS],
        ))
        .expect("at the cap");
    let error = config
        .with_additions(&additions(AdditionOrigin::Request, &[], &["one more"]))
        .expect_err("over the cap");
    assert_eq!(error, RedactionError::TooManyPatterns { max: MAX_PATTERNS });

    // A short pattern that compiles to something huge is refused by the size limit.
    let error = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Request,
            &[],
            &[r"\w{1000}\w{1000}\w{1000}"],
        ))
        .expect_err("too big");
    assert!(
        matches!(error, RedactionError::InvalidPattern { .. }),
        "{error}"
    );

    let error = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Config,
            &[&"k".repeat(MAX_KEYWORD_LEN + 1)],
            &[],
        ))
        .expect_err("keyword too long");
    assert!(matches!(error, RedactionError::KeywordTooLong { .. }));

    let keywords: Vec<String> = (0..=MAX_KEYWORDS).map(|n| format!("kw{n}")).collect();
    let keywords: Vec<&str> = keywords.iter().map(String::as_str).collect();
    let error = RedactionRules::builtin()
        .with_additions(&additions(AdditionOrigin::Config, &keywords, &[]))
        .expect_err("too many keywords");
    assert_eq!(error, RedactionError::TooManyKeywords { max: MAX_KEYWORDS });
}

#[test]
fn repeated_keywords_are_kept_once() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Config,
            &["foo_bar", "FooBar", "foo-bar"],
            &[],
        ))
        .expect("valid");
    assert_eq!(rules.keywords.len(), 1);
}

#[test]
fn card_number_integers() {
    let rules = RedactionRules::builtin();
    let reason = Some("pattern:card-number".to_string());
    assert_eq!(
        rules
            .sensitive_u64(4_111_111_111_111_111)
            .map(|r| r.to_string()),
        reason
    );
    assert_eq!(
        rules
            .sensitive_i64(4_111_111_111_111_111)
            .map(|r| r.to_string()),
        reason
    );
    assert_eq!(
        rules
            .sensitive_i64(-4_111_111_111_111_111)
            .map(|r| r.to_string()),
        reason
    );
    assert_eq!(
        rules
            .sensitive_u128(4_111_111_111_111_111)
            .map(|r| r.to_string()),
        reason
    );
    assert_eq!(
        rules
            .sensitive_i128(-4_111_111_111_111_111)
            .map(|r| r.to_string()),
        reason
    );
    assert_eq!(rules.sensitive_u64(4_111_111_111_111_112), None);
    assert_eq!(
        rules.sensitive_u64(1_732_460_807_124),
        None,
        "a millisecond timestamp that fails Luhn"
    );
    assert_eq!(rules.sensitive_u64(42), None);
    assert_eq!(rules.sensitive_i64(i64::MIN), None);
    assert_eq!(rules.sensitive_u128(u128::MAX), None);
    assert_eq!(rules.sensitive_i128(i128::MIN), None);
}

#[test]
fn never_panics_on_awkward_input() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Request,
            &["é"],
            &["é+", "\\d{2}"],
        ))
        .expect("valid");
    let big = format!(
        "{}{}{}",
        "é4".repeat(50_000),
        JWT,
        "-----BEGIN PRIVATE KEY-----".repeat(1000)
    );
    let samples = [
        "\u{0}\u{1}\u{7f}",
        "é",
        "ééééééééééééééééé",
        "4111111111111111é",
        "é4111111111111111",
        "-----BEGIN PRIVATE KEY-----é",
        "Bearer é",
        "Basic é=",
        big.as_str(),
    ];
    for text in samples {
        for complete in [true, false] {
            let _ = rules.sensitive_name(text);
            if let Some(masked) = rules.mask_secrets(text, complete) {
                assert!(!masked.reasons.is_empty());
            }
            let mut cut = text.len().min(300);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let _ = rules.mask_secrets(&text[..cut], complete);
        }
    }
}

#[test]
fn masked_output_never_contains_the_secret() {
    let rules = RedactionRules::builtin();
    let secrets = [
        "4111111111111111",
        JWT,
        "AKIAIOSFODNN7EXAMPLE",
        "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",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    ];
    for secret in secrets {
        for wrapper in ["{}", "x={}", "\"{}\"", "[{}, 1]", "Some({})"] {
            let text = wrapper.replace("{}", secret);
            let masked = rules.mask_secrets(&text, true).expect("found");
            assert!(!masked.text.contains(secret), "{text} -> {}", masked.text);
            // Every cut of the text, judged as a prefix, shows no more than 6 characters of it.
            for cut in 0..=text.len() {
                let prefix = &text[..cut];
                let shown = rules
                    .mask_secrets(prefix, false)
                    .map_or(prefix.to_string(), |m| m.text);
                assert!(
                    !shown.contains(&secret[..secret.len().min(8)]),
                    "{prefix} -> {shown}"
                );
            }
        }
    }
}

#[test]
fn values_labelled_by_sensitive_names_are_masked() {
    let rules = RedactionRules::builtin();
    let masked = rules
        .mask_secrets(
            "Login { user: \"bob\", password: \"hunter2\", pin: Some(1234) }",
            true,
        )
        .expect("found");
    assert_eq!(
        masked.text,
        "Login { user: \"bob\", password: \"[redacted:name:password]\", pin: [redacted:name:pin] }"
    );
    assert_eq!(reasons(&masked), ["name:password", "name:pin"]);
    assert_eq!(
        masked_text(&rules, "GET /cb?code=1&access_token=abc.def&state=x", true).as_deref(),
        Some("GET /cb?code=1&access_token=[redacted:name:token]&state=x")
    );
    assert_eq!(
        masked_text(&rules, "{\"card_number\":\"4111111111111111\"}", true).as_deref(),
        Some("{\"card_number\":\"[redacted:card-number]\"}")
    );
    assert_eq!(
        masked_text(&rules, "ssn=078-05-1120", true).as_deref(),
        Some("ssn=[redacted:name:ssn]")
    );
    // Labels that only look alike are left alone.
    assert_eq!(
        rules.mask_secrets("classname: \"Foo\", shipping=3", true),
        None
    );
}

#[test]
fn labels_follow_added_keywords() {
    let rules = RedactionRules::builtin()
        .with_additions(&additions(AdditionOrigin::Request, &["nickname"], &[]))
        .expect("valid");
    assert_eq!(
        masked_text(&rules, "User { nickname: \"Ace\" }", true).as_deref(),
        Some("User { nickname: \"[redacted:request-keyword:nickname]\" }")
    );
    assert_eq!(
        RedactionRules::builtin().mask_secrets("User { nickname: \"Ace\" }", true),
        None
    );
}

/// Texts stitched from fragments that start, end and break secrets, with multi-byte
/// characters between them: no panic (masks land on character boundaries or slicing would
/// panic), and every mask comes with its reason.
#[test]
fn stitched_fragments_never_panic() {
    const FRAGMENTS: &[&str] = &[
        "4",
        "1",
        "4111",
        " ",
        "-",
        "--",
        "e",
        "eyJ",
        "hbGci",
        ".",
        "Bearer ",
        "basic ",
        "dXNlcjpwYXNz",
        "-----BEGIN ",
        "RSA ",
        "PRIVATE KEY",
        "-----",
        "-----END ",
        "AKIA",
        "IOSFODNN7EXAMPLE",
        "ghp_",
        "xoxb-",
        "sk_live_",
        "ya29.",
        "AIza",
        "secret_access_key",
        ": ",
        "=",
        "\"",
        "'",
        "\\",
        "password",
        "pin",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ",",
        "&",
        "é",
        "日本",
        "\n",
        "0000000000",
    ];
    let rules = RedactionRules::builtin()
        .with_additions(&additions(
            AdditionOrigin::Request,
            &["日本"],
            &["本.", "[0-9]{3}-"],
        ))
        .expect("valid");
    // A fixed xorshift sequence: the same texts on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let pieces = 1 + (next() % 12) as usize;
        let text: String = (0..pieces)
            .map(|_| FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize])
            .collect();
        let _ = rules.sensitive_name(&text);
        for complete in [true, false] {
            if let Some(masked) = rules.mask_secrets(&text, complete) {
                assert!(!masked.reasons.is_empty(), "{text:?}");
                assert!(masked.text.contains("[redacted:"), "{text:?}");
            }
        }
        let cut = (next() as usize) % (text.len() + 1);
        if let Some(prefix) = text.get(..cut) {
            let _ = rules.mask_secrets(prefix, false);
        }
    }
}

/// Each text must come out without its secret, and with something masked.
fn assert_masks(rules: &RedactionRules, cases: &[(&str, &str)]) {
    for (text, secret) in cases {
        let masked = rules
            .mask_secrets(text, true)
            .unwrap_or_else(|| panic!("nothing masked in {text:?}"));
        assert!(
            !masked.text.contains(secret),
            "{secret:?} left in {:?}",
            masked.text
        );
    }
}

#[test]
fn credentials_in_urls_and_connection_strings_are_masked() {
    let rules = RedactionRules::builtin();
    assert_masks(
        &rules,
        &[
            ("postgres://app:S3cretPassw0rd@db:5432/x", "S3cretPassw0rd"),
            ("redis://:S3cretPassw0rd@cache:6379/0", "S3cretPassw0rd"),
            (
                "https://ghp_notARealTokenButLongEnough@github.com/a/b",
                "notARealToken",
            ),
            (
                "Server=db;User Id=sa;Password=S3cretPassw0rd;",
                "S3cretPassw0rd",
            ),
            ("Driver={x};Uid=app;Pwd=S3cretPassw0rd;", "S3cretPassw0rd"),
            (
                "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abcDEF123+/xyz==;x=y",
                "abcDEF123",
            ),
            (
                "Endpoint=sb://n/;SharedAccessKeyName=Root;SharedAccessKey=abcDEF123=",
                "abcDEF123",
            ),
            (
                "https://a.blob.core.windows.net/c?sv=1&sig=AbCdEf123%3D&se=2",
                "AbCdEf123",
            ),
            (
                "https://b.s3.amazonaws.com/k?X-Amz-Signature=0123456789abcdef&a=1",
                "0123456789abcdef",
            ),
            (
                "https://g.googleapis.com/o?X-Goog-Signature=0123456789abcdef",
                "0123456789abcdef",
            ),
        ],
    );
    for text in [
        "postgres://db.internal:5432/orders",
        "git@github.com:acme/shop.git",
        "https://example.com/users/@ada",
        "SharedAccessKeyName=RootManageSharedAccessKey",
    ] {
        assert_eq!(rules.mask_secrets(text, true), None, "{text}");
    }
}

#[test]
fn authorization_credentials_of_any_scheme_are_masked() {
    let rules = RedactionRules::builtin();
    assert_masks(
        &rules,
        &[
            (
                "Digest username=\"a\", realm=\"r\", response=\"6629fae49393a05397450978507c4ef1\"",
                "6629fae4",
            ),
            ("Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b", "9944b091"),
            ("Negotiate YIIGhgYGKwYBBQUCoIIGej7CCBnag", "YIIGhgYG"),
            ("NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAA", "TlRMTVNT"),
            ("Authorization: Token abc123def456", "abc123def456"),
            (
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/x, Signature=fe5f80f77d5fa3be",
                "fe5f80f77d5fa3be",
            ),
        ],
    );
    for text in [
        "Token expired, please sign in again",
        "Digest of the week",
        "the token was not found",
    ] {
        assert_eq!(rules.mask_secrets(text, true), None, "{text}");
    }
}

#[test]
fn cookies_are_judged_one_by_one() {
    let rules = RedactionRules::builtin();
    let masked = masked_text(
        &rules,
        "Cookie: theme=dark; session=abc123def; csrftoken=xyz789; lang=en",
        true,
    )
    .expect("masked");
    assert!(
        masked.contains("theme=dark") && masked.contains("lang=en"),
        "{masked}"
    );
    assert!(
        !masked.contains("abc123def") && !masked.contains("xyz789"),
        "{masked}"
    );
    let set =
        masked_text(&rules, "Set-Cookie: sid=abc123def; Path=/; HttpOnly", true).expect("masked");
    assert!(
        !set.contains("abc123def") && set.contains("Path=/"),
        "{set}"
    );
}

#[test]
fn labelled_values_in_escaped_json_yaml_forms_and_xml_are_masked() {
    let rules = RedactionRules::builtin();
    assert_masks(
        &rules,
        &[
            (
                r#"Req { body: "{\"user\":\"bob\",\"password\":\"hunter2, hunter3\"}" }"#,
                "hunter",
            ),
            (r#"{\\\"token\\\":\\\"abc123def\\\"}"#, "abc123def"),
            (
                "user: bob\npassword: correct horse battery\nrole: admin",
                "horse",
            ),
            ("a=1&password=hunter2&b=2", "hunter2"),
            ("<login><password>hunter2</password></login>", "hunter2"),
            ("<Password value=\"hunter2\"/>", "hunter2"),
            ("<ns:ApiKey>abc123def</ns:ApiKey>", "abc123def"),
        ],
    );
    let xml = masked_text(
        &rules,
        "<user><name>bob</name><password>x1</password></user>",
        true,
    )
    .expect("masked");
    assert!(xml.contains("<name>bob</name>"), "{xml}");
}

#[test]
fn a_private_key_split_over_strings_is_masked_until_its_end_line() {
    let rules = RedactionRules::builtin();
    let mut state = ScanState::default();
    let lines = [
        "-----BEGIN RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAx1",
        "c2VjcmV0IGtleSBib2R5",
        "-----END RSA PRIVATE KEY----- trailing text",
        "an ordinary string",
    ];
    let shown: Vec<Option<String>> = lines
        .iter()
        .map(|line| {
            rules
                .mask_in_sequence(line, true, &mut state)
                .map(|masked| masked.text)
        })
        .collect();
    assert_eq!(shown[1].as_deref(), Some("[redacted:private-key]"));
    assert_eq!(shown[2].as_deref(), Some("[redacted:private-key]"));
    assert_eq!(
        shown[3].as_deref(),
        Some("[redacted:private-key] trailing text")
    );
    assert_eq!(shown[4], None);
    assert!(!state.private_key_open());
}

#[test]
fn following_leaves_the_state_the_full_scan_leaves() {
    let rules = RedactionRules::builtin();
    let texts = [
        "an ordinary string",
        "-----BEGIN RSA PRIVATE KEY-----",
        "MIIEowIBAAKCAQEAx1",
        "-----END RSA PRIVATE KEY----- then -----BEGIN PRIVATE KEY-----\nMIIE",
        "still inside",
        "MIIE\n-----END PRIVATE KEY-----",
        "-----BEGIN PUBLIC KEY-----",
        "after a public key",
        "a URL https://user:-----BEGIN PRIVATE KEY-----@example.com/",
        "closing -----END PRIVATE KEY-----",
        "-----BEGIN ENCRYPTED PRIVATE KEY",
        "--password",
        "hunter2",
        "password:",
        "-----BEGIN PRIVATE KEY-----",
        "token=",
        "the end",
    ];
    for complete in [true, false] {
        let mut full = ScanState::default();
        let mut followed = ScanState::default();
        for text in texts {
            let _ = rules.mask_in_sequence(text, complete, &mut full);
            rules.follow_carried_state(text, complete, &mut followed);
            // On these texts the follower leaves exactly the full scan's state, key and label
            // alike. In general it may find a key open where the full scan saw its BEGIN line
            // inside another secret (`follow_carried_state`), never closed where it is open.
            assert_eq!(followed, full, "{text:?} (complete: {complete})");
            followed = full;
        }
    }
}

#[test]
fn a_label_left_open_masks_the_next_text() {
    let rules = RedactionRules::builtin();
    let masked_sequence = |texts: &[&str]| {
        let mut state = ScanState::default();
        texts
            .iter()
            .map(|text| {
                rules
                    .mask_in_sequence(text, true, &mut state)
                    .map_or_else(|| (*text).to_owned(), |masked| masked.text)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        masked_sequence(&["mysql", "--password", "hunter2", "--user", "app"]),
        [
            "mysql",
            "--password",
            "[redacted:name:label-before]",
            "--user",
            "app"
        ]
    );
    assert_eq!(
        masked_sequence(&["db:", "  password:", "    hunter2", "  host: db"]),
        [
            "db:",
            "  password:",
            "[redacted:name:label-before]",
            "  host: db"
        ]
    );
    assert_eq!(
        masked_sequence(&["\"api_key\": ", "\"abc123\""]),
        ["\"api_key\": ", "[redacted:name:label-before]"]
    );
    // Flags and labels that name nothing sensitive, or hold their value, leave nothing open.
    assert_eq!(
        masked_sequence(&["--verbose", "x", "user:", "bob", "a-password", "y"]),
        ["--verbose", "x", "user:", "bob", "a-password", "y"]
    );
}

#[test]
fn provider_tokens_are_masked_by_their_formats() {
    let rules = RedactionRules::builtin();
    assert_masks(
        &rules,
        &[
            ("key glpat-Ab1Cd2Ef3Gh4Ij5Kl6Mn", "Ab1Cd2Ef3Gh4"),
            ("npm_abcdefghijklmnopqrstuvwxyz0123456789", "abcdefghij"),
            ("hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "abcdefghij"),
            (
                "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCD",
                "abcdefghij",
            ),
            (
                "5432167890:AAabcdefghijklmnopqrstuvwxyz0123456",
                "abcdefghij",
            ),
            ("0123456789abcdef0123456789abcdef-us14", "0123456789abcdef"),
        ],
    );
    for text in [
        "sk-learn 1.3",
        "hf_x",
        "npm_install",
        "key-value store",
        "API-first design",
    ] {
        assert_eq!(rules.mask_secrets(text, true), None, "{text}");
    }
}

/// Each `(text, secret)` of `masked` is masked so that `secret` no longer shows, and each text
/// of `kept` is left whole, by the built-in rules.
fn assert_masks_and_keeps(masked: &[(&str, &str)], kept: &[&str]) {
    let rules = RedactionRules::builtin();
    for (text, secret) in masked {
        let result =
            masked_text(&rules, text, true).unwrap_or_else(|| panic!("{text:?} kept whole"));
        assert!(!result.contains(secret), "{text:?} → {result:?}");
    }
    for text in kept {
        assert_eq!(masked_text(&rules, text, true), None, "{text:?}");
    }
}

#[test]
fn a_tools_own_password_flag_is_masked_and_the_same_letter_elsewhere_is_not() {
    assert_masks_and_keeps(
        &[
            ("mysql -uroot -phunter2 orders", "hunter2"),
            ("sudo /usr/bin/mysql -p'hunter 2' orders", "hunter 2"),
            ("Job { cmd: \"redis-cli -a hunter2 PING\" }", "hunter2"),
            ("curl --user=admin:hunter2 https://x", "hunter2"),
            ("curl -uadmin:hunter2 https://x", "hunter2"),
            ("podman login --tls-verify -p hunter2 quay.io", "hunter2"),
            ("create user app identified by 'hunter2'", "hunter2"),
            ("the password 'hunter2' was refused", "hunter2"),
            ("ALTER ROLE app WITH PASSWORD E'hunter\\'2'", "hunter\\'2"),
            (
                "Job { cmd: \"curl -u \\\"admin:hunter2\\\" x\" }",
                "hunter2",
            ),
            ("Cmd(\"mysql -p\\\"hunter2\\\"\")", "hunter2"),
            ("mysql -u root -p\"hunter2\"", "hunter2"),
            ("mysql -phunter2;echo done", "hunter2"),
            ("redis-cli -a \"hunter 2\" PING", "hunter 2"),
            ("sshpass -p 'hunter 2' ssh deploy@host", "hunter 2"),
            ("[\"sshpass\", \"-p\", \"hunter2\", \"ssh\"]", "hunter2"),
            (
                "curl -H 'Accept: application/json' -H 'X-Request-Id: 0f8e1c2a-1b2c-4d5e-8f90-123456789abc' -H 'User-Agent: deploy/1.0 (+https://ci.internal/runs/12345)' -H 'Cache-Control: no-cache' -H 'X-Trace: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' -u admin:hunter2 https://api.internal",
                "hunter2",
            ),
        ],
        &[
            "mysql -p",
            "mysql -p orders",
            "curl -u admin https://x",
            "docker run -p 8080:80 shop",
            "ssh -p 2222 host",
            "tar -pczf out.tgz dir",
            "I don't know; it's 'fine'",
            "ordered by 'name'",
            "openssl s_client -key client.key -connect db:5432",
            "openssl req -new -keyout key.pem -out req.pem",
            "openssl version && curl -k https://example.com",
            "docker login registry && docker run -p 8080:80 shop",
        ],
    );
}

#[test]
fn each_tools_own_form_of_its_password_flag_is_read() {
    assert_masks_and_keeps(
        &[
            ("/usr/bin/mariadb-dump -uroot -phunter2 shop", "hunter2"),
            ("7z x -phunter2 backup.7z", "hunter2"),
            ("mongodump -u ops -p hunter2 --db shop", "hunter2"),
            ("sqlcmd -S db -U sa -Phunter2", "hunter2"),
            (
                "ldapmodify -D cn=admin -w hunter2 -f change.ldif",
                "hunter2",
            ),
            ("unzip -P hunter2 secrets.zip", "hunter2"),
            ("smbclient //nas/share -U ops%hunter2", "hunter2"),
            ("rpcclient -Uops%hunter2 10.0.0.9", "hunter2"),
            // A group with the value joined to its last flag, or to one inside it.
            ("curl -fsSLuops:hunter2 https://x", "hunter2"),
            ("curl -suops:hunter2 https://x", "hunter2"),
        ],
        &[
            // Joined only: with a space the tool prompts, and the next word is not it.
            "7z a -p backup.7z dir",
            // No password after the user.
            "smbclient //nas/share -U ops",
            "curl -suops https://x",
            // The same letters where they are not a password.
            "zipinfo -P backup.zip",
            "mongo --port 27017 -p",
            "curl -d user=ops https://x",
            "ssh -p 2222 host && tar -P -czf out.tgz dir",
        ],
    );
}

#[test]
fn directives_at_a_line_start_are_masked_and_their_look_alikes_are_not() {
    assert_masks_and_keeps(
        &[
            ("requirepass hunter2", "hunter2"),
            ("# redis\nmasterauth hunter2\n", "hunter2"),
            ("USER ops\r\nPASS hunter2\r\nLIST", "hunter2"),
            ("USER bob\n331 Password required\nPASS hunter2", "hunter2"),
            ("user bob\r\n+OK\r\npass hunter2\r\n", "hunter2"),
            ("AUTH default hunter2", "hunter2"),
            ("* OK ready\na001 LOGIN ops hunter2", "hunter2"),
            ("machine db login ops password hunter2", "hunter2"),
            ("machine db\n  login ops\n  password hunter2\n", "hunter2"),
            ("ENV GITHUB_TOKEN hunter2", "hunter2"),
        ],
        &[
            "PASS src/app.test.js (2 s)",
            "AUTH",
            "password reset requested for ada",
            "default password policy is strict",
            "ENV NODE_ENV production",
            "LOGIN page shown",
            "a001 LOGIN",
        ],
    );
}

mod generated_texts {
    //! Texts assembled from the pieces the scanner's rules look for, in any order: no text
    //! makes it panic, and the key follower a condition's capture uses leaves the state the
    //! full scan leaves (a key it finds open at least where the scan does, the same label).
    use super::*;
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        " ",
        "\n",
        "\r\n",
        "\t",
        "'",
        "\"",
        "\\",
        "\\n",
        "-",
        "--",
        "=",
        ":",
        "(",
        ")",
        "<",
        ">",
        "@",
        "/",
        "%3D",
        "\u{fffd}",
        "é",
        "mysql",
        "curl",
        "docker",
        "login",
        "-p",
        "-u",
        "-a",
        "--user",
        "sudo",
        "redis-cli",
        "PASS",
        "USER ",
        "AUTH",
        "LOGIN",
        "a001",
        "machine",
        "password",
        "passwd",
        "ENV",
        "API_KEY",
        "requirepass",
        "IDENTIFIED",
        "BY",
        "token",
        "AKIA",
        "ghp_",
        "s.",
        "pat",
        "4b1d",
        "1//0",
        "A3-",
        "v1.0-",
        "telegram.org/bot",
        "x",
        "hunter2",
        "0123456789abcdef",
        "ABCDEFGHIJKLMNOP",
        "-----BEGIN PRIVATE KEY-----",
        // Pairs, joined and grouped flags, more tools, a value's separators.
        "name",
        "key",
        "value",
        "DB_PASSWORD",
        ",",
        ";",
        "&",
        "}",
        "%",
        "-su",
        "-P",
        "-w",
        "-U",
        "7z",
        "smbclient",
        "mongosh",
        "mariadb-dump",
    ];

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..40)
            .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn no_text_makes_the_scanner_panic_or_disagree_with_itself(
            texts in prop::collection::vec(text(), 1..4),
            complete in any::<bool>(),
        ) {
            let rules = RedactionRules::builtin();
            let mut full = ScanState::default();
            let mut followed = ScanState::default();
            for text in &texts {
                let masked = rules.mask_in_sequence(text, complete, &mut full);
                rules.follow_carried_state(text, complete, &mut followed);
                // The follower may find a key open where the full scan saw its BEGIN line
                // inside another secret, never closed where it is open; a label it leaves
                // open is the full scan's.
                prop_assert!(
                    !full.private_key_open() || followed.private_key_open(),
                    "{texts:?}"
                );
                prop_assert_eq!(followed.label_open, full.label_open, "{:?}", texts);
                if let Some(masked) = masked {
                    prop_assert!(!masked.text.is_empty() || text.is_empty(), "{text:?}");
                }
                followed = full;
            }
        }
    }
}

#[test]
fn a_pgpass_entrys_password_is_masked_and_look_alikes_are_not() {
    assert_masks_and_keeps(
        &[
            ("db.example.com:5432:orders:app:hunter2", "hunter2"),
            ("# comment\nlocalhost:*:*:postgres:hunter2\nnext", "hunter2"),
            ("*:*:*:replicator:hunter\\:2", "hunter\\:2"),
            ("10.0.0.5:6432:app:ada:hunter2", "hunter2"),
            // In Debug output: a quoted string's start, or after an escaped line break.
            (
                "Record { note: \"db.internal:5432:orders:app:hunter2\" }",
                "hunter2",
            ),
            (
                "Record { file: \"# pgpass\\n*:*:*:ada:hunter2\\n\" }",
                "hunter2",
            ),
        ],
        &[
            "12:30:45:67:89",
            "ERROR:root:db:conn:failed",
            "a:b:c:d:e",
            "host:5432:db:user:",
            "at 10:30:00 the job: done",
            "https://example.com:8443/a:b",
            "Record { at: \"12:30:45:67:89\", level: \"ERROR:root:db:conn:failed\" }",
        ],
    );
}

#[test]
fn a_double_quoted_value_after_a_sensitive_word_is_masked_and_look_alikes_are_not() {
    assert_masks_and_keeps(
        &[
            (
                r#"CREATE USER 'app'@'%' IDENTIFIED BY "hunter2";"#,
                "hunter2",
            ),
            (
                r#"ALTER USER app IDENTIFIED WITH caching_sha2_password BY "hunter2""#,
                "hunter2",
            ),
            (
                "ALTER USER app IDENTIFIED WITH mysql_native_password BY 'hunter2'",
                "hunter2",
            ),
            (
                r#"Sql { text: "CREATE USER app IDENTIFIED BY \"hunter2\";" }"#,
                "hunter2",
            ),
            ("CREATE USER app IDENTIFIED BY\t\"hunter2\"", "hunter2"),
            (
                "ALTER USER app IDENTIFIED WITH 'caching_sha2_password' BY 'hunter2'",
                "hunter2",
            ),
            (r#"login failed: password "hunter2" rejected"#, "hunter2"),
        ],
        &[
            r#"the token "abc" was refused"#,
            r#"unexpected token "}" at line 3"#,
            r#"Set the secret "db-creds" in namespace prod"#,
            r#"search by "token" or "user""#,
            r#"written by "ada" in "march""#,
            r#"IDENTIFIED BY is not "supported" here"#,
            r#"Query { sql: "SELECT \"name\" FROM users" }"#,
            r#"{"note": "plain", "kind": "text"}"#,
        ],
    );
}

#[test]
fn directives_after_an_escaped_line_break_are_masked_and_look_alikes_are_not() {
    assert_masks_and_keeps(
        &[
            (
                r#"Conf { text: "bind 0.0.0.0\nrequirepass hunter2\n" }"#,
                "hunter2",
            ),
            (r"USER ada\r\nPASS hunter2\r\n", "hunter2"),
            (r#"Session { log: "USER ada\nPASS hunter2" }"#, "hunter2"),
            (r"* OK ready\na001 LOGIN ada hunter2", "hunter2"),
            (r"machine db\n  login ada\n  password hunter2\n", "hunter2"),
            ("a001 login ada hunter2", "hunter2"),
        ],
        &[
            r"release notes\nPASS rate 98 percent",
            r"first line\npassword policy updated",
            "2 login attempts failed",
            "a1 login page shown today",
            r#"Log { s: "x\\nothing here" }"#,
        ],
    );
}

#[test]
fn an_arns_resource_type_labels_nothing_and_a_secret_beside_it_is_masked() {
    assert_masks_and_keeps(
        &[
            (
                r#"Conf { arn: "arn:aws:secretsmanager:eu-west-1:1:secret:prod/db", password: "hunter2" }"#,
                "hunter2",
            ),
            ("arn:password:hunter2pw", "hunter2pw"),
        ],
        &[
            "secret_arn: arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf",
            r#"{"ARN":"arn:aws:secretsmanager:us-east-1:1:secret:app/token"}"#,
            "grant on arn:aws-us-gov:secretsmanager:us-gov-west-1:1:secret:db to role",
        ],
    );
    let rules = RedactionRules::builtin();
    let masked = masked_text(
        &rules,
        r#"Conf { arn: "arn:aws:secretsmanager:eu-west-1:1:secret:prod/db", password: "hunter2" }"#,
        true,
    )
    .expect("the password is masked");
    assert!(masked.contains("secret:prod/db"), "{masked}");
}

#[test]
fn a_tools_password_flag_given_with_other_short_flags_is_masked() {
    assert_masks_and_keeps(
        &[
            ("curl -su admin:hunter2 https://x", "hunter2"),
            ("curl -fsSLu deploy:hunter2 -X POST https://x", "hunter2"),
            (r#"["curl", "-fsSu", "admin:hunter2pw"]"#, "hunter2pw"),
            (
                r#"Command { argv: ["curl", "-fsSu", "admin:hunter2pw"] }"#,
                "hunter2pw",
            ),
            ("mysql -h db -phunter2 orders", "hunter2"),
        ],
        &[
            "curl -sSL https://example.com/install.sh",
            "curl -fsSLo out.tar.gz https://example.com/a.tar.gz",
            "ls -lu /tmp",
            "tar -xzu archive.tar",
        ],
    );
}

#[test]
fn tokens_known_by_an_infix_are_masked_and_look_alikes_are_not() {
    assert_masks_and_keeps(
        &[
            (
                "using abc8Q~Xy3.zQ_9kLmN-opQrStUvWxYz0123456 for graph",
                "Xy3.zQ_9kLmN-opQrStUvWxYz0123456",
            ),
            (
                "the secret is a-b8Q~Xy3.zQ_9kLmN-opQrStUvWxYz0123456.",
                "Xy3.zQ_9kLmN-opQrStUvWxYz0123456",
            ),
            (
                "graph?client=1234567890123456|0123456789abcdef0123456789abcdef",
                "0123456789abcdef0123456789abcdef",
            ),
            (
                "{\"t\":\"123456789012345|fedcba9876543210fedcba9876543210\"}",
                "fedcba9876543210fedcba9876543210",
            ),
            (
                "GEOIPUPDATE_KEY_FILE holds 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 now",
                "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",
            ),
        ],
        &[
            "load_mmk_index and cache_mmk",
            "a_very_long_snake_case_function_name_mmk",
            "4Ab9cZ_Qw3rTy7uIo0pAsDfGhJkLzXcVbNm1_mmkv",
            "~/.config/app and ~user/.ssh",
            "v2Q~ is a version tag",
            "a | b | c",
            "order 1733000000000000 | shipped | 2 items",
            "ids 1733000000000000|1733000000000001",
            "1712345678901234|550e8400-e29b-41d4-a716-446655440000",
            "1712345678901234|order_created_for_customer_42",
        ],
    );
}

#[test]
fn a_sasl_login_password_after_its_prompt_is_masked_and_the_user_name_is_not() {
    let transcript =
        "AUTH LOGIN\r\n334 VXNlcm5hbWU6\r\nYWRh\r\n334 UGFzc3dvcmQ6\r\naHVudGVyMg==\r\n235 ok";
    assert_masks_and_keeps(
        &[
            (transcript, "aHVudGVyMg"),
            (
                r#"Smtp { log: "334 UGFzc3dvcmQ6\r\naHVudGVyMg==\r\n" }"#,
                "aHVudGVyMg",
            ),
        ],
        &["334 VXNlcm5hbWU6\nYWRh\n235 ok", "UGFzc3dvcmQ6 is base64"],
    );
    let masked = masked_text(&RedactionRules::builtin(), transcript, true).expect("masked");
    assert!(masked.contains("YWRh"), "{masked}");
}

#[test]
fn a_run_of_base64_before_its_padding_is_no_label_and_a_long_name_still_is() {
    let run =
        "dGhpcyBpcyBub3QgYSBuYW1lIGJ1dCBhIHJ1biBvZiBiYXNlNjQgZGF0YSB0aGF0IGVuZHMgd2l0aCBhIHBhZA=";
    assert_masks_and_keeps(
        &[(
            "spring.cloud.gcp.secretmanager.credentials.encoded.private.password.value=hunter2",
            "hunter2",
        )],
        &[
            run,
            &format!("{run} next"),
            &format!("{{\"data\":\"{run}\"}}"),
        ],
    );
    // The run before each `=` is not judged as a name: no label's work is charged.
    let mut work = Work::unlimited();
    let runs = format!("{run} ").repeat(10);
    let _ = RedactionRules::builtin().mask_in_sequence_counting(
        &runs,
        true,
        &mut ScanState::default(),
        &mut work,
    );
    assert_eq!(work.done(), 0, "a base64 run was judged as a label");
}

#[test]
fn a_scan_reports_the_work_beyond_its_bytes() {
    use base64::Engine as _;
    let rules = RedactionRules::builtin();
    let work_of = |text: &str| {
        let mut work = Work::unlimited();
        let _ = rules.mask_in_sequence_counting(text, true, &mut ScanState::default(), &mut work);
        work.done()
    };
    assert_eq!(work_of("a plain sentence with no label in it"), 0);
    let debug = "Item { id: 42, kind: Gold, qty: 2 }";
    assert!(
        work_of(debug) >= 3 * Work::LABEL_JUDGED,
        "{}",
        work_of(debug)
    );
    assert!(Work::expected(debug.as_bytes()) >= work_of(debug));
    let document = base64::engine::general_purpose::STANDARD.encode(r#"{"user":"ada","page":2}"#);
    assert!(
        work_of(&document) >= 23 + 2 * Work::LABEL_JUDGED,
        "{}",
        work_of(&document)
    );
}

/// A text that holds a secret is read again to find each span and its masked copy built: its
/// work counts two more passes, so that a condition reading texts full of secrets stops in its
/// budget (it took 97 µs a hit in the conditions bench, `at_limits_password_labels`, when such
/// a text cost what a clean one of its length does).
#[test]
fn a_text_that_holds_a_secret_is_charged_for_masking_it() {
    let rules = RedactionRules::builtin();
    let text = "password: a1 ".repeat(20);
    let mut work = Work::unlimited();
    let masked = rules.mask_in_sequence_counting(&text, true, &mut ScanState::default(), &mut work);
    assert!(masked.is_some());
    assert!(work.done() >= 2 * text.len() as u64, "{}", work.done());
    // With room for one pass and not the masking, the text is withheld whole.
    let mut short = Work::within(text.len() as u64);
    let masked = rules
        .mask_in_sequence_counting(&text, true, &mut ScanState::default(), &mut short)
        .expect("withheld");
    assert_eq!(masked.text, "[redacted:scan-budget]");
}

#[test]
fn base64_runs_full_of_word_starts_are_judged_once() {
    // `+ / - _` end a word inside one run: each `eyJ` after them is a word start, and judging
    // each again made the scan quadratic. Counted in work, so no timing is needed.
    let rules = RedactionRules::builtin();
    for piece in ["eyJ/", "eyJ-", "eyJ+", "eyJ_"] {
        let text = piece.repeat(4_000);
        let mut meter = Work::unlimited();
        let _ = rules.mask_in_sequence_counting(&text, true, &mut ScanState::default(), &mut meter);
        let work = meter.done();
        assert!(
            work <= 3 * text.len() as u64,
            "{piece}: {work} for {} bytes",
            text.len()
        );
    }
}

#[test]
fn a_scan_past_its_limit_withholds_its_text_whole_and_stops_judging() {
    use base64::Engine as _;
    let rules = RedactionRules::builtin();
    // Documents full of labels, each decoded and judged: far more work than bytes.
    let document = base64::engine::general_purpose::STANDARD
        .encode(r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10}"#);
    let text = format!("{document} ").repeat(60);
    let mut unlimited = Work::unlimited();
    let whole =
        rules.mask_in_sequence_counting(&text, true, &mut ScanState::default(), &mut unlimited);
    assert!(whole.is_none(), "nothing secret in it");
    let mut limited = Work::within(unlimited.done() / 10);
    let masked = rules
        .mask_in_sequence_counting(&text, true, &mut ScanState::default(), &mut limited)
        .expect("withheld once the limit is passed");
    assert!(limited.spent());
    assert_eq!(masked.text, "[redacted:scan-budget]");
    // It stopped judging: far less work than the whole scan, a little past the limit.
    assert!(
        limited.done() < unlimited.done() / 5,
        "{} of {}",
        limited.done(),
        unlimited.done()
    );
}
