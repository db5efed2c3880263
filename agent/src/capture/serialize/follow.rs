//! Following private keys through the values a condition's capture leaves out.
//!
//! A condition's capture holds only what the condition reads, but a PEM key's BEGIN line may
//! sit in a value it does not read, and the snapshot masks the key's body in every text after
//! that line until its END line (`redaction::ScanState`). So each value a condition leaves out
//! is still walked, in the snapshot's order, by [`KeyFollower`]: a serializer that keeps
//! nothing and looks at each text only for BEGIN and END lines, so that the texts the
//! condition does read are masked as the snapshot masks them. It costs a fraction of a
//! capture: no tape, no names, a vectorised search for a BEGIN line in each scan window.
//!
//! It walks at least what the snapshot scans — every element and entry up to the collection
//! limit, every member (past the member limit too), every string's scan window, down to the
//! depth limit — so it can only find more keys open than the snapshot does, never fewer. Its bytes are paid from the
//! condition's scan budget, at `cost::FOLLOWED_BYTES_PER_SCANNED_BYTE`; a walk that would pass
//! it stops the condition's capture ([`Stop::Budget`]), since what follows could no longer be
//! masked right.

use std::fmt::{self, Write as _};

use serde::Serialize;
use serde::ser;

use super::{BoundedWriter, SCAN_MARGIN};
use crate::condition::cost;
use crate::limits::CaptureLimits;
use crate::redaction::{RedactionRules, ScanState};

/// Why a walk stopped early.
#[derive(Debug)]
pub enum Stop {
    /// It would pass the condition's scan budget.
    Budget,
    /// The value's own `Serialize` failed: the snapshot forgets what such a value showed of
    /// a key, and so does the walk's caller.
    Failed,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Budget => "the condition's scan budget ran out",
            Stop::Failed => "the value failed to serialize",
        })
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Stop {
        Stop::Failed
    }
}

/// What a walk reads and where it pays: the capture's limits and rules, the scan state it
/// carries on, and the condition's scan budget.
pub struct Follow<'f> {
    pub(super) rules: &'f RedactionRules,
    pub(super) limits: &'f CaptureLimits,
    pub(super) scan: &'f mut ScanState,
    /// Scanned bytes the condition's capture has spent, and at most how many it may.
    pub(super) scanned_bytes: &'f mut u64,
    pub(super) scan_limit: Option<u64>,
}

impl Follow<'_> {
    /// Follows keys through one text as far as the snapshot scans it: its scan window.
    pub(super) fn text(&mut self, text: &str) -> Result<(), Stop> {
        let keep = (self.limits.max_string_bytes as usize).saturating_add(SCAN_MARGIN);
        let window = &text[..crate::text::floor_char_boundary(text, keep)];
        let complete = window.len() == text.len();
        let cost = (window.len() as u64).div_ceil(cost::FOLLOWED_BYTES_PER_SCANNED_BYTE);
        *self.scanned_bytes = self.scanned_bytes.saturating_add(cost);
        if self
            .scan_limit
            .is_some_and(|limit| *self.scanned_bytes > limit)
        {
            return Err(Stop::Budget);
        }
        self.rules.follow_private_keys(window, complete, self.scan);
        Ok(())
    }

    /// Follows keys through Debug or Display output, formatted as far as the snapshot would.
    pub(super) fn formatted(&mut self, args: fmt::Arguments<'_>) -> Result<(), Stop> {
        let keep = (self.limits.max_string_bytes as usize).saturating_add(SCAN_MARGIN);
        let mut writer = BoundedWriter::new(String::new(), keep);
        let _ = writer.write_fmt(args);
        self.text(&writer.text)
    }
}

/// A serializer that keeps nothing and follows keys through every text it is given.
pub struct KeyFollower<'a, 'f> {
    pub(super) follow: &'a mut Follow<'f>,
    /// As a capture's depth: the value at the root of a point field is at 0.
    pub(super) depth: u32,
}

impl<'a, 'f> KeyFollower<'a, 'f> {
    /// The walker of a container's elements: at most `limit` of them, none past the depth
    /// limit (the snapshot does not look inside such a container either).
    fn compound(self, limit: u32) -> Compound<'a, 'f> {
        let left = (self.depth < self.follow.limits.max_depth).then_some(limit);
        Compound {
            follow: self.follow,
            depth: self.depth + 1,
            left,
            value_pending: false,
        }
    }

    fn collection(self) -> Compound<'a, 'f> {
        let limit = self.follow.limits.max_collection_len;
        self.compound(limit)
    }

    fn members(self) -> Compound<'a, 'f> {
        self.compound(u32::MAX)
    }
}

/// A container being walked.
pub struct Compound<'a, 'f> {
    follow: &'a mut Follow<'f>,
    /// The depth of its elements.
    depth: u32,
    /// Elements or entries still to walk; `None` past the depth limit.
    left: Option<u32>,
    /// A map entry's key was walked, so its value is too.
    value_pending: bool,
}

impl Compound<'_, '_> {
    /// Takes one element within the limit; false when it is not walked.
    fn take(&mut self) -> bool {
        match &mut self.left {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    fn walk<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(KeyFollower {
            follow: self.follow,
            depth: self.depth,
        })
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        if self.take() {
            self.walk(value)
        } else {
            Ok(())
        }
    }
}

impl<'a, 'f> ser::Serializer for KeyFollower<'a, 'f> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Compound<'a, 'f>;
    type SerializeTuple = Compound<'a, 'f>;
    type SerializeTupleStruct = Compound<'a, 'f>;
    type SerializeTupleVariant = Compound<'a, 'f>;
    type SerializeMap = Compound<'a, 'f>;
    type SerializeStruct = Compound<'a, 'f>;
    type SerializeStructVariant = Compound<'a, 'f>;

    fn serialize_bool(self, _: bool) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_i128(self, _: i128) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_u128(self, _: u128) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_str(self, text: &str) -> Result<(), Stop> {
        self.follow.text(text)
    }
    fn serialize_bytes(self, bytes: &[u8]) -> Result<(), Stop> {
        // The snapshot scans bytes by their text; a BEGIN line is ASCII either way.
        self.follow.text(&String::from_utf8_lossy(bytes))
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        let mut payload = self.members();
        payload.element(value)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a, 'f>, Stop> {
        Ok(self.collection())
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a, 'f>, Stop> {
        Ok(self.collection())
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a, 'f>, Stop> {
        Ok(self.members())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a, 'f>, Stop> {
        Ok(self.members())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a, 'f>, Stop> {
        Ok(self.collection())
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a, 'f>, Stop> {
        Ok(self.members())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Compound<'a, 'f>, Stop> {
        Ok(self.members())
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), Stop> {
        self.follow.formatted(format_args!("{value}"))
    }
}

/// Lists, tuples, structs and variants: each element or member walked in turn.
macro_rules! impl_element_traits {
    ($($trait:ident :: $method:ident ($($name:ident: $ty:ty),*)),* $(,)?) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = Stop;

            fn $method<T: Serialize + ?Sized>(&mut self, $($name: $ty,)* value: &T) -> Result<(), Stop> {
                $(let _ = $name;)*
                self.element(value)
            }

            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    )*};
}

impl_element_traits!(
    SerializeSeq::serialize_element(),
    SerializeTuple::serialize_element(),
    SerializeTupleStruct::serialize_field(),
    SerializeTupleVariant::serialize_field(),
    SerializeStruct::serialize_field(key: &'static str),
    SerializeStructVariant::serialize_field(key: &'static str),
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Stop;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Stop> {
        self.value_pending = self.take();
        if self.value_pending {
            self.walk(key)
        } else {
            Ok(())
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Stop> {
        if std::mem::take(&mut self.value_pending) {
            self.walk(value)
        } else {
            Ok(())
        }
    }

    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}
