//! An observer that keeps the iterates $\theta_0, \theta_1, \dots$ and their objectives
//! $L(\theta_t)$: what a certificate
//! ([`diagnostics::certificate::certify`]) needs beside the problem.

use em_as_md::{FitState, IterRecord, Observer};
use std::sync::{Arc, Mutex, PoisonError};

/// Iterates and objective values, in order.
type Points = (Vec<Vec<f64>>, Vec<f64>);

/// Collects $(\theta_t, L(\theta_t))$ for $t = 0, 1, \dots$ (the start from
/// `observe_init`, then every observed iteration). Clones share the buffer.
#[derive(Debug, Clone, Default)]
pub struct TrajectoryObserver {
    points: Arc<Mutex<Points>>,
}

impl TrajectoryObserver {
    /// An empty trajectory.
    pub fn new() -> Self {
        Self::default()
    }
    /// The iterates and their objective values so far (equal lengths).
    pub fn take(&self) -> (Vec<Vec<f64>>, Vec<f64>) {
        let g = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        (g.0.clone(), g.1.clone())
    }
}

impl Observer for TrajectoryObserver {
    fn observe_init(&mut self, _solver: &str, state: &FitState) {
        let mut g = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        g.0.clear();
        g.1.clear();
        g.0.push(state.theta.clone());
        g.1.push(state.objective);
    }
    fn observe_iter(&mut self, state: &FitState, record: &IterRecord) {
        let mut g = self.points.lock().unwrap_or_else(PoisonError::into_inner);
        g.0.push(state.theta.clone());
        g.1.push(record.objective);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use em_as_md::InnerStats;

    #[test]
    fn keeps_start_and_iterates_in_order() {
        let keep = TrajectoryObserver::new();
        let mut o: Box<dyn Observer> = Box::new(keep.clone());
        o.observe_init("EM", &FitState::new(vec![0.0, 1.0], 3.0));
        for t in 1..=2u32 {
            let st = FitState::new(vec![f64::from(t), 1.0], 3.0 - f64::from(t));
            let rec = IterRecord {
                iter: u64::from(t),
                objective: st.objective,
                grad_norm: f64::NAN,
                bregman_step: f64::NAN,
                inner: InnerStats::default(),
                elapsed: 0.0,
            };
            o.observe_iter(&st, &rec);
        }
        let (th, l) = keep.take();
        assert_eq!(th, vec![vec![0.0, 1.0], vec![1.0, 1.0], vec![2.0, 1.0]]);
        assert_eq!(l, vec![3.0, 2.0, 1.0]);
    }
}
