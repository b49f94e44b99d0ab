//! The live progress line on stderr: phase, time, sessions, the rate of the last second and
//! the p99 so far. On a terminal it is an indicatif spinner redrawn twice a second; otherwise
//! (CI logs) a plain line every five seconds. `--quiet` turns it off.

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use super::Run;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    Ramp = 0,
    Measure = 1,
    Settle = 2,
    Stop = 3,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Measure => "measure",
            Phase::Settle => "settle",
            Phase::Stop => "stop",
        }
    }
}

/// The current [`Phase`], shared.
#[derive(Debug, Default)]
pub(super) struct PhaseCell(AtomicU8);

impl PhaseCell {
    pub(super) fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Relaxed);
    }

    fn get(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) {
            0 => Phase::Ramp,
            1 => Phase::Measure,
            2 => Phase::Settle,
            _ => Phase::Stop,
        }
    }
}

/// The progress task.
pub(super) struct Progress {
    task: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

/// Starts showing progress (unless `--quiet`).
pub(super) fn spawn(run: Arc<Run>) -> Progress {
    if run.settings.quiet {
        return Progress {
            task: None,
            bar: None,
        };
    }
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    });
    let every = if terminal {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(5)
    };
    let shown = bar.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_count = 0u64;
        let mut last_at = run.start;
        loop {
            tick.tick().await;
            let now = std::time::Instant::now();
            let count = events(&run);
            let rate = (count.saturating_sub(last_count)) as f64
                / now.duration_since(last_at).as_secs_f64().max(1e-3);
            (last_count, last_at) = (count, now);
            let line = line(&run, rate);
            match &shown {
                Some(bar) => {
                    bar.set_message(line);
                    bar.tick();
                }
                None => eprintln!("{line}"),
            }
        }
    });
    Progress {
        task: Some(task),
        bar,
    }
}

/// What the rate counts: deliveries of publishing scenarios, connections otherwise.
fn events(run: &Run) -> u64 {
    if run.settings.scenario.publishes() {
        run.tracker.counts().received
    } else {
        run.recorder.connect_histogram().len()
    }
}

fn line(run: &Run, rate: f64) -> String {
    let elapsed = run.start.elapsed().as_secs_f64();
    let (what, histogram) = if run.settings.scenario.publishes() {
        ("deliveries", run.recorder.latency_histogram())
    } else {
        ("connects", run.recorder.connect_histogram())
    };
    let p99 = if histogram.is_empty() {
        "-".to_owned()
    } else {
        format!(
            "{:.1} ms",
            histogram.value_at_quantile(0.99) as f64 / 1000.0
        )
    };
    format!(
        "{} {elapsed:.0}s | sessions {}/{} | {rate:.0} {what}/s | p99 {p99}",
        run.phase.get().name(),
        run.recorder.sessions(),
        run.settings.sessions,
    )
}

impl Progress {
    /// Stops and clears the line.
    pub(super) async fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
            let _ = task.await;
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
