//! `--at T --run CMD`: commands run mid-test, and what each cost.
//!
//! A fault's window runs from the moment its command started to the next fault's (or the end
//! of the run). Sessions lost in the window are charged to it; those that connected again are
//! *re-homed*, and the recovery time is how long the last of them took to come back.
//! Deliveries lost of the messages sent in the window are charged to it as well.

use std::{
    collections::BTreeMap,
    os::fd::AsFd as _,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use crate::report::Fault;
use crate::settings::FaultSpec;

use super::{Run, SlotEvent, lock};

/// The running fault tasks.
pub(super) struct Faults {
    tasks: Vec<JoinHandle<Fired>>,
}

/// What became of one fault.
struct Fired {
    spec: FaultSpec,
    /// When its command started; `None` if it never did.
    at: Option<Instant>,
    exit_code: Option<i32>,
    /// Something the report should say about it.
    note: Option<String>,
}

/// Starts a task per fault of the run, each waiting for its time.
pub(super) fn spawn(run: Arc<Run>) -> Faults {
    let tasks = run
        .settings
        .faults
        .iter()
        .cloned()
        .map(|spec| tokio::spawn(fire(run.clone(), spec)))
        .collect();
    Faults { tasks }
}

async fn fire(run: Arc<Run>, spec: FaultSpec) -> Fired {
    let at = humantime::format_duration(spec.at);
    let mut fired = Fired {
        spec,
        at: None,
        exit_code: None,
        note: None,
    };
    tokio::select! {
        () = tokio::time::sleep_until((run.start + fired.spec.at).into()) => {}
        () = run.publishing.cancelled() => {
            fired.note = Some(format!(
                "the fault at {at} never ran: the measured part ended before it"
            ));
            return fired;
        }
    }
    tracing::info!(at = %at, command = %fired.spec.run, "running the fault command");
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&fired.spec.run)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // Its output goes to stderr, keeping stdout for the report.
    if let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() {
        command.stdout(Stdio::from(stderr));
    }
    fired.at = Some(Instant::now());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            fired.note = Some(format!("the fault at {at} could not run sh: {e}"));
            return fired;
        }
    };
    tokio::select! {
        status = child.wait() => match status {
            Ok(status) => {
                fired.exit_code = status.code();
                if !status.success() {
                    fired.note = Some(format!("the fault command at {at} failed ({status})"));
                }
            }
            Err(e) => fired.note = Some(format!("the fault command at {at}: {e}")),
        },
        () = run.stop.cancelled() => {
            let _ = child.kill().await;
            fired.note = Some(format!(
                "the fault command at {at} was still running at the end and was stopped"
            ));
        }
    }
    fired
}

impl Faults {
    /// Waits for the fault tasks (the run has stopped, so they end) and counts what each
    /// fault cost; `measured_until` is when publishing ended.
    pub(super) async fn finish(self, run: &Run, measured_until: Instant) -> Vec<Fault> {
        let mut fired = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            if let Ok(f) = task.await {
                fired.push(f);
            }
        }
        let ends: Vec<Option<Instant>> = (0..fired.len())
            .map(|k| fired[k + 1..].iter().find_map(|f| f.at))
            .collect();
        let mut out = Vec::with_capacity(fired.len());
        for (f, next) in fired.into_iter().zip(ends) {
            if let Some(note) = &f.note {
                run.warn(note.clone());
            }
            let mut fault = Fault {
                at_s: f.spec.at.as_secs_f64(),
                command: f.spec.run.clone(),
                exit_code: f.exit_code,
                ..Fault::default()
            };
            if let Some(at) = f.at {
                fault.at_s = at.saturating_duration_since(run.start).as_secs_f64();
                let end = next.unwrap_or_else(Instant::now);
                let cost = sessions_cost(&lock(&run.log), at, end);
                fault.sessions_lost = cost.lost;
                fault.sessions_rehomed = cost.rehomed;
                fault.recovery_s = cost.recovery.map(|d| d.as_secs_f64());
                let from = run.micros(at) / 1_000_000;
                let to = match next {
                    Some(next) => run.micros(next) / 1_000_000,
                    None => run.micros(measured_until).div_ceil(1_000_000),
                };
                fault.messages_lost = run.by_second.lost(from, to);
            }
            out.push(fault);
        }
        out
    }
}

/// Sessions a fault window cost.
#[derive(Debug, PartialEq)]
struct SessionsCost {
    lost: u64,
    rehomed: u64,
    recovery: Option<Duration>,
}

/// Counts, in a log of slot events, the slots lost in `[from, to)`, those of them that came
/// back (at any time later), and how long after `from` the last of those came back.
fn sessions_cost(log: &[(Instant, u32, SlotEvent)], from: Instant, to: Instant) -> SessionsCost {
    let mut lost_at: BTreeMap<u32, Instant> = BTreeMap::new();
    for &(t, slot, event) in log {
        if event == SlotEvent::Lost && t >= from && t < to {
            lost_at.entry(slot).or_insert(t);
        }
    }
    let mut rehomed = 0;
    let mut recovery: Option<Duration> = None;
    for (&slot, &lost) in &lost_at {
        let back = log
            .iter()
            .find(|&&(t, s, e)| s == slot && e == SlotEvent::Back && t >= lost)
            .map(|e| e.0);
        if let Some(back) = back {
            rehomed += 1;
            let took = back.saturating_duration_since(from);
            recovery = Some(recovery.map_or(took, |r| r.max(took)));
        }
    }
    SessionsCost {
        lost: lost_at.len() as u64,
        rehomed,
        recovery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_charges_the_sessions_lost_in_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let log = vec![
            (at(50), 9, SlotEvent::Lost), // before the fault
            (at(60), 9, SlotEvent::Back),
            (at(100), 1, SlotEvent::Lost),
            (at(120), 2, SlotEvent::Lost),
            (at(130), 3, SlotEvent::Lost),
            (at(900), 1, SlotEvent::Back),
            (at(1500), 2, SlotEvent::Back), // after the window: still re-homed
            (at(1600), 1, SlotEvent::Lost), // in the next window
        ];
        let cost = sessions_cost(&log, at(100), at(1000));
        assert_eq!(
            cost,
            SessionsCost {
                lost: 3,
                rehomed: 2,
                recovery: Some(Duration::from_millis(1400)),
            }
        );
        let quiet = sessions_cost(&log, at(2000), at(3000));
        assert_eq!(
            quiet,
            SessionsCost {
                lost: 0,
                rehomed: 0,
                recovery: None,
            }
        );
    }
}
