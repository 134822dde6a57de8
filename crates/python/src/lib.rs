//! `mdem._core`: the native half of the Python package `mdem` (PyO3 + maturin).
//!
//! The scikit-learn estimators of `mdem/__init__.py` validate their inputs with
//! scikit-learn's own helpers and call [`fit`] here, which runs the library's fit exactly as
//! `mdem fit` does (`crates/cli/src/commands/fit.rs`): an intercept column, the target
//! checked and the expert described by the expert's registry entry, the columns
//! standardised ([`em_as_md::fit::scaling`], an exact reparametrisation), EM (plain, SQUAREM
//! or mirror descent at $\eta_t = 1/\hat L_t$) with seeded restarts through
//! [`em_as_md::MoeParams`], and $\hat\theta$ mapped back to the data's units. The fit runs
//! with the GIL released; [`fit_gaussian_mixture`] fits a Gaussian mixture of the rows as
//! `mdem fit --expert gaussian` does. The result is a [`Fit`]: predictions, responsibilities, the
//! convergence certificate ([`diagnostics::certificate::certify`]) and the EM ≡ MD harness
//! ([`em_as_md::testkit::em_md_gap`]). [`ShardModel`] runs the same EM over rows held in
//! partitions elsewhere (Dask), one round of shard statistics at a time ([`shard`]).
//!
//! Errors never cross the boundary as panics: every [`em_as_md::MoeError`] and
//! [`diagnostics::error::DiagnosticsError`] becomes a Python `ValueError` carrying the
//! library's message; a non-contiguous array is a `ValueError` too (the Python layer hands
//! over C-contiguous `float64` arrays; pyo3 raises `TypeError` for any other dtype).

mod fitted;
mod run;
mod shard;

use pyo3::prelude::*;

pub use fitted::Fit;
pub use run::{fit, fit_from_json, fit_gaussian_mixture};
pub use shard::ShardModel;

/// The module `mdem._core`: the [`fit`] and [`fit_gaussian_mixture`] functions, the
/// [`Fit`] class,
/// [`fit_from_json`] (the inverse of [`Fit::to_json`], used by pickling) and the
/// [`ShardModel`] class of fits over partitions (`mdem.dask`).
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run::fit, m)?)?;
    m.add_function(wrap_pyfunction!(run::fit_gaussian_mixture, m)?)?;
    m.add_function(wrap_pyfunction!(run::fit_from_json, m)?)?;
    m.add_function(wrap_pyfunction!(run::expert_names, m)?)?;
    m.add_class::<Fit>()?;
    m.add_class::<ShardModel>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
