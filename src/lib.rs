#![doc = include_str!("../README.md")]
//!
//! ## Crates
//!
//! Facade over the member crates: [`mirror`] (mirror maps, Bregman divergences,
//! exponential families, projected mirror descent), [`em_as_md`] (mixtures of experts and
//! EM as unit-step KL mirror descent), [`diagnostics`] (relative smoothness/strong
//! convexity certificates) and [`experiments`] (the paper's experiments with their report
//! and figures, as `mdem reproduce` runs them).

pub use diagnostics;
pub use em_as_md;
pub use experiments;
pub use mirror;
