//! The experiments behind `mdem reproduce` (and the shared pieces of `mdem compare`).

pub mod common;
pub mod digits;
pub mod synthetic;
pub mod tabular;
