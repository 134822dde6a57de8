//! # mdem-experiments
//!
//! The paper's experiments and their report and figures, called by `mdem reproduce`.
//!
//! * [`plot`]: line charts (several series, bands, log axes) written as SVG or PNG, with an
//!   embedded font;
//! * [`report`]: plain-text tables and number formatting.

pub mod plot;
pub mod report;
