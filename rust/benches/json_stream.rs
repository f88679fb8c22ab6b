//! Criterion benches of the incremental JSON parser on tool-call arguments streamed in deltas.
//!
//! The documents are `{"path", "content", "edits"}` objects built from this crate's own sources
//! (escapes, some non-ASCII text, nested edit records) at about 1 KB, 10 KB and 100 KB, cut into
//! seeded deltas of 1-8 bytes, as a model streams them. Two groups, the parameter being the size:
//! - `json feed per delta`: `feed` every delta (Rust values built, no events);
//! - `json feed+events per delta`: the same with events on (a builder that counts them).
//!
//! `serde_json` parsing the whole document once is in both as a reference (it is not
//! incremental). Throughput is in deltas, so criterion reports the cost per delta. Every case
//! checks its result against serde_json's before it is timed.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raygent_native::json_stream::{
    Builder, JsonStream, Number, ObjectBuf, Parser, Path, Value, ValueBuilder, ValueTree,
};

const SOURCES: &[(&str, &str)] = &[
    (
        "rust/src/json_stream.rs",
        include_str!("../src/json_stream.rs"),
    ),
    ("rust/src/ansi.rs", include_str!("../src/ansi.rs")),
    ("rust/src/py_json.rs", include_str!("../src/py_json.rs")),
    ("rust/src/pool.rs", include_str!("../src/pool.rs")),
];

fn edits(corpus: &str, budget: usize) -> serde_json::Value {
    let mut out = Vec::new();
    let mut size = 0;
    for (i, line) in corpus.lines().enumerate() {
        if size >= budget {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let edit = serde_json::json!({
            "range": {"start": {"line": i + 1, "column": 0}, "end": {"line": i + 1, "column": line.len()}},
            "old": line,
            "new": format!("{}  // revisé → ok", line.replace("self", "this")),
            "tags": ["refactor", {"reason": "naming", "confidence": 0.875, "automatic": i % 2 == 0}],
        });
        size += edit.to_string().len();
        out.push(edit);
    }
    serde_json::Value::Array(out)
}

/// A document of at most `nbytes` bytes (within 1%).
fn document(nbytes: usize) -> String {
    let corpus: String = SOURCES.iter().map(|(_, t)| *t).collect();
    let edits = edits(&corpus, nbytes / 4);
    let build = |n: usize| {
        let mut end = n.min(corpus.len());
        while !corpus.is_char_boundary(end) {
            end -= 1;
        }
        serde_json::json!({"path": SOURCES[0].0, "content": &corpus[..end], "edits": edits})
            .to_string()
    };
    let (mut lo, mut hi) = (0, corpus.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if build(mid).len() <= nbytes {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let doc = build(lo);
    assert!(
        nbytes - doc.len() <= nbytes / 100,
        "{} for {nbytes}",
        doc.len()
    );
    doc
}

/// Cut points of 1-8 byte deltas (xorshift, seeded).
fn deltas(doc: &[u8], seed: u64) -> Vec<&[u8]> {
    let mut state = seed | 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i < doc.len() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = 1 + (state % 8) as usize;
        let end = (i + n).min(doc.len());
        out.push(&doc[i..end]);
        i = end;
    }
    out
}

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

/// Builds Rust values and counts events: `values`, and the bytes of all deltas.
#[derive(Default)]
struct Counter {
    values: usize,
    delta_bytes: usize,
}

impl Builder<ValueTree> for Counter {
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
    fn insert(&mut self, o: &mut ObjectBuf, key: &str, value: Value) -> Result<(), Self::Error> {
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
    fn value_event(&mut self, path: &Path<'_, ValueTree>, _: &Value) -> Result<(), Self::Error> {
        self.values += 1;
        black_box(path.depth());
        Ok(())
    }
    fn delta_event(
        &mut self,
        _: &Path<'_, ValueTree>,
        text: &str,
        _: bool,
    ) -> Result<(), Self::Error> {
        self.delta_bytes += text.len();
        Ok(())
    }
}

fn feed_all(pieces: &[&[u8]]) -> Value {
    let mut p = JsonStream::new(512);
    for d in pieces {
        p.feed(d).expect("valid JSON");
    }
    p.finish().expect("complete JSON")
}

fn feed_all_events(pieces: &[&[u8]]) -> (Value, Counter) {
    let mut p = Parser::<ValueTree>::new(512).events(true);
    let mut counter = Counter::default();
    for d in pieces {
        p.feed_with(d, &mut counter).expect("valid JSON");
    }
    let v = p.finish_with(&mut counter).expect("complete JSON");
    (v, counter)
}

fn benches(c: &mut Criterion) {
    let sizes = [("1KB", 1_000), ("10KB", 10_000), ("100KB", 100_000)];
    let docs: Vec<(&str, String)> = sizes.iter().map(|(l, n)| (*l, document(*n))).collect();
    for (group_name, events) in [
        ("json feed per delta", false),
        ("json feed+events per delta", true),
    ] {
        let mut group = c.benchmark_group(group_name);
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for (label, doc) in &docs {
            let bytes = doc.as_bytes();
            let pieces = deltas(bytes, 0x9E37_79B9_7F4A_7C15 ^ bytes.len() as u64);
            let expected: serde_json::Value = serde_json::from_slice(bytes).unwrap();
            // Check before timing.
            if events {
                let (v, counter) = feed_all_events(&pieces);
                assert_eq!(to_serde(&v), expected);
                let content = expected["content"].as_str().unwrap();
                assert!(counter.delta_bytes > content.len());
                assert!(counter.values > expected["edits"].as_array().unwrap().len() * 10);
            } else {
                assert_eq!(to_serde(&feed_all(&pieces)), expected);
            }
            group.throughput(Throughput::Elements(pieces.len() as u64));
            group.bench_with_input(BenchmarkId::new("raygent", label), &pieces, |b, pieces| {
                if events {
                    b.iter(|| black_box(feed_all_events(pieces)))
                } else {
                    b.iter(|| black_box(feed_all(pieces)))
                }
            });
            group.bench_with_input(BenchmarkId::new("serde_json", label), &bytes, |b, bytes| {
                b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(bytes).unwrap()))
            });
        }
        group.finish();
    }
}

criterion_group!(json_stream, benches);
criterion_main!(json_stream);
