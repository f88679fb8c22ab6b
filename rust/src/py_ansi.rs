//! Python bindings of [`crate::ansi`]: `strip_ansi`, `strip_ansi_bytes`, `AnsiStripper`.

use std::borrow::Cow;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use std::os::raw::c_int;

use pyo3::ffi;
use pyo3::types::PyStringData;

use crate::ansi::{self, CodeUnit, Mode, Renderer, Stripper, UnitOut, Utf8Decoder};

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

/// The four storage classes of a CPython `str` (PEP 393): the largest code point of a `str`
/// decides its class, and a `str` must be stored in the smallest class that holds it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Ascii,
    Latin1,
    Ucs2,
    Ucs4,
}

impl Class {
    fn of_max(max: u32) -> Self {
        match max {
            0..=0x7F => Class::Ascii,
            0x80..=0xFF => Class::Latin1,
            0x100..=0xFFFF => Class::Ucs2,
            _ => Class::Ucs4,
        }
    }

    /// The smallest code point of the class, which a `str` of this class holds at least once.
    fn low(self) -> u32 {
        match self {
            Class::Ascii => 0,
            Class::Latin1 => 0x80,
            Class::Ucs2 => 0x100,
            Class::Ucs4 => 0x10000,
        }
    }

    /// The `maxchar` to give `PyUnicode_New` for a `str` of this class.
    fn max(self) -> u32 {
        match self {
            Class::Ascii => 0x7F,
            Class::Latin1 => 0xFF,
            Class::Ucs2 => 0xFFFF,
            Class::Ucs4 => 0x10FFFF,
        }
    }
}

/// A pointer handed to the code that runs with the GIL released.
struct SendPtr<T>(*mut T);
// SAFETY: the pointee is a `str` under construction that no other code can see yet.
unsafe impl<T> Send for SendPtr<T> {}

/// Strip `text`, stored as `units` of class `class`, with `stripper` (fresh for one-shot, the
/// stream's for `AnsiStripper`), on the string's own code units: no UTF-8 on the way in or
/// out. Returns `text` itself when nothing is removed. `first`, if given, is the index of
/// the first ESC or C1 unit, already looked for by the caller.
///
/// The output is written straight into a new `str` of the input's length and class, which is
/// then cut to the output's length. Shrinking its block with `realloc` would make glibc hand
/// out a fresh `mmap` (page faults on every page) for the next input of megabytes, as the
/// smaller block freed does not raise its threshold enough; so when at most half of the
/// block is left over, the `str` is cut in place (its length set, as CPython's own resize
/// does before it reallocates) and keeps its block: at most twice the memory an exact `str`
/// takes. Otherwise it is reallocated. In the rare case where what was dropped took the
/// class's only characters with it, the output is copied into a `str` of a smaller class.
fn strip_units_py<'py, T: CodeUnit>(
    text: &Bound<'py, PyString>,
    units: &[T],
    class: Class,
    stripper: &mut Stripper,
    first: Option<Option<usize>>,
) -> PyResult<Bound<'py, PyString>> {
    let py = text.py();
    let start = if stripper.between_sequences() {
        match first.unwrap_or_else(|| T::find_special(units)) {
            Some(at) => at,
            None => return Ok(text.clone()),
        }
    } else {
        0
    };
    let n = units.len();
    let size = std::mem::size_of::<T>();
    // SAFETY: PyUnicode_New returns a new compact str (or NULL with an exception set) whose
    // data holds `n` units of the kind of `class.max()`, which is T's kind (the input's kind).
    // Until it is returned nothing else can see it, so writing into it is allowed; the
    // stripper writes at most one unit per unit read.
    unsafe {
        let mut obj = ffi::PyUnicode_New(n as ffi::Py_ssize_t, class.max());
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        let dst = ffi::PyUnicode_DATA(obj).cast::<T>();
        std::ptr::copy_nonoverlapping(units.as_ptr(), dst, start);
        let rest = &units[start..];
        let out_ptr = SendPtr(dst.add(start));
        let (written, dropped_max) = maybe_detached(py, std::mem::size_of_val(rest), || {
            let out_ptr = out_ptr;
            let mut out = UnitOut::new(out_ptr.0);
            stripper.run_units(rest, &mut out);
            (out.len(), out.dropped_max())
        });
        let len = start + written;
        if class.low() > 0 && dropped_max >= class.low() {
            let out = std::slice::from_raw_parts(dst.cast_const(), len);
            let max = out.iter().map(|c| c.value()).max().unwrap_or(0);
            if Class::of_max(max) < class {
                // PyUnicode_FromKindAndData copies into the smallest class.
                let small = ffi::PyUnicode_FromKindAndData(
                    size as c_int,
                    dst.cast(),
                    len as ffi::Py_ssize_t,
                );
                ffi::Py_DECREF(obj);
                return Bound::from_owned_ptr_or_err(py, small).map(|o| o.cast_into_unchecked());
            }
        }
        if (n - len) * 2 <= n {
            (*obj.cast::<ffi::PyASCIIObject>()).length = len as ffi::Py_ssize_t;
            dst.add(len).write(T::from_ascii(0));
        } else if ffi::PyUnicode_Resize(&mut obj, len as ffi::Py_ssize_t) != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_owned_ptr(py, obj).cast_into_unchecked())
    }
}

/// Plain stripping of a `str` on its code units (see [`strip_units_py`]).
fn strip_str_py<'py>(
    text: &Bound<'py, PyString>,
    stripper: &mut Stripper,
) -> PyResult<Bound<'py, PyString>> {
    // SAFETY: the data is read while `text`, an immutable str, is alive and referenced.
    let data = unsafe { text.data()? };
    match data {
        PyStringData::Ucs1(units) => {
            // SAFETY: `text` is a str.
            let ascii = unsafe { ffi::PyUnicode_IS_ASCII(text.as_ptr()) } != 0;
            if ascii {
                // No C1 controls in ASCII: only ESC is looked for, with memchr.
                let first = stripper
                    .between_sequences()
                    .then(|| memchr::memchr(0x1B, units));
                strip_units_py(text, units, Class::Ascii, stripper, first)
            } else {
                strip_units_py(text, units, Class::Latin1, stripper, None)
            }
        }
        PyStringData::Ucs2(units) => strip_units_py(text, units, Class::Ucs2, stripper, None),
        PyStringData::Ucs4(units) => strip_units_py(text, units, Class::Ucs4, stripper, None),
    }
}

#[pyfunction]
#[pyo3(signature = (text, *, render = false))]
fn strip_ansi<'py>(text: &Bound<'py, PyString>, render: bool) -> PyResult<Bound<'py, PyString>> {
    if !render {
        return strip_str_py(text, &mut Stripper::new(Mode::Text));
    }
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
            // Plain stripping works on the str's code units; the stripper then never holds
            // part of a UTF-8 character between chunks.
            if let Engine::Strip(stripper) = engine_for(&mut self.stream, self.render, Kind::Str)? {
                return strip_str_py(text, stripper);
            }
            let bytes = TextBytes::of(text)?;
            let input = bytes.as_bytes();
            let engine = engine_for(&mut self.stream, self.render, Kind::Str)?;
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
