//! The ANSI stripper on arbitrary input cut at arbitrary points: streaming equals one-shot in
//! every mode and for every `str` storage kind, output is never longer than the input and has
//! no ESC, nothing but a partial character is held between chunks, and render mode neither
//! panics nor holds more than its line bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use raygent_native::ansi::{self, Mode, Renderer, Stripper, MAX_LINE_BYTES};

const ESC: u8 = 0x1B;

/// `data` cut at `cuts` (each taken modulo `data.len() + 1`, then sorted).
fn pieces<'a, T>(data: &'a [T], cuts: &[u16]) -> Vec<&'a [T]> {
    let mut at: Vec<usize> = cuts.iter().map(|&c| c as usize % (data.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut prev = 0;
    for c in at.into_iter().chain([data.len()]) {
        out.push(&data[prev..c]);
        prev = c;
    }
    out
}

/// Stream `chunks` through a stripper; returns the output and what `finish` added.
fn stream(chunks: &[&[u8]], mode: Mode) -> (Vec<u8>, usize) {
    let mut s = Stripper::new(mode);
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c, &mut out);
    }
    let before = out.len();
    s.finish(&mut out);
    let held = out.len() - before;
    (out, held)
}

fn check_units<T: ansi::CodeUnit + std::fmt::Debug>(units: &[T], cuts: &[u16], expected: &[u32]) {
    let one: Vec<u32> = ansi::strip_units(units).iter().map(|&c| c.value()).collect();
    assert_eq!(one, expected, "strip_units differs from strip_str");
    let mut s = Stripper::new(Mode::Text);
    let mut out = Vec::new();
    for c in pieces(units, cuts) {
        s.feed_units(c, &mut out);
    }
    let got: Vec<u32> = out.iter().map(|&c| c.value()).collect();
    assert_eq!(got, expected, "streamed units differ from one-shot");
}

fn render_stream(chunks: &[&[u8]], mode: Mode, max: usize) -> Vec<u8> {
    let mut r = Renderer::with_max_line_bytes(mode, max);
    let mut out = Vec::new();
    for c in chunks {
        r.feed(c, &mut out);
    }
    let before = out.len();
    r.finish(&mut out);
    // What finish emits is the line held: at most 4 * max bytes, plus a held partial character.
    assert!(out.len() - before <= 4 * max + 3, "render held {} bytes with max {max}", out.len() - before);
    assert!(!out.contains(&ESC));
    out
}

fuzz_target!(|case: (Vec<u8>, Vec<u16>, u8)| {
    let (data, cuts, knob) = case;

    // Bytes mode.
    let one = ansi::strip_bytes(&data).into_owned();
    assert!(one.len() <= data.len());
    assert!(!one.contains(&ESC));
    let (streamed, held) = stream(&pieces(&data, &cuts), Mode::Bytes);
    assert_eq!(streamed, one, "bytes: streaming differs from one-shot");
    assert!(held <= 3, "bytes: finish released {held} bytes");

    // Text mode, on the lossy decoding, cut anywhere (inside characters too).
    let text = String::from_utf8_lossy(&data).into_owned();
    let one = ansi::strip_str(&text).into_owned();
    assert!(one.len() <= text.len());
    assert!(!one.contains('\x1b'));
    assert_eq!(one.as_bytes(), &ansi::strip_bytes(text.as_bytes())[..]);
    let (streamed, held) = stream(&pieces(text.as_bytes(), &cuts), Mode::Text);
    assert_eq!(streamed, one.as_bytes(), "text: streaming differs from one-shot");
    assert!(held <= 3, "text: finish released {held} bytes");

    // The code units of a Python str, in each storage kind the text fits.
    let chars: Vec<u32> = text.chars().map(u32::from).collect();
    let expected: Vec<u32> = one.chars().map(u32::from).collect();
    check_units(&chars, &cuts, &expected);
    for max in ['\u{ffff}', '\u{ff}'] {
        let narrow: String = text.chars().map(|c| c.min(max)).collect();
        let expected: Vec<u32> = ansi::strip_str(&narrow).chars().map(u32::from).collect();
        let u16s: Vec<u16> = narrow.chars().map(|c| c as u16).collect();
        check_units(&u16s, &cuts, &expected);
        if max == '\u{ff}' {
            let u8s: Vec<u8> = narrow.chars().map(|c| c as u8).collect();
            check_units(&u8s, &cuts, &expected);
        }
    }

    // Render mode: a small line bound (where the cuts act) or the default.
    let max = if knob < 200 { usize::from(knob % 16) + 1 } else { MAX_LINE_BYTES };
    for (mode, input) in [(Mode::Bytes, &data[..]), (Mode::Text, text.as_bytes())] {
        let whole = render_stream(&[input], mode, max);
        assert_eq!(render_stream(&pieces(input, &cuts), mode, max), whole, "render: streaming differs");
        if max == MAX_LINE_BYTES {
            assert_eq!(&ansi::render(input, mode)[..], &whole[..]);
        }
    }
});
