//! `JsonStream` fed arbitrary bytes in arbitrary splits: it accepts exactly what serde_json
//! accepts, with the same value, asking for `partial()` after every delta never panics, and the
//! result does not depend on the splits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raygent_native::json_stream::{JsonStream, Value};

/// serde_json's nesting limit; deeper documents are left out of the comparison.
const SERDE_MAX_DEPTH: usize = 128;

fn to_serde(v: &Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => serde_json::from_str(n.text()).expect("a number we accepted"),
        Value::String(t) => serde_json::Value::String(t.clone()),
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
        Value::Object(members) => serde_json::Value::Object(
            members.iter().map(|(k, v)| (k.clone(), to_serde(v))).collect(),
        ),
    }
}

fn parse(data: &[u8], cuts: &[u16], partials: bool) -> Result<Value, String> {
    let mut at: Vec<usize> = cuts.iter().map(|&c| c as usize % (data.len() + 1)).collect();
    at.sort_unstable();
    let mut p = JsonStream::new(SERDE_MAX_DEPTH + 64);
    let mut prev = 0;
    for c in at.into_iter().chain([data.len()]) {
        let fed = p.feed(&data[prev..c]);
        prev = c;
        if partials {
            // Whatever the delta did, partial() answers without panicking.
            let _ = p.partial();
        }
        fed.map_err(|e| e.to_string())?;
    }
    p.finish().map_err(|e| e.to_string())
}

/// Deepest nesting of brackets outside strings (an upper bound is enough here).
fn depth(data: &[u8]) -> usize {
    let (mut d, mut max, mut in_str, mut esc) = (0usize, 0usize, false, false);
    for &b in data {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                d += 1;
                max = max.max(d);
            }
            b']' | b'}' => d = d.saturating_sub(1),
            _ => {}
        }
    }
    max
}

fuzz_target!(|case: (Vec<u8>, Vec<u16>)| {
    let (data, cuts) = case;
    let ours = parse(&data, &cuts, true);
    assert_eq!(
        ours.as_ref().map(to_serde),
        parse(&data, &[], false).as_ref().map(to_serde),
        "the result depends on the splits"
    );
    if depth(&data) >= SERDE_MAX_DEPTH {
        return;
    }
    let theirs = serde_json::from_slice::<serde_json::Value>(&data);
    match (&ours, &theirs) {
        (Ok(a), Ok(b)) => assert_eq!(&to_serde(a), b, "value differs from serde_json"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "ours {:?} vs serde_json {:?} on {:?}",
            ours.as_ref().map(to_serde),
            theirs,
            String::from_utf8_lossy(&data)
        ),
    }
});
