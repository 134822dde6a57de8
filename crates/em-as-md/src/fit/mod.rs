//! The product layer: validated hyperparameters and seeded restarts
//! ([`MoeParams`] → [`MoeValidParams::fit`] → [`FittedMoe`]), initialisation, label
//! alignment, prediction, model files, the standardisation of feature columns
//! ([`scaling`], an exact reparametrisation of $\theta$) and starts fitted on a sample of
//! large data ([`presample`]).

pub mod align;
pub mod atomic;
pub mod init;
pub mod io;
pub mod minibatch;
mod params;
pub mod predict;
pub mod presample;
pub mod scaling;
pub mod separation;
pub mod stream;

pub use params::*;
pub use predict::{FitReport, FittedMoe, UngatedFit};
