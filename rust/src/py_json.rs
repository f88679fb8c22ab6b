//! Python binding of [`crate::json_stream`]: `JsonStream` and `JsonStreamError`.
//!
//! The parser builds Python objects directly through [`PyBuilder`], so a completed subtree is
//! converted once, when it completes; `partial()` copies only the open containers (sharing
//! their completed children) and creates the open string.

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::json_stream::{Builder, JsonError, Number, Parser, Tree};

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

struct PyBuilder<'py>(Python<'py>);

impl Builder<PyTree> for PyBuilder<'_> {
    type Error = PyErr;

    fn null(&mut self) -> PyResult<Py<PyAny>> {
        Ok(self.0.None())
    }

    fn boolean(&mut self, value: bool) -> PyResult<Py<PyAny>> {
        Ok(PyBool::new(self.0, value).to_owned().into_any().unbind())
    }

    fn number(&mut self, number: &Number) -> PyResult<Py<PyAny>> {
        let py = self.0;
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
        Ok(PyString::new(self.0, text).into_any().unbind())
    }

    fn array(&mut self) -> PyResult<Py<PyList>> {
        Ok(PyList::empty(self.0).unbind())
    }

    fn push(&mut self, array: &mut Py<PyList>, value: Py<PyAny>) -> PyResult<()> {
        array.bind(self.0).append(value)
    }

    fn close_array(&mut self, array: Py<PyList>) -> PyResult<Py<PyAny>> {
        Ok(array.into_any())
    }

    fn object(&mut self) -> PyResult<Py<PyDict>> {
        Ok(PyDict::new(self.0).unbind())
    }

    fn insert(&mut self, object: &mut Py<PyDict>, key: &str, value: Py<PyAny>) -> PyResult<()> {
        object.bind(self.0).set_item(key, value)
    }

    fn close_object(&mut self, object: Py<PyDict>) -> PyResult<Py<PyAny>> {
        Ok(object.into_any())
    }

    fn copy_array(&mut self, array: &Py<PyList>) -> PyResult<Py<PyList>> {
        let list = array.bind(self.0);
        Ok(list.get_slice(0, list.len()).unbind())
    }

    fn copy_object(&mut self, object: &Py<PyDict>) -> PyResult<Py<PyDict>> {
        Ok(object.bind(self.0).copy()?.unbind())
    }

    fn copy_value(&mut self, value: &Py<PyAny>) -> PyResult<Py<PyAny>> {
        Ok(value.clone_ref(self.0))
    }
}

#[pyclass(module = "raygent._native", name = "JsonStream")]
struct PyJsonStream {
    parser: Parser<PyTree>,
}

#[pymethods]
impl PyJsonStream {
    #[new]
    #[pyo3(signature = (*, max_depth = 512))]
    fn new(max_depth: usize) -> Self {
        PyJsonStream {
            parser: Parser::new(max_depth),
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
        match self.parser.partial_with(&mut PyBuilder(py)) {
            Ok(v) => Ok(v.unwrap_or_else(|| py.None())),
            Err(e) => Err(to_py_err(py, &e)),
        }
    }

    fn finish(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.parser
            .finish_with(&mut PyBuilder(py))
            .map_err(|e| to_py_err(py, &e))
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
        format!(
            "JsonStream(max_depth={}, bytes_fed={}, done={})",
            self.parser.max_depth(),
            self.parser.bytes_fed(),
            if self.parser.done() { "True" } else { "False" }
        )
    }
}

impl PyJsonStream {
    fn feed_bytes(&mut self, py: Python<'_>, bytes: &[u8]) -> PyResult<()> {
        self.parser
            .feed_with(bytes, &mut PyBuilder(py))
            .map_err(|e| to_py_err(py, &e))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyJsonStream>()?;
    m.add("JsonStreamError", m.py().get_type::<JsonStreamError>())?;
    Ok(())
}
