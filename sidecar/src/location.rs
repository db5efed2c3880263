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
//! What is never guessed: `DW_OP_entry_value` (only the caller knew it), a parameter with no
//! location or no list entry covering the entry pc (optimized out), bit pieces, any other
//! expression. A frame-base location below the CFA, or relative to a frame base that is a
//! register (rbp, rsp: the function's own frame, which its prologue sets up after the probe
//! fires), is a slot the prologue has not written yet at entry: see [`ParamLocation::InOwnFrame`].

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

/// Evaluates one location expression at the entry pc.
pub fn evaluate(
    expression: Expression<Slice<'_>>,
    encoding: Encoding,
    frame_base: FrameBase,
) -> ParamLocation {
    let mut operations = expression.operations(encoding);
    let mut pieces = Vec::new();
    let mut current: Option<Place> = None;
    // A constant waiting for DW_OP_stack_value.
    let mut constant: Option<u64> = None;
    loop {
        let operation = match operations.next() {
            Ok(Some(operation)) => operation,
            Ok(None) => break,
            Err(_) => return ParamLocation::NotCaptured("its location expression is malformed"),
        };
        match operation {
            Operation::Register { register } if register.0 > LAST_SAMPLED => {
                return ParamLocation::NotCaptured(VECTOR_REGISTER);
            }
            Operation::Register { register } => current = Some(Place::Register(register.0)),
            Operation::RegisterOffset {
                register, offset, ..
            } => {
                current = Some(Place::Memory {
                    register: register.0,
                    offset,
                })
            }
            Operation::FrameOffset { offset } => match frame_base {
                FrameBase::Cfa if offset >= 0 => {
                    current = Some(Place::Memory {
                        register: RSP,
                        offset: offset.saturating_add(8),
                    })
                }
                FrameBase::Cfa | FrameBase::Register => return ParamLocation::InOwnFrame,
                FrameBase::Unknown => {
                    return ParamLocation::NotCaptured(
                        "its location is relative to a frame base the sidecar does not evaluate",
                    );
                }
            },
            Operation::UnsignedConstant { value } => constant = Some(value),
            Operation::SignedConstant { value } => constant = Some(value as u64),
            Operation::StackValue => match constant.take() {
                Some(value) => current = Some(Place::Value(value.to_le_bytes().to_vec())),
                None => {
                    return ParamLocation::NotCaptured(
                        "its value is computed by an expression the sidecar does not evaluate",
                    );
                }
            },
            Operation::ImplicitValue { data } => current = Some(Place::Value(data.to_vec())),
            Operation::Piece {
                size_in_bits,
                bit_offset,
            } => {
                if bit_offset.is_some() || size_in_bits % 8 != 0 {
                    return ParamLocation::NotCaptured("it is split into bit pieces");
                }
                pieces.push(Piece {
                    place: current.take().unwrap_or(Place::Gone),
                    size: Some(size_in_bits / 8),
                });
            }
            Operation::EntryValue { .. } => return ParamLocation::NotCaptured(ENTRY_VALUE),
            Operation::Nop => {}
            _ => {
                return ParamLocation::NotCaptured(
                    "its location is an expression the sidecar does not evaluate",
                );
            }
        }
    }
    match (pieces.is_empty(), current) {
        (true, Some(place)) => ParamLocation::Pieces(vec![Piece { place, size: None }]),
        (true, None) => ParamLocation::NotCaptured(OPTIMIZED_OUT),
        (false, None) if pieces.iter().all(|p| p.place == Place::Gone) => {
            ParamLocation::NotCaptured(OPTIMIZED_OUT)
        }
        (false, None) => ParamLocation::Pieces(pieces),
        (false, Some(_)) => {
            ParamLocation::NotCaptured("its location expression has a part outside its pieces")
        }
    }
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
}
