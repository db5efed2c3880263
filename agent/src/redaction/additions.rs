//! Keywords and patterns added by the agent's configuration and by capture requests, compiled
//! once when a capture is armed so that matching them costs no parsing on the capture path.
//!
//! Added keywords match as substrings of the normalized name: an addition exists to make
//! redaction stricter, and a substring rule is the stricter reading of the same word.
//! Added patterns are regexes; all of them go into one `RegexSet`, so a text that matches none
//! is rejected in one pass whatever the number of patterns, and only the patterns that did
//! match are run again to find where.
//!
//! Sizes are capped because a request's patterns are compiled inside the service's process:
//! an unbounded regex is a memory and CPU lever in the hands of whoever can send a request.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::keywords::normalized_bytes;
use super::{AdditionOrigin, Reason, RedactionError};

/// At most this many added patterns in total (configuration and request together).
pub const MAX_PATTERNS: usize = 64;
/// At most this many bytes per added pattern.
pub const MAX_PATTERN_LEN: usize = 512;
/// At most this many added keywords in total.
pub const MAX_KEYWORDS: usize = 256;
/// At most this many bytes per added keyword.
pub const MAX_KEYWORD_LEN: usize = 128;
/// Compiled size limit per pattern, and for the set of all patterns.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Lazy DFA cache limit per regex, bounding the memory a pathological text can make it use.
const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;

/// A keyword added by configuration or request, normalized like names are.
#[derive(Debug, Clone)]
pub(crate) struct AddedKeyword {
    pub(crate) normalized: Box<[u8]>,
    pub(crate) reason: Reason,
}

/// One added pattern as given, kept so that later additions can rebuild the set.
#[derive(Debug, Clone)]
pub(crate) struct PatternSource {
    pub(crate) pattern: String,
    pub(crate) reason: Reason,
}

/// All added patterns compiled.
#[derive(Debug, Clone)]
pub(crate) struct CompiledPatterns {
    pub(crate) set: RegexSet,
    pub(crate) each: Vec<Regex>,
    pub(crate) sources: Vec<PatternSource>,
}

fn origin_prefix(origin: AdditionOrigin) -> &'static str {
    match origin {
        AdditionOrigin::Config => "config",
        AdditionOrigin::Request => "request",
    }
}

/// Appends the normalized `keywords` to `existing`, skipping ones already present.
pub(crate) fn add_keywords(
    existing: &mut Vec<AddedKeyword>,
    keywords: &[String],
    origin: AdditionOrigin,
) -> Result<(), RedactionError> {
    for keyword in keywords {
        if keyword.len() > MAX_KEYWORD_LEN {
            return Err(RedactionError::KeywordTooLong {
                origin,
                keyword: truncated_for_message(keyword),
                len: keyword.len(),
                max: MAX_KEYWORD_LEN,
            });
        }
        let normalized: Box<[u8]> = normalized_bytes(keyword).into_boxed_slice();
        if normalized.is_empty() {
            return Err(RedactionError::EmptyKeyword {
                origin,
                keyword: truncated_for_message(keyword),
            });
        }
        if existing.iter().any(|added| added.normalized == normalized) {
            continue;
        }
        if existing.len() >= MAX_KEYWORDS {
            return Err(RedactionError::TooManyKeywords { max: MAX_KEYWORDS });
        }
        let reason = Reason::shared(format!(
            "{}-keyword:{}",
            origin_prefix(origin),
            String::from_utf8_lossy(&normalized)
        ));
        existing.push(AddedKeyword { normalized, reason });
    }
    Ok(())
}

fn build_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
}

/// Compiles `existing` sources plus `patterns`, each validated on its own first so that an
/// error names the pattern at fault.
pub(crate) fn add_patterns(
    existing: Option<&CompiledPatterns>,
    patterns: &[String],
    origin: AdditionOrigin,
) -> Result<Option<CompiledPatterns>, RedactionError> {
    if patterns.is_empty() {
        return Ok(existing.cloned());
    }
    let mut sources: Vec<PatternSource> = existing
        .map(|compiled| compiled.sources.clone())
        .unwrap_or_default();
    let mut each: Vec<Regex> = existing
        .map(|compiled| compiled.each.clone())
        .unwrap_or_default();
    let prefix = origin_prefix(origin);
    let mut number = sources
        .iter()
        .filter(|source| source.reason.as_str().starts_with(prefix))
        .count();
    for pattern in patterns {
        number += 1;
        if sources.len() >= MAX_PATTERNS {
            return Err(RedactionError::TooManyPatterns { max: MAX_PATTERNS });
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(RedactionError::PatternTooLong {
                origin,
                number,
                pattern: truncated_for_message(pattern),
                len: pattern.len(),
                max: MAX_PATTERN_LEN,
            });
        }
        let regex = build_regex(pattern).map_err(|source| RedactionError::InvalidPattern {
            origin,
            number,
            pattern: truncated_for_message(pattern),
            reason: source.to_string(),
        })?;
        sources.push(PatternSource {
            pattern: pattern.clone(),
            reason: Reason::shared(format!("{prefix}-pattern:#{number}")),
        });
        each.push(regex);
    }
    let set = RegexSetBuilder::new(sources.iter().map(|source| source.pattern.as_str()))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .map_err(|source| RedactionError::PatternSetTooLarge {
            reason: source.to_string(),
        })?;
    Ok(Some(CompiledPatterns { set, each, sources }))
}

/// Patterns and keywords are echoed in errors, which travel back to the requester; a bounded
/// echo keeps an oversized input from being reflected whole.
fn truncated_for_message(text: &str) -> String {
    const SHOWN: usize = 64;
    if text.len() <= SHOWN {
        return text.to_owned();
    }
    let mut end = SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
