//! ECMA-48 stripping beside the Rust crates a user would pick instead: `vte` (the parser of
//! alacritty, driven as a stripper: keep what it prints and executes) and
//! `strip-ansi-escapes` (built on `vte`; it drops every C0 control but LF).
//!
//! Inputs: colored output captured when the bench starts (`git log -p --color=always` on this
//! repository, into memory, never stored), the `../shared/data/ansi` captures, and ESC-free
//! text. Every result is checked before it is timed; a peer whose output differs from ours on
//! an input is timed only on a normalised comparison that is named in its benchmark id, or
//! not at all.
//!
//! Run: `cargo bench --bench ansi`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raygent_native::ansi::{self, Mode, Renderer, Stripper};

/// `vte` used as a stripper: printed characters and executed C0 controls are kept.
struct VteStrip(String);

impl vte::Perform for VteStrip {
    fn print(&mut self, c: char) {
        self.0.push(c);
    }
    fn execute(&mut self, byte: u8) {
        self.0.push(byte as char);
    }
}

fn vte_strip(data: &[u8]) -> String {
    let mut parser = vte::Parser::new();
    let mut out = VteStrip(String::with_capacity(data.len()));
    parser.advance(&mut out, data);
    out.0
}

/// What `strip-ansi-escapes` keeps of our output: it drops every C0 control but LF.
fn without_c0_but_lf(s: &[u8]) -> Vec<u8> {
    s.iter()
        .copied()
        .filter(|&b| b >= 0x20 || b == b'\n')
        .collect()
}

fn shared_ansi() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ansi")
}

fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match Command::new("git")
        .args(["log", "-p", "--color=always"])
        .current_dir(root)
        .output()
    {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {
            v.push(("git-log-p".to_string(), o.stdout))
        }
        _ => eprintln!("git log unavailable: skipping that input"),
    }
    let shared = shared_ansi();
    let fixtures = shared.join("buildkite-terminal-to-html/fixtures");
    for name in ["npm.sh.raw", "docker-compose-pull.sh.raw", "pikachu.sh.raw"] {
        match std::fs::read(fixtures.join(name)) {
            Ok(data) => v.push((name.to_string(), data)),
            Err(_) => eprintln!("{} not found: skipping", fixtures.join(name).display()),
        }
    }
    let bat = shared.join("bat-syntax-tests/highlighted");
    if let Ok(langs) = std::fs::read_dir(&bat) {
        let mut files: Vec<PathBuf> = langs
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .collect();
        files.sort();
        let all: Vec<u8> = files.iter().flat_map(|p| std::fs::read(p).unwrap_or_default()).collect();
        v.push(("bat-highlighted-all".to_string(), all));
    }
    // ESC-free text: the stripped git log, repeated to about 4 MB.
    if let Some((_, log)) = v.first() {
        let plain = ansi::strip_bytes(log).into_owned();
        let plain = String::from_utf8_lossy(&plain).into_owned();
        let reps = (4 << 20) / plain.len().max(1) + 1;
        v.push(("esc-free-text".to_string(), plain.repeat(reps).into_bytes()));
    }
    v
}

fn bench(c: &mut Criterion) {
    for (name, data) in inputs() {
        let text = String::from_utf8_lossy(&data).into_owned();
        let ours_bytes = ansi::strip_bytes(&data).into_owned();
        let ours_text = ansi::strip_str(&text).into_owned();
        // Checks before timing: no ESC left, text and bytes mode agree, streaming agrees.
        assert!(!ours_bytes.contains(&0x1b), "{name}: ESC survived");
        assert_eq!(ours_text.as_bytes(), &ansi::strip_bytes(text.as_bytes())[..]);
        let stream = |input: &[u8], mode: Mode| {
            let mut s = Stripper::new(mode);
            let mut out = Vec::with_capacity(input.len());
            for chunk in input.chunks(64 * 1024) {
                s.feed(chunk, &mut out);
            }
            s.finish(&mut out);
            out
        };
        assert_eq!(stream(&data, Mode::Bytes), ours_bytes);
        let render = |input: &[u8]| {
            let mut r = Renderer::new(Mode::Bytes);
            let mut out = Vec::with_capacity(input.len());
            for chunk in input.chunks(64 * 1024) {
                r.feed(chunk, &mut out);
            }
            r.finish(&mut out);
            out
        };
        assert_eq!(render(&data), ansi::render(&data, Mode::Bytes).into_owned());

        let mut g = c.benchmark_group(format!("ansi/{name}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.sample_size(20);
        g.bench_function("raygent/strip_bytes", |b| {
            b.iter(|| ansi::strip_bytes(black_box(&data)).len())
        });
        g.bench_function("raygent/strip_str", |b| {
            b.iter(|| ansi::strip_str(black_box(&text)).len())
        });
        g.bench_function("raygent/stream_bytes_64k", |b| {
            b.iter(|| stream(black_box(&data), Mode::Bytes).len())
        });
        g.bench_function("raygent/render_bytes", |b| {
            b.iter(|| ansi::render(black_box(&data), Mode::Bytes).len())
        });

        // vte as a stripper, on the str (valid UTF-8) input.
        let vte_out = vte_strip(text.as_bytes());
        if vte_out == ours_text {
            g.bench_function("vte/strip_str", |b| {
                b.iter(|| vte_strip(black_box(text.as_bytes())).len())
            });
        } else {
            eprintln!("ansi/{name}: vte output differs from ours; vte not timed on it");
        }
        // strip-ansi-escapes, compared with ours minus the C0 controls it drops.
        let sae = strip_ansi_escapes::strip(text.as_bytes());
        if sae == without_c0_but_lf(ours_text.as_bytes()) {
            g.bench_with_input(
                BenchmarkId::new("strip-ansi-escapes/strip (drops C0 but LF)", ""),
                &text,
                |b, t| b.iter(|| strip_ansi_escapes::strip(black_box(t.as_bytes())).len()),
            );
        } else {
            eprintln!(
                "ansi/{name}: strip-ansi-escapes differs from ours even with C0 controls but LF \
                 removed; not timed on it"
            );
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
