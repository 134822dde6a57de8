//! The registry: built-ins, deterministic order, target rules, and a table of bad inputs —
//! unknown names, duplicates, invalid names, parameters of the wrong name or value, spec
//! fields that do not fit the expert, and families whose methods disagree with their own
//! `dim()` / `obs_dim()` — each with its exact typed error, never a panic.

use em_as_md::model::registry::{
    self, build_expert, build_family, expert_entry, ExpertEntry, FamilyEntry, TargetError,
};
use em_as_md::{
    ExpertSpec, FamilySpec, Gating, Glm, MixtureOfExperts, MoeError, Params, RegistryError,
};
use mirror::{faer, ExponentialFamily};
use rand::RngCore;
use std::sync::Arc;

const BUILTIN_EXPERTS: [&str; 5] = ["glm", "linear", "logistic", "multinomial", "poisson"];
const BUILTIN_FAMILIES: [&str; 7] = [
    "bernoulli",
    "categorical",
    "exponential",
    "gaussian",
    "gaussian-known-variance",
    "multivariate-gaussian",
    "poisson",
];

#[test]
fn built_ins_are_registered_in_sorted_order() {
    let names: Vec<String> = registry::expert_entries()
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for b in BUILTIN_EXPERTS {
        assert!(names.iter().any(|n| n == b), "{b} in {names:?}");
    }
    let fams: Vec<String> = registry::family_entries()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for b in BUILTIN_FAMILIES {
        assert!(fams.iter().any(|n| n == b), "{b} in {fams:?}");
        // Every built-in family passes the shape check with valid parameters.
        let entry = registry::family_entry(b).unwrap();
        let params: Params = entry
            .param_names()
            .iter()
            .map(|n| (n.clone(), if n == "variance" { 0.5 } else { 3.0 }))
            .collect();
        entry.build(&params).unwrap();
    }
    // Every built-in expert's description rebuilds an equal expert (same description).
    for spec in [
        ExpertSpec::new("linear").param("ridge", 0.25),
        ExpertSpec::new("logistic"),
        ExpertSpec::new("poisson"),
        ExpertSpec::new("multinomial")
            .param("classes", 4.0)
            .param("lbfgs_tol", 1e-7)
            .param("lbfgs_max_iter", 12.0)
            .param("dense_max_params", 3.0),
        ExpertSpec {
            name: "glm".into(),
            family: Some(FamilySpec::new(
                "gaussian-known-variance",
                Params::new().with("variance", 2.0),
            )),
            n_regressed: Some(1),
            ..ExpertSpec::default()
        },
        ExpertSpec {
            name: "glm".into(),
            family: Some(FamilySpec::new("gaussian", Params::new())),
            n_regressed: Some(1),
            constants: vec![-0.25],
            ..ExpertSpec::default()
        },
    ] {
        let e = build_expert(&spec).unwrap();
        assert_eq!(e.spec().unwrap(), spec);
    }
    // Only the experts that can be built from a target column have a target rule.
    let with_rule: Vec<String> = registry::expert_entries()
        .iter()
        .filter(|e| e.has_target_rule() && BUILTIN_EXPERTS.contains(&e.name()))
        .map(|e| e.name().to_string())
        .collect();
    assert_eq!(with_rule, ["linear", "logistic", "multinomial", "poisson"]);
}

#[test]
fn target_rules_check_the_support_and_infer_the_classes() {
    let rule = |name: &str, y: &[f64]| expert_entry(name).unwrap().spec_from_target(y).unwrap();
    let out = |row: usize, expert: &str, value: f64| {
        let expected = expert_entry(expert).unwrap().support().to_string();
        Err(TargetError::OutOfSupport {
            row,
            expert: expert.into(),
            expected,
            value,
        })
    };
    assert_eq!(rule("linear", &[1.0, -2.5]), Ok(ExpertSpec::new("linear")));
    assert!(matches!(
        rule("linear", &[1.0, f64::NAN]),
        Err(TargetError::OutOfSupport { row: 1, .. })
    ));
    assert_eq!(
        rule("logistic", &[0.0, 1.0, 1.0]),
        Ok(ExpertSpec::new("logistic"))
    );
    assert_eq!(
        rule("logistic", &[0.0, 1.0, 1.0, 0.5]),
        out(3, "logistic", 0.5)
    );
    assert_eq!(
        rule("multinomial", &[0.0, 2.0, 1.0, 4.0]),
        Ok(ExpertSpec::new("multinomial").param("classes", 5.0))
    );
    assert_eq!(
        rule("multinomial", &[0.0, 2.0, -1.0]),
        out(2, "multinomial", -1.0)
    );
    assert_eq!(rule("multinomial", &[0.0, 1.5]), out(1, "multinomial", 1.5));
    assert_eq!(
        rule("multinomial", &[0.0, 1000.0]),
        out(1, "multinomial", 1000.0)
    );
    assert_eq!(
        rule("multinomial", &[0.0, 0.0]),
        Err(TargetError::Unusable {
            expert: "multinomial".into(),
            expected: "at least two classes 0..C−1".into(),
            found: "only class 0".into(),
        })
    );
    assert_eq!(
        rule("poisson", &[0.0, 3.0, 17.0]),
        Ok(ExpertSpec::new("poisson"))
    );
    assert_eq!(rule("poisson", &[0.0, 3.0, 2.5]), out(2, "poisson", 2.5));
    assert_eq!(rule("poisson", &[-1.0]), out(0, "poisson", -1.0));
    assert!(expert_entry("glm")
        .unwrap()
        .spec_from_target(&[1.0])
        .is_none());
    // The messages the command line prints.
    assert_eq!(
        out(1, "logistic", 2.0).unwrap_err().to_string(),
        "data row 2 (0-based index 1): logistic experts expect 0 or 1, found 2"
    );
    // Every inferred description builds.
    for (name, y) in [
        ("linear", vec![0.5]),
        ("logistic", vec![1.0]),
        ("multinomial", vec![0.0, 2.0]),
        ("poisson", vec![4.0]),
    ] {
        build_expert(&rule(name, &y).unwrap()).unwrap();
    }
}

/// How a [`Defective`] family breaks its own dimensions.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Defect {
    /// `dim()` is 0.
    ZeroDim,
    /// `dim()` says 1 but `T(s)` has two entries (Poisson with an extra statistic).
    StatisticLonger,
    /// `dim()` says 2 but `T(s)` sets only the first entry (Gaussian).
    StatisticShorter,
    /// `obs_dim()` says 2 but `sample` writes one entry (Poisson).
    ObsDimLarger,
    /// `obs_dim()` says 1 but `sample` writes two (bivariate Gaussian).
    ObsDimSmaller,
    /// `newton_start` leaves the default θ = 0, outside θ < 0 (Exponential).
    StartOutside,
    /// `fisher` is 1 × 1 for `dim()` = 2 (Gaussian).
    FisherShape,
}

/// A mirror family with one defect.
struct Defective {
    inner: Box<dyn ExponentialFamily>,
    defect: Defect,
}

impl Defective {
    fn new(defect: Defect) -> Self {
        let inner: Box<dyn ExponentialFamily> = match defect {
            Defect::ZeroDim | Defect::StatisticLonger | Defect::ObsDimLarger => {
                Box::new(mirror::Poisson::new())
            }
            Defect::StatisticShorter | Defect::FisherShape => Box::new(mirror::Gaussian::new()),
            Defect::ObsDimSmaller => Box::new(mirror::MultivariateGaussian::new(2).unwrap()),
            Defect::StartOutside => Box::new(mirror::Exponential::new()),
        };
        Defective { inner, defect }
    }
}

impl ExponentialFamily for Defective {
    fn name(&self) -> String {
        format!("{:?}", self.defect)
    }
    fn dim(&self) -> usize {
        match self.defect {
            Defect::ZeroDim => 0,
            _ => self.inner.dim(),
        }
    }
    fn obs_dim(&self) -> usize {
        match self.defect {
            Defect::ObsDimLarger => 2,
            Defect::ObsDimSmaller => 1,
            _ => self.inner.obs_dim(),
        }
    }
    fn in_support(&self, s: &[f64]) -> bool {
        match self.defect {
            Defect::ObsDimLarger => self.inner.in_support(&s[..1]),
            _ => self.inner.in_support(s),
        }
    }
    fn in_natural_domain(&self, theta: &[f64]) -> bool {
        self.inner.in_natural_domain(theta)
    }
    fn in_mean_domain(&self, mu: &[f64]) -> bool {
        self.inner.in_mean_domain(mu)
    }
    fn sufficient_stats(&self, s: &[f64], t: &mut [f64]) {
        match self.defect {
            Defect::StatisticLonger => {
                t[0] = s[0];
                t[1] = s[0] * s[0];
            }
            Defect::StatisticShorter => t[0] = s[0],
            _ => self.inner.sufficient_stats(s, t),
        }
    }
    fn log_base_measure(&self, s: &[f64]) -> f64 {
        self.inner.log_base_measure(s)
    }
    fn log_partition(&self, theta: &[f64]) -> mirror::Result<f64> {
        self.inner.log_partition(theta)
    }
    fn mean(&self, theta: &[f64], mu: &mut [f64]) -> mirror::Result<()> {
        self.inner.mean(theta, mu)
    }
    fn fisher(&self, theta: &[f64]) -> mirror::Result<faer::Mat<f64>> {
        match self.defect {
            Defect::FisherShape => Ok(faer::Mat::zeros(1, 1)),
            _ => self.inner.fisher(theta),
        }
    }
    fn sample(&self, theta: &[f64], rng: &mut dyn RngCore, s: &mut [f64]) -> mirror::Result<()> {
        match self.defect {
            Defect::ObsDimLarger => self.inner.sample(theta, rng, &mut s[..1]),
            _ => self.inner.sample(theta, rng, s),
        }
    }
    fn newton_start(&self, theta: &mut [f64]) {
        match self.defect {
            Defect::StartOutside => theta.iter_mut().for_each(|t| *t = 0.0),
            _ => self.inner.newton_start(theta),
        }
    }
}

macro_rules! defective_builder {
    ($f:ident, $d:expr) => {
        fn $f(_: &[f64]) -> em_as_md::Result<Arc<dyn ExponentialFamily>> {
            Ok(Arc::new(Defective::new($d)))
        }
    };
}
defective_builder!(zero_dim, Defect::ZeroDim);
defective_builder!(statistic_longer, Defect::StatisticLonger);
defective_builder!(statistic_shorter, Defect::StatisticShorter);
defective_builder!(obs_dim_larger, Defect::ObsDimLarger);
defective_builder!(obs_dim_smaller, Defect::ObsDimSmaller);
defective_builder!(start_outside, Defect::StartOutside);
defective_builder!(fisher_shape, Defect::FisherShape);

fn poisson_family(_: &[f64]) -> em_as_md::Result<Arc<dyn ExponentialFamily>> {
    Ok(Arc::new(mirror::Poisson::new()))
}

fn registry_err<T>(r: em_as_md::Result<T>) -> RegistryError {
    match r {
        Err(MoeError::Registry(e)) => e,
        Err(other) => panic!("expected a registry error, got {other:?}"),
        Ok(_) => panic!("expected a registry error, got Ok"),
    }
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn bad_inputs_are_typed_errors_naming_what_is_wrong() {
    for (name, builder) in [
        ("defect-zero-dim", zero_dim as fn(&[f64]) -> _),
        ("defect-statistic-longer", statistic_longer),
        ("defect-statistic-shorter", statistic_shorter),
        ("defect-obs-dim-larger", obs_dim_larger),
        ("defect-obs-dim-smaller", obs_dim_smaller),
        ("defect-start-outside", start_outside),
        ("defect-fisher-shape", fisher_shape),
    ] {
        // Registering a defective family succeeds: it is checked when built.
        registry::register_family(FamilyEntry::new(name, &[], builder)).unwrap();
    }
    let glm = |family: &str, params: Params| ExpertSpec {
        name: "glm".into(),
        family: Some(FamilySpec::new(family, params)),
        ..ExpertSpec::default()
    };
    let kv = "gaussian-known-variance";
    let shape = |family: &str, method: &'static str| (family.to_string(), method);

    // (what, error, check)
    type Check = Box<dyn Fn(&RegistryError) -> bool>;
    let cases: Vec<(&str, RegistryError, Check)> = vec![
        (
            "unknown expert",
            registry_err(build_expert(&ExpertSpec::new("gamma-regression"))),
            Box::new(|e| {
                matches!(e, RegistryError::UnknownExpert { name, known }
                    if name == "gamma-regression" && BUILTIN_EXPERTS.iter().all(|b| known.iter().any(|k| k == b)))
            }),
        ),
        (
            "unknown family",
            registry_err(build_family(&FamilySpec::new("gamma-shape", Params::new()))),
            Box::new(|e| {
                matches!(e, RegistryError::UnknownFamily { name, known }
                    if name == "gamma-shape" && BUILTIN_FAMILIES.iter().all(|b| known.iter().any(|k| k == b)))
            }),
        ),
        (
            "unknown family inside a glm",
            registry_err(build_expert(&glm("gamma-shape", Params::new()))),
            Box::new(
                |e| matches!(e, RegistryError::UnknownFamily { name, .. } if name == "gamma-shape"),
            ),
        ),
        (
            "a name with a space",
            registry_err(registry::register_family(FamilyEntry::new(
                "my family",
                &[],
                poisson_family,
            ))),
            Box::new(|e| {
                *e == RegistryError::InvalidName {
                    what: "family",
                    name: "my family".into(),
                }
            }),
        ),
        (
            "a built-in family name with another builder",
            registry_err(registry::register_family(FamilyEntry::new(
                "poisson",
                &[],
                poisson_family,
            ))),
            Box::new(|e| {
                *e == RegistryError::Duplicate {
                    what: "family",
                    name: "poisson".into(),
                }
            }),
        ),
        (
            "a built-in expert name with another builder",
            registry_err(registry::register_expert(ExpertEntry::new(
                "linear",
                "Gaussian linear regression with its own variance",
                "a finite number",
                |_: &ExpertSpec| Ok(Arc::new(em_as_md::LinearGaussian::new()) as _),
            ))),
            Box::new(|e| {
                *e == RegistryError::Duplicate {
                    what: "expert",
                    name: "linear".into(),
                }
            }),
        ),
        (
            "a missing family parameter",
            registry_err(build_family(&FamilySpec::new(kv, Params::new()))),
            Box::new(|e| {
                *e == RegistryError::WrongParams {
                    owner: "gaussian-known-variance".into(),
                    expected: names(&["variance"]),
                    found: vec![],
                }
            }),
        ),
        (
            "an extra family parameter",
            registry_err(Glm::registered(
                kv,
                &Params::new().with("variance", 1.0).with("mean", 0.0),
            )),
            Box::new(|e| {
                *e == RegistryError::WrongParams {
                    owner: "gaussian-known-variance".into(),
                    expected: names(&["variance"]),
                    found: names(&["variance", "mean"]),
                }
            }),
        ),
        (
            "a negative variance",
            registry_err(build_family(&FamilySpec::new(
                kv,
                Params::new().with("variance", -1.0),
            ))),
            Box::new(|e| {
                matches!(e, RegistryError::BadParam { owner, param, value, .. }
                    if owner == "gaussian-known-variance" && param == "variance" && *value == -1.0)
            }),
        ),
        (
            "a fractional class count",
            registry_err(build_family(&FamilySpec::new(
                "categorical",
                Params::new().with("classes", 2.5),
            ))),
            Box::new(|e| {
                matches!(e, RegistryError::BadParam { owner, param, value, .. }
                    if owner == "categorical" && param == "classes" && *value == 2.5)
            }),
        ),
        (
            "a zero-dimensional multivariate Gaussian",
            registry_err(build_family(&FamilySpec::new(
                "multivariate-gaussian",
                Params::new().with("dim", 0.0),
            ))),
            Box::new(|e| matches!(e, RegistryError::BadParam { param, .. } if param == "dim")),
        ),
        (
            "a multinomial expert without classes",
            registry_err(build_expert(
                &ExpertSpec::new("multinomial").param("lbfgs_tol", 1e-6),
            )),
            Box::new(|e| {
                matches!(e, RegistryError::WrongParams { owner, found, .. }
                    if owner == "multinomial" && *found == names(&["lbfgs_tol"]))
            }),
        ),
        (
            "a single class",
            registry_err(build_expert(
                &ExpertSpec::new("multinomial").param("classes", 1.0),
            )),
            Box::new(|e| {
                matches!(e, RegistryError::BadParam { owner, param, .. }
                    if owner == "multinomial" && param == "classes")
            }),
        ),
        (
            "a negative ridge",
            registry_err(build_expert(
                &ExpertSpec::new("linear").param("ridge", -1.0),
            )),
            Box::new(
                |e| matches!(e, RegistryError::BadParam { owner, param, .. } if owner == "linear" && param == "ridge"),
            ),
        ),
        (
            "a parameter the logistic expert does not take",
            registry_err(build_expert(
                &ExpertSpec::new("logistic").param("classes", 2.0),
            )),
            Box::new(|e| {
                *e == RegistryError::WrongParams {
                    owner: "logistic".into(),
                    expected: names(&["ridge"]),
                    found: names(&["classes"]),
                }
            }),
        ),
        (
            "a family on a linear expert",
            registry_err(build_expert(&ExpertSpec {
                family: Some(FamilySpec::new("gaussian", Params::new())),
                ..ExpertSpec::new("linear")
            })),
            Box::new(
                |e| matches!(e, RegistryError::SpecField { expert, field: "family", .. } if expert == "linear"),
            ),
        ),
        (
            "a glm without a family",
            registry_err(build_expert(&ExpertSpec::new("glm"))),
            Box::new(|e| {
                matches!(
                    e,
                    RegistryError::SpecField {
                        field: "family",
                        ..
                    }
                )
            }),
        ),
        (
            "a glm with parameters",
            registry_err(build_expert(&ExpertSpec {
                params: Params::new().with("ridge", 1.0),
                ..glm("gaussian", Params::new())
            })),
            Box::new(|e| matches!(e, RegistryError::WrongParams { owner, .. } if owner == "glm")),
        ),
        (
            "more regressed components than the family has",
            registry_err(build_expert(&ExpertSpec {
                n_regressed: Some(3),
                ..glm("gaussian", Params::new())
            })),
            Box::new(|e| {
                matches!(
                    e,
                    RegistryError::SpecField {
                        field: "n_regressed",
                        ..
                    }
                )
            }),
        ),
        (
            "constants of the wrong length",
            registry_err(build_expert(&ExpertSpec {
                n_regressed: Some(1),
                ..glm("gaussian", Params::new())
            })),
            Box::new(|e| {
                matches!(
                    e,
                    RegistryError::SpecField {
                        field: "constants",
                        ..
                    }
                )
            }),
        ),
        (
            "a family of dimension 0",
            registry_err(build_family(&FamilySpec::new(
                "defect-zero-dim",
                Params::new(),
            ))),
            Box::new(move |e| {
                matches!(e, RegistryError::FamilyShape { family, method, dim: 0, .. }
                    if (family.clone(), *method) == shape("defect-zero-dim", "dim"))
            }),
        ),
        (
            "a statistic longer than dim()",
            registry_err(build_expert(&glm("defect-statistic-longer", Params::new()))),
            Box::new(move |e| {
                matches!(e, RegistryError::FamilyShape { family, method, dim: 1, .. }
                    if (family.clone(), *method) == shape("defect-statistic-longer", "sufficient_stats"))
            }),
        ),
        (
            "a statistic shorter than dim()",
            registry_err(Glm::registered("defect-statistic-shorter", &Params::new())),
            Box::new(move |e| {
                matches!(e, RegistryError::FamilyShape { family, method, dim: 2, reason, .. }
                    if (family.clone(), *method) == shape("defect-statistic-shorter", "sufficient_stats")
                        && reason.contains("set 1 of dim() = 2"))
            }),
        ),
        (
            "obs_dim() larger than the draws",
            registry_err(build_family(&FamilySpec::new(
                "defect-obs-dim-larger",
                Params::new(),
            ))),
            Box::new(move |e| {
                matches!(e, RegistryError::FamilyShape { family, method, obs_dim: 2, .. }
                    if (family.clone(), *method) == shape("defect-obs-dim-larger", "sample"))
            }),
        ),
        (
            "obs_dim() smaller than the draws",
            registry_err(build_family(&FamilySpec::new(
                "defect-obs-dim-smaller",
                Params::new(),
            ))),
            Box::new(move |e| {
                matches!(e, RegistryError::FamilyShape { family, method, obs_dim: 1, .. }
                    if (family.clone(), *method) == shape("defect-obs-dim-smaller", "sample"))
            }),
        ),
        (
            "a Newton start outside the domain",
            registry_err(build_family(&FamilySpec::new(
                "defect-start-outside",
                Params::new(),
            ))),
            Box::new(move |e| {
                matches!(e, RegistryError::FamilyShape { family, method, .. }
                    if (family.clone(), *method) == shape("defect-start-outside", "newton_start"))
            }),
        ),
        (
            "a Fisher matrix of the wrong shape",
            registry_err(build_family(&FamilySpec::new(
                "defect-fisher-shape",
                Params::new(),
            ))),
            Box::new(move |e| {
                matches!(e, RegistryError::FamilyShape { family, method, .. }
                    if (family.clone(), *method) == shape("defect-fisher-shape", "fisher"))
            }),
        ),
        (
            "saving a GLM on an unnamed family",
            registry_err(
                MixtureOfExperts::new(
                    Arc::new(Glm::new(Arc::new(mirror::Poisson::new()))),
                    2,
                    2,
                    Gating::Softmax,
                )
                .unwrap()
                .spec(),
            ),
            Box::new(
                |e| matches!(e, RegistryError::NotSerialisable { expert, .. } if expert == "GLM(Poisson)"),
            ),
        ),
    ];
    for (what, err, check) in &cases {
        assert!(check(err), "{what}: {err:?}");
        // Every message names something and is one line.
        let msg = err.to_string();
        assert!(!msg.contains('\n'), "{what}: {msg}");
    }
    // The family-shape check also runs when hyperparameters are checked.
    let e = em_as_md::MoeParams::new(2)
        .expert(Glm::new(Arc::new(Defective::new(Defect::StatisticShorter))))
        .check()
        .unwrap_err();
    assert!(
        matches!(&e, MoeError::Registry(RegistryError::FamilyShape { family, method: "sufficient_stats", .. }) if family == "StatisticShorter"),
        "{e:?}"
    );
}

#[test]
fn registering_the_same_entry_twice_is_a_no_op() {
    fn build(_: &ExpertSpec) -> em_as_md::Result<Arc<dyn em_as_md::Expert>> {
        Ok(Arc::new(em_as_md::Poisson::new()))
    }
    let entry = || {
        ExpertEntry::new(
            "counts-again",
            "Poisson under another name",
            "a count",
            build,
        )
        .row_support(|v| v >= 0.0)
    };
    registry::register_expert(entry()).unwrap();
    registry::register_expert(entry()).unwrap();
    // Another support test is another entry.
    let other = ExpertEntry::new(
        "counts-again",
        "Poisson under another name",
        "a count",
        build,
    )
    .row_support(|v| v > 0.0);
    assert!(matches!(
        registry::register_expert(other),
        Err(MoeError::Registry(RegistryError::Duplicate {
            what: "expert",
            ..
        }))
    ));
    registry::register_family(FamilyEntry::new("poisson-again", &[], poisson_family)).unwrap();
    registry::register_family(FamilyEntry::new("poisson-again", &[], poisson_family)).unwrap();
    // A different summary is a different entry.
    let e = registry::register_family(
        FamilyEntry::new("poisson-again", &[], poisson_family).summary("other"),
    );
    assert!(matches!(
        e,
        Err(MoeError::Registry(RegistryError::Duplicate {
            what: "family",
            ..
        }))
    ));
    assert_eq!(
        build_expert(&ExpertSpec::new("counts-again"))
            .unwrap()
            .name(),
        "Poisson"
    );
}
