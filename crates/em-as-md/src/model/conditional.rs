//! Conditional exponential families: the one place where the model meets the geometry.
//!
//! For each row $i$ the complete-data law of $(y, z)$ given $x_i$ is an exponential
//! family over $(y, z)$,
//! $$ p(y, z \mid x_i; \theta) = h(y, z)\exp\big(\langle T(y, z), \varphi_i(\theta)\rangle -
//!    A(\varphi_i(\theta))\big), $$
//! whose statistic $T$ and log-partition $A$ belong to a [`mirror::ExponentialFamily`]
//! over $(y, z)$ (observation = the target entries followed by the latent label $z$ as
//! a number), and the **realisation map** $\theta \mapsto \varphi_i(\theta)$ turns the
//! model parameters into row $i$'s natural parameter. EM, mirror descent at any step,
//! gradient descent and the diagnostics read the model only through this trait.

use mirror::ExponentialFamily;

/// A transposed row Jacobian block $J_i^\top$ ($n_\theta \times p$, a view into a stacked
/// $\mathbf J^\top$), written by [`ConditionalFamily::realise_jacobian_t`].
pub type JacT<'a> = faer::MatMut<'a, f64>;

/// The unnormalised row sums of [`ConditionalFamily::observed_sums`] at one $\theta$,
/// with $v_i = \nabla A(\varphi_i) - \mathbb E_{z\mid y_i;\varphi_i}\[T(y_i, z)\]$.
#[derive(Debug, Clone)]
pub struct ObservedSums {
    /// $\sum_i \log p(y_i\mid x_i;\theta)$.
    pub log_lik: f64,
    /// $\sum_i J_i^\top v_i$ ($n$ times the gradient of the unpenalised $L$).
    pub gradient: Vec<f64>,
    /// $\sum_i J_i^\top\nabla^2A(\varphi_i)J_i$.
    pub complete: faer::Mat<f64>,
    /// $\sum_i J_i^\top\mathrm{Cov}_{z\mid y_i;\varphi_i}\[T(y_i, z)\]J_i$.
    pub missing: faer::Mat<f64>,
    /// $\sum_i\sum_j (v_i)_j\,\nabla^2_\theta\varphi_{ij}(\theta)$ (zero for a linear
    /// realisation).
    pub curvature: faer::Mat<f64>,
}

/// A latent-variable model whose complete-data law given $x$ is an exponential family,
/// reached through a realisation map $\theta \mapsto \varphi_i(\theta)$.
pub trait ConditionalFamily: Send + Sync {
    /// The complete-data family over $(y, z)$: observation `[y_1, …, y_q, z]`,
    /// statistic $T(y, z)$, log-partition $A(\varphi)$, mean $\nabla A$, Fisher $\nabla^2 A$.
    fn complete(&self) -> &dyn ExponentialFamily;
    /// Number of latent states $K$ ($z \in \{0, …, K-1\}$).
    fn n_latent(&self) -> usize;
    /// Length of the flattened parameter vector $\theta$.
    fn n_params(&self) -> usize;
    /// Length of one feature row $x_i$ this model expects.
    fn n_features(&self) -> usize;
    /// The realisation map: writes $\varphi_i(\theta)$ (length `complete().dim()`).
    fn realise(&self, theta: &[f64], x: &[f64], phi: &mut [f64]);
    /// Vector–Jacobian product: `grad += J_i(θ)ᵀ v` with $J_i = \partial\varphi_i/\partial\theta$.
    fn realise_vjp(&self, theta: &[f64], x: &[f64], v: &[f64], grad: &mut [f64]);
    /// A penalty $R(\theta) \ge 0$ on the parameters (default none): the model's
    /// objective is then the penalised $L(\theta) = -\frac1n\sum_i\log p(y_i\mid x_i;
    /// \theta) + \frac1n R(\theta)$ ([`Problem::objective`](crate::solve::Problem::objective)),
    /// and an M-step that maximises $Q - R$ makes EM monotone in it (a ridge, e.g.
    /// [`GateConfig::ridge`](crate::model::gate::GateConfig::ridge), [`Expert::ridge`](crate::model::expert::Expert::ridge)).
    fn penalty(&self, _theta: &[f64]) -> f64 {
        0.0
    }
    /// `grad += ∇R(θ)` for the [`penalty`](Self::penalty) (default: nothing to add).
    fn penalty_gradient(&self, _theta: &[f64], _grad: &mut [f64]) {}
    /// Whether [`penalty`](Self::penalty) can be non-zero. Mirror descent with a step
    /// $\eta \ne 1$ and gradient EM refuse a penalised model (their subproblem has no
    /// penalty term); EM, SQUAREM and gradient descent handle it.
    fn is_penalised(&self) -> bool {
        false
    }
    /// $L(\theta)$ as [`Problem::objective`](crate::Problem::objective) defines it
    /// (mean negative log-likelihood plus the penalty over $n$), computed by the model's
    /// own pass over `data` — equal to the generic per-row sum up to round-off and the
    /// same for any thread count. Default `None`: the caller sums the generic row
    /// posteriors. [`MixtureOfExperts`](crate::MixtureOfExperts) answers with its E-step's
    /// pass without the sums and responsibilities (the objective is what every run
    /// evaluates at its start, and the generic path is several times slower).
    fn objective_pass(
        &self,
        data: &crate::data::Dataset,
        theta: &[f64],
    ) -> Option<crate::Result<f64>> {
        let _ = (data, theta);
        None
    }
    /// A row evaluator specialised to the parameter point `theta`
    /// ([`PointRows`](crate::solve::problem::PointRows)): the same numbers as
    /// [`realise`](Self::realise), the row posterior and
    /// [`complete_mean`](Self::complete_mean), with what does not depend on the row
    /// computed once. Default `None`: callers go through
    /// [`point_rows`](crate::solve::problem::point_rows), which then uses the generic row
    /// functions ([`GenericPointRows`](crate::solve::problem::GenericPointRows)), so a
    /// model without one works unchanged. [`MixtureOfExperts`](crate::MixtureOfExperts)
    /// offers one.
    fn point_rows<'a>(
        &'a self,
        theta: &'a [f64],
    ) -> Option<Box<dyn crate::solve::problem::PointRows + 'a>> {
        let _ = theta;
        None
    }
    /// The row sums of the complete and missing information at `theta`, computed by the
    /// model: $\big(\sum_i J_i^\top\nabla^2A(\varphi_i)J_i,\ \sum_i J_i^\top\mathrm{Cov}_{z\mid y_i;\varphi_i}\[T(y_i, z)\]J_i\big)$
    /// ($n_\theta\times n_\theta$, not divided by $n$), equal up to round-off to the
    /// per-row sums the diagnostics form from [`realise_jacobian_t`](Self::realise_jacobian_t)
    /// and [`complete_fisher`](Self::complete_fisher), and the same for any thread count.
    /// Default `None`: the caller forms the per-row sums. `None` is also the answer for
    /// anything irregular (a row outside the natural domain), so that the caller's generic
    /// path reports the error. [`MixtureOfExperts`](crate::MixtureOfExperts) computes them
    /// as weighted Gram products when its expert has the GLM parameter layout (taking
    /// its `natural` to be the GLM map, as [`glm_newton`](crate::model::expert::glm_newton)
    /// does), and answers `None` otherwise.
    fn information_sums(
        &self,
        data: &crate::data::Dataset,
        theta: &[f64],
    ) -> Option<(faer::Mat<f64>, faer::Mat<f64>)> {
        let _ = (data, theta);
        None
    }
    /// The first matrix of [`information_sums`](Self::information_sums) alone,
    /// $\sum_i J_i^\top\nabla^2A(\varphi_i)J_i$ (not divided by $n$): what mirror
    /// descent's preconditioner needs at every step, without the missing information.
    /// Default: [`information_sums`](Self::information_sums)' first matrix (a model that
    /// forms both at once need not override it). [`MixtureOfExperts`](crate::MixtureOfExperts)
    /// forms only its weighted Grams.
    fn complete_information_sums(
        &self,
        data: &crate::data::Dataset,
        theta: &[f64],
    ) -> Option<faer::Mat<f64>> {
        self.information_sums(data, theta).map(|(ic, _)| ic)
    }
    /// Everything Newton's method on $L$ needs at `theta`, from **one** pass over `data`
    /// ([`ObservedSums`]): the log-likelihood, the row sum of $J_i^\top v_i$ (the
    /// gradient of $nL$ without the penalty) and the three information row sums of
    /// [`information_sums`](Self::information_sums) and
    /// [`curvature_sums`](Self::curvature_sums). Default `None`: the caller
    /// ([`observed`](crate::solve::observed::observed)) takes the generic per-row pass and
    /// the curvature separately. `None` is also the answer for anything irregular.
    /// [`MixtureOfExperts`](crate::MixtureOfExperts) forms them as weighted Gram products
    /// when its expert has the GLM parameter layout.
    fn observed_sums(&self, data: &crate::data::Dataset, theta: &[f64]) -> Option<ObservedSums> {
        let _ = (data, theta);
        None
    }
    /// The row sum of the realisation's curvature term at `theta`, computed by the model:
    /// $\sum_i\sum_j (v_i)_j\,\nabla^2_\theta\varphi_{ij}(\theta)$ with
    /// $v_i = \nabla A(\varphi_i) - \mathbb E_{z\mid y_i;\varphi_i}\[T(y_i, z)\]$
    /// ($n_\theta\times n_\theta$, symmetric up to round-off, not divided by $n$), in closed form, and the
    /// same for any thread count. Default `None`: the diagnostics then take central
    /// differences of [`realise_vjp`](Self::realise_vjp) (truncation error of order
    /// $10^{-10}$), so a model without it works unchanged. `None` is also the answer for
    /// anything irregular (a row outside the natural domain). [`MixtureOfExperts`](crate::MixtureOfExperts)
    /// offers it when its expert has the GLM parameter layout:
    /// $-\sum_i\sum_k(\rho_k - r_k)\,E_k^\top\nabla^2A_F(\eta_k)E_k$ as weighted Gram
    /// products ($E_k = \partial\eta_k/\partial\theta$, $\rho$ the gate and $r$ the
    /// posterior probabilities).
    fn curvature_sums(&self, data: &crate::data::Dataset, theta: &[f64]) -> Option<faer::Mat<f64>> {
        let _ = (data, theta);
        None
    }
    /// Whether $\varphi_i$ is linear in $\theta$ (then mirror descent needs no projection).
    fn is_linear(&self) -> bool {
        false
    }
    /// The Jacobian $J_i(\theta) = \partial\varphi_i/\partial\theta$ (`complete().dim()` ×
    /// `n_params()`), assembled column by column from [`realise_vjp`](Self::realise_vjp)
    /// with unit vectors (override where a direct formula is cheaper).
    fn realise_jacobian(&self, theta: &[f64], x: &[f64]) -> faer::Mat<f64> {
        let p = self.complete().dim();
        let mut jac = faer::Mat::zeros(p, self.n_params());
        let mut e = vec![0.0; p];
        let mut row = vec![0.0; self.n_params()];
        for r in 0..p {
            e[r] = 1.0;
            row.iter_mut().for_each(|v| *v = 0.0);
            self.realise_vjp(theta, x, &e, &mut row);
            for (c, v) in row.iter().enumerate() {
                jac[(r, c)] = *v;
            }
            e[r] = 0.0;
        }
        jac
    }
    /// Length of the `work` buffer that [`complete_log_partition`](Self::complete_log_partition),
    /// [`complete_mean`](Self::complete_mean), [`complete_fisher`](Self::complete_fisher)
    /// and [`realise_jacobian_t`](Self::realise_jacobian_t) need. Default:
    /// `complete().dim() + n_params()` (the unit vector and row of the default Jacobian).
    fn row_work_len(&self) -> usize {
        self.complete().dim() + self.n_params()
    }
    /// $A(\varphi)$ of [`complete`](Self::complete), using `work` (length
    /// [`row_work_len`](Self::row_work_len)) instead of allocating where a model overrides it.
    /// Default: `complete().log_partition(phi)`.
    ///
    /// # Errors
    /// As the family's `log_partition`.
    fn complete_log_partition(&self, phi: &[f64], work: &mut [f64]) -> mirror::Result<f64> {
        let _ = work;
        self.complete().log_partition(phi)
    }
    /// $\nabla A(\varphi)$ into `mu`, using `work` as
    /// [`complete_log_partition`](Self::complete_log_partition). Default: `complete().mean`.
    ///
    /// # Errors
    /// As the family's `mean`.
    fn complete_mean(&self, phi: &[f64], mu: &mut [f64], work: &mut [f64]) -> mirror::Result<()> {
        let _ = work;
        self.complete().mean(phi, mu)
    }
    /// $\nabla^2 A(\varphi)$ into `out` (`dim` × `dim`), using `work` as
    /// [`complete_log_partition`](Self::complete_log_partition). Default: copies
    /// `complete().fisher(phi)` (which allocates).
    ///
    /// # Errors
    /// As the family's `fisher`.
    fn complete_fisher(
        &self,
        phi: &[f64],
        mut out: faer::MatMut<'_, f64>,
        work: &mut [f64],
    ) -> mirror::Result<()> {
        let _ = work;
        let f = self.complete().fisher(phi)?;
        out.copy_from(&f);
        Ok(())
    }
    /// The **transposed** Jacobian $J_i(\theta)^\top$ (`n_params()` × `complete().dim()`)
    /// into `jac_t`: column $r$ is $J_i^\top e_r = \partial\varphi_{ir}/\partial\theta$, the
    /// layout of a stacked $\mathbf J^\top$ block. `work` has length
    /// [`row_work_len`](Self::row_work_len). Default: column by column from
    /// [`realise_vjp`](Self::realise_vjp) with unit vectors, as
    /// [`realise_jacobian`](Self::realise_jacobian), without allocating.
    fn realise_jacobian_t(&self, theta: &[f64], x: &[f64], mut jac_t: JacT<'_>, work: &mut [f64]) {
        let p = self.complete().dim();
        let np = self.n_params();
        let (e, row) = work[..p + np].split_at_mut(p);
        e.fill(0.0);
        for r in 0..p {
            e[r] = 1.0;
            row.fill(0.0);
            self.realise_vjp(theta, x, e, row);
            for (c, v) in row.iter().enumerate() {
                jac_t[(c, r)] = *v;
            }
            e[r] = 0.0;
        }
    }
}
