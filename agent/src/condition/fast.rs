//! Native evaluation of the conditions engineers write most: a field path compared with a
//! literal, joined by `&&`, `||` and `!` — `order.total_cents > 10000u && ctx.request_id ==
//! "r-7f3a"`.
//!
//! It answers straight from the snapshot's tape, with no values built, and only when the
//! answer is certain: both sides of a comparison of the same CEL type, every path present. In
//! every other case (a missing field, a type mismatch, a redacted value, null) it declines and
//! the evaluator (`eval`) decides, so the result and its errors are always the evaluator's.
//! `&&` and `||` follow CEL's rule that a false (or true) side decides even when the other side
//! cannot.
//!
//! It is metered at the evaluator's prices (a node, the fields scanned, the bytes of a string
//! compared), on the same meter the evaluator continues with if it declines; the condition's
//! estimate counts both, and if the meter runs out it declines and the evaluator reports it.

use cel::common::ast::{Expr, IdedExpr, LiteralValue};

use crate::condition::cost;
use crate::condition::eval::Meter;
pub use crate::condition::path_reader::Scalar;
use crate::value::{ValueKind, ValueRef};

/// The variable under which span fields are read.
const CONTEXT: &str = "ctx";

/// A condition in the natively evaluated subset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FastCondition {
    And(Box<FastCondition>, Box<FastCondition>),
    Or(Box<FastCondition>, Box<FastCondition>),
    Not(Box<FastCondition>),
    /// `path op literal`; the path's first segment is a point field or `ctx`.
    Compare {
        path: Vec<String>,
        op: Comparison,
        literal: Literal,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    fn from_function(name: &str) -> Option<Comparison> {
        Some(match name {
            "_==_" => Comparison::Equal,
            "_!=_" => Comparison::NotEqual,
            "_<_" => Comparison::Less,
            "_<=_" => Comparison::LessOrEqual,
            "_>_" => Comparison::Greater,
            "_>=_" => Comparison::GreaterOrEqual,
            _ => return None,
        })
    }

    /// The comparison with its operands swapped: `5 < x` is `x > 5`.
    fn flipped(self) -> Comparison {
        match self {
            Comparison::Less => Comparison::Greater,
            Comparison::LessOrEqual => Comparison::GreaterOrEqual,
            Comparison::Greater => Comparison::Less,
            Comparison::GreaterOrEqual => Comparison::LessOrEqual,
            other => other,
        }
    }

    fn holds<T: PartialOrd + ?Sized>(self, left: &T, right: &T) -> bool {
        match self {
            Comparison::Equal => left == right,
            Comparison::NotEqual => left != right,
            Comparison::Less => left < right,
            Comparison::LessOrEqual => left <= right,
            Comparison::Greater => left > right,
            Comparison::GreaterOrEqual => left >= right,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
}

impl FastCondition {
    /// The expression in the native subset, or `None` if CEL must evaluate it.
    pub fn from_expression(expr: &IdedExpr) -> Option<FastCondition> {
        let Expr::Call(call) = &expr.expr else {
            return None;
        };
        if call.target.is_some() {
            return None;
        }
        match (call.func_name.as_str(), call.args.as_slice()) {
            ("_&&_", [left, right]) => Some(FastCondition::And(
                Box::new(Self::from_expression(left)?),
                Box::new(Self::from_expression(right)?),
            )),
            ("_||_", [left, right]) => Some(FastCondition::Or(
                Box::new(Self::from_expression(left)?),
                Box::new(Self::from_expression(right)?),
            )),
            ("!_", [inner]) => Some(FastCondition::Not(Box::new(Self::from_expression(inner)?))),
            (name, [left, right]) => {
                let op = Comparison::from_function(name)?;
                if let (Some(path), Some(literal)) = (path_of(left), literal_of(right)) {
                    Some(FastCondition::Compare { path, op, literal })
                } else {
                    let (path, literal) = (path_of(right)?, literal_of(left)?);
                    Some(FastCondition::Compare {
                        path,
                        op: op.flipped(),
                        literal,
                    })
                }
            }
            _ => None,
        }
    }

    /// The answer, if it is certain without CEL. `field` finds a point field's value and
    /// `context` a span field's.
    pub fn evaluate<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        meter: &mut Meter,
    ) -> Option<bool> {
        meter.charge(1).ok()?;
        match self {
            FastCondition::And(left, right) => {
                match (
                    left.evaluate(field, context, meter),
                    right.evaluate(field, context, meter),
                ) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                }
            }
            FastCondition::Or(left, right) => {
                match (
                    left.evaluate(field, context, meter),
                    right.evaluate(field, context, meter),
                ) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                }
            }
            FastCondition::Not(inner) => inner.evaluate(field, context, meter).map(|b| !b),
            FastCondition::Compare { path, op, literal } => {
                let (first, rest) = path.split_first()?;
                let value = if first == CONTEXT {
                    let (name, rest) = rest.split_first()?;
                    walk(context(name)?, rest, meter)?
                } else {
                    walk(field(first)?, rest, meter)?
                };
                // An enum's unit variant reads as its name, as in CEL.
                if let ValueKind::Enum { variant, .. } = value.kind() {
                    if value.fields().next().is_some() {
                        return None;
                    }
                    return match literal {
                        Literal::String(s) => Some(op.holds(variant, s.as_str())),
                        _ => None,
                    };
                }
                if let (ValueKind::Str { text, .. }, Literal::String(l)) = (value.kind(), literal) {
                    meter
                        .charge(cost::bytes(text.len().min(l.len()) as u64))
                        .ok()?;
                }
                compare(value, *op, literal)
            }
        }
    }
}

impl FastCondition {
    /// Calls `f` with every compared path (its first segment a field name or `ctx`).
    pub fn for_each_path(&self, f: &mut dyn FnMut(&[String])) {
        match self {
            FastCondition::And(left, right) | FastCondition::Or(left, right) => {
                left.for_each_path(f);
                right.for_each_path(f);
            }
            FastCondition::Not(inner) => inner.for_each_path(f),
            FastCondition::Compare { path, .. } => f(path),
        }
    }

    /// The answer when every compared path reads, through `read`, a scalar of its literal's
    /// type; `None` if any does not (then the evaluator decides, as `direct` explains). With
    /// every comparison known, `&&`, `||` and `!` are plain logic.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn evaluate_scalars(
        &self,
        read: &mut dyn FnMut(&[String]) -> Option<Scalar>,
    ) -> Option<bool> {
        match self {
            FastCondition::And(left, right) => {
                let left = left.evaluate_scalars(read)?;
                Some(right.evaluate_scalars(read)? && left)
            }
            FastCondition::Or(left, right) => {
                let left = left.evaluate_scalars(read)?;
                Some(right.evaluate_scalars(read)? || left)
            }
            FastCondition::Not(inner) => inner.evaluate_scalars(read).map(|b| !b),
            FastCondition::Compare { path, op, literal } => {
                compare_scalar(read(path)?, *op, literal)
            }
        }
    }
}

/// Follows member names through structs, enum payloads and string-keyed maps.
fn walk<'t>(
    mut value: ValueRef<'t>,
    members: &[String],
    meter: &mut Meter,
) -> Option<ValueRef<'t>> {
    for member in members {
        let mut scanned: u64 = 0;
        let found = match value.kind() {
            ValueKind::Struct { .. } | ValueKind::Enum { .. } => value
                .fields()
                .inspect(|_| scanned += 1)
                .find(|(name, _)| *name == member)
                .map(|(_, value)| value),
            ValueKind::Map { .. } => value
                .entries()
                .inspect(|_| scanned += 1)
                .find(|(key, _)| key.as_str() == Some(member.as_str()))
                .map(|(_, value)| value),
            _ => return None,
        };
        meter.charge(cost::member_scan(member, scanned)).ok()?;
        value = found?;
    }
    Some(value)
}

fn compare(value: ValueRef<'_>, op: Comparison, literal: &Literal) -> Option<bool> {
    match (value.kind(), literal) {
        (ValueKind::Str { text, .. }, Literal::String(l)) => Some(op.holds(text, l.as_str())),
        (ValueKind::Bool(v), _) => compare_scalar(Scalar::Bool(v), op, literal),
        (ValueKind::Int(v), _) => compare_scalar(Scalar::Int(v), op, literal),
        (ValueKind::Uint(v), _) => compare_scalar(Scalar::Uint(v), op, literal),
        (ValueKind::Float(v), _) => compare_scalar(Scalar::Double(v), op, literal),
        _ => None,
    }
}

/// `value op literal` when both are of the same CEL type; `None` otherwise (CEL compares
/// numbers of different types by value: the evaluator's business).
#[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
fn compare_scalar(value: Scalar, op: Comparison, literal: &Literal) -> Option<bool> {
    Some(match (value, literal) {
        (Scalar::Bool(v), Literal::Bool(l)) => op.holds(&v, l),
        (Scalar::Int(v), Literal::Int(l)) => op.holds(&v, l),
        (Scalar::Uint(v), Literal::Uint(l)) => op.holds(&v, l),
        (Scalar::Double(v), Literal::Double(l)) => op.holds(&v, l),
        _ => return None,
    })
}

/// `a`, `a.b.c` — a name and the members selected from it.
fn path_of(expr: &IdedExpr) -> Option<Vec<String>> {
    match &expr.expr {
        Expr::Ident(name) => Some(vec![name.clone()]),
        Expr::Select(select) if !select.test => {
            let mut path = path_of(&select.operand)?;
            path.push(select.field.clone());
            Some(path)
        }
        _ => None,
    }
}

fn literal_of(expr: &IdedExpr) -> Option<Literal> {
    let Expr::Literal(literal) = &expr.expr else {
        return None;
    };
    Some(match literal {
        LiteralValue::Boolean(b) => Literal::Bool(*b.inner()),
        LiteralValue::Int(i) => Literal::Int(*i.inner()),
        LiteralValue::UInt(u) => Literal::Uint(*u.inner()),
        LiteralValue::Double(d) => Literal::Double(*d.inner()),
        LiteralValue::String(s) => Literal::String(s.inner().to_owned()),
        LiteralValue::Null | LiteralValue::Bytes(_) => return None,
    })
}
