//! Serialisable descriptions of experts and families: [`ExpertSpec`], [`FamilySpec`] and
//! their named numeric [`Params`].
//!
//! A description names a [registry](crate::model::registry) entry and carries what its
//! builder needs; a model file ([`crate::fit::io`]) stores it, and loading rebuilds the
//! expert through the registry. Floats are stored as they are (the model file writes them
//! with the shortest representation that reads back to the same bits), so a rebuilt expert
//! equals the saved one.

use crate::error::{RegistryError, Result};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Named numeric parameters of an expert or a family, in the order they were set
/// (written as a JSON object in that order; a repeated name in a file is an error).
///
/// ```
/// use em_as_md::model::expert::Params;
/// let p = Params::new().with("classes", 3.0).with("lbfgs_tol", 1e-8);
/// assert_eq!(p.get("classes"), Some(3.0));
/// assert_eq!(p.names().collect::<Vec<_>>(), ["classes", "lbfgs_tol"]);
/// let q: Params = [("shape", 2.5)].into();
/// assert_eq!(q.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params(Vec<(String, f64)>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params(Vec::new())
    }
    /// With `name` set to `value` (replacing an earlier value of the same name, keeping
    /// its position).
    pub fn with(mut self, name: impl Into<String>, value: f64) -> Self {
        self.set(name, value);
        self
    }
    /// Sets `name` to `value` (see [`with`](Self::with)).
    pub fn set(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
    /// `(name, value)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(n, v)| (n.as_str(), *v))
    }
    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of exactly the parameters `names`, in that order.
    ///
    /// # Errors
    /// [`RegistryError::WrongParams`] naming `owner` when a name is missing or another
    /// name is present.
    pub fn exactly(&self, owner: &str, names: &[&str]) -> Result<Vec<f64>> {
        self.only(owner, names)?;
        names
            .iter()
            .map(|n| self.get(n).ok_or_else(|| self.wrong(owner, names)))
            .collect()
    }
    /// Checks that every parameter is one of `names` (any of them may be absent).
    ///
    /// # Errors
    /// [`RegistryError::WrongParams`] naming `owner` for any other name.
    pub fn only(&self, owner: &str, names: &[&str]) -> Result<()> {
        if self.names().all(|n| names.contains(&n)) {
            Ok(())
        } else {
            Err(self.wrong(owner, names))
        }
    }
    /// The value of `name` as an integer in `min..=max`, if present.
    ///
    /// # Errors
    /// [`RegistryError::BadParam`] when it is not an integer in that range.
    pub fn integer(&self, owner: &str, name: &str, min: u64, max: u64) -> Result<Option<u64>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        // Every u64 up to 2^53 is exact in f64; the range check keeps the cast exact.
        let limit = max.min(1 << 53) as f64;
        if v.fract() == 0.0 && v >= min as f64 && v <= limit {
            Ok(Some(v as u64))
        } else {
            Err(bad_param(
                owner,
                name,
                v,
                format!("an integer from {min} to {}", max.min(1 << 53)),
            ))
        }
    }
    /// The value of `name` if present, required finite and `>= min` (`> min` when
    /// `strict`).
    ///
    /// # Errors
    /// [`RegistryError::BadParam`] otherwise.
    pub fn real(&self, owner: &str, name: &str, min: f64, strict: bool) -> Result<Option<f64>> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let ok = v.is_finite() && if strict { v > min } else { v >= min };
        if ok {
            Ok(Some(v))
        } else {
            let op = if strict { ">" } else { ">=" };
            Err(bad_param(owner, name, v, format!("finite and {op} {min}")))
        }
    }
    fn wrong(&self, owner: &str, names: &[&str]) -> crate::error::MoeError {
        RegistryError::WrongParams {
            owner: owner.into(),
            expected: names.iter().map(|s| s.to_string()).collect(),
            found: self.names().map(str::to_string).collect(),
        }
        .into()
    }
    /// Whether every value is finite (a file cannot carry NaN or ±∞).
    pub fn all_finite(&self) -> bool {
        self.0.iter().all(|(_, v)| v.is_finite())
    }
}

/// [`RegistryError::BadParam`] as a crate error.
pub(crate) fn bad_param(
    owner: &str,
    param: &str,
    value: f64,
    expected: impl Into<String>,
) -> crate::error::MoeError {
    RegistryError::BadParam {
        owner: owner.into(),
        param: param.into(),
        value,
        expected: expected.into(),
    }
    .into()
}

impl<S: Into<String>, const N: usize> From<[(S, f64); N]> for Params {
    fn from(pairs: [(S, f64); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<S: Into<String>> FromIterator<(S, f64)> for Params {
    fn from_iter<I: IntoIterator<Item = (S, f64)>>(iter: I) -> Self {
        let mut p = Params::new();
        for (n, v) in iter {
            p.set(n, v);
        }
        p
    }
}

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (n, v) in &self.0 {
            m.serialize_entry(n, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of named numbers")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Params, A::Error> {
                let mut p = Vec::<(String, f64)>::new();
                while let Some((k, v)) = a.next_entry::<String, f64>()? {
                    if p.iter().any(|(n, _)| *n == k) {
                        return Err(serde::de::Error::custom(format!(
                            "parameter `{k}` appears twice"
                        )));
                    }
                    p.push((k, v));
                }
                Ok(Params(p))
            }
        }
        d.deserialize_map(V)
    }
}

/// The description of an exponential family: its registered name and parameters (e.g.
/// `gaussian-known-variance` with `variance`, or a user's `gamma`). An unknown field in a
/// file is an error, not ignored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilySpec {
    /// The name it is registered under ([`crate::model::registry::register_family`]).
    pub name: String,
    /// Its parameters (exactly the names it was registered with).
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
}

impl FamilySpec {
    /// The family `name` with `params`.
    pub fn new(name: impl Into<String>, params: Params) -> Self {
        FamilySpec {
            name: name.into(),
            params,
        }
    }
}

/// The serialisable description of an expert ([`Expert::spec`](super::Expert::spec)):
/// the registry name of its builder, its named parameters (e.g. `classes`, `ridge`, a
/// multinomial expert's `lbfgs_tol`, `lbfgs_max_iter`, `dense_max_params`) and, for a
/// [`Glm`](super::Glm), the family's [`FamilySpec`], the number of regressed components
/// and the starting constants. An unknown field in a file (e.g. a misspelt `family`) is an
/// error, not ignored.
///
/// ```
/// use em_as_md::model::expert::{Expert, ExpertSpec, Multinomial};
/// let spec = Multinomial::new(3)?.spec().unwrap();
/// assert_eq!(spec.name, "multinomial");
/// assert_eq!(spec.params.get("classes"), Some(3.0));
/// let json = serde_json::to_string(&spec).unwrap();
/// assert!(json.starts_with(r#"{"name":"multinomial","params":{"classes":3.0,"#));
/// assert_eq!(serde_json::from_str::<ExpertSpec>(&json).unwrap(), spec);
/// assert!(serde_json::from_str::<ExpertSpec>(r#"{"name": "glm", "familly": {"name": "x"}}"#).is_err());
/// # Ok::<(), em_as_md::MoeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertSpec {
    /// The registry name of the expert's builder (`linear`, `logistic`, `multinomial`,
    /// `poisson`, `glm`, or a user's).
    pub name: String,
    /// Named numeric parameters.
    #[serde(default, skip_serializing_if = "Params::is_empty")]
    pub params: Params,
    /// For a GLM expert: the family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<FamilySpec>,
    /// For a GLM expert: the number $r$ of natural components regressed on $x$.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_regressed: Option<usize>,
    /// For a GLM expert: the starting values of the $p - r$ constant components.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constants: Vec<f64>,
}

impl ExpertSpec {
    /// The expert `name` without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        ExpertSpec {
            name: name.into(),
            ..ExpertSpec::default()
        }
    }
    /// With parameter `name` set to `value`.
    pub fn param(mut self, name: impl Into<String>, value: f64) -> Self {
        self.params.set(name, value);
        self
    }
    /// With the parameter `ridge` set to $\lambda$ when $\lambda > 0$ (an expert without a
    /// ridge keeps the description it had before experts had one).
    pub fn ridge(self, ridge: f64) -> Self {
        if ridge > 0.0 {
            self.param("ridge", ridge)
        } else {
            self
        }
    }
    /// Whether every number in the description is finite (what a model file can hold).
    pub fn all_finite(&self) -> bool {
        self.params.all_finite()
            && self.family.as_ref().is_none_or(|f| f.params.all_finite())
            && self.constants.iter().all(|c| c.is_finite())
    }
    /// Checks that the description has no GLM fields (`family`, `n_regressed`,
    /// `constants`): for experts whose builders take parameters only.
    ///
    /// # Errors
    /// [`RegistryError::SpecField`] naming the first field present.
    pub fn no_glm_fields(&self) -> Result<()> {
        let field = if self.family.is_some() {
            "family"
        } else if self.n_regressed.is_some() {
            "n_regressed"
        } else if !self.constants.is_empty() {
            "constants"
        } else {
            return Ok(());
        };
        Err(RegistryError::SpecField {
            expert: self.name.clone(),
            field,
            reason: "this expert takes named parameters only".into(),
        }
        .into())
    }
}
