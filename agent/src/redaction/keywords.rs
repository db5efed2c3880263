//! Sensitive names: the built-in keywords, how a name is split into words, and which
//! compounds of a sensitive word name something harmless.
//!
//! Sources: the union of Sentry's default denylist (SDK `DEFAULT_DENYLIST` plus the server-side
//! defaults such as `access_token`, `stripetoken`, `github_token`, `bearer`) and Datadog Dynamic
//! Instrumentation's redacted identifiers, plus payment, banking and key names neither covers
//! (`cvc`, `cardnumber`, `iban`, `accountnumber`, `passphrase`, `accountkey`, …), and names a
//! holdout corpus found missing (`passcode`, `dbpass`, `authkey`, `subscription_key`, wallet
//! seeds, one-time codes, and "password" in other languages: `passwort`, `kennwort`,
//! `mot_de_passe`, `contraseña` and `contrasena`, `senha`, `wachtwoord`, `lösenord` and
//! `losenord`, `passord`, `hasło` and `haslo`, `heslo`, `salasana`, `пароль`).
//!
//! # The rule, stated once
//!
//! 1. **Words.** A name is split into words at every ASCII byte that is not a letter or digit
//!    (snake `_`, kebab `-`, dotted `.`, `$`/`@` sigils, spaces, `[` `]` of form fields), at
//!    camel-case humps (`cardNumber` → `card number`) and at the end of an acronym
//!    (`APIKey` → `api key`, `userID` → `user id`). Digits stay with the word they follow
//!    (`cvv2`, `pkcs8`). Words are lowercased, letters outside ASCII too (`ПАРОЛЬ`, and a
//!    capital outside ASCII starts a hump: `userПароль`) where the lower case is one letter
//!    as long in UTF-8; other bytes outside ASCII are kept as they are.
//! 2. **Sensitive words and phrases.** A keyword matches one word or a run of up to three
//!    consecutive words written together (`api_key`, `apiKey` and `apikey` are all `apikey`).
//!    A trailing plural `s` and trailing digits are ignored (`passwords`, `tokens`, `cvc2`).
//!    Each keyword is in one of three lists by how far it reaches into words:
//!    - [`ANYWHERE_KEYWORDS`]: distinctive enough to count inside any word (`dbpassword`,
//!      `clientsecret`, `x_csrftoken`);
//!    - [`SUFFIX_KEYWORDS`]: count as a word or the end of one (`authtoken`, `phpsessid`) but
//!      not its start (`tokenizer`);
//!    - [`WORD_KEYWORDS`]: short words that are common inside other words count only as a
//!      whole word or phrase (`ssn` in `customer_ssn` but not in `classname`, `pin` in
//!      `card_pin` but not in `shipping`, `auth` in `auth_code` but not in `author`).
//! 3. **Harmless compounds.** A name whose sensitive words are qualified as metadata names
//!    metadata, not the secret, and is kept:
//!    - its last word (the head of an English compound) is a metadata noun from
//!      [`HEAD_QUALIFIERS`] and is not itself part of the sensitive match: counts, limits,
//!      sizes, lengths, types, kinds, policies, versions, names, methods, timeouts and expiry,
//!      rates, latencies, units of time and size, settings of a cookie, references to where a
//!      secret is kept (`token_count`, `token_type`, `password_policy_version`,
//!      `password_min_length`, `session_timeout`, `auth_method`, `secret_name`,
//!      `session_duration_ms`, `tokens_per_second`, `cookie_secure`, `secret_arn`);
//!    - or a word before the sensitive one is a quantity or predicate from
//!      [`PREFIX_QUALIFIERS`] (`max_tokens`, `prompt_tokens`, `num_secrets`, `has_password`,
//!      `is_secret`).
//!
//!    Plain identifiers that merely sit next to a sensitive-sounding domain (`client_id`,
//!    `transaction_id`, `public_key`) contain no sensitive word and are kept; `id` is *not* a
//!    qualifier, so `session_id`, `secret_id` and `api_key_id` stay withheld.
//!
//! Keywords added by configuration or a request are not subject to any of this: they match as
//! substrings of the whole normalized name, the stricter reading (see `additions.rs`).

/// A built-in keyword in normalized form and the reason reported when it matches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyword {
    pub(crate) normalized: &'static str,
    pub(crate) reason: &'static str,
}

macro_rules! keywords {
    ($($word:literal),* $(,)?) => {
        &[$(Keyword {
            normalized: $word,
            reason: concat!("name:", $word),
        }),*]
    };
}

/// Matched inside any word (and across word boundaries). Sorted by bytes (a test checks).
pub(crate) const ANYWHERE_KEYWORDS: &[Keyword] = keywords![
    "accesskey",
    "accountkey",
    "accountnumber",
    "apikey",
    "authorization",
    "cardnumber",
    "ccnumber",
    "codeverifier",
    "confirmationcode",
    "connectionstring",
    "contrasena",
    "contraseña",
    "cookie",
    "credential",
    "creditcard",
    "csrf",
    "decryptionkey",
    "encryptionkey",
    "functionskey",
    "gpgkey",
    "hmackey",
    "jwt",
    "kennwort",
    "losenord",
    "lösenord",
    "masterkey",
    "onetimecode",
    "passcode",
    "passphrase",
    "passwd",
    "password",
    "passwort",
    "pgpkey",
    "privatekey",
    "routingnumber",
    "salasana",
    "secret",
    "sessionid",
    "sessionkey",
    "signingkey",
    "sshkey",
    "storagekey",
    "subscriptionkey",
    "wachtwoord",
    "xsrf",
    "пароль",
];

/// Matched as a whole word or phrase, or as the end of one word. Sorted by bytes.
pub(crate) const SUFFIX_KEYWORDS: &[Keyword] = keywords!["pwd", "sessid", "token",];

/// Matched only as a whole word or phrase. Sorted by bytes (a test checks).
pub(crate) const WORD_KEYWORDS: &[Keyword] = keywords![
    "2fa",
    "accesscode",
    "adminkey",
    "apisignature",
    "appkey",
    "applicationkey",
    "auth",
    "authcode",
    "authkey",
    "backupcode",
    "bankaccount",
    "bearer",
    "bindpw",
    "cardno",
    "cardpin",
    "certificatepin",
    "cipher",
    "connectsid",
    "connstr",
    "cred",
    "creds",
    "cvc",
    "cvn",
    "cvv",
    "databaseurl",
    "dbpass",
    "dburl",
    "dsn",
    "geolocation",
    "haslo",
    "hasło",
    "heslo",
    "honeycombteam",
    "hotp",
    "iban",
    "ingestkey",
    "ipaddress",
    "jti",
    "licensekey",
    "mfacode",
    "mnemonic",
    "motdepasse",
    "nationalid",
    "nonce",
    "oauth",
    "otp",
    "pan",
    "pass",
    "passhash",
    "passkey",
    "passord",
    "passportnumber",
    "pemfile",
    "pin",
    "pincode",
    "pinnumber",
    "pkcs8",
    "privkey",
    "pswd",
    "pw",
    "recaptchakey",
    "recoverycode",
    "remoteaddr",
    "resetcode",
    "rootpw",
    "salt",
    "securityanswer",
    "securitycode",
    "securityquestion",
    "seedphrase",
    "senha",
    "servicekey",
    "sess",
    "session",
    "sharedkey",
    "sid",
    "sig",
    "signature",
    "signaturekey",
    "smscode",
    "socialsecuritynumber",
    "sortcode",
    "sshpass",
    "ssn",
    "symfony",
    "totp",
    "verificationcode",
    "voterid",
    "writekey",
    "xforwardedfor",
    "xrealip",
];

/// Last words that make a compound name metadata about a secret rather than the secret.
/// Sorted by bytes (a test checks); matched after dropping a plural `s`, so plurals in `-ies`
/// are listed by their stem (`policie`, `retrie`).
pub(crate) const HEAD_QUALIFIERS: &[&str] = &[
    "affinity",
    "age",
    "alg",
    "algorithm",
    "arn",
    "at",
    "attempt",
    "audience",
    "capacity",
    "change",
    "changed",
    "complexity",
    "consent",
    "count",
    "counter",
    "created",
    "day",
    "digit",
    "disabled",
    "domain",
    "duration",
    "enabled",
    "endpoint",
    "env",
    "error",
    "expiration",
    "expire",
    "expired",
    "expiry",
    "field",
    "file",
    "flag",
    "format",
    "hour",
    "index",
    "interval",
    "issuer",
    "kind",
    "label",
    "latency",
    "len",
    "length",
    "level",
    "lifetime",
    "limit",
    "location",
    "max",
    "maximum",
    "method",
    "min",
    "minimum",
    "minute",
    "mode",
    "ms",
    "name",
    "ns",
    "offset",
    "path",
    "pct",
    "percent",
    "policie",
    "policy",
    "prefix",
    "present",
    "process",
    "protection",
    "provider",
    "rate",
    "realm",
    "ref",
    "required",
    "requirement",
    "retrie",
    "rotated",
    "rotation",
    "round",
    "samesite",
    "scheme",
    "scope",
    "sec",
    "second",
    "secure",
    "sent",
    "set",
    "size",
    "source",
    "status",
    "strategy",
    "strength",
    "supported",
    "timeout",
    "total",
    "ttl",
    "type",
    "updated",
    "uri",
    "url",
    "usage",
    "used",
    "username",
    "valid",
    "validated",
    "var",
    "variable",
    "ver",
    "verified",
    "version",
];

/// Words before a sensitive one that make the name a quantity or a predicate about it.
/// Sorted by bytes (a test checks).
pub(crate) const PREFIX_QUALIFIERS: &[&str] = &[
    "active",
    "allow",
    "cached",
    "completion",
    "count",
    "enable",
    "has",
    "input",
    "is",
    "max",
    "maximum",
    "min",
    "minimum",
    "n",
    "num",
    "output",
    "prompt",
    "reasoning",
    "remaining",
    "require",
    "total",
    "use",
    "used",
];

/// Names are normalized into buffers on the stack; real field names are far shorter.
pub(crate) const NORMALIZED_STACK_LEN: usize = 64;

/// Keywords span at most this many words (`social security number`).
const MAX_PHRASE_WORDS: usize = 3;

#[derive(Clone, Copy, PartialEq, Eq)]
enum ByteClass {
    Separator,
    Upper,
    Lower,
    Digit,
}

/// An ASCII byte's class (a byte outside ASCII is read with its letter: `non_ascii_letter`).
fn class_of(byte: u8) -> ByteClass {
    match byte {
        b'A'..=b'Z' => ByteClass::Upper,
        b'a'..=b'z' | 0x80..=0xff => ByteClass::Lower,
        b'0'..=b'9' => ByteClass::Digit,
        _ => ByteClass::Separator,
    }
}

/// Splits `name` into lowercased words: `emit` gets each kept byte, `end_word` is called at
/// each word end (never for an empty word) with the number of bytes emitted so far.
///
/// Letters outside ASCII are lowercased too (`ПАРОЛЬ`, `userПароль`), where their lower case
/// is one letter of the same length in UTF-8, as it is in the scripts the keywords use; any
/// other byte outside ASCII is kept as it is, part of a word.
fn split_words(name: &[u8], mut emit: impl FnMut(u8), mut end_word: impl FnMut(usize)) {
    let mut emitted = 0usize;
    let mut word_len = 0usize;
    let mut previous = ByteClass::Separator;
    let mut at = 0usize;
    while let Some(&byte) = name.get(at) {
        let (class, lowered, len) = match byte {
            0x80.. => non_ascii_letter(name, at),
            _ => (class_of(byte), [byte.to_ascii_lowercase(), 0, 0, 0], 1),
        };
        let boundary = match class {
            ByteClass::Separator => true,
            ByteClass::Upper => {
                matches!(previous, ByteClass::Lower | ByteClass::Digit)
                    || (previous == ByteClass::Upper
                        && name
                            .get(at + len)
                            .is_some_and(|next| next.is_ascii_lowercase()))
            }
            ByteClass::Lower | ByteClass::Digit => false,
        };
        if boundary && word_len > 0 {
            end_word(emitted);
            word_len = 0;
        }
        if class != ByteClass::Separator {
            for &byte in &lowered[..len] {
                emit(byte);
            }
            emitted += len;
            word_len += len;
        }
        previous = class;
        at += len;
    }
    if word_len > 0 {
        end_word(emitted);
    }
}

/// The letter outside ASCII that starts at `at` of `name`: its class, its bytes lowercased and
/// its length. A byte that starts no whole UTF-8 character is one lower-case byte of its own.
fn non_ascii_letter(name: &[u8], at: usize) -> (ByteClass, [u8; 4], usize) {
    let as_is = (ByteClass::Lower, [name[at], 0, 0, 0], 1);
    let len = match name[at] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return as_is,
    };
    let Some(letter) = name
        .get(at..at + len)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.chars().next())
    else {
        return as_is;
    };
    let mut bytes = [0u8; 4];
    let mut lower = letter.to_lowercase();
    let class = match (lower.next(), lower.next()) {
        (Some(lowered), None) if lowered != letter && lowered.len_utf8() == len => {
            lowered.encode_utf8(&mut bytes);
            ByteClass::Upper
        }
        _ => {
            letter.encode_utf8(&mut bytes);
            ByteClass::Lower
        }
    };
    (class, bytes, len)
}

/// Lowercased words joined without separators, the form added keywords are compared in.
pub(crate) fn normalized_bytes(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    split_words(name.as_bytes(), |byte| out.push(byte), |_| {});
    out
}

/// A name split into words: the words' bytes joined, and where each word ends.
pub(crate) struct Words<'b, E> {
    pub(crate) joined: &'b [u8],
    ends: &'b [E],
}

/// Splits `name` into the stack buffers; `None` when the name is longer than they are.
pub(crate) fn split_into<'b>(
    name: &str,
    joined: &'b mut [u8; NORMALIZED_STACK_LEN],
    ends: &'b mut [u8; NORMALIZED_STACK_LEN],
) -> Option<Words<'b, u8>> {
    if name.len() > NORMALIZED_STACK_LEN {
        return None;
    }
    let mut len = 0usize;
    let mut words = 0usize;
    {
        let joined_slots = &mut *joined;
        let ends_slots = &mut *ends;
        split_words(
            name.as_bytes(),
            |byte| {
                if let Some(slot) = joined_slots.get_mut(len) {
                    *slot = byte;
                }
                len += 1;
            },
            |emitted| {
                if let Some(slot) = ends_slots.get_mut(words) {
                    *slot = emitted as u8;
                }
                words += 1;
            },
        );
    }
    Some(Words {
        joined: joined.get(..len)?,
        ends: ends.get(..words)?,
    })
}

/// Owned words of a name too long for the stack buffers.
pub(crate) struct OwnedWords {
    joined: Vec<u8>,
    ends: Vec<usize>,
}

impl OwnedWords {
    pub(crate) fn split(name: &str) -> OwnedWords {
        let mut joined = Vec::with_capacity(name.len());
        let mut ends = Vec::new();
        split_words(
            name.as_bytes(),
            |byte| joined.push(byte),
            |emitted| ends.push(emitted),
        );
        OwnedWords { joined, ends }
    }

    pub(crate) fn words(&self) -> Words<'_, usize> {
        Words {
            joined: &self.joined,
            ends: &self.ends,
        }
    }
}

impl<E: Copy + Into<usize>> Words<'_, E> {
    fn count(&self) -> usize {
        self.ends.len()
    }

    fn start(&self, word: usize) -> usize {
        if word == 0 {
            0
        } else {
            self.ends.get(word - 1).map_or(0, |&end| end.into())
        }
    }

    fn end(&self, word: usize) -> usize {
        self.ends.get(word).map_or(0, |&end| end.into())
    }

    /// Words `first..=last` written together.
    fn span(&self, first: usize, last: usize) -> &[u8] {
        self.joined
            .get(self.start(first)..self.end(last))
            .unwrap_or_default()
    }

    /// The word containing byte `at` of the joined bytes.
    fn word_at(&self, at: usize) -> usize {
        (0..self.count())
            .find(|&word| at < self.end(word))
            .unwrap_or(self.count().saturating_sub(1))
    }
}

/// `word` without a trailing plural `s` (not `ss`), if it has one.
fn singular(word: &[u8]) -> Option<&[u8]> {
    match word {
        [rest @ .., a, b's'] if rest.len() >= 2 && *a != b's' => word.get(..word.len() - 1),
        _ => None,
    }
}

/// `word` without trailing digits, if it has some and at least two letters before them.
fn without_digits(word: &[u8]) -> Option<&[u8]> {
    let kept = word.len() - word.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    (kept >= 2 && kept < word.len()).then(|| &word[..kept])
}

/// For each first byte, the range of keywords of a sorted list starting with it and a bit per
/// length (up to 63) they have, so that most lookups end after two table reads.
struct KeywordIndex {
    list: &'static [Keyword],
    ranges: [(u16, u16); 256],
    lengths: [u64; 256],
    /// For each first byte, a bit per second byte (its low five bits) that can follow it.
    second_bytes: [u32; 256],
}

const fn index(list: &'static [Keyword]) -> KeywordIndex {
    let mut ranges = [(0u16, 0u16); 256];
    let mut lengths = [0u64; 256];
    let mut second_bytes = [0u32; 256];
    let mut i = 0;
    while i < list.len() {
        let bytes = list[i].normalized.as_bytes();
        let first = bytes[0] as usize;
        if ranges[first].1 == 0 {
            ranges[first].0 = i as u16;
        }
        ranges[first].1 = (i + 1) as u16;
        lengths[first] |= 1 << bytes.len();
        if bytes.len() > 1 {
            second_bytes[first] |= 1 << (bytes[1] & 31);
        }
        i += 1;
    }
    KeywordIndex {
        list,
        ranges,
        lengths,
        second_bytes,
    }
}

static ANYWHERE_INDEX: KeywordIndex = index(ANYWHERE_KEYWORDS);
static SUFFIX_INDEX: KeywordIndex = index(SUFFIX_KEYWORDS);
static WORD_INDEX: KeywordIndex = index(WORD_KEYWORDS);

impl KeywordIndex {
    fn starting_with(&self, first: u8) -> &'static [Keyword] {
        let (start, end) = self.ranges[first as usize];
        self.list.get(start as usize..end as usize).unwrap_or(&[])
    }

    /// The keyword equal to `word`.
    fn exact(&self, word: &[u8]) -> Option<&'static Keyword> {
        let &first = word.first()?;
        if word.len() > 63 || self.lengths[first as usize] & (1 << word.len()) == 0 {
            return None;
        }
        self.starting_with(first)
            .iter()
            .find(|keyword| keyword.normalized.as_bytes() == word)
    }

    /// Whether some keyword could start with the first two bytes of `text`: one lookup that
    /// rules out most positions of an ordinary name.
    #[inline]
    fn may_start(&self, text: &[u8]) -> bool {
        match (text.first(), text.get(1)) {
            (Some(&first), Some(&second)) => {
                self.second_bytes[first as usize] & (1 << (second & 31)) != 0
            }
            _ => false,
        }
    }

    /// The keyword `text` starts with.
    fn prefix_of(&self, text: &[u8]) -> Option<&'static Keyword> {
        if !self.may_start(text) {
            return None;
        }
        let first = text[0];
        self.starting_with(first)
            .iter()
            .find(|keyword| text.starts_with(keyword.normalized.as_bytes()))
    }
}

fn in_sorted(list: &[&str], word: &[u8]) -> bool {
    let word = singular(word).unwrap_or(word);
    list.binary_search_by(|entry| entry.as_bytes().cmp(word))
        .is_ok()
}

/// The keyword matching words `first..=last` as a whole, in any of its written forms.
fn whole_match(span: &[u8]) -> Option<&'static Keyword> {
    let forms = [Some(span), singular(span), without_digits(span)];
    forms
        .into_iter()
        .flatten()
        .find_map(|form| WORD_INDEX.exact(form).or_else(|| SUFFIX_INDEX.exact(form)))
}

/// The suffix keyword one word ends with.
fn suffix_match(word: &[u8]) -> Option<&'static Keyword> {
    let word = singular(word).unwrap_or(word);
    // Every suffix keyword ends in `d` or `n`.
    if !matches!(word.last(), Some(b'd' | b'n')) {
        return None;
    }
    SUFFIX_KEYWORDS
        .iter()
        .find(|keyword| word.ends_with(keyword.normalized.as_bytes()))
}

/// A keyword found in a name, over words `first..=last`.
struct Found {
    keyword: &'static Keyword,
    first: usize,
    last: usize,
}

/// The earliest keyword match in `words`.
fn first_match<E: Copy + Into<usize>>(words: &Words<'_, E>) -> Option<Found> {
    let anywhere = (0..words.joined.len()).find_map(|at| {
        let keyword = ANYWHERE_INDEX.prefix_of(&words.joined[at..])?;
        Some(Found {
            keyword,
            first: words.word_at(at),
            last: words.word_at(at + keyword.normalized.len() - 1),
        })
    });
    let count = words.count();
    let limit = anywhere.as_ref().map_or(count, |found| found.first + 1);
    for first in 0..limit.min(count) {
        if let Some(keyword) = suffix_match(words.span(first, first)) {
            return Some(Found {
                keyword,
                first,
                last: first,
            });
        }
        // Phrases start with this word but may run into the next ones (`x_forwarded_for`).
        let start = words.joined.get(words.start(first)..).unwrap_or_default();
        if !WORD_INDEX.may_start(start) && !SUFFIX_INDEX.may_start(start) {
            continue;
        }
        for last in first..count.min(first + MAX_PHRASE_WORDS) {
            if let Some(keyword) = whole_match(words.span(first, last)) {
                return Some(Found {
                    keyword,
                    first,
                    last,
                });
            }
        }
    }
    anywhere
}

/// Whether a match is qualified into a harmless compound (rule 3 of the module docs).
fn is_harmless<E: Copy + Into<usize>>(words: &Words<'_, E>, found: &Found) -> bool {
    let last_word = words.count().saturating_sub(1);
    let head_is_metadata =
        found.last < last_word && in_sorted(HEAD_QUALIFIERS, words.span(last_word, last_word));
    head_is_metadata
        || (0..found.first).any(|word| in_sorted(PREFIX_QUALIFIERS, words.span(word, word)))
}

/// The built-in keyword that makes a name sensitive, if any.
pub(crate) fn builtin_match<E: Copy + Into<usize>>(
    words: &Words<'_, E>,
) -> Option<&'static Keyword> {
    let found = first_match(words)?;
    (!is_harmless(words, &found)).then_some(found.keyword)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let &first = needle.first()?;
    if needle.len() > haystack.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .find(|&start| haystack[start] == first && haystack[start..].starts_with(needle))
}

/// Whether `needle` occurs in `haystack`; used for configured and requested keywords.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(name: &str) -> Option<&'static str> {
        let mut joined = [0; NORMALIZED_STACK_LEN];
        let mut ends = [0; NORMALIZED_STACK_LEN];
        match split_into(name, &mut joined, &mut ends) {
            Some(words) => builtin_match(&words).map(|keyword| keyword.normalized),
            None => builtin_match(&OwnedWords::split(name).words()).map(|k| k.normalized),
        }
    }

    fn words(name: &str) -> Vec<String> {
        let owned = OwnedWords::split(name);
        let words = owned.words();
        (0..words.count())
            .map(|word| String::from_utf8_lossy(words.span(word, word)).into_owned())
            .collect()
    }

    #[test]
    fn lists_are_sorted_unique_and_normalized() {
        for list in [ANYWHERE_KEYWORDS, SUFFIX_KEYWORDS, WORD_KEYWORDS] {
            for pair in list.windows(2) {
                assert!(
                    pair[0].normalized < pair[1].normalized,
                    "{} before {}",
                    pair[0].normalized,
                    pair[1].normalized
                );
            }
            for keyword in list {
                assert_eq!(
                    normalized_bytes(keyword.normalized),
                    keyword.normalized.as_bytes()
                );
                assert_eq!(keyword.reason, format!("name:{}", keyword.normalized));
                assert!(keyword.normalized.len() < 63);
            }
        }
        for list in [HEAD_QUALIFIERS, PREFIX_QUALIFIERS] {
            for pair in list.windows(2) {
                assert!(pair[0] < pair[1], "{} before {}", pair[0], pair[1]);
            }
        }
    }

    #[test]
    fn suffix_keywords_end_in_the_bytes_the_quick_check_expects() {
        for keyword in SUFFIX_KEYWORDS {
            assert!(matches!(
                keyword.normalized.as_bytes().last(),
                Some(b'd' | b'n')
            ));
        }
    }

    #[test]
    fn no_keyword_is_also_a_qualifier() {
        for list in [ANYWHERE_KEYWORDS, SUFFIX_KEYWORDS, WORD_KEYWORDS] {
            for keyword in list {
                let word = keyword.normalized.as_bytes();
                assert!(!in_sorted(HEAD_QUALIFIERS, word), "{}", keyword.normalized);
                assert!(
                    !in_sorted(PREFIX_QUALIFIERS, word),
                    "{}",
                    keyword.normalized
                );
            }
        }
    }

    #[test]
    fn names_split_into_words() {
        assert_eq!(words("customer_ssn"), ["customer", "ssn"]);
        assert_eq!(words("cardNumber"), ["card", "number"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(words("userID"), ["user", "id"]);
        assert_eq!(words("XMLHttpRequest"), ["xml", "http", "request"]);
        assert_eq!(words("x-api-key"), ["x", "api", "key"]);
        assert_eq!(words("$card.number"), ["card", "number"]);
        assert_eq!(words("@card_number"), ["card", "number"]);
        assert_eq!(words("card[number]"), ["card", "number"]);
        assert_eq!(words("cvv2Code"), ["cvv2", "code"]);
        assert_eq!(words("sha256Hash"), ["sha256", "hash"]);
        assert_eq!(words("__"), Vec::<String>::new());
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

    /// Datadog's list, except three plain identifiers it also withholds (`clientid`,
    /// `publickey`, `transactionid`): they name no secret, and withholding them costs the
    /// fields an investigation most often needs.
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
    fn a_sensitive_word_anywhere_in_a_name_counts() {
        for name in [
            "customer_ssn",
            "customerSSN",
            "card_cvc",
            "cardCvc2",
            "auth_code",
            "authCode",
            "card_pin",
            "passwords",
            "user_passwords",
            "tokens",
            "api_keys",
            "apiKeys",
            "APIKey",
            "X-API-KEY",
            "stripeApiKey",
            "db_pass",
            "smtp-pass",
            "otp_code",
            "mfa_code",
            "verification_code",
            "recovery_codes",
            "AccountKey",
            "storage_account_key",
            "SharedAccessKey",
            "sentry_dsn",
            "session_id",
            "secret_id",
            "api_key_id",
            "password_hash",
            "new_password",
            "password_confirmation",
            "X-Hub-Signature-256",
            "x-amz-security-token",
            "social_security_number",
            "oauth2Token",
            "hmac_key",
            "Set-Cookie",
            "proxy-authorization",
        ] {
            assert!(matched(name).is_some(), "{name}");
        }
    }

    #[test]
    fn documented_harmless_compounds_are_kept() {
        for name in [
            "token_count",
            "max_tokens",
            "maxTokens",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "input_tokens",
            "token_type",
            "tokenType",
            "token_expires_at",
            "password_policy_version",
            "password_min_length",
            "min_password_length",
            "passwordMinLength",
            "password_strength",
            "public_key",
            "publicKey",
            "client_id",
            "transaction_id",
            "session_count",
            "session_timeout",
            "auth_method",
            "auth_provider",
            "oauth_provider",
            "secret_name",
            "secretName",
            "secret_names",
            "has_password",
            "is_secret",
            "num_secrets",
            "signature_valid",
            "signature_algorithm",
            "cookie_name",
            "password_policies",
            "login_retries",
            "jwt_issuer",
        ] {
            assert_eq!(matched(name), None, "{name}");
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
    fn anywhere_keywords_match_inside_compound_names() {
        assert_eq!(matched("card_token"), Some("token"));
        assert_eq!(matched("db_password_hash"), Some("password"));
        assert_eq!(matched("clientSecret"), Some("secret"));
        assert_eq!(matched("refreshToken"), Some("token"));
        assert_eq!(matched("user_session_id"), Some("session"));
        assert_eq!(matched("stripeApiKey"), Some("apikey"));
        assert_eq!(matched("proxy-authorization"), Some("authorization"));
        assert_eq!(matched("aws_secret_access_key"), Some("secret"));
        assert_eq!(matched("awsAccessKeyId"), Some("accesskey"));
        assert_eq!(matched("cardCvv2"), Some("cvv"));
        assert_eq!(
            matched("PASSPHRASE_FILE"),
            None,
            "a path to the passphrase file"
        );
        assert_eq!(matched("PASSPHRASE"), Some("passphrase"));
    }

    #[test]
    fn short_keywords_match_only_whole_words() {
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
            "authority",
            "footprint",
            "basalt",
            "pinned",
            "spinner",
            "opinion",
            "lessons",
            "pandas",
            "company",
            "expansion",
            "tokenizer",
            "bypass",
            "compass",
            "passenger",
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
            "key",
            "",
            "_",
            "日本語",
        ] {
            assert_eq!(matched(name), None, "{name}");
        }
    }

    #[test]
    fn non_ascii_names_keep_their_bytes() {
        assert_eq!(matched("Passwört"), None);
        assert_eq!(matched("mot_de_passe_password"), Some("motdepasse"));
        assert_eq!(matched("Passwort"), Some("passwort"));
        assert_eq!(matched("PASSWORD_ÜBER"), Some("password"));
    }

    #[test]
    fn long_names_split_like_short_ones() {
        let long = format!("{}_password", "segment_".repeat(20));
        assert_eq!(matched(&long), Some("password"));
        let mut joined = [0; NORMALIZED_STACK_LEN];
        let mut ends = [0; NORMALIZED_STACK_LEN];
        assert!(split_into(&"a".repeat(NORMALIZED_STACK_LEN), &mut joined, &mut ends).is_some());
        assert!(
            split_into(
                &"a".repeat(NORMALIZED_STACK_LEN + 1),
                &mut joined,
                &mut ends
            )
            .is_none()
        );
        assert_eq!(normalized_bytes("A_b-C"), b"abc");
        assert_eq!(normalized_bytes("ПАРОЛЬ"), "пароль".as_bytes());
        assert_eq!(normalized_bytes("HASŁO_Bazy"), "hasłobazy".as_bytes());
        // `İ` lowercases to two letters: kept as it is, as is a byte that starts no letter.
        assert_eq!(normalized_bytes("İD"), "İd".as_bytes());
        assert_eq!(normalized_bytes("_-$@ ."), b"");
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
