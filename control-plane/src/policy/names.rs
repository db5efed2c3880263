//! Validated names: the only way a string from a certificate, a client or a file becomes a Cedar
//! entity id. Each type checks its syntax when built, so a quote, `::`, a newline or any other
//! surprise is refused before it gets near the policy engine.

use std::fmt;

/// Longest user identity accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
pub use loupe_proto::names::{MAX_POINT_NAME_LEN, MAX_SERVICE_NAME_LEN};
/// Longest group name accepted, in bytes.
pub const MAX_GROUP_NAME_LEN: usize = 64;

/// A name that failed its syntax check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {shown}: {why}{expected}")]
pub struct NameError {
    /// What was being named: "user identity", "service name", "point name", "group name".
    pub kind: &'static str,
    /// The offending value, escaped and cut to 80 characters so it is safe to print.
    pub shown: String,
    /// What is wrong with it.
    pub why: &'static str,
    /// `"; expected <rule>"` when the name has a stated rule to point to, else empty.
    pub expected: String,
}

impl NameError {
    /// A refusal that quotes the rule the name breaks, so the message says what to write.
    fn breaking(
        kind: &'static str,
        value: &str,
        why: &'static str,
        rule: &'static str,
    ) -> NameError {
        NameError {
            expected: format!("; expected {rule}"),
            ..NameError::new(kind, value, why)
        }
    }

    fn new(kind: &'static str, value: &str, why: &'static str) -> NameError {
        let cut: String = value.chars().take(80).collect();
        NameError {
            kind,
            shown: format!("{cut:?}"),
            why,
            expected: String::new(),
        }
    }
}

/// A user's identity as verified from their certificate: the SPIFFE URI SAN
/// (`spiffe://loupe.dev/user/alice`) or, without one, the subject CN. It is the `User` entity id.
///
/// Accepted: 1 to [`MAX_USER_ID_LEN`] bytes of printable ASCII other than quotes, backslash and
/// backtick, and never `::`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    pub fn parse(value: &str) -> Result<UserId, NameError> {
        const KIND: &str = "user identity";
        if value.is_empty() {
            return Err(NameError::new(KIND, value, "it is empty"));
        }
        if value.len() > MAX_USER_ID_LEN {
            return Err(NameError::new(KIND, value, "it is longer than 256 bytes"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b'`'))
        {
            return Err(NameError::new(
                KIND,
                value,
                "only printable ASCII without spaces, quotes, backslashes or backticks is allowed",
            ));
        }
        if value.contains("::") {
            return Err(NameError::new(KIND, value, "it contains `::`"));
        }
        Ok(UserId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A service name by the contract's rule ([`loupe_proto::names::check_service_name`]):
/// `checkout`, `payments-api`, `eu.checkout`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(value: &str) -> Result<ServiceName, NameError> {
        loupe_proto::names::check_service_name(value).map_err(|error| {
            NameError::breaking(
                "service name",
                value,
                error.reason(),
                loupe_proto::names::SERVICE_NAME_RULE,
            )
        })?;
        Ok(ServiceName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A snapshot point name by the contract's rule ([`loupe_proto::names::check_point_name`]),
/// the rule `snapshot!` checks at compile time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PointName(String);

impl PointName {
    pub fn parse(value: &str) -> Result<PointName, NameError> {
        loupe_proto::names::check_point_name(value).map_err(|error| {
            NameError::breaking(
                "point name",
                value,
                error.reason(),
                loupe_proto::names::POINT_NAME_RULE,
            )
        })?;
        Ok(PointName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dotted namespaces the point is in, outermost first: `payments.card.tokenize` →
    /// `payments`, `payments.card`. A point without a dot is in none.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('.').map(|(at, _)| &self.0[..at])
    }
}

impl fmt::Display for PointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a group id from the entities file: 1 to [`MAX_GROUP_NAME_LEN`] bytes of lowercase
/// letters, digits, `_` and `-`.
pub fn check_group_name(value: &str) -> Result<(), NameError> {
    const KIND: &str = "group name";
    if value.is_empty() || value.len() > MAX_GROUP_NAME_LEN {
        return Err(NameError::new(KIND, value, "it must be 1 to 64 bytes long"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(NameError::new(
            KIND,
            value,
            "only lowercase letters, digits, `_` and `-` are allowed",
        ));
    }
    Ok(())
}
