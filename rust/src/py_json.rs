//! Python binding of [`crate::json_stream`]: `JsonStream` and `JsonStreamError`.
//!
//! The parser builds Python objects directly through [`PyBuilder`], so a completed subtree is
//! converted once, when it completes; `partial()` copies only the open containers (sharing
//! their completed children) and creates the open string.
//!
//! With `events=True` the builder also turns the parser's events into `(kind, path, value)`
//! tuples as they happen, kept in [`Events`] until `events()` drains them. The path tuple of
//! the open string is made once, at its first delta, and reused by its later deltas, so a
//! delta inside a long string costs one `str` of the new text and one 3-tuple.

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::json_stream::{Builder, JsonError, Number, Parser, Path, PathSeg, Tree};

create_exception!(
    raygent._native,
    JsonStreamError,
    PyValueError,
    "Malformed JSON fed to JsonStream; `offset` is the byte offset, `reason` the cause."
);

/// The single place a parse error becomes a Python exception.
fn to_py_err(py: Python<'_>, e: &JsonError) -> PyErr {
    let err = JsonStreamError::new_err(e.to_string());
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of MemoryError, in
    // which case the exception still carries its message.
    let _ = value.setattr("offset", e.offset);
    let _ = value.setattr("reason", &*e.reason);
    err
}

struct PyTree;

impl Tree for PyTree {
    type Value = Py<PyAny>;
    type Array = Py<PyList>;
    type Object = Py<PyDict>;
}

/// Events not yet drained, and the path tuple of the open string (reused by its deltas).
#[derive(Default)]
struct Events {
    pending: Vec<Py<PyAny>>,
    string_path: Option<Py<PyTuple>>,
}

impl Events {
    fn path_tuple(py: Python<'_>, path: &Path<'_, PyTree>) -> PyResult<Py<PyTuple>> {
        let mut items: Vec<Py<PyAny>> = Vec::with_capacity(path.depth() + 1);
        if let Some(d) = path.document() {
            items.push(d.into_pyobject(py)?.into_any().unbind());
        }
        for seg in path.segments() {
            items.push(match seg {
                PathSeg::Index(i) => i.into_pyobject(py)?.into_any().unbind(),
                PathSeg::Key(k) => PyString::new(py, k).into_any().unbind(),
            });
        }
        Ok(PyTuple::new(py, items)?.unbind())
    }

    fn push(
        &mut self,
        py: Python<'_>,
        kind: &Bound<'_, PyString>,
        path: Py<PyTuple>,
        value: Py<PyAny>,
    ) -> PyResult<()> {
        let event = PyTuple::new(
            py,
            [kind.clone().into_any().unbind(), path.into_any(), value],
        )?;
        self.pending.push(event.into_any().unbind());
        Ok(())
    }
}

/// Builds Python objects; `events` is set when the stream records events.
struct PyBuilder<'py, 'e> {
    py: Python<'py>,
    events: Option<&'e mut Events>,
}

impl<'py> PyBuilder<'py, '_> {
    fn plain(py: Python<'py>) -> Self {
        PyBuilder { py, events: None }
    }
}

impl Builder<PyTree> for PyBuilder<'_, '_> {
    type Error = PyErr;

    fn null(&mut self) -> PyResult<Py<PyAny>> {
        Ok(self.py.None())
    }

    fn boolean(&mut self, value: bool) -> PyResult<Py<PyAny>> {
        Ok(PyBool::new(self.py, value).to_owned().into_any().unbind())
    }

    fn number(&mut self, number: &Number) -> PyResult<Py<PyAny>> {
        let py = self.py;
        if !number.is_integer() {
            // Rust's parse is correctly rounded like CPython's float(); overflow gives ±inf,
            // the value json.loads gives.
            return Ok(PyFloat::new(py, number.as_f64()).into_any().unbind());
        }
        match number.as_i64() {
            Some(i) => Ok(i.into_pyobject(py)?.into_any().unbind()),
            // int(str) is exact at any size and, like json.loads, honours
            // sys.get_int_max_str_digits (a longer integer fails the stream).
            None => Ok(py.get_type::<PyInt>().call1((number.text(),))?.unbind()),
        }
    }

    fn string(&mut self, text: &str) -> PyResult<Py<PyAny>> {
        Ok(PyString::new(self.py, text).into_any().unbind())
    }

    fn array(&mut self) -> PyResult<Py<PyList>> {
        Ok(PyList::empty(self.py).unbind())
    }

    fn push(&mut self, array: &mut Py<PyList>, value: Py<PyAny>) -> PyResult<()> {
        array.bind(self.py).append(value)
    }

    fn close_array(&mut self, array: Py<PyList>) -> PyResult<Py<PyAny>> {
        Ok(array.into_any())
    }

    fn object(&mut self) -> PyResult<Py<PyDict>> {
        Ok(PyDict::new(self.py).unbind())
    }

    fn insert(&mut self, object: &mut Py<PyDict>, key: &str, value: Py<PyAny>) -> PyResult<()> {
        object.bind(self.py).set_item(key, value)
    }

    fn close_object(&mut self, object: Py<PyDict>) -> PyResult<Py<PyAny>> {
        Ok(object.into_any())
    }

    fn copy_array(&mut self, array: &Py<PyList>) -> PyResult<Py<PyList>> {
        let list = array.bind(self.py);
        Ok(list.get_slice(0, list.len()).unbind())
    }

    fn copy_object(&mut self, object: &Py<PyDict>) -> PyResult<Py<PyDict>> {
        Ok(object.bind(self.py).copy()?.unbind())
    }

    fn copy_value(&mut self, value: &Py<PyAny>) -> PyResult<Py<PyAny>> {
        Ok(value.clone_ref(self.py))
    }

    fn value_event(&mut self, path: &Path<'_, PyTree>, value: &Py<PyAny>) -> PyResult<()> {
        let py = self.py;
        let Some(events) = self.events.as_deref_mut() else {
            return Ok(());
        };
        let path = match events.string_path.take() {
            // A string's value event has its deltas' path.
            Some(p) if value.bind(py).is_exact_instance_of::<PyString>() => p,
            _ => Events::path_tuple(py, path)?,
        };
        events.push(py, intern!(py, "value"), path, value.clone_ref(py))
    }

    fn delta_event(&mut self, path: &Path<'_, PyTree>, text: &str, first: bool) -> PyResult<()> {
        let py = self.py;
        let Some(events) = self.events.as_deref_mut() else {
            return Ok(());
        };
        let path = match &events.string_path {
            Some(p) if !first => p.clone_ref(py),
            _ => {
                let p = Events::path_tuple(py, path)?;
                events.string_path = Some(p.clone_ref(py));
                p
            }
        };
        let text = PyString::new(py, text).into_any().unbind();
        events.push(py, intern!(py, "delta"), path, text)
    }
}

#[pyclass(module = "raygent._native", name = "JsonStream")]
struct PyJsonStream {
    parser: Parser<PyTree>,
    events: Events,
}

#[pymethods]
impl PyJsonStream {
    #[new]
    #[pyo3(signature = (*, max_depth = 512, multiple = false, events = false))]
    fn new(max_depth: usize, multiple: bool, events: bool) -> Self {
        PyJsonStream {
            parser: Parser::new(max_depth).multiple(multiple).events(events),
            events: Events::default(),
        }
    }

    fn feed(&mut self, delta: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = delta.py();
        if let Ok(bytes) = delta.cast::<PyBytes>() {
            return self.feed_bytes(py, bytes.as_bytes());
        }
        let Ok(text) = delta.cast::<PyString>() else {
            let kind = delta.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "delta must be str or bytes, not {kind}"
            )));
        };
        match text.to_str() {
            Ok(s) => self.feed_bytes(py, s.as_bytes()),
            Err(_) => {
                // A str holding a lone surrogate has no UTF-8 form; its surrogatepass bytes
                // are invalid UTF-8, so the parser fails at the right offset like for bytes.
                let encoded = text.call_method1("encode", ("utf-8", "surrogatepass"))?;
                self.feed_bytes(py, encoded.cast::<PyBytes>()?.as_bytes())
            }
        }
    }

    fn partial(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self.parser.partial_with(&mut PyBuilder::plain(py)) {
            Ok(v) => Ok(v.unwrap_or_else(|| py.None())),
            Err(e) => Err(to_py_err(py, &e)),
        }
    }

    fn finish(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut b = PyBuilder {
            py,
            events: Some(&mut self.events),
        };
        if self.parser.is_multiple() {
            let values = self
                .parser
                .finish_all_with(&mut b)
                .map_err(|e| to_py_err(py, &e))?;
            return Ok(PyList::new(py, values)?.into_any().unbind());
        }
        self.parser
            .finish_with(&mut b)
            .map_err(|e| to_py_err(py, &e))
    }

    fn events(&mut self, py: Python<'_>) -> PyResult<Py<PyList>> {
        if !self.parser.has_events() {
            return Err(PyValueError::new_err(
                "events() needs JsonStream(events=True)",
            ));
        }
        Ok(PyList::new(py, self.events.pending.drain(..))?.unbind())
    }

    fn values(&mut self, py: Python<'_>) -> PyResult<Py<PyList>> {
        if !self.parser.is_multiple() {
            return Err(PyValueError::new_err(
                "values() needs JsonStream(multiple=True)",
            ));
        }
        Ok(PyList::new(py, self.parser.take_values())?.unbind())
    }

    #[getter]
    fn bytes_fed(&self) -> usize {
        self.parser.bytes_fed()
    }

    #[getter]
    fn done(&self) -> bool {
        self.parser.done()
    }

    fn __repr__(&self) -> String {
        let py_bool = |b: bool| if b { "True" } else { "False" };
        format!(
            "JsonStream(max_depth={}, multiple={}, events={}, bytes_fed={}, done={})",
            self.parser.max_depth(),
            py_bool(self.parser.is_multiple()),
            py_bool(self.parser.has_events()),
            self.parser.bytes_fed(),
            py_bool(self.parser.done())
        )
    }
}

impl PyJsonStream {
    fn feed_bytes(&mut self, py: Python<'_>, bytes: &[u8]) -> PyResult<()> {
        let mut b = PyBuilder {
            py,
            events: Some(&mut self.events),
        };
        self.parser
            .feed_with(bytes, &mut b)
            .map_err(|e| to_py_err(py, &e))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJsonStream>()?;
    m.add("JsonStreamError", m.py().get_type::<JsonStreamError>())?;
    Ok(())
}
