//! What trace export costs a node when the collector is unreachable.
//!
//! Two configurations of `corral node --app bench` (this build): **off** (no OTLP endpoint:
//! trace spans are never built) and **dead collector** (`--otlp-endpoint` to a closed local
//! port: every span is built, queued, and dropped when its batch fails to export). Each round
//! starts a fresh node per configuration and drives it with the same open-loop
//! `corral loadtest chat` (fixed offered load), in interleaved order (off, dead, off, dead …)
//! after one unreported warm-up round each. Reported as medians with ratios dead / off:
//! deliveries per second, the node's CPU per 1 000 deliveries (from `/proc`), end-to-end p99
//! latency, and the spans the dead-collector node ended and dropped (proof that it traced;
//! the export queue discards what it cannot hold).
//!
//! Run: `cargo bench --bench tracing_overhead -- [--sessions N] [--rate MSG_PER_S_EACH]
//! [--seconds S] [--rounds K]`

#![allow(clippy::print_stdout)] // a report is this program's output

mod support;

use std::{process::Command, time::Duration};

use support::{arg, cpu_time, median, metrics_text, start_node};

/// How a figure is read off a [`Sample`].
type Figure = fn(&Sample) -> f64;

/// One measured run.
struct Sample {
    deliveries_per_s: f64,
    cpu_per_1000: Duration,
    p99_ms: f64,
    completeness: f64,
    dropped_spans: f64,
    ended_spans: f64,
}

fn run(dead_collector: bool, sessions: usize, rate: usize, seconds: usize) -> Sample {
    let mut args = vec!["--app", "bench"];
    // Port 9 (discard) is closed on loopback: every export fails at once.
    if dead_collector {
        args.extend(["--otlp-endpoint", "http://127.0.0.1:9"]);
    }
    let node = start_node(&args);
    let url = format!("http://{}", node.addr);
    let json = std::env::temp_dir().join(format!(
        "corral-tracing-overhead-{}-{}.json",
        std::process::id(),
        dead_collector
    ));
    let cpu_before = cpu_time(node.child.id());
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["loadtest", "chat", "--url", &url, "--quiet"])
        .args(["--sessions", &sessions.to_string(), "--rooms"])
        .arg((sessions / 10).max(1).to_string())
        .args(["--message-rate", &rate.to_string()])
        .args(["--duration", &format!("{seconds}s"), "--json"])
        .arg(&json)
        .output()
        .expect("run corral loadtest");
    let cpu = cpu_time(node.child.id()).saturating_sub(cpu_before);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("report"))
        .unwrap_or_else(|e| {
            panic!(
                "unreadable report ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let _ = std::fs::remove_file(&json);
    let deliveries = &report["deliveries"];
    let received = deliveries["received"].as_f64().unwrap_or(0.0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = runtime.block_on(metrics_text(node.addr));
    let spans = |outcome: &str| {
        let prefix = format!(r#"corral_trace_spans_total{{outcome="{outcome}"}} "#);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Sample {
        deliveries_per_s: deliveries["per_second"].as_f64().unwrap_or(0.0),
        // Node CPU over the whole run (connect and settle included) per delivery.
        cpu_per_1000: cpu.mul_f64(1000.0 / received.max(1.0)),
        p99_ms: report["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        completeness: deliveries["completeness"].as_f64().unwrap_or(0.0),
        dropped_spans: spans("dropped"),
        ended_spans: spans("ended"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list`: nothing to list
    }
    let sessions = arg("--sessions", 200);
    let rate = arg("--rate", 10);
    let seconds = arg("--seconds", 5);
    let rounds = arg("--rounds", 3);
    println!(
        "trace export to a dead collector vs off: {sessions} chat sessions, {} rooms, \
         {rate} msg/s each ({} deliveries/s offered), {seconds} s per run, {rounds} rounds",
        (sessions / 10).max(1),
        sessions * rate * 10
    );
    // Warm-up (page cache, CPU frequency), unreported.
    run(false, sessions, rate, 2);
    run(true, sessions, rate, 2);
    let (mut off, mut dead) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for dead_collector in [false, true] {
            let s = run(dead_collector, sessions, rate, seconds);
            println!(
                "round {round} {:<14} {:>9.0} deliveries/s  cpu/1000 {:>6.2} ms  p99 {:>6.2} ms  \
                 complete {:>6.2} %  spans ended {:.0}, dropped with a failed export {:.0}",
                if dead_collector {
                    "dead collector"
                } else {
                    "off"
                },
                s.deliveries_per_s,
                s.cpu_per_1000.as_secs_f64() * 1000.0,
                s.p99_ms,
                s.completeness * 100.0,
                s.ended_spans,
                s.dropped_spans
            );
            if dead_collector {
                dead.push(s);
            } else {
                off.push(s);
            }
        }
    }
    let med =
        |v: &[Sample], f: fn(&Sample) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    println!("\n| figure (median) | off | dead collector | ratio dead/off |\n|---|---|---|---|");
    let figures: [(&str, Figure); 4] = [
        ("deliveries/s", |s| s.deliveries_per_s),
        ("node CPU ms per 1000 deliveries", |s| {
            s.cpu_per_1000.as_secs_f64() * 1000.0
        }),
        ("p99 latency ms", |s| s.p99_ms),
        ("completeness %", |s| s.completeness * 100.0),
    ];
    for (name, f) in figures {
        let (a, b) = (med(&off, f), med(&dead, f));
        println!("| {name} | {a:.2} | {b:.2} | {:.3} |", b / a);
    }
    println!(
        "| spans ended (dead collector) | — | {:.0} | — |",
        med(&dead, |s| s.ended_spans)
    );
    println!(
        "| spans dropped with a failed export | — | {:.0} | — |",
        med(&dead, |s| s.dropped_spans)
    );
}
