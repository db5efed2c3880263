//! The metered evaluator: runs a compiled condition over the captured values, charging every
//! step to a [`Meter`] at the prices of `cost`, and stopping at the budget.
//!
//! Values are read straight from the snapshot's tape ([`Value::Tape`] is a view of a captured
//! list, map or struct), so only the parts an expression touches are ever looked at; strings
//! are borrowed from the tape or the program unless an operation builds a new one. Semantics
//! are CEL's: errors are values that `&&`/`||` may absorb (a false side decides even if the
//! other fails, in either order), integer overflow and division by zero are errors, numbers of
//! different types compare and test equal by value, values of different types are unequal.
//! Running out of budget is not a CEL error: nothing absorbs it, the evaluation stops.

use std::cmp::Ordering;
use std::rc::Rc;

use crate::condition::MAX_COMPREHENSION_NESTING;
use crate::condition::cost::{
    self, ITEM_BYTES, MAX_ALLOCATED_BYTES, MAX_COST, MAX_VALUE_BYTES, MAX_VALUE_ITEMS,
};
use crate::condition::program::{Binary, Expr, Function, Kind, Literal, Macro};
use crate::value::{ValueKind, ValueRef};

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(Text<'a>),
    Bytes(Blob<'a>),
    List(Rc<Vec<Value<'a>>>),
    Map(Rc<Vec<(Value<'a>, Value<'a>)>>),
    /// A captured list, map, struct, or enum variant with a payload.
    Tape(ValueRef<'a>),
}

#[derive(Debug, Clone)]
pub(crate) enum Text<'a> {
    Borrowed(&'a str),
    Owned(Rc<str>),
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(text) => text,
            Text::Owned(text) => text,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Blob<'a> {
    Borrowed(&'a [u8]),
    Owned(Rc<[u8]>),
}

impl std::ops::Deref for Blob<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Blob::Borrowed(bytes) => bytes,
            Blob::Owned(bytes) => bytes,
        }
    }
}

/// Why an evaluation did not give a value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault<'a> {
    /// A CEL error (no such key, overflow, wrong types...): `&&` and `||` may absorb it.
    Error(Failure<'a>),
    /// The budget is spent: the evaluation stops.
    OverBudget(String),
}

/// A CEL error, made without allocating (a condition may fail on every element of a list);
/// its text is only written if it is the result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Failure<'a> {
    what: &'static str,
    /// The key or name it is about, if any.
    about: &'a str,
    /// The types of the operands, if it is about them.
    types: (&'static str, &'static str),
}

impl std::fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)?;
        if !self.about.is_empty() {
            write!(f, " `{}`", self.about)?;
        }
        match self.types {
            ("", _) => Ok(()),
            (one, "") => write!(f, " ({one})"),
            (left, right) => write!(f, " ({left}, {right})"),
        }
    }
}

fn error<'a, T>(what: &'static str) -> Result<T, Fault<'a>> {
    Err(Fault::Error(Failure {
        what,
        about: "",
        types: ("", ""),
    }))
}

fn error_about<'a, T>(what: &'static str, about: &'a str) -> Result<T, Fault<'a>> {
    Err(Fault::Error(Failure {
        what,
        about,
        types: ("", ""),
    }))
}

fn error_types<'a, T>(
    what: &'static str,
    left: &Value<'_>,
    right: Option<&Value<'_>>,
) -> Result<T, Fault<'a>> {
    Err(Fault::Error(Failure {
        what,
        about: "",
        types: (type_name(left), right.map_or("", type_name)),
    }))
}

/// Units and bytes spent by one evaluation.
#[derive(Debug)]
pub(crate) struct Meter {
    pub spent: u64,
    pub allocated: u64,
    limit: u64,
}

impl Meter {
    pub fn new() -> Meter {
        Meter::having_spent(0)
    }

    /// A meter on which `units` are already spent (the scan of the condition's capture).
    pub fn having_spent(units: u64) -> Meter {
        Meter {
            spent: units,
            allocated: 0,
            limit: budget_for_this_thread(),
        }
    }

    #[inline]
    pub fn charge(&mut self, units: u64) -> Result<(), Fault<'static>> {
        self.spent = self.spent.saturating_add(units);
        if self.spent > self.limit {
            return Err(Fault::OverBudget(format!(
                "it spent more than {} cost units",
                self.limit
            )));
        }
        Ok(())
    }

    /// Charges building a value of `bytes` bytes.
    pub fn allocate(&mut self, bytes: u64) -> Result<(), Fault<'static>> {
        self.allocated = self.allocated.saturating_add(bytes);
        if self.allocated > MAX_ALLOCATED_BYTES {
            return Err(Fault::OverBudget(format!(
                "it allocated more than {MAX_ALLOCATED_BYTES} bytes"
            )));
        }
        self.charge(cost::allocation(bytes))
    }
}

#[cfg(not(test))]
pub(crate) fn budget_for_this_thread() -> u64 {
    MAX_COST
}

#[cfg(test)]
thread_local! {
    /// Lets a unit test run the meter with a smaller budget than the estimate allowed, to
    /// see what a hit does when a condition runs out.
    pub(crate) static TEST_BUDGET: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
pub(crate) fn budget_for_this_thread() -> u64 {
    TEST_BUDGET.with(|budget| budget.get()).unwrap_or(MAX_COST)
}

/// What a condition reads: the point's captured fields and the correlation context.
pub(crate) struct Inputs<'t, 'f> {
    pub field: &'f dyn Fn(&str) -> Option<ValueRef<'t>>,
    pub context: Option<&'f crate::condition::ConditionContext<'t>>,
    /// Context text (thread name, trace and span ids) is cut to this, as captured strings are.
    pub max_string_bytes: usize,
}

/// Evaluates `expr` against `inputs` under `meter`.
pub(crate) fn evaluate<'a, 't: 'a>(
    expr: &'a Expr,
    inputs: &Inputs<'t, '_>,
    meter: &mut Meter,
) -> Result<Value<'a>, Fault<'a>> {
    Evaluation {
        inputs,
        meter,
        variables: Bindings::default(),
    }
    .node(expr)
}

struct Evaluation<'t, 'i, 'f, 'a> {
    inputs: &'i Inputs<'t, 'f>,
    meter: &'i mut Meter,
    variables: Bindings<'a>,
}

/// The values the enclosing comprehensions bind, outermost first. A condition nests them at
/// most [`MAX_COMPREHENSION_NESTING`] deep (refused when armed otherwise), so they are held
/// inline: an evaluation allocates nothing for them on the host's thread.
struct Bindings<'a> {
    slots: [Value<'a>; MAX_COMPREHENSION_NESTING],
    bound: usize,
}

impl Default for Bindings<'_> {
    fn default() -> Self {
        Bindings {
            slots: [const { Value::Null }; MAX_COMPREHENSION_NESTING],
            bound: 0,
        }
    }
}

impl<'a> Bindings<'a> {
    fn get(&self, depth: usize) -> Option<&Value<'a>> {
        self.slots[..self.bound].get(depth)
    }

    /// Binds `value` at `depth`, unbinding whatever was bound there or deeper.
    fn bind(&mut self, depth: usize, value: Value<'a>) -> Result<(), Fault<'a>> {
        let Some(slot) = self.slots.get_mut(depth) else {
            return error("comprehensions nested too deeply");
        };
        *slot = value;
        self.unbind(depth + 1);
        self.bound = depth + 1;
        Ok(())
    }

    /// Unbinds everything bound at `depth` or deeper (releasing what it held).
    fn unbind(&mut self, depth: usize) {
        for slot in self.slots.iter_mut().take(self.bound).skip(depth) {
            *slot = Value::Null;
        }
        self.bound = self.bound.min(depth);
    }
}

/// Whether an iteration goes on.
enum Flow {
    Continue,
    Break,
}

impl<'a, 't: 'a> Evaluation<'t, '_, '_, 'a> {
    fn node(&mut self, expr: &'a Expr) -> Result<Value<'a>, Fault<'a>> {
        self.meter.charge(cost::NODE)?;
        match &expr.kind {
            Kind::Literal(literal) => Ok(match literal {
                Literal::Null => Value::Null,
                Literal::Bool(b) => Value::Bool(*b),
                Literal::Int(i) => Value::Int(*i),
                Literal::Uint(u) => Value::Uint(*u),
                Literal::Double(d) => Value::Double(*d),
                Literal::String(s) => Value::Str(Text::Borrowed(s)),
                Literal::Bytes(b) => Value::Bytes(Blob::Borrowed(b)),
            }),
            Kind::Field(name) => match (self.inputs.field)(name) {
                Some(value) => Ok(from_tape(value)),
                None => error_about("no such attribute", name),
            },
            Kind::Context => self.context_map(),
            Kind::ContextField(name) => self
                .context_field(name)?
                .map_or_else(|| error_about("no such key", name), Ok),
            Kind::Variable(depth) => match self.variables.get(*depth) {
                Some(value) => Ok(value.clone()),
                None => error("unbound comprehension variable"),
            },
            Kind::Select {
                operand,
                field,
                test,
            } => {
                let operand = self.node(operand)?;
                let found = self.member(&operand, field)?;
                match (found, test) {
                    (Some(_), true) => Ok(Value::Bool(true)),
                    (None, true) => Ok(Value::Bool(false)),
                    (Some(value), false) => Ok(value),
                    (None, false) => error_about("no such key", field),
                }
            }
            Kind::Index(operand, index) => {
                let operand = self.node(operand)?;
                let index = self.node(index)?;
                self.index(&operand, &index)
            }
            Kind::Not(inner) => match self.node(inner)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                other => error_types("no such overload for !", &other, None),
            },
            Kind::Negate(inner) => match self.node(inner)? {
                Value::Int(i) => i
                    .checked_neg()
                    .map(Value::Int)
                    .map_or_else(|| error("int overflow in negation"), Ok),
                Value::Double(d) => Ok(Value::Double(-d)),
                other => error_types("no such overload for unary -", &other, None),
            },
            Kind::And(left, right) => self.logical(left, right, false),
            Kind::Or(left, right) => self.logical(left, right, true),
            Kind::Conditional(condition, then, otherwise) => match self.node(condition)? {
                Value::Bool(true) => self.node(then),
                Value::Bool(false) => self.node(otherwise),
                other => error_types("no such overload for _ ? _ : _", &other, None),
            },
            Kind::Binary(op, left, right) => {
                let left = self.node(left)?;
                let right = self.node(right)?;
                self.binary(*op, &left, &right)
            }
            Kind::List(elements) => {
                self.meter.allocate(elements.len() as u64 * ITEM_BYTES)?;
                let mut list = Vec::with_capacity(elements.len());
                for element in elements {
                    list.push(self.node(element)?);
                    self.meter.charge(1)?;
                }
                Ok(Value::List(Rc::new(list)))
            }
            Kind::Map(entries) => {
                self.meter.allocate(entries.len() as u64 * 2 * ITEM_BYTES)?;
                let mut map: Vec<(Value<'a>, Value<'a>)> = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let key = self.node(key)?;
                    let value = self.node(value)?;
                    self.meter.charge(1)?;
                    if !matches!(
                        key,
                        Value::Str(_) | Value::Int(_) | Value::Uint(_) | Value::Bool(_)
                    ) {
                        return error_types("unsupported map key type", &key, None);
                    }
                    for (earlier, _) in &map {
                        self.meter.charge(1)?;
                        if self.equals(earlier, &key)? {
                            return error("duplicate map key");
                        }
                    }
                    map.push((key, value));
                }
                Ok(Value::Map(Rc::new(map)))
            }
            Kind::Call(function, args) => self.call(*function, args),
            Kind::Comprehension {
                macro_kind,
                range,
                depth,
                body,
            } => {
                let range = self.node(range)?;
                self.comprehension(macro_kind, &range, *depth, body)
            }
        }
    }

    /// `&&` (`absorbing` false) or `||` (`absorbing` true), commutative in errors: the
    /// absorbing value on either side decides, even if the other side failed.
    fn logical(
        &mut self,
        left: &'a Expr,
        right: &'a Expr,
        absorbing: bool,
    ) -> Result<Value<'a>, Fault<'a>> {
        let left = self.boolean(left)?;
        if left == Ok(absorbing) {
            return Ok(Value::Bool(absorbing));
        }
        let right = self.boolean(right)?;
        match (left, right) {
            (_, Ok(b)) if b == absorbing => Ok(Value::Bool(absorbing)),
            (Ok(_), Ok(_)) => Ok(Value::Bool(!absorbing)),
            (Err(message), _) | (_, Err(message)) => Err(Fault::Error(message)),
        }
    }

    /// A boolean operand: its value, or the CEL error that stands for it.
    fn boolean(&mut self, expr: &'a Expr) -> Result<Result<bool, Failure<'a>>, Fault<'a>> {
        match self.node(expr) {
            Ok(Value::Bool(b)) => Ok(Ok(b)),
            Ok(other) => match error_types::<bool>("no such overload for && or ||", &other, None) {
                Err(Fault::Error(failure)) => Ok(Err(failure)),
                _ => Ok(Ok(false)),
            },
            Err(Fault::Error(message)) => Ok(Err(message)),
            Err(over) => Err(over),
        }
    }

    fn context_field(&mut self, name: &str) -> Result<Option<Value<'a>>, Fault<'a>> {
        let Some(context) = self.inputs.context else {
            return Ok(None);
        };
        let position = context
            .span_fields
            .iter()
            .position(|(field, _)| *field == name);
        let scanned = position.map_or(context.span_fields.len() + 4, |at| at + 1);
        self.meter.charge(cost::member_scan(name, scanned as u64))?;
        Ok(match position {
            Some(at) => context.tape.get(context.span_fields[at].1).map(from_tape),
            None => self.context_identity(name),
        })
    }

    /// `ctx.thread`, `ctx.thread_id`, `ctx.trace_id`, `ctx.span_id`, unless a span field of
    /// that name hides them. Text is cut as captured strings are.
    fn context_identity(&self, name: &str) -> Option<Value<'a>> {
        let context = self.inputs.context?;
        let limit = self.inputs.max_string_bytes;
        let cut = |text: &'t str| {
            let end = crate::text::floor_char_boundary(text, limit);
            Value::Str(Text::Borrowed(&text[..end]))
        };
        Some(match name {
            "thread" => cut(context.thread),
            "thread_id" => Value::Uint(context.thread_id),
            "trace_id" => context.trace_id.map_or(Value::Null, cut),
            "span_id" => context.span_id.map_or(Value::Null, cut),
            _ => return None,
        })
    }

    fn context_map(&mut self) -> Result<Value<'a>, Fault<'a>> {
        let Some(context) = self.inputs.context else {
            return error("no correlation context");
        };
        let entries = context.span_fields.len() as u64 + 4;
        self.meter.allocate(entries * 2 * ITEM_BYTES)?;
        let mut map = Vec::with_capacity(entries as usize);
        for (name, root) in context.span_fields {
            if let Some(value) = context.tape.get(*root) {
                map.push((Value::Str(Text::Borrowed(name)), from_tape(value)));
            }
        }
        for name in ["thread", "thread_id", "trace_id", "span_id"] {
            if map
                .iter()
                .any(|(key, _)| matches!(key, Value::Str(k) if &**k == name))
            {
                continue;
            }
            if let Some(value) = self.context_identity(name) {
                map.push((Value::Str(Text::Borrowed(name)), value));
            }
        }
        Ok(Value::Map(Rc::new(map)))
    }

    /// `container.name`: a struct field, a map entry with a string key, a variant's name.
    /// Charged for the entries scanned to find it.
    fn member(
        &mut self,
        container: &Value<'a>,
        name: &str,
    ) -> Result<Option<Value<'a>>, Fault<'a>> {
        let mut scanned: u64 = 0;
        let mut count = || {
            scanned += 1;
            true
        };
        let found = match container {
            Value::Tape(value) => match value.kind() {
                ValueKind::Struct { .. } | ValueKind::Enum { .. } => {
                    let field = value
                        .fields()
                        .filter(|_| count())
                        .find(|(field, _)| *field == name)
                        .map(|(_, found)| from_tape(found));
                    match (field, value.kind()) {
                        (None, ValueKind::Enum { variant, .. }) if name == "variant" => {
                            Some(Value::Str(Text::Borrowed(variant)))
                        }
                        (field, _) => field,
                    }
                }
                ValueKind::Map { .. } => value
                    .entries()
                    .filter(|_| count())
                    .find(|(key, _)| key.as_str() == Some(name))
                    .map(|(_, found)| from_tape(found)),
                _ => return error("no such key on a list"),
            },
            Value::Map(entries) => entries
                .iter()
                .filter(|_| count())
                .find(|(key, _)| matches!(key, Value::Str(k) if &**k == name))
                .map(|(_, found)| found.clone()),
            other => return error_types("no such key on a value of this type", other, None),
        };
        self.meter.charge(cost::member_scan(name, scanned))?;
        Ok(found)
    }

    /// `container[index]`.
    fn index(&mut self, container: &Value<'a>, index: &Value<'a>) -> Result<Value<'a>, Fault<'a>> {
        if is_list(container) {
            let position = match index {
                Value::Int(i) => usize::try_from(*i).ok(),
                Value::Uint(u) => usize::try_from(*u).ok(),
                Value::Double(d) if d.fract() == 0.0 && *d >= 0.0 => Some(*d as usize),
                other => {
                    return error_types("no such overload for list[_]", other, None);
                }
            };
            let mut found = None;
            if let Some(position) = position {
                let mut at = 0;
                self.each_element(container, &mut |this, element| {
                    this.meter.charge(1)?;
                    if at == position {
                        found = Some(element);
                        return Ok(Flow::Break);
                    }
                    at += 1;
                    Ok(Flow::Continue)
                })?;
            }
            return found.map_or_else(|| error("index out of range"), Ok);
        }
        match self.lookup(container, index)? {
            Some(value) => Ok(value),
            None => error("no such key"),
        }
    }

    /// The value under `key` in a map-like value.
    fn lookup(
        &mut self,
        container: &Value<'a>,
        key: &Value<'a>,
    ) -> Result<Option<Value<'a>>, Fault<'a>> {
        match (container, key) {
            (Value::Tape(value), Value::Str(name))
                if matches!(
                    value.kind(),
                    ValueKind::Struct { .. } | ValueKind::Enum { .. }
                ) =>
            {
                self.member(container, name)
            }
            (Value::Tape(value), _) if matches!(value.kind(), ValueKind::Map { .. }) => {
                for (candidate, found) in value.entries() {
                    self.meter.charge(1)?;
                    if self.equals(&from_tape(candidate), key)? {
                        return Ok(Some(from_tape(found)));
                    }
                }
                Ok(None)
            }
            (Value::Map(entries), _) => {
                for (candidate, found) in entries.iter() {
                    self.meter.charge(1)?;
                    if self.equals(candidate, key)? {
                        return Ok(Some(found.clone()));
                    }
                }
                Ok(None)
            }
            (Value::Tape(value), _)
                if matches!(
                    value.kind(),
                    ValueKind::Struct { .. } | ValueKind::Enum { .. }
                ) =>
            {
                Ok(None)
            }
            (other, _) => error_types("no such overload for _[_]", other, Some(key)),
        }
    }

    /// Calls `visit` with each element of a list, or each key of a map-like value.
    fn each_element(
        &mut self,
        range: &Value<'a>,
        visit: &mut dyn FnMut(&mut Self, Value<'a>) -> Result<Flow, Fault<'a>>,
    ) -> Result<(), Fault<'a>> {
        match range {
            Value::List(list) => {
                for element in list.iter() {
                    if let Flow::Break = visit(self, element.clone())? {
                        break;
                    }
                }
            }
            Value::Map(entries) => {
                for (key, _) in entries.iter() {
                    if let Flow::Break = visit(self, key.clone())? {
                        break;
                    }
                }
            }
            Value::Tape(value) => match value.kind() {
                ValueKind::List { .. } => {
                    for element in value.items() {
                        if let Flow::Break = visit(self, from_tape(element))? {
                            break;
                        }
                    }
                }
                ValueKind::Map { .. } => {
                    for (key, _) in value.entries() {
                        if let Flow::Break = visit(self, from_tape(key))? {
                            break;
                        }
                    }
                }
                ValueKind::Struct { .. } | ValueKind::Enum { .. } => {
                    for (name, _) in value.fields() {
                        if let Flow::Break = visit(self, Value::Str(Text::Borrowed(name)))? {
                            return Ok(());
                        }
                    }
                    if matches!(value.kind(), ValueKind::Enum { .. }) {
                        visit(self, Value::Str(Text::Borrowed("variant")))?;
                    }
                }
                _ => return error("cannot iterate over this value"),
            },
            other => return error_types("cannot iterate over", other, None),
        }
        Ok(())
    }

    fn comprehension(
        &mut self,
        macro_kind: &'a Macro,
        range: &Value<'a>,
        depth: usize,
        body: &'a Expr,
    ) -> Result<Value<'a>, Fault<'a>> {
        let bound = |this: &mut Self, element: Value<'a>, expr: &'a Expr| {
            this.variables.bind(depth, element)?;
            let result = this.node(expr);
            this.variables.unbind(depth);
            result
        };
        match macro_kind {
            Macro::All | Macro::Exists => {
                let deciding = matches!(macro_kind, Macro::Exists);
                let mut decided = false;
                let mut failure: Option<Failure<'a>> = None;
                self.each_element(range, &mut |this, element| {
                    this.meter.charge(2)?;
                    match bound(this, element, body) {
                        Ok(Value::Bool(b)) if b == deciding => {
                            decided = true;
                            return Ok(Flow::Break);
                        }
                        Ok(Value::Bool(_)) => {}
                        Ok(other) => {
                            if let Err(Fault::Error(bad)) =
                                error_types::<()>("no such overload for a predicate", &other, None)
                            {
                                failure.get_or_insert(bad);
                            }
                        }
                        Err(Fault::Error(message)) => {
                            failure.get_or_insert(message);
                        }
                        Err(over) => return Err(over),
                    }
                    Ok(Flow::Continue)
                })?;
                if decided {
                    return Ok(Value::Bool(deciding));
                }
                match failure {
                    Some(failure) => Err(Fault::Error(failure)),
                    None => Ok(Value::Bool(!deciding)),
                }
            }
            Macro::ExistsOne => {
                let mut count: u64 = 0;
                self.each_element(range, &mut |this, element| {
                    this.meter.charge(2)?;
                    match bound(this, element, body)? {
                        Value::Bool(true) => count += 1,
                        Value::Bool(false) => {}
                        other => {
                            return error_types("no such overload for a predicate", &other, None);
                        }
                    }
                    Ok(Flow::Continue)
                })?;
                Ok(Value::Bool(count == 1))
            }
            Macro::Map { filter } => {
                self.meter.allocate(0)?;
                let mut list: Vec<Value<'a>> = Vec::new();
                self.each_element(range, &mut |this, element| {
                    this.meter.charge(1)?;
                    if let Some(filter) = filter {
                        match bound(this, element.clone(), filter)? {
                            Value::Bool(true) => {}
                            Value::Bool(false) => return Ok(Flow::Continue),
                            other => {
                                return error_types("no such overload for a filter", &other, None);
                            }
                        }
                    }
                    let mapped = bound(this, element, body)?;
                    if list.len() as u64 >= MAX_VALUE_ITEMS {
                        return Err(Fault::OverBudget(format!(
                            "it built a list of more than {MAX_VALUE_ITEMS} elements"
                        )));
                    }
                    this.meter.allocated += ITEM_BYTES;
                    this.meter.charge(cost::bytes(ITEM_BYTES))?;
                    list.push(mapped);
                    Ok(Flow::Continue)
                })?;
                Ok(Value::List(Rc::new(list)))
            }
        }
    }

    fn call(&mut self, function: Function, args: &'a [Expr]) -> Result<Value<'a>, Fault<'a>> {
        let mut values = Vec::with_capacity(2);
        for arg in args {
            values.push(self.node(arg)?);
        }
        match (function, values.as_slice()) {
            (Function::Size, [value]) => self.size(value),
            (Function::Contains | Function::StartsWith | Function::EndsWith, [text, part]) => {
                let (Value::Str(text), Value::Str(part)) = (text, part) else {
                    return error_types(function_name(function), text, Some(part));
                };
                self.meter
                    .charge(cost::search((text.len() + part.len()) as u64))?;
                Ok(Value::Bool(match function {
                    Function::Contains => text.contains(&**part),
                    Function::StartsWith => text.starts_with(&**part),
                    _ => text.ends_with(&**part),
                }))
            }
            (Function::Int | Function::Uint | Function::Double, [value]) => {
                self.convert_number(function, value)
            }
            (Function::String, [value]) => self.stringify(value),
            _ => error("wrong number of arguments"),
        }
    }

    fn size(&mut self, value: &Value<'a>) -> Result<Value<'a>, Fault<'a>> {
        let size = match value {
            Value::Str(text) => {
                self.meter.charge(cost::bytes(text.len() as u64))?;
                text.chars().count()
            }
            Value::Bytes(bytes) => bytes.len(),
            Value::List(list) => list.len(),
            Value::Map(entries) => entries.len(),
            Value::Tape(value) => {
                value.children_len() + usize::from(matches!(value.kind(), ValueKind::Enum { .. }))
            }
            other => return error_types("no such overload for size", other, None),
        };
        Ok(Value::Int(i64::try_from(size).unwrap_or(i64::MAX)))
    }

    fn convert_number(
        &mut self,
        function: Function,
        value: &Value<'a>,
    ) -> Result<Value<'a>, Fault<'a>> {
        if let Value::Str(text) = value {
            self.meter.charge(cost::bytes(text.len() as u64))?;
        }
        let range = || "conversion out of range";
        match (function, value) {
            (Function::Int, Value::Int(i)) => Ok(Value::Int(*i)),
            (Function::Int, Value::Uint(u)) => i64::try_from(*u)
                .map(Value::Int)
                .or_else(|_| error(range())),
            (Function::Int, Value::Double(d)) => {
                if d.is_finite() && *d >= i64::MIN as f64 && *d < -(i64::MIN as f64) {
                    Ok(Value::Int(*d as i64))
                } else {
                    error(range())
                }
            }
            (Function::Int, Value::Str(text)) => text
                .parse::<i64>()
                .map(Value::Int)
                .or_else(|_| error("cannot convert the string to int")),
            (Function::Uint, Value::Uint(u)) => Ok(Value::Uint(*u)),
            (Function::Uint, Value::Int(i)) => u64::try_from(*i)
                .map(Value::Uint)
                .or_else(|_| error(range())),
            (Function::Uint, Value::Double(d)) => {
                if d.is_finite() && *d > -1.0 && *d < u64::MAX as f64 {
                    Ok(Value::Uint(*d as u64))
                } else {
                    error(range())
                }
            }
            (Function::Uint, Value::Str(text)) => text
                .parse::<u64>()
                .map(Value::Uint)
                .or_else(|_| error("cannot convert the string to uint")),
            (Function::Double, Value::Double(d)) => Ok(Value::Double(*d)),
            (Function::Double, Value::Int(i)) => Ok(Value::Double(*i as f64)),
            (Function::Double, Value::Uint(u)) => Ok(Value::Double(*u as f64)),
            (Function::Double, Value::Str(text)) => text
                .parse::<f64>()
                .map(Value::Double)
                .or_else(|_| error("cannot convert the string to double")),
            (function, other) => error_types(function_name(function), other, None),
        }
    }

    fn stringify(&mut self, value: &Value<'a>) -> Result<Value<'a>, Fault<'a>> {
        let text = match value {
            Value::Str(text) => return Ok(Value::Str(text.clone())),
            Value::Int(i) => i.to_string(),
            Value::Uint(u) => u.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => text.to_owned(),
                Err(_) => return error("bytes are not valid UTF-8"),
            },
            other => return error_types("no such overload for string", other, None),
        };
        self.meter.allocate(text.len() as u64)?;
        Ok(Value::Str(Text::Owned(Rc::from(text))))
    }

    fn binary(
        &mut self,
        op: Binary,
        left: &Value<'a>,
        right: &Value<'a>,
    ) -> Result<Value<'a>, Fault<'a>> {
        match op {
            Binary::Add => self.add(left, right),
            Binary::Subtract | Binary::Multiply | Binary::Divide | Binary::Modulo => {
                arithmetic(op, left, right)
            }
            Binary::Equal => self.equals(left, right).map(Value::Bool),
            Binary::NotEqual => self.equals(left, right).map(|b| Value::Bool(!b)),
            Binary::Less | Binary::LessOrEqual | Binary::Greater | Binary::GreaterOrEqual => {
                let ordering = self.compare(left, right)?;
                Ok(Value::Bool(match op {
                    Binary::Less => ordering == Ordering::Less,
                    Binary::LessOrEqual => ordering != Ordering::Greater,
                    Binary::Greater => ordering == Ordering::Greater,
                    _ => ordering != Ordering::Less,
                }))
            }
            Binary::In => {
                if is_list(right) {
                    let mut found = false;
                    self.each_element(right, &mut |this, element| {
                        this.meter.charge(1)?;
                        if this.equals(&element, left)? {
                            found = true;
                            return Ok(Flow::Break);
                        }
                        Ok(Flow::Continue)
                    })?;
                    Ok(Value::Bool(found))
                } else {
                    self.lookup(right, left)
                        .map(|found| Value::Bool(found.is_some()))
                }
            }
        }
    }

    fn add(&mut self, left: &Value<'a>, right: &Value<'a>) -> Result<Value<'a>, Fault<'a>> {
        match (left, right) {
            (Value::Int(a), Value::Int(b)) => a
                .checked_add(*b)
                .map(Value::Int)
                .map_or_else(|| error("int overflow in addition"), Ok),
            (Value::Uint(a), Value::Uint(b)) => a
                .checked_add(*b)
                .map(Value::Uint)
                .map_or_else(|| error("uint overflow in addition"), Ok),
            (Value::Double(a), Value::Double(b)) => Ok(Value::Double(a + b)),
            (Value::Str(a), Value::Str(b)) => {
                let len = (a.len() + b.len()) as u64;
                self.check_text(len)?;
                self.meter.allocate(len)?;
                let mut joined = String::with_capacity(len as usize);
                joined.push_str(a);
                joined.push_str(b);
                Ok(Value::Str(Text::Owned(Rc::from(joined))))
            }
            (Value::Bytes(a), Value::Bytes(b)) => {
                let len = (a.len() + b.len()) as u64;
                self.check_text(len)?;
                self.meter.allocate(len)?;
                let mut joined = Vec::with_capacity(len as usize);
                joined.extend_from_slice(a);
                joined.extend_from_slice(b);
                Ok(Value::Bytes(Blob::Owned(Rc::from(joined))))
            }
            (a, b) if is_list(a) && is_list(b) => {
                let len = (list_len(a) + list_len(b)) as u64;
                if len > MAX_VALUE_ITEMS {
                    return Err(Fault::OverBudget(format!(
                        "it built a list of {len} elements; at most {MAX_VALUE_ITEMS} are allowed"
                    )));
                }
                self.meter.allocate(len * ITEM_BYTES)?;
                let mut joined = Vec::with_capacity(len as usize);
                for part in [a, b] {
                    self.each_element(part, &mut |_, element| {
                        joined.push(element);
                        Ok(Flow::Continue)
                    })?;
                }
                Ok(Value::List(Rc::new(joined)))
            }
            (a, b) => error_types("no such overload for +", a, Some(b)),
        }
    }

    fn check_text(&self, len: u64) -> Result<(), Fault<'static>> {
        if len > MAX_VALUE_BYTES {
            return Err(Fault::OverBudget(format!(
                "it built a string of {len} bytes; at most {MAX_VALUE_BYTES} are allowed"
            )));
        }
        Ok(())
    }

    /// CEL equality: numbers by value across types, collections element by element, values
    /// of different types unequal.
    fn equals(&mut self, left: &Value<'a>, right: &Value<'a>) -> Result<bool, Fault<'a>> {
        self.meter.charge(1)?;
        if let Some(ordering) = numeric_order(left, right) {
            return Ok(ordering == Some(Ordering::Equal));
        }
        Ok(match (left, right) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => {
                self.meter
                    .charge(cost::bytes(a.len().min(b.len()) as u64))?;
                **a == **b
            }
            (Value::Bytes(a), Value::Bytes(b)) => {
                self.meter
                    .charge(cost::bytes(a.len().min(b.len()) as u64))?;
                **a == **b
            }
            (a, b) if is_list(a) && is_list(b) => {
                if list_len(a) != list_len(b) {
                    return Ok(false);
                }
                let mut others = Vec::with_capacity(list_len(b));
                self.each_element(b, &mut |_, element| {
                    others.push(element);
                    Ok(Flow::Continue)
                })?;
                let mut others = others.into_iter();
                let mut equal = true;
                self.each_element(a, &mut |this, element| {
                    this.meter.charge(1)?;
                    let Some(other) = others.next() else {
                        equal = false;
                        return Ok(Flow::Break);
                    };
                    if !this.equals(&element, &other)? {
                        equal = false;
                        return Ok(Flow::Break);
                    }
                    Ok(Flow::Continue)
                })?;
                equal
            }
            (a, b) if is_map_like(a) && is_map_like(b) => {
                if map_len(a) != map_len(b) {
                    return Ok(false);
                }
                for (key, mine) in entries_of(a) {
                    self.meter.charge(1)?;
                    let Some(theirs) = self.lookup(b, &key)? else {
                        return Ok(false);
                    };
                    if !self.equals(&mine, &theirs)? {
                        return Ok(false);
                    }
                }
                true
            }
            _ => false,
        })
    }

    /// Ordering for `<`, `<=`, `>`, `>=`: numbers across types, strings, bytes, bools.
    fn compare(&mut self, left: &Value<'a>, right: &Value<'a>) -> Result<Ordering, Fault<'a>> {
        if let Some(ordering) = numeric_order(left, right) {
            return ordering.map_or_else(|| error("NaN is not ordered"), Ok);
        }
        match (left, right) {
            (Value::Str(a), Value::Str(b)) => {
                self.meter
                    .charge(cost::bytes(a.len().min(b.len()) as u64))?;
                Ok((**a).cmp(&**b))
            }
            (Value::Bytes(a), Value::Bytes(b)) => {
                self.meter
                    .charge(cost::bytes(a.len().min(b.len()) as u64))?;
                Ok((**a).cmp(&**b))
            }
            (Value::Bool(a), Value::Bool(b)) => Ok(a.cmp(b)),
            (a, b) => error_types("no such overload for an ordering", a, Some(b)),
        }
    }
}

/// A captured value as the evaluator sees it: withheld values are null, a unit enum variant
/// is its name, containers are read in place.
pub(crate) fn from_tape(value: ValueRef<'_>) -> Value<'_> {
    match value.kind() {
        ValueKind::Null | ValueKind::Redacted(_) | ValueKind::NotCaptured { .. } => Value::Null,
        ValueKind::Bool(b) => Value::Bool(b),
        ValueKind::Int(i) => Value::Int(i),
        ValueKind::Uint(u) => Value::Uint(u),
        ValueKind::Float(f) => Value::Double(f),
        ValueKind::Str { text, .. } => Value::Str(Text::Borrowed(text)),
        ValueKind::Bytes { bytes, .. } => Value::Bytes(Blob::Borrowed(bytes)),
        ValueKind::Enum { variant, .. } if value.children_len() == 0 => {
            Value::Str(Text::Borrowed(variant))
        }
        ValueKind::List { .. }
        | ValueKind::Map { .. }
        | ValueKind::Struct { .. }
        | ValueKind::Enum { .. } => Value::Tape(value),
    }
}

/// The entries of a map-like value (a struct's fields by name, an enum payload's with its
/// `variant`), for the moment of one equality test.
fn entries_of<'a>(value: &Value<'a>) -> Vec<(Value<'a>, Value<'a>)> {
    match value {
        Value::Map(entries) => entries.to_vec(),
        Value::Tape(value) => match value.kind() {
            ValueKind::Map { .. } => value
                .entries()
                .map(|(key, value)| (from_tape(key), from_tape(value)))
                .collect(),
            ValueKind::Struct { .. } | ValueKind::Enum { .. } => {
                let mut entries: Vec<_> = value
                    .fields()
                    .map(|(name, value)| (Value::Str(Text::Borrowed(name)), from_tape(value)))
                    .collect();
                if let ValueKind::Enum { variant, .. } = value.kind() {
                    entries.push((
                        Value::Str(Text::Borrowed("variant")),
                        Value::Str(Text::Borrowed(variant)),
                    ));
                }
                entries
            }
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

fn is_list(value: &Value<'_>) -> bool {
    match value {
        Value::List(_) => true,
        Value::Tape(value) => matches!(value.kind(), ValueKind::List { .. }),
        _ => false,
    }
}

fn is_map_like(value: &Value<'_>) -> bool {
    match value {
        Value::Map(_) => true,
        Value::Tape(value) => !matches!(value.kind(), ValueKind::List { .. }),
        _ => false,
    }
}

fn list_len(value: &Value<'_>) -> usize {
    match value {
        Value::List(list) => list.len(),
        Value::Tape(value) => value.children_len(),
        _ => 0,
    }
}

fn map_len(value: &Value<'_>) -> usize {
    match value {
        Value::Map(entries) => entries.len(),
        Value::Tape(value) => {
            value.children_len() + usize::from(matches!(value.kind(), ValueKind::Enum { .. }))
        }
        _ => 0,
    }
}

/// The order of two numbers of any numeric types (`Some(None)` when one is NaN), or `None`
/// when either is not a number.
fn numeric_order(left: &Value<'_>, right: &Value<'_>) -> Option<Option<Ordering>> {
    Some(match (left, right) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::Uint(a), Value::Uint(b)) => Some(a.cmp(b)),
        (Value::Int(a), Value::Uint(b)) => Some(i128::from(*a).cmp(&i128::from(*b))),
        (Value::Uint(a), Value::Int(b)) => Some(i128::from(*a).cmp(&i128::from(*b))),
        (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
        (Value::Double(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Double(a), Value::Uint(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Int(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
        (Value::Uint(a), Value::Double(b)) => (*a as f64).partial_cmp(b),
        _ => return None,
    })
}

fn arithmetic<'a>(op: Binary, left: &Value<'a>, right: &Value<'a>) -> Result<Value<'a>, Fault<'a>> {
    // (operator, int overflow, uint overflow)
    let symbol = match op {
        Binary::Subtract => (
            "no such overload for -",
            "int overflow in -",
            "uint overflow in -",
        ),
        Binary::Multiply => (
            "no such overload for *",
            "int overflow in *",
            "uint overflow in *",
        ),
        Binary::Divide => (
            "no such overload for /",
            "int overflow in /",
            "uint overflow in /",
        ),
        _ => (
            "no such overload for %",
            "int overflow in %",
            "uint overflow in %",
        ),
    };
    match (left, right) {
        (Value::Int(a), Value::Int(b)) => {
            if *b == 0 && matches!(op, Binary::Divide | Binary::Modulo) {
                return error(if op == Binary::Divide {
                    "division by zero"
                } else {
                    "modulus by zero"
                });
            }
            let result = match op {
                Binary::Subtract => a.checked_sub(*b),
                Binary::Multiply => a.checked_mul(*b),
                Binary::Divide => a.checked_div(*b),
                _ => a.checked_rem(*b),
            };
            result.map(Value::Int).map_or_else(|| error(symbol.1), Ok)
        }
        (Value::Uint(a), Value::Uint(b)) => {
            if *b == 0 && matches!(op, Binary::Divide | Binary::Modulo) {
                return error(if op == Binary::Divide {
                    "division by zero"
                } else {
                    "modulus by zero"
                });
            }
            let result = match op {
                Binary::Subtract => a.checked_sub(*b),
                Binary::Multiply => a.checked_mul(*b),
                Binary::Divide => a.checked_div(*b),
                _ => a.checked_rem(*b),
            };
            result.map(Value::Uint).map_or_else(|| error(symbol.2), Ok)
        }
        (Value::Double(a), Value::Double(b)) if op != Binary::Modulo => {
            Ok(Value::Double(match op {
                Binary::Subtract => a - b,
                Binary::Multiply => a * b,
                _ => a / b,
            }))
        }
        (a, b) => error_types(symbol.0, a, Some(b)),
    }
}

/// CEL's name of a value's type, for errors.
pub(crate) fn type_name(value: &Value<'_>) -> &'static str {
    match value {
        Value::Null => "null_type",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Double(_) => "double",
        Value::Str(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Tape(value) => match value.kind() {
            ValueKind::List { .. } => "list",
            _ => "map",
        },
    }
}

fn function_name(function: Function) -> &'static str {
    match function {
        Function::Size => "no such overload for size",
        Function::Contains => "no such overload for contains",
        Function::StartsWith => "no such overload for startsWith",
        Function::EndsWith => "no such overload for endsWith",
        Function::Int => "no such overload for int",
        Function::Uint => "no such overload for uint",
        Function::Double => "no such overload for double",
        Function::String => "no such overload for string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uint(value: Option<&Value<'_>>) -> Option<u64> {
        match value {
            Some(Value::Uint(u)) => Some(*u),
            _ => None,
        }
    }

    #[test]
    fn bindings_unbind_what_is_deeper_and_refuse_to_go_past_the_nesting_limit() {
        let mut bindings = Bindings::default();
        assert!(bindings.get(0).is_none(), "nothing is bound at first");
        bindings.bind(0, Value::Uint(1)).expect("depth 0 binds");
        bindings.bind(1, Value::Uint(2)).expect("depth 1 binds");
        assert_eq!(
            (uint(bindings.get(0)), uint(bindings.get(1))),
            (Some(1), Some(2))
        );
        bindings.unbind(1);
        assert_eq!(
            (uint(bindings.get(0)), bindings.get(1).is_none()),
            (Some(1), true)
        );
        bindings
            .bind(1, Value::Uint(3))
            .expect("depth 1 binds again");
        bindings.bind(0, Value::Uint(4)).expect("depth 0 rebinds");
        assert!(
            bindings.get(1).is_none(),
            "rebinding the outer unbinds the inner"
        );
        assert_eq!(uint(bindings.get(0)), Some(4));
        let past = bindings.bind(MAX_COMPREHENSION_NESTING, Value::Null);
        assert!(
            matches!(past, Err(Fault::Error(_))),
            "an error, never a panic"
        );
    }
}
