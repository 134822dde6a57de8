//! # em-as-md
//!
//! Mixtures of experts fitted by Expectation–Maximization, with EM expressed as projected
//! mirror descent with unit step whose mirror map is the stacked complete-data
//! log-partition $\mathcal A(\Phi) = \frac1n\sum_i A(\varphi_i)$.

pub mod align;
pub mod conditional;
pub mod data;
pub mod em;
pub mod error;
pub mod executor;
pub mod expert;
pub mod fit;
pub mod gate;
pub mod gd;
pub mod gradient_em;
pub mod init;
pub mod io;
pub mod lbfgs;
pub mod md;
pub mod moe;
pub mod objective;
pub mod observer;
pub mod parallel;
pub mod predict;
pub mod solver;
pub mod sym;

pub use conditional::ConditionalFamily;
pub use data::Dataset;
pub use em::{Em, EmModel, LinearStats, MoeStats};
pub use error::{MoeError, Result};
pub use executor::{Executor, FitResult};
pub use expert::{Expert, ExpertKind, Glm, LinearGaussian, Logistic, Multinomial, Poisson};
pub use fit::{MoeParams, MoeValidParams};
pub use gate::{GateConfig, GateSolver, GateStats};
pub use gd::{GradientDescent, Step};
pub use gradient_em::GradientEm;
pub use init::InitMethod;
pub use md::{MdStep, MirrorDescent, UnprojectedMirrorDescent};
pub use mirror;
pub use moe::{Gating, MixtureFamily, MixtureOfExperts, MoeSpec};
pub use objective::{Problem, StackedLogPartition};
pub use observer::{LogObserver, Observer, ObserverMode, TraceObserver, TrajectoryObserver};
pub use parallel::{fold_rows, Mergeable};
pub use predict::{FitReport, FittedMoe};
pub use solver::{FitState, InnerStats, IterRecord, Solver, Termination};
pub use sym::{SymLinComplete, SymLogComplete, SymMoLinE, SymMoLogE, SymStats};
