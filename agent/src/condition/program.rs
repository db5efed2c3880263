//! The accepted subset of CEL, as a tree the metered evaluator runs and the estimator prices.
//!
//! `cel` parses the source and expands its macros; this module turns that AST into a
//! [`Expr`] tree, and refuses, with the position and the list of what is supported, anything
//! outside the subset: a function or operator we do not implement is an arm-time error, never
//! a surprise at a hit. Macros are recognized by the shapes `cel`'s expanders produce and become
//! one node each (`all`, `exists`, `exists_one`, `map`, `filter`), so their accumulators never
//! appear as values and a `map` appends in place instead of copying its list at every step.

use cel::common::ast::{self, EntryExpr, IdedExpr, LiteralValue};

use crate::condition::CONTEXT_VARIABLE;

/// What conditions may use, for error messages.
pub const SUPPORTED: &str = "literals (null, bool, int, uint, double, string, bytes), field and \
`ctx` paths, `a.b`, `a[i]`, `has(a.b)`, `+ - * / %`, unary `-`, `== != < <= > >=`, `&& || !`, \
`c ? a : b`, `in`, list and map literals, `size`, string `contains`/`startsWith`/`endsWith`, \
`int`/`uint`/`double`/`string` conversions, and `all`/`exists`/`exists_one`/`map`/`filter`";

/// The accumulator name `cel`'s macro expanders bind.
const ACCUMULATOR: &str = "@result";

/// A node of a compiled condition, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expr {
    pub kind: Kind,
    /// Byte range of the source this node (with its operands) spans.
    pub span: (usize, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Literal(Literal),
    /// A point field, by name.
    Field(String),
    /// The whole `ctx` map.
    Context,
    /// `ctx.name`, read without building the map.
    ContextField(String),
    /// The variable of the comprehension `depth` levels out from the root (0 = outermost).
    Variable(usize),
    /// `operand.field`, or `has(operand.field)` when `test`.
    Select {
        operand: Box<Expr>,
        field: String,
        test: bool,
    },
    Index(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Conditional(Box<Expr>, Box<Expr>, Box<Expr>),
    Binary(Binary, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Call(Function, Vec<Expr>),
    /// A macro over `range` with its variable bound at `depth` (see [`Kind::Variable`]).
    Comprehension {
        macro_kind: Macro,
        range: Box<Expr>,
        depth: usize,
        body: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(Box<str>),
    Bytes(Box<[u8]>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binary {
    Add,
    Subtract,
    Multiply,
    Divide,
    Modulo,
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    In,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Size,
    Contains,
    StartsWith,
    EndsWith,
    Int,
    Uint,
    Double,
    String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Macro {
    All,
    Exists,
    ExistsOne,
    /// `map(x, f)`, `map(x, p, f)` and `filter(x, p)` (which is `map(x, p, x)`).
    Map {
        filter: Option<Box<Expr>>,
    },
}

/// Why an AST is outside the subset: the node and what it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unsupported {
    pub id: u64,
    pub what: String,
}

/// Turns a parsed AST into the subset's tree. `source_span` gives a node's token range.
pub(crate) fn lower(
    expr: &IdedExpr,
    source_span: &dyn Fn(u64) -> Option<(usize, usize)>,
) -> Result<Expr, Unsupported> {
    Lowering {
        bound: Vec::new(),
        source_span,
    }
    .expr(expr)
}

struct Lowering<'a> {
    /// Comprehension variables in scope, outermost first.
    bound: Vec<String>,
    source_span: &'a dyn Fn(u64) -> Option<(usize, usize)>,
}

impl Lowering<'_> {
    fn expr(&mut self, expr: &IdedExpr) -> Result<Expr, Unsupported> {
        let kind = self.kind(expr)?;
        let mut span = (self.source_span)(expr.id).unwrap_or((usize::MAX, 0));
        for child in children(&kind) {
            span.0 = span.0.min(child.span.0);
            span.1 = span.1.max(child.span.1);
        }
        Ok(Expr { kind, span })
    }

    fn boxed(&mut self, expr: &IdedExpr) -> Result<Box<Expr>, Unsupported> {
        self.expr(expr).map(Box::new)
    }

    fn kind(&mut self, expr: &IdedExpr) -> Result<Kind, Unsupported> {
        let unsupported = |what: String| Unsupported { id: expr.id, what };
        Ok(match &expr.expr {
            ast::Expr::Literal(literal) => Kind::Literal(match literal {
                LiteralValue::Null => Literal::Null,
                LiteralValue::Boolean(b) => Literal::Bool(*b.inner()),
                LiteralValue::Int(i) => Literal::Int(*i.inner()),
                LiteralValue::UInt(u) => Literal::Uint(*u.inner()),
                LiteralValue::Double(d) => Literal::Double(*d.inner()),
                LiteralValue::String(s) => Literal::String(s.inner().into()),
                LiteralValue::Bytes(b) => Literal::Bytes(b.inner().into()),
            }),
            ast::Expr::Ident(name) => self.name(name).map_err(unsupported)?,
            ast::Expr::Select(select) => {
                if let ast::Expr::Ident(name) = &select.operand.expr
                    && name == CONTEXT_VARIABLE
                    && !select.test
                    && !self.bound.iter().any(|bound| bound == name)
                {
                    return Ok(Kind::ContextField(select.field.clone()));
                }
                Kind::Select {
                    operand: self.boxed(&select.operand)?,
                    field: select.field.clone(),
                    test: select.test,
                }
            }
            ast::Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return Err(unsupported("optional list elements".into()));
                }
                Kind::List(
                    list.elements
                        .iter()
                        .map(|element| self.expr(element))
                        .collect::<Result<_, _>>()?,
                )
            }
            ast::Expr::Map(map) => {
                let mut entries = Vec::with_capacity(map.entries.len());
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(entry) if !entry.optional => {
                            entries.push((self.expr(&entry.key)?, self.expr(&entry.value)?));
                        }
                        _ => return Err(unsupported("optional map entries".into())),
                    }
                }
                Kind::Map(entries)
            }
            ast::Expr::Struct(structure) => {
                return Err(unsupported(format!(
                    "message construction `{}{{...}}`",
                    structure.type_name
                )));
            }
            ast::Expr::Call(call) => self.call(expr.id, call)?,
            ast::Expr::Comprehension(comprehension) => {
                self.comprehension(expr.id, comprehension)?
            }
            ast::Expr::Unspecified => return Err(unsupported("an empty expression".into())),
        })
    }

    fn name(&self, name: &str) -> Result<Kind, String> {
        if let Some(depth) = self.bound.iter().rposition(|bound| bound == name) {
            return Ok(Kind::Variable(depth));
        }
        if name == ACCUMULATOR {
            return Err(format!("the name `{name}`"));
        }
        if name == CONTEXT_VARIABLE {
            return Ok(Kind::Context);
        }
        Ok(Kind::Field(name.to_owned()))
    }

    fn call(&mut self, id: u64, call: &ast::CallExpr) -> Result<Kind, Unsupported> {
        let name = call.func_name.as_str();
        let binary = match name {
            "_+_" => Some(Binary::Add),
            "_-_" => Some(Binary::Subtract),
            "_*_" => Some(Binary::Multiply),
            "_/_" => Some(Binary::Divide),
            "_%_" => Some(Binary::Modulo),
            "_==_" => Some(Binary::Equal),
            "_!=_" => Some(Binary::NotEqual),
            "_<_" => Some(Binary::Less),
            "_<=_" => Some(Binary::LessOrEqual),
            "_>_" => Some(Binary::Greater),
            "_>=_" => Some(Binary::GreaterOrEqual),
            "@in" => Some(Binary::In),
            _ => None,
        };
        let target = call.target.as_deref();
        let args = call.args.as_slice();
        Ok(match (name, target, args) {
            (_, None, [left, right]) if binary.is_some() => Kind::Binary(
                binary.unwrap_or(Binary::Add),
                self.boxed(left)?,
                self.boxed(right)?,
            ),
            ("_&&_", None, [left, right]) => Kind::And(self.boxed(left)?, self.boxed(right)?),
            ("_||_", None, [left, right]) => Kind::Or(self.boxed(left)?, self.boxed(right)?),
            ("!_", None, [inner]) => Kind::Not(self.boxed(inner)?),
            ("-_", None, [inner]) => Kind::Negate(self.boxed(inner)?),
            ("_?_:_", None, [condition, then, otherwise]) => Kind::Conditional(
                self.boxed(condition)?,
                self.boxed(then)?,
                self.boxed(otherwise)?,
            ),
            ("_[_]", None, [operand, index]) => {
                Kind::Index(self.boxed(operand)?, self.boxed(index)?)
            }
            ("size", None, [value]) | ("size", Some(value), []) => {
                Kind::Call(Function::Size, vec![self.expr(value)?])
            }
            ("contains" | "startsWith" | "endsWith", Some(text), [part]) => {
                let function = match name {
                    "contains" => Function::Contains,
                    "startsWith" => Function::StartsWith,
                    _ => Function::EndsWith,
                };
                Kind::Call(function, vec![self.expr(text)?, self.expr(part)?])
            }
            ("int" | "uint" | "double" | "string", None, [value]) => {
                let function = match name {
                    "int" => Function::Int,
                    "uint" => Function::Uint,
                    "double" => Function::Double,
                    _ => Function::String,
                };
                Kind::Call(function, vec![self.expr(value)?])
            }
            _ => {
                let shown = match name {
                    "_[?_]" | "_?._" => "optional access".to_owned(),
                    name if name.starts_with('_') || name.starts_with('@') => {
                        format!("the operator `{}`", name.trim_matches('_'))
                    }
                    name => format!(
                        "the function `{name}` with {} argument{}{}",
                        args.len(),
                        if args.len() == 1 { "" } else { "s" },
                        if target.is_some() {
                            " on a receiver"
                        } else {
                            ""
                        }
                    ),
                };
                return Err(Unsupported { id, what: shown });
            }
        })
    }

    fn comprehension(
        &mut self,
        id: u64,
        comprehension: &ast::ComprehensionExpr,
    ) -> Result<Kind, Unsupported> {
        let unsupported = || Unsupported {
            id,
            what: "a comprehension other than all/exists/exists_one/map/filter".into(),
        };
        if comprehension.iter_var2.is_some() || comprehension.accu_var != ACCUMULATOR {
            return Err(unsupported());
        }
        let shape = MacroShape::of(comprehension).ok_or_else(unsupported)?;
        let range = self.boxed(&comprehension.iter_range)?;
        let depth = self.bound.len();
        self.bound.push(comprehension.iter_var.clone());
        let lowered = (|| {
            Ok::<_, Unsupported>(match shape {
                MacroShape::All(body) => (Macro::All, self.boxed(body)?),
                MacroShape::Exists(body) => (Macro::Exists, self.boxed(body)?),
                MacroShape::ExistsOne(body) => (Macro::ExistsOne, self.boxed(body)?),
                MacroShape::Map { filter, transform } => {
                    let filter = match filter {
                        Some(filter) => Some(self.boxed(filter)?),
                        None => None,
                    };
                    (Macro::Map { filter }, self.boxed(transform)?)
                }
            })
        })();
        self.bound.pop();
        let (macro_kind, body) = lowered?;
        Ok(Kind::Comprehension {
            macro_kind,
            range,
            depth,
            body,
        })
    }
}

/// The predicate of `filter(x, p)` (or its spelled-out form `map(x, p, x)`), when `c` is one:
/// a `map` with a predicate whose transform is the iteration variable itself, so that its
/// result holds the range's elements.
pub(super) fn filter_predicate(c: &ast::ComprehensionExpr) -> Option<&IdedExpr> {
    match MacroShape::of(c)? {
        MacroShape::Map {
            filter: Some(predicate),
            transform,
        } if matches!(&transform.expr, ast::Expr::Ident(name) if *name == c.iter_var) => {
            Some(predicate)
        }
        _ => None,
    }
}

/// AST nodes of a `filter`'s step besides its predicate: `p ? accu + [x] : accu`, the exact
/// shape [`filter_predicate`] checks before it answers.
pub(super) const FILTER_STEP_NODES: usize = 6;

/// The comprehensions `cel`'s standard macros expand to, with their user-written parts.
enum MacroShape<'a> {
    All(&'a IdedExpr),
    Exists(&'a IdedExpr),
    ExistsOne(&'a IdedExpr),
    Map {
        filter: Option<&'a IdedExpr>,
        transform: &'a IdedExpr,
    },
}

impl<'a> MacroShape<'a> {
    fn of(c: &'a ast::ComprehensionExpr) -> Option<MacroShape<'a>> {
        let accu = |e: &IdedExpr| matches!(&e.expr, ast::Expr::Ident(n) if n == ACCUMULATOR);
        let call = |e: &'a IdedExpr, name: &str| match &e.expr {
            ast::Expr::Call(call) if call.func_name == name && call.target.is_none() => {
                Some(call.args.as_slice())
            }
            _ => None,
        };
        let literal = |e: &IdedExpr| match &e.expr {
            ast::Expr::Literal(literal) => Some(literal.clone()),
            _ => None,
        };
        let empty_list =
            |e: &IdedExpr| matches!(&e.expr, ast::Expr::List(l) if l.elements.is_empty());
        // `accu + [f]`: the appended element.
        let append = |e: &'a IdedExpr| -> Option<&'a IdedExpr> {
            match call(e, "_+_")? {
                [left, right] if accu(left) => match &right.expr {
                    ast::Expr::List(list) if list.elements.len() == 1 => list.elements.first(),
                    _ => None,
                },
                _ => None,
            }
        };
        let init = literal(&c.accu_init);
        if let Some([left, body]) = call(&c.loop_step, "_&&_")
            && accu(left)
            && init == Some(LiteralValue::Boolean(true.into()))
            && accu(&c.result)
        {
            return Some(MacroShape::All(body));
        }
        if let Some([left, body]) = call(&c.loop_step, "_||_")
            && accu(left)
            && init == Some(LiteralValue::Boolean(false.into()))
            && accu(&c.result)
        {
            return Some(MacroShape::Exists(body));
        }
        if init == Some(LiteralValue::Int(0.into()))
            && let Some([body, plus_one, unchanged]) = call(&c.loop_step, "_?_:_")
            && accu(unchanged)
            && matches!(call(plus_one, "_+_"), Some([a, one]) if accu(a) && literal(one) == Some(LiteralValue::Int(1.into())))
            && matches!(call(&c.result, "_==_"), Some([a, one]) if accu(a) && literal(one) == Some(LiteralValue::Int(1.into())))
        {
            return Some(MacroShape::ExistsOne(body));
        }
        if empty_list(&c.accu_init) && accu(&c.result) {
            if let Some(transform) = append(&c.loop_step) {
                return Some(MacroShape::Map {
                    filter: None,
                    transform,
                });
            }
            if let Some([filter, step, unchanged]) = call(&c.loop_step, "_?_:_")
                && accu(unchanged)
                && let Some(transform) = append(step)
            {
                return Some(MacroShape::Map {
                    filter: Some(filter),
                    transform,
                });
            }
        }
        None
    }
}

/// The direct operands of a node.
pub(crate) fn children(kind: &Kind) -> Vec<&Expr> {
    match kind {
        Kind::Literal(_)
        | Kind::Field(_)
        | Kind::Context
        | Kind::ContextField(_)
        | Kind::Variable(_) => Vec::new(),
        Kind::Select { operand, .. } => vec![operand],
        Kind::Not(inner) | Kind::Negate(inner) => vec![inner],
        Kind::Index(a, b) | Kind::And(a, b) | Kind::Or(a, b) | Kind::Binary(_, a, b) => {
            vec![a, b]
        }
        Kind::Conditional(a, b, c) => vec![a, b, c],
        Kind::List(elements) | Kind::Call(_, elements) => elements.iter().collect(),
        Kind::Map(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
        Kind::Comprehension {
            macro_kind,
            range,
            body,
            ..
        } => {
            let mut all = vec![range.as_ref()];
            if let Macro::Map {
                filter: Some(filter),
            } = macro_kind
            {
                all.push(filter);
            }
            all.push(body);
            all
        }
    }
}
