//! Built-in value patterns: secrets recognised by their shape wherever they appear in text
//! (serde strings, map keys, Debug/Display output).
//!
//! The scanners are written by hand rather than as regexes because they run on every captured
//! string on the application's thread: one pass over the bytes, and at each byte a table
//! lookup decides whether a secret could start there (digits and `-` anywhere, the letters
//! that begin a prefix or scheme only at the start of a word). Only then does a scanner run,
//! and each first checks a short literal prefix (`eyJ`, `AKIA`, `ghp_`, `-----BEGIN `…).
//! Ordinary text costs one lookup per byte and no allocation.
//!
//! Every span starts and ends at an ASCII byte or at the end of the text, so a span always lies
//! on UTF-8 character boundaries.
//!
//! Shapes, and why each is no looser:
//! - card numbers: 13–19 digits, single space or dash between digit groups, a real brand's
//!   issuer prefix and length, Luhn-valid (see `luhn.rs`). A digit
//!   run longer than 19 digits is an id, not a card. A run with separators is tried from each
//!   group start, so `qty 3 4111 1111 1111 1111` still finds the card after `3 `.
//! - JWT/JWS/JWE: `eyJ` (base64url of `{"`) then at least three dot-separated base64url
//!   segments.
//! - `Bearer <token68>` with at least 8 characters; `Basic <base64>` only when the base64 is
//!   well-formed and decodes to `user:password` (contains `:`), because "basic" is an ordinary
//!   English word.
//! - PEM private keys: from `-----BEGIN … PRIVATE KEY…-----` through the next
//!   `-----END …-----`, or to the end of the text when the END line is missing (the key was
//!   cut).
//! - Cloud and service keys by their documented prefixes; an AWS secret access key has no
//!   prefix of its own, so it is recognised only right after a `secret_access_key`-like label.
//! - Three formats known by a part inside or at the end of them, from a trigger byte rare in
//!   text: an Azure AD client secret (`…8Q~…`, at `~`), a Facebook app token
//!   (`app_id|app_secret`, at `|`) and a MaxMind license key (`…_mmk`, at `_` before `m`),
//!   each with its exact lengths and a word boundary on both sides.
//! - Base64 documents (JSON, PEM, kubeconfig) whose decoded text holds a secret by these
//!   shapes or by a built-in name: withheld whole (see `encoded.rs`).
//!
//! When the text is only a prefix of the value (`complete == false`), a candidate whose prefix
//! is present and which runs into the end of the text is masked too, because its remainder
//! could complete it beyond the cut. For card numbers that means a trailing run of more than
//! 6 digits (the issuer prefix, which card-handling rules allow to show).

use super::luhn::{CARD_DIGITS_MAX, CARD_DIGITS_MIN, digits_are_card_number};
use super::providers::{self, ProviderToken, is_alnum, is_base64url};
use super::{RedactionRules, Work, encoded, labelled};
use crate::text::run_end;

/// What kind of secret a span holds. The names appear in masks (`[redacted:jwt]`) and reasons
/// (`pattern:jwt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    CardNumber,
    Jwt,
    BearerToken,
    BasicAuth,
    PrivateKey,
    AwsSecretAccessKey,
    AuthorizationCredential,
    UrlCredential,
    TelegramBotToken,
    DiscordBotToken,
    MailchimpApiKey,
    OktaApiToken,
    AzureClientSecret,
    FacebookAppToken,
    MaxmindLicenseKey,
    /// A base64 document that holds a secret (`encoded.rs`).
    EncodedSecret,
    /// A provider's token format (`providers.rs`).
    Provider(&'static ProviderToken),
}

impl PartialEq for &'static ProviderToken {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(*self, *other)
    }
}

impl Eq for &'static ProviderToken {}

macro_rules! kind_texts {
    ($($kind:ident => $name:literal),* $(,)?) => {
        impl SecretKind {
            /// The mask that replaces the span.
            pub(crate) const fn mask(self) -> &'static str {
                match self {
                    $(SecretKind::$kind => concat!("[redacted:", $name, "]"),)*
                    SecretKind::Provider(token) => token.mask,
                }
            }
            /// The reason reported for the span.
            pub(crate) const fn reason(self) -> &'static str {
                match self {
                    $(SecretKind::$kind => concat!("pattern:", $name),)*
                    SecretKind::Provider(token) => token.reason,
                }
            }
        }
    };
}

kind_texts! {
    CardNumber => "card-number",
    Jwt => "jwt",
    BearerToken => "bearer-token",
    BasicAuth => "basic-auth",
    PrivateKey => "private-key",
    AwsSecretAccessKey => "aws-secret-access-key",
    AuthorizationCredential => "authorization-credential",
    UrlCredential => "url-credential",
    TelegramBotToken => "telegram-bot-token",
    DiscordBotToken => "discord-bot-token",
    MailchimpApiKey => "mailchimp-api-key",
    OktaApiToken => "okta-api-token",
    AzureClientSecret => "azure-ad-client-secret",
    FacebookAppToken => "facebook-app-token",
    MaxmindLicenseKey => "maxmind-license-key",
    EncodedSecret => "encoded-secret",
}

/// A secret found in a text: bytes `start..end` hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SecretSpan {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: SecretKind,
}

/// No complete built-in secret is shorter than this (a 13-digit card number), so shorter
/// complete texts are skipped without looking at them.
pub(crate) const SHORTEST_SECRET_LEN: usize = CARD_DIGITS_MIN;

/// Byte classes for the scan loop.
const ALNUM: u8 = 1;
/// Can start a secret wherever it is: card digits, PEM dashes.
const STARTS_ANYWHERE: u8 = 2;
/// Can start a secret only at the start of a word (after a byte that is not a letter or
/// digit): every prefix and scheme scanner requires that, so mid-word letters cost nothing.
const STARTS_WORD: u8 = 4;

const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        if (byte as u8).is_ascii_alphanumeric() {
            table[byte] = ALNUM;
        }
        // `\` and `%` start nothing, but the scan notes where they are: an escape they begin
        // ends a word (see `escape_ends_at`).
        if (byte as u8).is_ascii_digit()
            || byte == b'-' as usize
            || byte == b':' as usize
            || byte == b'\\' as usize
            || byte == b'%' as usize
            || byte == b'~' as usize
            || byte == b'|' as usize
            || byte == b'_' as usize
        {
            table[byte] |= STARTS_ANYWHERE;
        }
        byte += 1;
    }
    // Special scanners' first letters, then every provider prefix's.
    let word_starts = b"eBbSsTtNnDdMLYW";
    let mut i = 0;
    while i < word_starts.len() {
        table[word_starts[i] as usize] |= STARTS_WORD;
        i += 1;
    }
    let mut byte = 0;
    while byte < 256 {
        if providers::begins_a_prefix(byte as u8) {
            table[byte] |= STARTS_WORD;
        }
        byte += 1;
    }
    table
};

/// The outcome of one scanner at one position.
enum Scan {
    /// A secret at these bytes.
    Found(SecretSpan),
    /// Nothing here; resume the search at this byte.
    Resume(usize),
}

/// The first secret starting at or after byte `from`.
#[cfg(test)]
pub(crate) fn next_secret(text: &[u8], from: usize, complete: bool) -> Option<SecretSpan> {
    next_secret_counting(text, from, complete, &mut Work::unlimited())
}

/// The first secret starting at or after byte `from`, adding to `work` what the scan did
/// beyond reading each byte once, in bytes' worth (see [`super::Work`]).
pub(crate) fn next_secret_counting(
    text: &[u8],
    from: usize,
    complete: bool,
    work: &mut Work,
) -> Option<SecretSpan> {
    next_secret_in(text, from, complete, Encoded::Decode, work)
}

/// Whether the scan decodes the base64 documents it meets (`encoded.rs`): the text a
/// document decodes to is scanned without, so nothing is decoded twice.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoded {
    Decode,
    LeaveEncoded,
}

/// The scan's base64 decoding: whether it decodes, and where the last run it judged ends. A
/// run is judged once: `+ / - _` are base64 letters that end a word, so a run holds many word
/// starts, and judging each again (`eyJ/eyJ/…`) would make the scan quadratic.
struct Decoding {
    mode: Encoded,
    judged_to: usize,
}

fn next_secret_in(
    text: &[u8],
    from: usize,
    complete: bool,
    encoded: Encoded,
    work: &mut Work,
) -> Option<SecretSpan> {
    let mut decoding = Decoding {
        mode: encoded,
        judged_to: 0,
    };
    let mut at = from;
    let mut after_alnum = at > 0 && text.get(at - 1).is_some_and(|&byte| is_alnum(byte));
    // Where the last `\` or `%` was: a letter more than an escape's length after it cannot
    // end one, so most letters are spared the look back.
    let mut last_escape: Option<usize> = None;
    while let Some(&byte) = text.get(at) {
        let class = BYTE_CLASS[byte as usize];
        if class & STARTS_ANYWHERE == 0
            && (class & STARTS_WORD == 0
                || (after_alnum
                    && !(last_escape.is_some_and(|escape| at - escape <= 6)
                        && escape_ends_at(text, at))))
        {
            after_alnum = class & ALNUM != 0;
            at += 1;
            continue;
        }
        // The byte after the trigger rules out most candidates before any scanner runs.
        let next = text.get(at + 1).copied().unwrap_or(0);
        let scan = match byte {
            b'0'..=b'9' => digits(text, at, complete),
            b'_' if next == b'm' => maxmind_license_key(text, at),
            b'_' => Scan::Resume(at + 1),
            b'-' if next == b'-' => private_key(text, at, complete),
            b'-' if next == b'u' => mailchimp_api_key(text, at),
            b':' if next == b'/' => url_credential(text, at, complete),
            b'\\' | b'%' => {
                last_escape = Some(at);
                Scan::Resume(at + 1)
            }
            b'~' => azure_client_secret(text, at, complete),
            b'|' => facebook_app_token(text, at, complete),
            b'-' | b':' => Scan::Resume(at + 1),
            _ => word_start(text, at, complete, &mut decoding, work),
        };
        match scan {
            Scan::Found(span) => return Some(span),
            Scan::Resume(next) => {
                at = next.max(at + 1);
                after_alnum = text.get(at - 1).is_some_and(|&byte| is_alnum(byte));
            }
        }
    }
    None
}

fn found(start: usize, end: usize, kind: SecretKind) -> Scan {
    Scan::Found(SecretSpan { start, end, kind })
}

/// A letter at the start of a word: the scanners for shapes that begin with a letter, then
/// the provider prefixes.
fn word_start(
    text: &[u8],
    at: usize,
    complete: bool,
    decoding: &mut Decoding,
    work: &mut Work,
) -> Scan {
    let byte = text[at];
    let next = text.get(at + 1).copied().unwrap_or(0);
    let special = match byte {
        b'e' if matches!(next, b'y' | b'w') => match jwt(text, at, complete) {
            Scan::Resume(after_jwt) => match encoded_document(text, at, complete, decoding, work) {
                Scan::Resume(after) => Scan::Resume(after.max(after_jwt)),
                found => found,
            },
            found => found,
        },
        b'L' if next == b'S' => encoded_document(text, at, complete, decoding, work),
        b'Y' if next == b'X' => encoded_document(text, at, complete, decoding, work),
        b'W' if next == b'3' => encoded_document(text, at, complete, decoding, work),
        // The byte after the first rules out most words before any scheme is compared:
        // Bearer/Basic, Token, Negotiate/NTLM, Digest.
        b'B' | b'b' if matches!(next, b'e' | b'E' | b'a' | b'A') => {
            authorization_credential(text, at, complete)
        }
        b'T' | b't' if matches!(next, b'o' | b'O') => authorization_credential(text, at, complete),
        b'N' | b'n' if matches!(next, b'e' | b'E' | b't' | b'T') => {
            authorization_credential(text, at, complete)
        }
        b'D' | b'd' if matches!(next, b'i' | b'I') => authorization_credential(text, at, complete),
        b'S' | b's' if matches!(next, b'e' | b'E') => aws_secret_access_key(text, at, complete),
        _ => Scan::Resume(at + 1),
    };
    if let Scan::Found(span) = special {
        return Scan::Found(span);
    }
    if matches!(byte, b'M' | b'N')
        && let Some(end) = discord_bot_token(text, at)
    {
        return found(at, end, SecretKind::DiscordBotToken);
    }
    match providers::provider_token_at(text, at, complete) {
        Some((end, token)) => found(at, end, SecretKind::Provider(token)),
        None => Scan::Resume(at + 1),
    }
}

/// An Azure AD (Entra ID) client secret, whose only fixed part is inside it: three
/// characters, a digit and `Q~` (the `~` at `tilde`), then 31–34 more, a word of its own.
#[cold]
fn azure_client_secret(text: &[u8], tilde: usize, complete: bool) -> Scan {
    const HEAD: usize = 5;
    let in_secret =
        |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'~' | b'.' | b'-');
    let resume = Scan::Resume(tilde + 1);
    let Some(start) = tilde.checked_sub(HEAD) else {
        return resume;
    };
    let head = &text[start..tilde];
    let head_fits =
        head[..3].iter().all(|&b| in_secret(b)) && head[3].is_ascii_digit() && head[4] == b'Q';
    if !head_fits || (start > 0 && in_secret(text[start - 1])) {
        return resume;
    }
    let run = run_end(text, tilde + 1, in_secret);
    if run == text.len() && !complete {
        return found(start, run, SecretKind::AzureClientSecret);
    }
    // A sentence's full stop or a dash after the secret is not part of it.
    let end = tilde
        + 1
        + text[tilde + 1..run]
            .iter()
            .rposition(|&b| !matches!(b, b'.' | b'-'))
            .map_or(0, |last| last + 1);
    if (31..=34).contains(&(end - tilde - 1)) {
        return found(start, end, SecretKind::AzureClientSecret);
    }
    resume
}

/// A Facebook app access token, `app_id|app_secret`: 15–16 digits, `|` (at `bar`), then the
/// app secret, 32 lowercase hex digits, a word of its own (so a pipe-delimited log line with
/// a microsecond timestamp before a UUID or a name is not taken for one).
#[cold]
fn facebook_app_token(text: &[u8], bar: usize, complete: bool) -> Scan {
    let resume = Scan::Resume(bar + 1);
    let digits = text[..bar]
        .iter()
        .rev()
        .take(17)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let start = bar - digits;
    if !(15..=16).contains(&digits) || (start > 0 && is_alnum(text[start - 1])) {
        return resume;
    }
    let is_secret = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    let end = run_end(text, bar + 1, is_secret);
    let secret_len = end - bar - 1;
    let ends_word = text
        .get(end)
        .is_none_or(|&b| !is_alnum(b) && b != b'-' && b != b'_');
    if end == text.len() && !complete && secret_len > 0 || (secret_len == 32 && ends_word) {
        return found(start, end, SecretKind::FacebookAppToken);
    }
    resume
}

/// A base64 document whose decoded text holds a secret, judged by the built-in patterns and
/// names (`encoded.rs`).
#[cold]
fn encoded_document(
    text: &[u8],
    start: usize,
    complete: bool,
    decoding: &mut Decoding,
    work: &mut Work,
) -> Scan {
    if decoding.mode == Encoded::LeaveEncoded || start < decoding.judged_to || work.spent() {
        return Scan::Resume(start + 1);
    }
    let judged = encoded::encoded_secret_at(text, start, complete, work, |decoded, whole, work| {
        let builtin = RedactionRules::builtin();
        next_secret_in(decoded, 0, whole, Encoded::LeaveEncoded, work).is_some()
            || labelled::next_labelled_value(decoded, 0, |label| builtin.label_rule(label, work))
                .is_some()
    });
    match judged {
        encoded::Judged::NotADocument => Scan::Resume(start + 1),
        encoded::Judged::Secret { end } => found(start, end, SecretKind::EncodedSecret),
        encoded::Judged::Clean { run_end } => {
            decoding.judged_to = run_end;
            Scan::Resume(start + 1)
        }
    }
}

/// A digit: a Telegram bot token (`123456789:AA…`), an Okta token (`00` + 40), a provider
/// format that begins with a digit, or a card.
fn digits(text: &[u8], start: usize, complete: bool) -> Scan {
    if word_starts_at(text, start) {
        let run = run_end(text, start, |byte| byte.is_ascii_digit());
        if (8..=10).contains(&(run - start)) && text.get(run) == Some(&b':') {
            let end = run_end(text, run + 1, is_base64url);
            if end - run - 1 == 35 {
                return found(start, end, SecretKind::TelegramBotToken);
            }
        }
        if run - start == 2 && text[start] == b'0' && text[start + 1] == b'0' {
            let end = run_end(text, start, is_base64url);
            let body = &text[start..end];
            let mixed =
                body.iter().any(u8::is_ascii_lowercase) && body.iter().any(u8::is_ascii_uppercase);
            if end - start == 42 && mixed {
                return found(start, end, SecretKind::OktaApiToken);
            }
        }
        // Formats that begin with a digit (`1//0`, `4b1d`).
        if let Some((end, token)) = providers::provider_token_at(text, start, complete) {
            return found(start, end, SecretKind::Provider(token));
        }
    }
    card_number(text, start, complete)
}

/// Mailchimp's `<32 hex>-us<1-2 digits>`, found at its `-us`.
fn mailchimp_api_key(text: &[u8], dash: usize) -> Scan {
    const HEX_LEN: usize = 32;
    if dash < HEX_LEN
        || text.get(dash + 2) != Some(&b's')
        || !text.get(dash + 3).is_some_and(u8::is_ascii_digit)
    {
        return Scan::Resume(dash + 1);
    }
    let start = dash - HEX_LEN;
    let hex = &text[start..dash];
    if !hex.iter().all(u8::is_ascii_hexdigit) || !word_starts_at(text, start) {
        return Scan::Resume(dash + 1);
    }
    let end = run_end(text, dash + 3, |byte| byte.is_ascii_digit());
    if end - dash - 3 > 2 || text.get(end).is_some_and(|&byte| is_alnum(byte)) {
        return Scan::Resume(dash + 1);
    }
    found(start, end, SecretKind::MailchimpApiKey)
}

/// A MaxMind license key, whose only fixed part is its end: 6 letters or digits, `_`, 29
/// more, then `_mmk` (gitleaks' `maxmind-license-key` rule), found at the `_` of `_mmk`; the
/// scan comes here only for an underscore before an `m`.
#[cold]
fn maxmind_license_key(text: &[u8], underscore: usize) -> Scan {
    const LEN: usize = 40;
    let end = underscore + 4;
    let fits = |start: usize| {
        text.get(underscore..end) == Some(b"_mmk")
            && run_end(text, start, is_alnum) == start + 6
            && text[start + 6] == b'_'
            && run_end(text, start + 7, is_alnum) == underscore
            && (start == 0 || !is_base64url(text[start - 1]))
            && text.get(end).is_none_or(|&byte| !is_base64url(byte))
    };
    match end.checked_sub(LEN) {
        Some(start) if fits(start) => found(start, end, SecretKind::MaxmindLicenseKey),
        _ => Scan::Resume(underscore + 1),
    }
}

/// Discord bot tokens: `M…`/`N…` base64 of the user id (23–26 characters), a dot, 6, a dot,
/// 27 or more.
fn discord_bot_token(text: &[u8], start: usize) -> Option<usize> {
    let first = run_end(text, start, is_alnum);
    if !(24..=28).contains(&(first - start)) || text.get(first) != Some(&b'.') {
        return None;
    }
    let second = run_end(text, first + 1, is_base64url);
    if second - first - 1 != 6 || text.get(second) != Some(&b'.') {
        return None;
    }
    let third = run_end(text, second + 1, is_base64url);
    (27..=40)
        .contains(&(third - second - 1))
        .then_some(third)
        .filter(|&end| text.get(end).is_none_or(|&byte| !is_alnum(byte)))
}

/// The password of `scheme://user:password@host` (or the whole userinfo when it is one long
/// token, `https://<token>@host`), found at the `:` of `://`.
fn url_credential(text: &[u8], colon: usize, complete: bool) -> Scan {
    /// A user part this long without a password is a token, not a user name.
    const TOKEN_AS_USER_LEN: usize = 20;
    if text.get(colon + 2) != Some(&b'/') {
        return Scan::Resume(colon + 1);
    }
    let userinfo = colon + 3;
    let end = run_end(text, userinfo, |byte| {
        !matches!(
            byte,
            b'@' | b'/' | b'?' | b'#' | b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'<' | b'>'
        ) && byte != b'\\'
    });
    let password = text[userinfo..end]
        .iter()
        .position(|&byte| byte == b':')
        .map(|offset| userinfo + offset + 1);
    let end = match password {
        Some(password) => password_end(text, password, end),
        None => end,
    };
    let at_sign = text.get(end) == Some(&b'@');
    let runs_into_cut = end == text.len() && !complete;
    if !at_sign && !runs_into_cut {
        return Scan::Resume(colon + 3);
    }
    match password {
        Some(password) if password < end => found(password, end, SecretKind::UrlCredential),
        None if end - userinfo >= TOKEN_AS_USER_LEN || takes_password_alone(text, colon) => {
            found(userinfo, end, SecretKind::UrlCredential)
        }
        _ => Scan::Resume(colon + 3),
    }
}

/// Where a URL's password that starts at `password` ends, given that the userinfo's usual
/// delimiters stopped it at `end`: passwords are often written with an unescaped `/`, `?` or
/// `#`, so a password runs on to an `@` that comes before any space or quote. A run of digits
/// then `/` is a port and a path (`host:8080/@user`), not a password.
fn password_end(text: &[u8], password: usize, end: usize) -> usize {
    if !matches!(text.get(end), Some(b'/' | b'?' | b'#')) {
        return end;
    }
    if text[password..end].iter().all(u8::is_ascii_digit) {
        return end;
    }
    let further = run_end(text, end, |byte| {
        !matches!(
            byte,
            b'@' | b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'<' | b'>' | b'\\'
        )
    });
    if text.get(further) == Some(&b'@') {
        further
    } else {
        end
    }
}

/// Whether the URL whose `://` starts at `colon` has a scheme whose clients read a userinfo
/// without `:` as a password (`redis://secret@host`), so a short one is masked too.
fn takes_password_alone(text: &[u8], colon: usize) -> bool {
    let scheme_start = text[..colon]
        .iter()
        .rposition(|&byte| !byte.is_ascii_alphanumeric())
        .map_or(0, |at| at + 1);
    let scheme = &text[scheme_start..colon];
    scheme.eq_ignore_ascii_case(b"redis") || scheme.eq_ignore_ascii_case(b"rediss")
}

fn is_base64(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/'
}

/// RFC 7235 token68 characters, without the trailing `=` padding.
fn is_token68(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

fn is_card_separator(byte: u8) -> bool {
    byte == b' ' || byte == b'-'
}

/// Whether the byte before `at` lets a word start at `at`: the start of the text, a byte that
/// is not alphanumeric, or the end of an escape sequence.
fn word_starts_at(text: &[u8], at: usize) -> bool {
    at == 0 || text.get(at - 1).is_none_or(|&byte| !is_alnum(byte)) || escape_ends_at(text, at)
}

/// Whether the bytes just before `at` are an escape sequence, after which a word starts even
/// though the escape ends in a letter or digit: Debug output and JSON write a line break as
/// `\n` (so a token on the next line follows the letter `n`), JSON and JavaScript write
/// `\u003e` and `\x3e`, and URLs and form bodies `%3D`. A backslash that was itself escaped
/// (`\\n`, a literal backslash and `n`) is read as an escape too: at worst a token-shaped word
/// after it is masked.
#[inline]
pub(crate) fn escape_ends_at(text: &[u8], at: usize) -> bool {
    // Asked for most letters of a text: four loads answer nearly every one of them.
    let byte_before = |back: usize| {
        if at >= back {
            text.get(at - back).copied().unwrap_or(0)
        } else {
            0
        }
    };
    let may_end_escape = (byte_before(2) == b'\\')
        | (byte_before(3) == b'%')
        | (byte_before(4) == b'\\')
        | (byte_before(6) == b'\\');
    may_end_escape && escape_sequence_ends_at(text, at)
}

#[cold]
fn escape_sequence_ends_at(text: &[u8], at: usize) -> bool {
    let before = |back: usize| at.checked_sub(back).and_then(|i| text.get(i).copied());
    let hex_before =
        |count: usize| (1..=count).all(|back| before(back).is_some_and(|b| b.is_ascii_hexdigit()));
    (before(2) == Some(b'\\')
        && matches!(
            before(1),
            Some(b'n' | b't' | b'r' | b'0' | b'f' | b'v' | b'b')
        ))
        || (before(3) == Some(b'%') && hex_before(2))
        || (before(4) == Some(b'\\') && before(3) == Some(b'x') && hex_before(2))
        || (before(6) == Some(b'\\') && before(5) == Some(b'u') && hex_before(4))
}

fn starts_with_ignore_case(text: &[u8], at: usize, prefix: &[u8]) -> bool {
    text.get(at..at + prefix.len())
        .is_some_and(|candidate| candidate.eq_ignore_ascii_case(prefix))
}

fn card_number(text: &[u8], start: usize, complete: bool) -> Scan {
    // Digits glued to earlier digits belong to a longer number that was already judged whole.
    if start > 0 && text[start - 1].is_ascii_digit() {
        return Scan::Resume(run_end(text, start, |byte| byte.is_ascii_digit()));
    }
    // The run: digit groups joined by single separators.
    let mut end = start;
    let mut total_digits = 0usize;
    loop {
        let group_end = run_end(text, end, |byte| byte.is_ascii_digit());
        total_digits += group_end - end;
        end = group_end;
        match (text.get(end), text.get(end + 1)) {
            (Some(&sep), Some(next)) if is_card_separator(sep) && next.is_ascii_digit() => end += 1,
            _ => break,
        }
    }
    if total_digits < CARD_DIGITS_MIN && complete {
        return Scan::Resume(end);
    }
    // A cut right after a separator may hide more digits of the same run.
    let runs_into_cut =
        !complete && (end == text.len() || (end + 1 == text.len() && is_card_separator(text[end])));

    // Try each group start in turn; from each, every group end that closes 13–19 digits.
    let mut group_start = start;
    let mut digits_before_group = 0usize;
    loop {
        let mut digits = 0usize;
        let mut at = group_start;
        loop {
            let group_end = run_end(text, at, |byte| byte.is_ascii_digit());
            digits += group_end - at;
            if digits > CARD_DIGITS_MAX {
                break;
            }
            if digits >= CARD_DIGITS_MIN && digits_are_card_number(&text[group_start..group_end]) {
                return found(group_start, group_end, SecretKind::CardNumber);
            }
            if group_end >= end {
                break;
            }
            at = group_end + 1;
        }
        let digits_to_cut = total_digits - digits_before_group;
        // More than the 6-digit issuer prefix and still short enough to be a card: what lies
        // beyond the cut could make it one.
        if runs_into_cut && digits_to_cut > 6 && digits_to_cut <= CARD_DIGITS_MAX {
            return found(group_start, text.len(), SecretKind::CardNumber);
        }
        let group_end = run_end(text, group_start, |byte| byte.is_ascii_digit());
        if group_end >= end {
            return Scan::Resume(end);
        }
        digits_before_group += group_end - group_start;
        group_start = group_end + 1;
    }
}

fn jwt(text: &[u8], start: usize, complete: bool) -> Scan {
    // A JSON header in base64url: `{"` is `eyJ`, `{ "` is `eyA`, `{` and a line break `ewo` or
    // `ew0`. Three dot-separated segments are required whichever it is.
    let is_header_start = matches!(
        text.get(start + 1..start + 3),
        Some(b"yJ" | b"yA" | b"wo" | b"w0")
    );
    // Inside a longer base64 run `eyJ` starts no token; after a word joined by `-` or `_`
    // (`jwt-eyJ…`, `refresh_eyJ…`) or an escape (`\teyJ…`) it does.
    if !is_header_start || (start > 0 && is_alnum(text[start - 1]) && !escape_ends_at(text, start))
    {
        return Scan::Resume(start + 1);
    }
    let mut end = run_end(text, start, is_base64url);
    let mut segments = 1;
    while text.get(end) == Some(&b'.') {
        end = run_end(text, end + 1, is_base64url);
        segments += 1;
    }
    if segments >= 3 {
        return found(start, end, SecretKind::Jwt);
    }
    if !complete && end == text.len() {
        return found(start, end, SecretKind::Jwt);
    }
    Scan::Resume(end)
}

/// Authorization schemes whose credential is one token68: `(scheme, shortest credential)`.
/// `Token`, `Negotiate` and `NTLM` are ordinary words too, so their credential must be long.
const TOKEN_SCHEMES: &[(&[u8], usize)] = &[(b"token", 20), (b"negotiate", 16), (b"ntlm", 16)];

/// `Bearer <token>`, `Basic <base64 of user:password>`, `Token`/`Negotiate`/`NTLM <token>` and
/// `Digest <parameters>`, as in an `Authorization` header. Only the credential is masked; the
/// scheme stays visible because it tells the reader what was there.
fn authorization_credential(text: &[u8], start: usize, complete: bool) -> Scan {
    if !word_starts_at(text, start) {
        return Scan::Resume(start + 1);
    }
    if starts_with_ignore_case(text, start, b"digest ") {
        return digest_credential(text, start, complete);
    }
    let (scheme_len, kind, shortest) = if starts_with_ignore_case(text, start, b"bearer") {
        (6, SecretKind::BearerToken, 8)
    } else if starts_with_ignore_case(text, start, b"basic") {
        (5, SecretKind::BasicAuth, 8)
    } else if let Some(&(scheme, shortest)) = TOKEN_SCHEMES
        .iter()
        .find(|(scheme, _)| starts_with_ignore_case(text, start, scheme))
    {
        (scheme.len(), SecretKind::AuthorizationCredential, shortest)
    } else {
        return Scan::Resume(start + 1);
    };
    let credential_start = run_end(text, start + scheme_len, |byte| {
        byte == b' ' || byte == b'\t'
    });
    if credential_start == start + scheme_len {
        return Scan::Resume(start + 1);
    }
    let accept = if kind == SecretKind::BasicAuth {
        is_base64
    } else {
        is_token68
    };
    let body_end = run_end(text, credential_start, accept);
    let end = run_end(text, body_end, |byte| byte == b'=');
    let body = &text[credential_start..body_end];
    let cut_inside = !complete && end == text.len() && !body.is_empty();
    let whole = end == text.len() || !is_alnum(text[end]);
    let plausible = match kind {
        SecretKind::BasicAuth => decodes_to_user_password(&text[credential_start..end]),
        SecretKind::AuthorizationCredential => {
            body.len() >= shortest && body.iter().any(u8::is_ascii_digit)
        }
        // A token has a digit, a capital or a token68 symbol, or is long, or follows an
        // `Authorization` header's name: a lowercase word after `Bearer` elsewhere is prose
        // ("Bearer authentication", "Bearer credentials").
        _ => {
            body.len() >= shortest
                && (body.len() >= 24
                    || body.iter().any(|&byte| !byte.is_ascii_lowercase())
                    || follows_authorization_header(text, start))
        }
    };
    if cut_inside || (whole && plausible) {
        return found(credential_start, end, kind);
    }
    Scan::Resume(start + 1)
}

/// Whether the scheme at `start` is the value of an `Authorization` (or
/// `Proxy-Authorization`) header: that name, then `:` or `=`, then spaces or quotes.
fn follows_authorization_header(text: &[u8], start: usize) -> bool {
    let before = &text[..start];
    let kept = before
        .iter()
        .rposition(|&byte| !matches!(byte, b' ' | b'\t' | b'"' | b'\''))
        .map_or(0, |last| last + 1);
    let Some(label) = before[..kept]
        .strip_suffix(b":")
        .or_else(|| before[..kept].strip_suffix(b"="))
    else {
        return false;
    };
    let label = label.trim_ascii_end();
    let label = label.strip_suffix(b"\"").unwrap_or(label);
    label.len() >= 13 && label[label.len() - 13..].eq_ignore_ascii_case(b"authorization")
}

/// The parameters a Digest credential may start with (RFC 7616).
const DIGEST_PARAMETERS: &[&[u8]] = &[
    b"username",
    b"username*",
    b"realm",
    b"nonce",
    b"uri",
    b"response",
    b"algorithm",
    b"cnonce",
    b"opaque",
    b"qop",
    b"nc",
    b"userhash",
];

/// `Digest username="…", realm="…", nonce="…", response="…"`: every parameter up to the end
/// of the line (or of the quoted string holding the header) is masked, since the response,
/// nonces and user together let a captured request be replayed or the password guessed.
fn digest_credential(text: &[u8], start: usize, complete: bool) -> Scan {
    let params = start + b"digest ".len();
    let first_param_end = run_end(text, params, is_alnum);
    // RFC 7616's parameters; `digest sha256=…` is a checksum, not a credential.
    let is_param = text.get(first_param_end) == Some(&b'=')
        && DIGEST_PARAMETERS
            .iter()
            .any(|name| text[params..first_param_end].eq_ignore_ascii_case(name));
    let runs_into_cut = first_param_end == text.len() && !complete;
    if !is_param && !runs_into_cut {
        return Scan::Resume(start + 1);
    }
    let mut end = params;
    while let Some(&byte) = text.get(end) {
        if byte == b'\n' || byte == b'\r' || closes_enclosing_string(text, end) {
            break;
        }
        end += 1;
    }
    found(params, end, SecretKind::AuthorizationCredential)
}

/// Whether the `"` at `at` closes a string that holds a header, rather than a parameter's own
/// quotes: it is not escaped, does not open a value (`=` before it), and is not followed by
/// the next parameter.
fn closes_enclosing_string(text: &[u8], at: usize) -> bool {
    text[at] == b'"'
        && !matches!(text.get(at.wrapping_sub(1)), Some(b'\\' | b'='))
        && text
            .get(at + 1)
            .is_none_or(|&next| !matches!(next, b',' | b' ') && !is_alnum(next))
}

/// Whether `encoded` is padded standard base64 of at least 8 characters whose decoded bytes
/// contain `:`, the separator of HTTP Basic credentials.
fn decodes_to_user_password(encoded: &[u8]) -> bool {
    if encoded.len() < 8 || !encoded.len().is_multiple_of(4) {
        return false;
    }
    fn sextet(byte: u8) -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => 0,
            _ => return None,
        } as u32)
    }
    encoded.chunks_exact(4).any(|quad| {
        let mut bits = 0u32;
        for &byte in quad {
            match sextet(byte) {
                Some(value) => bits = (bits << 6) | value,
                None => return false,
            }
        }
        let padding = quad.iter().filter(|&&byte| byte == b'=').count();
        let decoded = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        decoded[..3 - padding.min(2)].contains(&b':')
    })
}

fn private_key(text: &[u8], start: usize, complete: bool) -> Scan {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    if !text[start..].starts_with(BEGIN) {
        // A cut inside `-----BEGIN` itself shows nothing of the key.
        return Scan::Resume(start + 1);
    }
    let label_start = start + BEGIN.len();
    let label_end = run_end(text, label_start, |byte| {
        byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b' '
    });
    let label = &text[label_start..label_end];
    if label_end == text.len() && !complete {
        return found(start, text.len(), SecretKind::PrivateKey);
    }
    let is_private = label.windows(11).any(|window| window == b"PRIVATE KEY");
    if !is_private || !text[label_end..].starts_with(DASHES) {
        return Scan::Resume(label_start);
    }
    let body_start = label_end + DASHES.len();
    let end = find(text, body_start, b"-----END ")
        .and_then(|end_line| find(text, end_line + b"-----END ".len(), DASHES))
        .map_or(text.len(), |closing| closing + DASHES.len());
    found(start, end, SecretKind::PrivateKey)
}

/// Where the first `-----END …-----` line of `text` ends, if it has one.
pub(crate) fn end_of_pem_end_line(text: &[u8]) -> Option<usize> {
    const END: &[u8] = b"-----END ";
    let end_line = find(text, 0, END)?;
    find(text, end_line + END.len(), b"-----").map(|closing| closing + 5)
}

/// Whether a private key begins in `text` at or after `from` and its END line is not in it:
/// the open key the full scan reports ([`private_key`] spans running to the text's end).
pub(crate) fn private_key_left_open(text: &[u8], from: usize, complete: bool) -> bool {
    let mut at = from;
    while let Some(begin) = find(text, at, b"-----") {
        match private_key(text, begin, complete) {
            Scan::Found(span) => {
                if span.end == text.len() && end_of_pem_end_line(&text[span.start..]).is_none() {
                    return true;
                }
                at = span.end.max(begin + 1);
            }
            Scan::Resume(next) => at = next.max(begin + 1),
        }
    }
    false
}

fn find(text: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let haystack = text.get(from..)?;
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|offset| from + offset)
}

/// An AWS secret access key (40 base64 characters) right after a label such as
/// `aws_secret_access_key = `, `"SecretAccessKey": "` or `secret-access-key: `.
fn aws_secret_access_key(text: &[u8], start: usize, complete: bool) -> Scan {
    const KEY_LEN: usize = 40;
    if !starts_with_ignore_case(text, start, b"secret") {
        return Scan::Resume(start + 1);
    }
    let mut at = start + b"secret".len();
    for word in [&b"access"[..], b"key"] {
        if text
            .get(at)
            .is_some_and(|&byte| byte == b'_' || byte == b'-')
        {
            at += 1;
        }
        if !starts_with_ignore_case(text, at, word) {
            return Scan::Resume(start + 1);
        }
        at += word.len();
    }
    // Between label and value: closing quote, spaces, `:` / `=` / `=>`, spaces, opening quote.
    let separator_end = run_end(text, at, |byte| matches!(byte, b'"' | b'\'' | b' ' | b'\t'));
    let Some(&assign) = text.get(separator_end) else {
        return Scan::Resume(at);
    };
    if assign != b':' && assign != b'=' {
        return Scan::Resume(at);
    }
    let mut value_start = separator_end + 1;
    if text.get(value_start) == Some(&b'>') {
        value_start += 1;
    }
    value_start = run_end(text, value_start, |byte| {
        matches!(byte, b'"' | b'\'' | b' ' | b'\t')
    });
    let value_end = run_end(text, value_start, is_base64);
    let value_len = value_end - value_start;
    if !complete && value_end == text.len() && value_len > 0 && value_len <= KEY_LEN {
        return found(value_start, value_end, SecretKind::AwsSecretAccessKey);
    }
    if value_len == KEY_LEN && text.get(value_end).is_none_or(|&byte| byte != b'=') {
        return found(value_start, value_end, SecretKind::AwsSecretAccessKey);
    }
    Scan::Resume(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All secrets in `text` as (kind, secret text).
    fn secrets(text: &str, complete: bool) -> Vec<(SecretKind, &str)> {
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(span) = next_secret(text.as_bytes(), from, complete) {
            assert!(span.start < span.end && span.end <= text.len());
            found.push((span.kind, &text[span.start..span.end]));
            from = span.end;
        }
        found
    }

    fn reasons(text: &str) -> Vec<&'static str> {
        secrets(text, true)
            .into_iter()
            .map(|(kind, _)| kind.reason())
            .collect()
    }

    fn kinds(text: &str) -> Vec<SecretKind> {
        secrets(text, true)
            .into_iter()
            .map(|(kind, _)| kind)
            .collect()
    }

    use SecretKind::*;

    #[test]
    fn card_numbers_plain_and_separated() {
        assert_eq!(
            secrets("4111111111111111", true),
            [(CardNumber, "4111111111111111")]
        );
        assert_eq!(
            secrets("card 4242 4242 4242 4242 ok", true),
            [(CardNumber, "4242 4242 4242 4242")]
        );
        assert_eq!(
            secrets("5555-5555-5555-4444", true),
            [(CardNumber, "5555-5555-5555-4444")]
        );
        assert_eq!(
            secrets("amex 378282246310005.", true),
            [(CardNumber, "378282246310005")]
        );
        assert_eq!(
            secrets("4222222222222", true),
            [(CardNumber, "4222222222222")]
        );
    }

    #[test]
    fn card_found_after_a_leading_number_joined_by_a_separator() {
        assert_eq!(
            secrets("qty 3 4111 1111 1111 1111", true),
            [(CardNumber, "4111 1111 1111 1111")]
        );
        assert_eq!(
            secrets("id 12 4111111111111111", true),
            [(CardNumber, "4111111111111111")]
        );
    }

    #[test]
    fn luhn_invalid_and_embedded_digits_are_kept() {
        assert!(kinds("4111111111111112").is_empty());
        assert!(kinds("order 1234567890123 shipped").is_empty());
        assert!(kinds("order 12345678901234567 shipped").is_empty());
        // A valid card number inside a longer run of digits is part of some other number.
        assert!(kinds("94111111111111111").is_empty());
        assert!(kinds("41111111111111110000").is_empty());
        assert!(kinds("1700000000123456789012").is_empty());
        // Double separators break the run.
        assert!(kinds("4111  1111  1111  1111").is_empty());
        assert!(kinds("4111--1111--1111--1111").is_empty());
        assert!(kinds("2024-11-24 15:46:47").is_empty());
    }

    #[test]
    fn jwt_found_anywhere() {
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(secrets(jwt, true), [(Jwt, jwt)]);
        let quoted = format!("token=\"{jwt}\";");
        assert_eq!(secrets(&quoted, true), [(Jwt, jwt)]);
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
        assert_eq!(secrets(unsigned, true), [(Jwt, unsigned)]);
    }

    #[test]
    fn escapes_end_words_and_jwt_headers_with_spaces() {
        let token = "ghp_".to_owned() + &"a1B2".repeat(9);
        for before in ["\\n", "\\t", "\\u003e", "\\x3e", "%3D", "%22"] {
            let text = format!("line{before}{token} end");
            assert_eq!(secrets(&text, true).len(), 1, "{text}");
        }
        for jwt in [
            "eyAiYWxnIjogIkhTMjU2In0.eyAic3ViIjogIm9wcyJ9.c2lnbmF0dXJlc2lnbmF0dXJl",
            "ewogImFsZyI6ICJIUzI1NiJ9.ewogInN1YiI6ICJvcHMifQ.c2lnbmF0dXJlc2lnbmF0dXJl",
        ] {
            assert_eq!(kinds(jwt), [SecretKind::Jwt]);
            assert_eq!(kinds(&format!("jwt-{jwt}")), [SecretKind::Jwt]);
        }
        assert!(kinds("a new word, ewe and eyes").is_empty());
    }

    #[test]
    fn url_passwords_with_slashes_and_redis_passwords_alone() {
        assert_eq!(
            secrets("https://ops:Pz/lFpoQ2q@git.internal/app.git", true),
            [(SecretKind::UrlCredential, "Pz/lFpoQ2q")]
        );
        assert_eq!(
            secrets("redis://PzKSVzgd1b@cache:6379/0", true),
            [(SecretKind::UrlCredential, "PzKSVzgd1b")]
        );
        assert!(secrets("https://host:8080/users/@alice", true).is_empty());
        assert!(secrets("ssh://git@github.com/acme/app.git", true).is_empty());
    }

    #[test]
    fn bearer_and_digest_in_prose_and_checksums_are_kept() {
        assert!(kinds("Supports Bearer authentication for all endpoints").is_empty());
        assert!(kinds("Bearer credentials failed; falling back").is_empty());
        assert!(kinds("artifact digest sha256=9f86d081884c7d659a2feaa0c55ad0").is_empty());
        assert_eq!(kinds("Bearer abcdefgh1"), [SecretKind::BearerToken]);
        assert_eq!(
            kinds("Authorization: Bearer abcdefghijklmnopqrstuvwxyz"),
            [SecretKind::BearerToken]
        );
        assert_eq!(
            kinds("Digest username=\"bob\", response=\"6629fae4\""),
            [SecretKind::AuthorizationCredential]
        );
    }

    #[test]
    fn jwt_lookalikes_are_kept() {
        assert!(kinds("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0").is_empty());
        assert!(kinds("xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig").is_empty());
        assert!(kinds("eye.level.check and keyJam").is_empty());
    }

    #[test]
    fn bearer_and_basic_credentials() {
        assert_eq!(
            secrets("Authorization: Bearer abcdef123456.xyz~+/==", true),
            [(BearerToken, "abcdef123456.xyz~+/==")]
        );
        assert_eq!(
            secrets("bearer  sk-0123456789", true),
            [(BearerToken, "sk-0123456789")]
        );
        assert_eq!(
            secrets("Authorization: BEARER abcdefgh", true),
            [(BearerToken, "abcdefgh")]
        );
        // "dXNlcjpwYXNz" is base64 of "user:pass".
        assert_eq!(
            secrets("Authorization: Basic dXNlcjpwYXNz", true),
            [(BasicAuth, "dXNlcjpwYXNz")]
        );
        assert_eq!(
            secrets("basic YWxhZGRpbjpvcGVuc2VzYW1l", true),
            [(BasicAuth, "YWxhZGRpbjpvcGVuc2VzYW1l")]
        );
    }

    #[test]
    fn bearer_and_basic_in_prose_are_kept() {
        assert!(kinds("the bearer of bad news").is_empty());
        assert!(kinds("Bearer short").is_empty());
        assert!(kinds("basic information about the order").is_empty());
        // Well-formed base64 without `user:password` inside.
        assert!(kinds("Basic aGVsbG8gd29ybGQ=").is_empty());
        assert!(kinds("Basic_auth_enabled and Bearerish xyz").is_empty());
    }

    #[test]
    fn pem_private_key_through_end_line_or_to_end() {
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        let text = format!("key: {pem}\nnext");
        assert_eq!(secrets(&text, true), [(PrivateKey, pem)]);
        let escaped = "\"-----BEGIN PRIVATE KEY-----\\nMIIEvQ\\n-----END PRIVATE KEY-----\\n\"";
        assert_eq!(
            secrets(escaped, true),
            [(
                PrivateKey,
                "-----BEGIN PRIVATE KEY-----\\nMIIEvQ\\n-----END PRIVATE KEY-----"
            )]
        );
        let open = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE";
        assert_eq!(secrets(open, true), [(PrivateKey, open)]);
        let pgp =
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----";
        assert_eq!(secrets(pgp, true), [(PrivateKey, pgp)]);
    }

    #[test]
    fn public_pem_blocks_are_kept() {
        assert!(kinds("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----").is_empty());
        assert!(kinds("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----").is_empty());
        assert!(kinds("----- section -----").is_empty());
    }

    #[test]
    fn cloud_and_service_keys() {
        let cases = [
            ("AKIAIOSFODNN7EXAMPLE", "pattern:aws-access-key-id"),
            ("ASIAY34FZKBOKMUTVV7A", "pattern:aws-access-key-id"),
            (
                "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe",
                "pattern:gcp-api-key",
            ),
            (
                "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",
                "pattern:github-token",
            ),
            (
                "gho_16C7e42F292c6912E7710c838347Ae178B4a",
                "pattern:github-token",
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU",
                "pattern:github-token",
            ),
            (
                "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
                "pattern:slack-token",
            ),
            ("xoxp-1234567890-abcdef", "pattern:slack-token"),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "pattern:stripe-key"),
            ("rk_live_4eC39HqLyjWDarjtT1zdp7dc", "pattern:stripe-key"),
            (
                "ya29.a0AfH6SMBx-abcdefghijklmnopqrstu_vwxyz",
                "pattern:google-oauth-token",
            ),
        ];
        for (key, reason) in cases {
            assert_eq!(reasons(key), [reason], "{key}");
            assert_eq!(secrets(key, true)[0].1, key);
            let embedded = format!("cfg {{ key: \"{key}\" }}");
            assert_eq!(reasons(&embedded), [reason], "{embedded}");
            assert_eq!(secrets(&embedded, true)[0].1, key);
        }
    }

    #[test]
    fn key_lookalikes_are_kept() {
        for text in [
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLE1",
            "XAKIAIOSFODNN7EXAMPLE",
            "AKIAiosfodnn7example",
            "ghp_short",
            "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            "sk_live_short",
            "xoxz-1234567890-abcdef",
            "ya29.short",
            "Asia/Tokyo timezone, skillful grep",
        ] {
            assert!(kinds(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn aws_secret_key_only_when_labelled() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert!(kinds(secret).is_empty());
        for text in [
            format!("aws_secret_access_key = {secret}"),
            format!("AWS_SECRET_ACCESS_KEY={secret}"),
            format!("{{\"SecretAccessKey\": \"{secret}\"}}"),
            format!("secret-access-key: '{secret}'"),
            format!("Creds {{ secret_access_key: \"{secret}\" }}"),
            format!(":secret_access_key => \"{secret}\""),
        ] {
            assert_eq!(
                secrets(&text, true),
                [(AwsSecretAccessKey, secret)],
                "{text}"
            );
        }
        assert!(kinds("secret_access_key = tooShort").is_empty());
    }

    #[test]
    fn several_secrets_in_order_with_text_between() {
        let text = "a AKIAIOSFODNN7EXAMPLE b 4111111111111111 c eyJhbGciOi.eyJzdWIi.c2ln";
        assert_eq!(
            reasons(text),
            [
                "pattern:aws-access-key-id",
                "pattern:card-number",
                "pattern:jwt"
            ]
        );
    }

    #[test]
    fn prefix_masks_candidates_running_into_the_cut() {
        assert_eq!(
            secrets("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdW", false),
            [(Jwt, "eyJhbGciOiJIUzI1NiJ9.eyJzdW")]
        );
        assert_eq!(secrets("jwt eyJ", false), [(Jwt, "eyJ")]);
        assert_eq!(
            secrets("card 4111 1111", false),
            [(CardNumber, "4111 1111")]
        );
        assert_eq!(
            secrets("card 4111 1111 ", false),
            [(CardNumber, "4111 1111 ")]
        );
        assert_eq!(secrets("card 4111111", false), [(CardNumber, "4111111")]);
        assert_eq!(
            secrets("-----BEGIN RSA PRIVATE KEY-----\nMIIE", false)[0].0,
            PrivateKey
        );
        assert_eq!(
            secrets("x -----BEGIN RSA PRIV", false),
            [(PrivateKey, "-----BEGIN RSA PRIV")]
        );
        assert_eq!(
            secrets("Authorization: Bearer ab", false),
            [(BearerToken, "ab")]
        );
        assert_eq!(
            secrets("Authorization: Basic dXNl", false),
            [(BasicAuth, "dXNl")]
        );
        assert_eq!(secrets("key AKIAIOSF", false)[0].1, "AKIAIOSF");
        assert_eq!(secrets("key ghp_wWPw", false)[0].1, "ghp_wWPw");
        assert_eq!(
            secrets("secret_access_key: \"wJalrX", false),
            [(AwsSecretAccessKey, "wJalrX")]
        );
    }

    #[test]
    fn prefix_keeps_what_cannot_be_a_secret() {
        // Six digits are at most the issuer prefix.
        assert!(secrets("card 411111", false).is_empty());
        // Too many digits to be a card whatever follows.
        assert!(secrets("id 12345678901234567890", false).is_empty());
        // The same candidates in a complete text are judged by their whole shape.
        assert!(secrets("card 4111 1111", true).is_empty());
        assert!(secrets("jwt eyJhbGciOiJIUzI1NiJ9", true).is_empty());
        assert!(secrets("Authorization: Bearer ab", true).is_empty());
        // Candidates that end before the cut are judged whole.
        assert!(secrets("jwt eyJhbGciOiJIUzI1NiJ9 and more", false).is_empty());
        assert!(secrets("Bearer ", false).is_empty());
    }

    #[test]
    fn short_complete_texts_cannot_hold_a_secret() {
        for len in 0..SHORTEST_SECRET_LEN {
            let digits = &"4111111111111111"[..len];
            assert!(kinds(digits).is_empty(), "{digits}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_spans_are_char_aligned() {
        let samples = [
            "é4111111111111111é",
            "日本eyJ語.x.y",
            "Bearer 日本語日本語日本語",
            "-----BEGIN 日本 PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----日本",
            "secret_access_key:",
            "secret_access_key",
            "AKIA",
            "b",
            "-",
            "4",
            "4 ",
            "4-",
            "Basic ====",
            "Basic ",
            "eyJ..........",
        ];
        for text in samples {
            for complete in [true, false] {
                for (_, secret) in secrets(text, complete) {
                    assert!(!secret.is_empty());
                }
                for cut in 0..=text.len() {
                    if let Some(prefix) = text.get(..cut) {
                        let _ = secrets(prefix, complete);
                    }
                }
            }
        }
    }
}
