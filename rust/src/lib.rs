//! Native hot paths of raygent.
//!
//! Each module has one job and is plain Rust, tested and benchmarked without Python:
//! - [`ansi`]: ECMA-48 control-sequence stripping, one-shot and streaming.
//! - [`json_stream`]: incremental RFC 8259 parsing of JSON that arrives a few bytes at a time.
//! - [`pool`]: a bounded pool of reusable buffers with hit/miss counters.
//!
//! The PyO3 bindings live in the `py_*` modules behind the `python` feature; this file only
//! registers them as `raygent._native`.

pub mod ansi;
pub mod json_stream;
pub mod pool;

#[cfg(feature = "python")]
mod py_ansi;
#[cfg(feature = "python")]
mod py_json;
#[cfg(feature = "python")]
mod py_pool;

#[cfg(feature = "python")]
use pyo3::prelude::*;

#[cfg(feature = "python")]
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    py_ansi::register(m)?;
    py_json::register(m)?;
    py_pool::register(m)?;
    Ok(())
}
