//! The values a `snapshot!` hands to the capture: borrowed references, by the sigil the caller
//! chose (`serde::Serialize` by default, `?` Debug, `%` Display).
//!
//! The references are type-erased so the capture path can be one out-of-line function for every
//! point; `Serialize` is not object-safe, so [`SerializeField`] erases it against the one
//! serializer the capture uses.

use std::fmt;

use super::ValueSerializer;
use super::follow::{KeyFollower, Stop};
use crate::condition::path_reader::{PathReader, Scalar};

/// One field of a snapshot, borrowed for the duration of the hit.
#[derive(Clone, Copy)]
pub enum FieldValue<'a> {
    Serde(&'a dyn SerializeField),
    Debug(&'a dyn fmt::Debug),
    Display(&'a dyn fmt::Display),
}

impl<'a> FieldValue<'a> {
    #[inline]
    pub fn serde<T: serde::Serialize>(value: &'a T) -> FieldValue<'a> {
        FieldValue::Serde(value)
    }

    #[inline]
    pub fn debug<T: fmt::Debug>(value: &'a T) -> FieldValue<'a> {
        FieldValue::Debug(value)
    }

    #[inline]
    pub fn display<T: fmt::Display>(value: &'a T) -> FieldValue<'a> {
        FieldValue::Display(value)
    }
}

/// `serde::Serialize`, made object-safe for the capture's own serializer.
pub trait SerializeField {
    fn capture_with(&self, serializer: ValueSerializer<'_, '_>);
    /// Reads the one number or bool a condition compares, without capturing
    /// (`crate::condition::direct`, `crate::condition::path_reader`).
    fn read_scalar(&self, reader: PathReader<'_, '_>) -> Option<Scalar>;
    /// Follows the private keys in a field a condition does not read (`super::follow`).
    fn follow_keys(&self, follower: KeyFollower<'_, '_>) -> Result<(), Stop>;
}

impl<T: serde::Serialize + ?Sized> SerializeField for T {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn capture_with(&self, serializer: ValueSerializer<'_, '_>) {
        serializer.capture(self)
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn read_scalar(&self, reader: PathReader<'_, '_>) -> Option<Scalar> {
        reader.read(self)
    }

    fn follow_keys(&self, follower: KeyFollower<'_, '_>) -> Result<(), Stop> {
        self.serialize(follower)
    }
}
