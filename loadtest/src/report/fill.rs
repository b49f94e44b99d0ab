//! Small helpers for scenarios filling a [`Report`] in.

use super::{REPORT_VERSION, Report, TesterLoad};

impl Report {
    /// An empty report of the current [`REPORT_VERSION`] for `scenario`.
    pub fn new(scenario: impl Into<String>) -> Self {
        Report {
            version: REPORT_VERSION,
            scenario: scenario.into(),
            ..Report::default()
        }
    }

    /// Adds a warning sentence.
    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }

    /// Records the tester's own CPU use (see [`crate::measure::CpuMeter`]) and, when it was
    /// saturated, a warning saying the figures may describe the tester rather than the server.
    pub fn set_tester_load(&mut self, load: TesterLoad) {
        if load.saturated {
            self.warn(format!(
                "the load generator used {:.0} % of its {} cores: it was saturated, so the \
                 latencies and rates may describe the tester rather than the server; use fewer \
                 sessions per process or spread the load over more machines",
                load.cpu_percent, load.cores
            ));
        }
        self.tester = load;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::tester_load;
    use std::time::Duration;

    #[test]
    fn saturated_tester_adds_a_warning() {
        let mut r = Report::new("echo");
        assert_eq!(r.version, REPORT_VERSION);
        r.set_tester_load(tester_load(
            Duration::from_secs(5),
            Duration::from_secs(10),
            2,
        ));
        assert!(r.warnings.is_empty());
        assert_eq!(r.tester.cpu_percent, 25.0);
        r.set_tester_load(tester_load(
            Duration::from_secs(19),
            Duration::from_secs(10),
            2,
        ));
        assert!(r.tester.saturated);
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].starts_with("the load generator used 95 % of its 2 cores"));
    }
}
