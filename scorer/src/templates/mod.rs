//! Feature templates: each a reusable, parameterised unit in a file of its own, all with the
//! same shape ([`Template`]): `compile` a spec from the bundle's parameters, `new` state,
//! `apply` an event at its time, `value` at a moment, `explain`, and the state's binary codec.
//! A feature is a template plus parameters (every template also takes `filter`; most take a
//! `window`). Adding a template is a file here and one line in the `templates!` list below; it
//! touches no other template.

use serde::Deserialize;
use serde_json::Value as Json;

use crate::event::Observed;
use crate::state::codec::{CodecError, Reader, Writer};
use crate::value::Value;
use crate::window::{Clock, Window};

/// What a template is compiled with besides its own parameters.
#[derive(Clone, Debug)]
pub(crate) struct CompileCx {
    /// The feature's `window`, parsed, when it set one.
    pub(crate) window: Option<Window>,
    /// The bundle's session gap (the default of session windows and session templates).
    pub(crate) session_idle_ms: u64,
}

impl CompileCx {
    /// The window, or lifetime when the feature set none.
    pub(crate) fn window_or_lifetime(&self) -> Window {
        self.window.unwrap_or(Window::Lifetime)
    }

    /// The window, which must be lifetime or sliding (not session).
    pub(crate) fn window_not_session(&self, problems: &mut Vec<String>) -> Window {
        match self.window_or_lifetime() {
            Window::Session { .. } => {
                problems.push(
                    "window: this template takes \"lifetime\" or a sliding window, not \"session\""
                        .into(),
                );
                Window::Lifetime
            }
            w => w,
        }
    }
}

/// What a template's value is, for checks of features that use other features (and of models
/// and rules that read them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A number.
    Num,
    /// Values with counts.
    Top,
    /// Whatever the events carried (`last`).
    Any,
}

/// The moment a value is read at, with the values of the features this one is derived from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct At<'a> {
    /// The time of the decision (ms since the epoch).
    pub(crate) now: u64,
    /// Values of the features named by [`Template::inputs`], in that order.
    pub(crate) inputs: &'a [Value],
}

/// The shape every template has.
pub(crate) trait Template: Sized + Clone + std::fmt::Debug + PartialEq {
    /// The compiled parameters.
    type Spec: Clone + std::fmt::Debug + PartialEq;
    /// The names a bundle uses for this template (`template = "..."`).
    const NAMES: &'static [&'static str];

    /// Compiles the parameters (everything of the feature but `template`, `window`, `filter`
    /// and `description`), listing every problem.
    fn compile(name: &str, params: toml::Table, cx: &CompileCx) -> Result<Self::Spec, Vec<String>>;
    /// Fresh state.
    fn new(spec: &Self::Spec) -> Self;
    /// Adds an event that passed the feature's filter, at event time `time`.
    fn apply<E: Observed + ?Sized>(&mut self, spec: &Self::Spec, ev: &E, time: u64, clock: Clock);
    /// Forgets what can no longer be read (after a batch).
    fn prune(&mut self, _spec: &Self::Spec, _clock: Clock) {}
    /// The value at `at.now`.
    fn value(&self, spec: &Self::Spec, at: &At<'_>) -> Value;
    /// What the value is made of (buckets, entries, sessions), for operators.
    fn explain(&self, spec: &Self::Spec, at: &At<'_>) -> Json;
    /// Writes the state.
    fn encode(&self, spec: &Self::Spec, w: &mut Writer);
    /// Reads it back.
    fn decode(spec: &Self::Spec, r: &mut Reader<'_>) -> Result<Self, CodecError>;
    /// Heap bytes held.
    fn heap_bytes(&self) -> usize;
    /// Reads a word of each heap block that applying an event reads first (the latest bucket
    /// or session, the entries), so that [`crate::ReaderState::prefetch`] can fetch a
    /// cold reader's blocks from memory all at once instead of one miss after another.
    fn touch(&self) -> u64 {
        0
    }
    /// The kind of value.
    fn kind(_spec: &Self::Spec) -> Kind {
        Kind::Num
    }
    /// Other features this one is computed from (by name); such a template keeps no state.
    fn inputs(_spec: &Self::Spec) -> Vec<String> {
        Vec::new()
    }
    /// The window whose span must fit in the bundle's TTL.
    fn window(_spec: &Self::Spec) -> Option<Window> {
        None
    }
    /// Whether features with these two specs (and the same filter) keep identical state, so
    /// that one state serves both (e.g. `sum` and `avg` of the same property and window).
    fn same_state(a: &Self::Spec, b: &Self::Spec) -> bool {
        a == b
    }
}

/// Deserializes a template's own parameters, listing unknown or mistyped keys.
pub(crate) fn params<T: for<'de> Deserialize<'de>>(table: toml::Table) -> Result<T, Vec<String>> {
    T::deserialize(toml::Value::Table(table)).map_err(|e| vec![e.message().to_owned()])
}

/// Parses `of = "..."` into a field.
pub(crate) fn field(of: &str, problems: &mut Vec<String>) -> crate::filter::Field {
    crate::filter::Field::parse(of).unwrap_or_else(|e| {
        problems.push(format!("of: {e}"));
        crate::filter::Field::Page
    })
}

macro_rules! templates {
    ($($variant:ident => $module:ident),* $(,)?) => {
        $(pub(crate) mod $module;)*

        /// A compiled template of any kind.
        #[derive(Clone, Debug, PartialEq)]
        pub(crate) enum Spec {
            $($variant(<$module::State as Template>::Spec),)*
        }

        /// State of any template.
        #[derive(Clone, Debug, PartialEq)]
        pub(crate) enum State {
            $($variant($module::State),)*
        }

        /// Every template name, for messages.
        pub(crate) fn names() -> Vec<&'static str> {
            let mut all = Vec::new();
            $(all.extend_from_slice(<$module::State as Template>::NAMES);)*
            all
        }

        /// Compiles template `name`, or `None` when no template has that name.
        pub(crate) fn compile(
            name: &str,
            params: toml::Table,
            cx: &CompileCx,
        ) -> Option<Result<Spec, Vec<String>>> {
            $(
                if <$module::State as Template>::NAMES.contains(&name) {
                    return Some(<$module::State as Template>::compile(name, params, cx).map(Spec::$variant));
                }
            )*
            None
        }

        impl Spec {
            pub(crate) fn new_state(&self) -> State {
                match self {
                    $(Self::$variant(s) => State::$variant(<$module::State as Template>::new(s)),)*
                }
            }

            pub(crate) fn kind(&self) -> Kind {
                match self {
                    $(Self::$variant(s) => <$module::State as Template>::kind(s),)*
                }
            }

            pub(crate) fn inputs(&self) -> Vec<String> {
                match self {
                    $(Self::$variant(s) => <$module::State as Template>::inputs(s),)*
                }
            }

            pub(crate) fn window(&self) -> Option<Window> {
                match self {
                    $(Self::$variant(s) => <$module::State as Template>::window(s),)*
                }
            }

            pub(crate) fn same_state(&self, other: &Spec) -> bool {
                match (self, other) {
                    $((Self::$variant(a), Self::$variant(b)) => <$module::State as Template>::same_state(a, b),)*
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }

            pub(crate) fn decode(&self, r: &mut Reader<'_>) -> Result<State, CodecError> {
                match self {
                    $(Self::$variant(s) => <$module::State as Template>::decode(s, r).map(State::$variant),)*
                }
            }
        }

        impl State {
            pub(crate) fn apply<E: Observed + ?Sized>(&mut self, spec: &Spec, ev: &E, time: u64, clock: Clock) {
                match (self, spec) {
                    $((Self::$variant(st), Spec::$variant(sp)) => st.apply(sp, ev, time, clock),)*
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }

            pub(crate) fn prune(&mut self, spec: &Spec, clock: Clock) {
                match (self, spec) {
                    $((Self::$variant(st), Spec::$variant(sp)) => st.prune(sp, clock),)*
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }

            pub(crate) fn value(&self, spec: &Spec, at: &At<'_>) -> Value {
                match (self, spec) {
                    $((Self::$variant(st), Spec::$variant(sp)) => st.value(sp, at),)*
                    #[allow(unreachable_patterns)]
                    _ => Value::Missing,
                }
            }

            pub(crate) fn explain(&self, spec: &Spec, at: &At<'_>) -> Json {
                match (self, spec) {
                    $((Self::$variant(st), Spec::$variant(sp)) => st.explain(sp, at),)*
                    #[allow(unreachable_patterns)]
                    _ => Json::Null,
                }
            }

            pub(crate) fn encode(&self, spec: &Spec, w: &mut Writer) {
                match (self, spec) {
                    $((Self::$variant(st), Spec::$variant(sp)) => st.encode(sp, w),)*
                    #[allow(unreachable_patterns)]
                    _ => {}
                }
            }

            pub(crate) fn heap_bytes(&self) -> usize {
                match self {
                    $(Self::$variant(st) => st.heap_bytes(),)*
                }
            }

            pub(crate) fn touch(&self) -> u64 {
                match self {
                    $(Self::$variant(st) => st.touch(),)*
                }
            }
        }
    };
}

#[cfg(test)]
pub(crate) mod testing;

templates! {
    Count => count,
    Numeric => numeric,
    Distinct => distinct,
    Last => last,
    Seen => seen,
    ActiveDays => active_days,
    TopK => top_k,
    Session => session,
    Rfv => rfv,
}
