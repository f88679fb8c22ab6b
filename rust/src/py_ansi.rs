//! Python bindings of [`crate::ansi`]: `strip_ansi`, `strip_ansi_bytes`, `AnsiStripper`.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::ansi::{self, Mode, Renderer, Stripper, Utf8Decoder};

/// Inputs at least this large are stripped with the GIL released, so other Python threads run
/// meanwhile; below it the release costs more than it frees.
const DETACH_MIN_BYTES: usize = 64 * 1024;

/// The UTF-8 bytes of `text`. A `str` holding lone surrogates (from `surrogateescape`
/// decoding, say) has no UTF-8 form; it is encoded with `surrogatepass` instead, which text
/// mode stripping passes through like any other character.
enum TextBytes<'py> {
    Utf8(&'py str),
    Surrogates(Bound<'py, PyBytes>),
}

impl<'py> TextBytes<'py> {
    fn of(text: &'py Bound<'py, PyString>) -> PyResult<Self> {
        match text.to_str() {
            Ok(s) => Ok(TextBytes::Utf8(s)),
            Err(_) => {
                let encoded = text.call_method1("encode", ("utf-8", "surrogatepass"))?;
                Ok(TextBytes::Surrogates(encoded.cast_into::<PyBytes>()?))
            }
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            TextBytes::Utf8(s) => s.as_bytes(),
            TextBytes::Surrogates(b) => b.as_bytes(),
        }
    }
}

/// Text-mode output as a `str`; it is UTF-8 unless the input held surrogates.
fn text_to_py<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(PyString::new(py, s)),
        Err(_) => PyString::from_encoded_object(
            PyBytes::new(py, bytes).as_any(),
            Some(c"utf-8"),
            Some(c"surrogatepass"),
        ),
    }
}

fn maybe_detached<T: Send>(py: Python<'_>, len: usize, f: impl FnOnce() -> T + Send) -> T {
    if len >= DETACH_MIN_BYTES {
        py.detach(f)
    } else {
        f()
    }
}

/// One-shot stripping or rendering of `input`.
fn run_once(input: &[u8], mode: Mode, render: bool) -> Cow<'_, [u8]> {
    if render {
        ansi::render(input, mode)
    } else {
        ansi::strip(input, mode)
    }
}

#[pyfunction]
#[pyo3(signature = (text, *, render = false))]
fn strip_ansi<'py>(text: &Bound<'py, PyString>, render: bool) -> PyResult<Bound<'py, PyString>> {
    let py = text.py();
    let bytes = TextBytes::of(text)?;
    let input = bytes.as_bytes();
    match maybe_detached(py, input.len(), || run_once(input, Mode::Text, render)) {
        Cow::Borrowed(_) => Ok(text.clone()),
        Cow::Owned(out) => text_to_py(py, &out),
    }
}

#[pyfunction]
#[pyo3(signature = (data, *, render = false))]
fn strip_ansi_bytes<'py>(data: &Bound<'py, PyBytes>, render: bool) -> Bound<'py, PyBytes> {
    let py = data.py();
    let input = data.as_bytes();
    match maybe_detached(py, input.len(), || run_once(input, Mode::Bytes, render)) {
        Cow::Borrowed(_) => data.clone(),
        Cow::Owned(out) => PyBytes::new(py, &out),
    }
}

/// Which kind of chunk a stream was started with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bytes,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "str",
            Kind::Bytes => "bytes",
        }
    }
}

/// The stream's state machine: plain stripping or render mode.
enum Engine {
    Strip(Stripper),
    Render(Renderer),
}

impl Engine {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Engine::Strip(s) => s.feed(input, out),
            Engine::Render(r) => r.feed(input, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Engine::Strip(s) => s.finish(out),
            Engine::Render(r) => r.finish(out),
        }
    }
}

#[pyclass(name = "AnsiStripper", module = "raygent._native")]
struct PyAnsiStripper {
    render: bool,
    /// `None` until the first chunk of a stream fixes its kind.
    stream: Option<(Kind, Engine)>,
    /// Decodes bytes-mode output; text-mode output is always whole characters.
    decoder: Utf8Decoder,
}

/// The stream's engine, started for `kind` if this is its first chunk.
fn engine_for(
    stream: &mut Option<(Kind, Engine)>,
    render: bool,
    kind: Kind,
) -> PyResult<&mut Engine> {
    let (started, engine) = stream.get_or_insert_with(|| {
        let mode = match kind {
            Kind::Str => Mode::Text,
            Kind::Bytes => Mode::Bytes,
        };
        let engine = if render {
            Engine::Render(Renderer::new(mode))
        } else {
            Engine::Strip(Stripper::new(mode))
        };
        (kind, engine)
    });
    if *started != kind {
        return Err(PyTypeError::new_err(format!(
            "AnsiStripper.feed() got {} in a stream of {}; call finish() before switching",
            kind.name(),
            started.name()
        )));
    }
    Ok(engine)
}

#[pymethods]
impl PyAnsiStripper {
    #[new]
    #[pyo3(signature = (*, render = false))]
    fn new(render: bool) -> Self {
        PyAnsiStripper {
            render,
            stream: None,
            decoder: Utf8Decoder::new(),
        }
    }

    #[getter]
    fn render(&self) -> bool {
        self.render
    }

    fn feed<'py>(&mut self, chunk: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
        let py = chunk.py();
        let mut out = Vec::new();
        if let Ok(text) = chunk.cast::<PyString>() {
            let bytes = TextBytes::of(text)?;
            let input = bytes.as_bytes();
            let engine = engine_for(&mut self.stream, self.render, Kind::Str)?;
            // Plain text between sequences comes back as the same object, as in strip_ansi.
            if let Engine::Strip(stripper) = engine {
                if stripper.passes_through(input) {
                    return Ok(text.clone());
                }
            }
            out.reserve(input.len());
            maybe_detached(py, input.len(), || engine.feed(input, &mut out));
            text_to_py(py, &out)
        } else if let Ok(data) = chunk.cast::<PyBytes>() {
            let input = data.as_bytes();
            let engine = engine_for(&mut self.stream, self.render, Kind::Bytes)?;
            out.reserve(input.len());
            let decoder = &mut self.decoder;
            let text = maybe_detached(py, input.len(), || {
                engine.feed(input, &mut out);
                let mut text = String::with_capacity(out.len());
                decoder.push(&out, &mut text);
                text
            });
            Ok(PyString::new(py, &text))
        } else {
            Err(PyTypeError::new_err(format!(
                "AnsiStripper.feed() takes str or bytes, not {}",
                chunk.get_type().name()?
            )))
        }
    }

    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        let Some((kind, mut engine)) = self.stream.take() else {
            return Ok(PyString::new(py, ""));
        };
        let mut out = Vec::new();
        engine.finish(&mut out);
        match kind {
            Kind::Str => text_to_py(py, &out),
            Kind::Bytes => {
                let mut text = String::new();
                self.decoder.push(&out, &mut text);
                self.decoder.finish(&mut text);
                Ok(PyString::new(py, &text))
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(strip_ansi, m)?)?;
    m.add_function(wrap_pyfunction!(strip_ansi_bytes, m)?)?;
    m.add_class::<PyAnsiStripper>()?;
    Ok(())
}
