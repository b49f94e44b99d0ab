//! The report as a flat list of named numbers ([`Report::figures`]): what `--assert` checks,
//! what `compare` puts side by side.
//!
//! Names are lowercase and dotted. Fixed ones: `duration`, `sessions` (connected),
//! `sessions.target`, `failed` (total), `dropped`, `reconnected`, `connect.{count, min, mean,
//! p50, p90, p99, p999, max}`, `latency.{…}` (same), `deliveries.{published, expected,
//! received}`, `lost`, `duplicates`, `out_of_order`, `completeness` (a fraction),
//! `deliveries_per_sec`, `steady_sessions`, `steady_lost`, `memory.rss_before`,
//! `memory.rss_after`, `memory_per_session`,
//! `faults`, `faults.{sessions_lost, sessions_rehomed, messages_lost, recovery_max}`,
//! `tester.cpu`, `tester.cores`, `warnings`. Per kind or per fault: `failed.<kind>`,
//! `transport.<name>`, `node.<id>` (the node id lowercased, `-` as `_`), `fault.<n>.{at, sessions_lost, sessions_rehomed, recovery,
//! messages_lost}` (n from 1). Aliases: `p50` … `max` and `mean` stand for `latency.*`,
//! `p99.9` for `p999`, and a few more (see [`resolve`]).

use std::fmt;

use super::Report;
use super::format;

/// What a figure counts, and so how it is printed and which units an assertion may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain number of things.
    Count,
    /// Milliseconds.
    Ms,
    /// Seconds.
    Seconds,
    /// A share, 0.0–1.0 (printed and asserted as a percentage).
    Fraction,
    /// A percentage, 0–100.
    Percent,
    /// Per second.
    PerSecond,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// The unit in words, for documentation.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Ms => "ms",
            Unit::Seconds => "s",
            Unit::Fraction => "fraction (asserted as % or 0–1)",
            Unit::Percent => "%",
            Unit::PerSecond => "per second",
            Unit::Bytes => "bytes",
        }
    }

    /// `value` printed for people, with its unit.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Count => format::count(value),
            Unit::Ms => format!("{} ms", format::decimal(value)),
            Unit::Seconds => format!("{} s", format::decimal(value)),
            Unit::Fraction => format::fraction(value),
            Unit::Percent => format!("{:.1} %", value),
            Unit::PerSecond => format!("{}/s", format::decimal(value)),
            Unit::Bytes => format::bytes(value),
        }
    }

    /// What an assertion may write after a number for this unit.
    pub fn accepted_suffixes(self) -> &'static str {
        match self {
            Unit::Count => "no unit",
            Unit::Ms | Unit::Seconds => "us, ms or s (none: the figure's own unit)",
            Unit::Fraction => "% (or a fraction 0–1 without unit)",
            Unit::Percent => "% or no unit",
            Unit::PerSecond => "/s or no unit",
            Unit::Bytes => "B, kB, KiB, MB, MiB, GB, GiB or no unit (bytes)",
        }
    }

    /// A word for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Unit::Count => "a count",
            Unit::Ms => "a time in ms",
            Unit::Seconds => "a time in s",
            Unit::Fraction => "a fraction (percentage)",
            Unit::Percent => "a percentage",
            Unit::PerSecond => "a rate per second",
            Unit::Bytes => "a size in bytes",
        }
    }
}

/// One named number of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Canonical name (`latency.p99`, `failed.timeout`, …).
    pub name: String,
    /// The value, in `unit`.
    pub value: f64,
    /// Its unit.
    pub unit: Unit,
}

impl Figure {
    fn new(name: impl Into<String>, value: f64, unit: Unit) -> Self {
        Figure {
            name: name.into(),
            value,
            unit,
        }
    }

    /// The value printed with its unit.
    pub fn formatted(&self) -> String {
        self.unit.format(self.value)
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}", self.name, self.formatted())
    }
}

const LATENCY_FIELDS: [&str; 8] = ["count", "min", "mean", "p50", "p90", "p99", "p999", "max"];
const FAULT_FIELDS: [(&str, Unit); 5] = [
    ("at", Unit::Seconds),
    ("sessions_lost", Unit::Count),
    ("sessions_rehomed", Unit::Count),
    ("recovery", Unit::Seconds),
    ("messages_lost", Unit::Count),
];

/// Every fixed figure name with its unit, in report order.
pub(crate) fn fixed_figures() -> Vec<(String, Unit)> {
    let mut v: Vec<(String, Unit)> = [
        ("duration", Unit::Seconds),
        ("sessions.target", Unit::Count),
        ("sessions", Unit::Count),
        ("failed", Unit::Count),
        ("dropped", Unit::Count),
        ("reconnected", Unit::Count),
    ]
    .iter()
    .map(|&(n, u)| (n.to_owned(), u))
    .collect();
    for prefix in ["connect", "latency"] {
        for field in LATENCY_FIELDS {
            let unit = if field == "count" {
                Unit::Count
            } else {
                Unit::Ms
            };
            v.push((format!("{prefix}.{field}"), unit));
        }
    }
    v.extend(
        [
            ("deliveries.published", Unit::Count),
            ("deliveries.expected", Unit::Count),
            ("deliveries.received", Unit::Count),
            ("lost", Unit::Count),
            ("duplicates", Unit::Count),
            ("out_of_order", Unit::Count),
            ("completeness", Unit::Fraction),
            ("deliveries_per_sec", Unit::PerSecond),
            ("steady_sessions", Unit::Count),
            ("steady_lost", Unit::Count),
            ("memory.rss_before", Unit::Bytes),
            ("memory.rss_after", Unit::Bytes),
            ("memory_per_session", Unit::Bytes),
            ("faults", Unit::Count),
            ("faults.sessions_lost", Unit::Count),
            ("faults.sessions_rehomed", Unit::Count),
            ("faults.messages_lost", Unit::Count),
            ("faults.recovery_max", Unit::Seconds),
            ("tester.cpu", Unit::Percent),
            ("tester.cores", Unit::Count),
            ("warnings", Unit::Count),
        ]
        .iter()
        .map(|&(n, u)| (n.to_owned(), u)),
    );
    v
}

fn alias(name: &str) -> Option<&'static str> {
    Some(match name {
        "p50" | "median" => "latency.p50",
        "p90" => "latency.p90",
        "p99" => "latency.p99",
        "p999" => "latency.p999",
        "min" => "latency.min",
        "max" => "latency.max",
        "mean" => "latency.mean",
        "connected" | "sessions.connected" => "sessions",
        "target" => "sessions.target",
        "failed.total" | "failures" => "failed",
        "sessions.dropped" => "dropped",
        "sessions.reconnected" => "reconnected",
        "published" => "deliveries.published",
        "expected" => "deliveries.expected",
        "received" => "deliveries.received",
        "deliveries.lost" => "lost",
        "deliveries.duplicates" => "duplicates",
        "deliveries.out_of_order" => "out_of_order",
        "deliveries.completeness" => "completeness",
        "deliveries.per_second" | "deliveries_per_second" | "deliveries.per_sec" => {
            "deliveries_per_sec"
        }
        "memory.per_session" => "memory_per_session",
        "cpu" | "tester.cpu_percent" => "tester.cpu",
        "duration_s" => "duration",
        _ => return None,
    })
}

/// The canonical name and unit of figure `name` (aliases resolved, `-` read as `_`, `p99.9`
/// as `p999`); `None` when no report can have such a figure.
pub fn resolve(name: &str) -> Option<(String, Unit)> {
    let mut name = name.trim().to_ascii_lowercase().replace('-', "_");
    if let Some(stem) = name.strip_suffix("p99.9") {
        name = format!("{stem}p999");
    }
    let name = alias(&name).map_or(name, str::to_owned);
    if let Some((_, unit)) = fixed_figures().into_iter().find(|(n, _)| *n == name) {
        return Some((name, unit));
    }
    let mut parts = name.splitn(3, '.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("failed" | "transport" | "node"), Some(kind), None) if !kind.is_empty() => {
            Some((name.clone(), Unit::Count))
        }
        (Some("fault"), Some(n), Some(field)) => {
            let n: usize = n.parse().ok().filter(|&n| n >= 1)?;
            let (_, unit) = FAULT_FIELDS.iter().find(|(f, _)| *f == field)?;
            Some((format!("fault.{n}.{field}"), *unit))
        }
        _ => None,
    }
}

/// The Markdown table of every figure `--assert` and `compare` know (`docs/loadtest.md`).
pub fn figures_markdown() -> String {
    let mut table = String::from("| figure | unit |\n|---|---|\n");
    for name in known_names() {
        if let Some(unit) = resolve(
            &name
                .replace("<kind>", "k")
                .replace("<name>", "n")
                .replace("<id>", "i")
                .replace("<n>", "1"),
        )
        .map(|(_, unit)| unit)
        .filter(|_| alias(&name).is_none() && !is_short_latency(&name))
        {
            table.push_str(&format!("| `{name}` | {} |\n", unit.name()));
        }
    }
    table
}

fn is_short_latency(name: &str) -> bool {
    matches!(name, "p50" | "p90" | "p99" | "p999" | "max")
}

/// Every name [`resolve`] knows, with placeholders for the open-ended ones (for help and
/// error messages).
pub fn known_names() -> Vec<String> {
    let mut v: Vec<String> = fixed_figures().into_iter().map(|(n, _)| n).collect();
    v.extend(
        [
            "failed.<kind>",
            "transport.<name>",
            "node.<id>",
            "fault.<n>.at",
            "fault.<n>.sessions_lost",
            "fault.<n>.sessions_rehomed",
            "fault.<n>.recovery",
            "fault.<n>.messages_lost",
            "p50",
            "p90",
            "p99",
            "p999",
            "max",
        ]
        .map(str::to_owned),
    );
    v
}

impl Report {
    /// Every figure this report has, in a stable order. Optional parts (connect times,
    /// latency, deliveries, server memory, tester load) only appear when measured;
    /// `failed.<kind>` and `transport.<name>` only for the kinds present (see
    /// [`figure`](Self::figure), which reads absent kinds as 0).
    pub fn figures(&self) -> Vec<Figure> {
        use Unit::*;
        let mut v = Vec::new();
        let s = &self.sessions;
        v.push(Figure::new("duration", self.duration_s, Seconds));
        v.push(Figure::new("sessions.target", s.target as f64, Count));
        v.push(Figure::new("sessions", s.connected as f64, Count));
        v.push(Figure::new(
            "failed",
            s.failed.values().sum::<u64>() as f64,
            Count,
        ));
        for (kind, n) in &s.failed {
            v.push(Figure::new(format!("failed.{kind}"), *n as f64, Count));
        }
        v.push(Figure::new("dropped", s.dropped as f64, Count));
        v.push(Figure::new("reconnected", s.reconnected as f64, Count));
        for (name, n) in &s.by_transport {
            v.push(Figure::new(format!("transport.{name}"), *n as f64, Count));
        }
        for (node, n) in &s.by_node {
            let node = node.to_ascii_lowercase().replace('-', "_");
            v.push(Figure::new(format!("node.{node}"), *n as f64, Count));
        }
        for (prefix, latency) in [("connect", &self.connect_ms), ("latency", &self.latency_ms)] {
            if let Some(l) = latency {
                let values = [
                    l.count as f64,
                    l.min,
                    l.mean,
                    l.p50,
                    l.p90,
                    l.p99,
                    l.p999,
                    l.max,
                ];
                for (field, value) in LATENCY_FIELDS.iter().zip(values) {
                    let unit = if *field == "count" { Count } else { Ms };
                    v.push(Figure::new(format!("{prefix}.{field}"), value, unit));
                }
            }
        }
        if let Some(d) = &self.deliveries {
            v.push(Figure::new(
                "deliveries.published",
                d.published as f64,
                Count,
            ));
            v.push(Figure::new("deliveries.expected", d.expected as f64, Count));
            v.push(Figure::new("deliveries.received", d.received as f64, Count));
            v.push(Figure::new("lost", d.lost as f64, Count));
            v.push(Figure::new("duplicates", d.duplicates as f64, Count));
            v.push(Figure::new("out_of_order", d.out_of_order as f64, Count));
            v.push(Figure::new("completeness", d.completeness, Fraction));
            v.push(Figure::new("deliveries_per_sec", d.per_second, PerSecond));
            v.push(Figure::new(
                "steady_sessions",
                d.steady_sessions as f64,
                Count,
            ));
            v.push(Figure::new("steady_lost", d.steady_lost as f64, Count));
        }
        if let Some(m) = &self.server_memory {
            v.push(Figure::new("memory.rss_before", m.rss_before as f64, Bytes));
            v.push(Figure::new("memory.rss_after", m.rss_after as f64, Bytes));
            v.push(Figure::new("memory_per_session", m.per_session, Bytes));
        }
        let faults = &self.faults;
        v.push(Figure::new("faults", faults.len() as f64, Count));
        let total = |f: fn(&super::Fault) -> u64| faults.iter().map(f).sum::<u64>() as f64;
        v.push(Figure::new(
            "faults.sessions_lost",
            total(|f| f.sessions_lost),
            Count,
        ));
        v.push(Figure::new(
            "faults.sessions_rehomed",
            total(|f| f.sessions_rehomed),
            Count,
        ));
        v.push(Figure::new(
            "faults.messages_lost",
            total(|f| f.messages_lost),
            Count,
        ));
        if let Some(worst) = faults.iter().filter_map(|f| f.recovery_s).reduce(f64::max) {
            v.push(Figure::new("faults.recovery_max", worst, Seconds));
        }
        for (i, f) in faults.iter().enumerate() {
            let n = i + 1;
            v.push(Figure::new(format!("fault.{n}.at"), f.at_s, Seconds));
            v.push(Figure::new(
                format!("fault.{n}.sessions_lost"),
                f.sessions_lost as f64,
                Count,
            ));
            v.push(Figure::new(
                format!("fault.{n}.sessions_rehomed"),
                f.sessions_rehomed as f64,
                Count,
            ));
            if let Some(r) = f.recovery_s {
                v.push(Figure::new(format!("fault.{n}.recovery"), r, Seconds));
            }
            v.push(Figure::new(
                format!("fault.{n}.messages_lost"),
                f.messages_lost as f64,
                Count,
            ));
        }
        if self.tester.cores > 0 {
            v.push(Figure::new("tester.cpu", self.tester.cpu_percent, Percent));
            v.push(Figure::new(
                "tester.cores",
                f64::from(self.tester.cores),
                Count,
            ));
        }
        v.push(Figure::new("warnings", self.warnings.len() as f64, Count));
        v
    }

    /// Figure `name` (any name or alias [`resolve`] knows); `None` when this report did not
    /// measure it. `failed.<kind>` and `transport.<name>` of an absent kind are 0.
    pub fn figure(&self, name: &str) -> Option<Figure> {
        let (name, unit) = resolve(name)?;
        if let Some(f) = self.figures().into_iter().find(|f| f.name == name) {
            return Some(f);
        }
        (name.starts_with("failed.") || name.starts_with("transport."))
            .then(|| Figure::new(name, 0.0, unit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::sample_report;

    #[test]
    fn figures_of_a_full_report() {
        let r = sample_report();
        let f = r.figures();
        let get = |n: &str| f.iter().find(|f| f.name == n).unwrap().value;
        assert_eq!(get("sessions"), 998.0);
        assert_eq!(get("failed"), 2.0);
        assert_eq!(get("failed.timeout"), 1.0);
        assert_eq!(get("latency.p99"), 4.5);
        assert_eq!(get("connect.p99"), 9.8);
        assert_eq!(get("completeness"), 0.99);
        assert_eq!(get("memory_per_session"), 34_000.0);
        assert_eq!(get("fault.1.recovery"), 2.5);
        assert_eq!(get("faults.messages_lost"), 12.0);
        assert_eq!(get("tester.cpu"), 42.0);
        assert_eq!(get("warnings"), 1.0);
        // Names are unique and every one resolves to itself.
        for fig in &f {
            assert_eq!(f.iter().filter(|g| g.name == fig.name).count(), 1);
            assert_eq!(resolve(&fig.name).unwrap(), (fig.name.clone(), fig.unit));
        }
    }

    #[test]
    fn aliases_and_defaults() {
        let r = sample_report();
        assert_eq!(r.figure("p99").unwrap().name, "latency.p99");
        assert_eq!(r.figure("P99.9").unwrap().name, "latency.p999");
        assert_eq!(r.figure("connect.p99.9").unwrap().value, 12.0);
        assert_eq!(r.figure("out-of-order").unwrap().value, 2.0);
        assert_eq!(r.figure("failed.session_unknown").unwrap().value, 0.0);
        assert_eq!(r.figure("fault.1.sessions_lost").unwrap().value, 300.0);
        assert!(r.figure("fault.3.sessions_lost").is_none());
        assert!(r.figure("fault.0.sessions_lost").is_none());
        assert!(r.figure("nonsense").is_none());
        let empty = Report::new("connect");
        assert!(empty.figure("p99").is_none());
        assert!(empty.figure("completeness").is_none());
        assert_eq!(empty.figure("failed").unwrap().value, 0.0);
    }

    #[test]
    fn units_format() {
        assert_eq!(Unit::Ms.format(4.5), "4.50 ms");
        assert_eq!(Unit::Ms.format(123.456), "123.5 ms");
        assert_eq!(Unit::Count.format(1234.0), "1234");
        assert_eq!(Unit::Fraction.format(0.99), "99.00 %");
        assert_eq!(Unit::Fraction.format(0.999_996), "99.9996 %");
        assert_eq!(Unit::Fraction.format(0.9999), "99.99 %");
        assert_eq!(Unit::Fraction.format(1.0), "100.00 %");
        assert_eq!(Unit::Bytes.format(34_000.0), "33.2 KiB");
        assert_eq!(Unit::PerSecond.format(9999.8), "9999.8/s");
    }
}
