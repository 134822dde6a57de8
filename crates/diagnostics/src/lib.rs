//! # diagnostics
//!
//! Measured relative smoothness and relative strong convexity of the mixture-of-experts
//! objective with respect to the stacked log-partition mirror map, the linear rate they
//! certify, the observed rate, and the EM-map / missing-information rates.

pub mod certificate;
pub mod error;
pub mod information;
pub mod rates;
pub mod stderr;
pub mod ratios;
#[cfg(test)]
pub(crate) mod testkit;

pub use em_as_md;
pub use error::{DiagnosticsError, Result};
pub use mirror;
