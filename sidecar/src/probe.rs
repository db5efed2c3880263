//! Probe points resolved against the target: the function's entry, the address the uprobe
//! goes at, the cost class of the instruction there, and each captured parameter's type and
//! place at entry.
//!
//! **Where the probe goes.** Only at a function's entry, the `DW_AT_low_pc` of a DWARF
//! subprogram (never an inlined instance, never a pc inside a function: a breakpoint in the
//! middle of an instruction corrupts the target). When the first four bytes are `endbr64`
//! (`f3 0f 1e fa`, CET builds), the probe goes right after it: `endbr64` changes no register
//! and no memory, so the state is the entry state, and the instruction after it (usually
//! `push %rbp`) is one the kernel emulates, about 7× cheaper per hit than single-stepping
//! `endbr64` out of line (sidecar-notes §1).
//!
//! **Cost class.** The instruction at the probe address decides what a hit costs the target:
//! `push`, `nop`, `jmp`/`call` are emulated by the kernel (1 to 3 µs per hit here); anything
//! else is single-stepped out of line (6 to 15 µs). `--check` shows it and the breaker prices
//! hits by it.
//!
//! **Parameters at entry.** Locations come from [`crate::location`]. Unoptimized C code
//! describes each parameter as a slot in the function's own frame, which the prologue writes
//! after the probe fires. For C and C++ only, and only while the System V classification is
//! certain, such a parameter is read where the calling convention put it: a scalar or pointer
//! of at most 8 bytes takes the next of rdi, rsi, rdx, rcx, r8, r9. A float (XMM registers
//! are not sampled), an aggregate passed by value, an aggregate return value (its hidden
//! pointer shifts the registers), or anything after a parameter that is not classified this
//! way is reported as not captured. Rust has no stable calling convention: its own-frame
//! parameters are never guessed.

use loupe_agent::{Uncaptured, UncapturedReason};

use crate::decode::Memory;
use crate::dwarf::Function;
use crate::layout::{Compiler, Layouts, Node, NodeId};
use crate::location::{self, ParamLocation, Piece, Place};
use crate::points::ProbeSpec;
use crate::uprobe::Hit;

/// `endbr64`.
pub const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

/// What a hit costs the target, by how the kernel handles the probed instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostClass {
    /// The kernel emulates the instruction (push, nop, jmp, call).
    Emulated,
    /// The kernel single-steps a copy of the instruction out of line.
    SingleStepped,
}

impl CostClass {
    /// The cost of one hit to the target with registers and a stack sample, for the breaker's
    /// estimate: upper ends measured on this kind of machine under load. Emulated: 1.1 µs per
    /// hit in a tight loop (`benches/probe.rs`), 3.2 µs when hits are spaced out and caches
    /// are cold (`tests/probe_kill.rs`'s fixture windows). Single-stepped: 14.2 µs in a tight
    /// loop (the feasibility notes measured 5 to 8.5 µs on a quieter machine).
    pub fn nanos_per_hit(self) -> u64 {
        match self {
            CostClass::Emulated => 3_200,
            CostClass::SingleStepped => 15_000,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CostClass::Emulated => "emulated",
            CostClass::SingleStepped => "single-stepped",
        }
    }
}

/// The cost class of the instruction starting `code`.
pub fn classify(code: &[u8]) -> CostClass {
    let emulated = match code {
        // push %reg, push %r8..%r15
        [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..] => true,
        // nop, multi-byte nop
        [0x90, ..] | [0x0f, 0x1f, ..] | [0x66, 0x90, ..] | [0x66, 0x0f, 0x1f, ..] => true,
        // call rel32, jmp rel32, jmp rel8
        [0xe8, ..] | [0xe9, ..] | [0xeb, ..] => true,
        _ => false,
    };
    if emulated {
        CostClass::Emulated
    } else {
        CostClass::SingleStepped
    }
}

/// A probe's captured parameter.
#[derive(Debug, Clone)]
pub struct ResolvedParam {
    pub name: String,
    pub node: NodeId,
    pub type_name: String,
    /// Where it is at entry; `NotCaptured` when that cannot be known for sure.
    pub location: ParamLocation,
}

/// A probe point resolved against the target.
#[derive(Debug, Clone)]
pub struct ResolvedProbe {
    pub spec: ProbeSpec,
    /// Index in `Resolved::objects`.
    pub object: usize,
    pub qualified_name: String,
    /// The function's entry in the target (bias applied).
    pub entry: u64,
    /// Where the uprobe goes, in the target, and as a file offset in the object.
    pub address: u64,
    pub file_offset: u64,
    /// `endbr64` at the entry was stepped over.
    pub after_endbr64: bool,
    pub cost: CostClass,
    /// The object's file through `/proc/PID/map_files`, which the uprobe names.
    pub map_file: std::path::PathBuf,
    pub params: Vec<ResolvedParam>,
    pub decl_file: String,
    pub decl_line: u32,
}

/// Picks the one definition with an entry among `candidates`, or says why there is none.
pub fn pick_function(candidates: &[Function]) -> Result<&Function, String> {
    let defined: Vec<&Function> = candidates.iter().filter(|f| f.entry.is_some()).collect();
    let mut distinct: Vec<&Function> = Vec::new();
    for function in defined {
        if !distinct.iter().any(|seen| seen.entry == function.entry) {
            distinct.push(function);
        }
    }
    match distinct.as_slice() {
        [one] => Ok(one),
        [] if candidates.iter().any(|f| f.inlined) => Err(
            "the function is only inlined into its callers: it has no entry to probe (mark it `noinline` / `#[inline(never)]`, or probe its caller)".into(),
        ),
        [] if candidates.is_empty() => Err(
            "no function of that name in the DWARF (qualify Rust functions with their module path, e.g. `crate::module::name`, or give the linkage name)".into(),
        ),
        [] => Err("the function is declared but not defined in this object".into()),
        many => Err(format!(
            "{} different functions have that name ({}); give the linkage name of the one to probe",
            many.len(),
            many.iter()
                .map(|f| format!("{}:{}", f.decl_file, f.decl_line))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The parameters a probe captures, typed and placed; `Err` names a listed parameter the
/// function does not have.
pub fn resolve_params(
    compiler: &mut Compiler<'_, '_>,
    function: &Function,
    args: Option<&[String]>,
) -> Result<Result<Vec<ResolvedParam>, String>, crate::dwarf::DwarfError> {
    let mut all = Vec::new();
    for param in &function.params {
        let node = compiler.compile(param.type_die)?;
        all.push(ResolvedParam {
            name: param.name.clone(),
            type_name: compiler.layouts().type_name(node),
            node,
            location: param.location.clone(),
        });
    }
    let returns_aggregate = match function.return_type {
        None => false,
        Some(die) => {
            let node = compiler.compile(Some(die))?;
            !is_integer_class(compiler.layouts(), node)
                && !matches!(compiler.layouts().node(node), Node::Float { .. })
        }
    };
    place_own_frame_params(compiler.layouts(), function, returns_aggregate, &mut all);
    let Some(args) = args else {
        return Ok(Ok(all));
    };
    let mut chosen = Vec::new();
    for arg in args {
        match all.iter().find(|p| &p.name == arg) {
            Some(param) => chosen.push(param.clone()),
            None => {
                let known: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
                return Ok(Err(format!(
                    "the function has no parameter `{arg}`; it has {}",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
    }
    Ok(Ok(chosen))
}

/// A scalar or pointer the System V ABI passes in one integer register.
fn is_integer_class(layouts: &Layouts, node: NodeId) -> bool {
    matches!(
        layouts.node(node),
        Node::Int { .. }
            | Node::Bool { .. }
            | Node::Enum { .. }
            | Node::Char32
            | Node::Pointer { .. }
            | Node::Address
            | Node::CString
    ) && layouts.size(node) <= 8
}

/// Replaces [`ParamLocation::InOwnFrame`] by the register the System V ABI put the value in,
/// where that is certain (see the module docs), or by a reason it is not captured.
fn place_own_frame_params(
    layouts: &Layouts,
    function: &Function,
    returns_aggregate: bool,
    params: &mut [ResolvedParam],
) {
    let refusal: Option<&'static str> = if !function.c_language {
        Some(
            "at entry it is still where the caller put it, and this language's calling convention is not stable; not guessed",
        )
    } else if function.nocall {
        Some("the compiler changed how this function is called (DW_CC_nocall); not guessed")
    } else if returns_aggregate {
        Some(
            "the function returns an aggregate (its hidden pointer moves the argument registers); not guessed",
        )
    } else {
        None
    };
    let mut registers = location::SYSV_INTEGER_ARGS.iter();
    let mut certain = true;
    for param in params.iter_mut() {
        let integer = is_integer_class(layouts, param.node);
        let float = matches!(layouts.node(param.node), Node::Float { .. });
        if param.location == ParamLocation::InOwnFrame {
            param.location = match refusal {
                Some(why) => ParamLocation::NotCaptured(why),
                None if float => ParamLocation::NotCaptured(
                    "floating-point arguments arrive in XMM registers, which uprobes do not sample",
                ),
                None if !integer => ParamLocation::NotCaptured(
                    "an aggregate passed by value; its calling-convention class is not computed",
                ),
                None if !certain => ParamLocation::NotCaptured(
                    "it follows an argument whose calling-convention class is not computed",
                ),
                None => match registers.next() {
                    Some(register) => ParamLocation::Pieces(vec![Piece {
                        place: Place::Register(*register),
                        size: None,
                    }]),
                    None => ParamLocation::NotCaptured(
                        "passed on the stack after the six argument registers; not computed",
                    ),
                },
            };
            continue;
        }
        // A parameter located otherwise still took its ABI slot.
        if integer {
            registers.next();
        } else if !float {
            certain = false;
        }
    }
}

/// A parameter's bytes at a hit, and the address they came from (0: registers or constants).
/// Memory on the stack comes from the copy taken at the trap; other memory is read now (after
/// the trap, so racy, like every pointer the value leads to).
pub fn param_bytes(
    layouts: &Layouts,
    param: &ResolvedParam,
    hit: &Hit,
    memory: &dyn Memory,
) -> Result<(Vec<u8>, u64), Uncaptured> {
    let pieces = match &param.location {
        ParamLocation::Pieces(pieces) => pieces,
        ParamLocation::NotCaptured(why) => {
            return Err(Uncaptured::new(UncapturedReason::Unsupported, why));
        }
        ParamLocation::InOwnFrame => {
            return Err(Uncaptured::new(
                UncapturedReason::Unsupported,
                "in the function's own frame, not written at entry",
            ));
        }
    };
    // A type the sidecar does not decode says why itself (its size, often 0, would make
    // any location look too long for it).
    if let Node::Unsupported { detail, .. } = layouts.node(param.node) {
        return Err(Uncaptured::new(UncapturedReason::Unsupported, detail));
    }
    let size = layouts.size(param.node);
    if size > MAX_PARAM_BYTES {
        return Err(Uncaptured::new(
            UncapturedReason::Size,
            "a parameter passed by value larger than the sidecar copies at a hit",
        ));
    }
    let mut bytes = Vec::new();
    let mut address = 0;
    for piece in pieces {
        // A piece's size is a number in the DWARF: all the pieces together must fit in the
        // type (itself at most MAX_PARAM_BYTES) before anything is allocated or read for one.
        let len = piece.size.unwrap_or(size);
        let total = (bytes.len() as u64).saturating_add(len);
        if total > size {
            return Err(Uncaptured::new(
                UncapturedReason::Unsupported,
                "its location describes more bytes than its type has",
            ));
        }
        match &piece.place {
            Place::Register(register) => {
                let value = hit.register(*register).ok_or(Uncaptured::new(
                    UncapturedReason::Unreadable,
                    "the register was not in the sample",
                ))?;
                if len > 8 {
                    return Err(Uncaptured::new(
                        UncapturedReason::Unsupported,
                        "more bytes than one register holds",
                    ));
                }
                bytes.extend_from_slice(&value.to_le_bytes()[..len as usize]);
            }
            Place::Memory { register, offset } => {
                let base = hit.register(*register).ok_or(Uncaptured::new(
                    UncapturedReason::Unreadable,
                    "the register was not in the sample",
                ))?;
                let at = base.wrapping_add(*offset as u64);
                if pieces.len() == 1 {
                    address = at;
                }
                match hit.stack_bytes(at, len) {
                    Some(copied) => bytes.extend_from_slice(copied),
                    None => {
                        let mut buf = vec![0u8; len as usize];
                        memory.read(at, &mut buf).map_err(|fault| {
                            Uncaptured::new(UncapturedReason::Unreadable, fault.detail())
                        })?;
                        bytes.extend_from_slice(&buf);
                    }
                }
            }
            Place::Value(value) => {
                let mut value = value.clone();
                value.resize(len as usize, 0);
                bytes.extend_from_slice(&value);
            }
            Place::Gone => {
                return Err(Uncaptured::new(
                    UncapturedReason::Unsupported,
                    "partly optimized out at the function's entry",
                ));
            }
        }
    }
    if (bytes.len() as u64) < size {
        return Err(Uncaptured::new(
            UncapturedReason::Unsupported,
            "its location describes fewer bytes than its type has",
        ));
    }
    Ok((bytes, address))
}

/// The largest parameter copied at a hit (a struct passed by value on the stack).
pub const MAX_PARAM_BYTES: u64 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_of_a_type_not_decoded_says_why_not_that_its_location_is_too_long() {
        let mut layouts = Layouts::default();
        let node = layouts.push(Node::Unsupported {
            detail: "a union: which member holds the value cannot be known",
            size: 0,
        });
        let param = ResolvedParam {
            name: "u".into(),
            node,
            type_name: layouts.type_name(node),
            location: ParamLocation::Pieces(vec![crate::location::Piece {
                place: crate::location::Place::Value(vec![0; 4]),
                size: Some(4),
            }]),
        };
        struct NoMemory;
        impl Memory for NoMemory {
            fn read(&self, _: u64, _: &mut [u8]) -> Result<(), crate::target::ReadFault> {
                Err(crate::target::ReadFault::Unmapped)
            }
        }
        let hit = Hit::for_test(Vec::new(), Vec::new());
        let outcome = param_bytes(&layouts, &param, &hit, &NoMemory);
        assert_eq!(
            outcome,
            Err(Uncaptured::new(
                UncapturedReason::Unsupported,
                "a union: which member holds the value cannot be known"
            ))
        );
    }

    #[test]
    fn emulated_instructions_are_told_from_single_stepped_ones() {
        assert_eq!(classify(&[0x55, 0x48, 0x89, 0xe5]), CostClass::Emulated);
        assert_eq!(classify(&[0x41, 0x57]), CostClass::Emulated);
        assert_eq!(classify(&[0x0f, 0x1f, 0x44, 0, 0]), CostClass::Emulated);
        assert_eq!(classify(&[0xb8, 1, 0, 0, 0]), CostClass::SingleStepped);
        assert_eq!(classify(&ENDBR64), CostClass::SingleStepped);
        assert_eq!(classify(&[]), CostClass::SingleStepped);
    }
}
