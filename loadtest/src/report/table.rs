//! The final table: every figure of a [`Report`] as plain text for a terminal (ASCII, fixed
//! columns, deterministic, so tests can compare it whole). `Display` for `Report` prints it.

use std::fmt::{self, Write as _};

use super::format::{bytes, count, decimal, fraction, timestamp};
use super::{Latency, Report};

const LABEL: usize = 15;
const VALUE: usize = 12;
const COMMAND: usize = 32;

fn line(out: &mut String, label: &str, value: &str, note: &str) {
    let _ = if note.is_empty() {
        writeln!(out, "  {label:<LABEL$}{value:>VALUE$}")
    } else {
        writeln!(out, "  {label:<LABEL$}{value:>VALUE$}  {note}")
    };
}

fn latency_row(out: &mut String, label: &str, latency: Option<&Latency>) {
    match latency {
        Some(l) => {
            let _ = write!(out, "  {label:<LABEL$}{:>9}", l.count);
            for v in [l.min, l.mean, l.p50, l.p90, l.p99, l.p999, l.max] {
                let _ = write!(out, "{:>9}", decimal(v));
            }
            out.push('\n');
        }
        None => {
            let _ = writeln!(out, "  {label:<LABEL$}{:>9}", "-");
        }
    }
}

fn listing(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

impl Report {
    /// The final table: every figure of the report, section by section.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "corral loadtest: {}, {}, {} s",
            if self.scenario.is_empty() {
                "(unnamed)"
            } else {
                &self.scenario
            },
            timestamp(self.started_at_ms),
            decimal(self.duration_s)
        );
        match &self.settings {
            serde_json::Value::Null => {}
            serde_json::Value::Object(o) if o.is_empty() => {}
            settings => {
                let _ = writeln!(out, "settings: {settings}");
            }
        }

        let s = &self.sessions;
        out.push_str("\nSessions\n");
        line(&mut out, "target", &s.target.to_string(), "");
        let share = if s.target > 0 {
            fraction(s.connected as f64 / s.target as f64)
        } else {
            String::new()
        };
        line(&mut out, "connected", &s.connected.to_string(), &share);
        let failed: u64 = s.failed.values().sum();
        line(&mut out, "failed", &failed.to_string(), &listing(&s.failed));
        line(&mut out, "dropped", &s.dropped.to_string(), "");
        line(&mut out, "reconnected", &s.reconnected.to_string(), "");
        if !s.by_transport.is_empty() {
            line(&mut out, "transports", "", &listing(&s.by_transport));
        }
        if !s.by_node.is_empty() {
            line(&mut out, "nodes", "", &listing(&s.by_node));
        }

        let _ = writeln!(
            out,
            "\n{:<w$}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "Times (ms)",
            "count",
            "min",
            "mean",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            w = LABEL + 2
        );
        latency_row(&mut out, "connect", self.connect_ms.as_ref());
        latency_row(&mut out, "latency", self.latency_ms.as_ref());

        if let Some(d) = &self.deliveries {
            out.push_str("\nDeliveries\n");
            line(&mut out, "published", &d.published.to_string(), "");
            line(&mut out, "expected", &d.expected.to_string(), "");
            line(
                &mut out,
                "received",
                &d.received.to_string(),
                &format!("{} complete", fraction(d.completeness)),
            );
            line(&mut out, "lost", &d.lost.to_string(), "");
            if d.steady_sessions > 0 {
                line(
                    &mut out,
                    "steady lost",
                    &d.steady_lost.to_string(),
                    &format!(
                        "between the {} sessions that kept their connection",
                        d.steady_sessions
                    ),
                );
            }
            line(&mut out, "duplicates", &d.duplicates.to_string(), "");
            line(&mut out, "out of order", &d.out_of_order.to_string(), "");
            line(
                &mut out,
                "rate",
                &format!("{}/s", decimal(d.per_second)),
                "",
            );
        }

        if let Some(m) = &self.server_memory {
            let _ = writeln!(out, "\nServer memory (pid {})", m.pid);
            line(&mut out, "before", &bytes(m.rss_before as f64), "");
            line(&mut out, "after", &bytes(m.rss_after as f64), "");
            line(&mut out, "per session", &bytes(m.per_session), "");
        }

        if !self.faults.is_empty() {
            let _ = writeln!(
                out,
                "\nFaults\n  {:>8}  {:<COMMAND$}{:>6}{:>10}{:>10}{:>10}{:>10}",
                "at", "command", "exit", "sessions", "rehomed", "recovery", "messages"
            );
            let _ = writeln!(
                out,
                "  {:>8}  {:<COMMAND$}{:>6}{:>10}{:>10}{:>10}{:>10}",
                "", "", "", "lost", "", "", "lost"
            );
            for f in &self.faults {
                let _ = writeln!(
                    out,
                    "  {:>8}  {:<COMMAND$}{:>6}{:>10}{:>10}{:>10}{:>10}",
                    format!("{} s", decimal(f.at_s)),
                    shorten(&f.command, COMMAND - 1),
                    f.exit_code.map_or("-".to_owned(), |c| c.to_string()),
                    f.sessions_lost,
                    f.sessions_rehomed,
                    f.recovery_s
                        .map_or("-".to_owned(), |r| format!("{} s", decimal(r))),
                    f.messages_lost
                );
            }
        }

        if !self.timeline.is_empty() {
            out.push_str("\nTimeline\n");
            line(
                &mut out,
                "seconds",
                &self.timeline.len().to_string(),
                "one sample per second (see --plot, --json)",
            );
            // The first second of the highest rate, and of the worst p99.
            if let Some(peak) = self
                .timeline
                .iter()
                .reduce(|a, b| if b.per_second > a.per_second { b } else { a })
            {
                line(
                    &mut out,
                    "peak rate",
                    &format!("{}/s", decimal(peak.per_second)),
                    &format!("at {} s", count(peak.t_s)),
                );
            }
            if let Some(worst) = self
                .timeline
                .iter()
                .reduce(|a, b| if b.p99_ms > a.p99_ms { b } else { a })
                .filter(|s| s.p99_ms > 0.0)
            {
                line(
                    &mut out,
                    "worst p99",
                    &format!("{} ms", decimal(worst.p99_ms)),
                    &format!("at {} s", count(worst.t_s)),
                );
            }
        }

        out.push_str("\nTester\n");
        if self.tester.cores > 0 {
            line(
                &mut out,
                "cpu",
                &format!("{:.1} %", self.tester.cpu_percent),
                &format!(
                    "of {} cores{}",
                    self.tester.cores,
                    if self.tester.saturated {
                        ", SATURATED"
                    } else {
                        ""
                    }
                ),
            );
        } else {
            line(&mut out, "cpu", "-", "not measured");
        }

        if !self.warnings.is_empty() {
            out.push_str("\nWarnings\n");
            for w in &self.warnings {
                let _ = writeln!(out, "  - {w}");
            }
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::sample_report;

    #[test]
    fn full_table() {
        let expected = r#"corral loadtest: chat, 2024-05-01T12:00:00Z, 60.00 s
settings: {"rooms":10,"sessions":1000}

Sessions
  target                 1000
  connected               998  99.80 %
  failed                    2  refused 1, timeout 1
  dropped                   3
  reconnected               3
  transports                   polling 10, websocket 988

Times (ms)           count      min     mean      p50      p90      p99    p99.9      max
  connect              998     1.20     3.40     3.10     5.00     9.80    12.00    15.00
  latency           594000    0.400     1.10    0.900     2.00     4.50     8.00    20.00

Deliveries
  published              6000
  expected             600000
  received             594000  99.00 % complete
  lost                   6000
  steady lost               0  between the 950 sessions that kept their connection
  duplicates                3
  out of order              2
  rate               9900.0/s

Server memory (pid 4242)
  before            100.0 MiB
  after             132.4 MiB
  per session        33.2 KiB

Faults
        at  command                           exit  sessions   rehomed  recovery  messages
                                                        lost                          lost
   10.00 s  kill -9 4243                         0       300       300    2.50 s        12
   30.00 s  a very long command that goe...      -         5         0         -         0

Timeline
  seconds                   3  one sample per second (see --plot, --json)
  peak rate         10500.0/s  at 1 s
  worst p99           7.00 ms  at 1 s

Tester
  cpu                  42.0 %  of 2 cores

Warnings
  - 2 sessions failed to connect
"#;
        let table = sample_report().table();
        assert_eq!(table, expected, "\n{table}");
        assert_eq!(sample_report().to_string(), table);
    }

    #[test]
    fn empty_report_table() {
        let table = Report::new("connect").table();
        assert!(table.starts_with("corral loadtest: connect, unknown time, 0.000 s\n"));
        assert!(table.contains("\n  connect                -\n"), "{table}");
        assert!(
            table.contains("\n  cpu                       -  not measured\n"),
            "{table}"
        );
        assert!(!table.contains("Deliveries"));
        assert!(!table.contains("Faults"));
        assert!(!table.contains("Warnings"));
    }

    #[test]
    fn saturation_is_flagged() {
        let mut r = sample_report();
        r.tester.saturated = true;
        assert!(r.table().contains("of 2 cores, SATURATED"));
    }
}
