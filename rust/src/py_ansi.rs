//! Python bindings of [`crate::ansi`]: `strip_ansi`, `strip_ansi_bytes`, `AnsiStripper`.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::ansi::{self, Mode, Stripper, Utf8Decoder};

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

#[pyfunction]
fn strip_ansi<'py>(text: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyString>> {
    let py = text.py();
    let bytes = TextBytes::of(text)?;
    let input = bytes.as_bytes();
    match maybe_detached(py, input.len(), || ansi::strip(input, Mode::Text)) {
        Cow::Borrowed(_) => Ok(text.clone()),
        Cow::Owned(out) => text_to_py(py, &out),
    }
}

#[pyfunction]
fn strip_ansi_bytes<'py>(data: &Bound<'py, PyBytes>) -> Bound<'py, PyBytes> {
    let py = data.py();
    let input = data.as_bytes();
    match maybe_detached(py, input.len(), || ansi::strip_bytes(input)) {
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

#[pyclass(name = "AnsiStripper", module = "raygent._native")]
struct PyAnsiStripper {
    /// `None` until the first chunk of a stream fixes its kind.
    stream: Option<(Kind, Stripper)>,
    /// Decodes bytes-mode output; text-mode output is always whole characters.
    decoder: Utf8Decoder,
}

/// The stream's stripper, started for `kind` if this is its first chunk.
fn stripper_for(stream: &mut Option<(Kind, Stripper)>, kind: Kind) -> PyResult<&mut Stripper> {
    let (started, stripper) = stream.get_or_insert_with(|| {
        let mode = match kind {
            Kind::Str => Mode::Text,
            Kind::Bytes => Mode::Bytes,
        };
        (kind, Stripper::new(mode))
    });
    if *started != kind {
        return Err(PyTypeError::new_err(format!(
            "AnsiStripper.feed() got {} in a stream of {}; call finish() before switching",
            kind.name(),
            started.name()
        )));
    }
    Ok(stripper)
}

#[pymethods]
impl PyAnsiStripper {
    #[new]
    fn new() -> Self {
        PyAnsiStripper {
            stream: None,
            decoder: Utf8Decoder::new(),
        }
    }

    fn feed<'py>(&mut self, chunk: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
        let py = chunk.py();
        let mut out = Vec::new();
        if let Ok(text) = chunk.cast::<PyString>() {
            let bytes = TextBytes::of(text)?;
            let input = bytes.as_bytes();
            let stripper = stripper_for(&mut self.stream, Kind::Str)?;
            maybe_detached(py, input.len(), || stripper.feed(input, &mut out));
            text_to_py(py, &out)
        } else if let Ok(data) = chunk.cast::<PyBytes>() {
            let input = data.as_bytes();
            let stripper = stripper_for(&mut self.stream, Kind::Bytes)?;
            let decoder = &mut self.decoder;
            let text = maybe_detached(py, input.len(), || {
                stripper.feed(input, &mut out);
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
        let Some((kind, mut stripper)) = self.stream.take() else {
            return Ok(PyString::new(py, ""));
        };
        let mut out = Vec::new();
        stripper.finish(&mut out);
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
