//! Reads one scalar out of a value's `Serialize` along a member path, as the general path would
//! capture it — or declines ([`Declined`]) at the first shape, limit or rule that could make
//! the two differ. The reading half of the direct condition path ([`super::direct`]), in its
//! own module because every `snapshot!` field type names it ([`crate::capture::serialize::field`])
//! and so it must not depend on the fields themselves.

use serde::ser::{self, Impossible, Serialize};

use crate::condition::projection::Projection;
use crate::limits::CaptureLimits;
use crate::redaction::{PairRole, RedactionRules, field_pair_role};

/// What the reader needs besides the value: the limits and rules the general path would
/// capture with.
pub(crate) struct Reading<'a> {
    pub limits: &'a CaptureLimits,
    pub rules: &'a RedactionRules,
}

/// Serializes a value only as far as the path it is asked for; every other shape declines.
pub struct PathReader<'p, 'r> {
    /// Member names still to follow.
    rest: &'p [String],
    /// What the condition reads of this value: which of its members the general path
    /// captures (and counts against the struct-field limit).
    projection: &'p Projection,
    /// Containers above this value, as the general path counts depth.
    depth: u32,
    reading: &'p Reading<'r>,
}

impl<'p, 'r> PathReader<'p, 'r> {
    /// A reader of the member path `rest` (the first name, the point's field, already
    /// followed) of a point's field, which the condition reads as `projection` says.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn new(
        rest: &'p [String],
        projection: &'p Projection,
        reading: &'p Reading<'r>,
    ) -> PathReader<'p, 'r> {
        PathReader {
            rest,
            projection,
            depth: 0,
            reading,
        }
    }

    /// Reads `value` along the path.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn read<T: Serialize + ?Sized>(self, value: &T) -> Option<Scalar> {
        value.serialize(self).ok().flatten()
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn leaf(self, scalar: Scalar) -> Result<Option<Scalar>, Declined> {
        if !self.rest.is_empty() {
            return Err(Declined);
        }
        Ok(Some(scalar))
    }

    /// A 64-bit integer, unless the general path would withhold it as a card number.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn integer(self, magnitude: u64, scalar: Scalar) -> Result<Option<Scalar>, Declined> {
        if self.reading.rules.sensitive_u64(magnitude).is_some() {
            return Err(Declined);
        }
        self.leaf(scalar)
    }
}

/// A captured bool or number, as the direct path reads it without a tape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
}

/// The direct path cannot answer: the general path decides.
#[derive(Debug)]
pub struct Declined;

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("declined")
    }
}

impl std::error::Error for Declined {}

impl ser::Error for Declined {
    fn custom<T: std::fmt::Display>(_: T) -> Declined {
        Declined
    }
}

type Read = Result<Option<Scalar>, Declined>;

impl<'p, 'r> ser::Serializer for PathReader<'p, 'r> {
    type Ok = Option<Scalar>;
    type Error = Declined;
    type SerializeSeq = Impossible<Option<Scalar>, Declined>;
    type SerializeTuple = Impossible<Option<Scalar>, Declined>;
    type SerializeTupleStruct = Impossible<Option<Scalar>, Declined>;
    type SerializeTupleVariant = Impossible<Option<Scalar>, Declined>;
    type SerializeMap = Impossible<Option<Scalar>, Declined>;
    type SerializeStruct = StructReader<'p, 'r>;
    type SerializeStructVariant = Impossible<Option<Scalar>, Declined>;

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_bool(self, v: bool) -> Read {
        self.leaf(Scalar::Bool(v))
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i8(self, v: i8) -> Read {
        self.serialize_i64(v.into())
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i16(self, v: i16) -> Read {
        self.serialize_i64(v.into())
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i32(self, v: i32) -> Read {
        self.serialize_i64(v.into())
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i64(self, v: i64) -> Read {
        self.integer(v.unsigned_abs(), Scalar::Int(v))
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_i128(self, v: i128) -> Read {
        // Past 64 bits the general path keeps the decimal text: a string, declined.
        self.serialize_i64(i64::try_from(v).map_err(|_| Declined)?)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u8(self, v: u8) -> Read {
        self.serialize_u64(v.into())
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u16(self, v: u16) -> Read {
        self.serialize_u64(v.into())
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u32(self, v: u32) -> Read {
        self.serialize_u64(v.into())
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u64(self, v: u64) -> Read {
        self.integer(v, Scalar::Uint(v))
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_u128(self, v: u128) -> Read {
        self.serialize_u64(u64::try_from(v).map_err(|_| Declined)?)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_f32(self, v: f32) -> Read {
        self.serialize_f64(v.into())
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_f64(self, v: f64) -> Read {
        self.leaf(Scalar::Double(v))
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_char(self, _: char) -> Read {
        Err(Declined)
    }
    /// Declined before formatting: serde's default formats the whole value into a `String`
    /// first, with no bound, where the general path stops at its format cap.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn collect_str<T: std::fmt::Display + ?Sized>(self, _: &T) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_str(self, _: &str) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_bytes(self, _: &[u8]) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_none(self) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Read {
        value.serialize(self)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_unit(self) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_unit_struct(self, _: &'static str) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Read {
        // A newtype whose name withholds it (`ApiKey(String)`): the general path withholds it
        // (`SnapshotBuilder::label_withholds`) and decides.
        if name == crate::secret::SECRET_MARKER || self.reading.rules.sensitive_name(name).is_some()
        {
            return Err(Declined);
        }
        value.serialize(self)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Read {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Declined> {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Declined> {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Declined> {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Declined> {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Declined> {
        Err(Declined)
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<StructReader<'p, 'r>, Declined> {
        // A struct as the compared value, or one the general path cuts for depth.
        if self.rest.is_empty() || self.depth >= self.reading.limits.max_depth {
            return Err(Declined);
        }
        Ok(StructReader {
            parent: self,
            taken_before: 0,
            seen: 0,
            found: None,
        })
    }
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Declined> {
        Err(Declined)
    }
}

/// Follows one member of a struct, counting the members the general path takes before it
/// (at most `max_struct_fields`, captured or left out).
pub struct StructReader<'p, 'r> {
    parent: PathReader<'p, 'r>,
    taken_before: u32,
    /// The projected members met so far, by index; a member past the 64th declines.
    seen: u64,
    found: Option<Read>,
}

impl ser::SerializeStruct for StructReader<'_, '_> {
    type Ok = Option<Scalar>;
    type Error = Declined;

    /// A decline sticks: a hand-written `Serialize` may drop the error and go on to `end`,
    /// which must not then answer with what it found before.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Declined> {
        let followed = self.member(key, value);
        if followed.is_err() {
            self.found = Some(Err(Declined));
        }
        followed
    }

    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn end(self) -> Read {
        self.found.unwrap_or(Err(Declined))
    }
}

impl StructReader<'_, '_> {
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn member<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Declined> {
        let projection = self.parent.projection;
        // The general capture takes no member past the limit, read or left out: one read
        // there is for it to answer about.
        let within_limit = self.taken_before < self.parent.reading.limits.max_struct_fields;
        self.taken_before = self.taken_before.saturating_add(1);
        let Some(index) = projection.member_index(key) else {
            return Ok(());
        };
        if !within_limit {
            return Err(Declined);
        }
        // A member the condition reads, named twice by a hand-written `Serialize`: the general
        // capture charges every copy against the snapshot's size, which this reading does not
        // follow, so the answer could differ. Keys are still looked at once the value is found.
        let bit = u32::try_from(index)
            .ok()
            .and_then(|index| 1u64.checked_shl(index))
            .ok_or(Declined)?;
        if self.seen & bit != 0 {
            return Err(Declined);
        }
        self.seen |= bit;
        if self.found.is_some() {
            return Ok(());
        }
        let (next, rest) = self.parent.rest.split_first().ok_or(Declined)?;
        if key != next.as_str() {
            return Ok(());
        }
        // The `value` of a name/value pair is withheld when its `name` names a secret, which
        // this reading does not look at: the general path decides.
        if field_pair_role(key) == Some(PairRole::Value) {
            return Err(Declined);
        }
        let member = projection.member_at(index).ok_or(Declined)?;
        let child = PathReader {
            rest,
            projection: member,
            depth: self.parent.depth + 1,
            reading: self.parent.reading,
        };
        self.found = Some(value.serialize(child));
        Ok(())
    }
}
