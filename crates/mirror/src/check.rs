//! `check_family`: a consistency harness for any [`ExponentialFamily`].
//!
//! A researcher who implements the trait for a new family runs
//! [`check_family`]`(&family, &theta, &CheckConfig::default())` at one or more natural
//! parameters and reads the [`FamilyReport`] (it implements `Display` as a table). Every
//! check states its measured error and its tolerance, so a failure says by how much, and
//! every check that compares vectors or matrices entry by entry (gradient, Hessian and
//! its symmetry, the inverse mean map, Bregman pairs, Monte-Carlo mean and covariance)
//! names the entry furthest from its reference: its index $(i, j)$, the value the family
//! gave and the value expected ([`WorstEntry`], [`CheckResult::worst`], shown on a second
//! line of the table).
//!
//! | check | identity | how | worst entry |
//! |---|---|---|---|
//! | [`CheckKind::GradientFd`] | $\nabla A(\theta)$ | central differences of $A$, Richardson-extrapolated: $\frac{4D(h/2) - D(h)}{3}$, $D(h) = \frac{A(\theta+he_j) - A(\theta-he_j)}{2h}$ | $j$: `mean` vs the difference |
//! | [`CheckKind::FisherFd`] | $\nabla^2 A(\theta)$ | the same differences of $\nabla A$, plus symmetry | $(i, j)$: `fisher` vs $\partial\mu_i/\partial\theta_j$ (or vs $F_{ji}$) |
//! | [`CheckKind::MeanInverse`] | $\nabla A^*(\nabla A(\theta)) = \theta$ | direct | $j$: recovered vs $\theta_j$ |
//! | [`CheckKind::Bregman`] | $D_A(a,b) \ge 0$, $D_A(a,a) = 0$ | on $(\theta,\theta_2)$, $(\theta_2,\theta)$ and random nearby pairs | pair $(a, b)$: $D_A(a, b)$ vs 0 |
//! | [`CheckKind::KlDual`] | $\mathrm{KL}(p_{\theta}\Vert p_{\theta_2}) = D_{A^*}(\mu, \mu_2)$ | through [`ExponentialFamily::conjugate`] | (scalar) |
//! | [`CheckKind::KlMonteCarlo`] | $\mathrm{KL}(p_{\theta}\Vert p_{\theta_2}) = \mathbb E_{\theta}[\log p_{\theta} - \log p_{\theta_2}]$ | seeded Monte Carlo with [`ExponentialFamily::sample`] and [`ExponentialFamily::log_density`] | (scalar) |
//! | [`CheckKind::MeanMonteCarlo`] | $\mathbb E_\theta\[T\] = \nabla A(\theta)$ | sample mean of $T$ | $j$: `mean` vs sample mean |
//! | [`CheckKind::FisherMonteCarlo`] | $\operatorname{Cov}_\theta\[T\] = \nabla^2 A(\theta)$ | sample covariance of $T$ | $(j, k)$: `fisher` vs sample covariance |
//! | [`CheckKind::Normalisation`] | $\int p_\theta = 1$ | summation (lattice), deterministic adaptive quadrature (continuous, one dimension) or importance sampling (continuous, several dimensions), below | (scalar) |
//!
//! **Messages.** A failed vector or matrix check names its worst entry on the line under
//! it, e.g.
//! `worst entry (0, 1): found 1.1000000000e0 (fisher), expected 1.0000000000e0 (central
//! difference of grad A)`; the same numbers are in [`CheckResult::worst`] for a program.
//! A check whose family method returned an error fails and quotes the error.
//!
//! Monte-Carlo errors are measured **in standard errors** (the tolerance is
//! [`CheckConfig::mc_sigmas`]); the standard error of a mean of $T_j$ uses
//! $\max(\widehat{\operatorname{Var}}, F_{jj})/n$ and that of a covariance entry
//! $\max(\widehat{\operatorname{Var}}[(T_j - \bar T_j)(T_k - \bar T_k)],
//! F_{jj}F_{kk} + F_{jk}^2)/n$, so a sample that happens to be constant (a Bernoulli with
//! $p$ near 1) cannot fail spuriously; the finite-difference checks pin $F$ down.
//!
//! **Normalisation.** The importance identity $\mathbb E_{s\sim p_\theta}[p_{\theta'}(s) /
//! p_\theta(s)] = 1$ would not see a wrong base measure $h$ (it cancels in the ratio), so
//! the harness checks $\int h(s)e^{\langle T(s),\theta\rangle - A(\theta)}\,ds = 1$
//! directly instead:
//! * on a lattice (every sampled coordinate an integer, or [`SupportKind::Lattice`]):
//!   $\sum_s p_\theta(s)$ over the integers, from the sampled range outwards until ten
//!   successive terms are below $10^{-17}$ of the sum (1-D), or over the sampled box
//!   widened by half its width (several dimensions, at most $10^6$ points);
//!   error $|\sum - 1|$ against [`CheckConfig::norm_tol`]. A 1-D range of draws wider
//!   than $10^7$ integers or reaching $2^{53}$ (where consecutive integers stop being
//!   floats), or a larger box, is not summed: the check is `Skipped` and says why;
//! * continuous in one dimension: by deterministic adaptive double-exponential quadrature
//!   ([`crate::quadrature`]) of $p_\theta = e^{\texttt{log\_density}(\theta, s)}$ over the
//!   support (each term formed as $e^{\log p + \log w}$ from the log-density, so a density
//!   that overflows next to an integrable singularity still counts).
//!   The support's ends are found from the family itself: from the smallest and largest
//!   draw the harness probes [`ExponentialFamily::in_support`] at distances $w, 2w, 4w,
//!   \dots$ ($w$ the range of the draws) until a probe is outside (then bisects to the
//!   boundary, to adjacent floats) or leaves the finite numbers (an infinite end); the
//!   support is taken to be an interval. The range is broken at the sample quantiles
//!   $0, 0.1, 0.25, 0.5, 0.75, 0.9, 1$, so each piece holds mass, and the quadrature never
//!   evaluates the density at a finite end, so integrable singularities there (a Gamma
//!   density of shape $0.6$ behaves as $s^{-0.4}$ at $0$) are integrated to round-off.
//!   Error $|\int - 1|$ plus the quadrature's own error estimate, against
//!   [`CheckConfig::norm_tol`] (default $10^{-8}$): the result does not depend on the
//!   draws beyond round-off, so a 5 % normalisation error or a wrong $h$ fails every time.
//!   The limit is `f64` itself: mass closer to a finite end than the nearest float (below
//!   $5\cdot10^{-324}$ at $0$, within an ulp of $1$ at $1$) cannot be integrated, and the
//!   quadrature's tail estimate then exceeds the tolerance: a Gamma density of shape $k$
//!   has about $e^{-744k}$ of its mass below the smallest positive `f64`, more than
//!   $10^{-8}$ for $k < 0.025$, and the check fails there with "quadrature did not reach
//!   its tolerance" in the detail (a correct family included: it cannot be certified);
//! * otherwise by importance sampling from a multivariate Student-$t$ proposal $q$
//!   ($\nu = 3$, location and scale the sample mean and covariance of the draws from
//!   $p_\theta$): $\hat Z = \frac1n\sum_i p_\theta(s_i)/q(s_i)$, $s_i \sim q$, whose
//!   expectation is $1$ when $p_\theta$ is normalised; the heavy tails of $q$ keep the
//!   weights bounded for every family with at least exponentially decaying tails. Error
//!   $|\hat Z - 1|$ in standard errors.
//!
//! The second parameter $\theta_2$ is [`CheckConfig::theta2`] if given, else
//! $\theta + \epsilon\,z \odot \max(1, |\theta|)$ with $z$ standard normal and
//! $\epsilon$ = [`CheckConfig::perturbation`], halved until it lies in the natural domain.
//!
//! **Sweeps.** A family is rarely wrong everywhere: a series valid for large arguments, a
//! cancellation near the edge of the domain. [`check_family_sweep`] runs [`check_family`]
//! at every given parameter and, for each of them, at points near the boundary of the
//! natural domain: along each coordinate direction $\pm e_j$ it finds the distance $d$ to
//! the boundary (doubling steps with [`ExponentialFamily::in_natural_domain`], then
//! bisection) and checks $\theta \pm (1-\rho)\,d\,e_j$ for each $\rho$ in
//! [`SweepConfig::boundary_fractions`] (default $0.1$). Every point gets its own seed,
//! derived from the base seed, so the sweep is deterministic. The [`SweepReport`] holds one
//! [`FamilyReport`] per point, and its `Display` lists the points, names the worst check
//! (largest error relative to its tolerance, [`SweepReport::worst`]) and prints every
//! failed check with its worst entry.

use crate::error::{check_len, MirrorError, Result};
use crate::family::{ExponentialFamily, LogPartition};
use crate::map::bregman;
use crate::quadrature::{integrate_exp_with_breaks, QuadratureConfig};
use faer::linalg::solvers::Solve;
use faer::Mat;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{ChiSquared, Distribution, StandardNormal};
use statrs::function::gamma::ln_gamma;
use std::fmt;

/// Whether the observations live on the integer lattice or in a continuum (decides how
/// [`CheckKind::Normalisation`] integrates the density).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SupportKind {
    /// Lattice if every coordinate of every Monte-Carlo draw is an integer.
    #[default]
    Auto,
    /// Counting measure on integers: sum the probability mass function.
    Lattice,
    /// Lebesgue measure: integrate the density (by quadrature in one dimension, by
    /// importance sampling in several).
    Continuous,
}

/// Settings of [`check_family`]; `CheckConfig::default()` suits the built-in families.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// Seed of the Monte-Carlo draws (the report is a deterministic function of it).
    pub seed: u64,
    /// Number of Monte-Carlo draws per Monte-Carlo check (at least 100).
    pub mc_samples: usize,
    /// Finite-difference step, relative: $h_j = $ `fd_step` $\cdot\max(1, |\theta_j|)$,
    /// halved until the stencil stays in the natural domain.
    pub fd_step: f64,
    /// Tolerance of the finite-difference checks, relative to $1 + |\cdot|$.
    pub fd_tol: f64,
    /// Tolerance of the exact identities ($\nabla A^*\circ\nabla A$, KL dual), relative.
    pub inverse_tol: f64,
    /// Tolerance on negative Bregman divergences and on $D_A(a,a)$, relative to
    /// $1 + |A(a)| + |A(b)|$.
    pub bregman_tol: f64,
    /// Monte-Carlo tolerance in standard errors.
    pub mc_sigmas: f64,
    /// Tolerance of the deterministic normalisation checks (the lattice sum and the
    /// one-dimensional quadrature), absolute.
    pub norm_tol: f64,
    /// Relative size of the perturbation that makes $\theta_2$ (and the Bregman pairs).
    pub perturbation: f64,
    /// An explicit second parameter for the pair checks (else a perturbation of $\theta$).
    pub theta2: Option<Vec<f64>>,
    /// Number of extra random pairs in the Bregman check.
    pub bregman_pairs: usize,
    /// How to integrate the density in the normalisation check.
    pub support: SupportKind,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            seed: 0x5eed,
            mc_samples: 4000,
            fd_step: 1e-4,
            fd_tol: 1e-6,
            inverse_tol: 1e-7,
            bregman_tol: 1e-10,
            mc_sigmas: 5.0,
            norm_tol: 1e-8,
            perturbation: 0.2,
            theta2: None,
            bregman_pairs: 8,
            support: SupportKind::Auto,
        }
    }
}

impl CheckConfig {
    fn validate(&self) -> Result<()> {
        let positive = |name: &'static str, v: f64| -> Result<()> {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(MirrorError::InvalidParameter {
                    name,
                    value: v,
                    reason: "finite and > 0",
                })
            }
        };
        if self.mc_samples < 100 {
            return Err(MirrorError::InvalidParameter {
                name: "mc_samples",
                value: self.mc_samples as f64,
                reason: "at least 100 Monte-Carlo draws",
            });
        }
        positive("fd_step", self.fd_step)?;
        positive("fd_tol", self.fd_tol)?;
        positive("inverse_tol", self.inverse_tol)?;
        positive("bregman_tol", self.bregman_tol)?;
        positive("mc_sigmas", self.mc_sigmas)?;
        positive("norm_tol", self.norm_tol)?;
        positive("perturbation", self.perturbation)
    }
}

/// The checks [`check_family`] runs (see the [module documentation](self) for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// $\nabla A$ against finite differences of $A$.
    GradientFd,
    /// $\nabla^2 A$ against finite differences of $\nabla A$.
    FisherFd,
    /// $\nabla A^*(\nabla A(\theta)) = \theta$.
    MeanInverse,
    /// $D_A \ge 0$ on pairs and $= 0$ on the diagonal.
    Bregman,
    /// KL as the swapped Bregman divergence of $A$ equals the Bregman divergence of $A^*$.
    KlDual,
    /// KL against its Monte-Carlo estimate.
    KlMonteCarlo,
    /// Sample mean of $T$ against $\nabla A$.
    MeanMonteCarlo,
    /// Sample covariance of $T$ against $\nabla^2 A$.
    FisherMonteCarlo,
    /// The density integrates (sums) to one.
    Normalisation,
}

impl CheckKind {
    /// Short description used in the report table.
    pub fn label(self) -> &'static str {
        match self {
            CheckKind::GradientFd => "grad A vs finite differences",
            CheckKind::FisherFd => "Hessian A vs finite differences",
            CheckKind::MeanInverse => "natural_from_mean(mean) = id",
            CheckKind::Bregman => "Bregman >= 0, = 0 on diagonal",
            CheckKind::KlDual => "KL = D_A* (dual)",
            CheckKind::KlMonteCarlo => "KL vs Monte Carlo",
            CheckKind::MeanMonteCarlo => "mean vs sample mean of T",
            CheckKind::FisherMonteCarlo => "Fisher vs sample cov of T",
            CheckKind::Normalisation => "density normalised",
        }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Error within tolerance.
    Passed,
    /// Error above tolerance, not finite, or the family returned an error.
    Failed,
    /// Not applicable (e.g. a lattice too large to sum); does not fail the report.
    Skipped,
}

/// One row of a [`FamilyReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// Which check.
    pub kind: CheckKind,
    /// Measured error (units in [`detail`](Self::detail); standard errors for Monte Carlo).
    pub error: f64,
    /// The tolerance it was held to.
    pub tolerance: f64,
    /// Pass, fail or skip.
    pub status: CheckStatus,
    /// What was compared, in words and numbers (or the error the family returned).
    pub detail: String,
    /// For a check that compares vectors or matrices entry by entry, the entry with the
    /// largest error (the one that sets [`error`](Self::error)); `None` for the scalar
    /// checks and when the family returned an error.
    pub worst: Option<WorstEntry>,
}

/// The entry of a vector or matrix check that is furthest from its reference: its index,
/// the family's value and the independently computed value it should equal.
///
/// | check | entry | found | expected |
/// |---|---|---|---|
/// | [`CheckKind::GradientFd`] | $j$ | $\mu_j$ from [`ExponentialFamily::mean`] | central difference of $A$ |
/// | [`CheckKind::FisherFd`] | $(i, j)$ | $F_{ij}$ from [`ExponentialFamily::fisher`] | central difference $\partial\mu_i/\partial\theta_j$, or $F_{ji}$ when the asymmetry is the worst |
/// | [`CheckKind::MeanInverse`] | $j$ | $(\nabla A^*(\nabla A(\theta)))_j$ | $\theta_j$ |
/// | [`CheckKind::Bregman`] | $(a, b)$, indices of the points | $D_A(a, b)$ | $0$ (the bound it violates) |
/// | [`CheckKind::MeanMonteCarlo`] | $j$ | $\mu_j$ | sample mean of $T_j$ |
/// | [`CheckKind::FisherMonteCarlo`] | $(j, k)$, $j \le k$ | $F_{jk}$ | sample covariance of $T_j, T_k$ |
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorstEntry {
    /// Row (the entry of a vector).
    pub row: usize,
    /// Column, for a matrix entry.
    pub col: Option<usize>,
    /// The family's value.
    pub found: f64,
    /// Which method of the family gave it (e.g. `"fisher"`).
    pub found_by: &'static str,
    /// The reference value it should equal.
    pub expected: f64,
    /// What the reference is, in words.
    pub reference: &'static str,
}

impl WorstEntry {
    /// The index as $(i, j)$; a vector entry $j$ is $(j, 0)$.
    pub fn index(&self) -> (usize, usize) {
        (self.row, self.col.unwrap_or(0))
    }
}

impl fmt::Display for WorstEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.col {
            Some(c) => write!(f, "worst entry ({}, {c})", self.row)?,
            None => write!(f, "worst entry {}", self.row)?,
        }
        write!(
            f,
            ": found {:.10e} ({}), expected {:.10e} ({})",
            self.found, self.found_by, self.expected, self.reference
        )
    }
}

impl fmt::Display for CheckResult {
    /// One line: label, error, tolerance, status and detail; the worst entry follows on a
    /// second, indented line when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            CheckStatus::Passed => "ok",
            CheckStatus::Failed => "FAIL",
            CheckStatus::Skipped => "skip",
        };
        write!(
            f,
            "{:<32} {:>11.3e} {:>11.3e}  {:<6} {}",
            self.kind.label(),
            self.error,
            self.tolerance,
            status,
            self.detail
        )?;
        if let Some(w) = &self.worst {
            write!(f, "\n{:<34}{w}", "")?;
        }
        Ok(())
    }
}

/// Everything [`check_family`] measured at one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyReport {
    /// The family's name.
    pub family: String,
    /// The parameter checked.
    pub theta: Vec<f64>,
    /// The second parameter of the pair checks.
    pub theta2: Vec<f64>,
    /// One result per [`CheckKind`], in declaration order.
    pub checks: Vec<CheckResult>,
}

impl FamilyReport {
    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != CheckStatus::Failed)
    }
    /// The failed checks.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::Failed)
            .collect()
    }
    /// The result of one check.
    pub fn result(&self, kind: CheckKind) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.kind == kind)
    }
}

impl fmt::Display for FamilyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "check_family: {}", self.family)?;
        writeln!(f, "  theta  = {:?}", self.theta)?;
        writeln!(f, "  theta2 = {:?}", self.theta2)?;
        writeln!(
            f,
            "  {:<32} {:>11} {:>11}  {:<6} detail",
            "check", "error", "tolerance", "status"
        )?;
        for c in &self.checks {
            // Indent both lines of a check (the second holds its worst entry).
            writeln!(f, "  {}", c.to_string().replace('\n', "\n  "))?;
        }
        let failed = self.failures().len();
        if failed == 0 {
            write!(f, "  PASSED ({} checks)", self.checks.len())
        } else {
            write!(f, "  FAILED ({failed} of {} checks)", self.checks.len())
        }
    }
}

/// Runs every [`CheckKind`] on `family` at `theta` (see the [module documentation](self)).
///
/// A family method that returns an error inside a check fails that check (the error is
/// quoted in its `detail`); it does not abort the report.
///
/// # Errors
/// `InvalidParameter` for a bad [`CheckConfig`]; `DimensionMismatch` if `theta` (or
/// `config.theta2`) has the wrong length; `OutsideDomain` if either is not in the
/// natural domain.
///
/// # Example
/// ```
/// use mirror::{check_family, CheckConfig, CheckKind, CheckStatus, Exponential, Poisson};
///
/// // An exponential distribution with rate 2 (θ = −2): every check passes, and its
/// // density (continuous, one-dimensional) is normalised by quadrature to round-off.
/// let report = check_family(&Exponential, &[-2.0], &CheckConfig::default())?;
/// assert!(report.passed(), "{report}");
/// let norm = report.result(CheckKind::Normalisation).unwrap();
/// assert!(norm.error < 1e-12, "{norm}");
///
/// // A Poisson family at θ = log 3 (a lattice: its mass function is summed).
/// let report = check_family(&Poisson, &[3f64.ln()], &CheckConfig::default())?;
/// assert_eq!(report.checks.len(), 9);
/// assert!(report.checks.iter().all(|c| c.status == CheckStatus::Passed), "{report}");
/// println!("{report}"); // a table: one line per check, worst entries underneath
/// # Ok::<(), mirror::MirrorError>(())
/// ```
pub fn check_family<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    config: &CheckConfig,
) -> Result<FamilyReport> {
    config.validate()?;
    let p = family.dim();
    check_len("check_family: theta", p, theta.len())?;
    if !family.in_natural_domain(theta) {
        return Err(MirrorError::OutsideDomain {
            what: "natural parameter",
            reason: format!(
                "check_family: {theta:?} is not in the natural domain of {}",
                family.name()
            ),
        });
    }
    let mut rng = StdRng::seed_from_u64(config.seed);
    let theta2 = match &config.theta2 {
        Some(t2) => {
            check_len("check_family: theta2", p, t2.len())?;
            if !family.in_natural_domain(t2) {
                return Err(MirrorError::OutsideDomain {
                    what: "natural parameter",
                    reason: format!("check_family: theta2 {t2:?} is not in the natural domain"),
                });
            }
            t2.clone()
        }
        None => perturb(family, theta, config.perturbation, &mut rng),
    };

    let mut checks = Vec::with_capacity(9);
    checks.push(run(CheckKind::GradientFd, config.fd_tol, || {
        gradient_fd(family, theta, config.fd_step)
    }));
    checks.push(run(CheckKind::FisherFd, config.fd_tol, || {
        fisher_fd(family, theta, config.fd_step)
    }));
    checks.push(run(CheckKind::MeanInverse, config.inverse_tol, || {
        mean_inverse(family, theta)
    }));
    checks.push(run(CheckKind::Bregman, config.bregman_tol, || {
        bregman_pairs(family, theta, &theta2, config, &mut rng)
    }));
    checks.push(run(CheckKind::KlDual, config.inverse_tol, || {
        kl_dual(family, theta, &theta2)
    }));

    // One batch of draws from p_θ serves every Monte-Carlo check.
    let draws = draw(family, theta, config.mc_samples, &mut rng);
    let mc = |kind: CheckKind, f: &dyn Fn(&Draws) -> Result<Measured>| match &draws {
        Ok(d) => run(kind, config.mc_sigmas, || f(d)),
        Err(e) => failed(kind, config.mc_sigmas, format!("sampling failed: {e}")),
    };
    checks.push(mc(CheckKind::KlMonteCarlo, &|d| {
        kl_monte_carlo(family, theta, &theta2, d).map(Measured::from)
    }));
    checks.push(mc(CheckKind::MeanMonteCarlo, &|d| {
        mean_monte_carlo(family, theta, d)
    }));
    checks.push(mc(CheckKind::FisherMonteCarlo, &|d| {
        fisher_monte_carlo(family, theta, d)
    }));
    checks.push(match &draws {
        Ok(d) => normalisation(family, theta, d, config, &mut rng),
        Err(e) => failed(
            CheckKind::Normalisation,
            config.mc_sigmas,
            format!("sampling failed: {e}"),
        ),
    });

    Ok(FamilyReport {
        family: family.name(),
        theta: theta.to_vec(),
        theta2,
        checks,
    })
}

/// Settings of [`check_family_sweep`].
#[derive(Debug, Clone, PartialEq)]
pub struct SweepConfig {
    /// Settings of every [`check_family`] run; point $k$ of the sweep is checked with the
    /// seed `splitmix64(check.seed + k)`, so the whole sweep is a deterministic function of
    /// `check.seed`.
    pub check: CheckConfig,
    /// Where the points near the boundary go: for each given $\theta$, coordinate $j$ and
    /// direction $\pm e_j$ along which the natural domain ends at distance $d$, one point
    /// $\theta \pm (1 - \rho)\,d\,e_j$ per fraction $\rho$ here (the remaining fraction of
    /// the way to the boundary). Each $\rho$ must lie in $(0, 1)$; empty: no extra points.
    pub boundary_fractions: Vec<f64>,
    /// Farthest distance searched for a boundary, in units of $\max(1, |\theta_j|)$: a
    /// direction whose domain extends further counts as unbounded (no point).
    pub max_boundary_distance: f64,
}

impl Default for SweepConfig {
    /// `boundary_fractions = [0.1]`: a tenth of the distance from the boundary. Closer
    /// points are allowed but can leave what `f64` resolves: a Gamma density of shape
    /// below about $0.025$ has more than $10^{-8}$ of its mass below the smallest positive
    /// `f64`, so no quadrature can certify its normalisation there (from shape $0.6$,
    /// $\rho = 0.01$ would ask for shape $0.006$).
    fn default() -> Self {
        SweepConfig {
            check: CheckConfig::default(),
            boundary_fractions: vec![0.1],
            max_boundary_distance: 1e12,
        }
    }
}

/// Where a point of a [`SweepReport`] came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SweepOrigin {
    /// The `index`-th parameter given to [`check_family_sweep`].
    Given {
        /// Its position in the list.
        index: usize,
    },
    /// Generated near the boundary of the natural domain from a given parameter.
    NearBoundary {
        /// Position of the given parameter it was moved from.
        base: usize,
        /// The coordinate moved.
        coordinate: usize,
        /// The direction, $+1$ or $-1$.
        direction: f64,
        /// Distance from the given parameter to the boundary along that direction.
        boundary_distance: f64,
        /// The remaining fraction $\rho$ of that distance.
        fraction: f64,
    },
}

impl fmt::Display for SweepOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SweepOrigin::Given { index } => write!(f, "given #{index}"),
            SweepOrigin::NearBoundary {
                base,
                coordinate,
                direction,
                boundary_distance,
                fraction,
            } => write!(
                f,
                "#{base} {}e_{coordinate}, {fraction} of {boundary_distance:.3e} from the boundary",
                if direction > 0.0 { "+" } else { "-" }
            ),
        }
    }
}

/// What [`check_family_sweep`] found: one [`FamilyReport`] per parameter and a summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepReport {
    /// The family's name.
    pub family: String,
    /// Where each parameter came from (same order as `reports`).
    pub origins: Vec<SweepOrigin>,
    /// One report per parameter.
    pub reports: Vec<FamilyReport>,
}

impl SweepReport {
    /// Whether every report passed.
    pub fn passed(&self) -> bool {
        self.reports.iter().all(FamilyReport::passed)
    }

    /// The failed checks, with the position of their parameter.
    pub fn failures(&self) -> Vec<(usize, &CheckResult)> {
        self.reports
            .iter()
            .enumerate()
            .flat_map(|(k, r)| r.failures().into_iter().map(move |c| (k, c)))
            .collect()
    }

    /// The worst check of the sweep, with the position of its parameter: the one with the
    /// largest error relative to its tolerance (a NaN error counts as infinite; skipped
    /// checks are left out). `None` only for an empty sweep.
    pub fn worst(&self) -> Option<(usize, &CheckResult)> {
        self.reports
            .iter()
            .enumerate()
            .flat_map(|(k, r)| r.checks.iter().map(move |c| (k, c)))
            .filter(|(_, c)| c.status != CheckStatus::Skipped)
            .max_by(|a, b| tolerance_ratio(a.1).total_cmp(&tolerance_ratio(b.1)))
    }
}

/// Error over tolerance, NaN counted as $+\infty$.
fn tolerance_ratio(c: &CheckResult) -> f64 {
    let r = c.error / c.tolerance;
    if r.is_nan() {
        f64::INFINITY
    } else {
        r
    }
}

impl fmt::Display for SweepReport {
    /// One line per parameter, then the worst check, then every failed check.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "check_family_sweep: {} ({} points)",
            self.family,
            self.reports.len()
        )?;
        for (k, (r, o)) in self.reports.iter().zip(&self.origins).enumerate() {
            let failed = r.failures().len();
            let skipped = r
                .checks
                .iter()
                .filter(|c| c.status == CheckStatus::Skipped)
                .count();
            let mut verdict = if failed == 0 {
                "ok".to_string()
            } else {
                format!("FAILED {failed}")
            };
            if skipped > 0 {
                verdict.push_str(&format!(", {skipped} skipped"));
            }
            writeln!(f, "  [{k}] {verdict:<9} theta = {:?}  ({o})", r.theta)?;
        }
        if let Some((k, c)) = self.worst() {
            writeln!(
                f,
                "  worst check: {} at [{k}], {:.3e} x its tolerance:\n    {}",
                c.kind.label(),
                tolerance_ratio(c),
                c.to_string().replace('\n', "\n    ")
            )?;
        }
        for (k, c) in self.failures() {
            writeln!(f, "  [{k}] {}", c.to_string().replace('\n', "\n      "))?;
        }
        if self.passed() {
            write!(f, "  PASSED")
        } else {
            write!(f, "  FAILED ({} checks)", self.failures().len())
        }
    }
}

/// Runs [`check_family`] at every parameter in `thetas` and at generated points near the
/// boundary of the natural domain, and summarises (see [`SweepReport`]).
///
/// **Points near the boundary.** For each given $\theta$, coordinate $j$ and direction
/// $s = \pm1$: the harness probes $\theta + s\,t\,e_j$ at
/// $t = \max(1, |\theta_j|)\,2^k$, $k = 0, 1, \dots$, up to
/// [`SweepConfig::max_boundary_distance`] $\cdot \max(1, |\theta_j|)$, with
/// [`ExponentialFamily::in_natural_domain`]; at the first probe outside it bisects to the
/// boundary distance $d$ (to $10^{-12}$ relative), and adds
/// $\theta + s(1-\rho)\,d\,e_j$ for each $\rho$ in [`SweepConfig::boundary_fractions`]
/// (inside the domain, which is convex). A direction without a boundary adds nothing.
///
/// Deterministic: the points depend only on the family and `thetas`, and point $k$ is
/// checked with a seed derived from `config.check.seed` and $k$.
///
/// # Errors
/// As [`check_family`] (for a bad configuration, a parameter of the wrong length or
/// outside the domain, including a generated point the family's `in_natural_domain`
/// rejects although the domain is convex); `InvalidParameter` for a fraction outside
/// $(0, 1)$ or a `max_boundary_distance` that is not finite and $\ge 1$.
pub fn check_family_sweep<F, T>(
    family: &F,
    thetas: &[T],
    config: &SweepConfig,
) -> Result<SweepReport>
where
    F: ExponentialFamily + ?Sized,
    T: AsRef<[f64]>,
{
    config.check.validate()?;
    for &rho in &config.boundary_fractions {
        if !(rho > 0.0 && rho < 1.0) {
            return Err(MirrorError::InvalidParameter {
                name: "boundary_fractions",
                value: rho,
                reason: "each fraction in (0, 1)",
            });
        }
    }
    if !(config.max_boundary_distance >= 1.0 && config.max_boundary_distance.is_finite()) {
        return Err(MirrorError::InvalidParameter {
            name: "max_boundary_distance",
            value: config.max_boundary_distance,
            reason: "finite and >= 1",
        });
    }
    let p = family.dim();
    let mut points: Vec<(Vec<f64>, SweepOrigin)> = Vec::new();
    for (index, theta) in thetas.iter().enumerate() {
        let theta = theta.as_ref();
        check_len("check_family_sweep: theta", p, theta.len())?;
        if !family.in_natural_domain(theta) {
            return Err(MirrorError::OutsideDomain {
                what: "natural parameter",
                reason: format!(
                    "check_family_sweep: parameter #{index} {theta:?} is not in the natural \
                     domain of {}",
                    family.name()
                ),
            });
        }
        points.push((theta.to_vec(), SweepOrigin::Given { index }));
    }
    let given = points.len();
    for base in 0..given {
        let theta = points[base].0.clone();
        for coordinate in 0..p {
            for direction in [1.0, -1.0] {
                let Some(d) = boundary_distance(
                    family,
                    &theta,
                    coordinate,
                    direction,
                    config.max_boundary_distance,
                ) else {
                    continue;
                };
                for &fraction in &config.boundary_fractions {
                    let mut t = theta.clone();
                    t[coordinate] += direction * (1.0 - fraction) * d;
                    points.push((
                        t,
                        SweepOrigin::NearBoundary {
                            base,
                            coordinate,
                            direction,
                            boundary_distance: d,
                            fraction,
                        },
                    ));
                }
            }
        }
    }
    let mut reports = Vec::with_capacity(points.len());
    let mut origins = Vec::with_capacity(points.len());
    for (k, (theta, origin)) in points.into_iter().enumerate() {
        let cfg = CheckConfig {
            seed: splitmix64(config.check.seed.wrapping_add(k as u64)),
            ..config.check.clone()
        };
        reports.push(check_family(family, &theta, &cfg)?);
        origins.push(origin);
    }
    Ok(SweepReport {
        family: family.name(),
        origins,
        reports,
    })
}

/// Distance from `theta` to the boundary of the natural domain along
/// `direction`$\cdot e_j$, or `None` if the domain extends beyond
/// `max_distance`$\cdot\max(1, |\theta_j|)$ that way (see [`check_family_sweep`]).
fn boundary_distance<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    j: usize,
    direction: f64,
    max_distance: f64,
) -> Option<f64> {
    let unit = theta[j].abs().max(1.0);
    let mut x = theta.to_vec();
    let mut inside = |t: f64| {
        x[j] = theta[j] + direction * t;
        family.in_natural_domain(&x)
    };
    let (mut lo, mut hi) = (0.0, unit);
    while inside(hi) {
        lo = hi;
        hi *= 2.0;
        if hi > max_distance * unit {
            return None;
        }
    }
    for _ in 0..200 {
        if hi - lo <= 1e-12 * hi {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if inside(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

/// SplitMix64 (Steele, Lea and Flood 2014): decorrelates the seeds of consecutive points.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn failed(kind: CheckKind, tolerance: f64, detail: String) -> CheckResult {
    CheckResult {
        kind,
        error: f64::INFINITY,
        tolerance,
        status: CheckStatus::Failed,
        detail,
        worst: None,
    }
}

/// What a check measured: its error, the words and numbers of its detail, and for a
/// vector or matrix check the entry that gave the error.
struct Measured {
    error: f64,
    detail: String,
    worst: Option<WorstEntry>,
}

impl From<(f64, String)> for Measured {
    fn from((error, detail): (f64, String)) -> Self {
        Measured {
            error,
            detail,
            worst: None,
        }
    }
}

/// Running maximum of the entry-wise errors of a vector or matrix check, with the entry
/// that attains it (the first of equal ones; a NaN error sticks).
#[derive(Default)]
struct Worst {
    error: f64,
    entry: Option<WorstEntry>,
}

impl Worst {
    /// Offers the entry `(row, col)` with its error, the family's value (and the method
    /// that gave it) and the reference value (and what it is).
    fn offer(
        &mut self,
        error: f64,
        (row, col): (usize, Option<usize>),
        (found_by, found): (&'static str, f64),
        (expected, reference): (f64, &'static str),
    ) {
        if self.entry.is_none() || worse(error, self.error) {
            self.error = error;
            self.entry = Some(WorstEntry {
                row,
                col,
                found,
                found_by,
                expected,
                reference,
            });
        }
    }
    fn measured(self, detail: String) -> Measured {
        Measured {
            error: self.error,
            detail,
            worst: self.entry,
        }
    }
}

/// Runs one check whose closure returns what it measured; NaN errors fail.
fn run<M: Into<Measured>>(
    kind: CheckKind,
    tolerance: f64,
    f: impl FnOnce() -> Result<M>,
) -> CheckResult {
    match f() {
        Ok(m) => {
            let Measured {
                error,
                detail,
                worst,
            } = m.into();
            CheckResult {
                kind,
                error,
                tolerance,
                status: if error <= tolerance {
                    CheckStatus::Passed
                } else {
                    CheckStatus::Failed
                },
                detail,
                worst,
            }
        }
        Err(e) => failed(kind, tolerance, format!("family returned an error: {e}")),
    }
}

/// Whether `e` replaces the running maximum `max` (a NaN sticks, and fails the check).
fn worse(e: f64, max: f64) -> bool {
    e.is_nan() || e > max
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// $\theta + \epsilon z\odot\max(1,|\theta|)$, halved until in the natural domain.
fn perturb<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    scale: f64,
    rng: &mut StdRng,
) -> Vec<f64> {
    let z: Vec<f64> = theta.iter().map(|_| StandardNormal.sample(rng)).collect();
    let mut eps = scale;
    for _ in 0..60 {
        let cand: Vec<f64> = theta
            .iter()
            .zip(&z)
            .map(|(t, z)| t + eps * z * t.abs().max(1.0))
            .collect();
        if family.in_natural_domain(&cand) {
            return cand;
        }
        eps *= 0.5;
    }
    theta.to_vec()
}

/// Step for coordinate `j`: `fd_step·max(1,|θ_j|)`, halved until θ ± h e_j is in the domain.
fn fd_h<F: ExponentialFamily + ?Sized>(family: &F, theta: &[f64], j: usize, step: f64) -> f64 {
    let mut h = step * theta[j].abs().max(1.0);
    let mut x = theta.to_vec();
    for _ in 0..60 {
        x[j] = theta[j] + h;
        let up = family.in_natural_domain(&x);
        x[j] = theta[j] - h;
        if up && family.in_natural_domain(&x) {
            break;
        }
        h *= 0.5;
    }
    h
}

/// Richardson-extrapolated central difference of a vector function along `e_j`.
fn richardson<F>(theta: &[f64], j: usize, h: f64, n: usize, mut f: F) -> Result<Vec<f64>>
where
    F: FnMut(&[f64], &mut [f64]) -> Result<()>,
{
    let mut x = theta.to_vec();
    let mut central = |h: f64| -> Result<Vec<f64>> {
        let mut up = vec![0.0; n];
        let mut down = vec![0.0; n];
        x[j] = theta[j] + h;
        f(&x, &mut up)?;
        x[j] = theta[j] - h;
        f(&x, &mut down)?;
        x[j] = theta[j];
        Ok(up
            .iter()
            .zip(&down)
            .map(|(u, d)| (u - d) / (2.0 * h))
            .collect())
    };
    let d1 = central(h)?;
    let d2 = central(0.5 * h)?;
    Ok(d1
        .iter()
        .zip(&d2)
        .map(|(a, b)| (4.0 * b - a) / 3.0)
        .collect())
}

fn gradient_fd<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    step: f64,
) -> Result<Measured> {
    let p = family.dim();
    let mut mu = vec![0.0; p];
    family.mean(theta, &mut mu)?;
    let mut worst = Worst::default();
    for (j, &mu_j) in mu.iter().enumerate() {
        let h = fd_h(family, theta, j, step);
        let fd = richardson(theta, j, h, 1, |x, out| {
            out[0] = family.log_partition(x)?;
            Ok(())
        })?[0];
        let e = (fd - mu_j).abs() / (1.0 + mu_j.abs());
        worst.offer(
            e,
            (j, None),
            ("mean", mu_j),
            (fd, "central difference of A"),
        );
    }
    Ok(worst.measured("relative to 1 + |mean_j|".into()))
}

fn fisher_fd<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    step: f64,
) -> Result<Measured> {
    let p = family.dim();
    let fisher = family.fisher(theta)?;
    check_len("fisher: rows", p, fisher.nrows())?;
    check_len("fisher: columns", p, fisher.ncols())?;
    let scale = 1.0
        + (0..p)
            .flat_map(|i| (0..p).map(move |j| (i, j)))
            .fold(0.0f64, |m, (i, j)| m.max(fisher[(i, j)].abs()));
    let mut worst = Worst::default();
    let mut asym = 0.0f64;
    for j in 0..p {
        let h = fd_h(family, theta, j, step);
        // Column j of the Hessian: ∂(∇A)_i/∂θ_j.
        let col = richardson(theta, j, h, p, |x, out| family.mean(x, out))?;
        for i in 0..p {
            let f_ij = fisher[(i, j)];
            let e = (col[i] - f_ij).abs() / scale;
            worst.offer(
                e,
                (i, Some(j)),
                ("fisher", f_ij),
                (col[i], "central difference of grad A"),
            );
            let a = (f_ij - fisher[(j, i)]).abs() / scale;
            asym = asym.max(a);
            worst.offer(
                a,
                (i, Some(j)),
                ("fisher", f_ij),
                (fisher[(j, i)], "transposed entry, symmetry"),
            );
        }
    }
    Ok(worst.measured(format!(
        "relative to 1 + max|F| = {scale:.3e}; asymmetry {asym:.2e}"
    )))
}

fn mean_inverse<F: ExponentialFamily + ?Sized>(family: &F, theta: &[f64]) -> Result<Measured> {
    let p = family.dim();
    let mut mu = vec![0.0; p];
    family.mean(theta, &mut mu)?;
    let mut back = vec![0.0; p];
    family.natural_from_mean(&mu, &mut back)?;
    let rel = 1.0 + max_abs(theta);
    let mut worst = Worst::default();
    for (j, (b, t)) in back.iter().zip(theta).enumerate() {
        worst.offer(
            (b - t).abs() / rel,
            (j, None),
            ("natural_from_mean(mean)", *b),
            (*t, "theta"),
        );
    }
    Ok(worst.measured(format!("relative to 1 + max|theta|; recovered {back:?}")))
}

fn bregman_pairs<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    theta2: &[f64],
    config: &CheckConfig,
    rng: &mut StdRng,
) -> Result<Measured> {
    let map = LogPartition::new(family);
    let mut points = vec![theta.to_vec(), theta2.to_vec()];
    for k in 0..config.bregman_pairs {
        let scale = config.perturbation * [0.1, 1.0, 3.0][k % 3];
        points.push(perturb(family, theta, scale, rng));
    }
    let mut worst = Worst::default();
    let mut most_negative = 0.0f64;
    let mut diag_max = 0.0f64;
    for (a_i, a) in points.iter().enumerate() {
        let aa = family.log_partition(a)?;
        for (b_i, b) in points.iter().enumerate() {
            let ab = family.log_partition(b)?;
            let d = bregman(&map, a, b)?;
            let rel = 1.0 + aa.abs() + ab.abs();
            if a_i == b_i {
                diag_max = diag_max.max(d.abs());
                worst.offer(
                    d.abs() / rel,
                    (a_i, Some(b_i)),
                    ("D_A(a, b)", d),
                    (0.0, "D_A(a, a) = 0"),
                );
            } else {
                most_negative = most_negative.min(d);
                worst.offer(
                    (-d).max(0.0) / rel,
                    (a_i, Some(b_i)),
                    ("D_A(a, b)", d),
                    (0.0, "D_A(a, b) >= 0"),
                );
            }
        }
    }
    Ok(worst.measured(format!(
        "relative to 1 + |A(a)| + |A(b)|; {} points (0 = theta, 1 = theta2, then random), \
         entry (a, b) = D_A(a, b); most negative D = {most_negative:.2e}, \
         max |D(a,a)| = {diag_max:.2e}",
        points.len()
    )))
}

fn kl_dual<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    theta2: &[f64],
) -> Result<(f64, String)> {
    let p = family.dim();
    let kl = family.kl(theta, theta2)?;
    let (mut mu1, mut mu2) = (vec![0.0; p], vec![0.0; p]);
    family.mean(theta, &mut mu1)?;
    family.mean(theta2, &mut mu2)?;
    // D_{A*}(μ1, μ2) = A*(μ1) − A*(μ2) − ⟨∇A*(μ2), μ1 − μ2⟩ with ∇A*(μ2) = θ2.
    let diff: Vec<f64> = mu1.iter().zip(&mu2).map(|(a, b)| a - b).collect();
    let dual = family.conjugate(&mu1)? - family.conjugate(&mu2)? - dot(theta2, &diff);
    let err = (kl - dual).abs() / (1.0 + kl.abs());
    Ok((err, format!("relative; KL = {kl:.10e}, D_A* = {dual:.10e}")))
}

/// Draws from $p_\theta$ with their sufficient statistics, row-major.
struct Draws {
    n: usize,
    s: Vec<f64>,
    t: Vec<f64>,
}

fn draw<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    n: usize,
    rng: &mut StdRng,
) -> Result<Draws> {
    let (q, p) = (family.obs_dim(), family.dim());
    let mut s = vec![0.0; n * q];
    let mut t = vec![0.0; n * p];
    for i in 0..n {
        let si = &mut s[i * q..(i + 1) * q];
        family.sample(theta, rng, si)?;
        if !family.in_support(si) {
            return Err(MirrorError::OutsideSupport {
                family: family.name(),
                value: si.to_vec(),
            });
        }
        family.sufficient_stats(si, &mut t[i * p..(i + 1) * p]);
    }
    Ok(Draws { n, s, t })
}

/// Mean and standard error of a sample.
fn mean_se(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    (m, (v / n).sqrt())
}

fn kl_monte_carlo<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    theta2: &[f64],
    d: &Draws,
) -> Result<(f64, String)> {
    let q = family.obs_dim();
    let kl = family.kl(theta, theta2)?;
    let mut x = Vec::with_capacity(d.n);
    for i in 0..d.n {
        let s = &d.s[i * q..(i + 1) * q];
        x.push(family.log_density(theta, s)? - family.log_density(theta2, s)?);
    }
    let (m, se) = mean_se(&x);
    let se = se.max(1e-12 * (1.0 + kl.abs()));
    Ok((
        (m - kl).abs() / se,
        format!("standard errors; KL = {kl:.6e}, estimate {m:.6e} ± {se:.2e}"),
    ))
}

fn mean_monte_carlo<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    d: &Draws,
) -> Result<Measured> {
    let p = family.dim();
    let mut mu = vec![0.0; p];
    family.mean(theta, &mut mu)?;
    let fisher = family.fisher(theta)?;
    let n = d.n as f64;
    let mut worst = Worst::default();
    for j in 0..p {
        let col: Vec<f64> = (0..d.n).map(|i| d.t[i * p + j]).collect();
        let (m, se) = mean_se(&col);
        let se = se.max((fisher[(j, j)].max(0.0) / n).sqrt()).max(1e-300);
        worst.offer(
            (m - mu[j]).abs() / se,
            (j, None),
            ("mean", mu[j]),
            (m, "sample mean of T_j"),
        );
    }
    Ok(worst.measured(format!("standard errors ({} draws)", d.n)))
}

fn fisher_monte_carlo<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    d: &Draws,
) -> Result<Measured> {
    let p = family.dim();
    let fisher = family.fisher(theta)?;
    let n = d.n as f64;
    let means: Vec<f64> = (0..p)
        .map(|j| (0..d.n).map(|i| d.t[i * p + j]).sum::<f64>() / n)
        .collect();
    let mut worst = Worst::default();
    let mut u = vec![0.0; d.n];
    for j in 0..p {
        for k in j..p {
            for (i, ui) in u.iter_mut().enumerate() {
                *ui = (d.t[i * p + j] - means[j]) * (d.t[i * p + k] - means[k]);
            }
            let (c, se) = mean_se(&u);
            let c = c * n / (n - 1.0);
            let gauss = (fisher[(j, j)] * fisher[(k, k)] + fisher[(j, k)].powi(2)).max(0.0);
            let se = se.max((gauss / n).sqrt()).max(1e-300);
            let z = (c - fisher[(j, k)]).abs() / se;
            worst.offer(
                z,
                (j, Some(k)),
                ("fisher", fisher[(j, k)]),
                (c, "sample covariance of T"),
            );
        }
    }
    Ok(worst.measured(format!("standard errors ({} draws; upper triangle)", d.n)))
}

fn normalisation<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    d: &Draws,
    config: &CheckConfig,
    rng: &mut StdRng,
) -> CheckResult {
    let lattice = match config.support {
        SupportKind::Lattice => true,
        SupportKind::Continuous => false,
        SupportKind::Auto => d.s.iter().all(|x| x.fract() == 0.0),
    };
    if lattice {
        let (sum, too_large) = if family.obs_dim() == 1 {
            (
                lattice_sum_1d(family, theta, d),
                "lattice range of the draws wider than 1e7 points, or beyond 2^53 where \
                 consecutive integers are not all floats",
            )
        } else {
            (
                lattice_box(family, theta, d),
                "lattice box larger than 1e6 points",
            )
        };
        match sum {
            Ok(Some(r)) => run(CheckKind::Normalisation, config.norm_tol, || Ok(r)),
            Ok(None) => CheckResult {
                kind: CheckKind::Normalisation,
                error: 0.0,
                tolerance: config.norm_tol,
                status: CheckStatus::Skipped,
                detail: format!("not summed: {too_large}"),
                worst: None,
            },
            Err(e) => failed(
                CheckKind::Normalisation,
                config.norm_tol,
                format!("family returned an error: {e}"),
            ),
        }
    } else if family.obs_dim() == 1 {
        run(CheckKind::Normalisation, config.norm_tol, || {
            quadrature_normalisation(family, theta, d, config)
        })
    } else {
        run(CheckKind::Normalisation, config.mc_sigmas, || {
            importance_normalisation(family, theta, d, rng)
        })
    }
}

/// Sample quantiles at which [`quadrature_normalisation`] breaks the range (besides the
/// ends of the support): every piece then holds a fair share of the mass.
const QUANTILE_BREAKS: [f64; 7] = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0];

/// $\int h(s)e^{\langle T(s),\theta\rangle - A(\theta)}\,ds$ over the support of a
/// one-dimensional continuous family by [`integrate_exp_with_breaks`] of `log_density`, with the ends of the
/// support found by [`support_end`] and breaks at the [`QUANTILE_BREAKS`] of the draws;
/// error $|\int - 1|$ plus the quadrature's own error estimate.
fn quadrature_normalisation<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    d: &Draws,
    config: &CheckConfig,
) -> Result<(f64, String)> {
    let mut s = d.s.clone();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let (lo, hi) = (s[0], s[n - 1]);
    let width = (hi - lo).max(f64::MIN_POSITIVE);
    let a = support_end(family, lo, -1.0, width);
    let b = support_end(family, hi, 1.0, width);
    let mut breaks = vec![a];
    for q in QUANTILE_BREAKS {
        let x = s[((n - 1) as f64 * q).round() as usize];
        if x > *breaks.last().unwrap_or(&a) {
            breaks.push(x);
        }
    }
    if b > *breaks.last().unwrap_or(&a) {
        breaks.push(b);
    }
    // The quadrature needs a plain f64 integrand: the first error of the family (or the
    // first point where the density is NaN or +inf) is kept aside and reported.
    let mut family_error: Option<MirrorError> = None;
    let mut bad_point: Option<(f64, f64)> = None;
    let qconfig = QuadratureConfig {
        abs_tol: 1e-3 * config.norm_tol,
        rel_tol: 1e-3 * config.norm_tol,
        ..QuadratureConfig::default()
    };
    // From the log-density: a density that overflows next to an integrable singularity
    // (Gamma shape 0.04 at s = 1e-323) still gives finite terms.
    let integral = integrate_exp_with_breaks(
        |x| match family.log_density(theta, &[x]) {
            Ok(l) => {
                if (l.is_nan() || l == f64::INFINITY) && bad_point.is_none() {
                    bad_point = Some((x, l));
                }
                l
            }
            Err(e) => {
                family_error.get_or_insert(e);
                f64::NAN
            }
        },
        &breaks,
        &qconfig,
    );
    if let Some(e) = family_error {
        return Err(e);
    }
    if let Some((x, l)) = bad_point {
        return Ok((
            f64::INFINITY,
            format!("absolute; the log-density at s = {x:e} inside the support is {l}"),
        ));
    }
    let r = integral?;
    let note = if r.converged {
        ""
    } else {
        " (quadrature did not reach its tolerance)"
    };
    Ok((
        (r.value - 1.0).abs() + r.error,
        format!(
            "absolute, plus the quadrature error; quadrature over [{a:?}, {b:?}] \
             ({} pieces, {} evaluations) = {:.15}, quadrature error {:.1e}{note}",
            r.pieces, r.evaluations, r.value, r.error
        ),
    ))
}

/// The end of the support of a one-dimensional family beyond `inside` (a point of the
/// support) in direction `dir` ($\pm1$): probes $\text{inside} + \text{dir}\cdot w 2^k$,
/// $k = 0, 1, \dots$ with [`ExponentialFamily::in_support`] until one is outside the
/// support (then bisects on the ordered bit patterns of `f64` to the last point inside,
/// adjacent floats apart) or the probe leaves the finite numbers ($\pm\infty$: the support
/// is unbounded that way). The support is taken to be an interval.
fn support_end<F: ExponentialFamily + ?Sized>(family: &F, inside: f64, dir: f64, w: f64) -> f64 {
    let mut last_in = inside;
    let mut step = w;
    loop {
        let x = inside + dir * step;
        if !x.is_finite() {
            return dir * f64::INFINITY;
        }
        if !family.in_support(&[x]) {
            return bisect_support(family, last_in, x);
        }
        last_in = x;
        step *= 2.0;
    }
}

/// Bisection between a point inside the support and one outside, on the ordered bit
/// patterns of `f64` (so it ends with adjacent floats after at most 64 steps, also across
/// zero and at any scale); returns the last point inside.
fn bisect_support<F: ExponentialFamily + ?Sized>(family: &F, inside: f64, outside: f64) -> f64 {
    let key = |x: f64| -> i64 {
        let b = x.to_bits() as i64;
        if b < 0 {
            b ^ i64::MAX
        } else {
            b
        }
    };
    let from_key = |k: i64| -> f64 {
        let b = if k < 0 { k ^ i64::MAX } else { k };
        f64::from_bits(b as u64)
    };
    let (mut k_in, mut k_out) = (key(inside), key(outside));
    while (i128::from(k_out) - i128::from(k_in)).abs() > 1 {
        let mid = ((i128::from(k_in) + i128::from(k_out)) / 2) as i64;
        if family.in_support(&[from_key(mid)]) {
            k_in = mid;
        } else {
            k_out = mid;
        }
    }
    from_key(k_in)
}

/// Largest number of lattice points summed between the extreme draws in one dimension.
const LATTICE_1D_MAX: f64 = 1e7;

/// $\sum_s p_\theta(s)$ over the integers from the draws outwards; `None` (not summed)
/// when the draws span more than [`LATTICE_1D_MAX`] points or reach $2^{53}$, beyond
/// which $x + 1$ is not always a new float.
fn lattice_sum_1d<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    d: &Draws,
) -> Result<Option<(f64, String)>> {
    let lo = d.s.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = d.s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exact_limit = 2f64.powi(53) - 2.0 * LATTICE_1D_MAX;
    if hi - lo + 1.0 > LATTICE_1D_MAX || lo.abs().max(hi.abs()) > exact_limit {
        return Ok(None);
    }
    let mut sum = 0.0;
    let mut x = lo;
    while x <= hi {
        sum += family.log_density(theta, &[x])?.exp();
        x += 1.0;
    }
    let mut terms = (hi - lo + 1.0) as usize;
    for dir in [1.0, -1.0] {
        let mut x = if dir > 0.0 { hi + 1.0 } else { lo - 1.0 };
        let mut small = 0;
        while small < 10 && terms < 10_000_000 {
            let term = family.log_density(theta, &[x])?.exp();
            sum += term;
            terms += 1;
            small = if term < 1e-17 * sum { small + 1 } else { 0 };
            x += dir;
        }
    }
    Ok(Some((
        (sum - 1.0).abs(),
        format!("absolute; sum of {terms} lattice terms = {sum:.15}"),
    )))
}

fn lattice_box<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    d: &Draws,
) -> Result<Option<(f64, String)>> {
    let q = family.obs_dim();
    let mut lo = vec![f64::INFINITY; q];
    let mut hi = vec![f64::NEG_INFINITY; q];
    for i in 0..d.n {
        for k in 0..q {
            lo[k] = lo[k].min(d.s[i * q + k]);
            hi[k] = hi[k].max(d.s[i * q + k]);
        }
    }
    let mut total = 1.0f64;
    for k in 0..q {
        let pad = ((hi[k] - lo[k]) / 2.0).ceil().max(2.0);
        lo[k] -= pad;
        hi[k] += pad;
        total *= hi[k] - lo[k] + 1.0;
    }
    if total > 1e6 {
        return Ok(None);
    }
    let mut x = lo.clone();
    let mut sum = 0.0;
    'outer: loop {
        sum += family.log_density(theta, &x)?.exp();
        for k in 0..q {
            x[k] += 1.0;
            if x[k] <= hi[k] {
                continue 'outer;
            }
            x[k] = lo[k];
        }
        break;
    }
    Ok(Some((
        (sum - 1.0).abs(),
        format!("absolute; sum over a box of {total} lattice points = {sum:.15}"),
    )))
}

/// $\hat Z = \frac1n \sum p_\theta(s_i)/q(s_i)$ with a multivariate-$t_3$ proposal $q$.
fn importance_normalisation<F: ExponentialFamily + ?Sized>(
    family: &F,
    theta: &[f64],
    d: &Draws,
    rng: &mut StdRng,
) -> Result<(f64, String)> {
    let q = family.obs_dim();
    let n = d.n as f64;
    let nu = 3.0;
    let loc: Vec<f64> = (0..q)
        .map(|k| (0..d.n).map(|i| d.s[i * q + k]).sum::<f64>() / n)
        .collect();
    let mut scale = Mat::from_fn(q, q, |a, b| {
        (0..d.n)
            .map(|i| (d.s[i * q + a] - loc[a]) * (d.s[i * q + b] - loc[b]))
            .sum::<f64>()
            / (n - 1.0)
    });
    let trace: f64 = (0..q).map(|k| scale[(k, k)]).sum();
    for k in 0..q {
        scale[(k, k)] += 1e-9 * trace.max(1e-300);
    }
    let llt = scale
        .llt(faer::Side::Lower)
        .map_err(|_| MirrorError::NotPositiveDefinite {
            what: "proposal scale (sample covariance of draws)",
            pivot: 0,
        })?;
    let l = llt.L();
    let log_det: f64 = 2.0 * (0..q).map(|k| l[(k, k)].ln()).sum::<f64>();
    let qf = q as f64;
    let log_norm = ln_gamma((nu + qf) / 2.0)
        - ln_gamma(nu / 2.0)
        - 0.5 * qf * (nu * std::f64::consts::PI).ln()
        - 0.5 * log_det;
    let chi = ChiSquared::new(nu).map_err(|_| MirrorError::NonFinite {
        what: "chi-squared proposal",
    })?;
    let mut w = Vec::with_capacity(d.n);
    let mut s = vec![0.0; q];
    for _ in 0..d.n {
        let z: Vec<f64> = (0..q).map(|_| StandardNormal.sample(rng)).collect();
        let g: f64 = chi.sample(rng);
        let r = (nu / g).sqrt();
        for a in 0..q {
            s[a] = loc[a] + r * (0..=a).map(|b| l[(a, b)] * z[b]).sum::<f64>();
        }
        // Mahalanobis distance through the Cholesky factor: |L⁻¹(s − loc)|² = r²|z|².
        let centred = Mat::from_fn(q, 1, |a, _| s[a] - loc[a]);
        let y = llt.solve(&centred);
        let maha: f64 = (0..q).map(|a| centred[(a, 0)] * y[(a, 0)]).sum();
        let log_q = log_norm - 0.5 * (nu + qf) * (maha / nu).ln_1p();
        let log_p = family.log_density(theta, &s)?;
        w.push((log_p - log_q).exp());
    }
    let (z_hat, se) = mean_se(&w);
    let se = se.max(1e-12);
    Ok((
        (z_hat - 1.0).abs() / se,
        format!("standard errors; importance estimate of the integral {z_hat:.6} ± {se:.2e}"),
    ))
}
