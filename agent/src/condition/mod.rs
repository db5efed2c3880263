//! Capture conditions: CEL expressions over a point's captured fields and `ctx`, with a cost
//! that is bounded before the capture is armed and metered while it runs.
//!
//! A condition is compiled when a capture is armed, so every mistake — a syntax error, a name
//! the point does not have, a construct outside the accepted subset, an expression that could
//! cost too much — is reported then, with its position, instead of silently never matching.
//! Evaluation sees only captured values, after limits and redaction: a redacted value reads as
//! `null`, so a condition can never be used to probe a secret one guess at a time.
//!
//! Cost is bounded twice, as Kubernetes bounds CEL (see [`cost`]): at arm time the worst case
//! of every node is estimated from the capture's limits (the largest string, collection and
//! depth a captured value can have), and a condition whose worst case exceeds
//! [`MAX_COST`] units (≈ 50 µs) or builds a value larger than [`MAX_VALUE_BYTES`] /
//! [`MAX_VALUE_ITEMS`] is refused, naming the sub-expression; at run time a meter charges
//! every step at the same prices and stops the evaluation at the budget, which is then a
//! counted condition error for that hit ([`EvaluationError::OverBudget`]).
//!
//! The `cel` crate only parses: its interpreter cannot be metered (a 300-byte condition of
//! chained string-multiplying `map`s once took a host to a 1 GB allocation), so conditions run
//! on our own evaluator ([`eval`]) over a documented subset ([`program::SUPPORTED`]);
//! anything else is refused at arm time. Field paths compared with literals are answered even
//! more directly by [`fast`], which agrees with the evaluator or declines; and when they
//! compare numbers or bools of point fields, [`direct`] reads just those values out of the
//! fields' `Serialize`, before anything is captured, or declines.

pub mod cost;
pub(crate) mod direct;
mod eval;
mod fast;
pub(crate) mod path_reader;
mod program;
mod projection;

use cel::common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::capture::serialize::field::FieldValue;
use crate::context::ContextReads;
use crate::limits::CaptureLimits;
use crate::redaction::RedactionRules;
use crate::value::{Tape, ValueRef};

pub use cost::{MAX_ALLOCATED_BYTES, MAX_COST, MAX_VALUE_BYTES, MAX_VALUE_ITEMS};
pub use program::SUPPORTED;
use projection::PathStep;
pub(crate) use projection::Projection;

/// Longest condition accepted, in bytes.
pub const MAX_CONDITION_LEN: usize = 1024;
/// Most AST nodes in a condition.
const MAX_NODES: usize = 256;
/// Deepest nesting of comprehensions.
const MAX_COMPREHENSION_NESTING: usize = 2;

/// The name under which the correlation context is visible to conditions.
pub const CONTEXT_VARIABLE: &str = "ctx";

/// Why a condition was refused at arm time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConditionError {
    #[error("condition is {len} bytes; at most {max} are accepted")]
    TooLong { len: usize, max: usize },
    #[error("condition does not parse at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "condition uses `{name}` at line {line}, column {column}, but the point has no such field; it can use {available}"
    )]
    UnknownVariable {
        name: String,
        line: usize,
        column: usize,
        available: String,
    },
    #[error("condition has {nodes} nodes; at most {max} are accepted")]
    TooComplex { nodes: usize, max: usize },
    #[error(
        "condition nests comprehensions (all/exists/map/filter) {depth} deep; at most {max} are accepted"
    )]
    TooDeep { depth: usize, max: usize },
    #[error(
        "condition uses {what} at line {line}, column {column}, which conditions do not support; they support {supported}"
    )]
    Unsupported {
        what: String,
        line: usize,
        column: usize,
        supported: &'static str,
    },
    #[error(
        "condition could cost too much per hit: `{expression}` (line {line}, column {column}) {estimate}, with this capture's limits (strings of {max_string_bytes} bytes, collections of {max_collection_len} elements, depth {max_depth}); iterate over less, build smaller values, or arm with tighter limits"
    )]
    TooCostly {
        expression: String,
        line: usize,
        column: usize,
        /// What the estimate found, against which limit.
        estimate: String,
        max_string_bytes: u32,
        max_collection_len: u32,
        max_depth: u32,
    },
    #[error(
        "condition reads no field and no `ctx`, and fails the same way on every hit: {reason}; compare a field of the point, or arm without a condition"
    )]
    FailsOnEveryHit { reason: EvaluationError },
}

/// Why one evaluation did not produce true or false. Counted, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvaluationError {
    #[error("condition failed to evaluate: {0}")]
    Execution(String),
    #[error("condition evaluated to {0}, not a bool")]
    NotBoolean(String),
    #[error("condition stopped at its per-hit budget: {0}")]
    OverBudget(String),
}

/// One evaluation's answer and what it cost, in [`cost`] units.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    pub result: Result<bool, EvaluationError>,
    pub cost: u64,
    pub allocated_bytes: u64,
}

/// A compiled condition.
pub struct Condition {
    source: String,
    expr: program::Expr,
    /// The same condition in the natively evaluated subset, when it is in it.
    fast: Option<fast::FastCondition>,
    /// The answer of a condition that reads nothing (`true`, `1 < 2`), found when it was
    /// compiled: a hit takes it as it is, without capturing or evaluating anything.
    constant: Option<bool>,
    /// Whether `fast` may be answered by [`direct`] under `limits`.
    direct: bool,
    /// Whether the names `direct` follows are plain under the rule set last asked about, so
    /// they are checked once per rule set rather than per hit: `(rules id + 1) << 1`, with the
    /// answer in the low bit; 0 for none yet.
    direct_names_memo: AtomicU64,
    /// Top-level names the expression reads (fields, and `ctx` if used), with the parts of
    /// each that it reads.
    variables: Vec<(String, Projection)>,
    /// The limits the estimate assumed; values are captured with them.
    limits: CaptureLimits,
    estimated_cost: u64,
}

/// The correlation context a condition reads as `ctx`: span fields (captured, so limited and
/// redacted, in `tape`) plus thread and trace identity.
pub struct ConditionContext<'a> {
    pub tape: &'a Tape,
    pub span_fields: &'a [(&'static str, u32)],
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub thread: &'a str,
    pub thread_id: u64,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .field("estimated_cost", &self.estimated_cost)
            .finish()
    }
}

impl Condition {
    /// Compiles `source` for a point whose fields are `field_names`, captured with `limits`.
    ///
    /// A condition that reads nothing is evaluated here, once: its answer is every hit's
    /// answer, so a hit takes it without work, and one that fails (`1 / 0 == 0`, `1 + 1`)
    /// would fail on every hit, so it is refused now, with why.
    pub fn compile(
        source: &str,
        field_names: &[&str],
        limits: &CaptureLimits,
    ) -> Result<Condition, ConditionError> {
        let mut condition = Self::compile_unfolded(source, field_names, limits)?;
        if condition.variables.is_empty() {
            match condition.evaluate_metered(&|_| None, None).result {
                Ok(answer) => condition.constant = Some(answer),
                Err(reason) => return Err(ConditionError::FailsOnEveryHit { reason }),
            }
        }
        Ok(condition)
    }

    /// [`Condition::compile`] without folding a constant condition: the evaluator's own tests
    /// run constant expressions through it.
    fn compile_unfolded(
        source: &str,
        field_names: &[&str],
        limits: &CaptureLimits,
    ) -> Result<Condition, ConditionError> {
        if source.len() > MAX_CONDITION_LEN {
            return Err(ConditionError::TooLong {
                len: source.len(),
                max: MAX_CONDITION_LEN,
            });
        }
        let parsed = cel::Program::compile(source).map_err(|errors| {
            let first = errors.errors.into_iter().next();
            match first {
                Some(error) => ConditionError::Syntax {
                    line: usize::try_from(error.pos.0).unwrap_or(1).max(1),
                    column: usize::try_from(error.pos.1).unwrap_or(0) + 1,
                    message: error.msg,
                },
                None => ConditionError::Syntax {
                    line: 1,
                    column: 1,
                    message: "unknown parse error".into(),
                },
            }
        })?;
        let source_info = parsed.source_info();
        let offset_of = |id: u64| {
            source_info
                .offset_for(id)
                .map(|(start, stop)| (start as usize, (stop as usize).max(start as usize + 1)))
        };

        let mut walk = Walk::default();
        walk.visit(parsed.expression(), 0);
        if walk.nodes > MAX_NODES {
            return Err(ConditionError::TooComplex {
                nodes: walk.nodes,
                max: MAX_NODES,
            });
        }
        if walk.max_nesting > MAX_COMPREHENSION_NESTING {
            return Err(ConditionError::TooDeep {
                depth: walk.max_nesting,
                max: MAX_COMPREHENSION_NESTING,
            });
        }
        let mut variables: Vec<(String, Projection)> = Vec::new();
        for (ReadPath { name, id, path }, whole) in walk.free_variables {
            if name != CONTEXT_VARIABLE && !field_names.contains(&name.as_str()) {
                let offset = offset_of(id).map_or(0, |(start, _)| start);
                let (line, column) = line_and_column(source, offset);
                let mut available: Vec<String> =
                    field_names.iter().map(|n| format!("`{n}`")).collect();
                available.push(format!("`{CONTEXT_VARIABLE}`"));
                return Err(ConditionError::UnknownVariable {
                    name,
                    line,
                    column,
                    available: available.join(", "),
                });
            }
            match variables.iter_mut().find(|(known, _)| *known == name) {
                Some((_, projection)) => projection.add_path(&path, whole),
                None => {
                    let mut projection = Projection::default();
                    projection.add_path(&path, whole);
                    variables.push((name, projection));
                }
            }
        }

        let expr = program::lower(parsed.expression(), &offset_of).map_err(|unsupported| {
            let offset = offset_of(unsupported.id).map_or(0, |(start, _)| start);
            let (line, column) = line_and_column(source, offset);
            ConditionError::Unsupported {
                what: unsupported.what,
                line,
                column,
                supported: SUPPORTED,
            }
        })?;
        let evaluator_cost =
            cost::estimate(&expr, limits).map_err(|over| too_costly(source, over, limits))?;
        let fast = fast::FastCondition::from_expression(parsed.expression());
        // A hit may try the native path before the evaluator; the native path does a subset
        // of the evaluator's work on the same expression, so the evaluator's bound bounds it.
        let estimated_cost = if fast.is_some() {
            evaluator_cost.saturating_mul(2)
        } else {
            evaluator_cost
        };
        if estimated_cost > MAX_COST {
            return Err(too_costly(
                source,
                cost::OverBudget::Cost {
                    span: (0, source.len()),
                    cost: estimated_cost,
                },
                limits,
            ));
        }
        let direct = fast
            .as_ref()
            .is_some_and(|fast| direct::applies(fast, limits));
        Ok(Condition {
            source: source.to_owned(),
            constant: None,
            direct,
            direct_names_memo: AtomicU64::new(0),
            fast,
            expr,
            variables,
            limits: *limits,
            estimated_cost,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The most [`cost`] units one evaluation can spend, as estimated when it was compiled.
    pub fn estimated_cost(&self) -> u64 {
        self.estimated_cost
    }

    /// Whether the condition reads the point field `name` (so it must be captured first).
    pub fn reads_field(&self, name: &str) -> bool {
        name != CONTEXT_VARIABLE && self.projection(name).is_some()
    }

    pub fn reads_context(&self) -> bool {
        self.projection(CONTEXT_VARIABLE).is_some()
    }

    /// The span fields the condition reads through `ctx`, for the correlation layer to record
    /// (`crate::context`): `ctx.tier` reads `tier`; `ctx` read whole (`'tier' in ctx`) reads
    /// every one.
    pub(crate) fn context_reads(&self) -> ContextReads<'_> {
        match self.projection(CONTEXT_VARIABLE) {
            None => ContextReads::Named(Vec::new()),
            Some(projection) if projection.reads_every_entry() => ContextReads::All,
            Some(projection) => ContextReads::Named(projection.member_names().collect()),
        }
    }

    /// The parts of field `name` the condition reads, if it reads it at all.
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub(crate) fn projection(&self, name: &str) -> Option<&Projection> {
        self.variables
            .iter()
            .find(|(variable, _)| variable == name)
            .map(|(_, projection)| projection)
    }

    /// The answer straight from the tape, when it is certain: for conditions made of field
    /// paths compared with literals, joined by `&&`, `||` and `!`. `None` means the evaluator
    /// decides. `field` finds a point field's captured value, `context` a span field's.
    pub fn evaluate_natively<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: &dyn Fn(&str) -> Option<ValueRef<'t>>,
    ) -> Option<bool> {
        let mut meter = eval::Meter::new();
        self.fast.as_ref()?.evaluate(field, context, &mut meter)
    }

    /// The answer read straight from the point's `fields` (named `names`), before anything is
    /// captured, when it is certainly what capturing (with this condition's limits and
    /// `rules`, identified by `rules_id`) and evaluating would give; `None` means take that
    /// general path. See [`direct`].
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    pub fn evaluate_direct(
        &self,
        names: &[&str],
        fields: &[FieldValue<'_>],
        rules: &RedactionRules,
        rules_id: u64,
    ) -> Option<bool> {
        if self.constant.is_some() {
            return self.constant;
        }
        let fast = self.fast.as_ref().filter(|_| self.direct)?;
        // A unit test may run the evaluator on a smaller budget than estimated, to see it run
        // out; the direct path does not count units, so it stands aside then.
        if eval::budget_for_this_thread() < self.estimated_cost {
            return None;
        }
        if !self.direct_names_plain(fast, rules, rules_id) {
            return None;
        }
        let reading = path_reader::Reading {
            limits: &self.limits,
            rules,
        };
        fast.evaluate_scalars(&mut |path| {
            let projection = self.projection(path.first()?)?;
            direct::read(path, projection, names, fields, &reading)
        })
    }

    /// Whether no name the direct path follows is withheld or masked under `rules`, answered
    /// once per rule set (a rules id too large to remember is checked every time).
    #[cfg_attr(target_os = "linux", allow(unsafe_code), unsafe(link_section = "loupe_hit"))]
    fn direct_names_plain(
        &self,
        fast: &fast::FastCondition,
        rules: &RedactionRules,
        rules_id: u64,
    ) -> bool {
        let key = rules_id
            .checked_add(1)
            .filter(|key| *key < 1 << 63)
            .map(|key| key << 1);
        let memo = self.direct_names_memo.load(Ordering::Relaxed);
        match key {
            Some(key) if memo & !1 == key => memo & 1 == 1,
            _ => {
                let plain = direct::names_plain(fast, rules);
                if let Some(key) = key {
                    self.direct_names_memo
                        .store(key | u64::from(plain), Ordering::Relaxed);
                }
                plain
            }
        }
    }

    /// Evaluates against the captured fields (`field` finds one by name) and the context.
    pub fn evaluate<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: Option<&ConditionContext<'t>>,
    ) -> Result<bool, EvaluationError> {
        self.evaluate_metered(field, context).result
    }

    /// Bytes the redaction scan of the capture a condition reads may cover on one hit: the
    /// whole per-hit budget, at the scanner's price (see [`cost`]).
    pub(crate) fn capture_scan_budget() -> u64 {
        eval::budget_for_this_thread().saturating_mul(cost::SCANNED_BYTES) / cost::SCAN_UNITS
    }

    /// [`Condition::evaluate`] on the budget that is left after the redaction scan of the
    /// capture it reads, which spent `capture_units` (see [`cost`]).
    pub(crate) fn evaluate_after_capture<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: Option<&ConditionContext<'t>>,
        capture_units: u64,
    ) -> Result<bool, EvaluationError> {
        self.evaluate_on(field, context, eval::Meter::having_spent(capture_units))
            .result
    }

    /// [`Condition::evaluate`], with what the evaluation cost. The native path is tried first
    /// and the evaluator only if it declines, both on one meter (the estimate counts both).
    pub fn evaluate_metered<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: Option<&ConditionContext<'t>>,
    ) -> Evaluated {
        self.evaluate_on(field, context, eval::Meter::new())
    }

    fn evaluate_on<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: Option<&ConditionContext<'t>>,
        mut meter: eval::Meter,
    ) -> Evaluated {
        if let Some(answer) = self.constant {
            // Answered when compiled: a hit spends nothing on it, and neither does this.
            return Evaluated {
                result: Ok(answer),
                cost: 0,
                allocated_bytes: 0,
            };
        }
        if let Some(fast) = &self.fast {
            let span_field = |name: &str| {
                let context = context?;
                let (_, root) = context
                    .span_fields
                    .iter()
                    .find(|(field, _)| *field == name)?;
                context.tape.get(*root)
            };
            if let Some(answer) = fast.evaluate(field, &span_field, &mut meter) {
                return Evaluated {
                    result: Ok(answer),
                    cost: meter.spent,
                    allocated_bytes: meter.allocated,
                };
            }
        }
        self.evaluate_with(field, context, meter)
    }

    /// The evaluator alone, continuing on `meter`.
    fn evaluate_with<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: Option<&ConditionContext<'t>>,
        mut meter: eval::Meter,
    ) -> Evaluated {
        let inputs = eval::Inputs {
            field,
            context,
            max_string_bytes: self.limits.max_string_bytes as usize,
        };
        let result = match eval::evaluate(&self.expr, &inputs, &mut meter) {
            Ok(eval::Value::Bool(result)) => Ok(result),
            Ok(other) => Err(EvaluationError::NotBoolean(
                eval::type_name(&other).to_owned(),
            )),
            Err(eval::Fault::Error(failure)) => {
                Err(EvaluationError::Execution(failure.to_string()))
            }
            Err(eval::Fault::OverBudget(message)) => Err(EvaluationError::OverBudget(message)),
        };
        Evaluated {
            result,
            cost: meter.spent,
            allocated_bytes: meter.allocated,
        }
    }

    /// The limits the condition was compiled for: the values it reads are captured with them.
    pub fn limits(&self) -> &CaptureLimits {
        &self.limits
    }
}

/// The arm-time error for an estimate over budget, naming the sub-expression.
fn too_costly(source: &str, over: cost::OverBudget, limits: &CaptureLimits) -> ConditionError {
    let (span, estimate) = match over {
        cost::OverBudget::Cost { span, cost } => (
            span,
            format!("could cost up to {cost} units; at most {MAX_COST} are accepted"),
        ),
        cost::OverBudget::TextSize { span, bytes } => (
            span,
            format!(
                "could build a string of up to {bytes} bytes; at most {MAX_VALUE_BYTES} are accepted"
            ),
        ),
        cost::OverBudget::Items { span, items } => (
            span,
            format!(
                "could build a collection of up to {items} elements; at most {MAX_VALUE_ITEMS} are accepted"
            ),
        ),
    };
    let start = crate::text::floor_char_boundary(source, span.0.min(source.len()));
    let end = crate::text::floor_char_boundary(source, span.1.min(source.len()));
    let mut expression = source
        .get(start..end.max(start))
        .unwrap_or(source)
        .to_owned();
    if expression.len() > 80 {
        let cut = crate::text::floor_char_boundary(&expression, 77);
        expression.truncate(cut);
        expression.push_str("...");
    }
    let (line, column) = line_and_column(source, start);
    ConditionError::TooCostly {
        expression,
        line,
        column,
        estimate,
        max_string_bytes: limits.max_string_bytes,
        max_collection_len: limits.max_collection_len,
        max_depth: limits.max_depth,
    }
}

fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..crate::text::floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// One pass over the AST: node count, comprehension nesting, and the paths read of names not
/// bound by a comprehension.
///
/// A comprehension over a path (`order.items.exists(i, ...)`) binds its variable to the
/// elements of that path, so that what the body reads of `i` is read of each element of
/// `order.items` (`i.qty` reads `order` → `items` → elements → `qty`) and only that is
/// captured. Whatever the walk cannot follow stays whole: a range that is not a path (a
/// literal list, a `map` or `filter` result, a concatenation) is visited as any expression,
/// and its variable's reads add nothing, since what it ranges over is read whole where it is
/// built. A `filter` appends its variable itself to its result (`[i]` in its expansion), which
/// is a use of the element whole, so the elements of a filtered path are captured whole —
/// unless only the result's size is read (`size(items.filter(i, p))`): then only what the
/// predicate reads is.
#[derive(Default)]
struct Walk {
    nodes: usize,
    max_nesting: usize,
    /// Names bound by the comprehensions being visited, innermost last, each with the path
    /// it ranges over when that is a path of a free name.
    bound: Vec<(String, Option<ReadPath>)>,
    /// Each path read, and whether it is read whole (rather than only iterated).
    free_variables: Vec<(ReadPath, bool)>,
}

/// A path read of a point's field (or `ctx`): `a.b.c` reads `[b, c]` of `a`.
#[derive(Debug, Clone)]
struct ReadPath {
    name: String,
    /// The AST node of the name, for an error's position.
    id: u64,
    path: Vec<PathStep>,
}

impl Walk {
    fn visit(&mut self, expr: &IdedExpr, nesting: usize) {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return;
        }
        match &expr.expr {
            Expr::Ident(name) => self.use_name(name, expr.id, Vec::new(), true),
            Expr::Call(call) => {
                if let Some(filtered) = counted_filter(call) {
                    // The comprehension's node, which `visit` would have counted.
                    self.nodes += 1;
                    return self.comprehension(filtered, nesting, ResultUse::Counted);
                }
                if let Some(target) = &call.target {
                    self.visit(target, nesting);
                }
                for arg in &call.args {
                    self.visit(arg, nesting);
                }
            }
            Expr::Comprehension(comprehension) => {
                self.comprehension(comprehension, nesting, ResultUse::Used)
            }
            Expr::List(list) => {
                for element in &list.elements {
                    self.visit(element, nesting);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    self.visit_entry(&entry.expr, nesting);
                }
            }
            Expr::Struct(structure) => {
                for entry in &structure.entries {
                    self.visit_entry(&entry.expr, nesting);
                }
            }
            Expr::Select(select) => {
                // A chain of selections from a name (`order.user.tier`) reads one path of it.
                let mut path = vec![PathStep::Member(select.field.clone())];
                let mut operand = &select.operand;
                loop {
                    match &operand.expr {
                        Expr::Select(inner) => {
                            self.nodes += 1;
                            path.push(PathStep::Member(inner.field.clone()));
                            operand = &inner.operand;
                        }
                        Expr::Ident(name) => {
                            self.nodes += 1;
                            path.reverse();
                            self.use_name(name, operand.id, path, true);
                            break;
                        }
                        _ => {
                            self.visit(operand, nesting);
                            break;
                        }
                    }
                }
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }

    /// Visits a comprehension; `result` says whether its result is used or only counted.
    fn comprehension(
        &mut self,
        comprehension: &ComprehensionExpr,
        nesting: usize,
        result: ResultUse,
    ) {
        let nesting = nesting + 1;
        self.max_nesting = self.max_nesting.max(nesting);
        // A comprehension with two variables binds keys and values of a map; only the
        // one-variable form is followed into its elements (the lowering refuses the other,
        // but the walk runs first and must not under-read it).
        let ranged = if comprehension.iter_var2.is_none() {
            self.iterated_path(&comprehension.iter_range)
        } else {
            None
        };
        match &ranged {
            Some(range) => {
                let mut elements = range.clone();
                elements.path.push(PathStep::Elements);
                self.free_variables.push((elements, false));
            }
            None => self.visit(&comprehension.iter_range, nesting - 1),
        }
        self.visit(&comprehension.accu_init, nesting - 1);
        let bound_before = self.bound.len();
        let element_path = ranged.map(|mut range| {
            range.path.push(PathStep::Elements);
            range
        });
        self.bound
            .push((comprehension.iter_var.clone(), element_path));
        if let Some(second) = &comprehension.iter_var2 {
            self.bound.push((second.clone(), None));
        }
        self.bound.push((comprehension.accu_var.clone(), None));
        self.visit(&comprehension.loop_cond, nesting);
        match (result, program::filter_predicate(comprehension)) {
            // Only the number of elements a filter keeps is read: its predicate is what
            // reads the elements, and the elements themselves do not leave it.
            (ResultUse::Counted, Some(predicate)) => {
                self.visit(predicate, nesting);
                self.nodes += program::FILTER_STEP_NODES;
            }
            _ => self.visit(&comprehension.loop_step, nesting),
        }
        self.visit(&comprehension.result, nesting);
        self.bound.truncate(bound_before);
    }

    /// The path of a free name that `range` is, counting its nodes as [`Walk::visit`] would;
    /// `None` (and nothing counted) when it is not one.
    fn iterated_path(&mut self, range: &IdedExpr) -> Option<ReadPath> {
        let mut members = Vec::new();
        let mut operand = range;
        let (name, id) = loop {
            match &operand.expr {
                Expr::Select(select) if !select.test => {
                    members.push(PathStep::Member(select.field.clone()));
                    operand = &select.operand;
                }
                Expr::Ident(name) => break (name, operand.id),
                _ => return None,
            }
        };
        members.reverse();
        let origin = match self.binding(name) {
            Some(Some(origin)) => origin.clone(),
            Some(None) => return None,
            None => ReadPath {
                name: name.clone(),
                id,
                path: Vec::new(),
            },
        };
        self.nodes += members.len() + 1;
        let mut read = origin;
        read.path.extend(members);
        Some(read)
    }

    /// How `name` is bound by the comprehensions being visited: `None` if it is free,
    /// `Some(None)` if bound to something that is not a path.
    fn binding(&self, name: &str) -> Option<&Option<ReadPath>> {
        self.bound
            .iter()
            .rev()
            .find(|(bound, _)| bound == name)
            .map(|(_, origin)| origin)
    }

    fn use_name(&mut self, name: &str, id: u64, path: Vec<PathStep>, whole: bool) {
        let read = match self.binding(name) {
            None => ReadPath {
                name: name.to_owned(),
                id,
                path,
            },
            Some(None) => return,
            Some(Some(origin)) => {
                let mut read = origin.clone();
                read.path.extend(path);
                read
            }
        };
        self.free_variables.push((read, whole));
    }

    fn visit_entry(&mut self, entry: &EntryExpr, nesting: usize) {
        match entry {
            EntryExpr::StructField(field) => self.visit(&field.value, nesting),
            EntryExpr::MapEntry(entry) => {
                self.visit(&entry.key, nesting);
                self.visit(&entry.value, nesting);
            }
        }
    }
}

/// How a comprehension's result is read.
#[derive(Clone, Copy)]
enum ResultUse {
    Used,
    /// Only its size: `size(items.filter(i, p))`.
    Counted,
}

/// The `filter` comprehension whose size `call` takes (`size(f)` or `f.size()`), if it is one.
fn counted_filter(call: &CallExpr) -> Option<&ComprehensionExpr> {
    if call.func_name != "size" {
        return None;
    }
    let operand = match (&call.target, call.args.as_slice()) {
        (Some(target), []) => target,
        (None, [argument]) => argument,
        _ => return None,
    };
    match &operand.expr {
        Expr::Comprehension(comprehension)
            if program::filter_predicate(comprehension).is_some() =>
        {
            Some(comprehension)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::serialize::SnapshotBuilder;
    use crate::capture::serialize::field::FieldValue;
    use crate::limits::CaptureLimits;
    use crate::redaction::RedactionRules;

    #[derive(serde::Serialize)]
    struct Cart {
        total: u64,
        items: Vec<&'static str>,
        card_number: &'static str,
    }

    #[derive(serde::Serialize)]
    enum Tier {
        Gold,
    }

    const LIMITS: CaptureLimits = CaptureLimits::DEFAULT;

    fn compile(source: &str, fields: &[&str]) -> Result<Condition, ConditionError> {
        Condition::compile(source, fields, &LIMITS)
    }

    /// Captures `value` as field `name` the way a hit would, with `limits`.
    fn captured<T: serde::Serialize>(
        name: &'static str,
        value: &T,
        limits: CaptureLimits,
    ) -> (Tape, u32) {
        let rules = RedactionRules::builtin();
        let mut builder = SnapshotBuilder::new(&limits, &rules, u64::MAX, Tape::default());
        let root = builder.capture_field(name, FieldValue::serde(value));
        (builder.into_parts().0, root)
    }

    fn cart(total: u64) -> (Tape, u32) {
        let cart = Cart {
            total,
            items: vec!["a", "b"],
            card_number: "4111111111111111",
        };
        captured("cart", &cart, LIMITS)
    }

    fn eval(
        condition: &Condition,
        (tape, root): &(Tape, u32),
        name: &str,
    ) -> Result<bool, EvaluationError> {
        let field = |field: &str| (field == name).then(|| tape.get(*root)).flatten();
        condition.evaluate(&field, None)
    }

    /// A condition over no fields, not answered at compile time, so the evaluator's
    /// semantics can be tested on constant expressions.
    fn unfolded(source: &str) -> Result<Condition, ConditionError> {
        Condition::compile_unfolded(source, &[], &LIMITS)
    }

    /// A condition over no fields, evaluated with its cost.
    fn run(source: &str) -> Evaluated {
        let condition = unfolded(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        let evaluated = condition.evaluate_metered(&|_| None, None);
        assert!(
            evaluated.cost <= condition.estimated_cost(),
            "{source}: spent {} > estimate {}",
            evaluated.cost,
            condition.estimated_cost()
        );
        evaluated
    }

    #[test]
    fn names_the_span_fields_it_reads() {
        let reads = |source: &str| {
            let condition = compile(source, &["cart"]).expect("compiles");
            match condition.context_reads() {
                ContextReads::Named(names) => {
                    Some(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                }
                ContextReads::All => None,
            }
        };
        assert_eq!(reads("cart.total > 1u"), Some(vec![]));
        assert_eq!(
            reads("ctx.tier == 'gold' && ctx.request_id.startsWith('r-') && ctx.tier != 'x'"),
            Some(vec!["tier".to_owned(), "request_id".to_owned()])
        );
        assert_eq!(reads("'tier' in ctx"), None);
        assert_eq!(reads("size(ctx) > 2"), None);
    }

    #[test]
    fn evaluates_over_fields_and_context() {
        let condition = compile(
            r#"cart.total > 100u && size(cart.items) == 2 && ctx.request_id == "r-7f3a""#,
            &["cart", "user"],
        )
        .expect("compiles");
        assert!(condition.reads_field("cart"));
        assert!(!condition.reads_field("user"));
        assert!(condition.reads_context());
        let (span_tape, span_root) = captured("request_id", &"r-7f3a", LIMITS);
        let span_fields = [("request_id", span_root)];
        let ctx = ConditionContext {
            tape: &span_tape,
            span_fields: &span_fields,
            trace_id: None,
            span_id: None,
            thread: "main",
            thread_id: 1,
        };
        for (total, expected) in [(150, true), (50, false)] {
            let (tape, root) = cart(total);
            let field = |name: &str| (name == "cart").then(|| tape.get(root)).flatten();
            assert_eq!(condition.evaluate(&field, Some(&ctx)), Ok(expected));
        }
        let whole = compile("ctx.thread == 'main' && 'request_id' in ctx", &[]).expect("ok");
        assert_eq!(whole.evaluate(&|_| None, Some(&ctx)), Ok(true));
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let err = compile("cart.total >", &["cart"]).expect_err("bad syntax");
        match err {
            ConditionError::Syntax { line, column, .. } => {
                assert_eq!(line, 1);
                assert!(column >= 11, "column {column}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_names_are_refused_with_what_is_available() {
        let err = compile("cartt.total > 1", &["cart", "user_id"]).expect_err("typo");
        let message = err.to_string();
        assert!(message.contains("`cartt`"), "{message}");
        assert!(message.contains("column 1"), "{message}");
        assert!(message.contains("`cart`, `user_id`, `ctx`"), "{message}");
        // Comprehension variables are bound, not fields.
        compile("cart.items.all(i, i != '')", &["cart"]).expect("bound variable");
    }

    #[test]
    fn constructs_outside_the_subset_are_refused_with_what_is_supported() {
        for (source, what) in [
            ("s.matches('a.*')", "`matches`"),
            (
                "timestamp(s) > timestamp('2020-01-01T00:00:00Z')",
                "`timestamp`",
            ),
            ("s.lowerAscii() == 'a'", "`lowerAscii`"),
            ("duration('1s') == duration('1s')", "`duration`"),
        ] {
            let err = compile(source, &["s"]).expect_err(source);
            let message = err.to_string();
            assert!(
                matches!(err, ConditionError::Unsupported { .. }),
                "{source}: {message}"
            );
            assert!(message.contains(what), "{source}: {message}");
            assert!(
                message.contains("exists_one"),
                "lists the subset: {message}"
            );
        }
    }

    #[test]
    fn cost_is_bounded_at_compile_time() {
        let long = "a == 1 || ".repeat(200) + "a == 1";
        assert!(matches!(
            compile(&long, &["a"]),
            Err(ConditionError::TooLong { .. })
        ));
        let many = (0..100).map(|i| format!("a == {i}")).collect::<Vec<_>>();
        assert!(matches!(
            compile(&many.join("||"), &["a"]),
            Err(ConditionError::TooComplex { .. })
        ));
        let nested = "a.all(x, a.all(y, a.all(z, x == y && y == z)))";
        assert!(matches!(
            compile(nested, &["a"]),
            Err(ConditionError::TooDeep { depth: 3, .. })
        ));
        // Two deep over 100 elements each is 10,000 comparisons of captured values: too
        // costly for a hit at the default limits, fine over small collections of scalars.
        let two_deep = "a.all(x, a.exists(y, x == y))";
        let err = compile(two_deep, &["a"]).expect_err("too costly at default limits");
        assert!(matches!(err, ConditionError::TooCostly { .. }), "{err}");
        let small = CaptureLimits {
            max_depth: 1,
            max_collection_len: 10,
            max_struct_fields: 10,
            ..LIMITS
        };
        Condition::compile(two_deep, &["a"], &small).expect("two deep over small lists");
    }

    #[test]
    fn multiplying_strings_is_refused_at_the_stage_that_outgrows_the_cap() {
        let chain =
            |stages: usize| format!("[s]{}.size() > 0", ".map(x, x + x + x + x)".repeat(stages));
        Condition::compile(&chain(1), &["s"], &LIMITS).expect("one stage: 1 KiB strings");
        for stages in [4, 11, 13] {
            let err = Condition::compile(&chain(stages), &["s"], &LIMITS).expect_err("too big");
            let message = err.to_string();
            assert!(
                matches!(err, ConditionError::TooCostly { .. })
                    && message.contains("could ")
                    && message.contains("`x + x + x"),
                "{message}"
            );
        }
    }

    #[test]
    fn cel_semantics_of_errors_and_numbers() {
        let cases: &[(&str, Option<bool>)] = &[
            ("1 == 1u && 1.0 == 1 && 2u > 1 && -1 < 1u", Some(true)),
            ("'a' == 1", Some(false)),
            (
                "null == null && [1, 'a'] == [1, 'a'] && {'k': 1} == {'k': 1u}",
                Some(true),
            ),
            ("9223372036854775807 + 1 > 0", None),
            ("-9223372036854775808 - 1 < 0", None),
            ("0u - 1u > 0u", None),
            ("1 / 0 == 0", None),
            ("1 % 0 == 0", None),
            ("1.0 / 0.0 > 1e308", Some(true)),
            ("(1 / 0 == 0) && false", Some(false)),
            ("false && (1 / 0 == 0)", Some(false)),
            ("(1 / 0 == 0) || true", Some(true)),
            ("true && (1 / 0 == 0)", None),
            ("[1, 2, 3].exists_one(x, x > 2)", Some(true)),
            ("[1, 2, 3].exists_one(x, x > 1)", Some(false)),
            ("[1, 2, 3].filter(x, x > 1) == [2, 3]", Some(true)),
            ("[1, 2, 3].map(x, x * 2) == [2, 4, 6]", Some(true)),
            ("[1, 2, 3].map(x, x > 1, x * 2) == [4, 6]", Some(true)),
            ("[0, 1].all(x, 1 / x > 0)", None),
            ("[0, 1].exists(x, x == 1 || 1 / x > 0)", Some(true)),
            ("[1, 0].all(x, x > 0 && 1 / x > 0)", Some(false)),
            (
                "{'a': 1}.a == 1 && has({'a': 1}.a) && !has({'a': 1}.b)",
                Some(true),
            ),
            ("{'a': 1}.b == 1", None),
            (
                "2 in [1, 2] && 'a' in {'a': 1} && !(3 in [1, 2])",
                Some(true),
            ),
            ("[1, 2][1] == 2 && [1, 2][2] == 0", None),
            (
                "size('héllo') == 5 && size(b'ab') == 2 && size([1]) == 1",
                Some(true),
            ),
            (
                "'abc'.contains('b') && 'abc'.startsWith('a') && 'abc'.endsWith('c')",
                Some(true),
            ),
            (
                "int('12') == 12 && uint(3) == 3u && double('1.5') == 1.5",
                Some(true),
            ),
            (
                "string(1.5) == '1.5' && string(7u) == '7' && string(true) == 'true'",
                Some(true),
            ),
            ("int(1e19) == 0", None),
            ("uint(-1) == 0u", None),
            ("int('x') == 0", None),
            ("true ? 'a' + 'b' == 'ab' : 1 / 0 == 0", Some(true)),
            ("{'a': 1, 'a': 2}.a == 1", None),
        ];
        for (source, expected) in cases {
            let result = run(source).result;
            match expected {
                Some(expected) => assert_eq!(result, Ok(*expected), "{source}"),
                None => assert!(
                    matches!(result, Err(EvaluationError::Execution(_))),
                    "{source}: {result:?}"
                ),
            }
        }
        assert!(matches!(
            run("1 + 1").result,
            Err(EvaluationError::NotBoolean(_))
        ));
    }

    #[test]
    fn a_condition_that_reads_nothing_is_answered_once_or_refused() {
        let names = ["cart"];
        for (source, answer) in [
            ("false", false),
            ("true && 1 < 2", true),
            ("[1, 2].exists(x, x > 1)", true),
        ] {
            let condition = compile(source, &names).expect("compiles");
            let rules = RedactionRules::builtin();
            assert_eq!(
                condition.evaluate_direct(&names, &[], &rules, 1),
                Some(answer),
                "{source}"
            );
            assert_eq!(condition.evaluate(&|_| None, None), Ok(answer), "{source}");
        }
        // Reads a field: not constant.
        let reads = compile("cart.total > 1u", &names).expect("compiles");
        assert_eq!(reads.constant, None);
        for source in ["1 / 0 == 0", "1 + 1", "int('x') == 0"] {
            match compile(source, &names) {
                Err(ConditionError::FailsOnEveryHit { .. }) => {}
                other => panic!("{source}: {other:?}"),
            }
        }
    }

    /// `cel`'s interpreter as an oracle: on expressions over literals, the metered evaluator
    /// gives the same answer, or an error where it gives one.
    #[test]
    fn the_evaluator_agrees_with_the_cel_interpreter() {
        let sources = [
            "1 == 1u && 1.0 == 1 && 2u > 1 && -1 < 1u",
            "'a' == 1",
            "null == null && [1, 'a'] == [1, 'a']",
            "9223372036854775807 + 1 > 0",
            "0u - 1u > 0u",
            "1 / 0 == 0",
            "1 % 0 == 0",
            "(1 / 0 == 0) && false",
            "false && (1 / 0 == 0)",
            "(1 / 0 == 0) || true",
            "true && (1 / 0 == 0)",
            "[1, 2, 3].exists_one(x, x > 2)",
            "[1, 2, 3].exists_one(x, x > 1)",
            "[1, 2, 3].filter(x, x > 1) == [2, 3]",
            "[1, 2, 3].map(x, x * 2) == [2, 4, 6]",
            "[1, 2, 3].map(x, x > 1, x * 2) == [4, 6]",
            "[0, 1].all(x, 1 / x > 0)",
            "[0, 1].exists(x, x == 1 || 1 / x > 0)",
            "[1, 0].all(x, x > 0 && 1 / x > 0)",
            "{'a': 1}.a == 1 && has({'a': 1}.a) && !has({'a': 1}.b)",
            "{'a': 1}.b == 1",
            "2 in [1, 2] && 'a' in {'a': 1} && !(3 in [1, 2])",
            "[1, 2][2] == 0",
            "size('héllo') == 5 && size([1]) == 1",
            "'abc'.contains('b') && 'abc'.startsWith('a') && 'abc'.endsWith('c')",
            "int('12') == 12 && uint(3) == 3u && double('1.5') == 1.5",
            "string(7u) == '7' && string(true) == 'true'",
            "uint(-1) == 0u",
            "int('x') == 0",
            "'ab' + 'cd' == 'abcd' && [1] + [2] == [1, 2]",
            "1 + 1",
            "'a' < 'b' && 'b' > 'a' && true > false",
        ];
        let env = std::sync::Arc::new(cel::Env::stdlib());
        for source in sources {
            let ours = run(source).result;
            let program = cel::Program::compile(source).expect("parses");
            let theirs = program.execute(&cel::Context::with_env(std::sync::Arc::clone(&env)));
            match theirs {
                Ok(cel::Value::Bool(b)) => assert_eq!(ours, Ok(b), "{source}"),
                Ok(_) => assert!(
                    matches!(ours, Err(EvaluationError::NotBoolean(_))),
                    "{source}: {ours:?}"
                ),
                Err(error) => assert!(
                    matches!(ours, Err(EvaluationError::Execution(_))),
                    "{source}: cel says {error}, we say {ours:?}"
                ),
            }
        }
    }

    #[test]
    fn the_meter_stops_an_evaluation_at_its_budget() {
        let source = "['ab', 'cd'].map(x, x + x).exists(y, y.contains('z'))";
        let full = run(source);
        assert_eq!(full.result, Ok(false));
        eval::TEST_BUDGET.with(|budget| budget.set(Some(full.cost - 1)));
        let stopped = unfolded(source)
            .expect("ok")
            .evaluate_metered(&|_| None, None);
        eval::TEST_BUDGET.with(|budget| budget.set(None));
        assert!(
            matches!(stopped.result, Err(EvaluationError::OverBudget(_))),
            "{stopped:?}"
        );
        // Over budget is not a CEL error: `||` does not absorb it.
        eval::TEST_BUDGET.with(|budget| budget.set(Some(3)));
        let absorbed = run_unchecked("[1, 2, 3, 4].all(x, x > 0) || true");
        eval::TEST_BUDGET.with(|budget| budget.set(None));
        assert!(matches!(absorbed, Err(EvaluationError::OverBudget(_))));
    }

    /// A capture whose condition runs out of its budget on several hits in a row is ended
    /// with a reason that says so; a hit within budget in between resets the count.
    #[test]
    fn a_capture_whose_condition_keeps_running_out_is_disarmed() {
        use crate::capture::EndReason;
        use crate::capture::spec::CaptureSpec;
        fn hit(n: u64) {
            crate::snapshot!("condition.test_over_budget", n);
        }
        let mut stream = crate::point::PointRegistry::global()
            .arm(
                CaptureSpec::new("s", "condition.test_over_budget")
                    .condition("[n, n, n].map(x, x + 1u).size() == 3")
                    .duration(std::time::Duration::from_secs(30)),
            )
            .expect("armed");
        let over = |hits: u64| {
            eval::TEST_BUDGET.with(|budget| budget.set(Some(5)));
            for n in 0..hits {
                hit(n);
            }
            eval::TEST_BUDGET.with(|budget| budget.set(None));
        };
        over(2);
        hit(7);
        over(2);
        let status = stream.status();
        assert_eq!(status.counters.condition_errors, 4, "{status:?}");
        assert_eq!(status.ended, None, "never three in a row yet");
        over(1);
        let status = stream.status();
        assert_eq!(status.ended, Some(EndReason::ConditionOverBudget));
        let error = status.last_condition_error.expect("kept");
        assert!(error.contains("budget"), "{error}");
        assert!(
            EndReason::ConditionOverBudget
                .to_string()
                .contains("cost budget")
        );
        while stream.try_next().is_some() {}
    }

    fn run_unchecked(source: &str) -> Result<bool, EvaluationError> {
        unfolded(source).expect("ok").evaluate(&|_| None, None)
    }

    #[test]
    fn errors_and_non_booleans_are_reported_not_raised() {
        let value = cart(1);
        let condition = compile("cart.total > 'x'", &["cart"]).expect("compiles");
        assert!(matches!(
            eval(&condition, &value, "cart"),
            Err(EvaluationError::Execution(_))
        ));
        let condition = compile("cart.total", &["cart"]).expect("compiles");
        assert!(matches!(
            eval(&condition, &value, "cart"),
            Err(EvaluationError::NotBoolean(_))
        ));
        let condition = compile("cart.missing == 1", &["cart"]).expect("compiles");
        assert!(eval(&condition, &value, "cart").is_err());
    }

    #[test]
    fn redacted_values_read_as_null() {
        let value = cart(1);
        let probe = compile("cart.card_number == null", &["cart"]).expect("compiles");
        assert_eq!(eval(&probe, &value, "cart"), Ok(true));
        let guess = compile("cart.card_number == '4111111111111111'", &["cart"]).expect("compiles");
        assert_eq!(eval(&guess, &value, "cart"), Ok(false));
    }

    #[test]
    fn only_the_parts_read_are_projected() {
        let condition = compile(
            "cart.total > 1u && cart.items.size() == 2 && has(cart.total)",
            &["cart"],
        )
        .expect("compiles");
        let projection = condition.projection("cart").expect("reads cart");
        assert!(!projection.is_whole());
        let members: Vec<_> = projection.member_names().collect();
        assert_eq!(members, ["total", "items"]);
        assert_eq!(eval(&condition, &cart(5), "cart"), Ok(true));
        let whole = compile("cart != null", &["cart"]).expect("compiles");
        assert!(whole.projection("cart").expect("reads").is_whole());
    }

    /// What `source` reads of `order`, for a point with fields `order` and `limit`.
    fn reads_of_order(source: &str) -> Projection {
        compile(source, &["order", "limit"])
            .expect("compiles")
            .projection("order")
            .expect("reads order")
            .clone()
    }

    /// The projection at `path` (member names; `*` for the elements).
    fn at<'p>(projection: &'p Projection, path: &[&str]) -> &'p Projection {
        path.iter().fold(projection, |inner, step| match *step {
            "*" => inner.elements().expect("iterated"),
            name => inner.member(name).expect("read"),
        })
    }

    #[test]
    fn a_comprehension_over_a_path_reads_only_what_its_body_reads_of_each_element() {
        let exists = reads_of_order("order.items.exists(i, i.qty > limit)");
        assert!(!exists.is_whole());
        assert!(!at(&exists, &["items"]).is_whole());
        let each = at(&exists, &["items", "*"]);
        assert!(!each.is_whole());
        assert_eq!(each.member_names().collect::<Vec<_>>(), ["qty"]);
        assert!(at(each, &["qty"]).is_whole());

        // A map's body values are built from what it reads; what reads them reads inside.
        let mapped = reads_of_order("order.items.map(i, i.qty).exists(q, q > 1u)");
        assert_eq!(mapped, exists);

        // Nested, and a variable that shadows the field's own name.
        let nested =
            reads_of_order("order.boxes.exists(b, b.items.exists(order, order.sku == 'x'))");
        assert_eq!(nested.member_names().collect::<Vec<_>>(), ["boxes"]);
        let sku = at(&nested, &["boxes", "*", "items", "*", "sku"]);
        assert!(sku.is_whole());
        assert_eq!(
            at(&nested, &["boxes", "*"])
                .member_names()
                .collect::<Vec<_>>(),
            ["items"]
        );

        // Only the size of a filter's result is read: only what its predicate reads.
        for counted in [
            "order.items.filter(i, i.qty > 1u).size() > 0",
            "size(order.items.filter(i, i.qty > 1u)) > 0",
        ] {
            assert_eq!(reads_of_order(counted), exists, "{counted}");
        }

        // Iterated but nothing read of an element: the elements are there, empty of members.
        let counted = reads_of_order("order.items.exists(i, true)");
        let each = at(&counted, &["items", "*"]);
        assert!(!each.is_whole() && each.member_names().next().is_none());
    }

    #[test]
    fn iterating_a_map_or_a_struct_keeps_every_entry() {
        #[derive(serde::Serialize)]
        struct Tagged {
            attrs: std::collections::BTreeMap<&'static str, u32>,
            inner: Inner,
            other: u64,
        }
        let value = Tagged {
            attrs: [("region", 1), ("vip", 2)].into_iter().collect(),
            inner: Inner { x: 3 },
            other: 4,
        };
        let fields = [("order", FieldValue::serde(&value))];
        for (source, answer) in [
            ("order.attrs.exists(k, k == 'vip')", true),
            ("order.attrs.all(k, k != 'other')", true),
            ("order.inner.exists(k, k == 'x')", true),
            ("order.attrs.exists(k, k == 'other')", false),
        ] {
            let condition = compile(source, &["order"]).expect("compiles");
            let narrow = crate::capture::dry_run::CapturedValues::capture(&condition, &fields);
            assert_eq!(narrow.evaluate(&condition).result, Ok(answer), "{source}");
        }
    }

    #[test]
    fn what_the_walk_cannot_follow_is_read_whole() {
        // A filter's result holds the elements themselves.
        let filtered = reads_of_order("order.items.filter(i, i.qty > 1u).map(j, j).size() > 0");
        assert!(at(&filtered, &["items", "*"]).is_whole());
        // A range that is not a path: its parts are read whole where it is built.
        let joined =
            reads_of_order("(limit > 0u ? order.items : order.items).exists(i, i.qty > 1u)");
        assert!(at(&joined, &["items"]).is_whole());
        assert!(at(&joined, &["items"]).elements().is_none());
        // The element used whole.
        let whole = reads_of_order("order.items.exists(i, i == 'x')");
        assert!(at(&whole, &["items", "*"]).is_whole());
        // Iterating `ctx` visits every span field.
        let context = compile("ctx.exists(k, k == 'tier')", &[]).expect("compiles");
        assert!(matches!(context.context_reads(), ContextReads::All));
    }

    #[test]
    fn enums_read_as_variant_names_and_truncated_strings_as_their_prefix() {
        let tier = captured("tier", &Tier::Gold, LIMITS);
        let condition = compile("tier == 'Gold'", &["tier"]).expect("compiles");
        assert_eq!(eval(&condition, &tier, "tier"), Ok(true));
        let short = CaptureLimits {
            max_string_bytes: 3,
            ..LIMITS
        };
        let long = captured("s", &"abcdefghij", short);
        let condition = Condition::compile("s == 'abc'", &["s"], &short).expect("compiles");
        assert_eq!(eval(&condition, &long, "s"), Ok(true));
    }

    #[derive(serde::Serialize)]
    struct Inner {
        x: u64,
    }

    #[derive(serde::Serialize)]
    struct Item {
        n: i64,
        u: u64,
        f: f64,
        s: &'static str,
        b: bool,
        tier: Tier,
        nested: Inner,
        card_number: &'static str,
        tags: std::collections::BTreeMap<&'static str, &'static str>,
    }

    fn item(n: i64, s: &'static str) -> Item {
        Item {
            n,
            u: 10,
            f: 1.25,
            s,
            b: n % 2 == 0,
            tier: Tier::Gold,
            nested: Inner { x: 7 },
            card_number: "4111111111111111",
            tags: [("env", "prod")].into_iter().collect(),
        }
    }

    /// The native path must agree with the evaluator whenever it answers, and answer for the
    /// simple forms.
    #[test]
    fn native_evaluation_agrees_with_the_evaluator() {
        let answered_natively = [
            "item.n > 3",
            "item.n == -2",
            "3 < item.n",
            "item.u >= 10u",
            "item.f < 1.5",
            "item.s == 'abc'",
            "item.s != 'abd'",
            "item.s < 'b'",
            "item.b == true",
            "item.tier == 'Gold'",
            "item.tier != 'Silver'",
            "item.nested.x > 1u",
            "item.tags.env == 'prod'",
            "!(item.n > 3)",
            "item.n > 3 && item.s == 'abc'",
            "item.n > 100 || item.s == 'abc'",
            "ctx.request_id == 'r-1'",
        ];
        let left_to_the_evaluator = [
            "item.u > 3",
            "item.missing == 1",
            "item.card_number == '4111111111111111'",
            "item.n > 3 && item.missing == 1",
            "item.n > 3 || item.missing == 1",
            "item.b",
            "size(item.s) > 1",
            "item.tags.absent == 'x'",
            "ctx.absent == 'x'",
        ];
        let (span_tape, span_root) = captured("request_id", &"r-1", LIMITS);
        let span_fields = [("request_id", span_root)];
        let ctx = ConditionContext {
            tape: &span_tape,
            span_fields: &span_fields,
            trace_id: None,
            span_id: None,
            thread: "t",
            thread_id: 1,
        };
        for value in [item(5, "abc"), item(-2, "zzz"), item(1, "")] {
            let (tape, root) = captured("item", &value, LIMITS);
            let field = |name: &str| (name == "item").then(|| tape.get(root)).flatten();
            let span = |name: &str| {
                (name == "request_id")
                    .then(|| span_tape.get(span_root))
                    .flatten()
            };
            for (source, must_answer) in answered_natively
                .iter()
                .map(|s| (s, true))
                .chain(left_to_the_evaluator.iter().map(|s| (s, false)))
            {
                let condition = compile(source, &["item"]).expect(source);
                let native = condition.evaluate_natively(&field, &span);
                let general = condition
                    .evaluate_with(&field, Some(&ctx), eval::Meter::new())
                    .result;
                if must_answer {
                    assert!(native.is_some(), "{source} should be answered natively");
                }
                if let Some(native) = native {
                    assert_eq!(Ok(native), general, "{source} on n={}", value.n);
                }
                let both = condition.evaluate_metered(&field, Some(&ctx));
                assert_eq!(both.result, general, "{source}");
                assert!(
                    both.cost <= condition.estimated_cost(),
                    "{source}: {both:?}"
                );
            }
        }
        // Some forms are never native, so their errors stay the evaluator's.
        let (tape, root) = captured("item", &item(1, "a"), LIMITS);
        let field = |name: &str| (name == "item").then(|| tape.get(root)).flatten();
        let none = |_: &str| None;
        for source in [
            "item.u > 3",
            "item.b",
            "item.card_number == 'x'",
            "item.missing == 1",
        ] {
            let condition = compile(source, &["item"]).expect(source);
            assert_eq!(condition.evaluate_natively(&field, &none), None, "{source}");
        }
    }
}
