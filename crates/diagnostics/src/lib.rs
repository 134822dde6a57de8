//! # diagnostics
//!
//! Measured relative smoothness and relative strong convexity of the mixture-of-experts
//! objective with respect to the stacked log-partition mirror map, the linear rate they
//! certify, the observed rate, and the EM-map / missing-information rates.
//!
//! This crate is being built (see the issue tracker); it depends only on traits and
//! types of `mirror` and `em-as-md`.

pub use em_as_md;
pub use mirror;
