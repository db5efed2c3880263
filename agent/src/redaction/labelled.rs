//! Values labelled by a sensitive name inside text: `password: "hunter2"` in Debug output,
//! `"token":"abc"` in a JSON string, `?session_id=abc&x=1` in a URL, `PIN=1234` in a log line.
//!
//! Name rules protect fields the capture engine walks one by one, but a `?value` capture or a
//! string that embeds a serialized record carries its field names and values as plain text.
//! Without this pass, `#[derive(Debug)] struct Login { password: String }` captured with `?`
//! would show the password. The label is judged by the same rules as a field name (built-ins
//! and additions), so both paths withhold the same things.
//!
//! Shape: a name (letters, digits, `_ - $ @ .`, and before `:` or `=` letters and digits
//! outside ASCII too, so `contraseña: …` is read as a label), optionally closed by a quote
//! (escaped or not: `\"password\":` inside a Debug-printed JSON string), optional spaces, then
//! `:` or `=` (not `::` or `==`; `=>` is accepted), optional spaces, then the value:
//! - quoted (`"…"`, `'…'`, or escaped `\"…\"`, backslash escapes honoured): the inside is
//!   masked and the quotes stay; with no closing quote the rest of the text is masked;
//! - otherwise up to `,` `;` `&` or a line break at bracket depth zero, so `pin: Some(1234)`
//!   and `key: Key { bytes: [..] }` are masked whole. After `=` a space ends the value too
//!   (`password=x user=bob` in a log line), but a sensitive value goes on over the words
//!   after it up to the line's next assignment (a passphrase of several words); after `:` a
//!   space does not end it, so a YAML value or a header (`Authorization: Token abc`) is
//!   masked to its end.
//!
//! Two shapes are judged differently:
//! - **cookie headers** (`Cookie: a=1; session=…`): a label naming cookies whose value is
//!   itself a list of `name=value` pairs is not masked whole; each pair is judged by its own
//!   name, so the session cookie goes and the theme cookie stays;
//! - **XML elements** (`<password>x</password>`, `<Password value="x"/>`): an element whose
//!   tag name is sensitive has its attributes and text masked.
//!
//! And three shapes have no `:` or `=`:
//! - **a tool's own password flag** (`mysql -pSECRET`, `redis-cli -a SECRET`, `curl -u
//!   admin:SECRET` or `curl -fsSu admin:SECRET`, `docker login -p SECRET`), on a line that
//!   names the tool: the letter alone means nothing elsewhere (`ssh -p 2222`);
//! - **a quoted value after a sensitive word** (`WITH PASSWORD '…'` or `E'…'`,
//!   `IDENTIFIED BY '…'` or `"…"`, `the token 'abc' was refused`);
//! - **a directive at the start of a line** (`requirepass …`, `PASS …`, `a001 LOGIN user …`,
//!   `.netrc`'s `password …`, a Dockerfile's `ENV API_KEY …`, the answer to SMTP's base64
//!   password prompt), where a line break may be written as an escape (`\n`): see
//!   `directive_at`.
//!
//! And one is all `:` with no label: **a `.pgpass` entry** (`host:port:database:user:…`), at a
//! line's start, a quoted string's, or after an escaped line break: see `pgpass_entry_around`.

use crate::text::run_end;

/// Longest label looked at; longer runs of name characters are not field names.
const MAX_LABEL_LEN: usize = 128;

fn is_label_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'$' | b'@' | b'.')
}

/// Where a label before `:` or `=` starts when letters and digits outside ASCII count as
/// label characters too (`contraseña: …`, `пароль=…`), given where its ASCII part starts:
/// whole characters only, and never punctuation or spaces outside ASCII (`，pin=`), so a
/// label that was read before is still read. Text that is not UTF-8 there ends the label.
fn wider_label_start(text: &[u8], ascii_start: usize, label_end: usize) -> usize {
    let mut start = ascii_start;
    while start > 0 && label_end - start < MAX_LABEL_LEN {
        let byte = text[start - 1];
        if byte.is_ascii() {
            if !is_label_byte(byte) {
                break;
            }
            start -= 1;
            continue;
        }
        // The character ending here: a lead byte and up to three continuation bytes.
        let lead = (start.saturating_sub(4)..start)
            .rev()
            .find(|&at| text[at] & 0xC0 != 0x80)
            .unwrap_or(start - 1);
        let letter_or_digit = std::str::from_utf8(&text[lead..start])
            .ok()
            .and_then(|character| character.chars().next())
            .is_some_and(char::is_alphanumeric);
        if !letter_or_digit || label_end - lead > MAX_LABEL_LEN {
            break;
        }
        start = lead;
    }
    start
}

/// A labelled value at bytes `start..end`, labelled by `text[label_start..label_end]`, and
/// also by `text[other_label]` where the text gives it a second name: the field inside a
/// bracketed form name (`user[password]=`), or the label without the escape sequence it
/// seems to begin with (`\npass:` is `pass` after a line break written as `\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LabelledValue {
    pub(crate) label_start: usize,
    pub(crate) label_end: usize,
    pub(crate) other_label: Option<(usize, usize)>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A label and its other name, if it has one, as text to judge: the label, then the other.
fn labels_in(
    text: &[u8],
    main: (usize, usize),
    other: Option<(usize, usize)>,
) -> impl Iterator<Item = &str> {
    [Some(main), other]
        .into_iter()
        .flatten()
        .filter_map(|(start, end)| std::str::from_utf8(text.get(start..end)?).ok())
}

/// The first value at or after byte `from` whose label `is_sensitive` accepts, with what
/// `is_sensitive` returned for it.
///
/// A value is also labelled by a name given as its neighbour's value, as name/value lists
/// write them: `{"name": "DB_PASSWORD", "value": "…"}` (Kubernetes), `"Key": "db_password",
/// "Value": …` (AWS), `<add key="StripeApiKey" value="…"/>`, `- name: db_password` then
/// `value: …` in YAML. A `value` (or `val`) label takes the name a `name` or `key` label gave
/// before it in the same object: no `{`, `}`, `<`, `>` or YAML list item in between; with no
/// name before it, the name given after it in the same object, among the next
/// [`NAME_AFTER_VALUE_LABELS`] labels (`{"value": "…", "name": "DB_PASSWORD"}`, as a struct
/// declared value first serializes, and as a capture judges such a struct).
pub(crate) fn next_labelled_value<R>(
    text: &[u8],
    from: usize,
    mut is_sensitive: impl FnMut(&str) -> Option<R>,
) -> Option<(LabelledValue, R)> {
    let mut at = from;
    if from == 0
        && let Some(sensitive) = directive_at(text, 0, &mut is_sensitive)
    {
        return Some(sensitive);
    }
    // A sensitive name given as a `name`/`key` value, and where that value ended.
    let mut named: Option<(R, usize)> = None;
    let mut tools = ToolLine::before(from);
    while let Some(assign) = find_assignment(text, at) {
        at = assign + 1;
        let found = match text[assign] {
            b'\n' => {
                tools = ToolLine::starting_at(assign + 1);
                match directive_at(text, assign + 1, &mut is_sensitive) {
                    Some(sensitive) => return Some(sensitive),
                    None => continue,
                }
            }
            // A line break written as an escape, as Debug and JSON write one.
            b'\\' => {
                let Some(line_start) = escaped_line_break_at(text, assign) else {
                    continue;
                };
                tools = ToolLine::starting_at(line_start);
                match directive_at(text, line_start, &mut is_sensitive) {
                    Some(sensitive) => return Some(sensitive),
                    None => continue,
                }
            }
            b'<' => xml_element_at(text, assign).map(Candidate::Value),
            b'(' => {
                let found = typed_value_at(text, assign, &mut is_sensitive)
                    .or_else(|| named_pair_at(text, assign, &mut is_sensitive));
                match found {
                    Some(sensitive) => return Some(sensitive),
                    None => continue,
                }
            }
            b'-' => match tool_flag_value_at(text, assign, &mut tools) {
                // The flag means "password" to the tool it is given to.
                Some(found) => match is_sensitive("password") {
                    Some(reason) => return Some((found, reason)),
                    None => continue,
                },
                None => flag_value_at(text, assign).map(Candidate::Value),
            },
            b'\'' | b'"' => match quoted_after_word_at(text, assign, &mut is_sensitive) {
                Some(sensitive) => return Some(sensitive),
                None => continue,
            },
            b':' => match pgpass_entry_around(text, assign, &mut is_sensitive) {
                Some(sensitive) => return Some(sensitive),
                None => label_at(text, assign).map(Candidate::Label),
            },
            _ => label_at(text, assign).map(Candidate::Label),
        };
        let Some(candidate) = found else { continue };
        // Judged by its label first: a value's extent is looked for only when the label names
        // a secret or plays a part in a name/value pair.
        if let Some(reason) = candidate.labels(text).find_map(&mut is_sensitive) {
            let Some(found) = candidate.value(text) else {
                continue;
            };
            return Some((with_following_words(text, found), reason));
        }
        let (label_start, label_end) = candidate.label();
        match pair_role_of(&text[label_start..label_end]) {
            Some(PairRole::Value) => {
                let Some(found) = candidate.value(text) else {
                    continue;
                };
                match named.take() {
                    Some((reason, after))
                        if !object_ends_between(text, after, found.label_start) =>
                    {
                        return Some((found, reason));
                    }
                    Some(_) => {}
                    None => {
                        if let Some(reason) = name_after_value(text, &found, &mut is_sensitive) {
                            return Some((found, reason));
                        }
                    }
                }
            }
            Some(PairRole::Name) => {
                let Some(found) = candidate.given_name(text) else {
                    continue;
                };
                named = name_given(text, &found)
                    .and_then(&mut is_sensitive)
                    .map(|reason| (reason, found.end));
            }
            None => {}
        }
    }
    None
}

/// What an assignment gave [`next_labelled_value`]: a value found whole (an XML element, a
/// flag's argument), or a label whose value's extent is found only if it is needed.
enum Candidate {
    Value(LabelledValue),
    Label(Label),
}

impl Candidate {
    fn label(&self) -> (usize, usize) {
        match self {
            Candidate::Value(found) => (found.label_start, found.label_end),
            Candidate::Label(label) => (label.label_start, label.label_end),
        }
    }

    fn labels<'t>(&self, text: &'t [u8]) -> impl Iterator<Item = &'t str> {
        let other = match self {
            Candidate::Value(found) => found.other_label,
            Candidate::Label(label) => label.other_label,
        };
        labels_in(text, self.label(), other)
    }

    /// The value, unless it is a cookie header's list of pairs, each of which is judged by its
    /// own name (see the module docs).
    fn value(&self, text: &[u8]) -> Option<LabelledValue> {
        match self {
            Candidate::Value(found) => Some(*found),
            Candidate::Label(label) => label
                .value(text)
                .filter(|found| !is_cookie_list(text, found)),
        }
    }

    /// The value of a `name`/`key` label, where it can be a name ([`Label::given_name`]).
    fn given_name(&self, text: &[u8]) -> Option<LabelledValue> {
        match self {
            Candidate::Value(found) => Some(*found),
            Candidate::Label(label) => label.given_name(text),
        }
    }
}

/// How many labels after a value with no name before it are looked at for its name.
pub(crate) const NAME_AFTER_VALUE_LABELS: usize = 8;

/// What `is_sensitive` says of the name a `name` or `key` label gives after `value`, in the
/// same object and among the next [`NAME_AFTER_VALUE_LABELS`] labels.
fn name_after_value<R>(
    text: &[u8],
    value: &LabelledValue,
    is_sensitive: &mut impl FnMut(&str) -> Option<R>,
) -> Option<R> {
    let mut at = value.end;
    for _ in 0..NAME_AFTER_VALUE_LABELS {
        let assign = find_assignment(text, at)?;
        at = assign + 1;
        if !matches!(text[assign], b':' | b'=') {
            continue;
        }
        let Some(next) = label_at(text, assign) else {
            continue;
        };
        if object_ends_between(text, value.end, next.label_start) {
            return None;
        }
        if pair_role_of(&text[next.label_start..next.label_end]) == Some(PairRole::Name) {
            let Some(given) = next.given_name(text) else {
                continue;
            };
            return name_given(text, &given).and_then(is_sensitive);
        }
    }
    None
}

fn is_any_of(label: &[u8], names: &[&[u8]]) -> bool {
    names.iter().any(|name| label.eq_ignore_ascii_case(name))
}

/// The part a label plays in a name/value pair, in text and in captured structs alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PairRole {
    /// `name`, `key`, `keyName`: its value names its neighbour.
    Name,
    /// `value`, `val`: named by its neighbour.
    Value,
}

/// The part `label` plays in a name/value pair, if any.
pub(crate) fn pair_role(label: &str) -> Option<PairRole> {
    pair_role_of(label.as_bytes())
}

/// The part a captured field plays in a pair: [`pair_role`] by its name, or, for positional
/// fields, the first (`0`) names the second (`1`): `Var("DB_PASSWORD", …)` as a tuple struct
/// or variant through serde. The capture, its replay and a condition's direct path judge
/// fields by this one rule, so a condition never reads what the snapshot withholds.
pub(crate) fn field_pair_role(name: &str) -> Option<PairRole> {
    match name {
        "0" => Some(PairRole::Name),
        "1" => Some(PairRole::Value),
        _ => pair_role(name),
    }
}

/// [`pair_role`] on bytes; asked of every label in a text, so most are turned away by their
/// length and first letter.
fn pair_role_of(label: &[u8]) -> Option<PairRole> {
    if !matches!(label.len(), 3..=7) || !matches!(label[0] | 0x20, b'v' | b'n' | b'k') {
        return None;
    }
    if is_any_of(label, &[b"value", b"val"]) {
        Some(PairRole::Value)
    } else if is_any_of(label, &[b"name", b"key", b"keyname"]) {
        Some(PairRole::Name)
    } else {
        None
    }
}

/// The name a `name` or `key` label's value gives, if it looks like one: label characters
/// only (the last segment of a path such as `/prod/app/db_password`).
pub(crate) fn given_name(value: &str) -> Option<&str> {
    let name = value.rsplit('/').next()?;
    let plausible =
        !name.is_empty() && name.len() <= MAX_LABEL_LEN && name.bytes().all(is_label_byte);
    plausible.then_some(name)
}

fn name_given<'t>(text: &'t [u8], found: &LabelledValue) -> Option<&'t str> {
    given_name(std::str::from_utf8(&text[found.start..found.end]).ok()?)
}

/// The label `text` ends with when its value is not in it: `--name` as the whole text (a
/// command-line flag whose value is the next argument), or `name:` / `name=` with nothing after
/// but spaces or line breaks.
pub(crate) fn label_left_open(text: &str) -> Option<&str> {
    let text = text.trim_end_matches(|c: char| c.is_ascii_whitespace());
    let bytes = text.as_bytes();
    let label = match bytes.last()? {
        b':' | b'=' => {
            // `"password": ` and `\"password\":`
            let mut label_end = bytes.len() - 1;
            while label_end > 0 && matches!(bytes[label_end - 1], b'"' | b'\'' | b'\\' | b' ') {
                label_end -= 1;
            }
            let mut label_start = label_end;
            while label_start > 0
                && label_end - label_start < MAX_LABEL_LEN
                && is_label_byte(bytes[label_start - 1])
            {
                label_start -= 1;
            }
            &bytes[label_start..label_end]
        }
        // A flag is a whole text (one argument of a command line): asked of every text a
        // snapshot or a condition's key follower meets, so it is answered from its first
        // bytes. A flag at the end of a longer text is left to the label scanner, which masks
        // the word after it in the same text.
        _ => {
            let flag = bytes.strip_prefix(b"--")?;
            if flag.len() > MAX_LABEL_LEN || !flag.iter().all(|&b| is_label_byte(b)) {
                return None;
            }
            flag
        }
    };
    if label.is_empty() {
        return None;
    }
    std::str::from_utf8(label).ok()
}

/// Whether an object or list item ends between `from` and `to`: `{`, `}`, `<`, `>`, or a line
/// whose first character is `-` (the next YAML list item).
fn object_ends_between(text: &[u8], from: usize, to: usize) -> bool {
    let between = &text[from.min(to)..to];
    between
        .iter()
        .any(|&byte| matches!(byte, b'{' | b'}' | b'<' | b'>'))
        || between.split(|&byte| byte == b'\n').skip(1).any(|line| {
            line.iter()
                .find(|&&byte| byte != b' ' && byte != b'\t')
                .is_some_and(|&byte| byte == b'-')
        })
}

/// The contents of `Name(…)` in Debug output whose `(` is at `open`, labelled by the type or
/// variant name: `ApiKey("…")`, `Credential::Password("…")`. A positional payload's only label
/// is that name, so it is judged like a field name, as the capture judges a newtype's or a
/// tuple variant's (`SnapshotBuilder::label_withholds`); `Name { … }` has named fields, judged
/// by their own names. Only names that begin with a capital letter, as Rust's types and
/// variants do, are looked at, so calls in prose (`retry(3)`) are not.
///
/// `is_sensitive` judges the name before the parentheses are matched: Debug output is full of
/// names and parentheses, and matching each pair first made a long Debug text's scan
/// quadratic.
fn typed_value_at<R>(
    text: &[u8],
    open: usize,
    is_sensitive: &mut impl FnMut(&str) -> Option<R>,
) -> Option<(LabelledValue, R)> {
    let name_end = open;
    let mut name_start = name_end;
    while name_start > 0
        && name_end - name_start < MAX_LABEL_LEN
        && (text[name_start - 1].is_ascii_alphanumeric() || text[name_start - 1] == b'_')
    {
        name_start -= 1;
    }
    if !text.get(name_start)?.is_ascii_uppercase() || name_start == name_end {
        return None;
    }
    let reason = is_sensitive(std::str::from_utf8(&text[name_start..name_end]).ok()?)?;
    let after = unquoted_value_end(text, open, false);
    let closed = after > open + 1 && after <= text.len() && text[after - 1] == b')';
    let end = if closed { after - 1 } else { text.len() };
    let found = LabelledValue {
        label_start: name_start,
        label_end: name_end,
        other_label: None,
        start: open + 1,
        end,
    };
    (open + 1 < end).then_some((found, reason))
}

/// The second half of a name/value pair written as a tuple whose `(` is at `open`:
/// `("DB_PASSWORD", "…")`, as Debug prints `std::env::vars()` collected, judged by the name
/// in its first half (the rule of [`given_name`]).
fn named_pair_at<R>(
    text: &[u8],
    open: usize,
    is_sensitive: &mut impl FnMut(&str) -> Option<R>,
) -> Option<(LabelledValue, R)> {
    let quote = *text.get(open + 1)?;
    if !matches!(quote, b'"' | b'\'') {
        return None;
    }
    let name_start = open + 2;
    let name_end = closing_quote(text, name_start, quote)?;
    if name_end - name_start > MAX_LABEL_LEN {
        return None;
    }
    let reason = given_name(std::str::from_utf8(&text[name_start..name_end]).ok()?)
        .and_then(&mut *is_sensitive)?;
    let after_name = name_end + 1;
    if text.get(after_name) != Some(&b',') {
        return None;
    }
    let value_start = after_name
        + 1
        + text[after_name + 1..]
            .iter()
            .take_while(|&&byte| byte == b' ')
            .count();
    let (start, end) = match text.get(value_start)? {
        &quote @ (b'"' | b'\'') => {
            let inside = value_start + 1;
            (
                inside,
                closing_quote(text, inside, quote).unwrap_or(text.len()),
            )
        }
        _ => (value_start, unquoted_value_end(text, value_start, false)),
    };
    let found = LabelledValue {
        label_start: name_start,
        label_end: name_end,
        other_label: None,
        start,
        end,
    };
    (start < end).then_some((found, reason))
}

/// The value after a command-line flag whose first `-` is at `dash`: `--password hunter2`, or
/// quoted, `--token "abc"`. `--password=x` is an ordinary label; a flag followed by another
/// flag has no value here; one at the end of its text leaves its label open for the next
/// (`label_left_open`).
fn flag_value_at(text: &[u8], dash: usize) -> Option<LabelledValue> {
    let starts_word = dash == 0 || matches!(text[dash - 1], b' ' | b'\t' | b'\n' | b'"' | b'\'');
    if text.get(dash + 1) != Some(&b'-') || !starts_word {
        return None;
    }
    let label_start = dash + 2;
    let mut label_end = label_start;
    while label_end - label_start < MAX_LABEL_LEN
        && text.get(label_end).is_some_and(|&b| is_label_byte(b))
    {
        label_end += 1;
    }
    if label_end == label_start || !matches!(text.get(label_end), Some(b' ' | b'\t')) {
        return None;
    }
    let value_start = label_end
        + text[label_end..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
    let (start, end) = argument_at(text, value_start, |byte| byte.is_ascii_whitespace())?;
    (start < end).then_some(LabelledValue {
        label_start,
        label_end,
        other_label: None,
        start,
        end,
    })
}

/// How a tool's short flag gives its password.
#[derive(Clone, Copy)]
enum ToolFlag {
    /// Only joined to the flag (`mysql -pSECRET`): with a space, the tool prompts instead.
    Joined,
    /// Joined or as the next argument (`sshpass -p SECRET`).
    Either,
    /// Only as the next argument (`redis-cli -a SECRET`): joined, the letters are another flag
    /// (`openssl … -keyout`).
    Separate,
    /// `user:password`, joined or next (`curl -u admin:SECRET`): only what follows the `:`.
    AfterColon,
    /// `user%password`, joined or next (`smbclient -U admin%SECRET`): only what follows the
    /// `%`.
    AfterPercent,
}

/// A tool's short flag that takes a password.
struct ToolPasswordFlag {
    program: &'static [u8],
    flag: u8,
    form: ToolFlag,
    /// A word that must come between the program and the flag (`docker login -p`, not
    /// `docker run -p 8080:80`, whose `-p` is a port).
    verb: Option<&'static [u8]>,
}

const fn tool(program: &'static [u8], flag: u8, form: ToolFlag) -> ToolPasswordFlag {
    ToolPasswordFlag {
        program,
        flag,
        form,
        verb: None,
    }
}

const fn tool_verb(program: &'static [u8], verb: &'static [u8], flag: u8) -> ToolPasswordFlag {
    ToolPasswordFlag {
        program,
        flag,
        form: ToolFlag::Either,
        verb: Some(verb),
    }
}

/// Tools whose short flag takes a password, by program name, as their manuals give it.
const TOOL_FLAGS: &[ToolPasswordFlag] = &[
    tool(b"mysql", b'p', ToolFlag::Joined),
    tool(b"mysqldump", b'p', ToolFlag::Joined),
    tool(b"mysqladmin", b'p', ToolFlag::Joined),
    tool(b"mysqlimport", b'p', ToolFlag::Joined),
    tool(b"mysqlcheck", b'p', ToolFlag::Joined),
    tool(b"mysqlshow", b'p', ToolFlag::Joined),
    tool(b"mysqlslap", b'p', ToolFlag::Joined),
    tool(b"mysqlpump", b'p', ToolFlag::Joined),
    tool(b"mariadb", b'p', ToolFlag::Joined),
    tool(b"mariadb-dump", b'p', ToolFlag::Joined),
    tool(b"mariadb-admin", b'p', ToolFlag::Joined),
    tool(b"mariadb-import", b'p', ToolFlag::Joined),
    tool(b"mariadb-check", b'p', ToolFlag::Joined),
    tool(b"mariadb-show", b'p', ToolFlag::Joined),
    tool(b"mariadb-slap", b'p', ToolFlag::Joined),
    tool(b"7z", b'p', ToolFlag::Joined),
    tool(b"mongosh", b'p', ToolFlag::Either),
    tool(b"mongo", b'p', ToolFlag::Either),
    tool(b"mongodump", b'p', ToolFlag::Either),
    tool(b"mongorestore", b'p', ToolFlag::Either),
    tool(b"mongoexport", b'p', ToolFlag::Either),
    tool(b"mongoimport", b'p', ToolFlag::Either),
    tool(b"sqlcmd", b'P', ToolFlag::Either),
    tool(b"bcp", b'P', ToolFlag::Either),
    tool(b"ldapsearch", b'w', ToolFlag::Either),
    tool(b"ldapadd", b'w', ToolFlag::Either),
    tool(b"ldapmodify", b'w', ToolFlag::Either),
    tool(b"ldapdelete", b'w', ToolFlag::Either),
    tool(b"ldapwhoami", b'w', ToolFlag::Either),
    tool(b"ldappasswd", b'w', ToolFlag::Either),
    tool(b"zip", b'P', ToolFlag::Either),
    tool(b"unzip", b'P', ToolFlag::Either),
    tool(b"rabbitmqadmin", b'p', ToolFlag::Either),
    tool(b"smbclient", b'U', ToolFlag::AfterPercent),
    tool(b"rpcclient", b'U', ToolFlag::AfterPercent),
    tool(b"sshpass", b'p', ToolFlag::Either),
    tool(b"redis-cli", b'a', ToolFlag::Separate),
    tool(b"openssl", b'k', ToolFlag::Separate),
    tool_verb(b"docker", b"login", b'p'),
    tool_verb(b"podman", b"login", b'p'),
    tool_verb(b"helm", b"login", b'p'),
    tool(b"curl", b'u', ToolFlag::AfterColon),
    tool(b"curl", b'U', ToolFlag::AfterColon),
];

/// The password a tool's own flag gives, when the `-` at `dash` starts such a flag on a
/// command line of that tool ([`TOOL_FLAGS`]): `mysql -u root -pSECRET`, `redis-cli -a
/// SECRET`, `curl -u admin:SECRET` and `curl --user admin:SECRET`, on a line that names the
/// tool (`tools`, a [`ToolLine`]), so the same letters elsewhere (`ssh -p 2222`, `docker run -p
/// 8080:80`) stay visible. A list of separate strings (`vec!["mysql", "-pSECRET"]` captured
/// through serde) is not read this way, since each string is scanned alone.
fn tool_flag_value_at(text: &[u8], dash: usize, tools: &mut ToolLine) -> Option<LabelledValue> {
    let starts_word = dash == 0 || matches!(text[dash - 1], b' ' | b'\t' | b'"' | b'\'');
    if !starts_word {
        return None;
    }
    let (letter, letter_end) = match text.get(dash + 1..)? {
        [b'-', rest @ ..] if rest.starts_with(b"user") || rest.starts_with(b"proxy-user") => {
            let long = if rest.starts_with(b"user") { 4 } else { 10 };
            let end = dash + 2 + long;
            if !matches!(text.get(end), Some(b' ' | b'=')) {
                return None;
            }
            (if long == 4 { b'u' } else { b'U' }, end)
        }
        [letter, ..] if letter.is_ascii_alphabetic() => (*letter, dash + 2),
        _ => return None,
    };
    tools.read_to(text, dash);
    if let Some(found) = tool_flag_value(text, dash, letter, letter_end, tools) {
        return Some(found);
    }
    // Short flags given together (`curl -sSu admin:…`): the last one takes the next
    // argument. Only a group ending the word is read so, since the first letter of
    // `-pSECRET` is the flag and the rest its value.
    let group_end = run_end(text, letter_end, |b| b.is_ascii_alphabetic());
    // The end of the word, or of its element in a Debug list (its quote escaped or not).
    let ends_word = matches!(
        text.get(group_end),
        None | Some(b' ' | b'\t' | b'"' | b',' | b']' | b'\\')
    );
    if group_end > letter_end && ends_word {
        return tool_flag_value(text, dash, text[group_end - 1], group_end, tools);
    }
    // Or a flag inside the group with its value joined (`curl -suadmin:…`), for the tools
    // whose value shows where the password starts: the first letter that takes such a value
    // takes the rest of the word, as a short-option parser reads it.
    let joined_flag = (letter_end..group_end).find(|&at| {
        matches!(
            tools.form(text[at]),
            Some(ToolFlag::AfterColon | ToolFlag::AfterPercent)
        )
    })?;
    tool_flag_value(text, dash, text[joined_flag], joined_flag + 1, tools)
}

/// The value of the tool flag `-letter` that ends at `letter_end`, given as [`ToolLine`] says
/// this line's tool takes it.
fn tool_flag_value(
    text: &[u8],
    dash: usize,
    letter: u8,
    letter_end: usize,
    tools: &ToolLine,
) -> Option<LabelledValue> {
    if !TOOL_FLAGS.iter().any(|tool| tool.flag == letter) {
        return None;
    }
    let form = tools.form(letter)?;
    let joined = !matches!(
        text.get(letter_end..).unwrap_or_default(),
        [] | [b' ' | b'\t' | b',' | b']', ..]
            // The end of the flag's element in a Debug list, its quote escaped or not.
            | [b'"'] | [b'"', b',' | b']' | b' ', ..]
            | [b'\\', b'"'] | [b'\\', b'"', b',' | b']' | b' ', ..]
    );
    let value_start = match (form, joined) {
        (ToolFlag::Joined, false) | (ToolFlag::Separate, true) => return None,
        (_, true) => letter_end + usize::from(text[letter_end] == b'='),
        // The next argument: the next element of a Debug list (after `", "`, its quotes
        // escaped or not), or after spaces.
        (_, false) => {
            let rest = &text[letter_end..];
            match [&b"\", \""[..], b"\\\", \\\""]
                .into_iter()
                .find(|separator| rest.starts_with(separator))
            {
                Some(separator) => letter_end + separator.len(),
                None => {
                    letter_end
                        + rest
                            .iter()
                            .take_while(|&&b| matches!(b, b' ' | b'\t'))
                            .count()
                }
            }
        }
    };
    // Unquoted, it also ends at a quote (the end of its element in a Debug list) and at the
    // shell's command separators.
    let (start, end) = argument_at(text, value_start, |byte| {
        byte.is_ascii_whitespace() || matches!(byte, b'"' | b'\'' | b'\\' | b';' | b'&' | b'|')
    })?;
    let start = match form {
        ToolFlag::AfterColon => start + text[start..end].iter().position(|&b| b == b':')? + 1,
        ToolFlag::AfterPercent => start + text[start..end].iter().position(|&b| b == b'%')? + 1,
        _ => start,
    };
    (start < end).then_some(LabelledValue {
        label_start: dash + 1,
        label_end: letter_end,
        other_label: None,
        start,
        end,
    })
}

/// Words of a line a directive is read from; a directive's value is within its first few.
const DIRECTIVE_WORDS: usize = 8;

/// A value given by a directive at the start of the line at `line_start`, with no `:` or `=`:
/// - `requirepass …` and `masterauth …` (Redis configuration), `PASS …` a few lines after a
///   `USER` line (FTP, POP3; either in lower case too) and `AUTH …` (Redis, SMTP): the rest
///   of the line;
/// - `tag LOGIN user …` (IMAP), or `a001 login user …` alone on its line: the fourth word;
/// - `machine host login user password …` (`.netrc`, on one line, or `password …` alone on
///   its own line, as the file's multi-line form writes it): the word after `password`;
/// - `ENV NAME …` (a Dockerfile) where `NAME` is sensitive: the rest of the line;
/// - the line after a SASL `LOGIN` password prompt (`334 UGFzc3dvcmQ6`): its first word.
///
/// The directives are matched exactly (`PASSED` or `password reset requested` are not), all
/// but the last judged as `password`. A line starts after a line break or after one written
/// as an escape (`\n` in Debug or JSON: a transcript or a configuration file held in a field
/// and captured with `?`), and ends at the next of either.
fn directive_at<R>(
    text: &[u8],
    line_start: usize,
    is_sensitive: &mut impl FnMut(&str) -> Option<R>,
) -> Option<(LabelledValue, R)> {
    if let Some(answer) = sasl_password_line(text, line_start) {
        return is_sensitive("password").map(|reason| (answer, reason));
    }
    // Every text is asked this at its start, so its first byte, then its first word, decide
    // before the line is read: most texts begin with no directive.
    let (first_start, first_end) = first_word(text, line_start)?;
    let first = &text[first_start..first_end];
    // IMAP's `LOGIN`, or `login` after a tag such as `a001` (the tag's digits tell the command
    // from prose: `2 login attempts failed`).
    let upper_login = text[first_end..].starts_with(b" LOGIN ");
    let lower_login = text[first_end..].starts_with(b" login ") && is_imap_tag(first);
    let imap_login = upper_login || lower_login;
    let known = matches!(
        first,
        b"requirepass"
            | b"masterauth"
            | b"AUTH"
            | b"PASS"
            | b"pass"
            | b"ENV"
            | b"machine"
            | b"default"
            | b"password"
            | b"passwd"
    );
    if !known && !imap_login {
        return None;
    }
    let line_end = line_end_from(text, line_start);
    let line_end = if line_end > line_start && text[line_end - 1] == b'\r' {
        line_end - 1
    } else {
        line_end
    };
    let mut words = [(0usize, 0usize); DIRECTIVE_WORDS];
    let mut count = 0;
    let mut at = first_start;
    while count < DIRECTIVE_WORDS && at < line_end {
        let start = at;
        while at < line_end && !matches!(text[at], b' ' | b'\t') {
            at += 1;
        }
        words[count] = (start, at);
        count += 1;
        while at < line_end && matches!(text[at], b' ' | b'\t') {
            at += 1;
        }
    }
    let words = &words[..count];
    let rest_from = |i: usize| words.get(i).map(|&(start, _)| (start, line_end));
    let (label, (start, end), name) = match first {
        _ if upper_login && count >= 4 => (words[1], words[3], None),
        _ if lower_login && count == 4 => (words[1], words[3], None),
        b"requirepass" | b"masterauth" | b"AUTH" => (words[0], rest_from(1)?, None),
        // FTP's and POP3's `PASS` follows `USER` (a reply or two may come between); a test
        // runner's `PASS` line does not.
        b"PASS" | b"pass" if an_earlier_line_starts_with(text, line_start, b"USER ") => {
            (words[0], rest_from(1)?, None)
        }
        b"ENV" if count >= 3 => (words[1], rest_from(2)?, Some(words[1])),
        b"machine" | b"default" | b"password" | b"passwd" => {
            let password = words
                .iter()
                .position(|&(start, end)| matches!(&text[start..end], b"password" | b"passwd"))?;
            let netrc = if password == 0 {
                count == 2
            } else {
                words[..password]
                    .iter()
                    .any(|&(s, e)| &text[s..e] == b"login")
            };
            if !netrc {
                return None;
            }
            (words[password], *words.get(password + 1)?, None)
        }
        _ => return None,
    };
    let reason = match name {
        Some((name_start, name_end)) => {
            is_sensitive(std::str::from_utf8(&text[name_start..name_end]).ok()?)?
        }
        None => is_sensitive("password")?,
    };
    let found = LabelledValue {
        label_start: label.0,
        label_end: label.1,
        other_label: None,
        start,
        end,
    };
    (start < end).then_some((found, reason))
}

/// A `.pgpass` entry one of whose `:` is at `colon`: its host starts a line, a quoted string
/// (`Record { note: "db:5432:app:ada:…" }` in Debug output) or follows an escaped line break
/// (`"# pgpass\n*:*:*:ada:…"`). Asked at each `:` the scanner stops at, so a text with none
/// pays nothing.
fn pgpass_entry_around<R>(
    text: &[u8],
    colon: usize,
    is_sensitive: &mut impl FnMut(&str) -> Option<R>,
) -> Option<(LabelledValue, R)> {
    // The scanner meets an entry's first `:` first, the one before its port.
    if !matches!(text.get(colon + 1), Some(b'0'..=b'9' | b'*')) {
        return None;
    }
    let mut start = colon;
    while start > 0 && colon - start < MAX_LABEL_LEN {
        let before = text[start - 1];
        let escaped_line_break = before == b'n' && start >= 2 && text[start - 2] == b'\\';
        if escaped_line_break || matches!(before, b'"' | b'\'' | b' ' | b'\t' | b'\n' | b'\r') {
            break;
        }
        start -= 1;
    }
    if start == colon || (start > 0 && matches!(text[start - 1], b' ' | b'\t' | b'\'')) {
        return None;
    }
    pgpass_entry_at(text, start, is_sensitive)
}

/// A PostgreSQL `.pgpass` entry, `host:port:database:user:password`, starting at
/// `line_start`: the password is the fifth field, to the line's end, an escaped line break, or
/// the closing quote of an entry that began after one (judged as `password`). The host must
/// hold a letter, a dot or be `*`, and the port be digits or `*`, and no field before the
/// password a space, so that times (`12:30:45`) and log prefixes (`ERROR:root:…`) are not
/// taken for one.
fn pgpass_entry_at<R>(
    text: &[u8],
    line_start: usize,
    is_sensitive: &mut impl FnMut(&str) -> Option<R>,
) -> Option<(LabelledValue, R)> {
    const FIELDS_BEFORE_PASSWORD: usize = 4;
    let mut colons = [0usize; FIELDS_BEFORE_PASSWORD];
    let mut found = 0;
    let mut at = line_start;
    while found < FIELDS_BEFORE_PASSWORD {
        match *text.get(at)? {
            b'\\' => at += 1,
            b':' => {
                colons[found] = at;
                found += 1;
            }
            b' ' | b'\t' | b'\n' | b'\r' => return None,
            _ => {}
        }
        at += 1;
    }
    let host = &text[line_start..colons[0]];
    let port = &text[colons[0] + 1..colons[1]];
    let plausible = (host == b"*"
        || host
            .iter()
            .any(|&byte| byte.is_ascii_alphabetic() || byte == b'.'))
        && (port == b"*" || (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit))
        && colons.windows(2).all(|pair| pair[1] > pair[0] + 1);
    if !plausible {
        return None;
    }
    let start = colons[FIELDS_BEFORE_PASSWORD - 1] + 1;
    let quoted = line_start > 0 && text[line_start - 1] == b'"';
    let mut end = start;
    while let Some(&byte) = text.get(end) {
        let ends = match byte {
            b'\n' | b'\r' => true,
            b'\\' => text.get(end + 1) == Some(&b'n'),
            b'"' => quoted && text[end - 1] != b'\\',
            _ => false,
        };
        if ends {
            break;
        }
        end += 1;
    }
    let reason = is_sensitive("password")?;
    (start < end).then_some((
        LabelledValue {
            label_start: line_start,
            label_end: colons[0],
            other_label: None,
            start,
            end,
        },
        reason,
    ))
}

/// The first word of the line at `line_start`: after spaces, tabs, and bytes that are not
/// ASCII (U+FFFD where bytes were not UTF-8: binary framing before a transcript), up to the
/// next space, tab or line end; `None` when it is longer than any directive's.
fn first_word(text: &[u8], line_start: usize) -> Option<(usize, usize)> {
    let start = line_start
        + text[line_start..]
            .iter()
            .position(|&b| !matches!(b, b' ' | b'\t') && b < 0x80)?;
    // A directive's first letter, or an IMAP tag with room for ` LOGIN user password` after it.
    let first = text[start];
    let directive = matches!(first, b'r' | b'm' | b'A' | b'P' | b'E' | b'd' | b'p');
    let imap_tag = first.is_ascii_alphanumeric() && text.len() - start >= MIN_IMAP_LOGIN;
    if !directive && !imap_tag {
        return None;
    }
    let word = &text[start..text.len().min(start + LONGEST_DIRECTIVE_WORD + 1)];
    let len = word
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(word.len());
    (len > 0 && len <= LONGEST_DIRECTIVE_WORD && text[start] != b'\n')
        .then_some((start, start + len))
}

/// The answer on the line at `line_start` to a SASL `LOGIN` exchange's password prompt
/// (`334 UGFzc3dvcmQ6`, base64 of `Password:`, as SMTP transcripts show it): the line's first
/// word, the password in base64.
fn sasl_password_line(text: &[u8], line_start: usize) -> Option<LabelledValue> {
    const PROMPTS: [&[u8]; 2] = [b"UGFzc3dvcmQ6", b"cGFzc3dvcmQ6"];
    let mut prompt_end = line_break_before(text, line_start)?;
    if prompt_end > 0 && text[prompt_end - 1] == b'\r' {
        prompt_end -= 1;
    } else if text[..prompt_end].ends_with(b"\\r") {
        prompt_end -= 2;
    }
    let before = &text[..prompt_end];
    if !PROMPTS.iter().any(|prompt| before.ends_with(prompt)) {
        return None;
    }
    let start = run_end(text, line_start, |b| b == b' ' || b == b'\t');
    let end = run_end(text, start, |b| {
        !b.is_ascii_whitespace() && !matches!(b, b'"' | b'\'' | b'\\')
    });
    (start < end).then_some(LabelledValue {
        label_start: prompt_end - PROMPTS[0].len(),
        label_end: prompt_end,
        other_label: None,
        start,
        end,
    })
}

/// Whether `word` reads as an IMAP command's tag written as clients write one: letters, then
/// digits (`a001`, `A1`, `tag12`).
fn is_imap_tag(word: &[u8]) -> bool {
    let letters = word.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let digits = &word[letters..];
    letters > 0 && !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// The longest first word [`directive_at`] reads: `requirepass`, or an IMAP command's tag.
const LONGEST_DIRECTIVE_WORD: usize = 16;
/// The shortest IMAP login with its tag: `a LOGIN u p`.
const MIN_IMAP_LOGIN: usize = 11;

/// Whether one of the [`TRANSCRIPT_LOOK_BACK`] lines before the one at `line_start` begins
/// with `prefix`, in any case: a server's reply (`331 Password required`) may stand between a
/// client's `USER` and its `PASS`.
fn an_earlier_line_starts_with(text: &[u8], line_start: usize, prefix: &[u8]) -> bool {
    let mut start = line_start;
    for _ in 0..TRANSCRIPT_LOOK_BACK {
        let Some(previous_end) = line_break_before(text, start) else {
            return false;
        };
        let window = previous_end.saturating_sub(MAX_TRANSCRIPT_LINE);
        let previous_start = (window..previous_end)
            .rev()
            .find(|&at| text[at] == b'\n' || line_break_before(text, at + 1).is_some())
            .map_or(window, |end_of_break| end_of_break + 1);
        let line = &text[previous_start..previous_end];
        // The line, or a string that opens on it (the first line of a transcript held in a
        // field and Debug-printed: `Session { log: "USER ada\nPASS …" }`).
        let in_string = line
            .iter()
            .rposition(|&b| b == b'"')
            .map(|quote| &line[quote + 1..]);
        let starts_with = |line: &[u8]| {
            line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        if starts_with(line) || in_string.is_some_and(starts_with) {
            return true;
        }
        start = previous_start;
    }
    false
}

/// Where the line break that ends just before `line_start` begins: a line break, or one
/// written as an escape (`\n`).
fn line_break_before(text: &[u8], line_start: usize) -> Option<usize> {
    let before = line_start.checked_sub(1)?;
    match text[before] {
        b'\n' => Some(before),
        b'n' if before > 0 && text[before - 1] == b'\\' => Some(before - 1),
        _ => None,
    }
}

/// Lines before a `PASS` searched for its `USER`.
const TRANSCRIPT_LOOK_BACK: usize = 3;
/// Bytes of each such line read back to find its start.
const MAX_TRANSCRIPT_LINE: usize = 512;

/// Bytes before where a scan starts that are read for the tools its line names (a scan from
/// the text's start reads its whole lines): a command line's program and verb come well
/// within them.
const TOOL_LOOK_BACK: usize = 256;

/// The tools a command line has named so far, read word by word as the scan reaches each of
/// its flags, so that a line of many flags is read once: a flag gives a password when a tool
/// named before it on its line takes one that way ([`TOOL_FLAGS`]), its verb after it where
/// it needs one. The tool's name is a whole word or the end of a path (`/usr/bin/openssl`);
/// looking for the name rather than taking the line's first word reads the same command
/// wrapped in Debug output (`Job { cmd: "curl -u …" }`, `["mysqldump", "-p…"]`). A shell
/// separator (`;`, `|`, `&`) starts another command, which names its tools anew.
struct ToolLine {
    /// Where the words not yet read begin.
    read_to: usize,
    /// Whether the line's start before `read_to` is still to be found: looked for only when
    /// a flag is met, since most scans meet none and a scan that masks many values starts
    /// again after each.
    line_start_unknown: bool,
    /// A bit per [`TOOL_FLAGS`] entry whose program was named.
    named: u64,
    /// A bit per entry whose verb came after its program.
    verbs: u64,
}

const _: () = assert!(TOOL_FLAGS.len() <= 64);

/// By first byte, the lengths of the programs and verbs in [`TOOL_FLAGS`] (a bit per length):
/// most words of a command line are passed over on two loads instead of being compared with
/// every tool's name.
const TOOL_WORD_LENGTHS: [u16; 128] = {
    let mut lengths = [0u16; 128];
    let mut index = 0;
    while index < TOOL_FLAGS.len() {
        let tool = &TOOL_FLAGS[index];
        assert!(tool.program.len() < 16 && tool.program[0] < 128);
        lengths[tool.program[0] as usize] |= 1 << tool.program.len();
        if let Some(verb) = tool.verb {
            assert!(verb.len() < 16 && verb[0] < 128);
            lengths[verb[0] as usize] |= 1 << verb.len();
        }
        index += 1;
    }
    lengths
};

/// Whether `word` could be a program or verb of [`TOOL_FLAGS`].
fn could_name_a_tool(word: &[u8]) -> bool {
    match word.first() {
        Some(&first) if first < 128 && word.len() < 16 => {
            TOOL_WORD_LENGTHS[usize::from(first)] & (1 << word.len()) != 0
        }
        _ => false,
    }
}

impl ToolLine {
    /// The line a scan from `from` is on, read from its start or from [`TOOL_LOOK_BACK`]
    /// bytes before `from`, whichever is later.
    fn before(from: usize) -> ToolLine {
        ToolLine {
            line_start_unknown: true,
            ..ToolLine::starting_at(from)
        }
    }

    fn starting_at(start: usize) -> ToolLine {
        ToolLine {
            read_to: start,
            line_start_unknown: false,
            named: 0,
            verbs: 0,
        }
    }

    /// Reads the words up to `to`.
    fn read_to(&mut self, text: &[u8], to: usize) {
        if std::mem::take(&mut self.line_start_unknown) {
            let from = self.read_to;
            let window = from.saturating_sub(TOOL_LOOK_BACK);
            self.read_to = text[window..from]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(window, |newline| window + newline + 1);
        }
        let mut at = self.read_to;
        while at < to {
            let byte = text[at];
            if matches!(byte, b';' | b'|' | b'&') {
                (self.named, self.verbs) = (0, 0);
            }
            if !is_label_byte(byte) {
                at += 1;
                continue;
            }
            let start = at;
            while at < to && is_label_byte(text[at]) {
                at += 1;
            }
            self.word(&text[start..at]);
        }
        self.read_to = self.read_to.max(to);
    }

    fn word(&mut self, word: &[u8]) {
        if !could_name_a_tool(word) {
            return;
        }
        for (index, tool) in TOOL_FLAGS.iter().enumerate() {
            let bit = 1 << index;
            if tool.program == word {
                self.named |= bit;
            } else if tool.verb == Some(word) && self.named & bit != 0 {
                self.verbs |= bit;
            }
        }
    }

    /// How the flag `-letter` gives a password on this line, if it does.
    fn form(&self, letter: u8) -> Option<ToolFlag> {
        TOOL_FLAGS.iter().enumerate().find_map(|(index, tool)| {
            let bit = 1 << index;
            let applies = tool.flag == letter
                && self.named & bit != 0
                && (tool.verb.is_none() || self.verbs & bit != 0);
            applies.then_some(tool.form)
        })
    }
}

/// A quoted value after a sensitive word and a space, as SQL and prose write a password:
/// `ALTER USER app WITH PASSWORD '…'`, `the token 'abc' was refused`, `IDENTIFIED BY '…'`
/// (judged as `password`, also after MySQL's `IDENTIFIED WITH plugin`, the plugin's name
/// quoted or not), and PostgreSQL's escape strings (`PASSWORD E'…'`). In double quotes only
/// SQL's forms count (`IDENTIFIED BY "…"`, as MySQL and Oracle write it, and `PASSWORD "…"`),
/// also escaped inside a Debug-printed string (`\"…\"`): prose quotes names in double quotes
/// (`unexpected token "}"`, `the secret "db-creds"`). The quote at `quote` must follow a
/// space or a tab (or ` E`), so the closing quote of an earlier value (`name = 'ada'`) is not
/// taken for an opening one.
fn quoted_after_word_at<R>(
    text: &[u8],
    quote: usize,
    is_sensitive: &mut impl FnMut(&str) -> Option<R>,
) -> Option<(LabelledValue, R)> {
    let is_space = |byte: u8| byte == b' ' || byte == b'\t';
    let quote_byte = text[quote];
    let escaped = quote_byte == b'"' && quote > 0 && text[quote - 1] == b'\\';
    let opening = if escaped { quote - 1 } else { quote };
    let word_end = match opening.checked_sub(1).map(|before| text[before]) {
        Some(byte) if is_space(byte) => opening - 1,
        Some(b'E' | b'e') if quote_byte == b'\'' => {
            quote.checked_sub(2).filter(|&i| is_space(text[i]))?
        }
        _ => return None,
    };
    let word_at = |end: usize| {
        let start = end
            - text[..end]
                .iter()
                .rev()
                .take(MAX_LABEL_LEN)
                .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_')
                .count();
        (start < end).then_some(start)
    };
    // A word, or a quoted name (MySQL's `'caching_sha2_password'`), ending at `end`: its
    // start and its text without the quotes.
    let token_at = |end: usize| -> Option<(usize, &[u8])> {
        match text[..end].last() {
            Some(&closing @ (b'\'' | b'"' | b'`')) => {
                let inside_end = end - 1;
                let window = inside_end.saturating_sub(MAX_LABEL_LEN);
                let opening = (window..inside_end).rev().find(|&i| text[i] == closing)?;
                Some((opening, &text[opening + 1..inside_end]))
            }
            _ => word_at(end).map(|start| (start, &text[start..end])),
        }
    };
    let word_start = word_at(word_end)?;
    let word = &text[word_start..word_end];
    let reason = if word.eq_ignore_ascii_case(b"by") {
        // `IDENTIFIED BY`, or MySQL's `IDENTIFIED WITH plugin BY`.
        let mut words_before = std::iter::successors(Some((word_start, word)), |&(start, _)| {
            let end = start.checked_sub(1).filter(|&i| is_space(text[i]))?;
            token_at(end)
        })
        .skip(1)
        .map(|(_, word)| word);
        let identified = match words_before.next()? {
            word if word.eq_ignore_ascii_case(b"identified") => true,
            _ => {
                words_before.next()?.eq_ignore_ascii_case(b"with")
                    && words_before.next()?.eq_ignore_ascii_case(b"identified")
            }
        };
        if !identified {
            return None;
        }
        is_sensitive("password")?
    } else if quote_byte == b'"' {
        let sql_password = word.eq_ignore_ascii_case(b"password");
        if !sql_password {
            return None;
        }
        is_sensitive("password")?
    } else {
        is_sensitive(std::str::from_utf8(word).ok()?)?
    };
    let inside = quote + 1;
    let end = if escaped {
        escaped_closing_quote(text, inside)
    } else {
        closing_quote(text, inside, quote_byte)
    };
    let end = end.unwrap_or(text.len());
    let found = LabelledValue {
        label_start: word_start,
        label_end: word_end,
        other_label: None,
        start: inside,
        end,
    };
    (inside < end).then_some((found, reason))
}

/// The command-line argument at `start`: inside its quotes (to the closing one, or the end of
/// the text; quotes escaped as Debug escapes them count), or up to the first byte that `ends`
/// it; `None` when it is another flag.
fn argument_at(text: &[u8], start: usize, ends: impl Fn(u8) -> bool) -> Option<(usize, usize)> {
    match *text.get(start)? {
        b'-' => None,
        // Quoted inside a Debug-printed string: `\"…\"`.
        b'\\' if text.get(start + 1) == Some(&b'"') => {
            let inside = start + 2;
            let end = escaped_closing_quote(text, inside).unwrap_or(text.len());
            Some((inside, end))
        }
        quote @ (b'"' | b'\'') => {
            let inside = start + 1;
            Some((
                inside,
                closing_quote(text, inside, quote).unwrap_or(text.len()),
            ))
        }
        _ => Some((
            start,
            start
                + text[start..]
                    .iter()
                    .position(|&byte| ends(byte))
                    .unwrap_or(text.len() - start),
        )),
    }
}

/// Where the label `text[start..end]` really starts when it seems to begin with the tail of an
/// escape sequence: `\npass` (Debug and JSON's line break), `\u0026session` (JSON's `&`),
/// `%26session` (a form's `&`). `None` when it does not.
fn after_escape(text: &[u8], start: usize, end: usize) -> Option<usize> {
    let before = start.checked_sub(1).map(|i| text[i])?;
    let hex = |from: usize, count: usize| {
        text.get(from..from + count)
            .is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit))
    };
    let skip = match (before, text[start]) {
        (b'\\', b'n' | b't' | b'r' | b'0' | b'f' | b'v' | b'b') => 1,
        (b'\\', b'u') if hex(start + 1, 4) => 5,
        (b'\\', b'x') if hex(start + 1, 2) => 3,
        (b'%', _) if hex(start, 2) => 2,
        _ => return None,
    };
    (start + skip < end).then_some(start + skip)
}

/// The field inside a bracketed form name ending at `end` (`user[password]`, or encoded,
/// `user%5Bpassword%5D`), as `(start, end)`.
fn bracketed_field(text: &[u8], end: usize) -> Option<(usize, usize)> {
    let (inner_end, open_len) = if end > 0 && text[end - 1] == b']' {
        (end - 1, 1)
    } else if end >= 3 && text[end - 3..end].eq_ignore_ascii_case(b"%5D") {
        (end - 3, 3)
    } else {
        return None;
    };
    let opens_at = |at: usize| match open_len {
        1 => at >= 1 && text[at - 1] == b'[',
        _ => at >= 3 && text[at - 3..at].eq_ignore_ascii_case(b"%5B"),
    };
    let mut inner_start = inner_end;
    while !opens_at(inner_start)
        && inner_start > 0
        && inner_end - inner_start < MAX_LABEL_LEN
        && is_label_byte(text[inner_start - 1])
    {
        inner_start -= 1;
    }
    let opens = opens_at(inner_start);
    (opens && inner_start < inner_end).then_some((inner_start, inner_end))
}

/// Whether `found` is a cookie header whose value is a list of `name=value` pairs.
fn is_cookie_list(text: &[u8], found: &LabelledValue) -> bool {
    let label = &text[found.label_start..found.label_end];
    let names_cookies = label
        .windows(6)
        .any(|window| window.eq_ignore_ascii_case(b"cookie"));
    names_cookies && text[found.start..found.end].contains(&b'=')
}

/// The attributes and text of the XML element whose `<` is at `open`, labelled by its tag
/// name (without a namespace prefix).
fn xml_element_at(text: &[u8], open: usize) -> Option<LabelledValue> {
    let name_start = open + 1;
    let mut name_end = name_start;
    while text.get(name_end).is_some_and(|&byte| {
        byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':')
    }) {
        name_end += 1;
    }
    if name_end == name_start || !text[name_start].is_ascii_alphabetic() {
        return None;
    }
    let label_start = text[name_start..name_end]
        .iter()
        .rposition(|&byte| byte == b':')
        .map_or(name_start, |colon| name_start + colon + 1);
    let tag_end = text[name_end..].iter().position(|&byte| byte == b'>')? + name_end;
    let self_closing = text[tag_end - 1] == b'/';
    let end = if self_closing {
        tag_end - 1
    } else {
        text[tag_end..]
            .iter()
            .position(|&byte| byte == b'<')
            .map_or(text.len(), |offset| tag_end + offset)
    };
    (name_end < end && label_start < name_end).then_some(LabelledValue {
        label_start,
        label_end: name_end,
        other_label: None,
        start: name_end,
        end,
    })
}

/// The bytes the scanner looks around: `:` `=` (a label's), `<` (an XML element's), `(` (a
/// typed value's), `-` (a flag's), a quote (a value after a sensitive word), `\\` (an escaped
/// line break) and a line break (a directive's line).
const STOP_BYTES: [u8; 9] = [b':', b'=', b'<', b'(', b'-', b'\'', b'"', b'\\', b'\n'];

/// [`STOP_BYTES`] as a table, for the bytes looked at one by one.
const IS_STOP_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < STOP_BYTES.len() {
        table[STOP_BYTES[i] as usize] = true;
        i += 1;
    }
    table
};

/// Position of the first of [`STOP_BYTES`] at or after `from`. Most texts have few, so the
/// search tests eight bytes at a time for any of them before looking at single bytes.
fn find_assignment(text: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut at = from;
    while let Some(chunk) = text.get(at..at + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_ne_bytes(bytes);
        // A byte's high bit is set where it equals a stop byte (and may be set after one):
        // the classic test for a zero byte, of the word XOR each stop byte, all at once.
        let equal_to_some_stop = STOP_BYTES.iter().fold(0, |found, &stop| {
            let differences = word ^ u64::from_ne_bytes([stop; 8]);
            found | (differences.wrapping_sub(ONES) & !differences)
        });
        if equal_to_some_stop & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    let offset = text
        .get(at..)?
        .iter()
        .position(|&byte| IS_STOP_BYTE[usize::from(byte)])?;
    Some(at + offset)
}

/// Whether the word at `label_start` is an AWS ARN's resource type
/// (`arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db`): it names a kind of
/// resource, and what follows it is the resource's name, not a value it labels.
fn in_arn_resource(text: &[u8], label_start: usize) -> bool {
    // Every AWS partition's name starts so: `aws`, `aws-cn`, `aws-us-gov`, `aws-iso`.
    const ARN: &[u8] = b"arn:aws";
    const LONGEST_ARN_PREFIX: usize = 256;
    if label_start == 0 || text[label_start - 1] != b':' {
        return false;
    }
    let token_start = (label_start.saturating_sub(LONGEST_ARN_PREFIX)..label_start)
        .rev()
        .find(|&at| matches!(text[at], b' ' | b'\t' | b'\n' | b'"' | b'\'' | b'(' | b'['))
        .map_or(label_start.saturating_sub(LONGEST_ARN_PREFIX), |at| at + 1);
    text[token_start..label_start].starts_with(ARN)
}

/// Whether `label` is a run of base64 or hex rather than a name: longer than
/// [`LONGEST_UNSEPARATED_NAME`], with a digit and no separator between words. A base64 run's
/// `=` padding looks like an assignment, and judging such a "name" (split into dozens of
/// one-letter words) cost the scan of a text of base64 runs several times its usual time a byte.
fn reads_as_encoded(label: &[u8]) -> bool {
    label.len() > LONGEST_UNSEPARATED_NAME
        && label.iter().any(u8::is_ascii_digit)
        && !label
            .iter()
            .any(|&b| matches!(b, b'_' | b'-' | b'.' | b'$' | b'@'))
}

/// The longest label of letters and digits alone judged as a name (`ClientSecretForProd…`).
const LONGEST_UNSEPARATED_NAME: usize = 64;

/// The label before the `:` or `=` at `assign`, found without looking at its value: most
/// labels in a text are judged and passed over, and only a label that names a secret, or a
/// name/value pair, needs its value's extent, which may run to the end of the text (a label
/// whose value nothing but the text's end ends: finding each one's extent would read the rest
/// of the text for every label).
#[derive(Debug, Clone, Copy)]
struct Label {
    label_start: usize,
    label_end: usize,
    other_label: Option<(usize, usize)>,
    assign: usize,
}

impl Label {
    /// The value after the label, whose extent is found here.
    fn value(self, text: &[u8]) -> Option<LabelledValue> {
        let Label {
            label_start,
            label_end,
            other_label,
            ..
        } = self;
        let value_start = self.value_start(text);
        let (start, end) = value_at(text, self, value_start)?;
        #[cfg(test)]
        tests::VALUE_BYTES_FOUND.with(|found| found.set(found.get() + (end - value_start)));
        Some(LabelledValue {
            label_start,
            label_end,
            other_label,
            start,
            end,
        })
    }

    /// Where the value begins: after the `:` or `=` (or `=>`) and any spaces.
    fn value_start(self, text: &[u8]) -> usize {
        let mut value_start = self.assign + 1;
        if text[self.assign] == b'=' && text.get(self.assign + 1) == Some(&b'>') {
            value_start += 1;
        }
        while text.get(value_start) == Some(&b' ') {
            value_start += 1;
        }
        value_start
    }

    /// The value of a `name` or `key` label when it is a name ([`given_name`] then reads
    /// the name out of it): label bytes and `/` (a path, whose last part is the name), bare or
    /// in quotes (escaped or not), and nothing else up to where the value ends. Read only that
    /// far, so that a text of many `key:` labels whose values nothing ends (`key: a1 key: b2
    /// …`) is not read to its end for each; a value that goes on (a sentence, a path with a
    /// space) gives no name, as it gave none when read whole.
    fn given_name(self, text: &[u8]) -> Option<LabelledValue> {
        let value_start = self.value_start(text);
        let quote = opening_quote(text, value_start);
        if quote.is_none() && text.get(value_start) == Some(&b'\\') {
            return None;
        }
        let start = value_start + quote.map_or(0, <[u8]>::len);
        let end = start
            + text[start..]
                .iter()
                .take(MAX_GIVEN_NAME)
                .take_while(|&&byte| is_label_byte(byte) || byte == b'/')
                .count();
        let rest = &text[end..];
        let ends_here = match quote {
            Some(quote) => rest.starts_with(quote),
            None => match rest.first() {
                None | Some(b',' | b';' | b'&' | b'\n' | b'\r' | b')' | b']' | b'}') => true,
                // After `=` a space ends the value on a line of several assignments; after
                // `:`, or on a line of one, the value goes on past it.
                Some(b' ' | b'\t') => {
                    text[self.assign] == b'='
                        && !one_assignment_line(text, self.label_start, value_start)
                }
                Some(_) => false,
            },
        };
        (ends_here && start < end).then_some(LabelledValue {
            label_start: self.label_start,
            label_end: self.label_end,
            other_label: self.other_label,
            start,
            end,
        })
    }
}

/// The longest name given as a value ([`Label::given_name`]): a path with its name at the end.
const MAX_GIVEN_NAME: usize = 2 * MAX_LABEL_LEN;

/// The label before the `:` or `=` at `assign`, if there is one.
fn label_at(text: &[u8], assign: usize) -> Option<Label> {
    let after = text.get(assign + 1).copied();
    // `a::b` paths and `a == b` comparisons, seen from either of their two bytes.
    if after == Some(text[assign]) || (assign > 0 && text[assign - 1] == text[assign]) {
        return None;
    }
    let mut label_end = assign;
    while label_end > 0 && text[label_end - 1] == b' ' {
        label_end -= 1;
    }
    if label_end > 0 && matches!(text[label_end - 1], b'"' | b'\'') {
        label_end -= 1;
        while label_end > 0 && text[label_end - 1] == b'\\' {
            label_end -= 1;
        }
    }
    let bracketed = bracketed_field(text, label_end);
    if let Some((inner_start, _)) = bracketed {
        // The form name's outer part (`user` of `user[password]`) is the label too.
        label_end = inner_start - if text[inner_start - 1] == b'[' { 1 } else { 3 };
    }
    let mut label_start = label_end;
    while label_start > 0
        && label_end - label_start < MAX_LABEL_LEN
        && is_label_byte(text[label_start - 1])
    {
        label_start -= 1;
    }
    // A command line's `--password=x`: the flag's dashes are not part of its name.
    let past_dashes = |mut at: usize| {
        while at < label_end && text[at] == b'-' {
            at += 1;
        }
        at
    };
    if text[assign] == b':' && in_arn_resource(text, label_start) {
        return None;
    }
    let wider_start = past_dashes(wider_label_start(text, label_start, label_end));
    label_start = past_dashes(label_start);
    // A label in another script is judged whole, and its ASCII end as before (`获取session`
    // is also `session`); one with no ASCII end is the label.
    let wider = (wider_start < label_start).then_some((wider_start, label_end));
    if label_start == label_end
        && let Some((start, _)) = wider
    {
        label_start = start;
    }
    if label_start == label_end && bracketed.is_none() {
        return None;
    }
    if reads_as_encoded(&text[label_start..label_end]) {
        return None;
    }
    let other_label = bracketed
        .or_else(|| after_escape(text, label_start, label_end).map(|start| (start, label_end)))
        .or(wider.filter(|&(start, _)| start != label_start));
    Some(Label {
        label_start,
        label_end,
        other_label,
        assign,
    })
}

/// Where the value of `label` that begins at `value_start` starts and ends.
fn value_at(text: &[u8], label: Label, value_start: usize) -> Option<(usize, usize)> {
    let Label {
        label_start,
        assign,
        ..
    } = label;
    if text[assign] == b':'
        && let Some(block) = indented_block(text, label_start, value_start)
    {
        return Some(block);
    }
    if let Some(quotes @ (b"\"\"\"" | b"'''")) = text.get(value_start..value_start + 3) {
        // A multi-line string (TOML, Python): to the same three quotes.
        let inside = value_start + 3;
        let close = text[inside..]
            .windows(3)
            .position(|window| window == quotes)
            .map_or(text.len(), |offset| inside + offset);
        return (inside < close).then_some((inside, close));
    }
    if run_end(text, value_start, |byte| byte == b'\\') == text.len() {
        return None;
    }
    let (start, end) = match opening_quote(text, value_start) {
        Some(&[quote]) => {
            let inside = value_start + 1;
            (
                inside,
                closing_quote(text, inside, quote).unwrap_or(text.len()),
            )
        }
        Some(delimiter) => {
            // An escaped quote (`\"x\"` in Debug output of a JSON string): the value ends at
            // the same escaped quote.
            let inside = value_start + delimiter.len();
            let close = text[inside..]
                .windows(delimiter.len())
                .position(|window| window == delimiter)
                .map_or(text.len(), |offset| inside + offset);
            (inside, close)
        }
        None => {
            let space_ends =
                text[assign] == b'=' && !one_assignment_line(text, label_start, value_start);
            (
                value_start,
                unquoted_value_end(text, value_start, space_ends),
            )
        }
    };
    (start < end).then_some((start, end))
}

/// The quote that opens the value at `value_start`, with the backslashes that escape it (`"`,
/// or `\"` inside a Debug-printed string): what the value ends at.
fn opening_quote(text: &[u8], value_start: usize) -> Option<&[u8]> {
    let quote = run_end(text, value_start, |byte| byte == b'\\');
    matches!(text.get(quote), Some(b'"' | b'\'')).then(|| &text[value_start..=quote])
}

/// A YAML value on the lines after its label: a block scalar (`password: |` or `key: >-`, then
/// indented lines) or a value or mapping that starts on the next line (`password:` then an
/// indented line). `value_start` is where the value would begin on the label's line; the
/// block is every following line indented deeper than the label, blank lines included, as
/// `(start, end)`. `None` when the label's line holds a value or no indented line follows.
fn indented_block(text: &[u8], label_start: usize, value_start: usize) -> Option<(usize, usize)> {
    // Most labels hold their value on their own line: answered from one byte, so a long text
    // of `a: 1, b: 2` is not searched for a line break at every label.
    if !matches!(text.get(value_start), Some(b'\n' | b'\r' | b'|' | b'>')) {
        return None;
    }
    let indicator_end = (value_start + 8).min(text.len());
    let line_end = value_start
        + text[value_start..indicator_end]
            .iter()
            .position(|&byte| byte == b'\n')?;
    let rest = &text[value_start..line_end];
    let indicator = match rest.first() {
        Some(b'|' | b'>') => &rest[1..],
        _ => rest,
    };
    if !indicator
        .iter()
        .all(|&byte| matches!(byte, b'-' | b'+' | b'0'..=b'9' | b' ' | b'\t' | b'\r'))
    {
        return None;
    }
    let line_start = text[..label_start]
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let label_column = label_start - line_start;
    let block_start = line_end + 1;
    let mut end = block_start;
    let mut at = block_start;
    while at < text.len() {
        let next_line = text[at..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map_or(text.len(), |offset| at + offset);
        let line = &text[at..next_line];
        let indent = line
            .iter()
            .take_while(|&&byte| byte == b' ' || byte == b'\t')
            .count();
        let blank = line[indent..].iter().all(|&byte| byte == b'\r');
        if !blank && indent <= label_column {
            break;
        }
        if !blank {
            end = next_line;
        }
        at = next_line + 1;
    }
    (block_start < end).then_some((block_start, end))
}

/// Position of the escaped quote (`\"`, as Debug writes a quote inside a string) closing a
/// string whose content starts at `from`: the position of its backslash.
fn escaped_closing_quote(text: &[u8], from: usize) -> Option<usize> {
    text.get(from..)?
        .windows(2)
        .position(|pair| pair == b"\\\"")
        .map(|offset| from + offset)
}

/// Where the line after the line break escaped at `backslash` starts (`\n`, as Debug and JSON
/// write a line break inside a string), if one is escaped there.
fn escaped_line_break_at(text: &[u8], backslash: usize) -> Option<usize> {
    (text.get(backslash + 1) == Some(&b'n')).then_some(backslash + 2)
}

/// Where the line starting at `line_start` ends: at a line break, or at one written as an
/// escape (`\n`, or the `\r` of `\r\n`).
fn line_end_from(text: &[u8], line_start: usize) -> usize {
    let mut at = line_start;
    while let Some(&byte) = text.get(at) {
        let escaped_break = byte == b'\\' && matches!(text.get(at + 1), Some(b'n' | b'r'));
        if byte == b'\n' || escaped_break {
            return at;
        }
        at += 1;
    }
    text.len()
}

/// Position of the quote closing a string whose content starts at `from`.
fn closing_quote(text: &[u8], from: usize, quote: u8) -> Option<usize> {
    let mut at = from;
    while let Some(&byte) = text.get(at) {
        if byte == b'\\' {
            at += 2;
            continue;
        }
        if byte == quote {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Whether the label at `label_start` is the line's one assignment: nothing but indentation
/// before it, and no `=` in the rest of the line after the first space of its value
/// (`db.password=correct horse battery staple` in a properties file, `PASSWORD = two words` in
/// an INI file). Such a value runs to the end of the line; on a line of several
/// (`user=ada password=x host=db`), or a command line's (`--password=x --user y`), a space
/// ends it, and a sensitive one then goes on to the next assignment
/// ([`with_following_words`]).
fn one_assignment_line(text: &[u8], label_start: usize, value_start: usize) -> bool {
    let indented = text[..label_start]
        .iter()
        .rev()
        .take_while(|&&byte| byte != b'\n')
        .all(|&byte| byte == b' ' || byte == b'\t');
    if !indented {
        return false;
    }
    // Read only as far as the answer needs (the first space, then the next `=`), not to the
    // line's end: a long line of `password=…` assignments is not read to its end for each.
    let rest = &text[value_start..];
    let Some(space) = rest
        .iter()
        .position(|&byte| matches!(byte, b' ' | b'\t' | b'\n'))
    else {
        return true;
    };
    rest[space..]
        .iter()
        .find(|&&byte| byte == b'=' || byte == b'\n')
        .is_none_or(|&byte| byte == b'\n')
}

/// A sensitive value after `=` that a space ended, on a line of several assignments, taken on
/// over the words after it up to the line's next assignment (a word with `=`, a flag, or a
/// label ending in `:`): a passphrase of several words (`user=ada password=correct horse
/// battery staple host=db`) is masked whole. The price: the words after a one-word password
/// go too (`password=x took 3ms` masks `x took 3ms`), on a line that holds a password.
fn with_following_words(text: &[u8], mut found: LabelledValue) -> LabelledValue {
    let is_space = |byte: u8| matches!(byte, b' ' | b'\t');
    let space_ended = text.get(found.end).is_some_and(|&byte| is_space(byte));
    if !space_ended || !text[found.label_end..found.start].contains(&b'=') {
        return found;
    }
    loop {
        let word_start = run_end(text, found.end, is_space);
        let word_end = run_end(text, word_start, |byte| {
            !is_space(byte) && !ENDS_FOLLOWING_WORDS.contains(&byte)
        });
        let word = &text[word_start..word_end];
        let next_assignment =
            word.first() == Some(&b'-') || word.contains(&b'=') || word.ends_with(b":");
        if word.is_empty() || next_assignment {
            return found;
        }
        found.end = word_end;
        if !text.get(word_end).is_some_and(|&byte| is_space(byte)) {
            return found;
        }
    }
}

/// Bytes that end a passphrase's words ([`with_following_words`]) wherever they come: a line
/// break (also escaped), a quote closing the string the line is in, a separator or bracket.
const ENDS_FOLLOWING_WORDS: &[u8] = b"\n\r\\\"',;&()[]{}<>";

fn unquoted_value_end(text: &[u8], start: usize, space_ends: bool) -> usize {
    let mut depth = 0usize;
    let mut at = start;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                if depth == 0 {
                    return at;
                }
                depth -= 1;
                if depth == 0 {
                    return at + 1;
                }
            }
            b'"' | b'\'' => match closing_quote(text, at + 1, byte) {
                Some(close) => at = close,
                None => return text.len(),
            },
            b',' | b';' | b'&' | b'\n' | b'\r' if depth == 0 => return at,
            b' ' | b'\t' if depth == 0 && space_ends => {
                let next = text[at..]
                    .iter()
                    .position(|&byte| byte != b' ' && byte != b'\t');
                match next.map(|offset| text[at + offset]) {
                    Some(b'(' | b'[' | b'{') => {}
                    _ => return at,
                }
            }
            _ => {}
        }
        at += 1;
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Bytes of the values whose extent was found on this thread ([`Label::value`]).
        pub(super) static VALUE_BYTES_FOUND: std::cell::Cell<usize> =
            const { std::cell::Cell::new(0) };
    }

    /// Labels whose values nothing ends but the text's end (no comma, quote or line break),
    /// none of them sensitive: judged by their labels alone, so the values' extents, each the
    /// rest of the text, are never looked for (looked for, they made the scan quadratic: a
    /// 4 KiB text took five times a Debug text's time a byte, and a condition reading an
    /// `Order` of such SKUs 56 µs a hit). A secret among them is still found with its value.
    #[test]
    fn labels_are_judged_before_their_values_are_looked_for() {
        let text = "bin: A1 shelf: B2 note: fragile ".repeat(128);
        VALUE_BYTES_FOUND.with(|found| found.set(0));
        assert!(values(&text).is_empty());
        assert_eq!(VALUE_BYTES_FOUND.with(std::cell::Cell::get), 0);
        // A name/value pair's name is read only as far as a name goes.
        let keys = "key: a1 key: b2 ".repeat(256);
        assert!(values(&keys).is_empty());
        assert_eq!(VALUE_BYTES_FOUND.with(std::cell::Cell::get), 0);
        let with_secret = format!("{text}password: hunter2 {text}");
        assert_eq!(values(&with_secret).len(), 1);
        let found = VALUE_BYTES_FOUND.with(std::cell::Cell::get);
        assert!(
            found <= with_secret.len(),
            "{found} bytes of values looked at"
        );
    }

    /// Labels judged sensitive in these tests.
    fn sensitive(label: &str) -> Option<()> {
        [
            "password",
            "\"password",
            "token",
            "pin",
            "session_id",
            "PIN",
            "secret",
        ]
        .contains(&label)
        .then_some(())
    }

    fn values(text: &str) -> Vec<&str> {
        let mut found = Vec::new();
        let mut from = 0;
        while let Some((value, ())) = next_labelled_value(text.as_bytes(), from, sensitive) {
            found.push(&text[value.start..value.end]);
            from = value.end;
        }
        found
    }

    #[test]
    fn a_lines_one_assignment_runs_to_the_end_of_the_line() {
        assert_eq!(
            values("password=correct horse battery staple"),
            ["correct horse battery staple"]
        );
        assert_eq!(
            values("[db]\n  password = correct horse battery staple\nuser = ada"),
            ["correct horse battery staple"]
        );
        assert_eq!(values("password=two words, then more"), ["two words"]);
        // Several assignments on a line, or a command line: the value runs over its words
        // to the next assignment or flag.
        assert_eq!(values("password=abc user=bob"), ["abc"]);
        assert_eq!(
            values("user=ada password=correct horse battery staple host=db"),
            ["correct horse battery staple"]
        );
        assert_eq!(
            values("user=ada password=correct horse battery\\nhost=db"),
            ["correct horse battery"]
        );
        assert_eq!(
            values("login ok password=hunter2 took 3ms"),
            ["hunter2 took 3ms"]
        );
        assert_eq!(values("--password=abc --user bob"), ["abc"]);
        assert_eq!(
            values("user=ada password=two words port: 5432"),
            ["two words"]
        );
        assert_eq!(
            values(r#""user=ada password=two words" and more"#),
            ["two words"]
        );
    }

    #[test]
    fn debug_json_url_and_log_forms() {
        assert_eq!(
            values("Login { user: \"bob\", password: \"hunter2\" }"),
            ["hunter2"]
        );
        assert_eq!(
            values("{\"user\":\"bob\",\"password\":\"hunter2\"}"),
            ["hunter2"]
        );
        assert_eq!(values("/login?user=bob&token=abc123&x=1"), ["abc123"]);
        assert_eq!(values("PIN=1234 user=bob"), ["1234"]);
        assert_eq!(values("pin : 1234; next"), ["1234"]);
        assert_eq!(values("password => 'hunter2'"), ["hunter2"]);
        assert_eq!(values("password: 'it\\'s'"), ["it\\'s"]);
    }

    #[test]
    fn structured_values_are_masked_whole() {
        assert_eq!(
            values("Creds { pin: Some(1234), user: \"bob\" }"),
            ["Some(1234)"]
        );
        assert_eq!(
            values("S { secret: Key { bytes: [1, 2] }, n: 1 }"),
            ["Key { bytes: [1, 2] }"]
        );
        assert_eq!(values("S { token: [1, 2, 3] }"), ["[1, 2, 3]"]);
        assert_eq!(values("S { token: Tok(\"a)b\") }"), ["Tok(\"a)b\")"]);
    }

    #[test]
    fn unterminated_values_run_to_the_end() {
        assert_eq!(values("password: \"hunter"), ["hunter"]);
        assert_eq!(values("S { pin: Some(12"), ["Some(12"]);
    }

    /// Labels in other scripts are read whole, as well as by their ASCII end, so a label read
    /// before is still read; punctuation outside ASCII ends a label, and a label cut by the
    /// length limit starts at a character.
    #[test]
    fn labels_outside_ascii_are_read_whole_and_by_their_ascii_end() {
        let labels_in_bytes = |text: &[u8]| {
            let mut seen = Vec::new();
            next_labelled_value(text, 0, |label: &str| {
                seen.push(label.to_owned());
                None::<()>
            });
            seen
        };
        let labels = |text: &str| labels_in_bytes(text.as_bytes());
        assert_eq!(labels("contraseña: x"), ["a", "contraseña"]);
        assert_eq!(labels("логин=ada"), ["логин"]);
        assert_eq!(labels("获取session=x"), ["session", "获取session"]);
        assert_eq!(labels("用户名：ada，pin=1234"), ["pin"]);
        assert_eq!(values("用户名：ada，pin=1234"), ["1234"]);
        assert_eq!(labels("a\u{a0}pin=1234"), ["pin"]);
        // 'é' is two bytes, and the limit falls an odd number of bytes before the colon.
        let long = format!("{}_password: x", "é".repeat(MAX_LABEL_LEN));
        let seen = labels(&long);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], "_password");
        assert!(seen[1].ends_with("é_password"), "{seen:?}");
        assert_eq!(seen[1].len(), MAX_LABEL_LEN - 1);
        // Bytes that are not UTF-8 end the label.
        assert_eq!(labels_in_bytes(b"x\xff\xc3password=1"), ["password"]);
    }

    #[test]
    fn other_labels_and_shapes_are_ignored() {
        assert!(values("user: \"bob\", city=London").is_empty());
        assert!(values("std::password::Thing").is_empty());
        assert!(values("if password == x").is_empty());
        assert!(values("password:").is_empty());
        assert!(values("password: \"\"").is_empty());
        assert!(values(": = :: ==").is_empty());
    }

    #[test]
    fn assignments_are_found_at_every_offset() {
        for padding in 0..24 {
            for byte in STOP_BYTES {
                let mut text = vec![b'x'; padding];
                text.push(byte);
                text.extend_from_slice(b"yyyyyyyyyyyy");
                assert_eq!(find_assignment(&text, 0), Some(padding));
                assert_eq!(find_assignment(&text, padding + 1), None);
            }
        }
        assert_eq!(find_assignment(b"", 0), None);
        assert_eq!(find_assignment(b"abc", 5), None);
    }

    #[test]
    fn labels_after_escapes_and_inside_form_brackets() {
        assert_eq!(values("a: 1\\npin: 1234"), ["1234"]);
        assert_eq!(values("x=1\\u0026token=abc123"), ["abc123"]);
        assert_eq!(values("x=1%26token=abc123"), ["abc123"]);
        assert_eq!(values("user[password]=hunter2&user[email]=a"), ["hunter2"]);
        assert_eq!(
            values("user%5Bpassword%5D=hunter2&user%5Bemail%5D=a"),
            ["hunter2"]
        );
        assert_eq!(values("password[0]=hunter2"), ["hunter2"]);
        // The label itself still counts: `\token` is not read as `oken` alone.
        assert_eq!(values("C:\\token=abc123"), ["abc123"]);
        assert!(values("user[email]=a&x\\nname=b").is_empty());
    }

    #[test]
    fn debug_newtypes_and_variants_are_labelled_by_their_names() {
        let sensitive = |label: &str| ["Password", "Secret"].contains(&label).then_some(());
        let values = |text: &'static str| {
            let mut found = Vec::new();
            let mut from = 0;
            while let Some((value, ())) = next_labelled_value(text.as_bytes(), from, sensitive) {
                found.push(&text[value.start..value.end]);
                from = value.end;
            }
            found
        };
        assert_eq!(values("Password(\"hunter2\")"), ["\"hunter2\""]);
        assert_eq!(values("Some(Credential::Password(\"a)b\"))"), ["\"a)b\""]);
        assert!(values("Secret { value: \"x\" }").is_empty());
        assert_eq!(values("Password(\"cut"), ["\"cut"]);
        assert!(values("Order { id: 1 } retry(3) password(1) Password()").is_empty());
    }

    #[test]
    fn yaml_blocks_and_multi_line_strings() {
        assert_eq!(
            values("db:\n  password: |\n    line one\n    line two\n  user: bob\n"),
            ["    line one\n    line two"]
        );
        assert_eq!(
            values("secret: >-\n  folded\n\n  more\nnext: 1"),
            ["  folded\n\n  more"]
        );
        assert_eq!(values("password:\n  hunter2\nuser: bob"), ["  hunter2"]);
        assert_eq!(
            values("password = \"\"\"\nhunter2\n\"\"\"\n"),
            ["\nhunter2\n"]
        );
        assert_eq!(values("token = '''abc'''"), ["abc"]);
        // A label with nothing indented after it holds nothing.
        assert!(values("password:\nuser: bob").is_empty());
    }

    #[test]
    fn values_named_by_a_neighbouring_name() {
        let sensitive = |label: &str| {
            ["password", "DB_PASSWORD", "StripeApiKey"]
                .contains(&label)
                .then_some(())
        };
        let values = |text: &'static str| {
            let mut found = Vec::new();
            let mut from = 0;
            while let Some((value, ())) = next_labelled_value(text.as_bytes(), from, sensitive) {
                found.push(&text[value.start..value.end]);
                from = value.end;
            }
            found
        };
        assert_eq!(
            values(r#"[{"name":"HOME","value":"/root"},{"name":"DB_PASSWORD","value":"hunter2"}]"#),
            ["hunter2"]
        );
        assert_eq!(
            values(r#"{"Name":"/prod/app/password","Value":"s3cr3t"}"#),
            ["s3cr3t"]
        );
        assert_eq!(
            values(r#"<add key="StripeApiKey" value="sk_abc"/>"#),
            ["sk_abc"]
        );
        assert_eq!(
            values(
                "env:\n  - name: DB_PASSWORD\n    value: hunter2\n  - name: HOME\n    value: /root"
            ),
            ["hunter2"]
        );
        // A name after its value, in the same object.
        assert_eq!(
            values(r#"[{"value":"/root","name":"HOME"},{"value":"hunter2","name":"DB_PASSWORD"}]"#),
            ["hunter2"]
        );
        assert_eq!(
            values(r#"<add value="sk_abc" key="StripeApiKey"/>"#),
            ["sk_abc"]
        );
        assert_eq!(
            values(
                "env:\n  - value: hunter2\n    name: DB_PASSWORD\n  - value: /root\n    name: HOME"
            ),
            ["hunter2"]
        );
        // In a log line's assignments, and escaped inside a Debug-printed JSON string.
        assert_eq!(values("name=DB_PASSWORD value=hunter2"), ["hunter2"]);
        assert_eq!(
            values(r#"Job("{\"name\":\"DB_PASSWORD\",\"value\":\"hunter2\"}")"#),
            ["hunter2"]
        );
        // A value that goes on past a name is not one.
        assert!(values("name: DB_PASSWORD is required, value: x").is_empty());
        // The name of another object names nothing here, before or after.
        assert!(values(r#"[{"name":"DB_PASSWORD"},{"value":"x"}]"#).is_empty());
        assert!(values(r#"[{"value":"x"},{"name":"DB_PASSWORD"}]"#).is_empty());
        assert!(values("- name: DB_PASSWORD\n- value: x").is_empty());
        assert!(values("- value: x\n- name: DB_PASSWORD").is_empty());
        // Nor one further on than the look-ahead reaches.
        let far = format!(
            r#"{{"value":"x",{}"name":"DB_PASSWORD"}}"#,
            r#""a":"1","#.repeat(NAME_AFTER_VALUE_LABELS)
        );
        let far: &'static str = Box::leak(far.into_boxed_str());
        assert!(values(far).is_empty());
    }

    #[test]
    fn tuples_of_a_name_and_a_value() {
        assert_eq!(
            values(r#"[("HOME", "/root"), ("password", "hunter2"), ("PIN", 1234)]"#),
            ["hunter2", "1234"]
        );
        assert!(values(r#"("HOME", "/root") ("password") ("password" "x")"#).is_empty());
    }

    #[test]
    fn command_line_flags_label_the_next_word() {
        assert_eq!(values("mysql --password hunter2 --user bob"), ["hunter2"]);
        assert_eq!(values("cli --token \"a b\" next"), ["a b"]);
        assert_eq!(values("cli --password=hunter2"), ["hunter2"]);
        assert!(values("cli --password --verbose").is_empty());
        assert!(values("a--password x").is_empty());
        assert!(values("cli --user bob 2026-12-03").is_empty());
    }

    #[test]
    fn never_panics_at_edges() {
        for text in [
            "=",
            ":",
            "a=",
            "=a",
            "\"=\"",
            "password=\\",
            "password=\"\\",
            "é=é",
            "password=é",
            "[]=",
            "%5D=",
            "%5B%5D=",
            "\\n=",
            "%2=",
            "A(",
            "A {",
            " {",
            "password: |",
            "password:\n",
            "password = \"\"\"",
            "--",
            "--password",
            "--password ",
            "--password \"",
            "-",
        ] {
            let _ = values(text);
        }
        assert_eq!(values("password=é"), ["é"]);
    }
}
