//! Number formatting shared by the table, comparisons and assertion messages: deterministic,
//! ASCII, compact.

use std::time::{Duration, UNIX_EPOCH};

/// A measured quantity: 3 decimals below 1, 2 below 100, 1 above.
pub(crate) fn decimal(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A whole number.
pub(crate) fn count(v: f64) -> String {
    format!("{v:.0}")
}

/// A share as a percentage, with enough decimals that anything short of 1 never reads
/// `100.00 %`.
pub(crate) fn fraction(v: f64) -> String {
    let pct = v * 100.0;
    let mut s = format!("{pct:.2}");
    if v < 1.0 {
        for decimals in 3..=6 {
            if !s.starts_with("100.") {
                break;
            }
            s = format!("{pct:.decimals$}");
        }
    }
    format!("{s} %")
}

/// A size in bytes, binary multiples.
pub(crate) fn bytes(v: f64) -> String {
    const K: f64 = 1024.0;
    let a = v.abs();
    if a < K {
        format!("{v:.0} B")
    } else if a < K * K {
        format!("{:.1} KiB", v / K)
    } else if a < K * K * K {
        format!("{:.1} MiB", v / (K * K))
    } else {
        format!("{:.2} GiB", v / (K * K * K))
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC, seconds).
pub(crate) fn timestamp(ms: u64) -> String {
    if ms == 0 {
        return "unknown time".to_owned();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
