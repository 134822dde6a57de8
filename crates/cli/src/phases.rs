//! Wall-clock time of a command's phases, so a user sees what a fit costs besides its EM
//! iterations (reading, checking, starts, summaries, output).
//!
//! A [`Phases`] clock is started when the command starts; [`Phases::lap`] closes the phase
//! that just ended under its name. `mdem fit` reports the laps in its summary table and,
//! with `--json`, as `seconds_by_phase`, next to the fit's own split between EM
//! iterations and building starts ([`em_as_md::FitReport::em_seconds`],
//! [`em_as_md::FitReport::start_seconds`]).

use serde_json::{Map, Value};
use std::time::Instant;

/// Laps of a command's wall clock, in the order the phases ran.
#[derive(Debug, Clone)]
pub struct Phases {
    started: Instant,
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Phases {
    /// Starts the clock.
    pub fn start() -> Self {
        let now = Instant::now();
        Phases {
            started: now,
            last: now,
            laps: Vec::new(),
        }
    }

    /// Closes the phase that ran since the previous lap (or the start) as `name`. A name
    /// given twice adds to the same phase.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        let seconds = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        match self.laps.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += seconds,
            None => self.laps.push((name, seconds)),
        }
    }

    /// Seconds since the clock started.
    pub fn total(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The laps in order, `(name, seconds)`.
    pub fn laps(&self) -> &[(&'static str, f64)] {
        &self.laps
    }

    /// The laps as a JSON object, plus `total`: the seconds since the start, which
    /// include the time after the last lap.
    pub fn json(&self) -> Value {
        let mut m: Map<String, Value> = self
            .laps
            .iter()
            .map(|&(n, s)| (n.to_string(), Value::from(s)))
            .collect();
        m.insert("total".into(), Value::from(self.total()));
        Value::Object(m)
    }
}

/// The process's peak resident memory in bytes (`VmHWM` of `/proc/self/status`), where
/// the system reports it (Linux); `None` elsewhere.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn laps_partition_the_elapsed_time_in_order() {
        let mut p = Phases::start();
        std::thread::sleep(Duration::from_millis(20));
        p.lap("read");
        std::thread::sleep(Duration::from_millis(5));
        p.lap("fit");
        std::thread::sleep(Duration::from_millis(5));
        p.lap("read");
        let names: Vec<_> = p.laps().iter().map(|l| l.0).collect();
        assert_eq!(names, ["read", "fit"]);
        let sum: f64 = p.laps().iter().map(|l| l.1).sum();
        assert!(p.laps()[0].1 >= 0.025, "{:?}", p.laps());
        assert!(
            sum <= p.total() + 1e-9 && sum >= 0.03,
            "{sum} {}",
            p.total()
        );
        let j = p.json();
        let keys: Vec<_> = j.as_object().unwrap().keys().cloned().collect();
        // serde_json's map is sorted unless preserve_order: check membership, not order.
        for k in ["read", "fit", "total"] {
            assert!(keys.iter().any(|x| x == k), "{keys:?}");
        }
        assert!(j["total"].as_f64().unwrap() >= sum);
    }
}
