//! The JSON report (`--json FILE`): pretty-printed, read back by `compare`. A report of another
//! format [`version`](super::REPORT_VERSION) is refused with a message rather than misread.

use std::path::{Path, PathBuf};

use super::{REPORT_VERSION, Report};

/// What can go wrong writing, reading or plotting a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not JSON, or not a report.
    #[error("{}not a corral loadtest report: {reason}", origin(.path))]
    Invalid {
        /// The file, if any.
        path: Option<PathBuf>,
        /// Why.
        reason: String,
    },
    /// A report of another format version.
    #[error(
        "{}report format version {found}, but this corral reads version {expected}: it was \
         written by a different corral release; re-run the test or use the matching release",
        origin(.path)
    )]
    Version {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The version in the file.
        found: u64,
        /// [`REPORT_VERSION`].
        expected: u32,
    },
    /// A plot could not be drawn.
    #[error("plot {}: {reason}", path.display())]
    Plot {
        /// The plot file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn origin(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl ReportError {
    fn at(self, file: &Path) -> Self {
        match self {
            ReportError::Invalid { path: None, reason } => ReportError::Invalid {
                path: Some(file.to_owned()),
                reason,
            },
            ReportError::Version {
                path: None,
                found,
                expected,
            } => ReportError::Version {
                path: Some(file.to_owned()),
                found,
                expected,
            },
            other => other,
        }
    }
}

/// Replaces a non-finite number by 0, noting where.
fn finite(value: &mut f64, name: &str, found: &mut Vec<String>) {
    if !value.is_finite() {
        found.push(format!("{name} ({value})"));
        *value = 0.0;
    }
}

impl Report {
    /// A copy whose NaN and infinite numbers (which JSON cannot hold: they would be written as
    /// `null` and the file could not be read back) are 0, with a warning naming them; `None`
    /// when every number is finite.
    fn with_finite_numbers(&self) -> Option<Report> {
        let mut r = self.clone();
        let mut found = Vec::new();
        finite(&mut r.duration_s, "duration_s", &mut found);
        for (name, latency) in [
            ("connect_ms", &mut r.connect_ms),
            ("latency_ms", &mut r.latency_ms),
        ] {
            if let Some(l) = latency {
                for (field, v) in [
                    ("min", &mut l.min),
                    ("mean", &mut l.mean),
                    ("p50", &mut l.p50),
                    ("p90", &mut l.p90),
                    ("p99", &mut l.p99),
                    ("p999", &mut l.p999),
                    ("max", &mut l.max),
                ] {
                    finite(v, &format!("{name}.{field}"), &mut found);
                }
                for (p, v) in &mut l.distribution {
                    finite(p, &format!("{name}.distribution"), &mut found);
                    finite(v, &format!("{name}.distribution"), &mut found);
                }
            }
        }
        if let Some(d) = &mut r.deliveries {
            finite(&mut d.completeness, "deliveries.completeness", &mut found);
            finite(&mut d.per_second, "deliveries.per_second", &mut found);
        }
        if let Some(m) = &mut r.server_memory {
            finite(&mut m.per_session, "server_memory.per_session", &mut found);
        }
        for f in &mut r.faults {
            finite(&mut f.at_s, "faults.at_s", &mut found);
            if let Some(rec) = &mut f.recovery_s {
                finite(rec, "faults.recovery_s", &mut found);
            }
        }
        for s in &mut r.timeline {
            finite(&mut s.t_s, "timeline.t_s", &mut found);
            finite(&mut s.per_second, "timeline.per_second", &mut found);
            finite(&mut s.p50_ms, "timeline.p50_ms", &mut found);
            finite(&mut s.p99_ms, "timeline.p99_ms", &mut found);
        }
        finite(&mut r.tester.cpu_percent, "tester.cpu_percent", &mut found);
        if found.is_empty() {
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        found.retain(|f| seen.insert(f.clone()));
        r.warn(format!(
            "numbers that were not finite were written as 0: {}",
            found.join(", ")
        ));
        Some(r)
    }

    /// The report as pretty-printed JSON (with a final newline). NaN and infinities, which
    /// JSON cannot hold, are written as 0 with a warning in the report.
    pub fn to_json(&self) -> Result<String, ReportError> {
        let sanitized = self.with_finite_numbers();
        let report = sanitized.as_ref().unwrap_or(self);
        let mut s = serde_json::to_string_pretty(report).map_err(|e| ReportError::Invalid {
            path: None,
            reason: e.to_string(),
        })?;
        s.push('\n');
        Ok(s)
    }

    /// Reads a report from JSON, refusing other format versions.
    pub fn from_json(json: &str) -> Result<Report, ReportError> {
        let invalid = |reason: String| ReportError::Invalid { path: None, reason };
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        let Some(object) = value.as_object() else {
            return Err(invalid("the JSON is not an object".to_owned()));
        };
        let found = match object.get("version") {
            Some(v) => v
                .as_u64()
                .ok_or_else(|| invalid(format!("`version` is {v}, not a number")))?,
            None => return Err(invalid("it has no `version` field".to_owned())),
        };
        if found != u64::from(REPORT_VERSION) {
            return Err(ReportError::Version {
                path: None,
                found,
                expected: REPORT_VERSION,
            });
        }
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
    }

    /// Writes the report to `path` as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let json = self.to_json()?;
        std::fs::write(path, json).map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Reads a report written by [`write_json`](Self::write_json).
    pub fn read_json(path: &Path) -> Result<Report, ReportError> {
        let json = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
            path: path.to_owned(),
            source,
        })?;
        Report::from_json(&json).map_err(|e| e.at(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::sample_report;

    #[test]
    fn round_trip() {
        let r = sample_report();
        let json = r.to_json().unwrap();
        assert!(
            json.starts_with("{\n  \"version\": 1,\n  \"scenario\": \"chat\","),
            "{json}"
        );
        assert_eq!(Report::from_json(&json).unwrap(), r);

        let dir = std::env::temp_dir().join(format!("corral-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.json");
        r.write_json(&path).unwrap();
        assert_eq!(Report::read_json(&path).unwrap(), r);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn non_finite_numbers_still_make_a_readable_file() {
        let mut r = sample_report();
        if let Some(m) = r.server_memory.as_mut() {
            m.per_session = f64::NAN;
        }
        r.timeline[0].p99_ms = f64::INFINITY;
        r.timeline[2].p99_ms = f64::INFINITY;
        let back = Report::from_json(&r.to_json().unwrap()).unwrap();
        assert_eq!(back.server_memory.unwrap().per_session, 0.0);
        assert_eq!(back.timeline[0].p99_ms, 0.0);
        assert_eq!(
            back.warnings.last().unwrap(),
            "numbers that were not finite were written as 0: server_memory.per_session (NaN), \
             timeline.p99_ms (inf)"
        );
        // The report itself is left alone.
        assert!(r.timeline[0].p99_ms.is_infinite());
    }

    #[test]
    fn other_versions_are_refused_clearly() {
        let mut v = serde_json::to_value(sample_report()).unwrap();
        v["version"] = 2.into();
        // Even when the rest no longer fits the model, the version is what is reported.
        v["sessions"] = "changed".into();
        let err = Report::from_json(&v.to_string()).unwrap_err();
        assert!(matches!(
            err,
            ReportError::Version {
                found: 2,
                expected: 1,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "report format version 2, but this corral reads version 1: it was written by a \
             different corral release; re-run the test or use the matching release"
        );

        let dir = std::env::temp_dir().join(format!("corral-report-v-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.json");
        std::fs::write(&path, v.to_string()).unwrap();
        let err = Report::read_json(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: report format version 2", path.display()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_refused_clearly() {
        let msg = |s: &str| Report::from_json(s).unwrap_err().to_string();
        assert!(msg("not json").starts_with("not a corral loadtest report: "));
        assert_eq!(
            msg("[1]"),
            "not a corral loadtest report: the JSON is not an object"
        );
        assert_eq!(
            msg("{}"),
            "not a corral loadtest report: it has no `version` field"
        );
        assert_eq!(
            msg(r#"{"version": "1"}"#),
            "not a corral loadtest report: `version` is \"1\", not a number"
        );
        assert!(msg(r#"{"version": 1}"#).contains("missing field"));
        let missing = Report::read_json(Path::new("/nonexistent/r.json")).unwrap_err();
        assert!(matches!(missing, ReportError::Io { .. }));
        assert!(missing.to_string().starts_with("/nonexistent/r.json: "));
    }
}
