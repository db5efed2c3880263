//! What a condition may cost, and what it can cost at most: the budgets, the cost of each
//! operation (one table shared by the arm-time estimate and the run-time meter), and the
//! estimator.
//!
//! The model is Kubernetes' for CEL: every input has a largest size — here the capture's
//! limits (strings ≤ `max_string_bytes`, collections ≤ `max_collection_len` elements or
//! `max_struct_fields` fields, `max_depth` levels of containers) — so every node of the tree
//! has a largest result ([`Shape`]) and a largest cost, computed bottom-up: a comprehension
//! costs its range's length times its body, a concatenation is as long as its operands
//! together, a comparison of strings costs their shorter length. A condition whose worst case
//! exceeds [`MAX_COST`] (or builds a value past [`MAX_VALUE_BYTES`] / [`MAX_VALUE_ITEMS`]) is
//! refused when the capture is armed. The meter in `eval` charges the same prices for the
//! values it actually meets, so an accepted condition's metered cost never exceeds its
//! estimate; the meter still stops any evaluation at the budget, so a mistake in the estimate
//! costs one condition error, never the host.
//!
//! Units: one unit is one step of the evaluator (an element visited, an equality step), four
//! fields or map entries scanned for a member, or 8 bytes of text touched (a substring search
//! is charged twice that); a node costs [`NODE`] units, an allocation [`ALLOCATION`] plus its
//! bytes. The budget is set from the `conditions` benchmark, which evaluates the dearest
//! accepted conditions on an order at every default limit: they ran at 3.5–6 ns per metered
//! unit (up to 7.5 ns while other builds loaded the 2-core machine), so [`MAX_COST`] units are
//! about the design's 50 µs per hit. The estimate is conservative — a captured value could be
//! a 100-entry map where the point has a 5-field struct — so the conditions it accepts
//! measured well below the cap (≤ 19 µs, metering at most half their estimate).
//!
//! The redacted capture of what the condition reads, taken before it is evaluated, is paid
//! from the same budget at run time: the redaction scanner's work, counted in bytes' worth
//! (each byte, and each label it judges as a name or base64 it decodes: `redaction::Work`), at
//! [`SCANNED_BYTES`] per [`SCAN_UNITS`] units, is counted as the capture goes; a capture whose
//! next text is expected to scan past [`MAX_COST`] units, or whose scan of a text passes them
//! (the scan then stops judging and withholds the text whole), stops there and captures nothing more (its hit is a condition error, over budget), and otherwise
//! the evaluation starts on a meter that has already paid for the scan. So a hit's condition
//! work never passes [`MAX_COST`] units, whatever the values.
//!
//! What a hit captures is only what the condition reads (`condition::projection`): the members
//! its paths name, and of each element of a collection it iterates, what the comprehension's
//! body reads (`order.items.exists(i, i.qty > 1u)` captures each item's `qty` alone). At the
//! limits the scan dominates only where the condition reads long strings: over 100 item SKUs
//! of 266 bytes it took a whole hit to 70–90 µs before it was paid for, and stops at 37–48 µs
//! since (README, "worst condition"), while the same comprehension over the quantities
//! decides in a few microseconds.
//!
//! **Why the scan is not priced at arm time.** The estimate knows the capture's limits, not
//! the point's types: `i.qty` could as well be a 255-byte string in each of 100 elements,
//! 25 KB to scan, and pricing that would refuse nearly every condition that iterates a
//! collection. The arm-time estimate therefore bounds the evaluation, the run-time meter
//! bounds capture and evaluation together, and a condition that keeps running out ends its
//! capture with a reason the engineer sees (`capture::hit`).

use std::rc::Rc;

use crate::condition::program::{Binary, Expr, Function, Kind, Literal, Macro};
use crate::limits::CaptureLimits;

/// Most cost units one evaluation may spend: 48 µs at 6 ns a unit, the slowest rate measured
/// on a quiet machine (comprehensions of small nodes over 100 captured items).
pub const MAX_COST: u64 = 8_000;
/// Largest string or byte string a condition may build (or read).
pub const MAX_VALUE_BYTES: u64 = 16 * 1024;
/// Most elements of a list, or entries of a map, a condition may build (or read).
pub const MAX_VALUE_ITEMS: u64 = 4_096;
/// Most bytes one evaluation may allocate. Every allocated byte is also priced in units, so
/// the cost budget implies this; it is enforced on its own as a second line.
pub const MAX_ALLOCATED_BYTES: u64 = MAX_COST * BYTES_PER_UNIT;

/// Units for evaluating one node, whatever else it costs: a node is dearer than an element
/// visited or a field scanned (dispatch, a value moved in and out).
pub(crate) const NODE: u64 = 4;
/// Bytes of text touched per unit.
pub(crate) const BYTES_PER_UNIT: u64 = 8;
/// Bytes the redaction scanner reads per [`SCAN_UNITS`] units, for the capture a condition
/// reads: 1.5 a unit. A hit at the `conditions` benchmark's limits spent 2.2–3 ns a scanned
/// byte on that capture (the scan, and the capture of what holds the strings), and the hit's
/// fixed work comes on top; at 2 bytes a unit, a condition stopped by its scan reached
/// 43–55 µs there (2026-12-03), past the 50 µs a hit may take, so a scanned byte is priced
/// at two thirds of a unit (4 ns of the 6 ns a unit [`MAX_COST`] is set from).
pub(crate) const SCANNED_BYTES: u64 = 3;
/// See [`SCANNED_BYTES`].
pub(crate) const SCAN_UNITS: u64 = 2;
/// Bytes of a value a condition does not read, walked only to follow private keys (a
/// vectorised search for a BEGIN line; `capture::serialize::follow`), per byte of the full
/// redaction scan, which tries every pattern at every word. Calibrated against that scan on
/// the same texts (`cargo bench -p loupe-agent --bench redaction -- follow_against_scan`,
/// 2026-12-03): following cost 1/4 of scanning a 10-byte SKU (the per-text overhead of both
/// dominates), 1/60 of a 255-byte sentence and 1/240 of 4 KiB of Debug text. A followed text
/// is therefore charged one scanned byte for itself plus one per this many of its bytes
/// ([`followed`]): at least its cost for the shortest texts, and far more for long ones.
pub(crate) const FOLLOWED_BYTES_PER_SCANNED_BYTE: u64 = 8;
/// Scanned bytes a text of `bytes` bytes is charged when it is only followed for private
/// keys (see [`FOLLOWED_BYTES_PER_SCANNED_BYTE`]).
#[inline]
pub(crate) fn followed(bytes: u64) -> u64 {
    1 + bytes.div_ceil(FOLLOWED_BYTES_PER_SCANNED_BYTE)
}

/// Units per allocation, on top of its bytes.
pub(crate) const ALLOCATION: u64 = 8;
/// Bytes a list element or map entry takes where the evaluator stores it.
pub(crate) const ITEM_BYTES: u64 = 32;
/// Longest text `string()` makes of a number (an f64 printed in full is at most ~330 bytes).
pub(crate) const NUMBER_TEXT: u64 = 400;
/// Most entries of `ctx`: span fields plus thread, thread id, trace id and span id.
pub(crate) const CONTEXT_ENTRIES: u64 = crate::context::MAX_CONTEXT_FIELDS as u64 + 4;

/// Units for touching `bytes` bytes of text.
#[inline]
pub(crate) fn bytes(bytes: u64) -> u64 {
    bytes.div_ceil(BYTES_PER_UNIT)
}

/// Units for the redaction scanner reading `bytes` bytes of a condition's capture.
#[inline]
pub(crate) fn scanned(bytes: u64) -> u64 {
    bytes.saturating_mul(SCAN_UNITS).div_ceil(SCANNED_BYTES)
}

/// Units for one allocation of `bytes` bytes.
#[inline]
pub(crate) fn allocation(bytes: u64) -> u64 {
    ALLOCATION.saturating_add(self::bytes(bytes))
}

/// The largest value an expression can produce: its longest text, its most elements, and the
/// largest of its elements (and keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Shape {
    pub text: u64,
    pub items: u64,
    /// May be a map or struct (whose equality needs lookups, not a walk in step).
    pub keyed: bool,
    pub child: Option<Rc<Shape>>,
}

impl Shape {
    fn scalar() -> Shape {
        Shape::default()
    }

    fn text(text: u64) -> Shape {
        Shape {
            text,
            ..Shape::default()
        }
    }

    /// A captured value `depth` container levels deep at most.
    pub fn captured(limits: &CaptureLimits, depth: u32) -> Shape {
        Shape {
            text: u64::from(limits.max_string_bytes),
            items: if depth == 0 {
                0
            } else {
                u64::from(limits.max_collection_len.max(limits.max_struct_fields))
            },
            keyed: depth > 0,
            child: (depth > 0).then(|| Rc::new(Shape::captured(limits, depth - 1))),
        }
    }

    fn child(&self) -> Shape {
        self.child.as_deref().cloned().unwrap_or_default()
    }

    /// The larger of two shapes in every dimension.
    fn join(&self, other: &Shape) -> Shape {
        Shape {
            text: self.text.max(other.text),
            items: self.items.max(other.items),
            keyed: self.keyed || other.keyed,
            child: join_children(&self.child, &other.child),
        }
    }
}

fn join_children(a: &Option<Rc<Shape>>, b: &Option<Rc<Shape>>) -> Option<Rc<Shape>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Rc::new(a.join(b))),
        (Some(one), None) | (None, Some(one)) => Some(Rc::clone(one)),
        (None, None) => None,
    }
}

/// Most units an equality test of values of shapes `a` and `b` costs: the shorter text, and
/// for collections each pair of elements visited (every pair, for two keyed collections).
pub(crate) fn equality(a: &Shape, b: &Shape) -> u64 {
    let text = bytes(a.text.min(b.text));
    let pairs = if a.keyed && b.keyed {
        a.items.saturating_mul(b.items.saturating_add(1))
    } else {
        a.items.min(b.items)
    };
    if pairs == 0 {
        return 1u64.saturating_add(text);
    }
    let inner = equality(&a.child(), &b.child());
    1u64.saturating_add(text)
        .saturating_add(pairs.saturating_mul(inner.saturating_add(1)))
}

/// Why an estimate refused a condition: the node, and what it would cost or build.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OverBudget {
    Cost { span: (usize, usize), cost: u64 },
    TextSize { span: (usize, usize), bytes: u64 },
    Items { span: (usize, usize), items: u64 },
}

/// The worst case of one node.
#[derive(Debug, Clone)]
struct Estimate {
    shape: Shape,
    cost: u64,
}

/// The worst-case cost of `expr` over inputs captured with `limits`.
pub(crate) fn estimate(expr: &Expr, limits: &CaptureLimits) -> Result<u64, OverBudget> {
    let mut estimator = Estimator {
        limits,
        variables: Vec::new(),
    };
    let estimate = estimator.node(expr)?;
    Ok(estimate.cost)
}

struct Estimator<'a> {
    limits: &'a CaptureLimits,
    /// Shapes of the comprehension variables in scope, outermost first.
    variables: Vec<Shape>,
}

impl Estimator<'_> {
    fn node(&mut self, expr: &Expr) -> Result<Estimate, OverBudget> {
        let mut estimate = self.kind(&expr.kind)?;
        // Each kind counts one unit for its node; a node costs `NODE`.
        estimate.cost = estimate.cost.saturating_add(NODE - 1);
        let span = expr.span;
        if estimate.shape.text > MAX_VALUE_BYTES {
            return Err(OverBudget::TextSize {
                span,
                bytes: estimate.shape.text,
            });
        }
        if estimate.shape.items > MAX_VALUE_ITEMS {
            return Err(OverBudget::Items {
                span,
                items: estimate.shape.items,
            });
        }
        if estimate.cost > MAX_COST {
            return Err(OverBudget::Cost {
                span,
                cost: estimate.cost,
            });
        }
        Ok(estimate)
    }

    fn kind(&mut self, kind: &Kind) -> Result<Estimate, OverBudget> {
        let done = |shape: Shape, cost: u64| Ok(Estimate { shape, cost });
        match kind {
            Kind::Literal(literal) => done(
                match literal {
                    Literal::String(s) => Shape::text(s.len() as u64),
                    Literal::Bytes(b) => Shape::text(b.len() as u64),
                    _ => Shape::scalar(),
                },
                1,
            ),
            Kind::Field(_) => done(Shape::captured(self.limits, self.limits.max_depth), 1),
            Kind::Context => done(
                Shape {
                    text: 0,
                    items: CONTEXT_ENTRIES,
                    keyed: true,
                    child: Some(Rc::new(self.context_value())),
                },
                1 + allocation(CONTEXT_ENTRIES * ITEM_BYTES * 2),
            ),
            Kind::ContextField(name) => {
                done(self.context_value(), 1 + member_scan(name, CONTEXT_ENTRIES))
            }
            Kind::Variable(depth) => {
                done(self.variables.get(*depth).cloned().unwrap_or_default(), 1)
            }
            Kind::Select {
                operand,
                field,
                test,
            } => {
                let operand = self.node(operand)?;
                let scan = member_scan(field, operand.shape.items);
                let shape = if *test {
                    Shape::scalar()
                } else {
                    operand.shape.child()
                };
                done(shape, sum(&[operand.cost, 1, scan]))
            }
            Kind::Index(operand, index) => {
                let operand = self.node(operand)?;
                let index = self.node(index)?;
                let child = operand.shape.child();
                let scan = operand
                    .shape
                    .items
                    .saturating_mul(1 + equality(&child, &index.shape));
                done(child, sum(&[operand.cost, index.cost, 1, scan]))
            }
            Kind::Not(inner) | Kind::Negate(inner) => {
                let inner = self.node(inner)?;
                done(Shape::scalar(), sum(&[inner.cost, 1]))
            }
            Kind::And(left, right) | Kind::Or(left, right) => {
                let left = self.node(left)?;
                let right = self.node(right)?;
                done(Shape::scalar(), sum(&[left.cost, right.cost, 1]))
            }
            Kind::Conditional(condition, then, otherwise) => {
                let condition = self.node(condition)?;
                let then = self.node(then)?;
                let otherwise = self.node(otherwise)?;
                done(
                    then.shape.join(&otherwise.shape),
                    sum(&[condition.cost, then.cost.max(otherwise.cost), 1]),
                )
            }
            Kind::Binary(op, left, right) => {
                let left = self.node(left)?;
                let right = self.node(right)?;
                let base = sum(&[left.cost, right.cost, 1]);
                let (l, r) = (&left.shape, &right.shape);
                match op {
                    Binary::Add => {
                        let shape = Shape {
                            text: l.text.saturating_add(r.text),
                            items: l.items.saturating_add(r.items),
                            keyed: false,
                            child: join_children(&l.child, &r.child),
                        };
                        let cost = concatenation(shape.text, shape.items);
                        done(shape, sum(&[base, cost]))
                    }
                    Binary::Subtract | Binary::Multiply | Binary::Divide | Binary::Modulo => {
                        done(Shape::scalar(), base)
                    }
                    Binary::Equal
                    | Binary::NotEqual
                    | Binary::Less
                    | Binary::LessOrEqual
                    | Binary::Greater
                    | Binary::GreaterOrEqual => done(Shape::scalar(), sum(&[base, equality(l, r)])),
                    Binary::In => {
                        let scan = r.items.saturating_mul(1 + equality(&r.child(), l));
                        done(Shape::scalar(), sum(&[base, scan]))
                    }
                }
            }
            Kind::List(elements) => {
                let mut cost = 1 + allocation(elements.len() as u64 * ITEM_BYTES);
                let mut child: Option<Rc<Shape>> = None;
                for element in elements {
                    let element = self.node(element)?;
                    cost = sum(&[cost, element.cost, 1]);
                    child = join_children(&child, &Some(Rc::new(element.shape)));
                }
                done(
                    Shape {
                        text: 0,
                        items: elements.len() as u64,
                        keyed: false,
                        child,
                    },
                    cost,
                )
            }
            Kind::Map(entries) => {
                let n = entries.len() as u64;
                let mut cost = 1 + allocation(n * 2 * ITEM_BYTES);
                let mut child: Option<Rc<Shape>> = None;
                let mut keys = Shape::scalar();
                for (key, value) in entries {
                    let key = self.node(key)?;
                    let value = self.node(value)?;
                    cost = sum(&[cost, key.cost, value.cost, 1]);
                    keys = keys.join(&key.shape);
                    child = join_children(&child, &Some(Rc::new(key.shape)));
                    child = join_children(&child, &Some(Rc::new(value.shape)));
                }
                // Each key is checked against the ones before it.
                let duplicates =
                    (n * n.saturating_sub(1) / 2).saturating_mul(equality(&keys, &keys) + 1);
                done(
                    Shape {
                        text: 0,
                        items: n,
                        keyed: true,
                        child,
                    },
                    sum(&[cost, duplicates]),
                )
            }
            Kind::Call(function, args) => {
                let mut cost = 1;
                let mut shapes = Vec::with_capacity(args.len());
                for arg in args {
                    let arg = self.node(arg)?;
                    cost = sum(&[cost, arg.cost]);
                    shapes.push(arg.shape);
                }
                let text: u64 = shapes.iter().map(|s| s.text).sum();
                match function {
                    Function::Size | Function::Int | Function::Uint | Function::Double => {
                        done(Shape::scalar(), sum(&[cost, bytes(text)]))
                    }
                    Function::Contains | Function::StartsWith | Function::EndsWith => {
                        done(Shape::scalar(), sum(&[cost, search(text)]))
                    }
                    Function::String => {
                        let text = text.max(NUMBER_TEXT);
                        done(Shape::text(text), sum(&[cost, allocation(text)]))
                    }
                }
            }
            Kind::Comprehension {
                macro_kind,
                range,
                depth,
                body,
            } => {
                let range = self.node(range)?;
                let iterations = range.shape.items;
                self.variables.truncate(*depth);
                self.variables.push(range.shape.child());
                let filter = match macro_kind {
                    Macro::Map {
                        filter: Some(filter),
                    } => Some(self.node(filter)?),
                    _ => None,
                };
                let body = self.node(body);
                self.variables.truncate(*depth);
                let body = body?;
                let per_element = sum(&[
                    body.cost,
                    filter.as_ref().map_or(0, |f| f.cost),
                    // the step itself, and the append of a `map`
                    2,
                ]);
                let cost = sum(&[range.cost, 1, iterations.saturating_mul(per_element)]);
                match macro_kind {
                    Macro::Map { .. } => done(
                        Shape {
                            text: 0,
                            items: iterations,
                            keyed: false,
                            child: Some(Rc::new(body.shape)),
                        },
                        sum(&[cost, allocation(iterations * ITEM_BYTES)]),
                    ),
                    _ => done(Shape::scalar(), cost),
                }
            }
        }
    }

    /// A `ctx` value: a captured span field (a string) or the thread or trace identity.
    fn context_value(&self) -> Shape {
        Shape::text(u64::from(self.limits.max_string_bytes))
    }
}

/// Units for building, by `+`, a string of `text` bytes or a list of `items` elements (a
/// `+` builds one or the other, so the dearer of the two bounds it).
pub(crate) fn concatenation(text: u64, items: u64) -> u64 {
    allocation(text.max(items.saturating_mul(ITEM_BYTES)))
}

/// Units for searching `text` bytes (haystack and needle together) for a substring: the
/// search reads bytes more than once.
pub(crate) fn search(text: u64) -> u64 {
    bytes(text).saturating_mul(2)
}

/// Fields or map entries scanned per unit when looking a member up: a scan step compares
/// a short name and skips a subtree, a fraction of a node's work.
pub(crate) const SCANS_PER_UNIT: u64 = 4;

/// Units for scanning `entries` fields or entries for the member `name`.
pub(crate) fn member_scan(name: &str, entries: u64) -> u64 {
    entries
        .saturating_mul(bytes(name.len() as u64).max(1))
        .div_ceil(SCANS_PER_UNIT)
}

fn sum(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0u64, |total, part| total.saturating_add(*part))
}
