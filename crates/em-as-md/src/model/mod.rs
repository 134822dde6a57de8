//! The models: conditional exponential families ([`ConditionalFamily`]), the E-/M-step
//! capability a model offers to EM ([`EmModel`]), experts (one file each), the softmax
//! gate, mixtures of experts and the paper's symmetric two-expert models.

pub mod conditional;
mod em_model;
pub mod expert;
pub mod gate;
pub mod mixture;
pub mod sym;

pub use conditional::ConditionalFamily;
pub use em_model::EmModel;
