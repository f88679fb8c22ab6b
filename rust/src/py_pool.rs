//! Python binding of [`crate::pool`]: `BufferPool` of `bytearray`s.
//!
//! A released bytearray is emptied without giving back its memory (the way msgspec's
//! `encode_into` shrinks its output), because `bytearray.clear()` frees the allocation and
//! would leave nothing worth pooling.

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use crate::pool::Pool;

/// Empty `buffer` keeping its allocation; returns the bytes it still holds allocated.
fn clear_keeping_allocation(buffer: &Bound<'_, PyByteArray>) -> PyResult<usize> {
    let raw = buffer.as_ptr().cast::<ffi::PyByteArrayObject>();
    // SAFETY: `buffer` is a bytearray (or subclass), so the pointer has the CPython
    // `PyByteArrayObject` layout; we hold the GIL (this extension is built for GIL-enabled
    // CPython, not the limited API), so no one else touches the object meanwhile. Setting the
    // size to 0 with `ob_start` at the allocation start and a NUL terminator keeps
    // bytearray's invariants (size + offset + 1 <= alloc, trailing NUL).
    unsafe {
        if (*raw).ob_exports > 0 {
            return Err(PyBufferError::new_err(
                "cannot pool a bytearray with live exports (an open memoryview)",
            ));
        }
        (*raw).ob_base.ob_size = 0;
        if !(*raw).ob_bytes.is_null() {
            (*raw).ob_start = (*raw).ob_bytes;
            *(*raw).ob_bytes = 0;
        }
        Ok(usize::try_from((*raw).ob_alloc).unwrap_or(0))
    }
}

#[pyclass(module = "raygent._native", name = "BufferPool")]
struct PyBufferPool {
    pool: Pool<Py<PyByteArray>>,
}

#[pymethods]
impl PyBufferPool {
    #[new]
    // A literal default (4 MiB) so the runtime signature shows it, as the stub does.
    #[pyo3(signature = (*, max_buffers = 64, max_buffer_bytes = 4194304))]
    fn new(max_buffers: usize, max_buffer_bytes: usize) -> Self {
        PyBufferPool {
            pool: Pool::new(max_buffers, max_buffer_bytes),
        }
    }

    fn acquire(&mut self, py: Python<'_>) -> Py<PyByteArray> {
        self.pool
            .acquire_with(|| PyByteArray::new(py, &[]).unbind())
    }

    fn release(&mut self, buffer: &Bound<'_, PyByteArray>) -> PyResult<()> {
        // Pooling one object twice would hand it to two users at once.
        if self
            .pool
            .pooled()
            .iter()
            .any(|b| b.as_ptr() == buffer.as_ptr())
        {
            return Err(PyValueError::new_err("buffer was released twice"));
        }
        let retained = clear_keeping_allocation(buffer)?;
        self.pool.release(buffer.clone().unbind(), retained);
        Ok(())
    }

    #[getter]
    fn hits(&self) -> u64 {
        self.pool.hits()
    }

    #[getter]
    fn misses(&self) -> u64 {
        self.pool.misses()
    }

    #[getter]
    fn available(&self) -> usize {
        self.pool.available()
    }

    fn __repr__(&self) -> String {
        format!(
            "BufferPool(max_buffers={}, max_buffer_bytes={}, available={}, hits={}, misses={})",
            self.pool.max_items(),
            self.pool.max_item_bytes(),
            self.pool.available(),
            self.pool.hits(),
            self.pool.misses()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyBufferPool>()
}
