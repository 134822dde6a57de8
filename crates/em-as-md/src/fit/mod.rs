//! The product layer: validated hyperparameters and seeded restarts
//! ([`MoeParams`] → [`MoeValidParams::fit`] → [`FittedMoe`]), initialisation, label
//! alignment, prediction and model files.

pub mod align;
pub mod init;
pub mod io;
mod params;
pub mod predict;

pub use params::*;
pub use predict::{FitReport, FittedMoe};
