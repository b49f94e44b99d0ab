//! `connect` (hold sessions), `echo` (ack round trips) and `reconnect-storm`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use crate::client::{Incoming, Session};

use super::{Role, Run, WireIn, WireOut, live, publish_loop};

/// connect: a session that only answers pings.
struct Hold;

impl Role for Hold {
    fn incoming(&self, _: &Run, _: Incoming) {}

    async fn setup(&self, _: &Arc<Run>, _: &Session) -> Result<(), &'static str> {
        Ok(())
    }

    async fn active(&self, _: &Arc<Run>, _: &Session) {}

    fn ended(&self, _: &Run) {}
}

/// The life of a `connect` slot.
pub(super) async fn hold(run: Arc<Run>, slot: u32) {
    live(run, slot, Arc::new(Hold)).await;
}

/// echo: emits `echo` with an ack at the message rate; the round trip runs from the due time
/// to the ack.
struct Echo {
    slot: u32,
    seq: AtomicU64,
}

impl Role for Echo {
    fn incoming(&self, run: &Run, incoming: Incoming) {
        let Incoming::Ack {
            args, received_at, ..
        } = incoming
        else {
            return;
        };
        let Ok((wire,)) = args.decode::<(WireIn,)>() else {
            run.warn("an `echo` ack did not carry the message sent: ignored".into());
            return;
        };
        if wire.s != self.slot || !run.tracker.record(wire.s, wire.q, self.slot).is_first() {
            return;
        }
        run.by_second.receive(wire.a);
        run.recorder
            .record_latency(received_at.saturating_duration_since(run.instant(wire.t)));
    }

    async fn setup(&self, _: &Arc<Run>, _: &Session) -> Result<(), &'static str> {
        Ok(())
    }

    async fn active(&self, run: &Arc<Run>, session: &Session) {
        publish_loop(run, self.slot, session, |due| {
            let sent = run.micros(Instant::now());
            let wire = WireOut {
                s: self.slot,
                q: self.seq.fetch_add(1, Ordering::Relaxed),
                t: run.micros(due),
                a: sent,
                p: &run.padding,
            };
            if session.emit_expecting_ack("echo", &(&wire,)).is_err() {
                return false;
            }
            run.tracker.published(1);
            run.by_second.expect(sent, 1);
            true
        })
        .await;
    }

    fn ended(&self, _: &Run) {}
}

/// The life of an `echo` slot.
pub(super) async fn echo(run: Arc<Run>, slot: u32) {
    let role = Echo {
        slot,
        seq: AtomicU64::new(0),
    };
    live(run, slot, Arc::new(role)).await;
}

/// reconnect-storm: connect and hold; when the measured phase starts, every session closes at
/// once and reconnects at once (after `--reconnect-delay`, 0 by default), and the time from
/// the storm to being connected again is the latency sample. After that the session holds
/// until the end; a session lost then is not reconnected (the storm is over).
pub(super) async fn storm_member(run: Arc<Run>, slot: u32) {
    let handler = |_: Incoming| {};
    let node = super::NodeCell::default();
    let mut retry = 0;
    let mut first = true;
    // Before the storm: an ordinary held session.
    let session = loop {
        let Some(session) = run.connect(slot, &mut retry, &node, handler).await else {
            return;
        };
        if first {
            run.first_connect();
            run.mark_ready();
            first = false;
        }
        tokio::select! {
            () = run.stop.cancelled() => {
                run.close(session, &node).await;
                return;
            }
            () = run.measuring.cancelled() => break session,
            () = session.closed() => {
                run.lost(slot);
                retry += 1;
                if !run.backoff(slot, retry).await {
                    return;
                }
            }
        }
    };
    // The storm.
    run.lost(slot);
    session.close().await;
    if !run.settings.reconnect_delay.is_zero() && !run.backoff(slot, 1).await {
        return;
    }
    let Some(session) = run.connect(slot, &mut retry, &node, handler).await else {
        return;
    };
    run.back(slot);
    run.recorder.record_latency(run.measure_start().elapsed());
    run.storm_back.fetch_add(1, Ordering::Relaxed);
    run.storm_progress.notify_waiters();
    tokio::select! {
        () = run.stop.cancelled() => run.close(session, &node).await,
        () = session.closed() => run.lost(slot),
    }
}

/// reconnect-storm's measured phase: waits until every session that was ready is back, at most
/// `--duration`; returns when it ended.
pub(super) async fn storm(run: &Run) -> Instant {
    let deadline = run.measure_start() + run.settings.duration;
    let wanted = run.ready_count();
    loop {
        let progress = run.storm_progress.notified();
        let back = run.storm_back.load(Ordering::Relaxed);
        if back >= wanted {
            return Instant::now();
        }
        if Instant::now() >= deadline {
            run.warn(format!(
                "only {back} of {wanted} sessions were back {} after the storm",
                humantime::format_duration(run.settings.duration)
            ));
            return deadline;
        }
        let _ = tokio::time::timeout_at(deadline.into(), progress).await;
    }
}
