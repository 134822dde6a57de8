#![doc = include_str!("../README.md")]
//!
//! ## Crates
//!
//! Facade over the member crates: [`mirror`] (mirror maps, Bregman divergences,
//! exponential families, projected mirror descent), [`em_as_md`] (mixtures of experts and
//! EM as unit-step KL mirror descent) and [`diagnostics`] (relative smoothness/strong
//! convexity certificates).

//! The crates whose types appear in public signatures are re-exported too, so a user's
//! crate depends on `mdem` alone and gets matching versions: [`faer`] (matrices such as an
//! exponential family's Fisher information) and [`rand`] (the samplers' `RngCore`).

pub use diagnostics;
pub use em_as_md;
pub use faer;
pub use mirror;
pub use rand;
