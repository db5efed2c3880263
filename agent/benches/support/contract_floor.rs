//! The contract floor: the least that any hit meeting the snapshot contract must do, each step
//! in the leanest way available, to time cold beside the agent's hit.
//!
//! A snapshot carries the hit's time, its trace context with the span fields, and a copy of the
//! named values, taken on the host's thread before the point returns (the values are borrowed)
//! and handed to another thread. [`contract_floor`] does exactly that and nothing more: it reads
//! the wall and monotonic clocks, walks the span stack in `tracing-subscriber`'s registry and
//! looks up each span's record, copies the value through its `Serialize` into a reused buffer
//! with [`Copier`] — each scalar's bytes and each string's, no names, no structure, no limits,
//! no redaction bookkeeping — and stores one word for a polling reader to take. The structured
//! floor copies with the host's own `serde_json` instead, the leanest serializer at hand that
//! keeps names and structure, as a snapshot must (though still with no limits). Whatever the
//! agent's hit costs above this floor under the same conditions is the agent's own; what the
//! floor costs, no implementation of the contract can avoid on that machine.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime};

use serde::ser::{self, Serialize};

/// The other end of the floor's hand-off: a thread that polls a one-slot queue, as the agent's
/// thread polls a capture's stream on its tick, and says when it took a hand-off. It stops
/// once the `FloorReader` is dropped. The floor
/// only stores into the slot: waking a reader would cost it a system call, which the agent's
/// hit does not make either.
pub struct FloorReader {
    slot: Arc<AtomicUsize>,
    taken: Receiver<usize>,
}

impl FloorReader {
    /// The agent's thread looks at a busy capture's queue this often (`stream::DRAIN_TICK`).
    const POLL: Duration = Duration::from_millis(5);

    pub fn spawn() -> FloorReader {
        let slot = Arc::new(AtomicUsize::new(0));
        let (tell, taken) = channel::<usize>();
        let polled = Arc::clone(&slot);
        std::thread::spawn(move || {
            // Until the `FloorReader` is dropped, the slot's last other holder.
            while Arc::strong_count(&polled) > 1 {
                std::thread::sleep(Self::POLL);
                let len = polled.swap(0, Ordering::Acquire);
                if len != 0 && tell.send(len).is_err() {
                    return;
                }
            }
        });
        FloorReader { slot, taken }
    }

    /// Waits until the reader took the last hand-off.
    pub fn wait_for_hand_off(&self) {
        self.taken
            .recv()
            .expect("the floor's reader takes every hand-off");
    }

    fn hand_off(&self, len: usize) {
        self.slot.store(len.max(1), Ordering::Release);
    }
}

/// The floor of one hit (see the module docs), with `copy` copying the value and returning how
/// many bytes it wrote: [`Copier::copy`] for the least copy, or the host's own serializer for
/// the least copy that keeps the value's structure.
#[inline(never)]
pub fn contract_floor(reader: &FloorReader, copy: impl FnOnce() -> usize) {
    black_box(SystemTime::now());
    black_box(Instant::now());
    walk_span_stack();
    reader.hand_off(copy());
}

/// The current span's id, and each span of its stack looked up in the registry with its record,
/// as reading the spans' fields needs.
fn walk_span_stack() {
    use tracing_subscriber::registry::{LookupSpan as _, Registry};
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let (Some(id), Some(registry)) = (current.id(), dispatch.downcast_ref::<Registry>()) else {
            return;
        };
        if let Some(span) = registry.span(id) {
            for span in span.scope() {
                black_box(span.id());
                black_box(span.extensions().get::<String>().is_some());
            }
        }
    });
}

/// The least copy of a value through `Serialize`: the bytes of each scalar and each string,
/// back to back. It keeps no names, lengths or structure, which a snapshot needs; a floor may
/// do less than the contract, never more.
#[derive(Default)]
pub struct Copier {
    bytes: Vec<u8>,
}

impl Copier {
    pub fn with_capacity(bytes: usize) -> Copier {
        Copier {
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Copies `value` over the last copy; returns the bytes written.
    pub fn copy(&mut self, value: &impl Serialize) -> usize {
        self.bytes.clear();
        value.serialize(&mut *self).expect("copying cannot fail");
        self.bytes.len()
    }
}

type Result = std::result::Result<(), std::fmt::Error>;
/// What opening a compound gives: the copier itself, which copies its members in order.
type Compound<'c> = std::result::Result<&'c mut Copier, std::fmt::Error>;

macro_rules! copy_scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, value: $ty) -> Result {
            self.bytes.extend_from_slice(&value.to_le_bytes());
            Ok(())
        })*
    };
}

impl<'c> ser::Serializer for &'c mut Copier {
    type Ok = ();
    type Error = std::fmt::Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    copy_scalars! {
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_f32: f32, serialize_f64: f64,
    }

    fn serialize_bool(self, value: bool) -> Result {
        self.bytes.push(u8::from(value));
        Ok(())
    }

    fn serialize_char(self, value: char) -> Result {
        self.serialize_u32(u32::from(value))
    }

    fn serialize_str(self, value: &str) -> Result {
        self.bytes.extend_from_slice(value.as_bytes());
        Ok(())
    }

    fn serialize_bytes(self, value: &[u8]) -> Result {
        self.bytes.extend_from_slice(value);
        Ok(())
    }

    fn serialize_none(self) -> Result {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result {
        self.serialize_u32(index)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result {
        self.serialize_u32(index)?;
        value.serialize(self)
    }

    fn serialize_seq(self, _: Option<usize>) -> Compound<'c> {
        Ok(self)
    }

    fn serialize_tuple(self, _: usize) -> Compound<'c> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Compound<'c> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Compound<'c> {
        self.variant(index)
    }

    fn serialize_map(self, _: Option<usize>) -> Compound<'c> {
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Compound<'c> {
        Ok(self)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Compound<'c> {
        self.variant(index)
    }
}

impl Copier {
    /// A variant with members: its index, then the members.
    fn variant(&mut self, index: u32) -> Compound<'_> {
        ser::Serializer::serialize_u32(&mut *self, index)?;
        Ok(self)
    }
}

/// Every compound's elements, fields and entries are copied in order, and nothing else.
macro_rules! copy_elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {
        $(impl ser::$trait for &mut Copier {
            type Ok = ();
            type Error = std::fmt::Error;

            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result {
                Ok(())
            }
        })*
    };
}

copy_elements! {
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
}

macro_rules! copy_fields {
    ($($trait:ident),* $(,)?) => {
        $(impl ser::$trait for &mut Copier {
            type Ok = ();
            type Error = std::fmt::Error;

            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result {
                Ok(())
            }
        })*
    };
}

copy_fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for &mut Copier {
    type Ok = ();
    type Error = std::fmt::Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result {
        Ok(())
    }
}
