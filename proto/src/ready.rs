//! The ready line: how a Loupe process tells whoever started it that it serves, and where.
//!
//! A process that binds ports (possibly port 0) prints exactly one line on stdout once it
//! serves — `<process> ready key=value key=value…` — and says everything else on stderr. A
//! supervisor (the quickstart, the end-to-end tests, an operator's script) waits for the line
//! and reads the actual addresses from it. The control plane prints
//! `loupe-control-plane ready listen=<addr>`; the demo service prints
//! `checkout ready http=<addr> agent=<addr> instance=<id>`; the sidecar prints
//! `loupe-agent-sidecar ready pid=<pid> agent=<addr>`.
//!
//! Here, beside the wire contract, because every kind of Loupe process prints it and every
//! supervisor reads it: it is the contract between a process and whoever started it.
//!
//! The rule, stated here once: the process name and each key are one word of `[a-z0-9_-]`,
//! values contain no whitespace (addresses and ids never do), and a line that does not follow
//! it is not a ready line. Printers build the line with [`ReadyLine`]; supervisors parse it
//! with [`ReadyLine::parse`].

use std::fmt;

/// The control plane's process name on its ready line.
pub const CONTROL_PLANE: &str = "loupe-control-plane";
/// The sidecar agent's process name on its ready line.
pub const SIDECAR: &str = "loupe-agent-sidecar";

/// One ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    process: String,
    fields: Vec<(String, String)>,
}

/// Why a value cannot go on a ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadyLineError {
    BadWord(String),
    BadValue { key: String, value: String },
}

impl fmt::Display for ReadyLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyLineError::BadWord(word) => write!(
                f,
                "`{word}` is not a ready-line word (one or more of a-z, 0-9, `_` and `-`)"
            ),
            ReadyLineError::BadValue { key, value } => write!(
                f,
                "the value of `{key}` is empty or contains whitespace: {value:?}"
            ),
        }
    }
}

impl std::error::Error for ReadyLineError {}

fn is_word(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_value(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(char::is_whitespace)
}

impl ReadyLine {
    /// A ready line for `process`, with no fields yet.
    pub fn new(process: &str) -> Result<ReadyLine, ReadyLineError> {
        if !is_word(process) {
            return Err(ReadyLineError::BadWord(process.to_owned()));
        }
        Ok(ReadyLine {
            process: process.to_owned(),
            fields: Vec::new(),
        })
    }

    /// Adds `key=value`.
    pub fn with(
        mut self,
        key: &str,
        value: impl fmt::Display,
    ) -> Result<ReadyLine, ReadyLineError> {
        let value = value.to_string();
        if !is_word(key) {
            return Err(ReadyLineError::BadWord(key.to_owned()));
        }
        if !is_value(&value) {
            return Err(ReadyLineError::BadValue {
                key: key.to_owned(),
                value,
            });
        }
        self.fields.push((key.to_owned(), value));
        Ok(self)
    }

    /// Reads a line printed by [`ReadyLine`]'s `Display`; `None` for any other line.
    pub fn parse(line: &str) -> Option<ReadyLine> {
        let mut words = line.split_whitespace();
        let mut ready = ReadyLine::new(words.next()?).ok()?;
        if words.next()? != "ready" {
            return None;
        }
        for word in words {
            let (key, value) = word.split_once('=')?;
            ready = ready.with(key, value).ok()?;
        }
        Some(ready)
    }

    /// Which process announced itself.
    pub fn process(&self) -> &str {
        &self.process
    }

    /// The value of `key`, if the line has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v.as_str()))
    }
}

impl fmt::Display for ReadyLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ready", self.process)?;
        for (key, value) in &self.fields {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_printed_line_reads_back() {
        let line = ReadyLine::new(CONTROL_PLANE)
            .and_then(|l| l.with("listen", "127.0.0.1:7443"))
            .unwrap();
        let text = line.to_string();
        assert_eq!(text, "loupe-control-plane ready listen=127.0.0.1:7443");
        let parsed = ReadyLine::parse(&text).unwrap();
        assert_eq!(parsed, line);
        assert_eq!(parsed.get("listen"), Some("127.0.0.1:7443"));
        assert_eq!(parsed.get("agent"), None);
    }

    #[test]
    fn other_lines_are_not_ready_lines() {
        for line in [
            "",
            "checkout",
            "checkout started http=1",
            "Checkout ready http=1",
            "checkout ready http",
            "checkout ready =1",
            "checkout ready HTTP=1",
            "checkout ready http=",
        ] {
            assert_eq!(ReadyLine::parse(line), None, "{line:?}");
        }
    }

    #[test]
    fn values_that_would_break_the_line_are_refused() {
        let line = ReadyLine::new("checkout").unwrap();
        assert!(matches!(
            line.clone().with("http", "a b"),
            Err(ReadyLineError::BadValue { .. })
        ));
        assert!(matches!(
            line.with("Http", "1"),
            Err(ReadyLineError::BadWord(_))
        ));
        assert!(ReadyLine::new("two words").is_err());
    }
}
