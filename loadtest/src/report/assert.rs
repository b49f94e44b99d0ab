//! `--assert`: thresholds on a report's [figures](super::figures), such as
//! `p99<50ms,completeness>=100%,failed==0`.
//!
//! An assertion is `FIGURE OP NUMBER[UNIT]`: any figure name or alias [`Report::figure`]
//! knows, an operator among `<`, `<=`, `>`, `>=`, `==`, and a number with an optional unit that
//! fits the figure: `us`, `ms`, `s` for times (a bare number is in the figure's own unit), `%`
//! for shares (`completeness>=99.9%`, or a bare fraction `0.999`), `B`, `kB`, `KiB`, `MB`,
//! `MiB`, `GB`, `GiB` for sizes, `/s` for rates. Several are separated by commas.

use std::fmt;
use std::str::FromStr;

use super::Report;
use super::figures::{Unit, known_names, resolve};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
}

impl Op {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }

    /// `actual OP limit`, with a relative tolerance of 1e-9 so that `100%` equals a
    /// completeness of exactly 1 and `99.9%` one of 0.999 whatever the float rounding.
    pub fn holds(self, actual: f64, limit: f64) -> bool {
        let eps = 1e-9 * limit.abs().max(1.0);
        let equal = (actual - limit).abs() <= eps;
        match self {
            Op::Lt => actual < limit && !equal,
            Op::Le => actual < limit || equal,
            Op::Gt => actual > limit && !equal,
            Op::Ge => actual > limit || equal,
            Op::Eq => equal,
        }
    }
}

/// Why an `--assert` expression could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AssertError {
    /// Nothing between two commas, or nothing at all.
    #[error("empty assertion in `{0}`: write e.g. `p99<50ms,failed==0`")]
    Empty(String),
    /// No operator.
    #[error(
        "`{0}`: no comparison; write FIGURE OP VALUE, e.g. `p99<50ms` (operators: < <= > >= ==)"
    )]
    MissingOperator(String),
    /// An operator that is not one of ours.
    #[error("`{text}`: unknown operator `{op}` (use < <= > >= ==)")]
    BadOperator {
        /// The assertion.
        text: String,
        /// What was written.
        op: String,
    },
    /// A figure no report has.
    #[error("`{text}`: unknown figure `{name}`{}; known figures: {}",
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(),
        known_names().join(", "))]
    UnknownFigure {
        /// The assertion.
        text: String,
        /// The name written.
        name: String,
        /// The closest known name.
        suggestion: Option<String>,
    },
    /// A value that is not a number.
    #[error("`{text}`: `{value}` is not a number with an optional unit (e.g. 50ms, 99.9%, 0)")]
    BadNumber {
        /// The assertion.
        text: String,
        /// What was written.
        value: String,
    },
    /// A unit that does not fit the figure.
    #[error("`{text}`: {figure} is {kind}; `{unit}` does not fit (use {accepted})")]
    BadUnit {
        /// The assertion.
        text: String,
        /// The figure's canonical name.
        figure: String,
        /// What the figure is.
        kind: &'static str,
        /// The unit written (empty for none).
        unit: String,
        /// What would fit.
        accepted: &'static str,
    },
}

/// One threshold: `figure op value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    /// As written (trimmed).
    pub text: String,
    /// Canonical figure name.
    pub figure: String,
    /// The comparison.
    pub op: Op,
    /// The limit, in the figure's unit (a fraction for `completeness`, ms for `latency.p99`).
    pub value: f64,
    /// The figure's unit.
    pub unit: Unit,
}

impl fmt::Display for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.figure,
            self.op.symbol(),
            self.unit.format(self.value)
        )
    }
}

/// An assertion that did not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionFailure {
    /// The assertion.
    pub assertion: Assertion,
    /// The figure's value in the report, in the assertion's unit; `None` when the report did
    /// not measure it (which fails every assertion on it).
    pub actual: Option<f64>,
}

impl fmt::Display for AssertionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.assertion;
        match self.actual {
            Some(v) => write!(
                f,
                "assertion `{}` failed: {} is {}, wanted {} {}",
                a.text,
                a.figure,
                a.unit.format(v),
                a.op.symbol(),
                a.unit.format(a.value)
            ),
            None => write!(
                f,
                "assertion `{}` failed: {} was not measured in this run",
                a.text, a.figure
            ),
        }
    }
}

/// Reads `--assert` expressions: comma-separated assertions.
pub fn parse_assertions(input: &str) -> Result<Vec<Assertion>, AssertError> {
    if input.trim().is_empty() {
        return Err(AssertError::Empty(input.to_owned()));
    }
    input
        .split(',')
        .map(|part| {
            if part.trim().is_empty() {
                Err(AssertError::Empty(input.to_owned()))
            } else {
                part.parse()
            }
        })
        .collect()
}

impl FromStr for Assertion {
    type Err = AssertError;

    fn from_str(s: &str) -> Result<Self, AssertError> {
        let text = s.trim().to_owned();
        if text.is_empty() {
            return Err(AssertError::Empty(s.to_owned()));
        }
        let Some(op_at) = text.find(['<', '>', '=', '!']) else {
            return Err(AssertError::MissingOperator(text));
        };
        let op_len = text[op_at..]
            .chars()
            .take_while(|c| matches!(c, '<' | '>' | '=' | '!'))
            .count();
        let op_text = &text[op_at..op_at + op_len];
        let op = match op_text {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            other => {
                return Err(AssertError::BadOperator {
                    op: other.to_owned(),
                    text,
                });
            }
        };
        let name = text[..op_at].trim();
        if name.is_empty() {
            return Err(AssertError::MissingOperator(text));
        }
        let Some((figure, unit)) = resolve(name) else {
            return Err(AssertError::UnknownFigure {
                suggestion: suggest(name),
                name: name.to_owned(),
                text,
            });
        };
        let raw = text[op_at + op_len..].trim();
        let number_len = raw
            .char_indices()
            .take_while(|&(i, c)| {
                c.is_ascii_digit()
                    || c == '.'
                    || ((c == '-' || c == '+') && (i == 0 || raw[..i].ends_with(['e', 'E'])))
                    || ((c == 'e' || c == 'E')
                        && i > 0
                        && raw[i + 1..].starts_with(|d: char| d.is_ascii_digit() || d == '-'))
            })
            .count();
        let number: f64 = match raw[..number_len].parse() {
            Ok(n) if f64::is_finite(n) => n,
            _ => {
                return Err(AssertError::BadNumber {
                    value: raw.to_owned(),
                    text,
                });
            }
        };
        let suffix = raw[number_len..].trim();
        let Some(scale) = unit_scale(unit, suffix, number) else {
            return Err(AssertError::BadUnit {
                figure,
                kind: unit.describe(),
                unit: if suffix.is_empty() {
                    format!("{number} without a unit")
                } else {
                    suffix.to_owned()
                },
                accepted: unit.accepted_suffixes(),
                text,
            });
        };
        Ok(Assertion {
            text,
            figure,
            op,
            value: number * scale,
            unit,
        })
    }
}

/// The factor that turns `number suffix` into `unit`; `None` when the suffix does not fit.
fn unit_scale(unit: Unit, suffix: &str, number: f64) -> Option<f64> {
    let time_ms = |s: &str| match s {
        "us" | "µs" => Some(0.001),
        "ms" => Some(1.0),
        "s" => Some(1000.0),
        _ => None,
    };
    match (unit, suffix) {
        (_, "") => match unit {
            // `completeness>=99.9` almost surely means a percentage: make them say so.
            Unit::Fraction if number.abs() > 1.0 => None,
            _ => Some(1.0),
        },
        (Unit::Ms, s) => time_ms(s),
        (Unit::Seconds, s) => time_ms(s).map(|ms| ms / 1000.0),
        (Unit::Fraction, "%") => Some(0.01),
        (Unit::Percent, "%") => Some(1.0),
        (Unit::PerSecond, "/s") => Some(1.0),
        (Unit::Bytes, s) => match s {
            "B" | "b" => Some(1.0),
            "kB" | "KB" | "kb" => Some(1e3),
            "KiB" | "kiB" => Some(1024.0),
            "MB" => Some(1e6),
            "MiB" => Some(1024.0 * 1024.0),
            "GB" => Some(1e9),
            "GiB" => Some(1024.0 * 1024.0 * 1024.0),
            _ => None,
        },
        _ => None,
    }
}

/// The known name closest to `name` (edit distance at most a third of its length, at most 3).
fn suggest(name: &str) -> Option<String> {
    let name = name.trim().to_ascii_lowercase();
    known_names()
        .into_iter()
        .filter(|k| !k.contains('<'))
        .map(|k| (edit_distance(&name, &k), k))
        .filter(|(d, _)| *d <= (name.len() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

impl Assertion {
    /// The figure's value in `report`, if measured.
    pub fn actual(&self, report: &Report) -> Option<f64> {
        report.figure(&self.figure).map(|f| f.value)
    }

    /// Whether it holds for `report`.
    pub fn check(&self, report: &Report) -> Result<(), AssertionFailure> {
        let actual = self.actual(report);
        match actual {
            Some(v) if self.op.holds(v, self.value) => Ok(()),
            _ => Err(AssertionFailure {
                assertion: self.clone(),
                actual,
            }),
        }
    }
}

impl Report {
    /// The assertions that do not hold, each with the actual value; empty when all pass.
    pub fn check(&self, assertions: &[Assertion]) -> Vec<AssertionFailure> {
        assertions
            .iter()
            .filter_map(|a| a.check(self).err())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::sample_report;

    fn one(s: &str) -> Assertion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_figures_operators_and_units() {
        let a = parse_assertions("p99<50ms, completeness>=100%,failed==0").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a[0].figure.as_str(), a[0].op, a[0].value, a[0].unit),
            ("latency.p99", Op::Lt, 50.0, Unit::Ms)
        );
        assert_eq!(
            (a[1].figure.as_str(), a[1].op, a[1].value),
            ("completeness", Op::Ge, 1.0)
        );
        assert_eq!(
            (a[2].figure.as_str(), a[2].op, a[2].value),
            ("failed", Op::Eq, 0.0)
        );
        assert_eq!(one("connect.p99 <= 1.5s").value, 1500.0);
        assert_eq!(one("p50<800us").value, 0.8);
        assert_eq!(one("p99<20").value, 20.0);
        assert_eq!(one("completeness>0.999").value, 0.999);
        assert!((one("completeness>=99.9%").value - 0.999).abs() < 1e-12);
        assert_eq!(one("memory_per_session<50KiB").value, 51_200.0);
        assert_eq!(one("memory_per_session<2MB").value, 2e6);
        assert_eq!(one("faults.recovery_max<=1500ms").value, 1.5);
        assert_eq!(one("tester.cpu<85%").value, 85.0);
        assert_eq!(one("deliveries_per_sec>1e4/s").value, 10_000.0);
        assert_eq!(one("dropped>-1").value, -1.0);
        assert_eq!(one("failed.timeout==0").figure, "failed.timeout");
        assert_eq!(one("p99.9<100ms").figure, "latency.p999");
        assert_eq!(one("p99<50ms").to_string(), "latency.p99 < 50.00 ms");
    }

    #[test]
    fn malformed_expressions_are_explained() {
        let err = |s: &str| parse_assertions(s).unwrap_err();
        assert_eq!(err(""), AssertError::Empty(String::new()));
        assert!(matches!(err("p99<5ms,,failed==0"), AssertError::Empty(_)));
        assert!(matches!(err("p99 50ms"), AssertError::MissingOperator(_)));
        assert!(matches!(err("<50ms"), AssertError::MissingOperator(_)));
        assert_eq!(
            err("p99=50ms"),
            AssertError::BadOperator {
                text: "p99=50ms".into(),
                op: "=".into()
            }
        );
        assert!(matches!(err("p99!=50ms"), AssertError::BadOperator { .. }));
        assert!(matches!(err("p99=<50ms"), AssertError::BadOperator { .. }));
        match err("duplicate==0") {
            AssertError::UnknownFigure {
                name, suggestion, ..
            } => {
                assert_eq!(name, "duplicate");
                assert_eq!(suggestion.as_deref(), Some("duplicates"));
            }
            other => panic!("{other:?}"),
        }
        let e = err("latncy.p99<50ms");
        assert!(e.to_string().contains("did you mean `latency.p99`?"), "{e}");
        assert!(e.to_string().contains("completeness"), "{e}");
        assert!(matches!(
            err("whatever<1"),
            AssertError::UnknownFigure {
                suggestion: None,
                ..
            }
        ));
        assert!(matches!(err("p99<fast"), AssertError::BadNumber { .. }));
        assert!(matches!(err("p99<"), AssertError::BadNumber { .. }));
        assert!(matches!(err("p99<1.2.3ms"), AssertError::BadNumber { .. }));
        let e = err("p99<50%");
        assert!(matches!(e, AssertError::BadUnit { .. }));
        assert_eq!(
            e.to_string(),
            "`p99<50%`: latency.p99 is a time in ms; `%` does not fit (use us, ms or s (none: \
             the figure's own unit))"
        );
        assert!(matches!(err("failed==0ms"), AssertError::BadUnit { .. }));
        let e = err("completeness>=99.9");
        assert!(e.to_string().contains("99.9 without a unit"), "{e}");
    }

    #[test]
    fn evaluation_reports_what_failed_with_the_actual_value() {
        let r = sample_report();
        // latency.p99 = 4.5 ms, completeness 0.99, failed 2, connect.p99 9.8 ms.
        let a = parse_assertions(
            "p99<5ms,p99<4ms,completeness>=100%,completeness>=99%,failed==0,failed.refused==1,\
             connect.p99<=9.8ms,failed.http_5xx==0",
        )
        .unwrap();
        let failures = r.check(&a);
        let failed: Vec<_> = failures.iter().map(|f| f.assertion.text.as_str()).collect();
        assert_eq!(failed, ["p99<4ms", "completeness>=100%", "failed==0"]);
        assert_eq!(failures[0].actual, Some(4.5));
        assert_eq!(
            failures[0].to_string(),
            "assertion `p99<4ms` failed: latency.p99 is 4.50 ms, wanted < 4.00 ms"
        );
        assert_eq!(
            failures[1].to_string(),
            "assertion `completeness>=100%` failed: completeness is 99.00 %, wanted >= 100.00 %"
        );
        assert_eq!(failures[2].actual, Some(2.0));
        // Not measured: fails, and says so.
        let empty = Report::new("connect");
        let f = empty.check(&parse_assertions("p99<50ms").unwrap());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].actual, None);
        assert!(f[0].to_string().contains("was not measured"));
    }

    #[test]
    fn comparisons_tolerate_float_rounding() {
        assert!(Op::Ge.holds(0.999_000_000_000_1, 0.999));
        assert!(Op::Ge.holds(0.998_999_999_999_9, 0.999));
        assert!(Op::Eq.holds(1.0, 1.0));
        assert!(!Op::Lt.holds(1.0, 1.0));
        assert!(Op::Le.holds(1.0, 1.0));
        assert!(!Op::Gt.holds(1.0, 1.0));
        assert!(Op::Gt.holds(1.1, 1.0));
        assert!(!Op::Eq.holds(0.0, 1e-6));
    }
}
