//! Redaction rules: which names and which values the agent withholds before a captured value
//! leaves the capture.
//!
//! This module owns the rules and their matching: the built-in name keywords and how names
//! split into words (`keywords.rs`), the built-in value patterns (`patterns.rs`, with
//! `providers.rs` for provider token formats and `luhn.rs` for card numbers), values labelled
//! by a sensitive name inside text (`labelled.rs`), and the keywords and regexes that the
//! agent's configuration and a capture request add (`additions.rs`). Walking values, and
//! deciding what a withheld value looks like in a snapshot, is the capture engine's job; it
//! asks [`RedactionRules`] one question per name, text or integer, and every text that leaves
//! the process (values, keys of any type, type, variant and field names, Debug/Display output,
//! error and panic messages, span fields) goes through the same [`RedactionRules::mask_in_sequence`].
//!
//! Decisions, and why:
//! - **Only stricter.** [`RedactionRules::with_additions`] can add keywords and patterns but
//!   has no way to remove or relax anything, so no request can weaken what the agent's owner
//!   chose; the built-ins are part of every rule set.
//! - **Names are split into words** (snake, camel with acronyms, kebab, dotted, `$`/`@`): a
//!   sensitive word or phrase anywhere in a name withholds its value (`customer_ssn`,
//!   `card_cvc`, `auth_code`, `passwords`), and a documented set of harmless compounds does
//!   not (`token_count`, `max_tokens`, `password_policy_version`, `secret_name`); `client_id`,
//!   `transaction_id` and `public_key` contain no sensitive word. The rule is stated once, in
//!   `keywords.rs`. Added keywords match as substrings of the joined words, the stricter
//!   reading, with no harmless compounds.
//! - **Built-in patterns are hand-written scanners**, not regexes: they run for every captured
//!   string (on the agent's thread for snapshots, on the application's for what a condition
//!   reads: see `capture::serialize`), and one pass with a per-byte trigger
//!   table keeps an ordinary short string at tens of nanoseconds. Provider tokens (over 100
//!   prefixes of GitHub, GitLab, Slack, Stripe, AWS, GCP, OpenAI, Anthropic, … see
//!   `providers.rs`) are data in one table, compared only at word starts whose first byte
//!   begins some prefix. No built-in regex exists. Added patterns are regexes, compiled once
//!   per rule set, with caps on count, length and compiled size.
//! - **Names inside text count too**: `password: "x"` in Debug output, `{\"token\":\"x\"}`
//!   (JSON inside a Debug-printed string), `password: x` in YAML, `a=1&token=x` in a form or
//!   URL, `Cookie: a=1; session=x` cookie by cookie, and `<password>x</password>` in XML are
//!   masked by the same name rules (labels in other scripts too: `contraseña: x`, `пароль=x`),
//!   so a `?value` capture withholds what a field-by-field capture would. A label written
//!   after an escape (`\npass:` in Debug output, `%26token=`)
//!   or inside a form's brackets (`user[password]=`), a YAML block (`password: |` and the
//!   indented lines after it) and a multi-line string (`"""…"""`) are read as such, and a
//!   token after an escape (`\nghp_…`) starts a word. A value whose only label is its type or
//!   variant name (`ApiKey("…")` in Debug output; a newtype, tuple struct or positional
//!   variant through serde) is judged by that name, and a `value` by the `name` or `key`
//!   before it that names a secret (`{"name": "DB_PASSWORD", "value": …}` as text, or a
//!   struct's fields, or a map's entries in the order it gives them: a `serde_json::Value`
//!   of such a list), and, when no name came before it, by the first name after it in the
//!   same object (`{"value": …, "name": "DB_PASSWORD"}` as text, within a few labels; a
//!   struct declared so or a `HashMap` that iterates so, whose value, already written, is
//!   withheld in place: `capture::serialize::NamedPair`); or by
//!   the name in the first half of a pair, printed by Debug
//!   (`("DB_PASSWORD", "…")`) or captured through serde (a tuple, `[T; 2]` or a list declared
//!   two elements long: `capture::serialize`'s `SeqBuilder` and the replay judge it alike; a
//!   tuple struct or variant's first field names its second, `labelled::field_pair_role`).
//!   Credentials in URLs (`scheme://user:pass@host`), connection strings
//!   (`Password=`, `AccountKey=`, `SharedAccessKey=`, `sig=`, `X-Amz-Signature=`) and
//!   authorization headers of any scheme (Bearer, Basic, Digest, Token, Negotiate, NTLM,
//!   AWS4-HMAC-SHA256) are masked too.
//! - **Nothing allocates and nothing panics on the common path.** Names are split on the
//!   stack (names longer than 64 bytes take a slower, allocating path); scanners work on bytes
//!   and report only spans that start and end at ASCII bytes or at the end of the text; a
//!   [`Masked`] is built only once something was found, and answers of "nothing" come back
//!   in registers.
//! - **Masks name the kind** (`[redacted:jwt]`, `[redacted:name:password]`,
//!   `[redacted:github-token]`, `[redacted:config-pattern:#1]`) so a reader knows what was
//!   there without seeing it. For authorization credentials the scheme stays visible and only
//!   the credential is masked.
//! - **Cut text is judged conservatively**: with `complete == false`, a candidate that runs into
//!   the end of the text is masked even when its visible part is not yet a full secret. Added
//!   regexes cannot be judged that way; they see only the visible text.
//! - **A private key split over several strings** is masked whole: see [`ScanState`].
//! - **Base64 documents** that carry credentials (JSON, a PEM block, a kubeconfig: a
//!   Kubernetes Secret's data, a CI variable holding a key file) are decoded, up to 1.5 KiB,
//!   and withheld whole when the decoded text holds a secret by the built-in patterns or names
//!   (`encoded.rs`); a request's added keywords and patterns judge only the encoded text.
//! - **Integers** are withheld as card numbers only when their issuer prefix and length match a
//!   real card brand and they pass Luhn (`luhn.rs`), because card numbers are often stored as
//!   integers but millisecond timestamps and snowflake ids are everywhere. Added patterns apply
//!   to text only.
//!
//! Measured by the corpus in `tests/redaction_corpus.rs` (331 made-up secrets across every
//! class above, 128 benign look-alikes, each captured through `snapshot!` and searched for in
//! the encoded snapshot): no secret leaks, 2 benign values of 128 (1.6 %) are withheld.
//!
//! **What it cannot see.** A corpus written against this scanner's source (2026-12-03) still found
//! classes it misses, kept here so nobody mistakes the corpus for a guarantee: token formats
//! without a fixed prefix, infix or suffix (Dropbox's long-lived tokens, whose ten `A`s at a fixed
//! place would cost every word a look); short flags of tools not in its table (it knows the MySQL,
//! MariaDB and MongoDB clients, `sqlcmd`, the LDAP tools, `zip`, `7z`, `smbclient`, `curl` and a
//! few more), on a continued line, or given as separate strings of an argument list; a pair as a
//! list whose length serde is not told; an IMAP `login` in lower case after a tag with no digits;
//! SASL exchanges other than `LOGIN`'s answer to its password prompt; names its keyword list lacks
//! (vendor headers and cookies, non-English words but "password" in a dozen languages); encoded
//! secrets other than whole base64 documents (base64 of a bare password or of text that is not
//! JSON, PEM or a kubeconfig, hex, UTF-16); unarmoured key material; a passphrase with spaces
//! whose words include a flag, a label or an assignment (`password=correct -horse`). And it
//! over-redacts names whose sensitive word is a qualifier it does not know (`pin_to_top`,
//! `account_sid`) and prose that reads as a label (`Invalid token: …`, `AUTH failed for …`,
//! `password changed`), and a port after another program's `-p` on a tool's line (`sshpass -f pw
//! ssh -p 2222`). Withhold what it misses by name or with an added pattern
//! ([`RedactionRules::with_additions`]), or wrap it in [`crate::Secret`].

mod additions;
mod encoded;
mod keywords;
mod labelled;
mod luhn;
mod patterns;
mod providers;

use crate::text::{ceil_char_boundary, floor_char_boundary};
use std::fmt;
use std::sync::Arc;

pub use additions::{
    MAX_KEYWORD_LEN, MAX_KEYWORDS, MAX_PATTERN_LEN, MAX_PATTERNS, REGEX_SIZE_LIMIT,
};

use additions::{AddedKeyword, CompiledPatterns};
use keywords::NORMALIZED_STACK_LEN;
pub(crate) use labelled::{PairRole, field_pair_role};
use patterns::SHORTEST_SECRET_LEN;

/// Compiled redaction rules: the built-ins plus what the agent's configuration and a capture
/// request added. Cheap to share behind an `Arc`; every query takes `&self`.
#[derive(Debug, Clone, Default)]
pub struct RedactionRules {
    keywords: Vec<AddedKeyword>,
    patterns: Option<CompiledPatterns>,
}

/// Keywords and patterns to add to a rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionAdditions {
    /// Names to withhold; normalized like field names and matched as substrings.
    pub keywords: Vec<String>,
    /// Regexes (`regex` crate syntax) whose matches in text are masked.
    pub patterns: Vec<String>,
    /// Who asked for them; shown in reasons so a reader knows which rule fired.
    pub origin: AdditionOrigin,
}

impl RedactionAdditions {
    /// No additions, from `origin`.
    pub fn none(origin: AdditionOrigin) -> RedactionAdditions {
        RedactionAdditions {
            keywords: Vec::new(),
            patterns: Vec::new(),
            origin,
        }
    }
}

/// Where an addition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdditionOrigin {
    /// The agent's own configuration.
    Config,
    /// The capture request (the session token's `redact` claim).
    Request,
}

impl fmt::Display for AdditionOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdditionOrigin::Config => "config",
            AdditionOrigin::Request => "request",
        })
    }
}

/// A text with its secrets replaced by `[redacted:<kind>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    pub text: String,
    /// Why, once per distinct reason, in order of first appearance.
    pub reasons: Vec<Reason>,
    /// A private key began in this text and its END line was not in it: the texts that
    /// follow may hold the rest of it (see [`ScanState`]).
    pub private_key_left_open: bool,
}

/// What the scan of one text of a snapshot tells the scan of the next.
///
/// A PEM private key split over several strings (a `Vec<String>` of lines, a key in one field
/// and its body in the next) shows its BEGIN line in one string and its body in others, which
/// on their own look like any base64. The rule, strict and simple: once a string holds a
/// `-----BEGIN … PRIVATE KEY-----` line without its END line, every following text of the same
/// snapshot is masked whole, until one holds a `-----END ` line; that one is masked up to the
/// end of its END line and scanned normally after it.
///
/// A condition's capture holds only what the condition reads, so the BEGIN line may sit in a
/// value it leaves out. The values it leaves out are therefore still walked, in the snapshot's
/// order and within its limits, and their texts followed for BEGIN and END lines only
/// ([`RedactionRules::follow_carried_state`]), so that the texts it does read are masked as the
/// snapshot masks them.
///
/// A label can be left open the same way: a text that ends with a sensitive label and no value
/// (`--password` as one argument of a command line, `password:` as one line of a file) has its
/// value in the next text, which is masked whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanState {
    private_key_open: bool,
    label_open: bool,
}

impl ScanState {
    /// Whether a private key is open: the next text is part of it until an END line.
    pub fn private_key_open(&self) -> bool {
        self.private_key_open
    }

    /// A value was withheld without being scanned: it was the open label's value, if any.
    pub(crate) fn close_label(&mut self) {
        self.label_open = false;
    }
}

/// What a scan did beyond reading each byte of its text once, counted in bytes' worth of
/// reading, for a caller that prices the scan: a condition's capture, which is charged per
/// scanned byte and stops at a per-hit limit (`condition::cost`). A scan's time follows more
/// than its bytes: judging a label as a name costs what reading a few dozen bytes does, and a
/// base64 document is decoded and its text scanned again. Priced by bytes alone, Debug output
/// (a label every dozen bytes) cost a condition three to four times what a plain string of the
/// same length does, past its per-hit budget (the conditions bench, `at_limits_labelled_text`).
pub(crate) struct Work {
    done: u64,
    limit: u64,
}

impl Work {
    /// A meter with no limit: for scans nobody prices.
    pub(crate) const fn unlimited() -> Work {
        Work {
            done: 0,
            limit: u64::MAX,
        }
    }

    /// A meter for a scan that may do `limit` bytes' worth of work beyond its bytes. Past it,
    /// the scan judges no more labels and decodes nothing more, and its text is withheld whole
    /// ([`RedactionRules::mask_in_sequence_counting`]).
    pub(crate) const fn within(limit: u64) -> Work {
        Work { done: 0, limit }
    }

    pub(crate) fn add(&mut self, bytes_worth: u64) {
        self.done = self.done.saturating_add(bytes_worth);
    }

    /// What the scan did beyond its bytes, in bytes' worth.
    pub(crate) fn done(&self) -> u64 {
        self.done
    }

    /// Whether the scan has passed its limit.
    pub(crate) fn spent(&self) -> bool {
        self.done > self.limit
    }

    /// One label judged as a name: about what scanning this many bytes of text with no label
    /// costs (the redaction bench: a label judged in Debug text ~80 ns, a byte of prose ~2.2 ns).
    pub(crate) const LABEL_JUDGED: u64 = 36;

    /// The work a scan of `text` is expected to do, counted before it runs, so that a priced
    /// scan can be refused rather than overrun: its bytes, and a label judged at each `:` and
    /// `=` and at each quote after a space. The scan then reports what it did (base64 decoded
    /// too), which the caller charges instead.
    pub(crate) fn expected(text: &[u8]) -> u64 {
        // Counted in a byte per chunk short enough not to overflow one, which vectorises: this
        // runs before each text a condition scans. A quote just after a chunk's edge is missed;
        // the meter inside the scan charges what this misses.
        let judged: u64 = text
            .chunks(usize::from(u8::MAX))
            .map(|chunk| {
                let assignments = chunk.iter().fold(0u8, |count, &b| {
                    count.wrapping_add(u8::from(b == b':' || b == b'='))
                });
                let quoted_words =
                    chunk
                        .iter()
                        .zip(&chunk[1..])
                        .fold(0u8, |count, (&previous, &b)| {
                            let quote = b == b'"' || b == b'\'';
                            count.wrapping_add(u8::from(previous == b' ' && quote))
                        });
                u64::from(assignments) + u64::from(quoted_words)
            })
            .sum();
        (text.len() as u64).saturating_add(judged.saturating_mul(Self::LABEL_JUDGED))
    }
}

const PRIVATE_KEY_REASON: &str = patterns::SecretKind::PrivateKey.reason();
/// Why a text is masked whole when its priced scan ran out of work (`Work`).
const SCAN_BUDGET_REASON: &str = "scan-budget";
/// Why a text is masked whole after one that ended with a sensitive label.
const LABEL_LEFT_OPEN_REASON: &str = "name:label-before";
const PRIVATE_KEY_MASK: &str = patterns::SecretKind::PrivateKey.mask();

/// Why something was withheld, e.g. `name:password`, `pattern:card-number`,
/// `request-keyword:foo`, `config-pattern:#1`. Cloning never allocates.
#[derive(Clone)]
pub struct Reason(ReasonText);

#[derive(Clone)]
enum ReasonText {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Reason {
    /// A reason from a fixed text, e.g. `type:Secret`.
    pub fn from_static(text: &'static str) -> Reason {
        Reason(ReasonText::Static(text))
    }

    fn from_shared(text: Arc<str>) -> Reason {
        Reason(ReasonText::Shared(text))
    }

    fn shared(text: String) -> Reason {
        Reason::from_shared(Arc::from(text))
    }

    /// The reason as text, as it appears in snapshots.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            ReasonText::Static(text) => text,
            ReasonText::Shared(text) => text,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Reason) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Reason {}

impl std::hash::Hash for Reason {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

/// Why additions were refused. The rule set they were meant for is left unchanged.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedactionError {
    #[error("invalid {origin} redaction pattern #{number} `{pattern}`: {reason}")]
    InvalidPattern {
        origin: AdditionOrigin,
        number: usize,
        pattern: String,
        reason: String,
    },
    #[error(
        "{origin} redaction pattern #{number} `{pattern}` is {len} bytes long; at most {max} are allowed"
    )]
    PatternTooLong {
        origin: AdditionOrigin,
        number: usize,
        pattern: String,
        len: usize,
        max: usize,
    },
    #[error("too many redaction patterns: at most {max} in total")]
    TooManyPatterns { max: usize },
    #[error("redaction patterns together exceed the compiled size limit: {reason}")]
    PatternSetTooLarge { reason: String },
    #[error(
        "{origin} redaction keyword `{keyword}` is empty once case and `_ - $ @ . space` are removed"
    )]
    EmptyKeyword {
        origin: AdditionOrigin,
        keyword: String,
    },
    #[error(
        "{origin} redaction keyword `{keyword}` is {len} bytes long; at most {max} are allowed"
    )]
    KeywordTooLong {
        origin: AdditionOrigin,
        keyword: String,
        len: usize,
        max: usize,
    },
    #[error("too many redaction keywords: at most {max} in total")]
    TooManyKeywords { max: usize },
}

/// The rule that made a name sensitive.
#[derive(Clone, Copy)]
enum NameRule<'r> {
    Builtin(&'static keywords::Keyword),
    Added(&'r AddedKeyword),
}

impl NameRule<'_> {
    fn reason(self) -> Reason {
        match self {
            NameRule::Builtin(keyword) => Reason::from_static(keyword.reason),
            NameRule::Added(keyword) => keyword.reason.clone(),
        }
    }
}

const CARD_NUMBER_REASON: &str = patterns::SecretKind::CardNumber.reason();

impl RedactionRules {
    /// The built-in rules only.
    pub fn builtin() -> RedactionRules {
        RedactionRules::default()
    }

    /// These rules plus `additions`. Nothing can be removed, so the result is at least as
    /// strict as `self`.
    pub fn with_additions(
        &self,
        additions: &RedactionAdditions,
    ) -> Result<RedactionRules, RedactionError> {
        let mut keywords = self.keywords.clone();
        additions::add_keywords(&mut keywords, &additions.keywords, additions.origin)?;
        let patterns = additions::add_patterns(
            self.patterns.as_ref(),
            &additions.patterns,
            additions.origin,
        )?;
        Ok(RedactionRules { keywords, patterns })
    }

    /// Both questions asked of a field, type or variant name: whether it is withheld as a
    /// sensitive name, and why a secret in its text is masked (the first reason). A name is
    /// plain when both are `None`.
    pub(crate) fn name_answers(&self, name: &str) -> (Option<Reason>, Option<Reason>) {
        let holds_secret = self
            .mask_secrets(name, true)
            .and_then(|masked| masked.reasons.into_iter().next());
        (self.sensitive_name(name), holds_secret)
    }

    /// `Some(reason)` when a struct field name, map key or snapshot field name must be withheld.
    #[inline]
    pub fn sensitive_name(&self, name: &str) -> Option<Reason> {
        self.name_rule(name).map(NameRule::reason)
    }

    /// The rule a label found in text falls under, judged on `work`'s meter: each judgment is
    /// charged, and past the meter's limit no label is judged (the scan's text is then
    /// withheld whole, [`RedactionRules::mask_secrets_counting`]).
    fn label_rule(&self, label: &str, work: &mut Work) -> Option<NameRule<'_>> {
        if work.spent() {
            return None;
        }
        work.add(Work::LABEL_JUDGED);
        self.name_rule(label)
    }

    /// The rule a name falls under. Kept apart from [`RedactionRules::sensitive_name`] so that
    /// the common answer, none, comes back in registers and the caller builds no [`Reason`].
    fn name_rule(&self, name: &str) -> Option<NameRule<'_>> {
        let mut joined = [0u8; NORMALIZED_STACK_LEN];
        let mut ends = [0u8; NORMALIZED_STACK_LEN];
        match keywords::split_into(name, &mut joined, &mut ends) {
            Some(words) => self.words_rule(&words),
            None => self.long_name_rule(name),
        }
    }

    #[cold]
    fn long_name_rule(&self, name: &str) -> Option<NameRule<'_>> {
        self.words_rule(&keywords::OwnedWords::split(name).words())
    }

    fn words_rule<E: Copy + Into<usize>>(
        &self,
        words: &keywords::Words<'_, E>,
    ) -> Option<NameRule<'_>> {
        if let Some(keyword) = keywords::builtin_match(words) {
            return Some(NameRule::Builtin(keyword));
        }
        self.keywords
            .iter()
            .find(|keyword| keywords::contains(words.joined, &keyword.normalized))
            .map(NameRule::Added)
    }

    /// `Some(reason)` when `value`, the text of a `name` or `key` field, names a secret: then
    /// the `value` field after it in the same struct is withheld, as in
    /// `{"name": "DB_PASSWORD", "value": …}` written as text.
    pub(crate) fn sensitive_given_name(&self, value: &str) -> Option<Reason> {
        labelled::given_name(value).and_then(|name| self.sensitive_name(name))
    }

    /// [`RedactionRules::mask_secrets`] for one of a sequence of texts that leave together (the
    /// strings of one snapshot), carrying `state` from one to the next; see [`ScanState`].
    pub fn mask_in_sequence(
        &self,
        text: &str,
        complete: bool,
        state: &mut ScanState,
    ) -> Option<Masked> {
        self.mask_in_sequence_counting(text, complete, state, &mut Work::unlimited())
    }

    /// [`RedactionRules::mask_in_sequence`], adding to `work` what the scan did beyond reading
    /// each byte once, in bytes' worth ([`Work`]), for a caller that prices the scan.
    pub(crate) fn mask_in_sequence_counting(
        &self,
        text: &str,
        complete: bool,
        state: &mut ScanState,
        work: &mut Work,
    ) -> Option<Masked> {
        let label_was_open = std::mem::take(&mut state.label_open);
        let masked = if state.private_key_open {
            self.mask_private_key_continuation(text, complete, state, work)
        } else if label_was_open && !text.is_empty() {
            // Masked whole, but a key may still begin in it.
            self.follow_private_keys(text, complete, state);
            Some(Masked {
                text: format!("[redacted:{LABEL_LEFT_OPEN_REASON}]"),
                reasons: vec![Reason::from_static(LABEL_LEFT_OPEN_REASON)],
                private_key_left_open: false,
            })
        } else {
            let masked = self.mask_secrets_counting(text, complete, work);
            state.private_key_open = masked.as_ref().is_some_and(|m| m.private_key_left_open);
            masked
        };
        state.label_open = self.leaves_label_open(text);
        masked
    }

    /// Whether `text` ends with a sensitive label whose value is not in it: `--password` (a
    /// command line's argument), `password:` or `password=` (see [`ScanState`]).
    fn leaves_label_open(&self, text: &str) -> bool {
        labelled::label_left_open(text)
            .and_then(|label| self.sensitive_name(label))
            .is_some()
    }

    /// What [`RedactionRules::mask_in_sequence`] would leave in `state` after `text`, found
    /// by looking for BEGIN and END lines and a label left open only: for the texts of values a condition's capture
    /// leaves out, which nobody reads but whose keys the texts after them must see open. A
    /// private key the full scan would find only inside another secret's span is still
    /// followed here, so a key is open here whenever it is open there.
    pub fn follow_carried_state(&self, text: &str, complete: bool, state: &mut ScanState) {
        self.follow_private_keys(text, complete, state);
        state.label_open = self.leaves_label_open(text);
    }

    fn follow_private_keys(&self, text: &str, complete: bool, state: &mut ScanState) {
        let bytes = text.as_bytes();
        let mut from = 0;
        if state.private_key_open {
            match patterns::end_of_pem_end_line(bytes) {
                None => return,
                Some(closed_at) => from = closed_at,
            }
        }
        // Most texts hold no BEGIN line: `str::contains` finds that out vectorised. A cut
        // text may end inside one (`-----BEG`), which the full look below judges.
        let may_open = !complete
            || text
                .get(from..)
                .is_some_and(|rest| rest.contains("-----BEGIN "));
        state.private_key_open = may_open && patterns::private_key_left_open(bytes, from, complete);
    }

    #[cold]
    fn mask_private_key_continuation(
        &self,
        text: &str,
        complete: bool,
        state: &mut ScanState,
        work: &mut Work,
    ) -> Option<Masked> {
        let Some(closed_at) = patterns::end_of_pem_end_line(text.as_bytes()) else {
            return Some(Masked {
                text: PRIVATE_KEY_MASK.to_owned(),
                reasons: vec![Reason::from_static(PRIVATE_KEY_REASON)],
                private_key_left_open: true,
            });
        };
        let rest = text.get(closed_at..).unwrap_or_default();
        let mut masked = Masked {
            text: PRIVATE_KEY_MASK.to_owned(),
            reasons: vec![Reason::from_static(PRIVATE_KEY_REASON)],
            private_key_left_open: false,
        };
        match self.mask_secrets_counting(rest, complete, work) {
            Some(rest_masked) => {
                masked.text.push_str(&rest_masked.text);
                for reason in rest_masked.reasons {
                    if !masked.reasons.contains(&reason) {
                        masked.reasons.push(reason);
                    }
                }
                masked.private_key_left_open = rest_masked.private_key_left_open;
            }
            None => masked.text.push_str(rest),
        }
        state.private_key_open = masked.private_key_left_open;
        Some(masked)
    }

    /// `Some(masked)` when `text` contains secrets, each replaced by `[redacted:<kind>]`.
    ///
    /// `complete == false` says `text` is only a prefix of a longer value; then a candidate
    /// secret running into the end of `text` is masked too, so that no cut can show part of
    /// a secret.
    #[inline]
    pub fn mask_secrets(&self, text: &str, complete: bool) -> Option<Masked> {
        self.mask_secrets_counting(text, complete, &mut Work::unlimited())
    }

    /// [`RedactionRules::mask_secrets`], adding to `work` what the scan did beyond reading
    /// each byte once ([`Work`]).
    #[inline]
    fn mask_secrets_counting(&self, text: &str, complete: bool, work: &mut Work) -> Option<Masked> {
        let masked = if self.holds_secret(text, complete, work) {
            // Finding each span reads the text again, and the masked text is built and its
            // reasons recorded: priced as two more passes (the conditions bench's orders whose
            // every SKU holds a secret), and a text that would pass the limit so is withheld
            // whole.
            work.add(2 * text.len() as u64);
            if work.spent() {
                None
            } else {
                self.mask_found(text, complete, work)
            }
        } else {
            None
        };
        if work.spent() {
            // Not judged whole: withheld whole.
            return Some(Masked {
                text: format!("[redacted:{SCAN_BUDGET_REASON}]"),
                reasons: vec![Reason::from_static(SCAN_BUDGET_REASON)],
                private_key_left_open: false,
            });
        }
        masked
    }

    /// Whether [`RedactionRules::mask_secrets`] has anything to mask: the allocation-free
    /// common path, answered with a bool so that nothing is built when the answer is no.
    fn holds_secret(&self, text: &str, complete: bool, work: &mut Work) -> bool {
        let bytes = text.as_bytes();
        let builtin_possible = !complete || bytes.len() >= SHORTEST_SECRET_LEN;
        (builtin_possible && patterns::next_secret_counting(bytes, 0, complete, work).is_some())
            || labelled::next_labelled_value(bytes, 0, |label| self.label_rule(label, work))
                .is_some()
            || self
                .patterns
                .as_ref()
                .is_some_and(|added| added.set.is_match(text))
    }

    /// Finds every span again and builds the masked text; runs only when something is there.
    #[cold]
    fn mask_found(&self, text: &str, complete: bool, work: &mut Work) -> Option<Masked> {
        struct Found {
            start: usize,
            end: usize,
            /// A private key whose END line is not in the text.
            open_key: bool,
            /// The built-in pattern's mask; others are masked as `[redacted:<reason>]`.
            mask: Option<&'static str>,
            reason: Reason,
        }
        let bytes = text.as_bytes();
        let mut found = Vec::new();
        let mut next = patterns::next_secret_counting(bytes, 0, complete, work);
        while let Some(span) = next {
            found.push(Found {
                start: span.start,
                end: span.end,
                open_key: span.kind == patterns::SecretKind::PrivateKey
                    && span.end == bytes.len()
                    && patterns::end_of_pem_end_line(&bytes[span.start..]).is_none(),
                mask: Some(span.kind.mask()),
                reason: Reason::from_static(span.kind.reason()),
            });
            next =
                patterns::next_secret_counting(bytes, span.end.max(span.start + 1), complete, work);
        }
        let mut judge = |label: &str| self.label_rule(label, work).map(NameRule::reason);
        let mut next = labelled::next_labelled_value(bytes, 0, &mut judge);
        while let Some((value, reason)) = next {
            found.push(Found {
                start: value.start,
                end: value.end,
                open_key: false,
                mask: None,
                reason,
            });
            next = labelled::next_labelled_value(bytes, value.end.max(value.start + 1), &mut judge);
        }
        if let Some(added) = self.patterns.as_ref() {
            for index in added.set.matches(text).iter() {
                let (Some(regex), Some(source)) = (added.each.get(index), added.sources.get(index))
                else {
                    continue;
                };
                for hit in regex.find_iter(text).filter(|hit| !hit.is_empty()) {
                    found.push(Found {
                        start: hit.start(),
                        end: hit.end(),
                        open_key: false,
                        mask: None,
                        reason: source.reason.clone(),
                    });
                }
            }
        }
        if found.is_empty() {
            return None;
        }
        let private_key_left_open = found.iter().any(|span| span.open_key);
        // Overlapping spans (a built-in and an added pattern on the same secret) become one
        // mask, labelled by the span that starts first, with every reason kept.
        found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut masked = String::with_capacity(text.len());
        let mut reasons: Vec<Reason> = Vec::new();
        let mut add_reason = |reason: &Reason| {
            if !reasons.contains(reason) {
                reasons.push(reason.clone());
            }
        };
        let mut copied_to = 0;
        let mut index = 0;
        while let Some(first) = found.get(index) {
            let mut end = first.end;
            add_reason(&first.reason);
            index += 1;
            while let Some(overlapping) = found.get(index).filter(|span| span.start < end) {
                end = end.max(overlapping.end);
                add_reason(&overlapping.reason);
                index += 1;
            }
            let start = floor_char_boundary(text, first.start.max(copied_to));
            let end = ceil_char_boundary(text, end);
            masked.push_str(text.get(copied_to..start).unwrap_or_default());
            match first.mask {
                Some(mask) => masked.push_str(mask),
                None => {
                    masked.push_str("[redacted:");
                    masked.push_str(first.reason.as_str());
                    masked.push(']');
                }
            }
            copied_to = end;
        }
        masked.push_str(text.get(copied_to..).unwrap_or_default());
        Some(Masked {
            text: masked,
            reasons,
            private_key_left_open,
        })
    }

    /// `Some(reason)` when `value` is a payment card number: a real brand's issuer prefix and
    /// length (13–19 digits), and Luhn-valid.
    pub fn sensitive_u64(&self, value: u64) -> Option<Reason> {
        luhn::is_card_number(value).then(|| Reason::from_static(CARD_NUMBER_REASON))
    }

    /// Like [`RedactionRules::sensitive_u64`]; a minus sign does not make a card number safe.
    pub fn sensitive_i64(&self, value: i64) -> Option<Reason> {
        self.sensitive_u64(value.unsigned_abs())
    }

    /// Like [`RedactionRules::sensitive_u64`]; values beyond `u64` have more than 19 digits.
    pub fn sensitive_u128(&self, value: u128) -> Option<Reason> {
        u64::try_from(value)
            .ok()
            .and_then(|value| self.sensitive_u64(value))
    }

    /// Like [`RedactionRules::sensitive_i64`] for `i128`.
    pub fn sensitive_i128(&self, value: i128) -> Option<Reason> {
        self.sensitive_u128(value.unsigned_abs())
    }
}

#[cfg(test)]
mod tests;
