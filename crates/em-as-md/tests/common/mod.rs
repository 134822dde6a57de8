//! Test code shared by em-as-md's integration tests (`mod common;`).

/// The two-parameter Gamma family with unknown shape and rate (`GammaShapeRate`,
/// `register()`, `gamma_expert()`): the very file of the user's crate in
/// `examples/gamma-expert`, included by path so that the family exists once.
#[path = "../../../../examples/gamma-expert/src/lib.rs"]
#[allow(dead_code)] // each test binary uses a different part of it
pub mod gamma;

use em_as_md::{Glm, MoeError};
use mirror::MultivariateGaussian;
use std::sync::Arc;

/// A regression expert on the bivariate normal with unknown covariance: the mean part
/// $\eta = Pm$ regressed on $x$, the precision part $\lambda$ a per-expert constant
/// starting at the identity ($\lambda_{00} = \lambda_{11} = -1/2$, $\lambda_{01} = 0$), so
/// every row's natural parameter stays in the domain $P \succ 0$ whatever the features.
#[allow(dead_code)] // not every test binary uses it
pub fn mvn_expert() -> Result<Glm, MoeError> {
    let mvn = MultivariateGaussian::new(2)?;
    Glm::with_constants(Arc::new(mvn), 2, vec![-0.5, 0.0, -0.5])
}
