//! The common shape of conditions, evaluated natively: literals, features and `page.x`,
//! `request.x`, `model.score`, `entitled.x`, comparisons, `&&`, `||`, `!`, `in` a list of
//! literals, and `startsWith` / `endsWith` / `contains` on strings. A condition of that shape is
//! compiled into a small tree once, and evaluated without the interpreter's allocations; any
//! other condition runs in the CEL interpreter. Semantics follow CEL's: equality across types
//! is false, an ordering across types (or with null) is an error, `&&` and `||` absorb an
//! error when the other side decides (a property test holds the two to the same answers).

use cel::common::ast::{Expr, IdedExpr, LiteralValue, operators};

use super::resolve::Resolver;
use crate::value::Value;

/// A value during native evaluation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum V<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    /// A list (top-k values), compared by nothing; `in` and equality only.
    List(Vec<String>),
}

impl V<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Where a variable's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Var {
    Feature(usize),
    Page(&'static str),
    Request(&'static str),
    ModelScore,
    Entitled(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

/// A compiled condition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Lit(LitV),
    Var(Var),
    Not(Box<Self>),
    And(Box<Self>, Box<Self>),
    Or(Box<Self>, Box<Self>),
    Cmp(Op, Box<Self>, Box<Self>),
    In(Box<Self>, Vec<LitV>),
    Str(StrFn, Box<Self>, Box<Self>),
}

/// A literal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LitV {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
}

impl LitV {
    fn v(&self) -> V<'_> {
        match self {
            Self::Null => V::Null,
            Self::Bool(b) => V::Bool(*b),
            Self::Num(n) => V::Num(*n),
            Self::Str(s) => V::Str(s),
        }
    }
}

/// An evaluation error (CEL's no-such-overload and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fail;

fn lit(l: &LiteralValue) -> Option<LitV> {
    Some(match l {
        LiteralValue::Boolean(b) => LitV::Bool(*b.inner()),
        LiteralValue::Double(d) => LitV::Num(*d.inner()),
        LiteralValue::Int(i) => LitV::Num(*i.inner() as f64),
        LiteralValue::UInt(u) => LitV::Num(*u.inner() as f64),
        LiteralValue::String(s) => LitV::Str(s.inner().to_owned()),
        LiteralValue::Null => LitV::Null,
        LiteralValue::Bytes(_) => return None,
    })
}

const PAGE: [&str; 5] = ["content_type", "section", "path", "referrer", "metered"];
const REQUEST: [&str; 2] = ["device", "country"];

/// Compiles a condition of the native shape; `None` when it has another shape.
pub(crate) fn compile(e: &IdedExpr, feature: &dyn Fn(&str) -> Option<usize>) -> Option<Node> {
    Some(match &e.expr {
        Expr::Literal(l) => Node::Lit(lit(l)?),
        Expr::Ident(name) => Node::Var(Var::Feature(feature(name)?)),
        Expr::Select(s) if !s.test => {
            let Expr::Ident(head) = &s.operand.expr else {
                return None;
            };
            let field = s.field.as_str();
            Node::Var(match head.as_str() {
                "page" => Var::Page(PAGE.iter().find(|f| **f == field)?),
                "request" => Var::Request(REQUEST.iter().find(|f| **f == field)?),
                "model" if field == "score" => Var::ModelScore,
                "entitled" => Var::Entitled(field.to_owned()),
                _ => return None,
            })
        }
        Expr::Call(c) => {
            let arg = |i: usize| {
                c.args
                    .get(i)
                    .and_then(|a| compile(a, feature))
                    .map(Box::new)
            };
            match (c.func_name.as_str(), &c.target, c.args.len()) {
                (operators::LOGICAL_NOT, None, 1) => Node::Not(arg(0)?),
                (operators::LOGICAL_AND, None, 2) => Node::And(arg(0)?, arg(1)?),
                (operators::LOGICAL_OR, None, 2) => Node::Or(arg(0)?, arg(1)?),
                (op, None, 2) => {
                    let op = match op {
                        operators::EQUALS => Op::Eq,
                        operators::NOT_EQUALS => Op::Ne,
                        operators::LESS => Op::Lt,
                        operators::LESS_EQUALS => Op::Le,
                        operators::GREATER => Op::Gt,
                        operators::GREATER_EQUALS => Op::Ge,
                        operators::IN => {
                            let Expr::List(list) = &c.args[1].expr else {
                                return None;
                            };
                            let items = list
                                .elements
                                .iter()
                                .map(|x| match &x.expr {
                                    Expr::Literal(l) => lit(l),
                                    _ => None,
                                })
                                .collect::<Option<Vec<_>>>()?;
                            return Some(Node::In(arg(0)?, items));
                        }
                        _ => return None,
                    };
                    Node::Cmp(op, arg(0)?, arg(1)?)
                }
                (f, Some(target), 1) => {
                    let f = match f {
                        "startsWith" => StrFn::StartsWith,
                        "endsWith" => StrFn::EndsWith,
                        "contains" => StrFn::Contains,
                        _ => return None,
                    };
                    Node::Str(f, Box::new(compile(target, feature)?), arg(0)?)
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn equal(a: &V<'_>, b: &V<'_>) -> bool {
    match (a, b) {
        (V::Null, V::Null) => true,
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Num(x), V::Num(y)) => x == y,
        (V::List(x), V::List(y)) => x == y,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

fn order(a: &V<'_>, b: &V<'_>) -> Result<std::cmp::Ordering, Fail> {
    match (a, b) {
        (V::Num(x), V::Num(y)) => x.partial_cmp(y).ok_or(Fail),
        (V::Bool(x), V::Bool(y)) => Ok(x.cmp(y)),
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => Ok(x.cmp(y)),
            _ => Err(Fail),
        },
    }
}

impl Node {
    /// Evaluates the node.
    pub(crate) fn eval<'a>(&'a self, r: &'a Resolver<'_>) -> Result<V<'a>, Fail> {
        Ok(match self {
            Self::Lit(l) => l.v(),
            Self::Var(v) => r.native(v)?,
            Self::Not(x) => match x.eval(r)? {
                V::Bool(b) => V::Bool(!b),
                _ => return Err(Fail),
            },
            Self::And(a, b) => match (a.eval(r), b.eval(r)) {
                (Ok(V::Bool(false)), _) | (_, Ok(V::Bool(false))) => V::Bool(false),
                (Ok(V::Bool(true)), Ok(V::Bool(true))) => V::Bool(true),
                _ => return Err(Fail),
            },
            Self::Or(a, b) => match (a.eval(r), b.eval(r)) {
                (Ok(V::Bool(true)), _) | (_, Ok(V::Bool(true))) => V::Bool(true),
                (Ok(V::Bool(false)), Ok(V::Bool(false))) => V::Bool(false),
                _ => return Err(Fail),
            },
            Self::Cmp(op, a, b) => {
                let (a, b) = (a.eval(r)?, b.eval(r)?);
                V::Bool(match op {
                    Op::Eq => equal(&a, &b),
                    Op::Ne => !equal(&a, &b),
                    Op::Lt => order(&a, &b)?.is_lt(),
                    Op::Le => order(&a, &b)?.is_le(),
                    Op::Gt => order(&a, &b)?.is_gt(),
                    Op::Ge => order(&a, &b)?.is_ge(),
                })
            }
            Self::In(x, items) => {
                let x = x.eval(r)?;
                V::Bool(items.iter().any(|i| equal(&x, &i.v())))
            }
            Self::Str(f, target, arg) => {
                let (t, a) = (target.eval(r)?, arg.eval(r)?);
                let (Some(t), Some(a)) = (t.as_str(), a.as_str()) else {
                    return Err(Fail);
                };
                V::Bool(match f {
                    StrFn::StartsWith => t.starts_with(a),
                    StrFn::EndsWith => t.ends_with(a),
                    StrFn::Contains => t.contains(a),
                })
            }
        })
    }
}

/// A feature value as the native evaluator sees it.
pub(crate) fn from_value(v: &Value) -> V<'_> {
    match v {
        Value::Missing => V::Null,
        Value::Bool(b) => V::Bool(*b),
        Value::Num(n) => V::Num(*n),
        Value::Str(s) => V::Str(s),
        Value::Top(items) => V::List(items.iter().map(|(s, _)| s.clone()).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::rules::{PageFacts, Request};
    use crate::state::ReaderState;
    use proptest::prelude::*;
    use pulse_protocol::{Event, EventId, EventType, PageContext};
    use serde_json::json;
    use std::sync::Arc;

    const BUNDLE: &str = r#"
[bundle]
name = "fast"
[features.n]
template = "count"
filter = { type = "page_view" }
[features.gone]
template = "avg"
of = "props.depth"
[features.sec]
template = "last"
of = "props.section"
[features.flag]
template = "last"
of = "props.flag"
[features.tops]
template = "top_k"
of = "props.section"
"#;

    fn atom() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("n".to_owned()),
            Just("gone".to_owned()),
            Just("sec".to_owned()),
            Just("flag".to_owned()),
            Just("tops".to_owned()),
            Just("page.content_type".to_owned()),
            Just("page.metered".to_owned()),
            Just("page.referrer".to_owned()),
            Just("request.device".to_owned()),
            Just("entitled.sub".to_owned()),
            Just("entitled.nope".to_owned()),
            Just("0".to_owned()),
            Just("2".to_owned()),
            Just("2.5".to_owned()),
            Just("'sport'".to_owned()),
            Just("'article'".to_owned()),
            Just("'search'".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
        ]
    }

    fn expr() -> impl Strategy<Value = String> {
        let op = prop_oneof![
            Just("=="),
            Just("!="),
            Just("<"),
            Just("<="),
            Just(">"),
            Just(">=")
        ];
        let leaf = prop_oneof![
            (atom(), op, atom()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
            (atom(), atom(), atom()).prop_map(|(a, b, c)| format!("{a} in [{b}, {c}]")),
            (atom(), atom()).prop_map(|(a, b)| format!("{a}.startsWith({b})")),
            (atom(), atom()).prop_map(|(a, b)| format!("{a}.contains({b})")),
            atom(),
        ];
        leaf.prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| format!("!({e})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) && ({b})")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("({a}) || ({b})")),
            ]
        })
    }

    fn page(id: u128, props: serde_json::Value) -> Event {
        Event {
            id: EventId(id),
            ts: 0,
            kind: EventType::PageView,
            name: None,
            page: PageContext {
                url: "https://n.example/a".into(),
                ..Default::default()
            },
            props: props.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn the_common_shapes_compile_natively() {
        let bundle = Bundle::compile(BUNDLE).unwrap();
        let env = cel::Env::stdlib();
        let find = |n: &str| bundle.feature(n);
        for src in [
            "n >= 2 && page.metered",
            "!(sec == 'sport') || request.device in ['mobile', 'tablet']",
            "page.path.startsWith('/opinion/') && entitled.sub == true",
            "model.score > 0.5",
        ] {
            let p = env.compile(src).unwrap();
            assert!(compile(p.expression(), &find).is_some(), "{src}");
        }
        for src in ["size(tops) > 1", "n + 1 > 2", "tops.exists(t, t == 'a')"] {
            let p = env.compile(src).unwrap();
            assert!(compile(p.expression(), &find).is_none(), "{src}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The native evaluator answers as the CEL interpreter does (an error or a non-boolean
        /// counts as "no match" in both).
        #[test]
        fn native_equals_cel(src in expr(), sport in any::<bool>(), flag in any::<bool>(), ct in 0u8..3, sub in any::<bool>()) {
            let bundle = Bundle::compile(BUNDLE).unwrap();
            let mut state = ReaderState::new(&bundle);
            let section = if sport { "sport" } else { "article" };
            state.apply(&bundle, &page(1, json!({"section": section, "flag": flag})), 1_000);
            let facts = PageFacts {
                content_type: [None, Some("article".to_owned()), Some("sport".to_owned())][ct as usize].clone(),
                section: None,
                path: Some("/a".into()),
                referrer: Some("search"),
            };
            let request = Request {
                device: Some("mobile".into()),
                country: None,
                entitled: if sub { vec![("sub".into(), json!(true))] } else { vec![] },
            };
            let resolver = Resolver::new(&bundle, &state, 2_000, &facts, flag, &request);
            let env = Arc::new(cel::Env::stdlib());
            let Ok(program) = env.compile(&src) else { return Ok(()); };
            let find = |n: &str| bundle.feature(n);
            let Some(node) = compile(program.expression(), &find) else { return Ok(()); };
            let mut context = cel::Context::with_env(env);
            context.set_variable_resolver(&resolver);
            let by_cel = match program.execute(&context) {
                Ok(cel::Value::Bool(b)) => Some(b),
                _ => None,
            };
            let native = match node.eval(&resolver) {
                Ok(V::Bool(b)) => Some(b),
                _ => None,
            };
            prop_assert_eq!(native, by_cel, "{}", src);
        }
    }
}
