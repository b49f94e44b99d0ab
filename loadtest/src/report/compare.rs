//! `corral loadtest compare A.json B.json`: two reports side by side.

use std::fmt::Write as _;

use super::Report;
use super::figures::Figure;
use super::format::{decimal, timestamp};

const NAME: usize = 26;
const VALUE: usize = 14;

/// Every figure of `a` and `b` side by side with the ratio `b / a`, in report order (figures
/// only `b` has come after those of `a`), with a note where a figure is missing on one side or
/// the ratio is undefined; then the settings that differ.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut out = String::new();
    for (tag, r) in [("A", a), ("B", b)] {
        let _ = writeln!(
            out,
            "{tag}: {}, {}, {} s",
            r.scenario,
            timestamp(r.started_at_ms),
            decimal(r.duration_s)
        );
    }
    if a.scenario != b.scenario {
        let _ = writeln!(
            out,
            "note: different scenarios ({} and {}): figures may not mean the same",
            a.scenario, b.scenario
        );
    }
    let differences = settings_differences(&a.settings, &b.settings);
    if !differences.is_empty() {
        out.push_str("settings that differ:\n");
        for d in differences {
            let _ = writeln!(out, "  {d}");
        }
    }

    // A's figures in order, each of B's own inserted after the figure it follows in B.
    let mut names: Vec<String> = a.figures().into_iter().map(|f| f.name).collect();
    let mut at = 0;
    for f in b.figures() {
        match names.iter().position(|n| *n == f.name) {
            Some(i) => at = i + 1,
            None => {
                names.insert(at, f.name);
                at += 1;
            }
        }
    }
    let _ = writeln!(
        out,
        "\n{:<NAME$}{:>VALUE$}{:>VALUE$}{:>9}",
        "figure", "A", "B", "B/A"
    );
    for name in names {
        let (fa, fb) = (a.figure(&name), b.figure(&name));
        let shown = |f: &Option<Figure>| f.as_ref().map_or("-".to_owned(), Figure::formatted);
        let (ratio, note) = match (&fa, &fb) {
            (Some(x), Some(y)) => ratio(x.value, y.value),
            (Some(_), None) => ("-".to_owned(), "only in A"),
            (None, Some(_)) => ("-".to_owned(), "only in B"),
            (None, None) => continue,
        };
        let row = format!(
            "{name:<NAME$}{:>VALUE$}{:>VALUE$}{ratio:>9}",
            shown(&fa),
            shown(&fb)
        );
        if note.is_empty() {
            let _ = writeln!(out, "{row}");
        } else {
            let _ = writeln!(out, "{row}  {note}");
        }
    }
    out
}

/// `b / a` printed, and a note when it means nothing.
fn ratio(a: f64, b: f64) -> (String, &'static str) {
    if a == b {
        ("1.00".to_owned(), "")
    } else if a == 0.0 {
        ("-".to_owned(), "A is 0")
    } else {
        (format!("{:.2}", b / a), "")
    }
}

/// `key: a -> b` for each top-level setting that differs (the whole value when the settings
/// are not objects).
fn settings_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter(|k| x.get(*k) != y.get(*k))
                .map(|k| {
                    let show = |v: Option<&Value>| v.map_or("(unset)".to_owned(), Value::to_string);
                    format!("{k}: {} -> {}", show(x.get(k)), show(y.get(k)))
                })
                .collect()
        }
        _ if a == b => Vec::new(),
        _ => vec![format!("settings: {a} -> {b}")],
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Deliveries, Report};
    use super::*;
    use crate::report::testdata::sample_report;

    #[test]
    fn side_by_side_with_ratios_and_notes() {
        let a = sample_report();
        let mut b = sample_report();
        b.started_at_ms += 86_400_000;
        b.settings["sessions"] = 2000.into();
        b.sessions.connected = 1996;
        b.sessions.failed.insert("http_5xx".into(), 4);
        if let Some(l) = b.latency_ms.as_mut() {
            l.p99 = 9.0;
        }
        b.deliveries = None;
        b.faults.clear();

        let out = compare(&a, &b);
        let row = |name: &str| {
            out.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no row {name} in\n{out}"))
                .to_owned()
        };
        assert!(
            out.starts_with(
                "A: chat, 2024-05-01T12:00:00Z, 60.00 s\nB: chat, 2024-05-02T12:00:00Z, 60.00 s\n\
             settings that differ:\n  sessions: 1000 -> 2000\n"
            ),
            "{out}"
        );
        assert_eq!(
            row("latency.p99"),
            "latency.p99                      4.50 ms       9.00 ms     2.00"
        );
        assert_eq!(
            row("sessions"),
            "sessions                             998          1996     2.00"
        );
        assert_eq!(
            row("duration"),
            "duration                         60.00 s       60.00 s     1.00"
        );
        // In B only, but a failure kind absent from A is 0 there.
        assert_eq!(
            row("failed.http_5xx"),
            "failed.http_5xx                        0             4        -  A is 0"
        );
        assert_eq!(
            row("completeness"),
            "completeness                     99.00 %             -        -  only in A"
        );
        assert!(row("fault.1.recovery").ends_with("only in A"));
        // B's own figures come where B has them: failed.http_5xx after failed.refused.
        let order: Vec<&str> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let pos = |n: &str| order.iter().position(|o| *o == n).unwrap();
        assert_eq!(pos("failed.http_5xx"), pos("failed") + 1);
        assert!(!out.contains("note: different scenarios"));
        // Every figure of either report has a row.
        for f in a.figures().iter().chain(b.figures().iter()) {
            row(&f.name);
        }
    }

    #[test]
    fn different_scenarios_are_noted() {
        let a = Report::new("echo");
        let mut b = Report::new("chat");
        b.deliveries = Some(Deliveries {
            completeness: 1.0,
            ..Deliveries::default()
        });
        let out = compare(&a, &b);
        assert!(
            out.contains("note: different scenarios (echo and chat)"),
            "{out}"
        );
        assert!(out.contains("only in B"), "{out}");
        assert!(!out.contains("settings that differ"), "{out}");
    }
}
