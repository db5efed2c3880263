//! Placeholder redaction rules with the final interface; replaced by the full rule set.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reason(Arc<str>);

impl Reason {
    pub fn from_static(s: &'static str) -> Reason {
        Reason(Arc::from(s))
    }

    fn new(s: impl Into<Arc<str>>) -> Reason {
        Reason(s.into())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdditionOrigin {
    Config,
    #[default]
    Request,
}

#[derive(Debug, Clone, Default)]
pub struct RedactionAdditions {
    pub keywords: Vec<String>,
    pub patterns: Vec<String>,
    pub origin: AdditionOrigin,
}

#[derive(Debug, Clone)]
pub struct Masked {
    pub text: String,
    pub reasons: Vec<Reason>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedactionError {
    #[error("invalid redaction pattern {pattern:?}: {reason}")]
    InvalidPattern { pattern: String, reason: String },
}

#[derive(Debug, Clone, Default)]
pub struct RedactionRules {
    keywords: Vec<String>,
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '$' | '@' | ' ' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

impl RedactionRules {
    pub fn builtin() -> RedactionRules {
        RedactionRules {
            keywords: ["password", "secret", "token", "apikey", "cardnumber", "authorization"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }

    pub fn with_additions(
        &self,
        additions: &RedactionAdditions,
    ) -> Result<RedactionRules, RedactionError> {
        let mut rules = self.clone();
        rules
            .keywords
            .extend(additions.keywords.iter().map(|k| normalize(k)));
        Ok(rules)
    }

    pub fn sensitive_name(&self, name: &str) -> Option<Reason> {
        let n = normalize(name);
        self.keywords
            .iter()
            .find(|k| n.contains(k.as_str()))
            .map(|k| Reason::new(format!("name:{k}")))
    }

    pub fn mask_secrets(&self, text: &str, _complete: bool) -> Option<Masked> {
        text.contains("eyJ").then(|| Masked {
            text: "[redacted:jwt]".into(),
            reasons: vec![Reason::new("pattern:jwt")],
        })
    }

    pub fn sensitive_u64(&self, v: u64) -> Option<Reason> {
        (v == 4111111111111111).then(|| Reason::new("pattern:card-number"))
    }

    pub fn sensitive_i64(&self, v: i64) -> Option<Reason> {
        u64::try_from(v).ok().and_then(|v| self.sensitive_u64(v))
    }
}
