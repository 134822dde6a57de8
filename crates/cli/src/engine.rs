//! How the command line runs a fit: the library's validated parameters and seeded
//! restarts ([`em_as_md::fit::MoeParams`]), with an observer on every restart (the
//! progress bar).

use crate::progress::ProgressObserver;
use em_as_md::expert::ExpertKind;
use em_as_md::init::InitMethod;
use em_as_md::moe::Gating;
use em_as_md::{Dataset, FittedMoe, MoeError, MoeParams, ObserverMode};

/// Settings of a command-line fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitSettings {
    /// Number of experts $K$.
    pub n_experts: usize,
    /// Expert type.
    pub expert: ExpertKind,
    /// Gating.
    pub gating: Gating,
    /// Number of seeded restarts.
    pub n_init: usize,
    /// Master seed.
    pub seed: u64,
    /// EM iteration limit per restart.
    pub max_iters: u64,
    /// Relative tolerance on the change of $L$.
    pub tol: f64,
    /// How restarts start.
    pub init: InitMethod,
}

/// Fits by EM with [`MoeParams`] (restarts in parallel), ticking `progress` once per
/// iteration of any restart.
///
/// # Errors
/// As [`MoeParams::check`] and [`em_as_md::MoeValidParams::fit`].
pub fn fit_em(
    data: &Dataset,
    settings: &FitSettings,
    progress: Option<ProgressObserver>,
) -> Result<FittedMoe, MoeError> {
    let mut params = MoeParams::new(settings.n_experts)
        .expert(settings.expert)
        .gating(settings.gating)
        .n_init(settings.n_init)
        .seed(settings.seed)
        .max_iters(settings.max_iters)
        .tol(settings.tol)
        .init(settings.init.clone());
    if let Some(bar) = progress {
        params = params.observe(move |_| (Box::new(bar.clone()), ObserverMode::Always));
    }
    params.check()?.fit(data)
}
