//! Capture conditions: CEL expressions over a point's captured fields and `ctx`.
//!
//! A condition is compiled when a capture is armed, so every mistake — a syntax error, a name
//! the point does not have, an expression too large to evaluate cheaply — is reported then, with
//! its position, instead of silently never matching. Evaluation sees only captured values, after
//! limits and redaction: a redacted value reads as `null`, so a condition can never be used to
//! probe a secret one guess at a time.
//!
//! Cost is bounded by construction: the expression's length and node count are capped,
//! comprehensions (`all`, `exists`, `map`, `filter`) may nest at most two deep, and they iterate
//! over captured collections, which the limits already cap (100 elements by default). The CEL
//! build has no regular expressions, so `matches` is unavailable.

mod fast;

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::types::{
    CelBool, CelBytes, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;

use crate::value::{Tape, ValueKind, ValueRef};

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
}

/// Why one evaluation did not produce true or false. Counted, never fatal.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvaluationError {
    #[error("condition failed to evaluate: {0}")]
    Execution(String),
    #[error("condition evaluated to {0}, not a bool")]
    NotBoolean(String),
}

/// A compiled condition.
pub struct Condition {
    source: String,
    program: cel::Program,
    /// The same condition in the natively evaluated subset, when it is in it.
    fast: Option<fast::FastCondition>,
    env: Arc<cel::Env>,
    /// Top-level names the expression reads (fields, and `ctx` if used), with the parts of
    /// each that it reads.
    variables: Vec<(String, Projection)>,
}

/// The parts of a value an expression reads: `order.total_cents > 1` reads one field of
/// `order`, so only that field is converted for CEL, not the whole order.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Projection {
    /// The value is used as a whole (passed to a function, compared, iterated...).
    whole: bool,
    members: Vec<(String, Projection)>,
}

impl Projection {
    fn add_path(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.whole = true,
            Some((first, rest)) => {
                let index = match self.members.iter().position(|(name, _)| name == first) {
                    Some(index) => index,
                    None => {
                        self.members.push((first.clone(), Projection::default()));
                        self.members.len() - 1
                    }
                };
                self.members[index].1.add_path(rest);
            }
        }
    }

    pub(crate) fn is_whole(&self) -> bool {
        self.whole
    }

    pub(crate) fn member(&self, name: &str) -> Option<&Projection> {
        self.members
            .iter()
            .find(|(member, _)| member == name)
            .map(|(_, projection)| projection)
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("source", &self.source)
            .finish()
    }
}

impl Condition {
    /// Compiles `source` for a point whose fields are `field_names`.
    pub fn compile(source: &str, field_names: &[&str]) -> Result<Condition, ConditionError> {
        if source.len() > MAX_CONDITION_LEN {
            return Err(ConditionError::TooLong {
                len: source.len(),
                max: MAX_CONDITION_LEN,
            });
        }
        let program = cel::Program::compile(source).map_err(|errors| {
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

        let mut walk = Walk::default();
        walk.visit(program.expression(), 0);
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
        for (name, id, path) in walk.free_variables {
            if name != CONTEXT_VARIABLE && !field_names.contains(&name.as_str()) {
                let offset = program
                    .source_info()
                    .offset_for(id)
                    .map_or(0, |(start, _)| start as usize);
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
                Some((_, projection)) => projection.add_path(&path),
                None => {
                    let mut projection = Projection::default();
                    projection.add_path(&path);
                    variables.push((name, projection));
                }
            }
        }
        Ok(Condition {
            source: source.to_owned(),
            fast: fast::FastCondition::from_expression(program.expression()),
            program,
            env: Arc::new(cel::Env::stdlib()),
            variables,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the condition reads the point field `name` (so it must be captured first).
    pub fn reads_field(&self, name: &str) -> bool {
        name != CONTEXT_VARIABLE && self.projection(name).is_some()
    }

    pub fn reads_context(&self) -> bool {
        self.projection(CONTEXT_VARIABLE).is_some()
    }

    /// The parts of field `name` the condition reads, if it reads it at all.
    pub(crate) fn projection(&self, name: &str) -> Option<&Projection> {
        self.variables
            .iter()
            .find(|(variable, _)| variable == name)
            .map(|(_, projection)| projection)
    }

    /// The answer without the CEL interpreter, when it is certain: for conditions made of
    /// field paths compared with literals, joined by `&&`, `||` and `!`. `None` means ask
    /// [`Condition::evaluate`]. `field` finds a point field's captured value, `context` a span
    /// field's.
    pub fn evaluate_natively<'t>(
        &self,
        field: &dyn Fn(&str) -> Option<ValueRef<'t>>,
        context: &dyn Fn(&str) -> Option<ValueRef<'t>>,
    ) -> Option<bool> {
        self.fast.as_ref()?.evaluate(field, context)
    }

    /// Evaluates against captured `fields` and, if the condition reads it, the context map.
    pub fn evaluate<'a>(
        &self,
        fields: impl Iterator<Item = (&'a str, ValueRef<'a>)>,
        context: Option<Box<dyn Val + 'a>>,
    ) -> Result<bool, EvaluationError> {
        let mut scope = cel::Context::with_env(Arc::clone(&self.env));
        for (name, value) in fields {
            if name == CONTEXT_VARIABLE {
                continue;
            }
            if let Some(projection) = self.projection(name) {
                scope.add_variable_as_val(name, to_cel_projected(value, projection));
            }
        }
        if let Some(context) = context {
            scope.add_variable_as_val(CONTEXT_VARIABLE, context);
        }
        match self.program.execute(&scope) {
            Ok(cel::Value::Bool(result)) => Ok(result),
            Ok(other) => Err(EvaluationError::NotBoolean(format!(
                "{:?}",
                other.type_of()
            ))),
            Err(error) => Err(EvaluationError::Execution(error.to_string())),
        }
    }
}

/// Builds the `ctx` map: span fields (already redacted) plus thread and trace identity. The
/// values borrow from the snapshot's tape; nothing is copied.
pub(crate) fn context_value<'a>(
    tape: &'a Tape,
    span_fields: &[(&'static str, u32)],
    trace_id: Option<&'a str>,
    span_id: Option<&'a str>,
    thread_name: &'a str,
    thread_id: u64,
) -> Box<dyn Val + 'a> {
    let mut map: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> =
        HashMap::with_capacity(span_fields.len() + 4);
    for (name, root) in span_fields {
        if let Some(value) = tape.get(*root) {
            map.insert(CelMapKey::from(*name), to_cel(value));
        }
    }
    let text = |text: Option<&'a str>| -> Box<dyn Val + 'a> {
        match text {
            Some(text) => Box::new(CelString::from(text)),
            None => Box::new(CelNull),
        }
    };
    map.entry(CelMapKey::from("thread"))
        .or_insert_with(|| Box::new(CelString::from(thread_name)));
    map.entry(CelMapKey::from("thread_id"))
        .or_insert_with(|| Box::new(CelUInt::from(thread_id)));
    map.entry(CelMapKey::from("trace_id"))
        .or_insert_with(|| text(trace_id));
    map.entry(CelMapKey::from("span_id"))
        .or_insert_with(|| text(span_id));
    Box::new(CelMap::from(map))
}

/// The CEL view of the parts of `value` that `projection` names, borrowing from the tape.
fn to_cel_projected<'t>(value: ValueRef<'t>, projection: &Projection) -> Box<dyn Val + 't> {
    if projection.whole {
        return to_cel(value);
    }
    match value.kind() {
        ValueKind::Struct { .. } | ValueKind::Enum { .. } => {
            let mut map: HashMap<CelMapKey<'t>, Box<dyn Val + 't>> = value
                .fields()
                .filter_map(|(name, value)| {
                    let member = projection.member(name)?;
                    Some((CelMapKey::from(name), to_cel_projected(value, member)))
                })
                .collect();
            if let ValueKind::Enum { variant, .. } = value.kind() {
                if map.is_empty() && value.fields().next().is_none() {
                    // A unit variant reads as its name (`tier == "Gold"`), even when projected.
                    return to_cel(value);
                }
                if projection.member("variant").is_some() {
                    map.insert(
                        CelMapKey::from("variant"),
                        Box::new(CelString::from(variant)),
                    );
                }
            }
            Box::new(CelMap::from(map))
        }
        ValueKind::Map { .. } => {
            let map: HashMap<CelMapKey<'t>, Box<dyn Val + 't>> = value
                .entries()
                .filter_map(|(key, value)| {
                    let key = key.as_str()?;
                    let member = projection.member(key)?;
                    Some((CelMapKey::from(key), to_cel_projected(value, member)))
                })
                .collect();
            Box::new(CelMap::from(map))
        }
        _ => to_cel(value),
    }
}

/// The CEL view of a captured value, borrowing from the tape. Structs are maps by field name;
/// a unit enum variant is its name, a variant with a payload is a map with `variant` and its
/// fields; withheld values are `null`.
fn to_cel<'t>(value: ValueRef<'t>) -> Box<dyn Val + 't> {
    match value.kind() {
        ValueKind::Null | ValueKind::Redacted(_) | ValueKind::NotCaptured { .. } => {
            Box::new(CelNull)
        }
        ValueKind::Bool(b) => Box::new(CelBool::from(b)),
        ValueKind::Int(i) => Box::new(CelInt::from(i)),
        ValueKind::Uint(u) => Box::new(CelUInt::from(u)),
        ValueKind::Float(f) => Box::new(CelDouble::from(f)),
        ValueKind::Str { text, .. } => Box::new(CelString::from(text)),
        ValueKind::Bytes { bytes, .. } => Box::new(CelBytes::from(bytes)),
        ValueKind::List { .. } => {
            Box::new(CelList::from(value.items().map(to_cel).collect::<Vec<_>>()))
        }
        ValueKind::Map { .. } => {
            let map: HashMap<CelMapKey<'t>, Box<dyn Val + 't>> = value
                .entries()
                .filter_map(|(key, value)| {
                    let key = match key.kind() {
                        ValueKind::Str { text, .. } => CelMapKey::from(text),
                        ValueKind::Int(i) => CelMapKey::from(i),
                        ValueKind::Uint(u) => CelMapKey::from(u),
                        ValueKind::Bool(b) => CelMapKey::from(b),
                        _ => return None,
                    };
                    Some((key, to_cel(value)))
                })
                .collect();
            Box::new(CelMap::from(map))
        }
        ValueKind::Struct { .. } => fields_map(value, None),
        ValueKind::Enum { variant, .. } => {
            if value.fields().next().is_none() {
                Box::new(CelString::from(variant))
            } else {
                fields_map(value, Some(variant))
            }
        }
    }
}

fn fields_map<'t>(value: ValueRef<'t>, variant: Option<&'static str>) -> Box<dyn Val + 't> {
    let mut map: HashMap<CelMapKey<'t>, Box<dyn Val + 't>> = value
        .fields()
        .map(|(name, value)| (CelMapKey::from(name), to_cel(value)))
        .collect();
    if let Some(variant) = variant {
        map.insert(
            CelMapKey::from("variant"),
            Box::new(CelString::from(variant)),
        );
    }
    Box::new(CelMap::from(map))
}

fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..crate::capture::serialize::floor_char_boundary(source, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// One pass over the AST: node count, comprehension nesting, and names not bound by a
/// comprehension.
#[derive(Default)]
struct Walk {
    nodes: usize,
    max_nesting: usize,
    bound: Vec<String>,
    /// Each use of a free name, with the member path read from it (`a.b.c` reads `[b, c]`).
    free_variables: Vec<(String, u64, Vec<String>)>,
}

impl Walk {
    fn visit(&mut self, expr: &IdedExpr, nesting: usize) {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return;
        }
        match &expr.expr {
            Expr::Ident(name) => self.use_name(name, expr.id, Vec::new()),
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    self.visit(target, nesting);
                }
                for arg in &call.args {
                    self.visit(arg, nesting);
                }
            }
            Expr::Comprehension(comprehension) => {
                let nesting = nesting + 1;
                self.max_nesting = self.max_nesting.max(nesting);
                self.visit(&comprehension.iter_range, nesting - 1);
                self.visit(&comprehension.accu_init, nesting - 1);
                let bound_before = self.bound.len();
                self.bound.push(comprehension.iter_var.clone());
                if let Some(second) = &comprehension.iter_var2 {
                    self.bound.push(second.clone());
                }
                self.bound.push(comprehension.accu_var.clone());
                self.visit(&comprehension.loop_cond, nesting);
                self.visit(&comprehension.loop_step, nesting);
                self.visit(&comprehension.result, nesting);
                self.bound.truncate(bound_before);
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
                let mut path = vec![select.field.clone()];
                let mut operand = &select.operand;
                loop {
                    match &operand.expr {
                        Expr::Select(inner) => {
                            self.nodes += 1;
                            path.push(inner.field.clone());
                            operand = &inner.operand;
                        }
                        Expr::Ident(name) => {
                            self.nodes += 1;
                            path.reverse();
                            self.use_name(name, operand.id, path);
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

    fn use_name(&mut self, name: &str, id: u64, path: Vec<String>) {
        if !self.bound.iter().any(|bound| bound == name) {
            self.free_variables.push((name.to_owned(), id, path));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::limits::CaptureLimits;
    use crate::capture::serialize::SnapshotBuilder;
    use crate::field::FieldValue;
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
        captured("cart", &cart, CaptureLimits::DEFAULT)
    }

    fn eval(
        condition: &Condition,
        (tape, root): &(Tape, u32),
        name: &str,
    ) -> Result<bool, EvaluationError> {
        let value = tape.get(*root).expect("root");
        condition.evaluate([(name, value)].into_iter(), None)
    }

    #[test]
    fn evaluates_over_fields_and_context() {
        let condition = Condition::compile(
            r#"cart.total > 100u && size(cart.items) == 2 && ctx.request_id == "r-7f3a""#,
            &["cart", "user"],
        )
        .expect("compiles");
        assert!(condition.reads_field("cart"));
        assert!(!condition.reads_field("user"));
        assert!(condition.reads_context());
        let (span_tape, span_root) = captured("request_id", &"r-7f3a", CaptureLimits::DEFAULT);
        let ctx = context_value(
            &span_tape,
            &[("request_id", span_root)],
            None,
            None,
            "main",
            1,
        );
        let (tape, root) = cart(150);
        let fields = [("cart", tape.get(root).expect("root"))];
        assert_eq!(
            condition.evaluate(fields.into_iter(), Some(ctx.clone())),
            Ok(true)
        );
        let (tape, root) = cart(50);
        let fields = [("cart", tape.get(root).expect("root"))];
        assert_eq!(condition.evaluate(fields.into_iter(), Some(ctx)), Ok(false));
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let err = Condition::compile("cart.total >", &["cart"]).expect_err("bad syntax");
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
        let err = Condition::compile("cartt.total > 1", &["cart", "user_id"]).expect_err("typo");
        let message = err.to_string();
        assert!(message.contains("`cartt`"), "{message}");
        assert!(message.contains("column 1"), "{message}");
        assert!(message.contains("`cart`, `user_id`, `ctx`"), "{message}");
        // Comprehension variables are bound, not fields.
        Condition::compile("cart.items.all(i, i != '')", &["cart"]).expect("bound variable");
    }

    #[test]
    fn cost_is_bounded_at_compile_time() {
        let long = "a == 1 || ".repeat(200) + "a == 1";
        assert!(matches!(
            Condition::compile(&long, &["a"]),
            Err(ConditionError::TooLong { .. })
        ));
        let many = (0..100).map(|i| format!("a == {i}")).collect::<Vec<_>>();
        assert!(matches!(
            Condition::compile(&many.join("||"), &["a"]),
            Err(ConditionError::TooComplex { .. })
        ));
        let nested = "a.all(x, a.all(y, a.all(z, x == y && y == z)))";
        assert!(matches!(
            Condition::compile(nested, &["a"]),
            Err(ConditionError::TooDeep { depth: 3, .. })
        ));
        Condition::compile("a.all(x, a.exists(y, x == y))", &["a"]).expect("two deep is fine");
    }

    #[test]
    fn errors_and_non_booleans_are_reported_not_raised() {
        let value = cart(1);
        let condition = Condition::compile("cart.total > 'x'", &["cart"]).expect("compiles");
        assert!(matches!(
            eval(&condition, &value, "cart"),
            Err(EvaluationError::Execution(_))
        ));
        let condition = Condition::compile("cart.total", &["cart"]).expect("compiles");
        assert!(matches!(
            eval(&condition, &value, "cart"),
            Err(EvaluationError::NotBoolean(_))
        ));
        let condition = Condition::compile("cart.missing == 1", &["cart"]).expect("compiles");
        assert!(eval(&condition, &value, "cart").is_err());
    }

    #[test]
    fn redacted_values_read_as_null() {
        let value = cart(1);
        let probe = Condition::compile("cart.card_number == null", &["cart"]).expect("compiles");
        assert_eq!(eval(&probe, &value, "cart"), Ok(true));
        let guess = Condition::compile("cart.card_number == '4111111111111111'", &["cart"])
            .expect("compiles");
        assert_eq!(eval(&guess, &value, "cart"), Ok(false));
    }

    #[test]
    fn only_the_parts_read_are_converted() {
        let condition = Condition::compile(
            "cart.total > 1u && cart.items.size() == 2 && has(cart.total)",
            &["cart"],
        )
        .expect("compiles");
        let projection = condition.projection("cart").expect("reads cart");
        assert!(!projection.whole);
        let members: Vec<_> = projection.members.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(members, ["total", "items"]);
        let (tape, root) = cart(5);
        let converted = to_cel_projected(tape.get(root).expect("root"), projection);
        let shown = format!("{converted:?}");
        assert!(
            shown.contains("total") && shown.contains("items"),
            "{shown}"
        );
        assert!(!shown.contains("card_number"), "not converted: {shown}");
        drop(converted);
        assert_eq!(eval(&condition, &(tape, root), "cart"), Ok(true));
        let whole = Condition::compile("cart != null", &["cart"]).expect("compiles");
        assert!(whole.projection("cart").expect("reads").whole);
    }

    #[test]
    fn enums_read_as_variant_names_and_truncated_strings_as_their_prefix() {
        let tier = captured("tier", &Tier::Gold, CaptureLimits::DEFAULT);
        let condition = Condition::compile("tier == 'Gold'", &["tier"]).expect("compiles");
        assert_eq!(eval(&condition, &tier, "tier"), Ok(true));
        let short = CaptureLimits {
            max_string_bytes: 3,
            ..CaptureLimits::DEFAULT
        };
        let long = captured("s", &"abcdefghij", short);
        let condition = Condition::compile("s == 'abc'", &["s"]).expect("compiles");
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

    /// The native path must agree with CEL whenever it answers, and answer for the simple forms.
    #[test]
    fn native_evaluation_agrees_with_cel() {
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
        let left_to_cel = [
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
        let (span_tape, span_root) = captured("request_id", &"r-1", CaptureLimits::DEFAULT);
        for value in [item(5, "abc"), item(-2, "zzz"), item(1, "")] {
            let (tape, root) = captured("item", &value, CaptureLimits::DEFAULT);
            let field = |name: &str| (name == "item").then(|| tape.get(root)).flatten();
            let span = |name: &str| {
                (name == "request_id")
                    .then(|| span_tape.get(span_root))
                    .flatten()
            };
            for (source, must_answer) in answered_natively
                .iter()
                .map(|s| (s, true))
                .chain(left_to_cel.iter().map(|s| (s, false)))
            {
                let condition = Condition::compile(source, &["item"]).expect(source);
                let native = condition.evaluate_natively(&field, &span);
                let ctx =
                    context_value(&span_tape, &[("request_id", span_root)], None, None, "t", 1);
                let cel = condition.evaluate(
                    [("item", tape.get(root).expect("root"))].into_iter(),
                    Some(ctx),
                );
                if must_answer {
                    assert!(native.is_some(), "{source} should be answered natively");
                }
                if let Some(native) = native {
                    assert_eq!(Ok(native), cel, "{source} on n={}", value.n);
                }
            }
        }
        // Some forms are never native, so their errors stay CEL's.
        let (tape, root) = captured("item", &item(1, "a"), CaptureLimits::DEFAULT);
        let field = |name: &str| (name == "item").then(|| tape.get(root)).flatten();
        let none = |_: &str| None;
        for source in [
            "item.u > 3",
            "item.b",
            "item.card_number == 'x'",
            "item.missing == 1",
        ] {
            let condition = Condition::compile(source, &["item"]).expect(source);
            assert_eq!(condition.evaluate_natively(&field, &none), None, "{source}");
        }
    }
}
