//! Pieces shared by em-as-md's integration tests (include with `mod common;`).
//!
//! The two-parameter Gamma family of the user's example crate, compiled from its one
//! source file (`examples/gamma-expert/src/lib.rs`) rather than copied: the tests then
//! exercise exactly the family a user plugs in. Not every test uses every item.
#![allow(dead_code)]

#[path = "../../../../examples/gamma-expert/src/lib.rs"]
pub mod gamma_shape_rate;
