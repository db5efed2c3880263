//! `Secret<T>`: a value that Loupe never captures, whatever a capture request asks.
//!
//! The capture serializer recognises the newtype marker and withholds the value without
//! serializing it. Other serializers (logs, JSON) see `"[redacted]"`, and `Debug` prints
//! `Secret([redacted])`, so wrapping a value is safe everywhere, not only under Loupe.

use std::fmt;

use crate::redaction::Reason;

/// The newtype-struct name that marks a `Secret` to the capture serializer.
pub(crate) const SECRET_MARKER: &str = "loupe_agent::Secret";

pub(crate) fn secret_reason() -> Reason {
    Reason::from_static("type:Secret")
}

/// A value that is never captured and never printed.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub const fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The wrapped value, for the code that legitimately needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl<T> serde::Serialize for Secret<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_newtype_struct(SECRET_MARKER, "[redacted]")
    }
}
