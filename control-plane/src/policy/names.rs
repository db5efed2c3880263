//! Validated names: the only way a string from a certificate, a client or a file becomes a Cedar
//! entity id. Each type checks its syntax when built, so a quote, `::`, a newline or any other
//! surprise is refused before it gets near the policy engine.

use std::fmt;

/// Longest user identity accepted, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Longest service name accepted, in bytes.
pub const MAX_SERVICE_NAME_LEN: usize = 128;
/// Longest point name accepted, in bytes.
pub const MAX_POINT_NAME_LEN: usize = 256;
/// Longest group name accepted, in bytes.
pub const MAX_GROUP_NAME_LEN: usize = 64;

/// A name that failed its syntax check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {shown}: {why}")]
pub struct NameError {
    /// What was being named: "user identity", "service name", "point name", "group name".
    pub kind: &'static str,
    /// The offending value, escaped and cut to 80 characters so it is safe to print.
    pub shown: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl NameError {
    fn new(kind: &'static str, value: &str, why: &'static str) -> NameError {
        let cut: String = value.chars().take(80).collect();
        NameError {
            kind,
            shown: format!("{cut:?}"),
            why,
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

/// A service name: lowercase `[a-z0-9_-]` segments separated by single dots, 1 to
/// [`MAX_SERVICE_NAME_LEN`] bytes (`checkout`, `payments-api`, `eu.checkout`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

impl ServiceName {
    pub fn parse(value: &str) -> Result<ServiceName, NameError> {
        check_dotted(
            "service name",
            value,
            MAX_SERVICE_NAME_LEN,
            |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-',
            "segments of lowercase letters, digits, `_` and `-`, separated by single dots",
        )?;
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

/// A snapshot point name: lowercase `[a-z0-9_]` segments separated by single dots, 1 to
/// [`MAX_POINT_NAME_LEN`] bytes — the same rule `snapshot!` checks at compile time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PointName(String);

impl PointName {
    pub fn parse(value: &str) -> Result<PointName, NameError> {
        check_dotted(
            "point name",
            value,
            MAX_POINT_NAME_LEN,
            |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_',
            "segments of lowercase letters, digits and `_`, separated by single dots",
        )?;
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

fn check_dotted(
    kind: &'static str,
    value: &str,
    max_len: usize,
    allowed: impl Fn(u8) -> bool,
    rule: &'static str,
) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::new(kind, value, "it is empty"));
    }
    if value.len() > max_len {
        return Err(NameError::new(kind, value, "it is too long"));
    }
    let well_formed = value
        .split('.')
        .all(|segment| !segment.is_empty() && segment.bytes().all(&allowed));
    if !well_formed {
        return Err(NameError::new(kind, value, rule));
    }
    Ok(())
}
