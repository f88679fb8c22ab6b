//! Incremental RFC 8259 JSON parsing for text that arrives a few bytes at a time.
//!
//! A model streams tool-call arguments as deltas; the agent wants the best value so far after
//! every delta and the exact value at the end. [`Parser`] is a byte-level state machine (the
//! `State` enum follows the grammar of RFC 8259 sections 2-7) that keeps everything it needs
//! between deltas: the stack of open containers, the text of an open string, the digits of an
//! open number. Each byte is looked at once, so a feed costs time proportional to its delta.
//!
//! Values are built through a [`Builder`], so the same parser produces Rust [`Value`]s (here,
//! for tests and benches) or Python objects (the `py_json` binding) with no intermediate tree:
//! a completed subtree is built once and only referenced afterwards.
//!
//! Two options (see [`Parser::multiple`] and [`Parser::events`]):
//! - *multiple*: a stream of top-level values (NDJSON, or values concatenated with or without
//!   whitespace between them, `{}{}` included), each handed over as it completes.
//! - *events*: the builder also hears where each value completes ([`Builder::value_event`])
//!   and what text each string value gained ([`Builder::delta_event`]), so a caller can follow
//!   a document as it grows without asking for whole partial values. Object keys produce no
//!   events; a string value produces at least one delta, the first in the feed that opens it.
//!
//! Nothing recurses on the depth of the input: parsing keeps an explicit stack bounded by
//! `max_depth`, and [`Value`]'s `Drop`, `Clone` and `PartialEq` walk with explicit stacks too,
//! so a 100,000-deep document costs heap, never call stack.
//!
//! Choices where RFC 8259 leaves room (JSONTestSuite's `i_` cases), matching orjson except for
//! float overflow:
//! - `\u` escapes that leave a lone or inverted UTF-16 surrogate are rejected (as orjson does):
//!   such a string has no UTF-8 form, so it could not be a Rust `String` or a clean Python `str`.
//! - Bytes must be UTF-8 (no BOM, no overlong forms, no encoded surrogates, nothing above
//!   U+10FFFF); UTF-16 input is therefore rejected.
//! - A number keeps its text ([`Number`]); integers of any size stay exact and a float whose
//!   exponent overflows is accepted and becomes infinity, the value Python's `json.loads` gives
//!   (orjson rejects it). Underflow gives 0.0 as in both.
//! - Duplicate object keys: the last value wins, at the key's first position (like a Python
//!   dict and `json.loads`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// Where and why the input stopped being a prefix of a JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset from the first byte ever fed.
    pub offset: usize,
    pub reason: Cow<'static, str>,
}

impl JsonError {
    fn at(offset: usize, reason: &'static str) -> Self {
        JsonError {
            offset,
            reason: Cow::Borrowed(reason),
        }
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.reason, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// A JSON number as written, so integers of any size and floats keep full precision until the
/// consumer decides what to make of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number {
    text: Box<str>,
    is_integer: bool,
}

impl Number {
    /// The number's text exactly as it appeared in the input (already validated).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the text has no fraction and no exponent.
    pub fn is_integer(&self) -> bool {
        self.is_integer
    }

    /// Nearest `f64` (correctly rounded; overflow gives infinity, like Python's `float()`).
    pub fn as_f64(&self) -> f64 {
        self.text
            .parse()
            .expect("validated JSON number is a valid f64 literal")
    }

    /// The value as an `i64` when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        if self.is_integer {
            self.text.parse().ok()
        } else {
            None
        }
    }
}

/// A parsed JSON value.
///
/// `Drop`, `Clone` and `PartialEq` are iterative, so arbitrarily deep values are safe.
/// Objects keep the order of first appearance of each key.
#[derive(Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    fn children_mut(&mut self, out: &mut Vec<Value>) {
        match self {
            Value::Array(items) => out.append(items),
            Value::Object(members) => out.extend(members.drain(..).map(|(_, v)| v)),
            _ => {}
        }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // The derived drop would recurse once per nesting level; move the children onto a heap
        // stack instead so each value dropped from it has no children left.
        let has_nested = match self {
            Value::Array(items) => items.iter().any(Value::is_container),
            Value::Object(members) => members.iter().any(|(_, v)| v.is_container()),
            _ => false,
        };
        if !has_nested {
            return;
        }
        let mut stack = Vec::new();
        self.children_mut(&mut stack);
        while let Some(mut v) = stack.pop() {
            v.children_mut(&mut stack);
        }
    }
}

impl Value {
    fn is_container(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Object(_))
    }

    /// Rebuild this value through `builder` (no recursion); how `Clone` is done and how a Rust
    /// value could become a Python object.
    pub fn build<T: Tree, B: Builder<T>>(&self, builder: &mut B) -> Result<T::Value, B::Error> {
        enum Open<'a, T: Tree> {
            Array(std::slice::Iter<'a, Value>, T::Array),
            Object(std::slice::Iter<'a, (String, Value)>, T::Object, &'a str),
        }
        let mut stack: Vec<Open<'_, T>> = Vec::new();
        let mut next: Option<&Value> = Some(self);
        loop {
            let mut produced = None;
            if let Some(v) = next.take() {
                match v {
                    Value::Array(items) => stack.push(Open::Array(items.iter(), builder.array()?)),
                    Value::Object(members) => {
                        stack.push(Open::Object(members.iter(), builder.object()?, ""))
                    }
                    Value::Null => produced = Some(builder.null()?),
                    Value::Bool(b) => produced = Some(builder.boolean(*b)?),
                    Value::Number(n) => produced = Some(builder.number(n)?),
                    Value::String(s) => produced = Some(builder.string(s)?),
                }
            }
            if let Some(p) = produced {
                match stack.last_mut() {
                    None => return Ok(p),
                    Some(Open::Array(_, a)) => builder.push(a, p)?,
                    Some(Open::Object(_, o, key)) => builder.insert(o, key, p)?,
                }
            }
            let step = match stack.last_mut().expect("a container is open") {
                Open::Array(it, _) => it.next(),
                Open::Object(it, _, key) => it.next().map(|(k, v)| {
                    *key = k.as_str();
                    v
                }),
            };
            match step {
                Some(child) => next = Some(child),
                None => {
                    let closed = match stack.pop().expect("a container is open") {
                        Open::Array(_, a) => builder.close_array(a)?,
                        Open::Object(_, o, _) => builder.close_object(o)?,
                    };
                    match stack.last_mut() {
                        None => return Ok(closed),
                        Some(Open::Array(_, a)) => builder.push(a, closed)?,
                        Some(Open::Object(_, o, key)) => builder.insert(o, key, closed)?,
                    }
                }
            }
        }
    }
}

impl Clone for Value {
    fn clone(&self) -> Self {
        match self.build(&mut ValueBuilder) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }
}

impl PartialEq for Value {
    /// Structural equality; numbers compare by their text (`1.0 != 1`, as written).
    fn eq(&self, other: &Self) -> bool {
        let mut pending = vec![(self, other)];
        while let Some((a, b)) = pending.pop() {
            match (a, b) {
                (Value::Null, Value::Null) => {}
                (Value::Bool(x), Value::Bool(y)) if x == y => {}
                (Value::Number(x), Value::Number(y)) if x == y => {}
                (Value::String(x), Value::String(y)) if x == y => {}
                (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                    pending.extend(x.iter().zip(y.iter()))
                }
                (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
                    for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                        if kx != ky {
                            return false;
                        }
                        pending.push((vx, vy));
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

/// One step of a [`Path`]: an array index or an object key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathSeg<'a> {
    Index(usize),
    Key(&'a str),
}

/// Where an event happened, from the root: in multiple mode the ordinal of the top-level value
/// first ([`Path::document`]), then one [`PathSeg`] per open container.
pub struct Path<'a, T: Tree> {
    document: Option<usize>,
    frames: &'a [Frame<T>],
}

impl<'a, T: Tree> Path<'a, T> {
    /// The top-level value's ordinal (0, 1, ...) in multiple mode, `None` otherwise.
    pub fn document(&self) -> Option<usize> {
        self.document
    }

    /// Number of [`PathSeg`]s (the document ordinal not counted).
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// The keys and indices from the root down to the value.
    pub fn segments(&self) -> impl Iterator<Item = PathSeg<'a>> + 'a {
        self.frames.iter().map(|frame| match frame {
            Frame::Array { len, .. } => PathSeg::Index(*len),
            // Events fire only once a member's key is complete.
            Frame::Object { key, .. } => PathSeg::Key(key.as_deref().unwrap_or("")),
        })
    }
}

/// The types a [`Builder`] produces: a finished value, and an array and object under
/// construction (kept on the parser's stack between feeds).
pub trait Tree {
    type Value;
    type Array;
    type Object;
}

/// Makes values of a [`Tree`] as the parser completes them.
///
/// A failing builder (say, a Python integer beyond `sys.int_max_str_digits`) fails the parse
/// with its error's text as the reason.
pub trait Builder<T: Tree> {
    type Error: fmt::Display;
    fn null(&mut self) -> Result<T::Value, Self::Error>;
    fn boolean(&mut self, value: bool) -> Result<T::Value, Self::Error>;
    fn number(&mut self, number: &Number) -> Result<T::Value, Self::Error>;
    fn string(&mut self, text: &str) -> Result<T::Value, Self::Error>;
    fn array(&mut self) -> Result<T::Array, Self::Error>;
    fn push(&mut self, array: &mut T::Array, value: T::Value) -> Result<(), Self::Error>;
    fn close_array(&mut self, array: T::Array) -> Result<T::Value, Self::Error>;
    fn object(&mut self) -> Result<T::Object, Self::Error>;
    /// Set `key` to `value`; a key already present keeps its position and takes the new value.
    fn insert(
        &mut self,
        object: &mut T::Object,
        key: &str,
        value: T::Value,
    ) -> Result<(), Self::Error>;
    fn close_object(&mut self, object: T::Object) -> Result<T::Value, Self::Error>;
    /// An independent copy of an open array, for [`Parser::partial_with`]; completed elements
    /// may be shared rather than deep-copied.
    fn copy_array(&mut self, array: &T::Array) -> Result<T::Array, Self::Error>;
    fn copy_object(&mut self, object: &T::Object) -> Result<T::Object, Self::Error>;
    fn copy_value(&mut self, value: &T::Value) -> Result<T::Value, Self::Error>;
    /// With [`Parser::events`] on: `value` (a scalar, a closed container or a complete string)
    /// was completed at `path`. Called before the value is attached to its parent.
    fn value_event(&mut self, path: &Path<'_, T>, value: &T::Value) -> Result<(), Self::Error> {
        let _ = (path, value);
        Ok(())
    }
    /// With [`Parser::events`] on: the string value at `path` gained `text` (whole characters).
    /// `first` is true for the string's first delta, which comes in the feed that opens the
    /// string, even when `text` is empty; the deltas of a string concatenate to its value.
    fn delta_event(
        &mut self,
        path: &Path<'_, T>,
        text: &str,
        first: bool,
    ) -> Result<(), Self::Error> {
        let _ = (path, text, first);
        Ok(())
    }
}

/// [`Tree`] of plain Rust [`Value`]s.
pub struct ValueTree;

/// An object under construction: members in first-seen order, plus a key index once the object
/// is big enough that a linear duplicate check would make parsing quadratic.
#[derive(Default, Clone)]
pub struct ObjectBuf {
    members: Vec<(String, Value)>,
    index: Option<HashMap<String, usize>>,
}

const INDEX_FROM_MEMBERS: usize = 16;

impl ObjectBuf {
    fn insert(&mut self, key: &str, value: Value) {
        let found = match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.members.iter().position(|(k, _)| k == key),
        };
        if let Some(i) = found {
            self.members[i].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(key.to_owned(), self.members.len());
        }
        self.members.push((key.to_owned(), value));
        if self.index.is_none() && self.members.len() >= INDEX_FROM_MEMBERS {
            let index = self
                .members
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (k.clone(), i));
            self.index = Some(index.collect());
        }
    }
}

impl Tree for ValueTree {
    type Value = Value;
    type Array = Vec<Value>;
    type Object = ObjectBuf;
}

/// Builds [`Value`]s; never fails.
pub struct ValueBuilder;

impl Builder<ValueTree> for ValueBuilder {
    type Error = std::convert::Infallible;
    fn null(&mut self) -> Result<Value, Self::Error> {
        Ok(Value::Null)
    }
    fn boolean(&mut self, value: bool) -> Result<Value, Self::Error> {
        Ok(Value::Bool(value))
    }
    fn number(&mut self, number: &Number) -> Result<Value, Self::Error> {
        Ok(Value::Number(number.clone()))
    }
    fn string(&mut self, text: &str) -> Result<Value, Self::Error> {
        Ok(Value::String(text.to_owned()))
    }
    fn array(&mut self) -> Result<Vec<Value>, Self::Error> {
        Ok(Vec::new())
    }
    fn push(&mut self, array: &mut Vec<Value>, value: Value) -> Result<(), Self::Error> {
        array.push(value);
        Ok(())
    }
    fn close_array(&mut self, array: Vec<Value>) -> Result<Value, Self::Error> {
        Ok(Value::Array(array))
    }
    fn object(&mut self) -> Result<ObjectBuf, Self::Error> {
        Ok(ObjectBuf::default())
    }
    fn insert(
        &mut self,
        object: &mut ObjectBuf,
        key: &str,
        value: Value,
    ) -> Result<(), Self::Error> {
        object.insert(key, value);
        Ok(())
    }
    fn close_object(&mut self, object: ObjectBuf) -> Result<Value, Self::Error> {
        Ok(Value::Object(object.members))
    }
    fn copy_array(&mut self, array: &Vec<Value>) -> Result<Vec<Value>, Self::Error> {
        Ok(array.clone())
    }
    fn copy_object(&mut self, object: &ObjectBuf) -> Result<ObjectBuf, Self::Error> {
        Ok(object.clone())
    }
    fn copy_value(&mut self, value: &Value) -> Result<Value, Self::Error> {
        Ok(value.clone())
    }
}

/// Where a number is in RFC 8259 section 6's grammar:
/// `[ minus ] ( "0" / digit1-9 *DIGIT ) [ "." 1*DIGIT ] [ ( "e" / "E" ) [ "+" / "-" ] 1*DIGIT ]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    ExpMark,
    ExpSign,
    Exp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must come next (start of text, after ':' or after ',' in an array).
    Value,
    /// Just after '[': a value or ']'.
    ArrayFirst,
    /// Just after '{': a key or '}'.
    ObjectFirst,
    /// After ',' in an object: a key.
    Key,
    /// After a key: ':'.
    Colon,
    /// After a value inside a container: ',' or the closing bracket.
    AfterValue,
    /// The top-level value is complete; only whitespace may follow.
    Done,
    /// Inside a string's plain text.
    Str,
    /// After a backslash.
    StrEscape,
    /// Inside `\uXXXX`: `n` hex digits read so far, their value in `acc`.
    StrHex {
        n: u8,
        acc: u16,
    },
    /// After a high surrogate escape: its low half must follow as `\uXXXX`.
    StrLowBackslash {
        high: u16,
    },
    StrLowU {
        high: u16,
    },
    StrLowHex {
        high: u16,
        n: u8,
        acc: u16,
    },
    /// Inside a multi-byte UTF-8 sequence cut by the end of a delta: `need` more continuation
    /// bytes, the next one within `lo..=hi` (excludes overlongs, surrogates, > U+10FFFF).
    StrUtf8 {
        need: u8,
        lo: u8,
        hi: u8,
    },
    Num(Num),
    /// Inside `true`, `false` or `null`; `pos` bytes matched.
    Lit {
        lit: Literal,
        pos: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Literal {
    True,
    False,
    Null,
}

impl Literal {
    fn text(self) -> &'static [u8] {
        match self {
            Literal::True => b"true",
            Literal::False => b"false",
            Literal::Null => b"null",
        }
    }
}

enum Frame<T: Tree> {
    /// `len` elements pushed so far: the index of the element being parsed.
    Array { array: T::Array, len: usize },
    /// `key` is set from the end of a key until its value completes.
    Object {
        object: T::Object,
        key: Option<String>,
    },
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn hex_value(b: u8) -> Option<u16> {
    match b {
        b'0'..=b'9' => Some(u16::from(b - b'0')),
        b'a'..=b'f' => Some(u16::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u16::from(b - b'A' + 10)),
        _ => None,
    }
}

/// The allowed range of the first continuation byte after `lead` (RFC 3629 section 4).
fn first_continuation(lead: u8) -> (u8, u8) {
    match lead {
        0xE0 => (0xA0, 0xBF),
        0xED => (0x80, 0x9F),
        0xF0 => (0x90, 0xBF),
        0xF4 => (0x80, 0x8F),
        _ => (0x80, 0xBF),
    }
}

/// A builder's failure becomes the stream's error, positioned where the value was being made.
fn build_failed(e: impl fmt::Display, offset: usize) -> JsonError {
    JsonError {
        offset,
        reason: Cow::Owned(e.to_string()),
    }
}

const DEPTH_REASON: &str = "nesting deeper than max_depth";

/// Incremental JSON parser producing values of the tree `T`.
///
/// Feed bytes with [`feed_with`](Parser::feed_with); ask for the value so far with
/// [`partial_with`](Parser::partial_with); end with [`finish_with`](Parser::finish_with).
/// After an error every further call returns that same error.
pub struct Parser<T: Tree> {
    state: State,
    stack: Vec<Frame<T>>,
    root: Option<T::Value>,
    /// Decoded text of the open string: always valid UTF-8, ends on a character boundary.
    text: String,
    /// True when the open string is an object key.
    text_is_key: bool,
    /// Bytes of a UTF-8 sequence cut by the end of a delta.
    utf8_tail: [u8; 4],
    utf8_len: u8,
    /// Offset of the backslash that began the current `\u` escape (for surrogate errors).
    escape_start: usize,
    number: String,
    number_start: usize,
    bytes_fed: usize,
    max_depth: usize,
    failed: Option<JsonError>,
    /// Multiple mode: top-level values follow one another; completed ones wait in `finished`.
    multiple: bool,
    finished: Vec<T::Value>,
    /// Top-level values completed so far (multiple mode: the next one's ordinal).
    documents: usize,
    /// Events mode: the builder hears value and delta events.
    events: bool,
    /// Bytes of the open string value already sent as delta events, and whether its first
    /// delta has been sent.
    delta_sent: usize,
    delta_started: bool,
}

/// Parser of plain Rust [`Value`]s, with builder-free convenience methods.
pub type JsonStream = Parser<ValueTree>;

impl JsonStream {
    /// Parse `delta` on top of what was fed before.
    pub fn feed(&mut self, delta: &[u8]) -> Result<(), JsonError> {
        self.feed_with(delta, &mut ValueBuilder)
    }

    /// The best value so far (see [`Parser::partial_with`]).
    pub fn partial(&self) -> Result<Option<Value>, JsonError> {
        self.partial_with(&mut ValueBuilder)
    }

    /// End of input: the complete value.
    pub fn finish(&mut self) -> Result<Value, JsonError> {
        self.finish_with(&mut ValueBuilder)
    }
}

impl<T: Tree> Parser<T> {
    pub fn new(max_depth: usize) -> Self {
        Parser {
            state: State::Value,
            stack: Vec::new(),
            root: None,
            text: String::new(),
            text_is_key: false,
            utf8_tail: [0; 4],
            utf8_len: 0,
            escape_start: 0,
            number: String::new(),
            number_start: 0,
            bytes_fed: 0,
            max_depth,
            failed: None,
            multiple: false,
            finished: Vec::new(),
            documents: 0,
            events: false,
            delta_sent: 0,
            delta_started: false,
        }
    }

    /// Multiple mode: accept any number of top-level values, one after the other, separated by
    /// whitespace or by nothing (`{"a":1}{"b":2}`, `[1]"x"`; two numbers need whitespace, as
    /// `12` is one number). Each value, once complete, waits for [`take_values`](Self::take_values);
    /// end with [`finish_all_with`](Self::finish_all_with).
    pub fn multiple(mut self, on: bool) -> Self {
        self.multiple = on;
        self
    }

    /// Events mode: call [`Builder::value_event`] and [`Builder::delta_event`] while parsing.
    pub fn events(mut self, on: bool) -> Self {
        self.events = on;
        self
    }

    pub fn is_multiple(&self) -> bool {
        self.multiple
    }

    pub fn has_events(&self) -> bool {
        self.events
    }

    /// Multiple mode: the top-level values completed since the last call, in order.
    pub fn take_values(&mut self) -> Vec<T::Value> {
        std::mem::take(&mut self.finished)
    }

    /// True while a value has started and is not complete (always false after single mode's
    /// value completes).
    pub fn value_open(&self) -> bool {
        let between_values = self.state == State::Value && self.stack.is_empty();
        self.state != State::Done && !between_values
    }

    /// Multiple mode's end of input: complete a trailing top-level number, then return the
    /// values not yet taken by [`take_values`](Self::take_values), or fail with "unexpected
    /// end of input" if a value is still open.
    pub fn finish_all_with<B: Builder<T>>(
        &mut self,
        b: &mut B,
    ) -> Result<Vec<T::Value>, JsonError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Err(e) = self.complete_trailing_number(b) {
            self.failed = Some(e.clone());
            return Err(e);
        }
        if self.value_open() {
            let e = JsonError::at(self.bytes_fed, "unexpected end of input");
            self.failed = Some(e.clone());
            return Err(e);
        }
        Ok(self.take_values())
    }

    fn complete_trailing_number<B: Builder<T>>(&mut self, b: &mut B) -> Result<(), JsonError> {
        if let State::Num(n) = self.state {
            if self.stack.is_empty() && matches!(n, Num::Zero | Num::Int | Num::Frac | Num::Exp) {
                let at = self.bytes_fed;
                self.complete_number(n, b, at)?;
            }
        }
        Ok(())
    }

    /// Total bytes passed to `feed_with` so far, including those of and after a failed delta.
    pub fn bytes_fed(&self) -> usize {
        self.bytes_fed
    }

    /// True once the complete top-level value has been parsed; in multiple mode, true while no
    /// value is open (between values, including before the first).
    pub fn done(&self) -> bool {
        self.failed.is_none()
            && if self.multiple {
                !self.value_open()
            } else {
                self.state == State::Done
            }
    }

    /// The error the stream failed with, if any.
    pub fn error(&self) -> Option<&JsonError> {
        self.failed.as_ref()
    }

    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Parse `delta`; errors as soon as the input can no longer be the prefix of a JSON text.
    pub fn feed_with<B: Builder<T>>(&mut self, delta: &[u8], b: &mut B) -> Result<(), JsonError> {
        let base = self.bytes_fed;
        self.bytes_fed += delta.len();
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.run(delta, base, b) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// End of input: complete a trailing top-level number, then return the value or fail with
    /// "unexpected end of input" at `bytes_fed`.
    pub fn finish_with<B: Builder<T>>(&mut self, b: &mut B) -> Result<T::Value, JsonError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Err(e) = self.complete_trailing_number(b) {
            self.failed = Some(e.clone());
            return Err(e);
        }
        match (&self.state, &self.root) {
            (State::Done, Some(root)) => b
                .copy_value(root)
                .map_err(|e| build_failed(e, self.bytes_fed)),
            _ => {
                let e = JsonError::at(self.bytes_fed, "unexpected end of input");
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The best value so far, or `None` before any value has started to show.
    ///
    /// Holds every complete element and member, and an open string value's text so far. An
    /// incomplete number or literal is left out (more digits may follow `12`), and so is a member
    /// whose key is incomplete or whose value has not started.
    pub fn partial_with<B: Builder<T>>(&self, b: &mut B) -> Result<Option<T::Value>, JsonError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let fail = |e: B::Error| JsonError {
            offset: self.bytes_fed,
            reason: Cow::Owned(e.to_string()),
        };
        if let Some(root) = &self.root {
            return b.copy_value(root).map(Some).map_err(fail);
        }
        let mut child = if self.in_string() && !self.text_is_key {
            Some(b.string(&self.text).map_err(fail)?)
        } else {
            None
        };
        for frame in self.stack.iter().rev() {
            child = Some(match frame {
                Frame::Array { array, .. } => {
                    let mut copy = b.copy_array(array).map_err(fail)?;
                    if let Some(c) = child {
                        b.push(&mut copy, c).map_err(fail)?;
                    }
                    b.close_array(copy).map_err(fail)?
                }
                Frame::Object { object, key } => {
                    let mut copy = b.copy_object(object).map_err(fail)?;
                    if let (Some(c), Some(k)) = (child, key) {
                        b.insert(&mut copy, k, c).map_err(fail)?;
                    }
                    b.close_object(copy).map_err(fail)?
                }
            });
        }
        Ok(child)
    }

    fn run<B: Builder<T>>(
        &mut self,
        input: &[u8],
        base: usize,
        b: &mut B,
    ) -> Result<(), JsonError> {
        let err = |i: usize, reason: &'static str| Err(JsonError::at(base + i, reason));
        let mut i = 0;
        while i < input.len() {
            let c = input[i];
            match self.state {
                State::Value | State::ArrayFirst => {
                    if is_ws(c) {
                        i += 1;
                        continue;
                    }
                    if c == b']' && self.state == State::ArrayFirst {
                        self.close(b, base + i)?;
                        i += 1;
                        continue;
                    }
                    match c {
                        b'{' | b'[' => {
                            if self.stack.len() >= self.max_depth {
                                return err(i, DEPTH_REASON);
                            }
                            let built = if c == b'{' {
                                b.object().map(|object| Frame::Object { object, key: None })
                            } else {
                                b.array().map(|array| Frame::Array { array, len: 0 })
                            };
                            self.stack
                                .push(built.map_err(|e| build_failed(e, base + i))?);
                            self.state = if c == b'{' {
                                State::ObjectFirst
                            } else {
                                State::ArrayFirst
                            };
                        }
                        b'"' => self.open_string(false),
                        b'-' | b'0'..=b'9' => {
                            self.number.clear();
                            self.number.push(c as char);
                            self.number_start = base + i;
                            self.state = State::Num(match c {
                                b'-' => Num::Minus,
                                b'0' => Num::Zero,
                                _ => Num::Int,
                            });
                        }
                        b't' => {
                            self.state = State::Lit {
                                lit: Literal::True,
                                pos: 1,
                            }
                        }
                        b'f' => {
                            self.state = State::Lit {
                                lit: Literal::False,
                                pos: 1,
                            }
                        }
                        b'n' => {
                            self.state = State::Lit {
                                lit: Literal::Null,
                                pos: 1,
                            }
                        }
                        0xEF if base + i == 0 => {
                            return err(i, "UTF-8 byte order mark is not allowed")
                        }
                        _ => return err(i, "expected a value"),
                    }
                    i += 1;
                }
                State::ObjectFirst | State::Key => {
                    if is_ws(c) {
                    } else if c == b'"' {
                        self.open_string(true);
                    } else if c == b'}' && self.state == State::ObjectFirst {
                        self.close(b, base + i)?;
                    } else if self.state == State::ObjectFirst {
                        return err(i, "expected a string key or '}'");
                    } else {
                        return err(i, "expected a string key");
                    }
                    i += 1;
                }
                State::Colon => {
                    if c == b':' {
                        self.state = State::Value;
                    } else if !is_ws(c) {
                        return err(i, "expected ':'");
                    }
                    i += 1;
                }
                State::AfterValue => {
                    if !is_ws(c) {
                        let is_array = matches!(self.stack.last(), Some(Frame::Array { .. }));
                        match (c, is_array) {
                            (b',', true) => self.state = State::Value,
                            (b',', false) => self.state = State::Key,
                            (b']', true) | (b'}', false) => self.close(b, base + i)?,
                            (_, true) => return err(i, "expected ',' or ']'"),
                            (_, false) => return err(i, "expected ',' or '}'"),
                        }
                    }
                    i += 1;
                }
                State::Done => {
                    if !is_ws(c) {
                        return err(i, "unexpected data after the JSON value");
                    }
                    i += 1;
                }
                State::Str => i = self.string_run(input, i, base, b)?,
                State::StrEscape => {
                    let decoded = match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            self.state = State::StrHex { n: 0, acc: 0 };
                            i += 1;
                            continue;
                        }
                        _ => return err(i, "invalid escape in string"),
                    };
                    self.text.push(decoded);
                    self.state = State::Str;
                    i += 1;
                }
                State::StrHex { n, acc } => {
                    let Some(d) = hex_value(c) else {
                        return err(i, "invalid \\u escape in string");
                    };
                    let acc = acc << 4 | d;
                    self.state = if n < 3 {
                        State::StrHex { n: n + 1, acc }
                    } else if (0xD800..0xDC00).contains(&acc) {
                        State::StrLowBackslash { high: acc }
                    } else if let Some(ch) = char::from_u32(u32::from(acc)) {
                        self.text.push(ch);
                        State::Str
                    } else {
                        return Err(JsonError::at(
                            self.escape_start,
                            "lone surrogate in \\u escape",
                        ));
                    };
                    i += 1;
                }
                State::StrLowBackslash { high } => {
                    if c != b'\\' {
                        return Err(JsonError::at(
                            self.escape_start,
                            "lone surrogate in \\u escape",
                        ));
                    }
                    self.state = State::StrLowU { high };
                    i += 1;
                }
                State::StrLowU { high } => {
                    if c != b'u' {
                        return Err(JsonError::at(
                            self.escape_start,
                            "lone surrogate in \\u escape",
                        ));
                    }
                    self.state = State::StrLowHex { high, n: 0, acc: 0 };
                    i += 1;
                }
                State::StrLowHex { high, n, acc } => {
                    let Some(d) = hex_value(c) else {
                        return err(i, "invalid \\u escape in string");
                    };
                    let acc = acc << 4 | d;
                    if n < 3 {
                        self.state = State::StrLowHex {
                            high,
                            n: n + 1,
                            acc,
                        };
                    } else if (0xDC00..0xE000).contains(&acc) {
                        let code = 0x10000
                            + ((u32::from(high) - 0xD800) << 10)
                            + (u32::from(acc) - 0xDC00);
                        self.text
                            .push(char::from_u32(code).expect("surrogate pair is a scalar value"));
                        self.state = State::Str;
                    } else {
                        return Err(JsonError::at(
                            self.escape_start,
                            "lone surrogate in \\u escape",
                        ));
                    }
                    i += 1;
                }
                State::StrUtf8 { need, lo, hi } => {
                    if !(lo..=hi).contains(&c) {
                        let start = base + i - usize::from(self.utf8_len);
                        return Err(JsonError::at(start, "invalid UTF-8 in string"));
                    }
                    self.utf8_tail[usize::from(self.utf8_len)] = c;
                    self.utf8_len += 1;
                    if need == 1 {
                        let seq = &self.utf8_tail[..usize::from(self.utf8_len)];
                        self.text
                            .push_str(std::str::from_utf8(seq).expect("checked byte by byte"));
                        self.utf8_len = 0;
                        self.state = State::Str;
                    } else {
                        self.state = State::StrUtf8 {
                            need: need - 1,
                            lo: 0x80,
                            hi: 0xBF,
                        };
                    }
                    i += 1;
                }
                State::Num(n) => {
                    let next = match (n, c) {
                        (Num::Int | Num::Frac | Num::Exp, b'0'..=b'9') => {
                            // Take the whole digit run at once: digits dominate number text.
                            let run = input[i..].iter().take_while(|d| d.is_ascii_digit()).count();
                            let digits =
                                std::str::from_utf8(&input[i..i + run]).expect("ASCII digits");
                            self.number.push_str(digits);
                            i += run;
                            continue;
                        }
                        (Num::Minus, b'0') => Num::Zero,
                        (Num::Minus, b'1'..=b'9') => Num::Int,
                        (Num::Minus, _) => return err(i, "expected a digit after '-'"),
                        (Num::Zero, b'0'..=b'9') => return err(i, "leading zeros are not allowed"),
                        (Num::Zero | Num::Int, b'.') => Num::Dot,
                        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::ExpMark,
                        (Num::Dot, b'0'..=b'9') => Num::Frac,
                        (Num::Dot, _) => return err(i, "expected a digit after '.'"),
                        (Num::ExpMark, b'+' | b'-') => Num::ExpSign,
                        (Num::ExpMark | Num::ExpSign, b'0'..=b'9') => Num::Exp,
                        (Num::ExpMark | Num::ExpSign, _) => {
                            return err(i, "expected a digit in the exponent")
                        }
                        (Num::Zero | Num::Int | Num::Frac | Num::Exp, _) => {
                            // The number ended at this byte, which belongs to what follows.
                            self.complete_number(n, b, base + i)?;
                            continue;
                        }
                    };
                    self.number.push(c as char);
                    self.state = State::Num(next);
                    i += 1;
                }
                State::Lit { lit, pos } => {
                    let text = lit.text();
                    if c != text[usize::from(pos)] {
                        return err(i, "invalid literal");
                    }
                    if usize::from(pos) + 1 == text.len() {
                        let v = match lit {
                            Literal::True => b.boolean(true),
                            Literal::False => b.boolean(false),
                            Literal::Null => b.null(),
                        };
                        let v = v.map_err(|e| build_failed(e, base + i))?;
                        self.complete_value(v, b, base + i)?;
                    } else {
                        self.state = State::Lit { lit, pos: pos + 1 };
                    }
                    i += 1;
                }
            }
        }
        if self.events && !self.text_is_key && self.in_string() {
            self.send_delta(b, base + input.len())?;
        }
        Ok(())
    }

    fn in_string(&self) -> bool {
        matches!(
            self.state,
            State::Str
                | State::StrEscape
                | State::StrHex { .. }
                | State::StrLowBackslash { .. }
                | State::StrLowU { .. }
                | State::StrLowHex { .. }
                | State::StrUtf8 { .. }
        )
    }

    /// Send the open string value's text since the last delta (and its first delta even if
    /// empty).
    fn send_delta<B: Builder<T>>(&mut self, b: &mut B, at: usize) -> Result<(), JsonError> {
        if self.delta_started && self.text.len() == self.delta_sent {
            return Ok(());
        }
        let path = Path {
            document: self.multiple.then_some(self.documents),
            frames: &self.stack,
        };
        b.delta_event(&path, &self.text[self.delta_sent..], !self.delta_started)
            .map_err(|e| build_failed(e, at))?;
        self.delta_sent = self.text.len();
        self.delta_started = true;
        Ok(())
    }

    fn open_string(&mut self, is_key: bool) {
        self.text.clear();
        self.text_is_key = is_key;
        self.delta_sent = 0;
        self.delta_started = false;
        self.state = State::Str;
    }

    /// Consume plain string text from `input[i..]` up to the next quote, backslash or control
    /// byte (found with memchr), validating UTF-8 in bulk; returns the next index.
    fn string_run<B: Builder<T>>(
        &mut self,
        input: &[u8],
        i: usize,
        base: usize,
        b: &mut B,
    ) -> Result<usize, JsonError> {
        let rest = &input[i..];
        let special = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        let control = rest[..special].iter().position(|&c| c < 0x20);
        let cut = control.unwrap_or(special);
        let seg = &rest[..cut];
        match std::str::from_utf8(seg) {
            Ok(s) => self.text.push_str(s),
            Err(e) => {
                let good = e.valid_up_to();
                // SAFETY: `valid_up_to` bytes were just validated as UTF-8 by `from_utf8`.
                self.text
                    .push_str(unsafe { std::str::from_utf8_unchecked(&seg[..good]) });
                // A sequence cut by the end of the delta may be completed by the next one; one
                // cut by a quote, backslash or control byte cannot.
                if e.error_len().is_some() || cut < rest.len() {
                    return Err(JsonError::at(base + i + good, "invalid UTF-8 in string"));
                }
                let tail = &seg[good..];
                self.utf8_tail[..tail.len()].copy_from_slice(tail);
                self.utf8_len = tail.len() as u8;
                let total = if tail[0] >= 0xF0 {
                    4
                } else if tail[0] >= 0xE0 {
                    3
                } else {
                    2
                };
                let (lo, hi) = if tail.len() == 1 {
                    first_continuation(tail[0])
                } else {
                    (0x80, 0xBF)
                };
                self.state = State::StrUtf8 {
                    need: (total - tail.len()) as u8,
                    lo,
                    hi,
                };
                return Ok(input.len());
            }
        }
        let at = i + cut;
        if cut == rest.len() {
            return Ok(at);
        }
        if control.is_some() {
            return Err(JsonError::at(base + at, "control character in string"));
        }
        if rest[cut] == b'\\' {
            self.escape_start = base + at;
            self.state = State::StrEscape;
            return Ok(at + 1);
        }
        if self.text_is_key {
            match self.stack.last_mut() {
                Some(Frame::Object { key, .. }) => *key = Some(std::mem::take(&mut self.text)),
                _ => unreachable!("a key is only read inside an object"),
            }
            self.state = State::Colon;
        } else {
            if self.events {
                self.send_delta(b, base + at)?;
            }
            let v = b
                .string(&self.text)
                .map_err(|e| build_failed(e, base + at))?;
            self.complete_value(v, b, base + at)?;
        }
        Ok(at + 1)
    }

    fn complete_number<B: Builder<T>>(
        &mut self,
        n: Num,
        b: &mut B,
        at: usize,
    ) -> Result<(), JsonError> {
        let number = Number {
            text: self.number.as_str().into(),
            is_integer: matches!(n, Num::Zero | Num::Int),
        };
        let v = b
            .number(&number)
            .map_err(|e| build_failed(e, self.number_start))?;
        self.complete_value(v, b, at)
    }

    /// Attach a finished value to the innermost open container, or make it the root.
    fn complete_value<B: Builder<T>>(
        &mut self,
        v: T::Value,
        b: &mut B,
        at: usize,
    ) -> Result<(), JsonError> {
        if self.events {
            let path = Path {
                document: self.multiple.then_some(self.documents),
                frames: &self.stack,
            };
            b.value_event(&path, &v).map_err(|e| build_failed(e, at))?;
        }
        let attached = match self.stack.last_mut() {
            None => {
                self.documents += 1;
                if self.multiple {
                    self.finished.push(v);
                    self.state = State::Value;
                } else {
                    self.root = Some(v);
                    self.state = State::Done;
                }
                return Ok(());
            }
            Some(Frame::Array { array, len }) => {
                *len += 1;
                b.push(array, v)
            }
            Some(Frame::Object { object, key }) => {
                let k = key.take().expect("a member's value follows its key");
                b.insert(object, &k, v)
            }
        };
        attached.map_err(|e| build_failed(e, at))?;
        self.state = State::AfterValue;
        Ok(())
    }

    fn close<B: Builder<T>>(&mut self, b: &mut B, at: usize) -> Result<(), JsonError> {
        let closed = match self.stack.pop().expect("closing an open container") {
            Frame::Array { array, .. } => b.close_array(array),
            Frame::Object { object, .. } => b.close_object(object),
        };
        let v = closed.map_err(|e| build_failed(e, at))?;
        self.complete_value(v, b, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(input: &[u8]) -> Result<Value, JsonError> {
        let mut p = JsonStream::new(512);
        p.feed(input)?;
        p.finish()
    }

    fn chunked(input: &[u8], cuts: &[usize]) -> Result<Value, JsonError> {
        let mut p = JsonStream::new(512);
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed(&input[start..cut])?;
            start = cut;
        }
        p.finish()
    }

    fn num(text: &str) -> Value {
        let is_integer = !text.contains(['.', 'e', 'E']);
        Value::Number(Number {
            text: text.into(),
            is_integer,
        })
    }

    fn s(text: &str) -> Value {
        Value::String(text.to_owned())
    }

    fn obj(members: Vec<(&str, Value)>) -> Value {
        Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }

    fn partial_after(input: &str) -> Option<Value> {
        let mut p = JsonStream::new(512);
        p.feed(input.as_bytes()).unwrap();
        p.partial().unwrap()
    }

    /// Every 2-way split and 1-byte deltas give the same outcome (value, or error and offset)
    /// as the whole input.
    fn assert_split_invariant(input: &[u8]) -> Result<Value, JsonError> {
        let expected = whole(input);
        for cut in 0..=input.len() {
            assert_eq!(
                chunked(input, &[cut]),
                expected,
                "split at {cut} of {input:?}"
            );
        }
        let singles: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            chunked(input, &singles),
            expected,
            "1-byte deltas of {input:?}"
        );
        expected
    }

    #[test]
    fn accepts_scalars_and_containers() {
        assert_eq!(whole(b"null"), Ok(Value::Null));
        assert_eq!(whole(b" true\n"), Ok(Value::Bool(true)));
        assert_eq!(whole(b"false"), Ok(Value::Bool(false)));
        assert_eq!(whole(b"-0"), Ok(num("-0")));
        assert_eq!(whole(b"123"), Ok(num("123")));
        assert_eq!(whole(b"-12.5e+3"), Ok(num("-12.5e+3")));
        assert_eq!(whole(b"0E-7"), Ok(num("0E-7")));
        assert_eq!(whole(b"[]"), Ok(Value::Array(vec![])));
        assert_eq!(whole(b"{}"), Ok(obj(vec![])));
        assert_eq!(
            whole(br#" {"a" : [1, {"b": null}], "c": "d"} "#),
            Ok(obj(vec![
                (
                    "a",
                    Value::Array(vec![num("1"), obj(vec![("b", Value::Null)])])
                ),
                ("c", s("d")),
            ]))
        );
    }

    #[test]
    fn string_escapes_and_surrogate_pairs() {
        assert_eq!(
            whole(br#""\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00\u0000""#),
            Ok(s("\"\\/\u{8}\u{c}\n\r\tA\u{e9}\u{1F600}\u{0}"))
        );
        assert_eq!(
            whole("\"h\u{e9}\u{1F600}\"".as_bytes()),
            Ok(s("h\u{e9}\u{1F600}"))
        );
    }

    #[test]
    fn lone_and_inverted_surrogates_are_rejected_at_the_escape() {
        for (input, offset) in [
            (&br#"["\ud800"]"#[..], 2),
            (br#"["ab\uDFAA"]"#, 4),
            (br#"["\uD800\n"]"#, 2),
            (br#"["\uD888\u1234"]"#, 2),
            (br#"["\uDd1e\uD834"]"#, 2),
            (br#"["\ud800abc"]"#, 2),
        ] {
            let e = assert_split_invariant(input).unwrap_err();
            assert_eq!(
                (e.offset, &*e.reason),
                (offset, "lone surrogate in \\u escape"),
                "{input:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_is_rejected_even_across_deltas() {
        for (input, offset) in [
            (&b"[\"\xff\"]"[..], 2),
            (b"[\"ab\xc0\xaf\"]", 4),
            (b"[\"\xed\xa0\x80\"]", 2),
            (b"[\"\xf4\x90\x80\x80\"]", 2),
            (b"[\"\xe6\x97\xa5\xd1\x88\xfa\"]", 7),
            (b"[\"\xe0\xff\"]", 2),
            (b"[\"\xe2\x82\"]", 2),
            (b"\"\xe2\x82", 1),
        ] {
            let e = assert_split_invariant(input).unwrap_err();
            let expected_reason = if input.len() == 3 {
                "unexpected end of input"
            } else {
                "invalid UTF-8 in string"
            };
            if input.len() == 3 {
                assert_eq!(e.offset, 3, "{input:?}");
            } else {
                assert_eq!(e.offset, offset, "{input:?}");
            }
            assert_eq!(e.reason, expected_reason, "{input:?}");
        }
    }

    #[test]
    fn multibyte_code_point_split_across_deltas() {
        let text = "[\"\u{e9}\u{20ac}\u{1F600}\"]".as_bytes();
        let v = assert_split_invariant(text).unwrap();
        assert_eq!(v, Value::Array(vec![s("\u{e9}\u{20ac}\u{1F600}")]));
    }

    #[test]
    fn rejects_what_rfc_8259_forbids() {
        for (input, offset, reason) in [
            (&b"[1,]"[..], 3, "expected a value"),
            (b"01", 1, "leading zeros are not allowed"),
            (b"+1", 0, "expected a value"),
            (b".5", 0, "expected a value"),
            (b"[1.]", 3, "expected a digit after '.'"),
            (b"[1e]", 3, "expected a digit in the exponent"),
            (b"[-]", 2, "expected a digit after '-'"),
            (b"NaN", 0, "expected a value"),
            (b"[Infinity]", 1, "expected a value"),
            (b"[tru]", 4, "invalid literal"),
            (b"\xef\xbb\xbf{}", 0, "UTF-8 byte order mark is not allowed"),
            (b"{\"a\" 1}", 5, "expected ':'"),
            (b"{\"a\":1,}", 7, "expected a string key"),
            (b"{1:1}", 1, "expected a string key or '}'"),
            (b"[1 2]", 3, "expected ',' or ']'"),
            (b"{\"a\":1 \"b\"}", 7, "expected ',' or '}'"),
            (b"[\"a\tb\"]", 3, "control character in string"),
            (b"[\"\\x\"]", 3, "invalid escape in string"),
            (b"[\"\\u12g4\"]", 6, "invalid \\u escape in string"),
            (b"[1] x", 4, "unexpected data after the JSON value"),
            (b"1 2", 2, "unexpected data after the JSON value"),
            (b"[\x0c]", 1, "expected a value"),
            (b"", 0, "unexpected end of input"),
            (b"  ", 2, "unexpected end of input"),
            (b"[1", 2, "unexpected end of input"),
            (b"\"abc", 4, "unexpected end of input"),
        ] {
            let e = assert_split_invariant(input).unwrap_err();
            assert_eq!(
                (e.offset, &*e.reason),
                (offset, reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(e.to_string(), format!("{reason} at byte {offset}"));
        }
    }

    #[test]
    fn numbers_keep_their_text() {
        let v = whole(b"[123123e100000, 100000000000000000000, 1.000000000000000005]").unwrap();
        let Value::Array(items) = &v else {
            panic!("not an array: {v:?}")
        };
        let Value::Number(overflow) = &items[0] else {
            panic!()
        };
        assert_eq!(overflow.as_f64(), f64::INFINITY);
        assert!(!overflow.is_integer());
        let Value::Number(big) = &items[1] else {
            panic!()
        };
        assert_eq!(
            (big.text(), big.is_integer(), big.as_i64()),
            ("100000000000000000000", true, None)
        );
        let Value::Number(close) = &items[2] else {
            panic!()
        };
        assert_eq!(close.as_f64(), 1.0);
        assert_eq!(whole(b"[-123]").unwrap(), Value::Array(vec![num("-123")]));
    }

    #[test]
    fn duplicate_keys_last_wins_at_first_position() {
        assert_eq!(
            whole(br#"{"a": 1, "b": 2, "a": 3}"#),
            Ok(obj(vec![("a", num("3")), ("b", num("2"))]))
        );
        // Past the size where the key index takes over from the linear scan.
        let members: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        let text = format!(
            "{{{}, \"k7\": \"last\", \"k39\": null}}",
            members.join(", ")
        );
        let v = whole(text.as_bytes()).unwrap();
        let Value::Object(got) = &v else {
            panic!("not an object: {v:?}")
        };
        assert_eq!(got.len(), 40);
        assert_eq!(got[7], ("k7".to_owned(), s("last")));
        assert_eq!(got[39], ("k39".to_owned(), Value::Null));
    }

    #[test]
    fn partial_examples() {
        assert_eq!(partial_after(""), None);
        assert_eq!(partial_after("  "), None);
        assert_eq!(partial_after("12"), None);
        assert_eq!(partial_after("\"hel"), Some(s("hel")));
        assert_eq!(partial_after("{"), Some(obj(vec![])));
        assert_eq!(partial_after("{\"a"), Some(obj(vec![])));
        assert_eq!(partial_after("{\"a\""), Some(obj(vec![])));
        assert_eq!(partial_after("{\"a\": "), Some(obj(vec![])));
        assert_eq!(partial_after("{\"a\": 12"), Some(obj(vec![])));
        assert_eq!(partial_after("{\"a\": tru"), Some(obj(vec![])));
        assert_eq!(
            partial_after("{\"a\": true"),
            Some(obj(vec![("a", Value::Bool(true))]))
        );
        assert_eq!(
            partial_after("{\"a\": \"hel"),
            Some(obj(vec![("a", s("hel"))]))
        );
        assert_eq!(
            partial_after("{\"a\": \"h\\u00e"),
            Some(obj(vec![("a", s("h"))]))
        );
        assert_eq!(
            partial_after("{\"a\": \"h\\ud83d"),
            Some(obj(vec![("a", s("h"))]))
        );
        assert_eq!(
            partial_after("[1, 2, "),
            Some(Value::Array(vec![num("1"), num("2")]))
        );
        assert_eq!(partial_after("[1, 2"), Some(Value::Array(vec![num("1")])));
        assert_eq!(
            partial_after("{\"a\": [1, {\"b\": [\"x"),
            Some(obj(vec![(
                "a",
                Value::Array(vec![num("1"), obj(vec![("b", Value::Array(vec![s("x")]))])])
            )]))
        );
        assert_eq!(partial_after("[1] "), Some(Value::Array(vec![num("1")])));
    }

    #[test]
    fn partial_of_a_split_code_point_holds_only_whole_characters() {
        let mut p = JsonStream::new(8);
        p.feed(b"[\"a\xe2\x82").unwrap();
        assert_eq!(p.partial(), Ok(Some(Value::Array(vec![s("a")]))));
        p.feed(b"\xac\"]").unwrap();
        assert_eq!(p.partial(), Ok(Some(Value::Array(vec![s("a\u{20ac}")]))));
    }

    #[test]
    fn top_level_number_is_completed_by_whitespace_or_finish() {
        let mut p = JsonStream::new(8);
        p.feed(b"42").unwrap();
        assert!(!p.done());
        assert_eq!(p.finish(), Ok(num("42")));
        assert!(p.done());
        let mut p = JsonStream::new(8);
        p.feed(b"42 ").unwrap();
        assert!(p.done());
        assert_eq!(p.partial(), Ok(Some(num("42"))));
    }

    #[test]
    fn stays_failed_after_an_error() {
        let mut p = JsonStream::new(8);
        let e = p.feed(b"[1,]").unwrap_err();
        assert_eq!(p.feed(b"2]"), Err(e.clone()));
        assert_eq!(p.partial(), Err(e.clone()));
        assert_eq!(p.finish(), Err(e));
        assert_eq!(p.bytes_fed(), 6);
    }

    #[test]
    fn trailing_garbage_after_done_fails_at_feed_time() {
        let mut p = JsonStream::new(8);
        p.feed(b"{} \n").unwrap();
        assert!(p.done());
        p.feed(b"\t ").unwrap();
        let e = p.feed(b" x").unwrap_err();
        assert_eq!(
            (e.offset, &*e.reason),
            (7, "unexpected data after the JSON value")
        );
        assert!(!p.done());
    }

    #[test]
    fn depth_limit() {
        let ok = "[".repeat(4) + &"]".repeat(4);
        let mut p = JsonStream::new(4);
        p.feed(ok.as_bytes()).unwrap();
        assert!(p.finish().is_ok());
        let mut p = JsonStream::new(4);
        let e = p.feed(b"[{\"a\":[[[").unwrap_err();
        assert_eq!((e.offset, &*e.reason), (8, DEPTH_REASON));
        let mut p = JsonStream::new(512);
        let e = p.feed("[".repeat(100_000).as_bytes()).unwrap_err();
        assert_eq!((e.offset, &*e.reason), (512, DEPTH_REASON));
    }

    #[test]
    fn deep_values_parse_clone_compare_and_drop_without_recursion() {
        // Run on a small stack so any per-level recursion would overflow it.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let depth = 100_000;
                let text = "[{\"k\":".repeat(depth) + "1" + &"}]".repeat(depth);
                let mut p = JsonStream::new(2 * depth);
                p.feed(text.as_bytes()).unwrap();
                let partial = p.partial().unwrap().unwrap();
                let v = p.finish().unwrap();
                let copy = v.clone();
                assert!(copy == v);
                assert!(partial == v);
                drop(copy);
                drop(v);
                // A parser dropped half-way drops its open frames without recursion too.
                let mut open = JsonStream::new(2 * depth);
                open.feed(&text.as_bytes()[..text.len() / 2]).unwrap();
                drop(open);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn every_split_point_of_a_realistic_document() {
        let doc = r#"{"path": "src/main.py", "content": "line1\nline2 \u00e9 \ud83d\ude00 é😀", "n": [1, 2.5, -3e2, true, false, null, {}, []], "deep": {"a": {"b": [0.0e0]}}}"#;
        assert_split_invariant(doc.as_bytes()).unwrap();
    }

    // --- property test: serialize random values, feed them in random chunks ---

    fn arb_number() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,25}"],
            proptest::option::of("[0-9]{1,20}"),
            proptest::option::of(("[eE]", "[+-]?", "[0-9]{1,4}")),
        )
            .prop_map(|(neg, int, frac, exp)| {
                let mut t = String::new();
                if neg {
                    t.push('-');
                }
                t.push_str(&int);
                if let Some(f) = frac {
                    t.push('.');
                    t.push_str(&f);
                }
                if let Some((e, sign, digits)) = exp {
                    t.push_str(&e);
                    t.push_str(&sign);
                    t.push_str(&digits);
                }
                t
            })
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            arb_number().prop_map(|t| num(&t)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                // Unique keys: with duplicates the parsed value legitimately differs.
                proptest::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Serialize with varied whitespace and escapes chosen by `style` bits.
    fn write(v: &Value, style: &mut impl Iterator<Item = u8>, out: &mut String) {
        let ws =
            |out: &mut String, style: &mut dyn Iterator<Item = u8>| match style.next().unwrap_or(0)
                % 8
            {
                0 => out.push(' '),
                1 => out.push_str("\n\t"),
                2 => out.push('\r'),
                _ => {}
            };
        ws(out, style);
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => out.push_str(n.text()),
            Value::String(t) => write_str(t, style, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, style, out);
                }
                ws(out, style);
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (k, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    ws(out, style);
                    write_str(k, style, out);
                    ws(out, style);
                    out.push(':');
                    write(item, style, out);
                }
                ws(out, style);
                out.push('}');
            }
        }
        ws(out, style);
    }

    fn write_str(t: &str, style: &mut impl Iterator<Item = u8>, out: &mut String) {
        out.push('"');
        for ch in t.chars() {
            let escape_anyway = style.next().unwrap_or(0).is_multiple_of(4);
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' if !escape_anyway => out.push_str("\\n"),
                c if (c as u32) < 0x20 || escape_anyway => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn random_values_in_random_chunks_parse_back(
            v in arb_value(),
            style in proptest::collection::vec(any::<u8>(), 0..256),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let mut text = String::new();
            write(&v, &mut style.into_iter().cycle(), &mut text);
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let got = chunked(bytes, &cuts);
            prop_assert_eq!(got, Ok(v));
        }
    }

    // --- events ---

    /// Records events as text: `value <path> <value>` / `delta <path> <text>`.
    #[derive(Default)]
    struct Recorder {
        log: Vec<(String, String, Option<Value>, String)>,
    }

    fn path_text(path: &Path<'_, ValueTree>) -> String {
        let mut out = String::new();
        if let Some(d) = path.document() {
            out.push_str(&format!("#{d}"));
        }
        for seg in path.segments() {
            match seg {
                PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
                PathSeg::Key(k) => out.push_str(&format!(".{k}")),
            }
        }
        out
    }

    impl Builder<ValueTree> for Recorder {
        type Error = std::convert::Infallible;
        fn null(&mut self) -> Result<Value, Self::Error> {
            ValueBuilder.null()
        }
        fn boolean(&mut self, value: bool) -> Result<Value, Self::Error> {
            ValueBuilder.boolean(value)
        }
        fn number(&mut self, number: &Number) -> Result<Value, Self::Error> {
            ValueBuilder.number(number)
        }
        fn string(&mut self, text: &str) -> Result<Value, Self::Error> {
            ValueBuilder.string(text)
        }
        fn array(&mut self) -> Result<Vec<Value>, Self::Error> {
            ValueBuilder.array()
        }
        fn push(&mut self, array: &mut Vec<Value>, value: Value) -> Result<(), Self::Error> {
            ValueBuilder.push(array, value)
        }
        fn close_array(&mut self, array: Vec<Value>) -> Result<Value, Self::Error> {
            ValueBuilder.close_array(array)
        }
        fn object(&mut self) -> Result<ObjectBuf, Self::Error> {
            ValueBuilder.object()
        }
        fn insert(
            &mut self,
            o: &mut ObjectBuf,
            key: &str,
            value: Value,
        ) -> Result<(), Self::Error> {
            ValueBuilder.insert(o, key, value)
        }
        fn close_object(&mut self, object: ObjectBuf) -> Result<Value, Self::Error> {
            ValueBuilder.close_object(object)
        }
        fn copy_array(&mut self, array: &Vec<Value>) -> Result<Vec<Value>, Self::Error> {
            ValueBuilder.copy_array(array)
        }
        fn copy_object(&mut self, object: &ObjectBuf) -> Result<ObjectBuf, Self::Error> {
            ValueBuilder.copy_object(object)
        }
        fn copy_value(&mut self, value: &Value) -> Result<Value, Self::Error> {
            ValueBuilder.copy_value(value)
        }
        fn value_event(
            &mut self,
            path: &Path<'_, ValueTree>,
            value: &Value,
        ) -> Result<(), Self::Error> {
            self.log.push((
                "value".into(),
                path_text(path),
                Some(value.clone()),
                String::new(),
            ));
            Ok(())
        }
        fn delta_event(
            &mut self,
            path: &Path<'_, ValueTree>,
            text: &str,
            first: bool,
        ) -> Result<(), Self::Error> {
            let kind = if first { "delta0" } else { "delta" };
            self.log
                .push((kind.into(), path_text(path), None, text.to_owned()));
            Ok(())
        }
    }

    /// Events of `input` fed in pieces cut at `cuts`, with the deltas of each string merged
    /// (so the result does not depend on the cuts) and checked to start with one first delta.
    fn merged_events(
        input: &[u8],
        cuts: &[usize],
        multiple: bool,
    ) -> Vec<(String, String, String)> {
        let mut p = Parser::<ValueTree>::new(64).events(true).multiple(multiple);
        let mut rec = Recorder::default();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed_with(&input[start..cut], &mut rec).unwrap();
            start = cut;
        }
        if multiple {
            p.finish_all_with(&mut rec).unwrap();
        } else {
            p.finish_with(&mut rec).unwrap();
        }
        let mut out: Vec<(String, String, String)> = Vec::new();
        for (kind, path, value, text) in rec.log {
            match kind.as_str() {
                "delta0" => out.push(("delta".into(), path, text)),
                "delta" => {
                    let last = out.last_mut().expect("a first delta came before");
                    assert_eq!((last.0.as_str(), &last.1), ("delta", &path));
                    last.2.push_str(&text);
                }
                _ => out.push((kind, path, format!("{:?}", value.unwrap()))),
            }
        }
        out
    }

    fn ev(kind: &str, path: &str, v: &str) -> (String, String, String) {
        (kind.into(), path.into(), v.into())
    }

    #[test]
    fn events_of_a_tool_call_at_every_split() {
        let doc = r#"{"path": "a\u00e9", "n": [1, {"k": null}, ""], "t": true}"#.as_bytes();
        let expected = vec![
            ev("delta", ".path", "a\u{e9}"),
            ev("value", ".path", "String(\"a\u{e9}\")"),
            ev("value", ".n[0]", "Number(Number { text: \"1\", is_integer: true })"),
            ev("value", ".n[1].k", "Null"),
            ev("value", ".n[1]", "Object([(\"k\", Null)])"),
            ev("delta", ".n[2]", ""),
            ev("value", ".n[2]", "String(\"\")"),
            ev(
                "value",
                ".n",
                "Array([Number(Number { text: \"1\", is_integer: true }), Object([(\"k\", Null)]), String(\"\")])",
            ),
            ev("value", ".t", "Bool(true)"),
        ];
        let all = merged_events(doc, &[], false);
        assert_eq!(&all[..expected.len()], &expected[..]);
        assert_eq!(all.len(), expected.len() + 1);
        assert_eq!((all[9].0.as_str(), all[9].1.as_str()), ("value", ""));
        for cut in 0..=doc.len() {
            assert_eq!(merged_events(doc, &[cut], false), all, "split at {cut}");
        }
        let singles: Vec<usize> = (1..doc.len()).collect();
        assert_eq!(merged_events(doc, &singles, false), all);
    }

    #[test]
    fn first_delta_comes_in_the_feed_that_opens_the_string_and_keys_are_silent() {
        let mut p = Parser::<ValueTree>::new(8).events(true);
        let mut rec = Recorder::default();
        p.feed_with(b"{\"ke", &mut rec).unwrap();
        p.feed_with(b"y\": \"", &mut rec).unwrap();
        assert_eq!(rec.log.len(), 1);
        assert_eq!(
            (
                rec.log[0].0.as_str(),
                rec.log[0].1.as_str(),
                rec.log[0].3.as_str()
            ),
            ("delta0", ".key", "")
        );
        p.feed_with(b"ab", &mut rec).unwrap();
        p.feed_with(b"\\u00", &mut rec).unwrap(); // half an escape: no new text, no event
        p.feed_with(b"e9", &mut rec).unwrap();
        let texts: Vec<_> = rec
            .log
            .iter()
            .map(|e| (e.0.as_str(), e.3.as_str()))
            .collect();
        assert_eq!(
            texts,
            [("delta0", ""), ("delta", "ab"), ("delta", "\u{e9}")]
        );
    }

    #[test]
    fn events_off_by_default() {
        let mut p = Parser::<ValueTree>::new(8);
        let mut rec = Recorder::default();
        p.feed_with(b"{\"a\": [\"x\", 1]}", &mut rec).unwrap();
        assert!(rec.log.is_empty());
    }

    // --- multiple mode ---

    fn all_values(input: &[u8], cuts: &[usize]) -> Result<Vec<Value>, JsonError> {
        let mut p = JsonStream::new(64).multiple(true);
        let mut got = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed(&input[start..cut])?;
            got.extend(p.take_values());
            start = cut;
        }
        got.extend(p.finish_all_with(&mut ValueBuilder)?);
        Ok(got)
    }

    #[test]
    fn multiple_values_with_and_without_separators() {
        let input = b"{\"a\":1}{\"b\":[2]}\n[3] \"x\"\"y\"\r\n4 -5.5\ttrue null[]{}7";
        let expected = vec![
            obj(vec![("a", num("1"))]),
            obj(vec![("b", Value::Array(vec![num("2")]))]),
            Value::Array(vec![num("3")]),
            s("x"),
            s("y"),
            num("4"),
            num("-5.5"),
            Value::Bool(true),
            Value::Null,
            Value::Array(vec![]),
            obj(vec![]),
            num("7"),
        ];
        assert_eq!(all_values(input, &[]), Ok(expected.clone()));
        for cut in 0..=input.len() {
            assert_eq!(
                all_values(input, &[cut]),
                Ok(expected.clone()),
                "split at {cut}"
            );
        }
        assert_eq!(all_values(b"", &[]), Ok(vec![]));
        assert_eq!(all_values(b" \n ", &[]), Ok(vec![]));
    }

    #[test]
    fn multiple_values_are_handed_over_as_they_complete() {
        let mut p = JsonStream::new(64).multiple(true);
        assert!(p.done());
        p.feed(b"{\"a\": 1}\n{\"b\"").unwrap();
        assert_eq!(p.take_values(), vec![obj(vec![("a", num("1"))])]);
        assert!(!p.done());
        assert_eq!(p.partial(), Ok(Some(obj(vec![]))));
        p.feed(b": 2}\n12").unwrap();
        assert_eq!(p.take_values(), vec![obj(vec![("b", num("2"))])]);
        assert!(p.take_values().is_empty());
        assert_eq!(p.finish_all_with(&mut ValueBuilder), Ok(vec![num("12")]));
    }

    #[test]
    fn multiple_mode_errors() {
        let e = all_values(b"{\"a\":1}\n{\"b\":", &[]).unwrap_err();
        assert_eq!((e.offset, &*e.reason), (13, "unexpected end of input"));
        let e = all_values(b"[1] ]", &[]).unwrap_err();
        assert_eq!((e.offset, &*e.reason), (4, "expected a value"));
        let e = all_values(b"1 \xef\xbb\xbf", &[]).unwrap_err();
        assert_eq!((e.offset, &*e.reason), (2, "expected a value"));
    }

    #[test]
    fn multiple_mode_event_paths_start_with_the_document_ordinal() {
        let got = merged_events(b"{\"a\":\"x\"} [true]", &[], true);
        assert_eq!(
            got,
            vec![
                ev("delta", "#0.a", "x"),
                ev("value", "#0.a", "String(\"x\")"),
                ev("value", "#0", "Object([(\"a\", String(\"x\"))])"),
                ev("value", "#1[0]", "Bool(true)"),
                ev("value", "#1", "Array([Bool(true)])"),
            ]
        );
    }

    // --- differential against serde_json ---

    fn to_serde(v: &Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::from_str(n.text()).expect("a valid number"),
            Value::String(t) => serde_json::Value::String(t.clone()),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), to_serde(v)))
                    .collect(),
            ),
        }
    }

    fn arb_serde() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| serde_json::json!(i)),
            any::<u64>().prop_map(|i| serde_json::json!(i)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::json!(f)),
            arb_number().prop_map(|t| serde_json::from_str(&t).unwrap()),
            any::<String>().prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(8, 96, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                proptest::collection::vec((any::<String>(), inner), 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Bytes that make interesting mutations of a JSON text.
    const MUTATION_BYTES: &[u8] = b"\"\\{}[],:0123456789-+.eEtrufalsn \t\n\r\x00\x1f\x7fu\xc3\xa9\xed\xa0\x80\xef\xbb\xbf\xff";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn agrees_with_serde_json_on_its_own_output(
            v in arb_serde(),
            pretty in any::<bool>(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let got = chunked(bytes, &cuts).map(|v| to_serde(&v));
            prop_assert_eq!(got, Ok(serde_json::from_slice::<serde_json::Value>(bytes).unwrap()));
        }

        #[test]
        fn accepts_and_rejects_mutated_text_like_serde_json(
            v in arb_serde(),
            edits in proptest::collection::vec(
                (any::<proptest::sample::Index>(), any::<bool>(), any::<proptest::sample::Index>()),
                1..4,
            ),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            for (at, insert, byte) in edits {
                let byte = MUTATION_BYTES[byte.index(MUTATION_BYTES.len())];
                if insert || bytes.is_empty() {
                    let at = at.index(bytes.len() + 1);
                    bytes.insert(at, byte);
                } else {
                    let at = at.index(bytes.len());
                    bytes.remove(at);
                }
            }
            let ours = chunked(&bytes, &[cut.index(bytes.len() + 1)]);
            let theirs = serde_json::from_slice::<serde_json::Value>(&bytes);
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(&to_serde(a), b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "ours {:?} vs serde_json {:?} on {:?}", ours, theirs, String::from_utf8_lossy(&bytes)),
            }
        }

        #[test]
        fn events_do_not_depend_on_the_cuts(
            v in arb_value(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let mut text = String::new();
            write(&v, &mut std::iter::repeat(1u8), &mut text);
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(merged_events(bytes, &cuts, false), merged_events(bytes, &[], false));
        }
    }
}
