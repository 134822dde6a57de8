//! [`Glm`]: an expert on any exponential family a researcher writes.

use super::{Expert, ExpertSpec, FamilySpec, Params};
use crate::error::{MoeError, Result};
use mirror::ExponentialFamily;
use rand::RngCore;
use rand_distr::{Distribution, StandardNormal};
use std::sync::Arc;

/// A GLM expert on any [`ExponentialFamily`] (a researcher's own, e.g. a Gamma family):
/// the first `n_regressed` natural components are linear in $x$, the others are
/// constants. Fitted by [`glm_newton`](super::glm_newton).
///
/// **Saving.** A `Glm` built from a *registered* family ([`Glm::registered`], or the
/// registry's `glm` builder when a model file is loaded) remembers the family's
/// [`FamilySpec`], so its [`Expert::spec`] is
/// `ExpertSpec { name: "glm", family, n_regressed, constants }` and a model with it can be
/// saved and loaded (loading needs the family registered under the same name). A `Glm`
/// built from a family value ([`Glm::new`], [`Glm::with_constants`]) fits, predicts and
/// has standard errors all the same, but has no description: saving it is
/// [`RegistryError::NotSerialisable`](crate::error::RegistryError::NotSerialisable).
///
/// ```
/// use em_as_md::model::expert::{Expert, Glm, Params};
/// // Mirror's Gaussian with known variance, registered by em-as-md as
/// // `gaussian-known-variance` with the parameter `variance`.
/// let g = Glm::registered("gaussian-known-variance", &Params::new().with("variance", 0.5))?;
/// let spec = g.spec().unwrap();
/// assert_eq!(spec.name, "glm");
/// assert_eq!(spec.family.unwrap().params.get("variance"), Some(0.5));
/// # Ok::<(), em_as_md::MoeError>(())
/// ```
#[derive(Clone)]
pub struct Glm {
    family: Arc<dyn ExponentialFamily>,
    n_regressed: usize,
    constants: Vec<f64>,
    family_spec: Option<FamilySpec>,
}

impl std::fmt::Debug for Glm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Glm")
            .field("family", &self.family.name())
            .field("n_regressed", &self.n_regressed)
            .field("constants", &self.constants)
            .field("family_spec", &self.family_spec)
            .finish()
    }
}

impl Glm {
    /// Every natural component regressed on $x$ (canonical link in each component).
    pub fn new(family: Arc<dyn ExponentialFamily>) -> Self {
        let p = family.dim();
        Glm {
            family,
            n_regressed: p,
            constants: Vec::new(),
            family_spec: None,
        }
    }
    /// Every natural component regressed, on the family registered as `name`, built from
    /// `params` by the [registry](crate::model::registry) (which checks the family's
    /// shape); the expert remembers the family's name and parameters, so a model with it
    /// can be saved.
    ///
    /// # Errors
    /// [`RegistryError::UnknownFamily`](crate::error::RegistryError::UnknownFamily) for an unregistered name (listing the known ones),
    /// [`RegistryError::WrongParams`](crate::error::RegistryError::WrongParams) / [`RegistryError::BadParam`](crate::error::RegistryError::BadParam) for parameters the
    /// family does not take, [`RegistryError::FamilyShape`](crate::error::RegistryError::FamilyShape) for a family inconsistent with
    /// its `dim()` / `obs_dim()`, and the builder's own errors.
    pub fn registered(name: &str, params: &Params) -> Result<Self> {
        let spec = FamilySpec::new(name, params.clone());
        let family = crate::model::registry::build_family(&spec)?;
        let mut g = Glm::new(family);
        g.family_spec = Some(spec);
        Ok(g)
    }
    /// The same expert with only the first `n_regressed` components regressed and the
    /// others constant, starting at `constants` (as [`Glm::with_constants`]; the family
    /// and its description are kept).
    ///
    /// # Errors
    /// As [`Glm::with_constants`].
    pub fn regressing(self, n_regressed: usize, constants: Vec<f64>) -> Result<Self> {
        let spec = self.family_spec;
        let mut g = Glm::with_constants(self.family, n_regressed, constants)?;
        g.family_spec = spec;
        Ok(g)
    }
    /// The family's description, when it was built from the registry.
    pub fn family_spec(&self) -> Option<&FamilySpec> {
        self.family_spec.as_ref()
    }
    /// The first `n_regressed` components regressed, the others constant, starting at
    /// `constants` (which must make a valid natural parameter together with any
    /// regressed values, e.g. a Gamma shape).
    ///
    /// # Errors
    /// `InvalidParam { name: "n_regressed" }` if `n_regressed > dim` or
    /// `constants.len() != dim - n_regressed`; `InvalidParam { name: "constants" }` for a
    /// non-finite constant.
    pub fn with_constants(
        family: Arc<dyn ExponentialFamily>,
        n_regressed: usize,
        constants: Vec<f64>,
    ) -> Result<Self> {
        let p = family.dim();
        if n_regressed > p || constants.len() != p - n_regressed {
            return Err(MoeError::InvalidParam {
                name: "n_regressed",
                reason: format!(
                    "n_regressed <= {p} and {} constants, got {n_regressed} and {}",
                    p.saturating_sub(n_regressed),
                    constants.len()
                ),
            });
        }
        if let Some(i) = constants.iter().position(|c| !c.is_finite()) {
            return Err(MoeError::InvalidParam {
                name: "constants",
                reason: format!("constant {i} is {}, expected a finite value", constants[i]),
            });
        }
        Ok(Glm {
            family,
            n_regressed,
            constants,
            family_spec: None,
        })
    }
}

impl Expert for Glm {
    fn name(&self) -> String {
        format!("GLM({})", self.family.name())
    }
    fn family(&self) -> &dyn ExponentialFamily {
        self.family.as_ref()
    }
    fn n_regressed(&self) -> usize {
        self.n_regressed
    }
    fn default_constants(&self, out: &mut [f64]) {
        out.copy_from_slice(&self.constants);
    }
    /// `ExpertSpec { name: "glm", family, n_regressed, constants }` when the family came
    /// from the registry ([`Glm::registered`]), else `None`.
    fn spec(&self) -> Option<ExpertSpec> {
        let family = self.family_spec.clone()?;
        Some(ExpertSpec {
            name: "glm".into(),
            params: Params::new(),
            family: Some(family),
            n_regressed: Some(self.n_regressed),
            constants: self.constants.clone(),
        })
    }
    /// A random start whose natural parameter lies in the family's domain for every $x$
    /// with $x_0 = 1$ (feature 0 the intercept, as [`Dataset::with_intercept`](crate::Dataset::with_intercept) arranges),
    /// whenever the domain is a product of free components and the others (true of every
    /// `mirror` family and of cones such as $\theta < 0$).
    ///
    /// Every regressed coefficient is first drawn $b_{ja} = s\,z_{ja}$, $z_{ja} \sim N(0,1)$
    /// (the built-ins' draws, in the same order). With the base point
    /// $\theta_b$ = [`Glm::start_point`] and the free components (those along which
    /// $\theta_b \pm 10^6(1+|\theta_{b,j}|)\,e_j$ stays in the domain):
    /// * a free component keeps its draws (slopes and intercept);
    /// * a constrained one (e.g. a precision entry, a Gamma rate) gets zero slopes and the
    ///   intercept $\theta_{b,j} + t\,s\,z_{j0}$;
    /// * the constants are $\theta_b$'s.
    ///
    /// The intercept column is $v(t) = \theta_b + t\,\delta$ ($\delta_j = s z_{j0} -
    /// \theta_{b,j}$ for free $j$, $s z_{j0}$ otherwise, so $v(1)$ is the drawn one) with the
    /// largest $t \in \{1, \tfrac12, \dots, 2^{-60}\}$ for which $\theta_b + 2t\delta$ passes
    /// [`ExponentialFamily::in_natural_domain`] (so $v(t)$, halfway to it, stays clear of
    /// the boundary by convexity), and $t = 0$ (the base point) if none does. For a family
    /// whose domain is all of $\mathbb R^p$ the result equals the built-ins' draws bit for
    /// bit. If [`Glm::start_point`] fails, the draws and constants are left as the trait
    /// default writes them, and the first E-step reports the domain error.
    fn init_params(&self, d: usize, rng: &mut dyn RngCore, scale: f64, out: &mut [f64]) {
        let r = self.n_regressed;
        for v in out[..r * d].iter_mut() {
            let z: f64 = StandardNormal.sample(rng);
            *v = scale * z;
        }
        let base = match self.start_point() {
            Ok(b) => b,
            Err(_) => {
                self.default_constants(&mut out[r * d..]);
                return;
            }
        };
        out[r * d..].copy_from_slice(&base[r..]);
        if d == 0 {
            return;
        }
        let free = self.free_components(&base);
        let mut delta = vec![0.0; base.len()];
        for j in 0..r {
            let drawn = out[j * d];
            if free[j] {
                delta[j] = drawn - base[j];
            } else {
                delta[j] = drawn;
                out[j * d + 1..(j + 1) * d]
                    .iter_mut()
                    .for_each(|v| *v = 0.0);
            }
        }
        let t = start_shrink(self.family.as_ref(), &base, &delta);
        for j in 0..r {
            out[j * d] = base[j] + t * delta[j];
        }
    }
}

/// Halvings tried by [`Glm`]'s `init_params` before it falls back to the base point.
const START_HALVINGS: usize = 60;

/// The largest $t \in \{1, \tfrac12, \dots, 2^{-60}\}$ with $\theta_b + 2t\delta$ in the
/// natural domain of `fam`, else 0 (see [`Glm`]'s `init_params`).
fn start_shrink(fam: &dyn ExponentialFamily, base: &[f64], delta: &[f64]) -> f64 {
    let mut trial = base.to_vec();
    let mut t = 1.0;
    for _ in 0..=START_HALVINGS {
        for ((v, b), dl) in trial.iter_mut().zip(base).zip(delta) {
            *v = b + 2.0 * t * dl;
        }
        if fam.in_natural_domain(&trial) {
            return t;
        }
        t *= 0.5;
    }
    0.0
}

impl Glm {
    /// The in-domain base natural parameter $\theta_b$ of [`Glm`]'s random starts: the
    /// family's [`ExponentialFamily::newton_start`] (documented to lie in the domain; e.g.
    /// the standard normal for mirror's Gaussians) with the constants of
    /// [`Glm::with_constants`] in the non-regressed components; if that is outside the
    /// domain, `newton_start` alone.
    ///
    /// # Errors
    /// `Mirror(OutsideDomain)` if neither passes the family's
    /// [`ExponentialFamily::in_natural_domain`] (a family whose default `newton_start`, 0,
    /// is not in its domain should override it).
    pub fn start_point(&self) -> Result<Vec<f64>> {
        let fam = self.family.as_ref();
        let r = self.n_regressed;
        let mut own = vec![0.0; fam.dim()];
        fam.newton_start(&mut own);
        let mut with_constants = own.clone();
        with_constants[r..].copy_from_slice(&self.constants);
        if fam.in_natural_domain(&with_constants) {
            Ok(with_constants)
        } else if fam.in_natural_domain(&own) {
            Ok(own)
        } else {
            Err(MoeError::Mirror(mirror::MirrorError::OutsideDomain {
                what: "starting natural parameter",
                reason: format!(
                    "neither newton_start {own:?} nor it with the constants {:?} is in the \
                     natural domain of {}; override ExponentialFamily::newton_start",
                    self.constants,
                    fam.name()
                ),
            }))
        }
    }

    /// Which regressed components are free: $\theta_b \pm 10^6(1 + |\theta_{b,j}|)\,e_j$
    /// both in the natural domain (e.g. a Gaussian's $\theta_1$, not its $\theta_2 < 0$,
    /// nor a Poisson log-rate, which mirror caps at $\log\lambda_{\max}$).
    fn free_components(&self, base: &[f64]) -> Vec<bool> {
        let mut probe = base.to_vec();
        (0..self.n_regressed)
            .map(|j| {
                let step = 1e6 * (1.0 + base[j].abs());
                [-step, step].iter().all(|dv| {
                    probe[j] = base[j] + dv;
                    let ok = self.family.in_natural_domain(&probe);
                    probe[j] = base[j];
                    ok
                })
            })
            .collect()
    }
}
