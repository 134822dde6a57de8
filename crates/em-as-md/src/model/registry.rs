//! The registry of experts and exponential families: names → builders, so that an
//! [`ExpertSpec`] (as stored in a model file) becomes an expert again, and so that a front
//! end (the `mdem` command) can offer, describe and check every registered expert.
//!
//! The registry is global, thread-safe and deterministic: entries are kept sorted by name,
//! and [`expert_entries`] / [`family_entries`] list them in that order. It starts with the
//! built-ins:
//!
//! | expert | builds | parameters | target rule |
//! |---|---|---|---|
//! | `linear` | [`LinearGaussian`] | `ridge` ($\ge 0$, default 0) | any finite number |
//! | `logistic` | [`Logistic`] | `ridge` ($\ge 0$, default 0) | 0 or 1 |
//! | `multinomial` | [`Multinomial`] | `classes` ($\ge 2$), `lbfgs_tol`, `lbfgs_max_iter`, `dense_max_params` (defaults as [`Multinomial::new`]), `ridge` ($\ge 0$, default 0) | integer labels $0..C-1$, $C = 1 + \max y \le$ [`MAX_CLASSES`], at least two labels |
//! | `poisson` | [`Poisson`] | `ridge` ($\ge 0$, default 0) | non-negative integer counts (at most $2^{53}$) |
//! | `gaussian` | [`GaussianCluster`] (the Gaussian mixture's component, no covariates) | `dim` ($q \ge 1$, at most [`MAX_MVN_DIM`]), `covariance` (0 full, 1 diagonal, 2 spherical; default 0), `reg_covar` ($\ge 0$, default [`REG_COVAR`]) | no target: its $q$ coordinates are the data's columns (the rule refuses a target column) |
//! | `glm` | [`Glm`] on a registered family | none; the spec's `family`, `n_regressed` (default: all) and `constants` | – (needs a family) |
//!
//! and mirror's families for `glm`: `bernoulli`, `categorical` (`classes`), `poisson`,
//! `exponential`, `gaussian` (mean and variance unknown), `gaussian-known-variance`
//! (`variance`) and `multivariate-gaussian` (`dim`, at most [`MAX_MVN_DIM`]).
//!
//! A program with its own expert or family registers it once, before it loads a model that
//! uses it (registering the same entry again is a no-op; the same name with a different
//! builder is [`RegistryError::Duplicate`]):
//!
//! ```
//! use em_as_md::model::registry::{self, FamilyEntry};
//! use em_as_md::model::expert::{Expert, Glm, Params};
//! use std::sync::Arc;
//!
//! // A family with one parameter, built by a named function (a closure works as well).
//! fn scaled_poisson(values: &[f64]) -> em_as_md::Result<Arc<dyn mirror::ExponentialFamily>> {
//!     let _scale = values[0]; // the declared parameters, in their declared order
//!     Ok(Arc::new(mirror::Poisson::new()))
//! }
//! registry::register_family(FamilyEntry::new("my-poisson", &["scale"], scaled_poisson))?;
//! registry::register_family(FamilyEntry::new("my-poisson", &["scale"], scaled_poisson))?; // no-op
//!
//! let glm = Glm::registered("my-poisson", &Params::new().with("scale", 2.0))?;
//! assert_eq!(glm.spec().unwrap().family.unwrap().name, "my-poisson");
//! // Wrong parameter names are typed errors naming them.
//! let err = Glm::registered("my-poisson", &Params::new().with("rate", 2.0)).unwrap_err();
//! assert!(err.to_string().contains("takes the parameters [scale], found [rate]"));
//! # Ok::<(), em_as_md::MoeError>(())
//! ```
//!
//! **Families are checked when built** ([`check_family_shape`]): a family whose methods
//! disagree with its own `dim()` or `obs_dim()` (e.g. a statistic $T(s)$ longer or shorter
//! than `dim()`) is [`RegistryError::FamilyShape`] naming the family and the method, never
//! a panic.
//!
//! **Target rules.** An entry may carry a rule that checks a target column against the
//! expert's support and infers its description from it (the multinomial rule counts the
//! classes); the `mdem` command offers exactly the entries that have one, with the
//! entry's summary as the help text and its support description in the error message.

use crate::error::{MoeError, RegistryError, Result};
use crate::model::expert::{
    bad_param, CovarianceType, Expert, ExpertSpec, FamilySpec, GaussianCluster, Glm,
    LinearGaussian, Logistic, Multinomial, Params, Poisson, REG_COVAR,
};
use mirror::ExponentialFamily;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

/// Largest class count the `multinomial` target rule accepts (labels $0, \dots, 999$).
pub const MAX_CLASSES: usize = 1000;
/// Largest observation dimension of the registered `multivariate-gaussian` family (its
/// natural dimension is $d + d(d+1)/2$).
pub const MAX_MVN_DIM: u64 = 1000;
/// Largest count the `poisson` target rule accepts: $2^{53}$, beyond which not every
/// integer is a double.
pub const MAX_COUNT: f64 = 9_007_199_254_740_992.0;

/// Builds an expert from its description.
pub type ExpertBuilder = dyn Fn(&ExpertSpec) -> Result<Arc<dyn Expert>> + Send + Sync;
/// Checks a target column against an expert's support and infers its description.
pub type TargetRule = dyn Fn(&[f64]) -> std::result::Result<ExpertSpec, TargetError> + Send + Sync;
/// Builds a family from its parameter values, in the order of its declared names.
pub type FamilyBuilder = dyn Fn(&[f64]) -> Result<Arc<dyn ExponentialFamily>> + Send + Sync;

/// A target column that an expert cannot model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// `y[row]` is outside the expert's support.
    #[error("data row {} (0-based index {row}): {expert} experts expect {expected}, found {value}", row + 1)]
    OutOfSupport {
        /// 0-based row.
        row: usize,
        /// The expert's registry name.
        expert: String,
        /// The support, in words (the entry's [`ExpertEntry::support`]).
        expected: String,
        /// The value.
        value: f64,
    },
    /// Every value is in the support but the column as a whole cannot be modelled (e.g. a
    /// multinomial target with a single class).
    #[error("{expert} experts expect {expected}, found {found}")]
    Unusable {
        /// The expert's registry name.
        expert: String,
        /// What is needed.
        expected: String,
        /// What the column has.
        found: String,
    },
}

/// An expert's registry entry: its name, a one-line summary, its target's support in
/// words, a builder from an [`ExpertSpec`], and optionally a [target rule](TargetRule).
#[derive(Clone)]
pub struct ExpertEntry {
    name: String,
    summary: String,
    support: String,
    build: Arc<ExpertBuilder>,
    build_id: TypeId,
    target: Option<(Arc<TargetRule>, TypeId)>,
    /// The support test of [`ExpertEntry::row_support`] (part of the entry's identity:
    /// every such rule shares one closure type).
    row_test: Option<fn(f64) -> bool>,
}

impl fmt::Debug for ExpertEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpertEntry")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("support", &self.support)
            .field("target_rule", &self.target.is_some())
            .finish()
    }
}

impl ExpertEntry {
    /// The entry `name` (ASCII letters, digits, `-`, `_`) with a one-line `summary`, the
    /// target's `support` in words (completing "`name` experts expect …") and `build`.
    /// Two entries are the same when every field is, the builders by type (each closure
    /// and each function item has its own type).
    pub fn new<F>(
        name: impl Into<String>,
        summary: impl Into<String>,
        support: impl Into<String>,
        build: F,
    ) -> Self
    where
        F: Fn(&ExpertSpec) -> Result<Arc<dyn Expert>> + Send + Sync + 'static,
    {
        ExpertEntry {
            name: name.into(),
            summary: summary.into(),
            support: support.into(),
            build: Arc::new(build),
            build_id: TypeId::of::<F>(),
            target: None,
            row_test: None,
        }
    }
    /// With a target rule: `rule(y)` checks the column $y$ (one value per row) and returns
    /// the expert's description for it.
    pub fn target_rule<G>(mut self, rule: G) -> Self
    where
        G: Fn(&[f64]) -> std::result::Result<ExpertSpec, TargetError> + Send + Sync + 'static,
    {
        self.target = Some((Arc::new(rule), TypeId::of::<G>()));
        self.row_test = None;
        self
    }
    /// With the target rule "every value satisfies `in_support`", describing the expert
    /// as `ExpertSpec::new(name)` (its builder's defaults).
    pub fn row_support(self, in_support: fn(f64) -> bool) -> Self {
        let (name, expected) = (self.name.clone(), self.support.clone());
        let mut entry = self.target_rule(move |y: &[f64]| {
            check_rows(&name, &expected, y, in_support)?;
            Ok(ExpertSpec::new(name.clone()))
        });
        entry.row_test = Some(in_support);
        entry
    }
    /// The registry name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// One line describing the expert (the `mdem` command's help).
    pub fn summary(&self) -> &str {
        &self.summary
    }
    /// The target's support in words.
    pub fn support(&self) -> &str {
        &self.support
    }
    /// Whether the entry has a target rule (the `mdem` command offers exactly these).
    pub fn has_target_rule(&self) -> bool {
        self.target.is_some()
    }
    /// The builder's result for `spec`.
    ///
    /// # Errors
    /// [`RegistryError::UnknownExpert`] when `spec.name` is not this entry's name; the
    /// builder's errors.
    pub fn build(&self, spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
        if spec.name != self.name {
            return Err(RegistryError::UnknownExpert {
                name: spec.name.clone(),
                known: vec![self.name.clone()],
            }
            .into());
        }
        (self.build)(spec)
    }
    /// The description inferred from a target column, `None` without a target rule.
    ///
    /// # Errors
    /// The rule's [`TargetError`].
    pub fn spec_from_target(
        &self,
        y: &[f64],
    ) -> Option<std::result::Result<ExpertSpec, TargetError>> {
        self.target.as_ref().map(|(rule, _)| rule(y))
    }
    fn same_as(&self, other: &ExpertEntry) -> bool {
        self.name == other.name
            && self.summary == other.summary
            && self.support == other.support
            && self.build_id == other.build_id
            && self.target.as_ref().map(|t| t.1) == other.target.as_ref().map(|t| t.1)
            && match (self.row_test, other.row_test) {
                (Some(a), Some(b)) => std::ptr::fn_addr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}

/// A family's registry entry: its name, the names of its parameters, a one-line summary
/// and a builder taking the parameter values in the declared order.
#[derive(Clone)]
pub struct FamilyEntry {
    name: String,
    params: Vec<String>,
    summary: String,
    build: Arc<FamilyBuilder>,
    build_id: TypeId,
}

impl fmt::Debug for FamilyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FamilyEntry")
            .field("name", &self.name)
            .field("params", &self.params)
            .field("summary", &self.summary)
            .finish()
    }
}

impl FamilyEntry {
    /// The family `name` taking exactly the parameters `params` (passed to `build` as
    /// values in this order; [`FamilyEntry::build`] checks the names first).
    pub fn new<F>(name: impl Into<String>, params: &[&str], build: F) -> Self
    where
        F: Fn(&[f64]) -> Result<Arc<dyn ExponentialFamily>> + Send + Sync + 'static,
    {
        FamilyEntry {
            name: name.into(),
            params: params.iter().map(|s| s.to_string()).collect(),
            summary: String::new(),
            build: Arc::new(build),
            build_id: TypeId::of::<F>(),
        }
    }
    /// With a one-line summary.
    pub fn summary(mut self, summary: impl Into<String>) -> Self {
        self.summary = summary.into();
        self
    }
    /// The registry name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The parameter names, in the builder's order.
    pub fn param_names(&self) -> &[String] {
        &self.params
    }
    /// The one-line summary.
    pub fn description(&self) -> &str {
        &self.summary
    }
    /// The family for `params`: names checked, built, then shape-checked
    /// ([`check_family_shape`]).
    ///
    /// # Errors
    /// [`RegistryError::WrongParams`] when the names differ from the declared ones,
    /// [`RegistryError::FamilyShape`] for an inconsistent family, the builder's errors.
    pub fn build(&self, params: &Params) -> Result<Arc<dyn ExponentialFamily>> {
        let names: Vec<&str> = self.params.iter().map(String::as_str).collect();
        let values = params.exactly(&self.name, &names)?;
        let family = (self.build)(&values)?;
        check_family_shape(family.as_ref(), &self.name)?;
        Ok(family)
    }
    fn same_as(&self, other: &FamilyEntry) -> bool {
        self.name == other.name
            && self.params == other.params
            && self.summary == other.summary
            && self.build_id == other.build_id
    }
}

struct Tables {
    experts: BTreeMap<String, ExpertEntry>,
    families: BTreeMap<String, FamilyEntry>,
}

static TABLES: LazyLock<RwLock<Tables>> = LazyLock::new(|| RwLock::new(builtin_tables()));

fn read<T>(f: impl FnOnce(&Tables) -> T) -> T {
    f(&TABLES.read().unwrap_or_else(PoisonError::into_inner))
}

fn valid_name(what: &'static str, name: &str) -> Result<()> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(RegistryError::InvalidName {
            what,
            name: name.into(),
        }
        .into())
    }
}

/// Registers an expert (once per program; the same entry again is a no-op).
///
/// # Errors
/// [`RegistryError::InvalidName`] for a name other than ASCII letters, digits, `-` and
/// `_`; [`RegistryError::Duplicate`] when the name is taken by a different entry.
pub fn register_expert(entry: ExpertEntry) -> Result<()> {
    valid_name("expert", &entry.name)?;
    let mut t = TABLES.write().unwrap_or_else(PoisonError::into_inner);
    match t.experts.get(&entry.name) {
        Some(old) if old.same_as(&entry) => Ok(()),
        Some(_) => Err(RegistryError::Duplicate {
            what: "expert",
            name: entry.name,
        }
        .into()),
        None => {
            t.experts.insert(entry.name.clone(), entry);
            Ok(())
        }
    }
}

/// Registers an exponential family for `glm` experts (once per program; the same entry
/// again is a no-op).
///
/// # Errors
/// As [`register_expert`].
pub fn register_family(entry: FamilyEntry) -> Result<()> {
    valid_name("family", &entry.name)?;
    let mut t = TABLES.write().unwrap_or_else(PoisonError::into_inner);
    match t.families.get(&entry.name) {
        Some(old) if old.same_as(&entry) => Ok(()),
        Some(_) => Err(RegistryError::Duplicate {
            what: "family",
            name: entry.name,
        }
        .into()),
        None => {
            t.families.insert(entry.name.clone(), entry);
            Ok(())
        }
    }
}

/// The expert entry `name`.
///
/// # Errors
/// [`RegistryError::UnknownExpert`] listing the registered names.
pub fn expert_entry(name: &str) -> Result<ExpertEntry> {
    read(|t| {
        t.experts.get(name).cloned().ok_or_else(|| {
            RegistryError::UnknownExpert {
                name: name.into(),
                known: t.experts.keys().cloned().collect(),
            }
            .into()
        })
    })
}

/// The family entry `name`.
///
/// # Errors
/// [`RegistryError::UnknownFamily`] listing the registered names.
pub fn family_entry(name: &str) -> Result<FamilyEntry> {
    read(|t| {
        t.families.get(name).cloned().ok_or_else(|| {
            RegistryError::UnknownFamily {
                name: name.into(),
                known: t.families.keys().cloned().collect(),
            }
            .into()
        })
    })
}

/// Every registered expert, sorted by name.
pub fn expert_entries() -> Vec<ExpertEntry> {
    read(|t| t.experts.values().cloned().collect())
}

/// Every registered family, sorted by name.
pub fn family_entries() -> Vec<FamilyEntry> {
    read(|t| t.families.values().cloned().collect())
}

/// The expert described by `spec`, built by its registered builder.
///
/// # Errors
/// [`RegistryError::UnknownExpert`], [`RegistryError::UnknownFamily`] (a `glm` on an
/// unregistered family), and the builder's errors ([`RegistryError::WrongParams`],
/// [`RegistryError::BadParam`], [`RegistryError::SpecField`], …).
pub fn build_expert(spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
    expert_entry(&spec.name)?.build(spec)
}

/// The family described by `spec` ([`FamilyEntry::build`]).
///
/// # Errors
/// [`RegistryError::UnknownFamily`]; as [`FamilyEntry::build`].
pub fn build_family(spec: &FamilySpec) -> Result<Arc<dyn ExponentialFamily>> {
    family_entry(&spec.name)?.build(&spec.params)
}

/// The first row of `y` outside the support (`ok` false or not finite), as
/// [`TargetError::OutOfSupport`] for the expert `expert` whose support is `expected`.
///
/// # Errors
/// That error.
pub fn check_rows(
    expert: &str,
    expected: &str,
    y: &[f64],
    ok: impl Fn(f64) -> bool,
) -> std::result::Result<(), TargetError> {
    match y.iter().position(|&v| !(v.is_finite() && ok(v))) {
        Some(row) => Err(TargetError::OutOfSupport {
            row,
            expert: expert.into(),
            expected: expected.into(),
            value: y[row],
        }),
        None => Ok(()),
    }
}

/// Checks that a family's methods agree with its own `dim()` $= p$ and `obs_dim()` $= q$,
/// at its starting point, without letting a mismatch panic: `newton_start` fills $p$
/// entries with a point of the natural domain; `sample` there fills $q$ entries with a
/// point that `in_support` accepts; `sufficient_stats` of it fills exactly $p$ entries
/// (a statistic longer than `dim()` would write past the buffer, one shorter leaves
/// entries unwritten); `log_partition` is finite, `mean` fills $p$ entries and `fisher`
/// is $p\times p$. A panic inside one of these methods is caught and reported as that
/// method's failure (the panic message is still printed by the panic hook). `name` is
/// the family's name in the error.
///
/// # Errors
/// [`RegistryError::FamilyShape`] naming the family and the first method that fails.
pub fn check_family_shape(family: &dyn ExponentialFamily, name: &str) -> Result<()> {
    let (p, q) = (family.dim(), family.obs_dim());
    let err = |method: &'static str, reason: String| -> MoeError {
        RegistryError::FamilyShape {
            family: name.into(),
            method,
            dim: p,
            obs_dim: q,
            reason,
        }
        .into()
    };
    if p == 0 {
        return Err(err(
            "dim",
            "is 0; a family needs a natural component".into(),
        ));
    }
    if q == 0 {
        return Err(err("obs_dim", "is 0; an observation needs an entry".into()));
    }
    let panicked =
        |what: &str, len: usize| format!("panicked when given a buffer of {what} = {len} entries");
    let unwritten = |v: &[f64]| v.iter().filter(|x| x.is_nan()).count();
    let mut theta = vec![f64::NAN; p];
    catch_unwind(AssertUnwindSafe(|| family.newton_start(&mut theta)))
        .map_err(|_| err("newton_start", panicked("dim()", p)))?;
    if unwritten(&theta) > 0 {
        return Err(err(
            "newton_start",
            format!("left {} of dim() = {p} entries unset", unwritten(&theta)),
        ));
    }
    if !family.in_natural_domain(&theta) {
        return Err(err(
            "newton_start",
            format!("gives {theta:?}, outside the natural domain; override newton_start"),
        ));
    }
    let mut s = vec![f64::NAN; q];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    match catch_unwind(AssertUnwindSafe(|| family.sample(&theta, &mut rng, &mut s))) {
        Err(_) => return Err(err("sample", panicked("obs_dim()", q))),
        Ok(Err(e)) => return Err(err("sample", format!("failed at {theta:?}: {e}"))),
        Ok(Ok(())) if unwritten(&s) > 0 => {
            return Err(err(
                "sample",
                format!("left {} of obs_dim() = {q} entries unset", unwritten(&s)),
            ))
        }
        Ok(Ok(())) => {}
    }
    match catch_unwind(AssertUnwindSafe(|| family.in_support(&s))) {
        Err(_) => return Err(err("in_support", panicked("obs_dim()", q))),
        Ok(false) => {
            return Err(err(
                "in_support",
                format!("rejects {s:?}, drawn by sample at {theta:?}"),
            ))
        }
        Ok(true) => {}
    }
    let mut t = vec![f64::NAN; p];
    catch_unwind(AssertUnwindSafe(|| family.sufficient_stats(&s, &mut t))).map_err(|_| {
        err(
            "sufficient_stats",
            format!("{}: is T(s) longer than dim()?", panicked("dim()", p)),
        )
    })?;
    if unwritten(&t) > 0 {
        return Err(err(
            "sufficient_stats",
            format!(
                "set {} of dim() = {p} entries for s = {s:?}: is T(s) shorter than dim()?",
                p - unwritten(&t)
            ),
        ));
    }
    match catch_unwind(AssertUnwindSafe(|| family.log_partition(&theta))) {
        Err(_) => return Err(err("log_partition", panicked("dim()", p))),
        Ok(Ok(a)) if a.is_finite() => {}
        Ok(Ok(a)) => return Err(err("log_partition", format!("is {a} at {theta:?}"))),
        Ok(Err(e)) => return Err(err("log_partition", format!("failed at {theta:?}: {e}"))),
    }
    let mut mu = vec![f64::NAN; p];
    match catch_unwind(AssertUnwindSafe(|| family.mean(&theta, &mut mu))) {
        Err(_) => return Err(err("mean", panicked("dim()", p))),
        Ok(Err(e)) => return Err(err("mean", format!("failed at {theta:?}: {e}"))),
        Ok(Ok(())) if unwritten(&mu) > 0 => {
            return Err(err(
                "mean",
                format!("left {} of dim() = {p} entries unset", unwritten(&mu)),
            ))
        }
        Ok(Ok(())) => {}
    }
    match catch_unwind(AssertUnwindSafe(|| family.fisher(&theta))) {
        Err(_) => Err(err("fisher", panicked("dim()", p))),
        Ok(Err(e)) => Err(err("fisher", format!("failed at {theta:?}: {e}"))),
        Ok(Ok(f)) if (f.nrows(), f.ncols()) != (p, p) => Err(err(
            "fisher",
            format!("is {} × {}, expected {p} × {p}", f.nrows(), f.ncols()),
        )),
        Ok(Ok(_)) => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------
// Built-ins.

fn build_linear(spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
    spec.no_glm_fields()?;
    spec.params.only("linear", &["ridge"])?;
    let ridge = spec
        .params
        .real("linear", "ridge", 0.0, false)?
        .unwrap_or(0.0);
    Ok(Arc::new(LinearGaussian::with_ridge(ridge)?))
}

/// The optional `ridge` parameter of `owner` (0 when absent).
fn ridge_param(spec: &ExpertSpec, owner: &str) -> Result<f64> {
    Ok(spec.params.real(owner, "ridge", 0.0, false)?.unwrap_or(0.0))
}

fn build_logistic(spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
    spec.no_glm_fields()?;
    spec.params.only("logistic", &["ridge"])?;
    Ok(Arc::new(Logistic::with_ridge(ridge_param(
        spec, "logistic",
    )?)?))
}

fn build_poisson(spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
    spec.no_glm_fields()?;
    spec.params.only("poisson", &["ridge"])?;
    Ok(Arc::new(Poisson::with_ridge(ridge_param(
        spec, "poisson",
    )?)?))
}

const MULTINOMIAL_PARAMS: [&str; 5] = [
    "classes",
    "lbfgs_tol",
    "lbfgs_max_iter",
    "dense_max_params",
    "ridge",
];

fn build_multinomial(spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
    spec.no_glm_fields()?;
    let (p, me) = (&spec.params, "multinomial");
    p.only(me, &MULTINOMIAL_PARAMS)?;
    let classes = p.integer(me, "classes", 2, u64::MAX)?.ok_or_else(|| {
        MoeError::from(RegistryError::WrongParams {
            owner: me.into(),
            expected: MULTINOMIAL_PARAMS.iter().map(|s| s.to_string()).collect(),
            found: p.names().map(str::to_string).collect(),
        })
    })?;
    let classes = usize::try_from(classes).map_err(|_| {
        bad_param(
            me,
            "classes",
            classes as f64,
            "a class count that fits usize",
        )
    })?;
    let m = Multinomial::new(classes)?;
    let (tol, max_iter) = m.lbfgs_budget();
    let tol = p.real(me, "lbfgs_tol", 0.0, true)?.unwrap_or(tol);
    let max_iter = p
        .integer(me, "lbfgs_max_iter", 1, u64::MAX)?
        .unwrap_or(max_iter);
    let dense = match p.integer(me, "dense_max_params", 0, u64::MAX)? {
        Some(v) => usize::try_from(v)
            .map_err(|_| bad_param(me, "dense_max_params", v as f64, "a count that fits usize"))?,
        None => m.dense_max_params(),
    };
    Ok(Arc::new(
        m.with_lbfgs_budget(tol, max_iter)?
            .with_dense_max_params(dense)
            .with_ridge(ridge_param(spec, me)?)?,
    ))
}

const GAUSSIAN_PARAMS: [&str; 3] = ["dim", "covariance", "reg_covar"];

fn build_gaussian(spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
    spec.no_glm_fields()?;
    let (p, me) = (&spec.params, "gaussian");
    p.only(me, &GAUSSIAN_PARAMS)?;
    let dim = p.integer(me, "dim", 1, MAX_MVN_DIM)?.ok_or_else(|| {
        MoeError::from(RegistryError::WrongParams {
            owner: me.into(),
            expected: GAUSSIAN_PARAMS.iter().map(|s| s.to_string()).collect(),
            found: p.names().map(str::to_string).collect(),
        })
    })?;
    let code = p.integer(me, "covariance", 0, 2)?.unwrap_or(0);
    let cov = CovarianceType::from_code(code).unwrap_or_default();
    let reg = p.real(me, "reg_covar", 0.0, false)?.unwrap_or(REG_COVAR);
    Ok(Arc::new(GaussianCluster::new(dim as usize, cov, reg)?))
}

/// The `gaussian` expert's target rule: a Gaussian mixture models the feature columns
/// themselves, so a target column is refused (the command line fits it without
/// `--target`; a Gaussian regression on features is the `linear` expert).
fn gaussian_target(_y: &[f64]) -> std::result::Result<ExpertSpec, TargetError> {
    Err(TargetError::Unusable {
        expert: "gaussian".into(),
        expected: "no target column (a Gaussian mixture of the feature columns; for a \
                   Gaussian regression on the features use the linear expert)"
            .into(),
        found: "a target column".into(),
    })
}

fn build_glm(spec: &ExpertSpec) -> Result<Arc<dyn Expert>> {
    spec.params.only("glm", &[])?;
    let family = spec.family.as_ref().ok_or_else(|| {
        MoeError::from(RegistryError::SpecField {
            expert: "glm".into(),
            field: "family",
            reason: "a glm expert needs the description of its family".into(),
        })
    })?;
    let glm = Glm::registered(&family.name, &family.params)?;
    let p = glm.family().dim();
    let r = spec.n_regressed.unwrap_or(p);
    if r > p || spec.constants.len() != p - r {
        return Err(RegistryError::SpecField {
            expert: "glm".into(),
            field: if r > p { "n_regressed" } else { "constants" },
            reason: format!(
                "family `{}` has dim {p}: expected n_regressed <= {p} and {} constants, found {r} and {}",
                family.name,
                p.saturating_sub(r),
                spec.constants.len()
            ),
        }
        .into());
    }
    if r == p {
        return Ok(Arc::new(glm));
    }
    Ok(Arc::new(glm.regressing(r, spec.constants.clone())?))
}

fn multinomial_target(y: &[f64]) -> std::result::Result<ExpertSpec, TargetError> {
    check_rows("multinomial", MULTINOMIAL_SUPPORT, y, |v| {
        v >= 0.0 && v.fract() == 0.0 && v < MAX_CLASSES as f64
    })?;
    let max = y.iter().fold(0.0_f64, |m, &v| m.max(v));
    // `max` is an integer in 0..MAX_CLASSES by the check above.
    let classes = max as usize + 1;
    if classes < 2 {
        return Err(TargetError::Unusable {
            expert: "multinomial".into(),
            expected: "at least two classes 0..C−1".into(),
            found: "only class 0".into(),
        });
    }
    Ok(ExpertSpec::new("multinomial").param("classes", classes as f64))
}

const MULTINOMIAL_SUPPORT: &str = "an integer class label 0, 1, …, C−1 (C ≤ 1000)";

fn family_builder<F: ExponentialFamily + 'static>(f: F) -> Result<Arc<dyn ExponentialFamily>> {
    Ok(Arc::new(f))
}

fn builtin_tables() -> Tables {
    let experts = [
        ExpertEntry::new(
            "linear",
            "Gaussian linear regression with its own variance",
            "a finite number",
            build_linear,
        )
        .row_support(|_| true),
        ExpertEntry::new(
            "logistic",
            "Logistic regression (target 0/1)",
            "0 or 1",
            build_logistic,
        )
        .row_support(|v| v == 0.0 || v == 1.0),
        ExpertEntry::new(
            "multinomial",
            "Multinomial logistic regression (target 0..C−1)",
            MULTINOMIAL_SUPPORT,
            build_multinomial,
        )
        .target_rule(multinomial_target),
        ExpertEntry::new(
            "poisson",
            "Poisson regression (target a count)",
            "a non-negative integer count",
            build_poisson,
        )
        .row_support(|v| v >= 0.0 && v.fract() == 0.0 && v <= MAX_COUNT),
        ExpertEntry::new(
            "gaussian",
            "Gaussian mixture of the feature columns (no --target; --covariance full|diag|spherical)",
            "no target column",
            build_gaussian,
        )
        .target_rule(gaussian_target),
        ExpertEntry::new(
            "glm",
            "GLM with canonical link on a registered exponential family (library only: needs a family)",
            "a value in the family's support",
            build_glm,
        ),
    ];
    let families = [
        FamilyEntry::new("bernoulli", &[], |_: &[f64]| {
            family_builder(mirror::Bernoulli::new())
        })
        .summary("Bernoulli, T(s) = s on {0, 1}"),
        FamilyEntry::new("categorical", &["classes"], |v: &[f64]| {
            let c = Params::new()
                .with("classes", v[0])
                .integer("categorical", "classes", 2, u64::MAX)?
                .unwrap_or(0);
            let c = usize::try_from(c).map_err(|_| {
                bad_param("categorical", "classes", v[0], "a count that fits usize")
            })?;
            family_builder(mirror::Categorical::new(c)?)
        })
        .summary("categorical over classes 0..C−1, reference class C−1"),
        FamilyEntry::new("poisson", &[], |_: &[f64]| {
            family_builder(mirror::Poisson::new())
        })
        .summary("Poisson counts, T(s) = s"),
        FamilyEntry::new("exponential", &[], |_: &[f64]| {
            family_builder(mirror::Exponential::new())
        })
        .summary("exponential on s > 0, T(s) = s, θ = −rate"),
        FamilyEntry::new("gaussian", &[], |_: &[f64]| {
            family_builder(mirror::Gaussian::new())
        })
        .summary("Gaussian with unknown mean and variance, T(s) = (s, s²)"),
        FamilyEntry::new("gaussian-known-variance", &["variance"], |v: &[f64]| {
            let s2 = Params::new()
                .with("variance", v[0])
                .real("gaussian-known-variance", "variance", 0.0, true)?
                .unwrap_or(v[0]);
            family_builder(mirror::GaussianKnownVariance::new(s2)?)
        })
        .summary("Gaussian with known variance, T(s) = s"),
        FamilyEntry::new("multivariate-gaussian", &["dim"], |v: &[f64]| {
            let d = Params::new()
                .with("dim", v[0])
                .integer("multivariate-gaussian", "dim", 1, MAX_MVN_DIM)?
                .unwrap_or(1);
            family_builder(mirror::MultivariateGaussian::new(d as usize)?)
        })
        .summary("multivariate Gaussian in dim dimensions, T(s) = (s, s sᵀ)"),
    ];
    Tables {
        experts: experts.into_iter().map(|e| (e.name.clone(), e)).collect(),
        families: families.into_iter().map(|f| (f.name.clone(), f)).collect(),
    }
}
