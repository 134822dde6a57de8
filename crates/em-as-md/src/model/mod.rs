//! The models: conditional exponential families ([`ConditionalFamily`]), the E-/M-step
//! capability a model offers to EM ([`EmModel`]), experts (one file each), the softmax
//! gate, mixtures of experts, the paper's symmetric two-expert models, and the registry
//! that rebuilds experts and families from their serialisable descriptions.

pub mod conditional;
mod em_model;
pub mod expert;
pub mod gate;
pub mod mixture;
pub mod registry;
pub mod sym;

pub use conditional::{ConditionalFamily, JacT, ObservedSums};
pub use em_model::EmModel;
