//! The syntax of the names the contract carries: point names, service names and user names.
//! Each rule is stated here once; the agent checks point names with it at compile time
//! (`snapshot!`), the control plane when a request or a registration arrives, and the PKI
//! when it issues a certificate, so a name one part accepts is never refused by another.
//!
//! Why these shapes: names travel in tokens, audit records, SPIFFE ids, file names and Cedar
//! entity ids, so they are short lowercase ASCII with no character any of those would have
//! to escape. A point's dotted segments are its namespaces (`payments.card.tokenize`), which
//! policies grant by prefix.
//!
//! The checks are `const fn` so a literal can be checked at compile time.

/// Longest point name, in bytes.
pub const MAX_POINT_NAME_LEN: usize = 128;
/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME_LEN: usize = 128;
/// Longest user name (the last segment of a user's SPIFFE id), in bytes.
pub const MAX_USER_NAME_LEN: usize = 63;

/// Why a name is refused; offsets are byte offsets into the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    Empty,
    /// Longer than the rule's maximum, which is carried.
    TooLong {
        max: usize,
    },
    /// A character the rule does not allow.
    BadCharacter(usize),
    /// A dot at the start or end, or two dots in a row.
    EmptySegment(usize),
    /// The first character is not a lowercase letter or a digit.
    BadStart,
}

impl NameError {
    /// What is wrong, in words that do not quote the name (callers add it, escaped).
    pub const fn reason(self) -> &'static str {
        match self {
            NameError::Empty => "it is empty",
            NameError::TooLong { .. } => "it is too long",
            NameError::BadCharacter(_) => "it contains a character that is not allowed",
            NameError::EmptySegment(_) => {
                "it has an empty segment (a leading, trailing or doubled dot)"
            }
            NameError::BadStart => "it must start with a lowercase letter or a digit",
        }
    }
}

/// What a rule allows, for messages that tell a person what to write instead.
pub const POINT_NAME_RULE: &str =
    "lowercase dotted segments of [a-z0-9_], at most 128 bytes, e.g. `checkout.apply_discount`";
/// See [`POINT_NAME_RULE`].
pub const SERVICE_NAME_RULE: &str = "lowercase dotted segments of [a-z0-9_-] starting with a letter or digit, at most 128 bytes, e.g. `payments-api`";
/// See [`POINT_NAME_RULE`].
pub const USER_NAME_RULE: &str = "lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 63 bytes";

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::TooLong { max } => write!(f, "it is longer than {max} bytes"),
            NameError::BadCharacter(at) => write!(f, "the character at byte {at} is not allowed"),
            NameError::EmptySegment(at) => {
                write!(
                    f,
                    "it has an empty segment at byte {at} (a leading, trailing or doubled dot)"
                )
            }
            other => f.write_str(other.reason()),
        }
    }
}

impl std::error::Error for NameError {}

/// A point name: lowercase dotted segments of `[a-z0-9_]`, 1 to [`MAX_POINT_NAME_LEN`] bytes.
pub const fn check_point_name(name: &str) -> Result<(), NameError> {
    check_dotted(name, MAX_POINT_NAME_LEN, false)
}

/// A service name: lowercase dotted segments of `[a-z0-9_-]` starting with a letter or digit,
/// 1 to [`MAX_SERVICE_NAME_LEN`] bytes. It is also a file name of the dev PKI and a SPIFFE path
/// segment, so nothing that could escape either (`/`, `..`, a leading `-`) is allowed.
pub const fn check_service_name(name: &str) -> Result<(), NameError> {
    if let Err(error) = check_dotted(name, MAX_SERVICE_NAME_LEN, true) {
        return Err(error);
    }
    check_start(name)
}

/// A user name, the last segment of a user's SPIFFE id (`spiffe://<domain>/user/<name>`):
/// `[a-z0-9][a-z0-9._-]*`, 1 to [`MAX_USER_NAME_LEN`] bytes.
pub const fn check_user_name(name: &str) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > MAX_USER_NAME_LEN {
        return Err(NameError::TooLong {
            max: MAX_USER_NAME_LEN,
        });
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-') {
            return Err(NameError::BadCharacter(i));
        }
        i += 1;
    }
    check_start(name)
}

const fn check_start(name: &str) -> Result<(), NameError> {
    match name.as_bytes().first() {
        Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit() => Ok(()),
        Some(_) => Err(NameError::BadStart),
        None => Err(NameError::Empty),
    }
}

const fn check_dotted(name: &str, max: usize, dash_allowed: bool) -> Result<(), NameError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > max {
        return Err(NameError::TooLong { max });
    }
    let mut i = 0;
    let mut segment_start = true;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'.' {
            if segment_start {
                return Err(NameError::EmptySegment(i));
            }
            segment_start = true;
        } else if b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || b == b'_'
            || (dash_allowed && b == b'-')
        {
            segment_start = false;
        } else {
            return Err(NameError::BadCharacter(i));
        }
        i += 1;
    }
    if segment_start {
        return Err(NameError::EmptySegment(bytes.len()));
    }
    Ok(())
}

// The rules are usable where `snapshot!` needs them: in constant evaluation.
const _: () = assert!(check_point_name("checkout.apply_discount").is_ok());
const _: () = assert!(check_point_name("Checkout").is_err());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_names() {
        for ok in [
            "a",
            "checkout.apply_discount",
            "payments.v2.charge_3ds",
            "x_1.y_2",
        ] {
            assert_eq!(check_point_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_point_name(""), Err(NameError::Empty));
        assert_eq!(
            check_point_name("Checkout"),
            Err(NameError::BadCharacter(0))
        );
        assert_eq!(check_point_name("a-b"), Err(NameError::BadCharacter(1)));
        assert_eq!(check_point_name(".a"), Err(NameError::EmptySegment(0)));
        assert_eq!(check_point_name("a."), Err(NameError::EmptySegment(2)));
        assert_eq!(check_point_name("a..b"), Err(NameError::EmptySegment(2)));
        assert_eq!(check_point_name("é"), Err(NameError::BadCharacter(0)));
        assert_eq!(check_point_name(&"a".repeat(128)), Ok(()));
        assert_eq!(
            check_point_name(&"a".repeat(129)),
            Err(NameError::TooLong { max: 128 })
        );
    }

    #[test]
    fn service_names() {
        for ok in ["checkout", "payments-api", "eu.checkout", "svc_1", "9lives"] {
            assert_eq!(check_service_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_service_name("-x"), Err(NameError::BadStart));
        assert_eq!(check_service_name("_x"), Err(NameError::BadStart));
        assert_eq!(check_service_name("a/b"), Err(NameError::BadCharacter(1)));
        assert_eq!(check_service_name("a..b"), Err(NameError::EmptySegment(2)));
        assert_eq!(check_service_name("Pay"), Err(NameError::BadCharacter(0)));
    }

    #[test]
    fn user_names() {
        for ok in ["alice", "bob.smith", "ops-7", "a_b"] {
            assert_eq!(check_user_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_user_name("-x"), Err(NameError::BadStart));
        assert_eq!(check_user_name("../x"), Err(NameError::BadCharacter(2)));
        assert_eq!(check_user_name("a/b"), Err(NameError::BadCharacter(1)));
        assert_eq!(check_user_name("Alice"), Err(NameError::BadCharacter(0)));
        assert_eq!(
            check_user_name(&"a".repeat(64)),
            Err(NameError::TooLong { max: 63 })
        );
    }
}
