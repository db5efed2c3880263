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
//! depth limit — so it can only find more keys open than the snapshot does, never fewer. Its
//! texts are paid from the condition's scan budget, at `cost::followed`; a walk that would
//! pass it stops the condition's capture ([`Stop::Budget`]), since what follows could no
//! longer be masked right.

use std::fmt;

use serde::Serialize;
use serde::ser;

use super::with_formatted;
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
        let window = &text[..crate::text::floor_char_boundary(text, self.limits.text_window())];
        self.window(window, window.len() == text.len())
    }

    /// Follows keys through bytes as the snapshot scans them: the window of the bytes
    /// themselves, read as text (a BEGIN line is ASCII either way), not cut again after.
    pub(super) fn bytes(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let window = &bytes[..bytes.len().min(self.limits.text_window())];
        self.window(
            &String::from_utf8_lossy(window),
            window.len() == bytes.len(),
        )
    }

    /// Follows keys through Debug or Display output, formatted as far as the snapshot would.
    pub(super) fn formatted(&mut self, args: fmt::Arguments<'_>) -> Result<(), Stop> {
        let keep = self.limits.text_window();
        with_formatted(args, keep, |writer| {
            self.window(&writer.text, writer.seen == writer.text.len())
        })
    }

    /// Pays for a scan window and follows the keys in it.
    fn window(&mut self, window: &str, complete: bool) -> Result<(), Stop> {
        let cost = cost::followed(window.len() as u64);
        *self.scanned_bytes = self.scanned_bytes.saturating_add(cost);
        if self
            .scan_limit
            .is_some_and(|limit| *self.scanned_bytes > limit)
        {
            return Err(Stop::Budget);
        }
        self.rules.follow_carried_state(window, complete, self.scan);
        Ok(())
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

/// Scalars hold no text to follow.
macro_rules! ignore_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {$(
        fn $method(self, _: $ty) -> Result<(), Stop> {
            Ok(())
        }
    )*};
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

    ignore_scalars!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_i128: i128,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_u128: u128,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
    );

    fn serialize_str(self, text: &str) -> Result<(), Stop> {
        self.follow.text(text)
    }
    fn serialize_bytes(self, bytes: &[u8]) -> Result<(), Stop> {
        self.follow.bytes(bytes)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether following `walk` leaves a private key open, from a closed state.
    fn leaves_open(walk: impl FnOnce(&mut Follow<'_>) -> Result<(), Stop>) -> bool {
        let rules = RedactionRules::builtin();
        let mut scan = ScanState::default();
        let mut scanned_bytes = 0;
        let mut follow = Follow {
            rules: &rules,
            limits: &CaptureLimits::DEFAULT,
            scan: &mut scan,
            scanned_bytes: &mut scanned_bytes,
            scan_limit: None,
        };
        walk(&mut follow).expect("within budget");
        scan.private_key_open()
    }

    #[test]
    fn bytes_are_followed_over_the_snapshots_window_of_bytes_not_of_their_text() {
        // 2,000 invalid bytes read as 6,000 bytes of text: a window cut after the reading
        // would end before the BEGIN line that the snapshot's window of bytes holds.
        let mut bytes = vec![0xff; 2_000];
        bytes.extend_from_slice(b" -----BEGIN PRIVATE KEY-----\nMIIEvQ");
        assert!(leaves_open(|follow| follow.bytes(&bytes)));
        // Past the window, as the snapshot does not scan it.
        let mut far = vec![b'a'; 5_000];
        far.extend_from_slice(b" -----BEGIN PRIVATE KEY-----\nMIIEvQ");
        assert!(!leaves_open(|follow| follow.bytes(&far)));
    }

    #[test]
    fn texts_and_formatted_values_open_and_close_keys() {
        let begin = "-----BEGIN PRIVATE KEY-----\nMIIEvQ";
        assert!(leaves_open(|follow| follow.text(begin)));
        assert!(leaves_open(
            |follow| follow.formatted(format_args!("{begin:?}"))
        ));
        assert!(!leaves_open(|follow| {
            follow.text(begin)?;
            follow.text("abc\n-----END PRIVATE KEY-----")
        }));
    }
}
