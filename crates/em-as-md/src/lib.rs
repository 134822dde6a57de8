//! # em-as-md
//!
//! Mixtures of experts fitted by Expectation–Maximization, with EM expressed as projected
//! mirror descent with unit step whose mirror map is the stacked complete-data
//! log-partition $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$.
//!
//! ## Layout
//!
//! The dependency arrows run one way: [`inner`] ← [`model`] ← [`solve`] ← [`fit`], with
//! [`data`] beneath them all.
//!
//! | folder | what it holds |
//! |---|---|
//! | [`data`] | [`Dataset`]: features (column-major) and targets; CSV loading ([`data::csv`]) |
//! | [`inner`] | the inner numerics: solver reports, Cholesky policy, weighted Grams, L-BFGS, parallel folds |
//! | [`model`] | conditional families, the E-/M-step capability, experts (one file each) and their descriptions, the registry, the gate, mixtures, symmetric models |
//! | [`solve`] | the [`Solver`] trait, the [`Executor`], observers, EM, mirror descent, GD, gradient EM |
//! | [`shard`] | shard statistics: E-step and Newton rounds as mergeable, serialisable sums over chunks of rows; EM over a row source ([`data::source`]) |
//! | [`fit`] | validated hyperparameters, initialisation, restarts, alignment, prediction, model files, standardisation of columns |
//! | `testkit` | (feature `testkit`, on by default) the public equivalence harness: EM vs MD($\eta$) gaps for any model, proptest strategies for random instances |

pub mod data;
pub mod error;
pub mod fit;
pub mod inner;
pub mod model;
pub mod shard;
pub mod solve;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use data::Dataset;
pub use error::{MoeError, RegistryError, Result};
pub use fit::init::InitMethod;
pub use fit::{FitReport, FittedMoe, MoeParams, MoeValidParams};
pub use inner::{fold_rows, InnerStats, Mergeable};
pub use model::expert::{
    CovarianceType, Expert, ExpertSpec, FamilyPrepared, FamilySpec, GaussianCluster,
    GaussianClusters, GaussianRegression, Glm, InnerBudget, LinearGaussian, Logistic, Multinomial,
    Params, Poisson, PreparedExpert, ReadableParams, WeightedFit, WeightedGram,
};
pub use model::gate::{GateConfig, GateSolver, GateStats};
pub use model::mixture::{
    ClusterStats, Gating, LinearStats, MixtureFamily, MixtureOfExperts, MoeSpec, MoeStats,
};
pub use model::sym::{SymLinComplete, SymLogComplete, SymMoLinE, SymMoLogE, SymStats, Symmetric};
pub use model::{ConditionalFamily, EmModel};
pub use solve::accel::{Accel, AccelSolver};
pub use solve::adam::{Adam, AdamSettings, ADAM_LEARNING_RATES};
pub use solve::anderson::{Anderson, AndersonSettings, Damping};
pub use solve::gd::{GradientDescent, Step};
pub use solve::gradient_em::GradientEm;
pub use solve::md::{MdStep, MirrorDescent, UnprojectedMirrorDescent};
pub use solve::md_adaptive::{step_smoothness, AdaptiveMirrorDescent};
pub use solve::newton::Newton;
pub use solve::observed::{observed, Observed};
pub use solve::observer::{LogObserver, Observer, ObserverMode, TraceObserver, TrajectoryObserver};
pub use solve::squarem::Squarem;
pub use solve::{
    Em, Executor, FitResult, FitState, IterRecord, Problem, Solver, StackedLogPartition, StepInfo,
    Termination, INEXACT_WINDOW,
};
#[cfg(feature = "testkit")]
pub use testkit::{em_md_gap, Gap};

pub use faer;
pub use mirror;
pub use rand;
