//! Sensitive names: the built-in keyword lists and the normalization that makes `Card Number`,
//! `card-number`, `$cardNumber` and `@card_number` the same name.
//!
//! Sources: the union of Sentry's default denylist (SDK `DEFAULT_DENYLIST` plus the server-side
//! defaults such as `access_token`, `stripetoken`, `github_token`, `bearer`) and Datadog Dynamic
//! Instrumentation's redacted identifiers, plus payment, banking and key names neither covers
//! (`cvc`, `cardnumber`, `iban`, `accountnumber`, `passphrase`, `secretaccesskey`, …).
//!
//! Two lists, because one rule cannot serve both kinds of keyword:
//! - [`SUBSTRING_KEYWORDS`] match anywhere in the normalized name. They are long or distinctive
//!   enough that any name containing them names a secret (`db_password_hash`, `card_token`,
//!   `clientSecret`). `token` stays here even though it also catches `tokenizer` and
//!   `max_tokens`: withholding a counter costs one field of visibility, a missed credential
//!   cannot be taken back.
//! - [`EXACT_KEYWORDS`] match only the whole normalized name. Short ones would fire inside
//!   ordinary words (`ssn` in `classname`, `pin` in `shipping`, `otp` in `footprint`, `auth` in
//!   `author`, `salt` in `basalt`), and a few (`session`, `signature`, `nonce`) name secrets
//!   alone but harmless things in compounds (`session_timeout`, `signature_valid`).

/// A built-in keyword in normalized form and the reason reported when it matches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyword {
    pub(crate) normalized: &'static str,
    pub(crate) reason: &'static str,
    /// The first four bytes (fewer for shorter keywords, the rest zero), compared as one
    /// integer so that most candidates are ruled out without a byte loop.
    head: u32,
}

/// Up to the first four bytes of `bytes`, little-endian, zero-padded.
const fn head_of(bytes: &[u8]) -> u32 {
    let mut head = 0u32;
    let mut i = 0;
    while i < 4 && i < bytes.len() {
        head |= (bytes[i] as u32) << (8 * i);
        i += 1;
    }
    head
}

/// The mask keeping as many bytes of a head as the keyword has (at most four).
const fn head_mask(len: usize) -> u32 {
    if len >= 4 {
        u32::MAX
    } else {
        (1u32 << (8 * len)) - 1
    }
}

macro_rules! keywords {
    ($($word:literal),* $(,)?) => {
        &[$(Keyword {
            normalized: $word,
            reason: concat!("name:", $word),
            head: head_of($word.as_bytes()),
        }),*]
    };
}

/// Matched anywhere in the normalized name. Sorted by bytes (a test checks), so that
/// [`SUBSTRING_BY_FIRST_BYTE`] can hand out the few candidates starting with a given byte.
pub(crate) const SUBSTRING_KEYWORDS: &[Keyword] = keywords![
    "accesskey",
    "accountnumber",
    "apikey",
    "authorization",
    "bearer",
    "cardnumber",
    "ccnumber",
    "connectionstring",
    "cookie",
    "credential",
    "creditcard",
    "csrf",
    "cvv",
    "encryptionkey",
    "gpgkey",
    "jwt",
    "masterkey",
    "mysqlpwd",
    "passphrase",
    "passwd",
    "password",
    "pgpkey",
    "privatekey",
    "routingnumber",
    "secret",
    "sessionid",
    "sessionkey",
    "signingkey",
    "sshkey",
    "token",
    "xsrf",
];

/// Matched only as the whole normalized name. Sorted by bytes (a test checks).
pub(crate) const EXACT_KEYWORDS: &[Keyword] = keywords![
    "2fa",
    "aiohttpsession",
    "apisignature",
    "appkey",
    "applicationkey",
    "auth",
    "bankaccount",
    "card[number]",
    "cardno",
    "certificatepin",
    "cipher",
    "clientid",
    "connectsid",
    "cvc",
    "cvc2",
    "databaseurl",
    "dburl",
    "dsn",
    "geolocation",
    "iban",
    "ipaddress",
    "jti",
    "licensekey",
    "mfacode",
    "nonce",
    "oauth",
    "otp",
    "otpcode",
    "pan",
    "passhash",
    "pemfile",
    "phpsessid",
    "pin",
    "pincode",
    "pinnumber",
    "pkcs8",
    "privkey",
    "publickey",
    "pwd",
    "recaptchakey",
    "remoteaddr",
    "salt",
    "securityanswer",
    "securitycode",
    "securityquestion",
    "session",
    "signature",
    "signaturekey",
    "socialsecuritynumber",
    "sortcode",
    "ssn",
    "symfony",
    "totp",
    "transactionid",
    "usersession",
    "voterid",
    "xforwardedfor",
    "xrealip",
];

/// For each byte, the range of keywords in a sorted list whose first byte it is.
type FirstByteIndex = [(u16, u16); 256];

const fn index_by_first_byte(list: &[Keyword]) -> FirstByteIndex {
    let mut index = [(0u16, 0u16); 256];
    let mut i = 0;
    while i < list.len() {
        let first = list[i].normalized.as_bytes()[0] as usize;
        if index[first].1 == 0 {
            index[first].0 = i as u16;
        }
        index[first].1 = (i + 1) as u16;
        i += 1;
    }
    index
}

const SUBSTRING_BY_FIRST_BYTE: FirstByteIndex = index_by_first_byte(SUBSTRING_KEYWORDS);
const EXACT_BY_FIRST_BYTE: FirstByteIndex = index_by_first_byte(EXACT_KEYWORDS);

fn candidates(list: &'static [Keyword], index: &FirstByteIndex, first: u8) -> &'static [Keyword] {
    let (start, end) = index[first as usize];
    list.get(start as usize..end as usize).unwrap_or(&[])
}

/// Names are normalized into a buffer on the stack; real field names are far shorter than this.
pub(crate) const NORMALIZED_STACK_LEN: usize = 64;

/// Characters that separate words in names across languages and conventions (snake, kebab,
/// `$` and `@` sigils of JS/PHP/Perl, dotted paths, header names with spaces) and carry no
/// meaning for sensitivity.
fn is_ignored_name_byte(byte: u8) -> bool {
    matches!(byte, b'_' | b'-' | b'$' | b'@' | b' ' | b'.')
}

/// Lowercases ASCII letters and drops separators. Non-ASCII bytes are kept as they are, so
/// the output is the normalized name's UTF-8 bytes.
pub(crate) fn normalized_bytes(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes()
        .filter(|&byte| !is_ignored_name_byte(byte))
        .map(|byte| byte.to_ascii_lowercase())
}

/// Normalizes `name` into `buf`; `None` when the name is longer than the buffer (its
/// normalized form may still fit, but such names are rare enough for the slower path).
pub(crate) fn normalize_into<'b>(
    name: &str,
    buf: &'b mut [u8; NORMALIZED_STACK_LEN],
) -> Option<&'b [u8]> {
    if name.len() > NORMALIZED_STACK_LEN {
        return None;
    }
    // Every byte is written and the length advances past the kept ones only: no branch per
    // byte, and `len` never passes the input position, which is below the buffer's length.
    let mut len = 0;
    for &byte in name.as_bytes() {
        if let Some(slot) = buf.get_mut(len) {
            *slot = byte.to_ascii_lowercase();
        }
        len += usize::from(!is_ignored_name_byte(byte));
    }
    buf.get(..len)
}

/// For each first byte, a bit per length (up to 63) of the exact keywords starting with it, so
/// that most names skip the exact comparison entirely.
const EXACT_LENGTHS_BY_FIRST_BYTE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < EXACT_KEYWORDS.len() {
        let bytes = EXACT_KEYWORDS[i].normalized.as_bytes();
        table[bytes[0] as usize] |= 1 << bytes.len();
        i += 1;
    }
    table
};

/// For each first byte of a substring keyword, a bit per second byte (its low five bits) that
/// can follow it. Most positions of an ordinary name fail this test, so the keyword
/// comparisons run only where a keyword could start.
const SUBSTRING_SECOND_BYTES: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < SUBSTRING_KEYWORDS.len() {
        let bytes = SUBSTRING_KEYWORDS[i].normalized.as_bytes();
        table[bytes[0] as usize] |= 1 << (bytes[1] & 31);
        i += 1;
    }
    table
};

/// The shortest substring keyword (`cvv`, `jwt`).
const SHORTEST_SUBSTRING_KEYWORD: usize = 3;

/// Byte comparison written out so that short keywords compare inline, without a call.
#[inline]
fn starts_with_keyword(rest: &[u8], keyword: &[u8]) -> bool {
    rest.len() >= keyword.len() && rest.iter().zip(keyword).all(|(a, b)| a == b)
}

/// The built-in keyword that makes an already normalized name sensitive, if any.
pub(crate) fn builtin_match(normalized: &[u8]) -> Option<&'static Keyword> {
    let &first = normalized.first()?;
    let has_exact_of_this_length =
        EXACT_LENGTHS_BY_FIRST_BYTE[first as usize] & (1u64 << normalized.len().min(63)) != 0;
    if has_exact_of_this_length
        && let Some(keyword) = candidates(EXACT_KEYWORDS, &EXACT_BY_FIRST_BYTE, first)
            .iter()
            .find(|keyword| {
                keyword.normalized.len() == normalized.len()
                    && starts_with_keyword(normalized, keyword.normalized.as_bytes())
            })
    {
        return Some(keyword);
    }
    let last_start = normalized.len().checked_sub(SHORTEST_SUBSTRING_KEYWORD)?;
    for start in 0..=last_start {
        let rest = &normalized[start..];
        if SUBSTRING_SECOND_BYTES[rest[0] as usize] & (1 << (rest[1] & 31)) == 0 {
            continue;
        }
        let rest_head = head_of(rest);
        if let Some(keyword) = candidates(SUBSTRING_KEYWORDS, &SUBSTRING_BY_FIRST_BYTE, rest[0])
            .iter()
            .find(|keyword| {
                rest_head & head_mask(keyword.normalized.len()) == keyword.head
                    && starts_with_keyword(rest, keyword.normalized.as_bytes())
            })
        {
            return Some(keyword);
        }
    }
    None
}

/// Whether `needle` occurs in `haystack`; used for configured and requested keywords, which are
/// few, so a plain scan keyed on the first byte is enough.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return false;
    };
    if needle.len() > haystack.len() {
        return false;
    }
    (0..=haystack.len() - needle.len())
        .any(|start| haystack[start] == first && haystack[start..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(name: &str) -> Option<&'static str> {
        let mut buf = [0; NORMALIZED_STACK_LEN];
        let normalized = normalize_into(name, &mut buf).expect("test names fit");
        builtin_match(normalized).map(|keyword| keyword.normalized)
    }

    #[test]
    fn lists_are_sorted_unique_and_normalized() {
        for list in [SUBSTRING_KEYWORDS, EXACT_KEYWORDS] {
            for pair in list.windows(2) {
                assert!(
                    pair[0].normalized < pair[1].normalized,
                    "{} before {}",
                    pair[0].normalized,
                    pair[1].normalized
                );
            }
            for keyword in list {
                let normalized: Vec<u8> = normalized_bytes(keyword.normalized).collect();
                assert_eq!(normalized, keyword.normalized.as_bytes());
                assert_eq!(keyword.reason, format!("name:{}", keyword.normalized));
            }
        }
    }

    #[test]
    fn exact_keywords_are_not_already_covered_by_a_substring_keyword() {
        for keyword in EXACT_KEYWORDS {
            let covered = SUBSTRING_KEYWORDS
                .iter()
                .find(|sub| contains(keyword.normalized.as_bytes(), sub.normalized.as_bytes()));
            assert!(
                covered.is_none(),
                "{} is covered by {:?}",
                keyword.normalized,
                covered
            );
        }
    }

    #[test]
    fn sentry_default_denylist_is_covered() {
        for name in [
            "password",
            "passwd",
            "secret",
            "api_key",
            "apikey",
            "auth",
            "credentials",
            "mysql_pwd",
            "privatekey",
            "private_key",
            "token",
            "ip_address",
            "session",
            "csrftoken",
            "sessionid",
            "remote_addr",
            "x_csrftoken",
            "x_forwarded_for",
            "set_cookie",
            "cookie",
            "authorization",
            "x_api_key",
            "x_real_ip",
            "aiohttp_session",
            "connect.sid",
            "csrf_token",
            "csrf",
            "_csrf",
            "_csrf_token",
            "PHPSESSID",
            "_session",
            "symfony",
            "user_session",
            "_xsrf",
            "XSRF-TOKEN",
            "access_token",
            "stripetoken",
            "card[number]",
            "github_token",
            "bearer",
        ] {
            assert!(matched(name).is_some(), "{name}");
        }
    }

    #[test]
    fn datadog_redacted_identifiers_are_covered() {
        for name in [
            "2fa",
            "_csrf",
            "_csrf_token",
            "_session",
            "_xsrf",
            "access_token",
            "aiohttp_session",
            "api_key",
            "apisecret",
            "apisignature",
            "applicationkey",
            "appkey",
            "auth",
            "authtoken",
            "authorization",
            "cc_number",
            "certificatepin",
            "cipher",
            "client_secret",
            "clientid",
            "connect.sid",
            "connectionstring",
            "cookie",
            "credentials",
            "creditcard",
            "csrf",
            "csrf_token",
            "cvv",
            "databaseurl",
            "db_url",
            "encryption_key",
            "encryptionkeyid",
            "geo_location",
            "gpg_key",
            "ip_address",
            "jti",
            "jwt",
            "license_key",
            "masterkey",
            "mysql_pwd",
            "nonce",
            "oauth",
            "oauthtoken",
            "otp",
            "passhash",
            "passwd",
            "password",
            "passwordb",
            "pem_file",
            "pgp_key",
            "PHPSESSID",
            "pin",
            "pincode",
            "pkcs8",
            "private_key",
            "publickey",
            "pwd",
            "recaptcha_key",
            "refresh_token",
            "routingnumber",
            "salt",
            "secret",
            "secretKey",
            "secrettoken",
            "securitycode",
            "security_answer",
            "security_question",
            "serviceaccountcredentials",
            "session",
            "sessionid",
            "sessionkey",
            "set_cookie",
            "signature",
            "signaturekey",
            "ssh_key",
            "ssn",
            "symfony",
            "token",
            "transactionid",
            "twilio_token",
            "user_session",
            "voterid",
            "x-auth-token",
            "x_api_key",
            "x_csrftoken",
            "x_forwarded_for",
            "x_real_ip",
            "XSRF-TOKEN",
        ] {
            assert!(matched(name).is_some(), "{name}");
        }
    }

    #[test]
    fn normalization_ignores_case_and_separators() {
        for name in [
            "Card Number",
            "card-number",
            "$cardNumber",
            "@card_number",
            "CARD.NUMBER",
            "cardnumber",
        ] {
            assert_eq!(matched(name), Some("cardnumber"), "{name}");
        }
        for name in ["Set-Cookie", "set_cookie", "SET COOKIE", "setCookie"] {
            assert!(matched(name).is_some(), "{name}");
        }
        for name in [
            "X-Api-Key",
            "x_api_key",
            "xApiKey",
            "X-Auth-Token",
            "x-csrf-token",
            "X-XSRF-TOKEN",
        ] {
            assert!(matched(name).is_some(), "{name}");
        }
    }

    #[test]
    fn substring_keywords_match_inside_compound_names() {
        assert_eq!(matched("card_token"), Some("token"));
        assert_eq!(matched("db_password_hash"), Some("password"));
        assert_eq!(matched("clientSecret"), Some("secret"));
        assert_eq!(matched("refreshToken"), Some("token"));
        assert_eq!(matched("user_session_id"), Some("sessionid"));
        assert_eq!(matched("stripeApiKey"), Some("apikey"));
        assert_eq!(matched("proxy-authorization"), Some("authorization"));
        assert_eq!(matched("aws_secret_access_key"), Some("secret"));
        assert_eq!(matched("awsAccessKeyId"), Some("accesskey"));
        assert_eq!(matched("cardCvv2"), Some("cvv"));
        assert_eq!(matched("PASSPHRASE_FILE"), Some("passphrase"));
    }

    #[test]
    fn exact_keywords_match_only_whole_names() {
        for name in [
            "pin", "PIN", "ssn", "SSN", "otp", "auth", "pwd", "session", "salt", "nonce", "iban",
        ] {
            assert!(matched(name).is_some(), "{name}");
        }
        for name in [
            "classname",
            "shipping",
            "shipping_address",
            "author",
            "authors",
            "footprint",
            "basalt",
            "session_timeout",
            "signature_valid",
            "pinned",
            "spinner",
            "opinion",
            "lessons",
            "pandas",
            "company",
            "expansion",
            "oauth_provider",
        ] {
            assert_eq!(matched(name), None, "{name}");
        }
    }

    #[test]
    fn ordinary_names_are_not_sensitive() {
        for name in [
            "id",
            "user_id",
            "email",
            "tier",
            "street",
            "city",
            "zip",
            "country",
            "sku",
            "qty",
            "price_cents",
            "total_cents",
            "currency",
            "created_at",
            "items",
            "address",
            "status",
            "",
            "_",
            "日本語",
        ] {
            assert_eq!(matched(name), None, "{name}");
        }
    }

    #[test]
    fn token_counters_are_withheld_on_purpose() {
        assert_eq!(matched("max_tokens"), Some("token"));
        assert_eq!(matched("tokenizer"), Some("token"));
    }

    #[test]
    fn non_ascii_names_keep_their_bytes() {
        assert_eq!(matched("Passwört"), None);
        assert_eq!(matched("mot_de_passe_password"), Some("password"));
        assert_eq!(matched("PASSWORD_ÜBER"), Some("password"));
    }

    #[test]
    fn normalization_reports_overflow() {
        let mut buf = [0; NORMALIZED_STACK_LEN];
        assert!(normalize_into(&"a".repeat(NORMALIZED_STACK_LEN), &mut buf).is_some());
        assert!(normalize_into(&"a".repeat(NORMALIZED_STACK_LEN + 1), &mut buf).is_none());
        // Judged by the input length: longer names take the slower path even if they shrink.
        assert!(normalize_into(&"_".repeat(200), &mut buf).is_none());
        assert_eq!(normalize_into("_-$@ .", &mut buf), Some(&[][..]));
        assert_eq!(normalize_into("A_b-C", &mut buf), Some(&b"abc"[..]));
    }

    #[test]
    fn exact_keywords_fit_the_length_table() {
        assert!(
            EXACT_KEYWORDS
                .iter()
                .all(|keyword| keyword.normalized.len() < 63)
        );
    }

    #[test]
    fn contains_handles_edges() {
        assert!(contains(b"abc", b"abc"));
        assert!(contains(b"xabc", b"bc"));
        assert!(!contains(b"ab", b"abc"));
        assert!(!contains(b"abc", b""));
        assert!(!contains(b"", b"a"));
    }
}
