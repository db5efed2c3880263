//! Provider token formats: API keys and tokens recognised by the fixed prefix their issuer
//! gives them, followed by a body of known characters and length.
//!
//! The formats are facts taken from public secret-scanning rule sets (gitleaks' default
//! config, trufflehog's detectors, GitHub secret scanning's partner patterns) and the
//! providers' own documentation; each entry below is one of them, written as data. Matching is
//! done by the pattern scanner's one pass: a per-byte table says which bytes begin some prefix
//! ([`begins_a_prefix`]); at the start of a word, one 32-byte entry per first byte
//! ([`BY_FIRST_BYTE`]) rules out most of those by their second byte, and only then does the
//! scanner compare the few prefixes beginning with that byte (a bit per entry). The tables are
//! small and contiguous because the scan runs cold: a point hit a few times a second finds
//! them out of the caches, and every cache line touched is a miss. No regex runs.
//!
//! A prefix must start a word (the byte before it is not a letter or digit), the body must
//! have at least `min_body` bytes of its class, and a token must end at a word boundary. Formats
//! without a distinctive prefix (Fastly, Confluent, Datadog and most 32-hex keys) are left to
//! the name rules (`FASTLY_API_TOKEN = …`, `"api_key": "…"`), which catch them by their label.

/// One provider's token format.
#[derive(Debug)]
pub(crate) struct ProviderToken {
    pub(crate) prefix: &'static [u8],
    /// The bytes a body may hold, a bit per ASCII byte: a table lookup per byte, where a
    /// function per byte would be an indirect call.
    pub(crate) body: ByteClass,
    pub(crate) min_body: usize,
    /// Exact-length keys (AWS key ids) must not continue with more body characters.
    pub(crate) max_body: usize,
    pub(crate) mask: &'static str,
    pub(crate) reason: &'static str,
}

pub(crate) const fn is_alnum(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

pub(crate) const fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

const fn is_upper_or_digit(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit()
}

const fn is_alnum_or_dash(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-'
}

const fn is_alnum_or_underscore(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

const fn is_hex(byte: u8) -> bool {
    byte.is_ascii_hexdigit()
}

const fn is_hex_or_dash(byte: u8) -> bool {
    byte.is_ascii_hexdigit() || byte == b'-'
}

const fn is_upper_digit_or_dash(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'-'
}

const fn is_alnum_or_dot(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'.'
}

/// Base64url and the `:` between a bot's or a sender's id and its secret.
const fn is_base64url_or_colon(byte: u8) -> bool {
    is_base64url(byte) || byte == b':'
}

/// Base64 (standard or URL-safe) and the dots of dotted tokens.
const fn is_token_body(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'+' | b'/' | b'=')
}

/// Paths of webhook URLs: the ids and the secret part.
const fn is_path_body(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'/')
}

/// Paths of webhook URLs that join two ids with `@` (Microsoft Teams).
const fn is_path_or_at(byte: u8) -> bool {
    is_path_body(byte) || byte == b'@'
}

/// Bech32 (Age secret keys), upper case.
const fn is_bech32_upper(byte: u8) -> bool {
    matches!(byte, b'0' | b'2'..=b'9' | b'A'..=b'H' | b'J'..=b'N' | b'P'..=b'Z')
}

/// A set of ASCII bytes, a bit each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteClass([u64; 2]);

impl ByteClass {
    #[inline]
    pub(crate) fn contains(&self, byte: u8) -> bool {
        byte < 128 && self.0[(byte >> 6) as usize] & (1 << (byte & 63)) != 0
    }
}

/// The class of the bytes `$test` accepts, built at compile time.
macro_rules! byte_class {
    ($test:ident) => {{
        let mut bits = [0u64; 2];
        let mut byte = 0u8;
        while byte < 128 {
            if $test(byte) {
                bits[(byte >> 6) as usize] |= 1 << (byte & 63);
            }
            byte += 1;
        }
        ByteClass(bits)
    }};
}

macro_rules! providers {
    ($($name:literal: $prefix:literal, $body:ident, $min:literal..$max:expr;)*) => {
        /// Every provider format, longest prefix first where two share a start (`sk-ant-`
        /// before `sk-`), since the first match wins.
        pub(crate) const PROVIDERS: &[ProviderToken] = &[$(ProviderToken {
            prefix: $prefix,
            body: byte_class!($body),
            min_body: $min,
            max_body: $max,
            mask: concat!("[redacted:", $name, "]"),
            reason: concat!("pattern:", $name),
        }),*];
    };
}

const ANY: usize = usize::MAX;

providers! {
    // Cloud providers.
    "aws-access-key-id": b"AKIA", is_upper_or_digit, 16..16;
    "aws-access-key-id": b"ASIA", is_upper_or_digit, 16..16;
    "aws-access-key-id": b"ABIA", is_upper_or_digit, 16..16;
    "aws-access-key-id": b"ACCA", is_upper_or_digit, 16..16;
    "aws-access-key-id": b"A3T", is_upper_or_digit, 17..17;
    "alibaba-access-key-id": b"LTAI", is_alnum, 20..20;
    "cloudflare-origin-ca-key": b"v1.0-", is_hex_or_dash, 171..171;
    "google-oauth-refresh-token": b"1//0", is_base64url, 40..ANY;
    "gcp-api-key": b"AIza", is_base64url, 35..35;
    "google-oauth-token": b"ya29.", is_base64url, 20..ANY;
    "google-oauth-client-secret": b"GOCSPX-", is_base64url, 28..28;
    "digitalocean-token": b"dop_v1_", is_hex, 64..64;
    "digitalocean-token": b"doo_v1_", is_hex, 64..64;
    "digitalocean-token": b"dor_v1_", is_hex, 64..64;
    "heroku-api-key": b"HRKU-", is_base64url, 30..ANY;
    "databricks-token": b"dapi", is_hex_or_dash, 32..34;
    "fly-token": b"FlyV1 fm2_", is_token_body, 40..ANY;
    "tailscale-key": b"tskey-", is_alnum_or_dash, 30..ANY;
    "planetscale-token": b"pscale_tkn_", is_base64url, 32..ANY;
    "planetscale-password": b"pscale_pw_", is_base64url, 32..ANY;
    "planetscale-token": b"pscale_oauth_", is_base64url, 32..ANY;
    "supabase-token": b"sbp_", is_hex, 40..40;
    "neon-api-key": b"napi_", is_alnum, 40..ANY;
    "render-api-key": b"rnd_", is_alnum, 32..ANY;
    "netlify-token": b"nfp_", is_alnum, 36..ANY;
    "deno-deploy-token": b"ddp_", is_alnum, 36..ANY;
    "vault-token": b"hvs.", is_base64url, 24..ANY;
    "vault-token": b"hvb.", is_base64url, 138..ANY;
    "vault-token": b"s.", is_alnum, 24..24;
    "openshift-token": b"sha256~", is_base64url, 43..43;
    "fly-token": b"fo1_", is_base64url, 43..43;
    "fly-token": b"fm1a_", is_token_body, 100..ANY;
    "fly-token": b"fm1r_", is_token_body, 100..ANY;
    "fly-token": b"fm2_", is_token_body, 100..ANY;
    "scalingo-token": b"tk-us-", is_base64url, 48..48;
    "supabase-secret-key": b"sb_secret_", is_base64url, 20..ANY;
    "clickhouse-cloud-key": b"4b1d", is_alnum, 38..38;
    "settlemint-token": b"sm_pat_", is_alnum, 16..16;
    "settlemint-token": b"sm_aat_", is_alnum, 16..16;
    "settlemint-token": b"sm_sat_", is_alnum, 16..16;
    "doppler-token": b"dp.pt.", is_alnum, 40..ANY;
    "doppler-token": b"dp.st.", is_token_body, 40..ANY;
    "doppler-token": b"dp.ct.", is_alnum, 40..ANY;
    "doppler-token": b"dp.sa.", is_alnum, 40..ANY;
    "pulumi-token": b"pul-", is_hex, 40..40;
    "terraform-token": b"atlasv1.", is_base64url, 60..ANY;
    // Source hosting, packages and CI.
    "github-token": b"ghp_", is_alnum, 30..ANY;
    "github-token": b"gho_", is_alnum, 30..ANY;
    "github-token": b"ghu_", is_alnum, 30..ANY;
    "github-token": b"ghs_", is_alnum, 30..ANY;
    "github-token": b"ghr_", is_alnum, 30..ANY;
    "github-token": b"github_pat_", is_alnum_or_underscore, 22..ANY;
    "gitlab-token": b"glpat-", is_base64url, 20..ANY;
    "gitlab-token": b"gldt-", is_base64url, 20..ANY;
    "gitlab-token": b"glrt-", is_base64url, 20..ANY;
    "gitlab-token": b"glptt-", is_hex, 40..40;
    "gitlab-token": b"GR1348941", is_base64url, 20..ANY;
    "gitlab-token": b"glcbt-", is_base64url, 20..ANY;
    "gitlab-token": b"gloas-", is_base64url, 64..64;
    "gitlab-token": b"glft-", is_base64url, 20..ANY;
    "gitlab-token": b"glimt-", is_base64url, 25..25;
    "gitlab-token": b"glagent-", is_base64url, 50..ANY;
    "gitlab-token": b"glsoat-", is_base64url, 20..ANY;
    "gitlab-token": b"glffct-", is_base64url, 20..ANY;
    "intra42-secret": b"s-s4t2ud-", is_hex, 64..64;
    "intra42-secret": b"s-s4t2af-", is_hex, 64..64;
    "typeform-token": b"tfp_", is_token_body, 59..59;
    "frameio-token": b"fio-u-", is_token_body, 64..64;
    "adobe-client-secret": b"p8e-", is_alnum, 32..32;
    "airtable-token": b"pat", is_alnum_or_dot, 79..79;
    "bitbucket-token": b"ATBB", is_alnum, 32..ANY;
    "atlassian-token": b"ATATT3", is_token_body, 100..ANY;
    "npm-token": b"npm_", is_alnum, 36..36;
    "pypi-token": b"pypi-", is_base64url, 50..ANY;
    "rubygems-token": b"rubygems_", is_hex, 48..48;
    "clojars-token": b"CLOJARS_", is_alnum, 60..60;
    "docker-token": b"dckr_pat_", is_base64url, 27..ANY;
    "jfrog-token": b"AKCp", is_alnum, 69..ANY;
    "jfrog-token": b"cmVmdGtu", is_base64url, 56..ANY;
    "buildkite-token": b"bkua_", is_hex, 40..40;
    "circleci-token": b"CCIPAT_", is_base64url, 30..ANY;
    "sonarqube-token": b"squ_", is_hex, 40..40;
    "sonarqube-token": b"sqa_", is_hex, 40..40;
    "sonarqube-token": b"sqp_", is_hex, 40..40;
    "sourcegraph-token": b"sgp_", is_base64url, 40..ANY;
    "postman-api-key": b"PMAK-", is_hex_or_dash, 50..ANY;
    "readme-api-key": b"rdme_", is_alnum, 70..ANY;
    "prefect-api-key": b"pnu_", is_alnum, 36..36;
    "octopus-api-key": b"API-", is_upper_or_digit, 26..32;
    "contentful-token": b"CFPAT-", is_base64url, 43..43;
    "figma-token": b"figd_", is_base64url, 40..ANY;
    "infracost-api-key": b"ico-", is_alnum, 32..32;
    // Messaging and collaboration.
    "slack-token": b"xoxb-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxp-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxa-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxr-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxs-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxe.xoxp-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxe.xoxb-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxe-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xoxo-", is_alnum_or_dash, 10..ANY;
    "slack-token": b"xapp-", is_alnum_or_dash, 10..ANY;
    "slack-webhook": b"hooks.slack.com/services/", is_path_body, 30..ANY;
    "discord-webhook": b"discord.com/api/webhooks/", is_path_body, 30..ANY;
    "discord-webhook": b"discordapp.com/api/webhooks/", is_path_body, 30..ANY;
    "teams-webhook": b"webhook.office.com/webhookb2/", is_path_or_at, 30..ANY;
    "telegram-bot-token": b"telegram.org/bot", is_base64url_or_colon, 40..ANY;
    "linear-api-key": b"lin_api_", is_alnum, 40..40;
    "notion-token": b"secret_", is_alnum, 43..43;
    "notion-token": b"ntn_", is_alnum, 40..ANY;
    "sendgrid-api-key": b"SG.", is_token_body, 60..ANY;
    "sendinblue-api-key": b"xkeysib-", is_hex_or_dash, 64..ANY;
    "mailgun-api-key": b"key-", is_hex, 32..32;
    "twilio-api-key": b"SK", is_hex, 32..32;
    // Payments and commerce.
    "stripe-key": b"sk_live_", is_alnum, 16..ANY;
    "stripe-key": b"rk_live_", is_alnum, 16..ANY;
    "stripe-webhook-secret": b"whsec_", is_alnum, 32..ANY;
    "square-token": b"sq0atp-", is_base64url, 22..ANY;
    "square-token": b"sq0csp-", is_base64url, 40..ANY;
    "square-or-facebook-token": b"EAA", is_alnum, 60..ANY;
    "shopify-token": b"shpat_", is_hex, 32..32;
    "shopify-token": b"shpca_", is_hex, 32..32;
    "shopify-token": b"shppa_", is_hex, 32..32;
    "shopify-token": b"shpss_", is_hex, 32..32;
    "shippo-token": b"shippo_live_", is_hex, 40..40;
    "shippo-token": b"shippo_test_", is_hex, 40..40;
    "flutterwave-key": b"FLWSECK_TEST-", is_alnum_or_dash, 32..ANY;
    "flutterwave-key": b"FLWSECK-", is_alnum_or_dash, 32..ANY;
    "razorpay-key": b"rzp_live_", is_alnum, 14..ANY;
    "duffel-token": b"duffel_live_", is_base64url, 40..ANY;
    "duffel-token": b"duffel_test_", is_base64url, 40..ANY;
    "easypost-api-key": b"EZAK", is_alnum, 54..54;
    "easypost-api-key": b"EZTK", is_alnum, 54..54;
    "braintree-token": b"access_token$production$", is_token_body, 20..ANY;
    "plaid-token": b"access-production-", is_hex_or_dash, 36..36;
    // AI and data.
    "anthropic-api-key": b"sk-ant-", is_base64url, 32..ANY;
    "openai-api-key": b"sk-proj-", is_base64url, 32..ANY;
    "openai-api-key": b"sk-svcacct-", is_base64url, 32..ANY;
    "openai-api-key": b"sk-admin-", is_base64url, 32..ANY;
    // The legacy form is alphanumeric (`sk-` and 48): with `-` allowed, a branch name such as
    // `sk-fix-payment-webhook-retry-backoff` would read as a key.
    "openai-api-key": b"sk-", is_alnum, 32..ANY;
    "huggingface-token": b"hf_", is_alnum, 34..ANY;
    "huggingface-token": b"api_org_", is_alnum, 34..34;
    "tavily-api-key": b"tvly-", is_alnum_or_dash, 32..ANY;
    "posthog-personal-key": b"phx_", is_alnum_or_underscore, 43..43;
    "replicate-token": b"r8_", is_alnum, 37..37;
    "groq-api-key": b"gsk_", is_alnum, 52..52;
    "perplexity-api-key": b"pplx-", is_alnum, 48..ANY;
    "xai-api-key": b"xai-", is_alnum, 80..ANY;
    "langsmith-api-key": b"lsv2_pt_", is_alnum_or_underscore, 40..ANY;
    "langsmith-api-key": b"lsv2_sk_", is_alnum_or_underscore, 40..ANY;
    "pinecone-api-key": b"pcsk_", is_alnum_or_underscore, 40..ANY;
    "mapbox-secret-token": b"sk.eyJ", is_token_body, 60..ANY;
    // Base64url only: with dots and slashes, `https://sl.wikipedia.org/wiki/…` would read as one.
    "dropbox-token": b"sl.", is_base64url, 120..ANY;
    // Observability.
    "sentry-token": b"sntrys_", is_token_body, 60..ANY;
    "sentry-token": b"sntryu_", is_hex, 64..64;
    "newrelic-key": b"NRAK-", is_upper_or_digit, 27..27;
    "newrelic-key": b"NRJS-", is_hex, 19..19;
    "newrelic-key": b"NRII-", is_base64url, 32..32;
    "dynatrace-token": b"dt0c01.", is_token_body, 80..ANY;
    "grafana-token": b"glc_", is_token_body, 32..ANY;
    "grafana-token": b"glsa_", is_alnum_or_underscore, 32..ANY;
    "grafana-token": b"eyJrIjoi", is_token_body, 70..ANY;
    // Identity and keys.
    "age-secret-key": b"AGE-SECRET-KEY-1", is_bech32_upper, 58..58;
    "twitter-bearer-token": b"AAAAAAAAAAAAAAAAAAAA", is_token_body, 30..ANY;
    "1password-token": b"ops_eyJ", is_token_body, 100..ANY;
    "1password-secret-key": b"A3-", is_upper_digit_or_dash, 36..37;
}

/// The prefixes beginning with one byte: which second bytes (below 128) can follow it, and a
/// bit per [`PROVIDERS`] entry. Both answers sit in one 64-byte entry, and the entries of all
/// first bytes in one small table, so that a word start costs at most one line of it.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct FirstByte {
    second_bytes: u128,
    candidates: [u128; CANDIDATE_WORDS],
}

/// Words of [`FirstByte::candidates`]: room for 256 formats.
const CANDIDATE_WORDS: usize = 2;
const _: () = assert!(PROVIDERS.len() <= 128 * CANDIDATE_WORDS);

/// How many distinct bytes begin a prefix.
const FIRST_BYTE_COUNT: usize = {
    let mut seen = [false; 256];
    let mut count = 0;
    let mut i = 0;
    while i < PROVIDERS.len() {
        let first = PROVIDERS[i].prefix[0] as usize;
        if !seen[first] {
            seen[first] = true;
            count += 1;
        }
        i += 1;
    }
    count
};

/// For each ASCII byte, one more than the index of its entry in [`BY_FIRST_BYTE`], or 0 when
/// no prefix begins with it. Two cache lines, shared by every word start.
static FIRST_BYTE_ENTRY: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut next = 1;
    let mut i = 0;
    while i < PROVIDERS.len() {
        let first = PROVIDERS[i].prefix[0] as usize;
        assert!(first < 128, "provider prefixes are ASCII");
        if table[first] == 0 {
            table[first] = next;
            next += 1;
        }
        i += 1;
    }
    table
};

/// The prefixes of each first byte, in the order of [`FIRST_BYTE_ENTRY`].
pub(crate) static BY_FIRST_BYTE: [FirstByte; FIRST_BYTE_COUNT] = {
    let mut table = [FirstByte {
        second_bytes: 0,
        candidates: [0; CANDIDATE_WORDS],
    }; FIRST_BYTE_COUNT];
    let mut i = 0;
    while i < PROVIDERS.len() {
        let prefix = PROVIDERS[i].prefix;
        let entry = &mut table[FIRST_BYTE_ENTRY[prefix[0] as usize] as usize - 1];
        entry.second_bytes |= 1 << (prefix[1] & 127);
        entry.candidates[i / 128] |= 1 << (i % 128);
        i += 1;
    }
    table
};

/// Whether `byte` begins some provider prefix.
pub(crate) const fn begins_a_prefix(byte: u8) -> bool {
    let mut i = 0;
    while i < PROVIDERS.len() {
        if PROVIDERS[i].prefix[0] == byte {
            return true;
        }
        i += 1;
    }
    false
}

/// The provider token starting at `start` (a word start), as `(end, token)`; `None` when no
/// prefix matches there or the body does not fit. `complete == false` masks a candidate whose
/// prefix is present and which runs into the end of the text.
pub(crate) fn provider_token_at(
    text: &[u8],
    start: usize,
    complete: bool,
) -> Option<(usize, &'static ProviderToken)> {
    let (&first, &second) = (text.get(start)?, text.get(start + 1)?);
    let entry = FIRST_BYTE_ENTRY.get(usize::from(first))?.checked_sub(1)?;
    let entry = BY_FIRST_BYTE.get(usize::from(entry))?;
    if second >= 128 || entry.second_bytes & (1 << second) == 0 {
        return None;
    }
    let rest = &text[start..];
    // In table order, which puts a longer prefix before one it begins with.
    for (word, &bits) in entry.candidates.iter().enumerate() {
        let mut bits = bits;
        while bits != 0 {
            let index = word * 128 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let token = PROVIDERS.get(index)?;
            // The second byte rules out most of a first byte's prefixes before a comparison.
            if token.prefix[1] == second
                && rest.starts_with(token.prefix)
                && let Some(end) = token_end(text, start + token.prefix.len(), token, complete)
            {
                return Some((end, token));
            }
        }
    }
    None
}

/// Where `token`'s body starting at `body_start` ends, if it has the format's length and ends
/// at a word boundary (or, in a text cut short, runs into the cut).
fn token_end(
    text: &[u8],
    body_start: usize,
    token: &ProviderToken,
    complete: bool,
) -> Option<usize> {
    // A body past the format's longest is no token: stop one byte after it, so that a run of
    // repeated prefixes (`A3-A3-A3-…`) costs each word start the format's length, not the run's.
    let limit = body_start.saturating_add(token.max_body.saturating_add(1));
    let mut end = body_start;
    while end < limit && text.get(end).is_some_and(|&byte| token.body.contains(byte)) {
        end += 1;
    }
    // Trailing `.` and `/` of a token-ish body belong to the sentence.
    while end > body_start && matches!(text[end - 1], b'.' | b'/') {
        end -= 1;
    }
    let body_len = end - body_start;
    if !complete && end == text.len() && body_len <= token.max_body {
        return Some(end);
    }
    let whole = text
        .get(end)
        .is_none_or(|&byte| !byte.is_ascii_alphanumeric());
    (whole && (token.min_body..=token.max_body).contains(&body_len)).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_fits_the_index_and_covers_forty_providers() {
        let mut providers: Vec<&str> = PROVIDERS.iter().map(|token| token.reason).collect();
        providers.dedup();
        providers.sort_unstable();
        providers.dedup();
        assert!(providers.len() >= 40, "{}", providers.len());
        for token in PROVIDERS {
            assert!(token.prefix.len() >= 2 && token.prefix.is_ascii());
            assert!(begins_a_prefix(token.prefix[0]));
        }
    }

    #[test]
    fn longer_prefixes_come_before_their_own_prefixes() {
        for (i, early) in PROVIDERS.iter().enumerate() {
            for late in &PROVIDERS[i + 1..] {
                assert!(
                    !late.prefix.starts_with(early.prefix) || late.prefix == early.prefix,
                    "{:?} shadows {:?}",
                    String::from_utf8_lossy(early.prefix),
                    String::from_utf8_lossy(late.prefix)
                );
            }
        }
    }
}
