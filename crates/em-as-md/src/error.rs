//! Typed errors of `em-as-md`.

use thiserror::Error;

/// The block of the parameters $\theta$ a failure belongs to: the gate or one expert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Block {
    /// The softmax gate (or the constant mixing weights).
    Gate,
    /// An expert: its index $k$ inside a mixture, `None` for an expert's weighted fit
    /// called on its own (outside a mixture, where no index exists).
    Expert(Option<usize>),
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Block::Gate => write!(f, "the gate"),
            Block::Expert(Some(k)) => write!(f, "expert {k}"),
            Block::Expert(None) => write!(f, "the expert"),
        }
    }
}

/// What can prevent a mixture of experts from being built, fitted or evaluated.
///
/// Not converging is *not* an error: a fit that stops at its iteration limit is returned
/// with its [`Termination`](crate::solve::Termination) reason.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum MoeError {
    /// A hyperparameter failed validation.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParam {
        /// Parameter name as the user wrote it (e.g. "tol", "n_experts").
        name: &'static str,
        /// What was expected.
        reason: String,
    },
    /// The data cannot be used (NaN, empty, wrong shape, target outside the support...).
    #[error("invalid data at row {row:?}, column {column:?}: {reason}")]
    InvalidData {
        /// 0-based row, when one row is at fault.
        row: Option<usize>,
        /// Column name or index, when one column is at fault.
        column: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A Cholesky factorisation failed in an M-step.
    #[error("weighted Gram matrix / Hessian of {block} is not positive definite (pivot {pivot}): too little weight or collinear features — try ridge > 0 or drop a column")]
    NotPositiveDefinite {
        /// Whose matrix.
        block: Block,
        /// Failing pivot.
        pivot: usize,
    },
    /// A computation produced NaN/∞ where a finite number is required.
    #[error("non-finite value in {what}")]
    NonFinite {
        /// Where.
        what: &'static str,
    },
    /// A mirror-descent step with η > 1 (or gradient step) left the domain of the mirror
    /// map: the target statistics are not a valid mean parameter.
    #[error("step left the domain (natural or mean parameters): {reason}")]
    LeftDomain {
        /// Details.
        reason: String,
    },
    /// An error returned by a solver's step, with the outer iteration it happened in
    /// (added by the [`Executor`](crate::solve::Executor); iteration 0 is the start).
    #[error("at iteration {iter}: {source}")]
    AtIteration {
        /// Outer iteration $t + 1$ of the step that failed (0: before the first step).
        iter: u64,
        /// What failed.
        source: Box<MoeError>,
    },
    /// Error from the `mirror` crate.
    #[error(transparent)]
    Mirror(#[from] mirror::MirrorError),
    /// A row source read in passes ([`crate::data::source`]) failed: a file that cannot
    /// be read, a malformed chunk, a file that changed between passes. The message names
    /// the file and, where there is one, the line and column.
    #[error("{0}")]
    Source(String),
    /// Reading or writing a model or checkpoint failed.
    #[error("I/O: {0}")]
    Io(String),
    /// Describing, registering or rebuilding an expert or a family failed
    /// ([`crate::model::registry`]).
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// What can go wrong between an expert and its serialisable description
/// ([`ExpertSpec`](crate::model::expert::ExpertSpec)): registering, looking up and
/// building experts and exponential families by name ([`crate::model::registry`]), and
/// saving an expert that has no description.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No expert of this name is registered.
    #[error("no expert named `{name}` is registered (known: {})", known.join(", "))]
    UnknownExpert {
        /// The name asked for.
        name: String,
        /// The registered names, sorted.
        known: Vec<String>,
    },
    /// No exponential family of this name is registered (e.g. a model file saved by a
    /// program that registered it, loaded by one that did not).
    #[error("no exponential family named `{name}` is registered (known: {}); register it with `em_as_md::model::registry::register_family` before loading", known.join(", "))]
    UnknownFamily {
        /// The name asked for.
        name: String,
        /// The registered names, sorted.
        known: Vec<String>,
    },
    /// The name is already registered with a different entry (builder, parameter names,
    /// summary or support).
    #[error("{what} `{name}` is already registered with a different builder")]
    Duplicate {
        /// `"expert"` or `"family"`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A name that cannot be registered (empty, or a character other than ASCII letters,
    /// digits, `-` and `_`).
    #[error("invalid {what} name {name:?}: expected ASCII letters, digits, '-' or '_'")]
    InvalidName {
        /// `"expert"` or `"family"`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The named parameters differ from those the expert or family takes (a missing,
    /// an unexpected or a repeated name).
    #[error("`{owner}` takes the parameters [{}], found [{}]", expected.join(", "), found.join(", "))]
    WrongParams {
        /// The expert or family.
        owner: String,
        /// The names it takes (optional ones included).
        expected: Vec<String>,
        /// The names given.
        found: Vec<String>,
    },
    /// A parameter value out of range.
    #[error("parameter `{param}` of `{owner}` is {value}: expected {expected}")]
    BadParam {
        /// The expert or family.
        owner: String,
        /// The parameter.
        param: String,
        /// Its value.
        value: f64,
        /// What was expected.
        expected: String,
    },
    /// A field of an [`ExpertSpec`](crate::model::expert::ExpertSpec) other than the
    /// parameters is missing, superfluous or inconsistent (e.g. a `glm` without a family,
    /// a `linear` expert with one, or constants of the wrong length).
    #[error("expert `{expert}`: field `{field}`: {reason}")]
    SpecField {
        /// The expert.
        expert: String,
        /// `"family"`, `"n_regressed"` or `"constants"`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A family whose methods disagree with its own `dim()` / `obs_dim()`, or that fails
    /// at its own starting point ([`check_family_shape`](crate::model::registry::check_family_shape)).
    #[error("family `{family}` (dim() = {dim}, obs_dim() = {obs_dim}): `{method}` {reason}")]
    FamilyShape {
        /// The family's name (its registered name, or `ExponentialFamily::name`).
        family: String,
        /// The method found inconsistent: `dim`, `obs_dim`, `newton_start`, `sample`,
        /// `in_support`, `sufficient_stats`, `log_partition`, `mean` or `fisher`.
        method: &'static str,
        /// `dim()`.
        dim: usize,
        /// `obs_dim()`.
        obs_dim: usize,
        /// What was found.
        reason: String,
    },
    /// The expert has no description ([`Expert::spec`](crate::model::expert::Expert::spec)
    /// is `None`), so a model with it cannot be saved.
    #[error("expert `{expert}` cannot be saved: {reason}")]
    NotSerialisable {
        /// The expert's name.
        expert: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

impl MoeError {
    /// The [`MoeError::InvalidData`] for row `row` whose target `value` is outside the
    /// support of the family named `family`.
    pub(crate) fn outside_support(row: usize, value: &[f64], family: &str) -> MoeError {
        MoeError::InvalidData {
            row: Some(row),
            column: Some("target".into()),
            reason: format!("value {value:?} is outside the support of {family}"),
        }
    }

    /// The error without the iteration context [`MoeError::AtIteration`] adds (the error
    /// itself for every other variant).
    pub fn root(&self) -> &MoeError {
        match self {
            MoeError::AtIteration { source, .. } => source.root(),
            other => other,
        }
    }

    /// The outer iteration the error happened in, when an executor recorded it.
    pub fn iteration(&self) -> Option<u64> {
        match self {
            MoeError::AtIteration { iter, .. } => Some(*iter),
            _ => None,
        }
    }

    /// Wraps the error with the iteration it happened in (an error that already carries
    /// one keeps it: the innermost executor knows best).
    pub fn at_iteration(self, iter: u64) -> MoeError {
        match self {
            e @ MoeError::AtIteration { .. } => e,
            e => MoeError::AtIteration {
                iter,
                source: Box::new(e),
            },
        }
    }

    /// Names the block of a [`MoeError::NotPositiveDefinite`] raised by a fit that did not
    /// know which block it was solving (e.g. an expert's weighted fit, which the mixture
    /// runs as expert $k$); every other error is returned unchanged.
    pub fn in_block(self, block: Block) -> MoeError {
        match self {
            MoeError::NotPositiveDefinite { pivot, .. } => {
                MoeError::NotPositiveDefinite { block, pivot }
            }
            other => other,
        }
    }
}

/// The Newton driver's own failures ([`mirror::newton::minimize`]) as M-step errors: a
/// rejected Hessian is `NotPositiveDefinite` of `Block::Expert(None)` (the solver names the
/// block with [`MoeError::in_block`]), a non-finite quantity is `NonFinite`, the rest are
/// [`MoeError::Mirror`].
impl From<mirror::newton::NewtonFailure> for MoeError {
    fn from(e: mirror::newton::NewtonFailure) -> Self {
        match e {
            mirror::newton::NewtonFailure::NotPositiveDefinite { pivot } => {
                MoeError::NotPositiveDefinite {
                    block: Block::Expert(None),
                    pivot,
                }
            }
            mirror::newton::NewtonFailure::NonFinite { what } => MoeError::NonFinite { what },
            other => MoeError::Mirror(other.into()),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MoeError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_named_not_numbered() {
        let e = MoeError::NotPositiveDefinite {
            block: Block::Gate,
            pivot: 3,
        }
        .to_string();
        assert!(
            e.contains("the gate") && !e.contains(&usize::MAX.to_string()),
            "{e}"
        );
        let e = MoeError::NotPositiveDefinite {
            block: Block::Expert(Some(1)),
            pivot: 0,
        };
        assert!(e.to_string().contains("expert 1"), "{e}");
        let e = MoeError::NotPositiveDefinite {
            block: Block::Expert(None),
            pivot: 0,
        }
        .in_block(Block::Expert(Some(2)));
        assert_eq!(
            e,
            MoeError::NotPositiveDefinite {
                block: Block::Expert(Some(2)),
                pivot: 0
            }
        );
    }

    #[test]
    fn iteration_context_wraps_once_and_peels() {
        let e = MoeError::NonFinite { what: "L" }.at_iteration(4);
        assert_eq!(e.iteration(), Some(4));
        assert_eq!(e.to_string(), "at iteration 4: non-finite value in L");
        let e = e.at_iteration(9);
        assert_eq!(e.iteration(), Some(4));
        assert_eq!(e.root(), &MoeError::NonFinite { what: "L" });
        assert_eq!(MoeError::Io("x".into()).iteration(), None);
    }
}
