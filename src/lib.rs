#![doc = include_str!("../README.md")]
//!
//! ## Crates
//!
//! Facade over the member crates: [`mirror`] (mirror maps, Bregman divergences,
//! exponential families, projected mirror descent), [`em_as_md`] (mixtures of experts and
//! EM as unit-step KL mirror descent) and [`diagnostics`] (relative smoothness/strong
//! convexity certificates).

pub use diagnostics;
pub use em_as_md;
pub use mirror;
