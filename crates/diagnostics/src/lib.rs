//! # diagnostics
//!
//! Measured relative smoothness and relative strong convexity of the mixture-of-experts
//! objective with respect to the stacked log-partition mirror map, the linear rate they
//! certify, the rate actually observed, and the EM-map / missing-information rates — for
//! the user's own fit. The crate reads the model only through the public traits of
//! `em-as-md` ([`ConditionalFamily`](em_as_md::ConditionalFamily),
//! [`Problem`](em_as_md::Problem), [`EmModel`](em_as_md::EmModel)).
//!
//! ## Geometry
//! Row $i$'s complete-data law is $p(y, z\mid x_i;\theta) = h(y,z)\exp(\langle T(y,z),
//! \varphi_i(\theta)\rangle - A(\varphi_i(\theta)))$. Stack $\Phi = (\varphi_1,\dots,\varphi_n)$,
//! $$ \mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i), \qquad
//!    \ell(\Phi) = -\frac1n\sum_i\log\sum_z h(y_i,z)\,e^{\langle T(y_i,z),\varphi_i\rangle - A(\varphi_i)},
//!    \qquad L(\theta) = \ell(\Phi(\theta)), $$
//! and write $D_f(\Phi,\Phi') = f(\Phi) - f(\Phi') - \langle\nabla f(\Phi'), \Phi-\Phi'\rangle$.
//!
//! ## Relative smoothness and relative strong convexity
//! On a set $S$ of realisable parameters, $L$ is $\hat L$-smooth and $\alpha$-strongly convex
//! relative to $\mathcal A$ when, for all $\theta, \theta' \in S$,
//! $$ \alpha\,D_{\mathcal A}(\Phi(\theta), \Phi(\theta')) \;\le\; D_\ell(\Phi(\theta), \Phi(\theta'))
//!    \;\le\; \hat L\,D_{\mathcal A}(\Phi(\theta), \Phi(\theta')). $$
//! $\hat L = 1$ always: $\mathcal A - \ell = \frac1n\sum_i\log\sum_z h(y_i,z)e^{\langle T(y_i,z),\varphi_i\rangle}$
//! is convex (each term is the log-partition of row $i$'s posterior over $z$). The crate
//! measures the ratio $\rho = D_\ell/D_{\mathcal A}$ on sampled pairs ([`ratios`]):
//! $\hat L = \max\rho$, $\hat\alpha = \min\rho$.
//!
//! ## Linear rate
//! EM is mirror descent on $\ell$ over $\{\Phi(\theta)\}$ with mirror map $\mathcal A$ and unit
//! step. If $\alpha > 0$ on a region containing the iterates,
//! $$ L(\theta_t) - L(\theta^\star) \;\le\; (1-\alpha)^t\,\big(L(\theta_0) - L(\theta^\star)\big), $$
//! so $\epsilon$-suboptimality needs at most $\lceil\log(\epsilon/\Delta_0)/\log(1-\alpha)\rceil$
//! iterations ([`rates`]). The certificate ([`certificate`]) holds $1-\hat\alpha$ against the
//! rate observed on the run.
//!
//! ## Missing information
//! With $J_i = \partial\varphi_i/\partial\theta$ ([`information`]),
//! $$ I_c = \frac1n\sum_i J_i^\top\nabla^2A(\varphi_i)J_i, \qquad
//!    I_m = \frac1n\sum_i J_i^\top\,\mathrm{Cov}_{z\mid y_i}[T(y_i,z)]\,J_i, \qquad
//!    M(\theta) = I_c^{-1}I_m . $$
//! Since $\nabla^2\ell = \nabla^2\mathcal A - \mathrm{Cov}_{\text{post}}\[T\]$ row by row, for a short
//! pair in direction $\delta$
//! $$ \rho \to 1 - \frac{\delta^\top I_m\delta}{\delta^\top I_c\delta}, \qquad
//!    \inf\rho = 1 - \lambda_{\max}(M), $$
//! so on a convex set where the realisation is linear (SymMoLinE, SymMoLogE), $L$ is
//! $\alpha$-strongly convex relative to $\mathcal A$ exactly when $\lambda_{\max}(M(\theta)) \le 1-\alpha$
//! there. At a fixed point the EM map has Jacobian $DM = (I_c + C)^{-1}I_m$, with $C$ the
//! realisation-curvature term ($C = 0$ for linear realisations, giving the classical
//! $DM = I_c^{-1}I_m$), so EM's parameter error contracts by $\lambda = \rho(DM)$ per
//! iteration and $L - L^\star$ by $\lambda^2$. The certificate reports $1 - \max\lambda_{\max}(M)$
//! over the sampled region as a second estimate of $\alpha$, the Louis rate
//! $\lambda_{\max}((I_c+C)^{-1}I_m)$, and the SEM radius of $DM$ measured by finite
//! differences of the EM map ([`rates::em_map_jacobian`]).
//!
//! ## Standard errors
//! $I_{\text{obs}} = I_c + C - I_m = \nabla^2L$ (Louis), $\mathrm{se}_j = \sqrt{[I_{\text{obs}}^{-1}]_{jj}/n}$
//! ([`stderr`]).
//!
//! ## Entry point
//! [`certify`] (models with an EM map) and [`certify_with_em_map`] (any conditional family)
//! take the iterates $\theta_0..\theta_T$ and their objective values and return a
//! [`Certificate`] with a [`Verdict`].
//!
//! ```
//! use diagnostics::{certify, CertifyConfig};
//! use em_as_md::{Em, FitState, Problem, Solver, SymMoLinE};
//!
//! let model = SymMoLinE::new(2, 1.0)?;
//! let truth = model.random_theta(3.0, 1.0, 1)?;
//! let (data, _) = model.simulate(&truth, 500, 2)?;
//! let problem = Problem::new(&model, &data)?;
//! // Run EM from a perturbed start, keeping every iterate and its objective value.
//! let theta0: Vec<f64> = truth.iter().map(|v| 0.7 * v).collect();
//! let mut em = Em::new();
//! let l0 = problem.objective(&theta0)?;
//! let mut state = em.init(&problem, FitState::new(theta0, l0))?;
//! let (mut traj, mut vals) = (vec![state.theta.clone()], vec![state.objective]);
//! for _ in 0..100 {
//!     let (next, _) = em.next_iter(&problem, state)?;
//!     traj.push(next.theta.clone());
//!     vals.push(next.objective);
//!     state = next;
//! }
//! let cert = certify(&problem, &traj, &vals, &CertifyConfig::default())?;
//! println!("{cert}");
//! assert!(cert.l_hat.unwrap() <= 1.0 + 1e-9 + cert.l_hat_roundoff);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod certificate;
pub mod error;
pub mod information;
pub mod rates;
pub mod ratios;
pub mod stderr;
#[cfg(test)]
pub(crate) mod testkit;

pub use certificate::{
    certify, certify_with_em_map, em_map_of, Certificate, CertifyConfig, Verdict,
};
pub use em_as_md;
pub use error::{DiagnosticsError, Result};
pub use faer;
pub use mirror;
pub use rand;
pub use ratios::RatioConfig;
pub use stderr::StandardErrors;
