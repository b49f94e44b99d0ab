//! Running a scenario: the sessions' lives (ramp, reconnects, the end), the faults, the live
//! progress line, and turning what was measured into a [`Report`].
//!
//! Every session lives in a *slot*: slot `i` connects to URL `i mod N` with transport and
//! source address chosen by `i`, and when its session is lost it reconnects after the
//! reconnect delay (doubling per failed attempt, jittered) until the run ends. Drops and
//! returns are logged with their time, which is how a fault's cost is counted.
//!
//! A run has four phases: **ramp** (slots start at `--rate`), **measure** (from the moment
//! every slot is ready, or the ramp's deadline, for `--duration`), **settle** (publishing
//! scenarios wait for deliveries still in flight) and **stop** (every session closes).

mod faults;
mod progress;
mod rooms;
mod simple;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{ConnectError, Incoming, Session, SessionConfig};
use crate::measure::{CpuMeter, DeliveryTracker, ProcFile, Recorder};
use crate::report::{Report, ServerMemory};
use crate::settings::{Scenario, Settings};

/// Longest wait for the sessions to close at the end.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Extra time past the ramp before measuring starts anyway with the slots that are ready.
const RAMP_GRACE: Duration = Duration::from_secs(5);

/// Runs the scenario of `settings` and returns its report (without checking `--assert`).
pub async fn run(settings: Settings) -> Report {
    let run = Arc::new(Run::new(settings));
    let cpu = CpuMeter::start();
    let ticker = run.recorder.spawn_ticker();
    let progress = progress::spawn(run.clone());
    let faults = faults::spawn(run.clone());
    // Opened now: at the end the sessions may hold every file this process may open.
    let server_status = run
        .settings
        .server_pid
        .and_then(|pid| ProcFile::open(&format!("/proc/{pid}/status")).ok());
    let rss = || server_status.as_ref().and_then(|f| rss_in(&f.read().ok()?));
    let rss_before = rss();
    if let Some(limit) = open_files_limit()
        && run.settings.sessions + 64 > limit
    {
        run.warn(format!(
            "this process may open {limit} files (ulimit -n) and every session holds at least \
             one: raise the limit or spread the sessions over several processes"
        ));
    }

    let mut slots = JoinSet::new();
    let n = run.settings.sessions;
    let ramp_started = Instant::now();
    for i in 0..n {
        let due = ramp_started + Duration::from_secs_f64(i as f64 / run.settings.rate);
        tokio::time::sleep_until(due.into()).await;
        let run2 = run.clone();
        let slot = i as u32;
        slots.spawn(async move {
            match run2.settings.scenario {
                Scenario::Connect => simple::hold(run2, slot).await,
                Scenario::Chat | Scenario::Broadcast => rooms::member(run2, slot).await,
                Scenario::Echo => simple::echo(run2, slot).await,
                Scenario::ReconnectStorm => simple::storm_member(run2, slot).await,
            }
        });
    }
    // Measure from the moment every slot is ready, or give up waiting for the stragglers.
    let deadline = Instant::now() + run.settings.connect_timeout + RAMP_GRACE;
    loop {
        let progress = run.ready_all.notified();
        if run.ready_count() >= n || Instant::now() >= deadline {
            break;
        }
        let _ = tokio::time::timeout_at(deadline.into(), progress).await;
    }
    let ready = run.ready_count();
    run.begin_measure();
    run.phase.set(progress::Phase::Measure);

    let measured_until = match run.settings.scenario {
        Scenario::ReconnectStorm => simple::storm(&run).await,
        _ => {
            let end = run.measure_start() + run.settings.duration;
            tokio::time::sleep_until(end.into()).await;
            end
        }
    };
    run.publishing.cancel();
    let rss_after = rss();
    let tester = cpu.finish();

    if run.settings.scenario.publishes() {
        run.phase.set(progress::Phase::Settle);
        let settle_end = Instant::now() + run.settings.settle;
        while Instant::now() < settle_end {
            let c = run.tracker.counts();
            if c.received >= c.expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    run.phase.set(progress::Phase::Stop);
    run.stop.cancel();
    let closed = tokio::time::timeout(CLOSE_WAIT, async {
        while slots.join_next().await.is_some() {}
    })
    .await;
    if closed.is_err() {
        slots.abort_all();
    }
    let fault_results = faults.finish(&run, measured_until).await;
    progress.finish().await;
    ticker.abort();

    let mut report = Report::new(run.settings.scenario.as_str());
    report.settings = run.settings.to_json();
    run.recorder.fill_report(&mut report);
    let measured = measured_until.saturating_duration_since(run.measure_start());
    report.duration_s = measured.as_secs_f64();
    run.fill_sessions(&mut report, ready);
    if run.settings.scenario.publishes() {
        run.tracker.fill_report(&mut report);
        if !run.rooms.is_empty()
            && let Some(d) = &mut report.deliveries
        {
            (d.steady_sessions, d.steady_lost) = rooms::steady_losses(&run);
        }
    }
    report.faults = fault_results;
    if let (Some(pid), Some(before), Some(after)) = (run.settings.server_pid, rss_before, rss_after)
    {
        report.server_memory = Some(ServerMemory {
            pid,
            rss_before: before,
            rss_after: after,
            per_session: if ready > 0 {
                (after as f64 - before as f64) / ready as f64
            } else {
                0.0
            },
        });
    } else if let Some(pid) = run.settings.server_pid {
        report.warn(format!(
            "cannot read the memory of process {pid} (/proc/{pid}/status): is it running here?"
        ));
    }
    if let Some(load) = tester {
        report.set_tester_load(load);
    }
    for warning in run.warnings() {
        report.warn(warning);
    }
    report
}

/// What happened to a slot's session, for the fault accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotEvent {
    /// The session was lost (not closed by the tester).
    Lost,
    /// A lost session connected again.
    Back,
}

/// Everything the slots of a run share.
struct Run {
    settings: Settings,
    /// Second 0 of the timeline: the first connection attempt.
    start: Instant,
    recorder: Arc<Recorder>,
    tracker: DeliveryTracker,
    /// One per URL; clones share its HTTP clients.
    configs: Vec<SessionConfig>,
    /// Cancelled when sessions must close.
    stop: CancellationToken,
    /// Cancelled when publishing must end.
    publishing: CancellationToken,
    /// Cancelled when the measured phase starts.
    measuring: CancellationToken,
    measure_start: std::sync::OnceLock<Instant>,
    ready: AtomicU64,
    ready_all: tokio::sync::Notify,
    connected_once: AtomicU64,
    log: Mutex<Vec<(Instant, u32, SlotEvent)>>,
    /// Sessions by the transport they were on when the run ended.
    by_transport: Mutex<BTreeMap<String, u64>>,
    /// Sessions by the node that greeted them, when the run ended.
    by_node: Mutex<BTreeMap<String, u64>>,
    /// Deliveries expected and received, by the second their message was sent.
    by_second: SecondBuckets,
    warnings: Mutex<Vec<String>>,
    phase: progress::PhaseCell,
    /// chat and broadcast: the rooms, session i in room i mod R.
    rooms: Vec<rooms::Room>,
    /// broadcast: messages on their way to the room.
    fanout: rooms::FanOut,
    /// chat and broadcast: each slot's first join and messages, for the steady accounting.
    ledger: rooms::SlotLedger,
    /// `--payload-size` bytes of padding.
    padding: String,
    /// reconnect-storm: sessions back after the storm.
    storm_back: AtomicU64,
    storm_progress: tokio::sync::Notify,
}

impl Run {
    fn new(settings: Settings) -> Run {
        let configs = settings
            .targets
            .iter()
            .map(|target| {
                let mut c = SessionConfig::new(target.clone());
                c.path = settings.path.clone();
                c.namespace = settings.namespace.clone();
                c.connect_timeout = settings.connect_timeout;
                c
            })
            .collect();
        let seconds = settings.duration.as_secs()
            + (settings.sessions as f64 / settings.rate) as u64
            + settings.connect_timeout.as_secs()
            + RAMP_GRACE.as_secs()
            + 5;
        Run {
            start: Instant::now(),
            recorder: Arc::new(Recorder::new()),
            tracker: DeliveryTracker::new(),
            configs,
            stop: CancellationToken::new(),
            publishing: CancellationToken::new(),
            measuring: CancellationToken::new(),
            measure_start: std::sync::OnceLock::new(),
            ready: AtomicU64::new(0),
            ready_all: tokio::sync::Notify::new(),
            connected_once: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            by_transport: Mutex::new(BTreeMap::new()),
            by_node: Mutex::new(BTreeMap::new()),
            by_second: SecondBuckets::new(seconds),
            warnings: Mutex::new(Vec::new()),
            phase: progress::PhaseCell::default(),
            rooms: match settings.scenario {
                Scenario::Chat | Scenario::Broadcast => {
                    (0..settings.rooms).map(rooms::Room::new).collect()
                }
                _ => Vec::new(),
            },
            fanout: rooms::FanOut::default(),
            ledger: rooms::SlotLedger::new(match settings.scenario {
                Scenario::Chat | Scenario::Broadcast => settings.sessions as usize,
                _ => 0,
            }),
            padding: "x".repeat(settings.payload_size),
            storm_back: AtomicU64::new(0),
            storm_progress: tokio::sync::Notify::new(),
            settings,
        }
    }

    /// The session settings of slot `i`.
    fn config(&self, i: u32) -> SessionConfig {
        let i = i as usize;
        let mut c = self.configs[i % self.configs.len()].clone();
        c.transport = self.settings.transport_mix.pick(i);
        c.source_ip = self.settings.source_ip.as_ref().map(|ips| ips.pick(i));
        c
    }

    /// Microseconds since the start.
    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_micros()).unwrap_or(u64::MAX)
    }

    /// The instant `micros` after the start.
    fn instant(&self, micros: u64) -> Instant {
        self.start + Duration::from_micros(micros)
    }

    fn begin_measure(&self) {
        let _ = self.measure_start.set(Instant::now());
        self.measuring.cancel();
    }

    /// When the measured phase started (the start of the run until it has).
    fn measure_start(&self) -> Instant {
        self.measure_start.get().copied().unwrap_or(self.start)
    }

    fn ready_count(&self) -> u64 {
        self.ready.load(Ordering::Relaxed)
    }

    /// Slot is ready for the first time (connected, and joined where it joins).
    fn mark_ready(&self) {
        let n = self.ready.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.settings.sessions {
            self.ready_all.notify_waiters();
        }
    }

    /// Connects slot `i`, retrying failed attempts (each counted by kind) with the reconnect
    /// delay, until it works or the run stops. `retry` is the number of failed attempts (or
    /// losses) before this one, for the backoff.
    async fn connect(
        &self,
        i: u32,
        retry: &mut u32,
        node: &NodeCell,
        handler: impl Fn(Incoming) + Clone + Send + Sync + 'static,
    ) -> Option<Session> {
        // The bench protocol's `hello` names the node serving the session.
        let handler = {
            let node = node.clone();
            move |incoming: Incoming| {
                if let Incoming::Event { event, args, .. } = &incoming
                    && event.as_str() == "hello"
                    && let Ok(hello) = args.decode::<serde_json::Value>()
                    && let Some(id) = hello.get("node").and_then(serde_json::Value::as_str)
                {
                    *lock(&node) = Some(id.to_owned());
                }
                handler(incoming);
            }
        };
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let began = Instant::now();
            let attempt = tokio::select! {
                r = Session::connect_with_handler(self.config(i), handler.clone()) => r,
                () = self.stop.cancelled() => return None,
            };
            match attempt {
                Ok(session) => {
                    self.recorder.record_connect(began.elapsed());
                    if self.settings.scenario == Scenario::Connect {
                        // The timeline's rate of a connect run: connections per second.
                        self.recorder.add_events(1);
                    }
                    self.recorder.session_up();
                    *retry = 0;
                    return Some(session);
                }
                Err(err) => {
                    self.connect_failed(i, &err);
                    *retry += 1;
                    if !self.backoff_after_failure(i, *retry).await {
                        return None;
                    }
                }
            }
        }
    }

    fn connect_failed(&self, i: u32, err: &ConnectError) {
        self.recorder.record_failure(err.kind());
        tracing::debug!(slot = i, error = %err, "connection attempt failed");
    }

    /// Waits the reconnect delay for attempt `retry` (1 = first retry): the base delay doubled
    /// per earlier attempt up to 5×, ±50 % jitter. False if the run stopped meanwhile.
    async fn backoff(&self, i: u32, retry: u32) -> bool {
        self.wait_retry(i, retry, self.settings.reconnect_delay)
            .await
    }

    /// [`backoff`](Self::backoff) after a failed attempt: at least 100 ms, so that a zero
    /// reconnect delay does not hammer a server that refuses.
    async fn backoff_after_failure(&self, i: u32, retry: u32) -> bool {
        let base = self
            .settings
            .reconnect_delay
            .max(Duration::from_millis(100));
        self.wait_retry(i, retry, base).await
    }

    async fn wait_retry(&self, i: u32, retry: u32, base: Duration) -> bool {
        let base = base.as_secs_f64();
        let factor = f64::from(1u32 << retry.saturating_sub(1).min(3)).min(5.0);
        let jitter = 0.5 + jitter(i, retry);
        let delay = Duration::from_secs_f64(base * factor * jitter);
        tokio::select! {
            () = tokio::time::sleep(delay) => !self.stop.is_cancelled(),
            () = self.stop.cancelled() => false,
        }
    }

    /// A session of slot `i` was lost.
    fn lost(&self, i: u32) {
        self.recorder.session_down();
        lock(&self.log).push((Instant::now(), i, SlotEvent::Lost));
    }

    /// A slot whose session was lost is connected again.
    fn back(&self, i: u32) {
        lock(&self.log).push((Instant::now(), i, SlotEvent::Back));
    }

    /// The first connection of a slot.
    fn first_connect(&self) {
        self.connected_once.fetch_add(1, Ordering::Relaxed);
    }

    /// The run is ending: note the transport and the node, and close the session.
    async fn close(&self, session: Session, node: &NodeCell) {
        *lock(&self.by_transport)
            .entry(session.transport().as_str().to_owned())
            .or_default() += 1;
        if let Some(node) = lock(node).clone() {
            *lock(&self.by_node).entry(node).or_default() += 1;
        }
        self.recorder.session_down();
        session.close().await;
    }

    fn warn(&self, warning: String) {
        let mut w = lock(&self.warnings);
        if !w.contains(&warning) {
            w.push(warning);
        }
    }

    fn warnings(&self) -> Vec<String> {
        lock(&self.warnings).clone()
    }

    fn fill_sessions(&self, report: &mut Report, ready: u64) {
        let log = lock(&self.log);
        let s = &mut report.sessions;
        s.target = self.settings.sessions;
        s.connected = self.connected_once.load(Ordering::Relaxed);
        s.dropped = log.iter().filter(|e| e.2 == SlotEvent::Lost).count() as u64;
        s.reconnected = log.iter().filter(|e| e.2 == SlotEvent::Back).count() as u64;
        s.by_transport = lock(&self.by_transport).clone();
        s.by_node = lock(&self.by_node).clone();
        drop(log);
        if ready < self.settings.sessions {
            report.warn(format!(
                "only {ready} of {} sessions were ready when the measured part began",
                self.settings.sessions
            ));
        }
    }
}

/// What every published message carries: who sent it, its number, when it was due and when it
/// was sent (microseconds since the start of the run), and padding.
#[derive(Debug, serde::Serialize)]
struct WireOut<'a> {
    /// Sender slot.
    s: u32,
    /// Sender's sequence number, from 0.
    q: u64,
    /// When the open-loop schedule wanted it sent: latency counts from here.
    t: u64,
    /// When it was actually sent: room membership is judged at this moment.
    a: u64,
    /// Padding.
    #[serde(skip_serializing_if = "str::is_empty")]
    p: &'a str,
}

/// A received [`WireOut`] (its padding ignored).
#[derive(Debug, serde::Deserialize)]
struct WireIn {
    s: u32,
    q: u64,
    t: u64,
    a: u64,
}

/// What a slot does with each of its sessions.
trait Role: Send + Sync + 'static {
    /// Handles what the session receives, in the session's task (keep it quick).
    fn incoming(&self, run: &Run, incoming: Incoming);

    /// Right after connecting (e.g. joining a room). An error ends the session and counts as
    /// a failure of that kind.
    fn setup(
        &self,
        run: &Arc<Run>,
        session: &Session,
    ) -> impl Future<Output = Result<(), &'static str>> + Send;

    /// While connected (e.g. publishing). It may return early; the session stays.
    fn active(&self, run: &Arc<Run>, session: &Session) -> impl Future<Output = ()> + Send;

    /// The session ended, lost or closed.
    fn ended(&self, run: &Run);
}

/// The life of slot `slot`: connect, set up, be active until the run stops; when the session is
/// lost, reconnect after the delay.
async fn live<R: Role>(run: Arc<Run>, slot: u32, role: Arc<R>) {
    let handler = {
        let (run, role) = (run.clone(), role.clone());
        move |incoming| role.incoming(&run, incoming)
    };
    let (mut retry, mut first, mut was_lost, mut counted) = (0, true, false, false);
    let node = NodeCell::default();
    loop {
        let Some(session) = run.connect(slot, &mut retry, &node, handler.clone()).await else {
            return;
        };
        if !counted {
            run.first_connect();
            counted = true;
        }
        if was_lost {
            run.back(slot);
            was_lost = false;
        }
        if let Err(kind) = role.setup(&run, &session).await {
            run.recorder.record_failure(kind);
            run.recorder.session_down();
            role.ended(&run);
            session.close().await;
            retry += 1;
            if !run.backoff_after_failure(slot, retry).await {
                return;
            }
            continue;
        }
        if first {
            run.mark_ready();
            first = false;
        }
        let lost = tokio::select! {
            () = run.stop.cancelled() => false,
            () = session.closed() => true,
            () = async {
                role.active(&run, &session).await;
                std::future::pending::<()>().await;
            } => false,
        };
        role.ended(&run);
        if !lost {
            run.close(session, &node).await;
            return;
        }
        run.lost(slot);
        was_lost = true;
        retry += 1;
        if !run.backoff(slot, retry).await {
            return;
        }
    }
}

/// The open-loop schedule of one publisher: calls `send(due)` at `--message-rate` from the
/// start of the measured phase (each slot at its own phase within the interval) until
/// publishing ends, the session ends or `send` returns false. A late tick is sent at once with
/// its due time, so a slow server shows as latency rather than as fewer messages.
async fn publish_loop(
    run: &Run,
    slot: u32,
    session: &Session,
    mut send: impl FnMut(Instant) -> bool,
) {
    run.measuring.cancelled().await;
    let interval = 1.0 / run.settings.message_rate;
    let base = run.measure_start() + Duration::from_secs_f64(interval * jitter(slot, 0));
    let now = Instant::now();
    // After a reconnect, carry on with the ticks still ahead.
    let mut k = if now <= base {
        0
    } else {
        ((now - base).as_secs_f64() / interval).ceil() as u64
    };
    loop {
        let due = base + Duration::from_secs_f64(interval * k as f64);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            () = run.publishing.cancelled() => return,
            () = session.closed() => return,
        }
        if run.publishing.is_cancelled() || !send(due) {
            return;
        }
        k += 1;
    }
}

/// The node that last greeted a slot's session (`hello`).
type NodeCell = Arc<Mutex<Option<String>>>;

/// A pseudo-random number in [0, 1) from a slot and an attempt (reproducible, spread).
fn jitter(i: u32, retry: u32) -> f64 {
    let mut x = (u64::from(i) << 32 | u64::from(retry)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Deliveries expected and received per second of sending, so a fault's window can be
/// charged with the deliveries lost in it.
struct SecondBuckets {
    expected: Box<[AtomicU64]>,
    received: Box<[AtomicU64]>,
}

impl SecondBuckets {
    fn new(seconds: u64) -> Self {
        let n = usize::try_from(seconds.clamp(1, 7 * 24 * 3600)).unwrap_or(1);
        let zeros = || (0..n).map(|_| AtomicU64::new(0)).collect();
        SecondBuckets {
            expected: zeros(),
            received: zeros(),
        }
    }

    fn index(&self, micros: u64) -> usize {
        usize::try_from(micros / 1_000_000)
            .unwrap_or(usize::MAX)
            .min(self.expected.len() - 1)
    }

    fn expect(&self, sent_micros: u64, n: u64) {
        self.expected[self.index(sent_micros)].fetch_add(n, Ordering::Relaxed);
    }

    fn receive(&self, sent_micros: u64) {
        self.received[self.index(sent_micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries lost of the messages sent in seconds `[from, to)`.
    fn lost(&self, from: u64, to: u64) -> u64 {
        let to = usize::try_from(to)
            .unwrap_or(usize::MAX)
            .min(self.expected.len());
        let from = usize::try_from(from).unwrap_or(usize::MAX).min(to);
        (from..to)
            .map(|i| {
                self.expected[i]
                    .load(Ordering::Relaxed)
                    .saturating_sub(self.received[i].load(Ordering::Relaxed))
            })
            .sum()
    }
}

/// Resident memory of process `pid`, bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_of(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    rss_in(&status).ok_or_else(|| std::io::Error::other("no VmRSS line"))
}

/// `VmRSS` of a `/proc/PID/status` text, bytes.
fn rss_in(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The soft limit of open files of this process (`/proc/self/limits`), if it has one.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_spread_over_the_unit_interval() {
        let values: Vec<f64> = (0..1000).map(|i| jitter(i, 1)).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((400..600).contains(&low), "{low} of 1000 below 0.5");
    }

    #[test]
    fn buckets_charge_losses_to_the_second_of_sending() {
        let b = SecondBuckets::new(10);
        b.expect(1_500_000, 4);
        b.receive(1_500_000);
        b.receive(1_600_000);
        b.expect(3_000_000, 2);
        b.expect(99_000_000, 1); // past the end: the last bucket
        assert_eq!(b.lost(0, 2), 2);
        assert_eq!(b.lost(2, 4), 2);
        assert_eq!(b.lost(0, 100), 5);
        assert_eq!(b.lost(5, 2), 0);
    }

    #[test]
    fn open_files_limit_is_read() {
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn rss_of_this_process() {
        let rss = rss_of(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
        assert!(rss_of(u32::MAX).is_err());
    }
}
