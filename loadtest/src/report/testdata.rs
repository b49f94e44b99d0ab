//! A report with every part filled in, for the tests of the report modules.

use std::collections::BTreeMap;

use super::{
    Deliveries, Fault, Latency, REPORT_VERSION, Report, Sample, ServerMemory, SessionStats,
    TesterLoad,
};

fn latency(count: u64, v: [f64; 7]) -> Latency {
    let [min, mean, p50, p90, p99, p999, max] = v;
    Latency {
        count,
        min,
        mean,
        p50,
        p90,
        p99,
        p999,
        max,
        distribution: vec![
            (0.0, min),
            (50.0, p50),
            (90.0, p90),
            (99.0, p99),
            (99.9, p999),
            (100.0, max),
        ],
    }
}

/// A chat run of 60 s: 998 of 1000 sessions, 99 % of deliveries, two faults.
pub(crate) fn sample_report() -> Report {
    Report {
        version: REPORT_VERSION,
        scenario: "chat".into(),
        settings: serde_json::json!({"sessions": 1000, "rooms": 10}),
        started_at_ms: 1_714_564_800_000,
        duration_s: 60.0,
        sessions: SessionStats {
            target: 1000,
            connected: 998,
            failed: BTreeMap::from([("refused".into(), 1), ("timeout".into(), 1)]),
            dropped: 3,
            reconnected: 3,
            by_transport: BTreeMap::from([("polling".into(), 10), ("websocket".into(), 988)]),
            by_node: BTreeMap::new(),
        },
        connect_ms: Some(latency(998, [1.2, 3.4, 3.1, 5.0, 9.8, 12.0, 15.0])),
        latency_ms: Some(latency(594_000, [0.4, 1.1, 0.9, 2.0, 4.5, 8.0, 20.0])),
        deliveries: Some(Deliveries {
            expected: 600_000,
            received: 594_000,
            duplicates: 3,
            out_of_order: 2,
            lost: 6000,
            completeness: 0.99,
            per_second: 9900.0,
            published: 6000,
            steady_sessions: 950,
            steady_lost: 0,
        }),
        server_memory: Some(ServerMemory {
            pid: 4242,
            rss_before: 104_857_600,
            rss_after: 104_857_600 + 998 * 34_000,
            per_session: 34_000.0,
        }),
        faults: vec![
            Fault {
                at_s: 10.0,
                command: "kill -9 4243".into(),
                exit_code: Some(0),
                sessions_lost: 300,
                sessions_rehomed: 300,
                recovery_s: Some(2.5),
                messages_lost: 12,
            },
            Fault {
                at_s: 30.0,
                command: "a very long command that goes on and on".into(),
                exit_code: None,
                sessions_lost: 5,
                sessions_rehomed: 0,
                recovery_s: None,
                messages_lost: 0,
            },
        ],
        timeline: vec![
            Sample {
                t_s: 0.0,
                sessions: 500,
                per_second: 9000.0,
                p50_ms: 0.8,
                p99_ms: 3.0,
            },
            Sample {
                t_s: 1.0,
                sessions: 998,
                per_second: 10_500.0,
                p50_ms: 1.0,
                p99_ms: 7.0,
            },
            Sample {
                t_s: 2.0,
                sessions: 998,
                per_second: 10_200.0,
                p50_ms: 0.9,
                p99_ms: 4.0,
            },
        ],
        tester: TesterLoad {
            cpu_percent: 42.0,
            cores: 2,
            saturated: false,
        },
        warnings: vec!["2 sessions failed to connect".into()],
    }
}
