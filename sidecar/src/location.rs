//! Where a function's parameters are at its entry, from their DWARF location descriptions:
//! the part of a probe point that decides what a hit can show, and what it must mark as not
//! captured rather than guess.
//!
//! A probe traps the first instruction of a function (after `endbr64`, which changes no
//! register), so a location is evaluated at that pc: a location list's entry whose range holds
//! it, or the single expression. What is understood:
//! - a register (`DW_OP_regN`), memory at a register plus an offset (`DW_OP_bregN`), memory
//!   at the frame base plus an offset (`DW_OP_fbreg`) when the frame base is the CFA (GCC's
//!   `DW_OP_call_frame_cfa`; at entry on x86-64 the CFA is `rsp + 8`);
//! - pieces (`DW_OP_piece`), an empty piece being a part that was optimized out;
//! - constants (`DW_AT_const_value`, `DW_OP_implicit_value`, a literal with
//!   `DW_OP_stack_value`).
//!
//! Expressions are evaluated on a DWARF stack of bounded depth ([`MAX_STACK`]), whose entries
//! are constants or a register plus an offset: a memory location is the address on top of the
//! stack, a `DW_OP_stack_value` value is the top itself (`DW_OP_lit7; DW_OP_breg5 0;
//! DW_OP_stack_value` is rdi, not 7). Only what maps exactly onto a [`Place`] is accepted.
//!
//! What is never guessed: `DW_OP_entry_value` (only the caller knew it), a parameter with no
//! location or no list entry covering the entry pc (optimized out), bit pieces, a value
//! computed from a register (a register plus a non-zero offset), memory at a fixed address,
//! typed stack entries, any other operation. A frame-base location below the CFA, or
//! relative to a frame base that is a register (rbp, rsp: the function's own frame, which its
//! prologue sets up after the probe fires), is a slot the prologue has not written yet at
//! entry: see [`ParamLocation::InOwnFrame`].

use gimli::{Encoding, EndianSlice, Expression, Operation, RunTimeEndian};

/// The bytes of a DWARF section as gimli reads them, here and in `crate::dwarf`.
pub(crate) type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// x86-64 DWARF register numbers the sidecar reads at a probe hit.
pub const RSP: u16 = 7;

/// The general-purpose registers by DWARF number, with their names (for Describe and errors).
pub const REGISTER_NAMES: [&str; 17] = [
    "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip",
];

/// The System V integer argument registers, in order, as DWARF numbers (rdi, rsi, rdx, rcx,
/// r8, r9).
pub const SYSV_INTEGER_ARGS: [u16; 6] = [5, 4, 1, 2, 8, 9];

/// Where one part of a value is when the probe fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// In a general-purpose register (DWARF number).
    Register(u16),
    /// In memory, at a register's value plus an offset.
    Memory { register: u16, offset: i64 },
    /// A value the compiler knows (the bytes, little-endian).
    Value(Vec<u8>),
    /// This part was optimized out.
    Gone,
}

/// One part of a value: its place and how many bytes it holds (`None`: the whole value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub place: Place,
    pub size: Option<u64>,
}

/// What the frame base of a function is, as far as entry-time evaluation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameBase {
    /// `DW_OP_call_frame_cfa`: `rsp + 8` at entry.
    Cfa,
    /// A register (rbp, rsp): the function's own frame, not set up yet at entry.
    Register,
    /// None, or an expression not understood.
    Unknown,
}

/// Where a parameter is at the function's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamLocation {
    Pieces(Vec<Piece>),
    /// A slot in the function's own frame, written by its prologue after the entry: code built
    /// without optimization describes its parameters this way for the whole function. At entry
    /// the value is still where the calling convention put it; the resolver decides whether
    /// that can be known for sure (see `crate::probe`).
    InOwnFrame,
    /// Not capturable, and why (shown to the engineer as `not_captured`).
    NotCaptured(&'static str),
}

/// The highest DWARF register number a probe hit samples (r15; rip is 16 and never holds a
/// value).
pub const LAST_SAMPLED: u16 = 15;
pub const VECTOR_REGISTER: &str =
    "it is in a vector register (XMM: floating point), which uprobes do not sample";
pub const OPTIMIZED_OUT: &str = "optimized out at the function's entry";
pub const ENTRY_VALUE: &str =
    "only its value in the caller is described (DW_OP_entry_value); not guessed";

/// The deepest DWARF stack an expression may build: compilers use two or three entries.
pub const MAX_STACK: usize = 64;

/// One entry of the DWARF stack, as far as entry-time evaluation models it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Constant(u64),
    /// A register's value plus an offset (`DW_OP_bregN`, `DW_OP_fbreg` with the CFA).
    RegisterPlus {
        register: u16,
        offset: i64,
    },
}

/// How the current piece is located once its location operation is read: after one of these,
/// only `DW_OP_piece` or the end of the expression may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Located {
    /// `DW_OP_regN`: the value is the register.
    Register(u16),
    /// `DW_OP_implicit_value`.
    Implicit(Vec<u8>),
    /// `DW_OP_stack_value`: the value is this entry (the top of the stack).
    Value(Entry),
}

const NOT_EVALUATED: &str = "its location is an expression the sidecar does not evaluate";

/// Evaluates one location expression at the entry pc.
pub fn evaluate(
    expression: Expression<Slice<'_>>,
    encoding: Encoding,
    frame_base: FrameBase,
) -> ParamLocation {
    match evaluate_pieces(expression, encoding, frame_base) {
        Ok(location) | Err(location) => location,
    }
}

/// Why a parameter whose location expression cannot be read is not captured.
const MALFORMED: &str = "its location expression is malformed";

/// A parameter not captured, for `why`: the early `Err` of every refusal below.
fn refuse<T>(why: &'static str) -> Result<T, ParamLocation> {
    Err(ParamLocation::NotCaptured(why))
}

/// [`evaluate`], with every refusal an early `Err`.
fn evaluate_pieces(
    expression: Expression<Slice<'_>>,
    encoding: Encoding,
    frame_base: FrameBase,
) -> Result<ParamLocation, ParamLocation> {
    let mut operations = expression.operations(encoding);
    let mut pieces = Vec::new();
    let mut stack: Vec<Entry> = Vec::new();
    let mut located: Option<Located> = None;
    loop {
        let operation = match operations.next() {
            Ok(Some(operation)) => operation,
            Ok(None) => break,
            Err(_) => return refuse(MALFORMED),
        };
        // A location operation ends its piece: only a piece (or the end) may follow it.
        if located.is_some() && !matches!(operation, Operation::Piece { .. } | Operation::Nop) {
            return refuse(NOT_EVALUATED);
        }
        match operation {
            Operation::Register { register } if register.0 > LAST_SAMPLED => {
                return refuse(VECTOR_REGISTER);
            }
            Operation::Register { register } if stack.is_empty() => {
                located = Some(Located::Register(register.0));
            }
            Operation::RegisterOffset {
                register,
                offset,
                base_type,
            } if base_type.0 == 0 => push(
                &mut stack,
                Entry::RegisterPlus {
                    register: register.0,
                    offset,
                },
            )?,
            Operation::FrameOffset { offset } => match frame_base {
                FrameBase::Cfa if offset >= 0 => {
                    // The CFA is rsp + 8 at entry; an offset past i64 is no place.
                    let Some(offset) = offset.checked_add(8) else {
                        return refuse(NOT_EVALUATED);
                    };
                    push(
                        &mut stack,
                        Entry::RegisterPlus {
                            register: RSP,
                            offset,
                        },
                    )?;
                }
                FrameBase::Cfa | FrameBase::Register => return Ok(ParamLocation::InOwnFrame),
                FrameBase::Unknown => {
                    return refuse(
                        "its location is relative to a frame base the sidecar does not evaluate",
                    );
                }
            },
            Operation::UnsignedConstant { value } => push(&mut stack, Entry::Constant(value))?,
            Operation::SignedConstant { value } => {
                push(&mut stack, Entry::Constant(value as u64))?;
            }
            Operation::PlusConstant { value } => match stack.pop() {
                Some(Entry::Constant(c)) => stack.push(Entry::Constant(c.wrapping_add(value))),
                Some(Entry::RegisterPlus { register, offset }) => {
                    let Some(offset) = i64::try_from(value)
                        .ok()
                        .and_then(|value| offset.checked_add(value))
                    else {
                        return refuse(NOT_EVALUATED);
                    };
                    stack.push(Entry::RegisterPlus { register, offset });
                }
                None => return refuse(MALFORMED),
            },
            Operation::StackValue => match stack.pop() {
                Some(top) => {
                    located = Some(Located::Value(top));
                    stack.clear();
                }
                None => return refuse(MALFORMED),
            },
            Operation::ImplicitValue { data } if stack.is_empty() => {
                located = Some(Located::Implicit(data.to_vec()));
            }
            Operation::Piece {
                size_in_bits,
                bit_offset,
            } => {
                if bit_offset.is_some() || size_in_bits % 8 != 0 {
                    return refuse("it is split into bit pieces");
                }
                let place = place(located.take(), &mut stack)?;
                pieces.push(Piece {
                    place,
                    size: Some(size_in_bits / 8),
                });
            }
            Operation::EntryValue { .. } => return refuse(ENTRY_VALUE),
            Operation::Nop => {}
            _ => return refuse(NOT_EVALUATED),
        }
    }
    let rest = place(located, &mut stack)?;
    match (pieces.is_empty(), rest) {
        (true, Place::Gone) => refuse(OPTIMIZED_OUT),
        (true, place) => Ok(ParamLocation::Pieces(vec![Piece { place, size: None }])),
        (false, Place::Gone) if pieces.iter().all(|p| p.place == Place::Gone) => {
            refuse(OPTIMIZED_OUT)
        }
        (false, Place::Gone) => Ok(ParamLocation::Pieces(pieces)),
        (false, _) => refuse("its location expression has a part outside its pieces"),
    }
}

/// Pushes onto the DWARF stack, refusing past [`MAX_STACK`].
fn push(stack: &mut Vec<Entry>, entry: Entry) -> Result<(), ParamLocation> {
    if stack.len() >= MAX_STACK {
        return Err(ParamLocation::NotCaptured(
            "its location expression is deeper than the sidecar evaluates",
        ));
    }
    stack.push(entry);
    Ok(())
}

/// Where a piece is, from how it was located and the stack its operations left: nothing at
/// all is a part optimized out; otherwise exactly one place, or a refusal.
fn place(located: Option<Located>, stack: &mut Vec<Entry>) -> Result<Place, ParamLocation> {
    let place = match located {
        Some(Located::Register(register)) => Place::Register(register),
        Some(Located::Implicit(data)) => Place::Value(data),
        Some(Located::Value(Entry::Constant(value))) => Place::Value(value.to_le_bytes().to_vec()),
        Some(Located::Value(Entry::RegisterPlus {
            register,
            offset: 0,
        })) => {
            if register > LAST_SAMPLED {
                return refuse(VECTOR_REGISTER);
            }
            Place::Register(register)
        }
        Some(Located::Value(Entry::RegisterPlus { .. })) => {
            return refuse("its value is computed from a register; not evaluated");
        }
        // A memory location: the address on top of the stack; nothing below it.
        None => match stack.as_slice() {
            [] => Place::Gone,
            [Entry::RegisterPlus { register, offset }] => Place::Memory {
                register: *register,
                offset: *offset,
            },
            [Entry::Constant(_)] => {
                return refuse("it is in memory at a fixed address the sidecar does not read");
            }
            _ => return refuse(NOT_EVALUATED),
        },
    };
    stack.clear();
    Ok(place)
}

/// The name of a DWARF register number, for Describe.
pub fn register_name(register: u16) -> &'static str {
    REGISTER_NAMES
        .get(usize::from(register))
        .copied()
        .unwrap_or("a register the sidecar does not sample")
}

impl ParamLocation {
    /// A short description for `--check` output.
    pub fn describe(&self) -> String {
        match self {
            ParamLocation::InOwnFrame => "in its own frame (not written at entry)".into(),
            ParamLocation::NotCaptured(why) => format!("not captured: {why}"),
            ParamLocation::Pieces(pieces) => pieces
                .iter()
                .map(|piece| {
                    let place = match &piece.place {
                        Place::Register(r) => register_name(*r).to_owned(),
                        Place::Memory { register, offset } => {
                            format!("[{}{offset:+}]", register_name(*register))
                        }
                        Place::Value(bytes) => format!("constant ({} bytes)", bytes.len()),
                        Place::Gone => "optimized out".into(),
                    };
                    match piece.size {
                        Some(size) => format!("{place} ({size} bytes)"),
                        None => place,
                    }
                })
                .collect::<Vec<_>>()
                .join(" + "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimli::{EndianSlice, Format, RunTimeEndian};

    fn eval(bytes: &[u8], frame_base: FrameBase) -> ParamLocation {
        let encoding = Encoding {
            format: Format::Dwarf32,
            version: 5,
            address_size: 8,
        };
        evaluate(
            Expression(EndianSlice::new(bytes, RunTimeEndian::Little)),
            encoding,
            frame_base,
        )
    }

    fn whole(place: Place) -> ParamLocation {
        ParamLocation::Pieces(vec![Piece { place, size: None }])
    }

    #[test]
    fn a_frame_offset_past_i64_is_refused_not_saturated() {
        // DW_OP_fbreg i64::MAX: the CFA (rsp + 8) plus it is past any offset from rsp.
        let mut bytes = vec![0x91];
        bytes.extend_from_slice(&[0xff; 9]);
        bytes.push(0x00);
        assert!(
            matches!(eval(&bytes, FrameBase::Cfa), ParamLocation::NotCaptured(_)),
            "{:?}",
            eval(&bytes, FrameBase::Cfa)
        );
    }

    #[test]
    fn registers_memory_and_constants_are_places() {
        // DW_OP_reg5 (rdi)
        assert_eq!(eval(&[0x55], FrameBase::Unknown), whole(Place::Register(5)));
        // DW_OP_breg7 (rsp) +8
        assert_eq!(
            eval(&[0x77, 0x08], FrameBase::Unknown),
            whole(Place::Memory {
                register: 7,
                offset: 8
            })
        );
        // DW_OP_fbreg +0 with the CFA as frame base: the caller's outgoing argument area.
        assert_eq!(
            eval(&[0x91, 0x00], FrameBase::Cfa),
            whole(Place::Memory {
                register: RSP,
                offset: 8
            })
        );
        // DW_OP_lit6 DW_OP_stack_value
        assert_eq!(
            eval(&[0x36, 0x9f], FrameBase::Unknown),
            whole(Place::Value(6u64.to_le_bytes().to_vec()))
        );
    }

    #[test]
    fn the_functions_own_frame_and_entry_values_are_never_read_at_entry() {
        // DW_OP_fbreg -20 (gcc -O0): written by the prologue, after the probe.
        assert_eq!(
            eval(&[0x91, 0x6c], FrameBase::Cfa),
            ParamLocation::InOwnFrame
        );
        assert_eq!(
            eval(&[0x91, 0x10], FrameBase::Register),
            ParamLocation::InOwnFrame
        );
        // DW_OP_entry_value(DW_OP_reg5) DW_OP_stack_value
        assert_eq!(
            eval(&[0xa3, 0x01, 0x55, 0x9f], FrameBase::Cfa),
            ParamLocation::NotCaptured(ENTRY_VALUE)
        );
    }

    #[test]
    fn pieces_keep_their_sizes_and_empty_ones_are_optimized_out() {
        // DW_OP_piece 8 (empty), DW_OP_lit6 DW_OP_stack_value DW_OP_piece 8: a &str whose
        // pointer was optimized out, as rustc emits it.
        assert_eq!(
            eval(&[0x93, 0x08, 0x36, 0x9f, 0x93, 0x08], FrameBase::Unknown),
            ParamLocation::Pieces(vec![
                Piece {
                    place: Place::Gone,
                    size: Some(8)
                },
                Piece {
                    place: Place::Value(6u64.to_le_bytes().to_vec()),
                    size: Some(8)
                },
            ])
        );
        // DW_OP_reg5 DW_OP_piece 8 DW_OP_reg4 DW_OP_piece 8
        assert_eq!(
            eval(&[0x55, 0x93, 0x08, 0x54, 0x93, 0x08], FrameBase::Unknown),
            ParamLocation::Pieces(vec![
                Piece {
                    place: Place::Register(5),
                    size: Some(8)
                },
                Piece {
                    place: Place::Register(4),
                    size: Some(8)
                },
            ])
        );
        assert_eq!(
            eval(&[0x93, 0x08], FrameBase::Unknown),
            ParamLocation::NotCaptured(OPTIMIZED_OUT)
        );
        assert_eq!(
            eval(&[], FrameBase::Unknown),
            ParamLocation::NotCaptured(OPTIMIZED_OUT)
        );
    }

    #[test]
    fn expressions_are_evaluated_on_a_stack_or_refused() {
        // DW_OP_lit7 DW_OP_breg5 0 DW_OP_stack_value: the value is the top, rdi.
        assert_eq!(
            eval(&[0x37, 0x75, 0x00, 0x9f], FrameBase::Unknown),
            whole(Place::Register(5))
        );
        // DW_OP_breg5 0 DW_OP_lit7 DW_OP_stack_value: the top is 7.
        assert_eq!(
            eval(&[0x75, 0x00, 0x37, 0x9f], FrameBase::Unknown),
            whole(Place::Value(7u64.to_le_bytes().to_vec()))
        );
        // DW_OP_breg5 8 DW_OP_stack_value: rdi + 8 is computed, not a place.
        assert!(matches!(
            eval(&[0x75, 0x08, 0x9f], FrameBase::Unknown),
            ParamLocation::NotCaptured(_)
        ));
        // DW_OP_breg7 0 DW_OP_plus_uconst 16: memory at rsp + 16.
        assert_eq!(
            eval(&[0x77, 0x00, 0x23, 0x10], FrameBase::Unknown),
            whole(Place::Memory {
                register: 7,
                offset: 16
            })
        );
        // DW_OP_lit1 DW_OP_breg7 0: two entries, an address with a stray value under it.
        assert!(matches!(
            eval(&[0x31, 0x77, 0x00], FrameBase::Unknown),
            ParamLocation::NotCaptured(_)
        ));
        // DW_OP_reg5 DW_OP_lit1: nothing may follow a register but a piece.
        assert!(matches!(
            eval(&[0x55, 0x31], FrameBase::Unknown),
            ParamLocation::NotCaptured(_)
        ));
        // DW_OP_lit1 DW_OP_lit2 DW_OP_plus DW_OP_stack_value: an operation not modelled.
        assert!(matches!(
            eval(&[0x31, 0x32, 0x22, 0x9f], FrameBase::Unknown),
            ParamLocation::NotCaptured(_)
        ));
        // DW_OP_stack_value on an empty stack is malformed.
        assert!(matches!(
            eval(&[0x9f], FrameBase::Unknown),
            ParamLocation::NotCaptured(_)
        ));
        // A stack deeper than MAX_STACK is refused, not grown.
        let deep = vec![0x30; MAX_STACK + 1];
        assert!(matches!(
            eval(&deep, FrameBase::Unknown),
            ParamLocation::NotCaptured(_)
        ));
    }
}
