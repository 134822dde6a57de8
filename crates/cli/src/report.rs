//! Writing the command's reports: [`print_stdout`]; the tables and the number formatting
//! are [`experiments::report`]'s (re-exported here), shared with the reproduction's report.

pub use experiments::report::{num, Align, Table};

/// Writes `text` to stdout; a closed pipe (`mdem … | head`) is not an error.
///
/// # Errors
/// [`CliError::Output`](crate::error::CliError::Output) for any other write failure.
pub fn print_stdout(text: &str) -> Result<(), crate::error::CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::error::CliError::output("stdout", e)),
    }
}

/// What to do about a separated expert (text and JSON reports).
const SEPARATION_HINT: &str = "a linear predictor classifies that expert's rows perfectly, so \
     the likelihood has no maximum: add a ridge (--ridge 1), use fewer experts or drop the \
     separating columns (--features)";

/// The report's warning line for a run that did not converge, naming the reason
/// (`None` for a converged run): "WARNING: not converged: {termination}", with a hint on
/// what to change for each reason.
pub fn termination_warning(termination: &em_as_md::Termination) -> Option<String> {
    use em_as_md::Termination;
    let hint = match termination {
        Termination::Converged { .. } | Termination::GradientSmall => return None,
        Termination::InexactMStep { .. } => {
            "the last steps were not exact EM steps; the parameters are not a fixed point of EM"
        }
        Termination::Separated { .. } => SEPARATION_HINT,
        Termination::MaxIters => "raise the iteration limit",
        Termination::TimeLimit => "raise the time limit",
        Termination::Interrupted => "the results are those of the iterations before the interrupt",
    };
    Some(format!("WARNING: not converged: {termination} ({hint})"))
}

/// The `"inexact_m_step"` field of the JSON reports: the figures of
/// [`Termination::InexactMStep`](em_as_md::Termination::InexactMStep), or `null` for any
/// other termination.
pub fn inexact_m_step_json(termination: &em_as_md::Termination) -> serde_json::Value {
    use em_as_md::Termination;
    match termination {
        Termination::InexactMStep {
            inexact,
            window,
            worst_residual,
            rel_change,
        } => serde_json::json!({
            "inexact": inexact,
            "window": window,
            "worst_residual": worst_residual,
            "rel_change": rel_change,
        }),
        Termination::Converged { .. }
        | Termination::GradientSmall
        | Termination::Separated { .. }
        | Termination::MaxIters
        | Termination::TimeLimit
        | Termination::Interrupted => serde_json::Value::Null,
    }
}

/// The `"separated"` field of the JSON reports: the expert (1-based, as in the tables),
/// its mean weighted negative log-likelihood and what to do (the text report's hint) for
/// [`Termination::Separated`](em_as_md::Termination::Separated), or `null` for any other
/// termination.
pub fn separated_json(termination: &em_as_md::Termination) -> serde_json::Value {
    match termination {
        em_as_md::Termination::Separated { expert, mean_nll } => serde_json::json!({
            "expert": expert + 1,
            "mean_nll": mean_nll,
            "hint": SEPARATION_HINT,
        }),
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::Termination;

    #[test]
    fn warnings_name_every_non_converged_reason_and_only_those() {
        let inexact = Termination::InexactMStep {
            inexact: 2,
            window: 5,
            worst_residual: Some(0.5),
            rel_change: Some(1e-12),
        };
        assert_eq!(termination_warning(&Termination::GradientSmall), None);
        assert_eq!(
            termination_warning(&Termination::Converged { rel_change: 1e-9 }),
            None
        );
        let w = termination_warning(&inexact).unwrap();
        assert!(
            w.starts_with("WARNING: not converged: M-step inexact in 2 of the last 5 iterations (worst residual 5.000e-1)"),
            "{w}"
        );
        for t in [
            Termination::Separated {
                expert: 1,
                mean_nll: 1e-9,
            },
            Termination::MaxIters,
            Termination::TimeLimit,
            Termination::Interrupted,
        ] {
            let w = termination_warning(&t).unwrap();
            assert!(w.contains(&t.to_string()), "{w}");
        }
        assert_eq!(
            inexact_m_step_json(&inexact),
            serde_json::json!({"inexact": 2, "window": 5, "worst_residual": 0.5, "rel_change": 1e-12})
        );
        assert!(inexact_m_step_json(&Termination::MaxIters).is_null());
        let sep = Termination::Separated {
            expert: 1,
            mean_nll: 1e-9,
        };
        assert!(sep.to_string().starts_with("expert 2 separates"), "{sep}");
        assert_eq!(
            separated_json(&sep),
            serde_json::json!({"expert": 2, "mean_nll": 1e-9, "hint": SEPARATION_HINT})
        );
        assert!(separated_json(&inexact).is_null());
    }
}
