//! Measuring a run: the [`Recorder`] every scenario records into (latencies in HDR histograms,
//! a per-second timeline, counters, connection failures), the [`DeliveryTracker`] of publishing
//! scenarios (distinct, duplicate, out-of-order and lost deliveries), and the [`CpuMeter`] that
//! tells whether the load generator itself was the bottleneck.
//!
//! Everything here is thread-safe and cheap enough to call from thousands of tasks: the hot
//! paths lock one of several shards (picked per thread), never a single global lock, and memory
//! stays bounded however long the run (closed seconds of the timeline are reduced to a
//! [`Sample`]; the delivery bitmaps drop every fully received prefix).
//!
//! ```
//! use std::time::Duration;
//! use corral_loadtest::measure::{DeliveryTracker, Recorder};
//!
//! let recorder = Recorder::new();
//! recorder.record_connect(Duration::from_millis(3));
//! recorder.session_up();
//! recorder.record_latency(Duration::from_micros(850));
//!
//! let tracker = DeliveryTracker::new();
//! tracker.published(2); // one message for a room of two members
//! tracker.record(0, 0, 0);
//! tracker.record(0, 0, 1);
//!
//! let mut report = corral_loadtest::report::Report::new("chat");
//! recorder.fill_report(&mut report);
//! tracker.fill_report(&mut report);
//! assert_eq!(report.deliveries.as_ref().map(|d| d.lost), Some(0));
//! ```

use std::cell::Cell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use crate::report::{Deliveries, Latency, Report, Sample, TesterLoad};

/// Lowest latency the histograms tell apart: 1 µs.
pub const HISTOGRAM_LOW_US: u64 = 1;
/// Highest latency the histograms record exactly: 60 s (longer samples are clamped to it).
pub const HISTOGRAM_HIGH_US: u64 = 60_000_000;
/// Significant digits of the run-wide histograms.
pub const HISTOGRAM_SIGFIG: u8 = 3;
/// Significant digits of the per-second histograms of the timeline (1 % is plenty for a
/// per-second p50 / p99, and keeps each open second at ~20 KiB instead of ~140 KiB).
const SECOND_SIGFIG: u8 = 2;
/// How often [`Recorder::spawn_ticker`] closes seconds.
const TICK_EVERY: Duration = Duration::from_millis(250);

/// A latency histogram in microseconds, 1 µs … 60 s, with `sigfig` significant digits.
fn histogram(sigfig: u8) -> Histogram<u64> {
    match Histogram::new_with_bounds(HISTOGRAM_LOW_US, HISTOGRAM_HIGH_US, sigfig) {
        Ok(h) => h,
        // Constant, valid bounds: hdrhistogram only refuses low < 1, high < 2 × low or
        // sigfig > 5.
        Err(e) => unreachable!("invalid histogram bounds: {e}"),
    }
}

/// A new run-wide latency histogram (microseconds, 1 µs … 60 s, 3 significant digits), for
/// scenarios that keep a histogram of their own; turn it into the report's model with
/// [`latency_from_histogram`].
pub fn new_histogram() -> Histogram<u64> {
    histogram(HISTOGRAM_SIGFIG)
}

/// Adds `src` into `dst`. Both have the same bounds, which is the only way `add` can fail.
fn merge(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    let _ = dst.add(src);
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shard of the calling thread: threads are numbered as they first record, so a tokio
/// worker keeps hitting the same shard and distinct workers (up to the shard count) never
/// contend.
fn shard_of(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static THREAD: Cell<Option<usize>> = const { Cell::new(None) };
    }
    let n = THREAD.with(|t| match t.get() {
        Some(n) => n,
        None => {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            t.set(Some(n));
            n
        }
    });
    n % shards.max(1)
}

fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 32)
}

/// Converts a histogram of microseconds into the report's [`Latency`] (milliseconds), with a
/// distribution of about 10 points per decade of the HDR percentile axis (0, 90, 99, 99.9 …)
/// up to the resolution the sample count allows, and the maximum last. `None` when empty.
pub fn latency_from_histogram(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let q = |quantile: f64| ms(h.value_at_quantile(quantile));
    // x = -log10(1 - p): 0 → 0 %, 1 → 90 %, 2 → 99 %, 3 → 99.9 % …; past log10(count) the
    // percentiles only repeat the maximum.
    let x_max = (h.len() as f64).log10().clamp(1.0, 6.0);
    let mut distribution = Vec::new();
    let mut step = 0u32;
    loop {
        let x = f64::from(step) / 10.0;
        if x > x_max + 1e-9 {
            break;
        }
        let quantile = 1.0 - 10f64.powf(-x);
        let percentile = (quantile * 100.0 * 1e6).round() / 1e6;
        distribution.push((percentile, q(quantile)));
        step += 1;
    }
    distribution.push((100.0, ms(h.max())));
    Some(Latency {
        count: h.len(),
        min: ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: ms(h.max()),
        distribution,
    })
}

/// A named counter of a [`Recorder`]: a clonable handle, one relaxed atomic add per call.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn incr(&self) {
        self.add(1);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One second of the timeline while it is still open.
struct OpenSecond {
    sec: u64,
    latency: Histogram<u64>,
    count: u64,
    sessions: u64,
}

struct Shard {
    connect: Histogram<u64>,
    latency: Histogram<u64>,
    /// Open seconds, oldest first.
    seconds: VecDeque<OpenSecond>,
    /// Per-second histograms to reuse.
    spare: Vec<Histogram<u64>>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            connect: histogram(HISTOGRAM_SIGFIG),
            latency: histogram(HISTOGRAM_SIGFIG),
            seconds: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// The open second `sec`, created in order if needed.
    fn second(&mut self, sec: u64, sessions: u64) -> &mut OpenSecond {
        // Almost always the newest one; a thread preempted across a second boundary may be
        // one behind.
        let pos = self.seconds.iter().rposition(|s| s.sec <= sec);
        let index = match pos {
            Some(i) if self.seconds[i].sec == sec => i,
            _ => {
                let at = pos.map_or(0, |i| i + 1);
                let latency = self.spare.pop().unwrap_or_else(|| histogram(SECOND_SIGFIG));
                self.seconds.insert(
                    at,
                    OpenSecond {
                        sec,
                        latency,
                        count: 0,
                        sessions,
                    },
                );
                at
            }
        };
        let second = &mut self.seconds[index];
        second.sessions = sessions;
        second
    }
}

struct Timeline {
    /// Closed seconds, `samples[i]` is second `i`.
    samples: Vec<Sample>,
    /// Connected sessions last seen in each second (by ticks and records).
    sessions_at: Vec<Option<u64>>,
}

/// Records what a scenario measures. Share it as `Arc<Recorder>`; every method takes `&self`.
///
/// - latencies ([`record_latency`](Self::record_latency)) go into a run-wide HDR histogram and
///   into the second of the run they were recorded in (the timeline's p50 / p99 / count);
/// - connect times ([`record_connect`](Self::record_connect)) into a histogram of their own;
/// - [`add_events`](Self::add_events) counts events of the timeline that carry no latency;
/// - the connected-sessions gauge ([`session_up`](Self::session_up) /
///   [`session_down`](Self::session_down)) is sampled into the timeline;
/// - connection failures by kind ([`record_failure`](Self::record_failure)) and named
///   [`counter`](Self::counter)s.
///
/// Seconds of the timeline are closed by [`tick`](Self::tick) — call it every second or use
/// [`spawn_ticker`](Self::spawn_ticker) — and at the end by [`timeline`](Self::timeline).
pub struct Recorder {
    start: Instant,
    started_at: SystemTime,
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Seconds below this one are closed; later records for them only count run-wide.
    closed_below: AtomicU64,
    sessions: AtomicU64,
    timeline: Mutex<Timeline>,
    failures: Mutex<BTreeMap<String, u64>>,
    counters: Mutex<BTreeMap<String, Counter>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("elapsed", &self.start.elapsed())
            .field("sessions", &self.sessions())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder whose run starts now.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A recorder whose run started at `start` (second 0 of the timeline).
    pub fn starting_at(start: Instant) -> Self {
        let started_at = SystemTime::now()
            .checked_sub(start.elapsed())
            .unwrap_or_else(SystemTime::now);
        Recorder {
            start,
            started_at,
            shards: (0..default_shards())
                .map(|_| Padded(Mutex::new(Shard::new())))
                .collect(),
            closed_below: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            timeline: Mutex::new(Timeline {
                samples: Vec::new(),
                sessions_at: Vec::new(),
            }),
            failures: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(BTreeMap::new()),
        }
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// When the run started, milliseconds since the Unix epoch.
    pub fn started_at_ms(&self) -> u64 {
        self.started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn shard(&self) -> MutexGuard<'_, Shard> {
        lock(&self.shards[shard_of(self.shards.len())].0)
    }

    fn second_now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// Records the time a session took to connect.
    pub fn record_connect(&self, took: Duration) {
        self.shard().connect.saturating_record(micros(took));
    }

    /// Records one sample of the scenario's main latency, in the current second.
    pub fn record_latency(&self, took: Duration) {
        self.record_latency_in(took, self.second_now());
    }

    /// Records one latency sample in second `sec` of the run (for samples measured earlier
    /// than they are recorded; seconds already closed only count run-wide).
    pub fn record_latency_in(&self, took: Duration, sec: u64) {
        let us = micros(took);
        let open = sec >= self.closed_below.load(Ordering::Relaxed);
        let sessions = self.sessions();
        let mut shard = self.shard();
        shard.latency.saturating_record(us);
        if open {
            let second = shard.second(sec, sessions);
            second.latency.saturating_record(us);
            second.count += 1;
        }
    }

    /// Counts `n` events of the current second that carry no latency (they add to the
    /// timeline's per-second rate only).
    pub fn add_events(&self, n: u64) {
        let sec = self.second_now();
        if sec < self.closed_below.load(Ordering::Relaxed) {
            return;
        }
        let sessions = self.sessions();
        self.shard().second(sec, sessions).count += n;
    }

    /// One more connected session.
    pub fn session_up(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// One connected session fewer (never below zero).
    pub fn session_down(&self) {
        let _ = self
            .sessions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Sets the connected-sessions gauge.
    pub fn set_sessions(&self, n: u64) {
        self.sessions.store(n, Ordering::Relaxed);
    }

    /// Connected sessions now.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Counts one connection failure of `kind` (`refused`, `timeout`, `http_5xx`, …).
    pub fn record_failure(&self, kind: &str) {
        *lock(&self.failures).entry(kind.to_owned()).or_default() += 1;
    }

    /// Connection failures by kind so far.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        lock(&self.failures).clone()
    }

    /// The counter `name`, created at zero. Keep the handle on hot paths: it is one atomic
    /// add per call, whereas this lookup takes a lock.
    pub fn counter(&self, name: &str) -> Counter {
        lock(&self.counters)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Every counter's value.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        lock(&self.counters)
            .iter()
            .map(|(k, c)| (k.clone(), c.get()))
            .collect()
    }

    /// The connect-time distribution so far; `None` before the first sample.
    pub fn connect_latency(&self) -> Option<Latency> {
        latency_from_histogram(&self.merged(|s| &s.connect))
    }

    /// The main latency distribution so far; `None` before the first sample.
    pub fn latency(&self) -> Option<Latency> {
        latency_from_histogram(&self.merged(|s| &s.latency))
    }

    /// The run-wide main latency histogram (microseconds), merged from every shard.
    pub fn latency_histogram(&self) -> Histogram<u64> {
        self.merged(|s| &s.latency)
    }

    /// The run-wide connect-time histogram (microseconds), merged from every shard.
    pub fn connect_histogram(&self) -> Histogram<u64> {
        self.merged(|s| &s.connect)
    }

    fn merged(&self, pick: impl Fn(&Shard) -> &Histogram<u64>) -> Histogram<u64> {
        let mut all = histogram(HISTOGRAM_SIGFIG);
        for shard in self.shards.iter() {
            merge(&mut all, pick(&lock(&shard.0)));
        }
        all
    }

    /// Closes the seconds that ended at least a second ago and samples the sessions gauge
    /// into the current second. Cheap; call it about once a second (or see
    /// [`spawn_ticker`](Self::spawn_ticker)).
    pub fn tick(&self) {
        let now = self.second_now();
        self.note_sessions(now);
        self.close_below(now.saturating_sub(1));
    }

    /// Spawns a tokio task that calls [`tick`](Self::tick) four times a second until the
    /// recorder is dropped (or the handle aborted). Must be called within a tokio runtime.
    pub fn spawn_ticker(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let recorder = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match recorder.upgrade() {
                    Some(recorder) => recorder.tick(),
                    None => break,
                }
            }
        })
    }

    fn note_sessions(&self, sec: u64) {
        let sessions = self.sessions();
        let mut timeline = lock(&self.timeline);
        let Ok(i) = usize::try_from(sec) else { return };
        if timeline.sessions_at.len() <= i {
            timeline.sessions_at.resize(i + 1, None);
        }
        timeline.sessions_at[i] = Some(sessions);
    }

    /// Closes every second below `limit` into a [`Sample`].
    fn close_below(&self, limit: u64) {
        let prev = self.closed_below.fetch_max(limit, Ordering::Relaxed);
        let limit = limit.max(prev);
        let mut closing: BTreeMap<u64, OpenSecond> = BTreeMap::new();
        for shard in self.shards.iter() {
            let mut shard = lock(&shard.0);
            while shard.seconds.front().is_some_and(|s| s.sec < limit) {
                let Some(second) = shard.seconds.pop_front() else {
                    break;
                };
                match closing.entry(second.sec) {
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert(second);
                    }
                    std::collections::btree_map::Entry::Occupied(mut o) => {
                        let acc = o.get_mut();
                        merge(&mut acc.latency, &second.latency);
                        acc.count += second.count;
                        acc.sessions = acc.sessions.max(second.sessions);
                        let mut spare = second.latency;
                        spare.reset();
                        shard.spare.push(spare);
                    }
                }
            }
        }
        let mut timeline = lock(&self.timeline);
        let current = self.sessions();
        let end = usize::try_from(limit).unwrap_or(usize::MAX);
        while timeline.samples.len() < end {
            let sec = timeline.samples.len();
            let second = closing.remove(&(sec as u64));
            let noted = timeline.sessions_at.get(sec).copied().flatten();
            let sessions = match (&second, noted) {
                (Some(s), Some(n)) => s.sessions.max(n),
                (Some(s), None) => s.sessions,
                (None, Some(n)) => n,
                // Nothing seen in this second: carry the previous one on.
                (None, None) => timeline.samples.last().map_or(current, |s| s.sessions),
            };
            let (count, p50, p99) = match &second {
                Some(s) if !s.latency.is_empty() => (
                    s.count,
                    s.latency.value_at_quantile(0.5) as f64 / 1000.0,
                    s.latency.value_at_quantile(0.99) as f64 / 1000.0,
                ),
                Some(s) => (s.count, 0.0, 0.0),
                None => (0, 0.0, 0.0),
            };
            timeline.samples.push(Sample {
                t_s: sec as f64,
                sessions,
                per_second: count as f64,
                p50_ms: p50,
                p99_ms: p99,
            });
        }
        // Records that raced a previous close: their second is already a sample.
        for (sec, late) in closing {
            if let Some(sample) = usize::try_from(sec)
                .ok()
                .and_then(|i| timeline.samples.get_mut(i))
            {
                sample.per_second += late.count as f64;
            }
        }
    }

    /// The timeline up to now: closes every second, including the current partial one (whose
    /// rate is scaled to a full second), and returns one [`Sample`] per second since the start.
    /// Later records into the closed seconds only count run-wide.
    pub fn timeline(&self) -> Vec<Sample> {
        let elapsed = self.start.elapsed();
        let now = elapsed.as_secs();
        self.note_sessions(now);
        self.close_below(now + 1);
        let mut samples = lock(&self.timeline).samples.clone();
        // Scale a partial last second to a rate, unless it is too short to mean anything.
        let partial = elapsed.as_secs_f64() - now as f64;
        if let Some(last) = samples.last_mut()
            && last.t_s as u64 == now
            && partial >= 0.1
        {
            last.per_second /= partial;
        }
        samples
    }

    /// Fills what the recorder measured into `report`: `started_at_ms`, `duration_s` (now),
    /// `connect_ms`, `latency_ms`, `timeline`, and adds the failures to `sessions.failed`.
    /// Call it once, when the measured part ends.
    pub fn fill_report(&self, report: &mut Report) {
        report.started_at_ms = self.started_at_ms();
        report.timeline = self.timeline();
        report.duration_s = self.start.elapsed().as_secs_f64();
        report.connect_ms = self.connect_latency();
        report.latency_ms = self.latency();
        for (kind, n) in self.failures() {
            *report.sessions.failed.entry(kind).or_default() += n;
        }
    }
}

/// What [`DeliveryTracker::record`] made of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// First copy, in order.
    New,
    /// First copy, but a later message of the same sender had already arrived.
    OutOfOrder,
    /// Already received.
    Duplicate,
    /// A sequence number too far ahead of the receiver's window (a broken sender): ignored.
    Rejected,
}

impl Delivery {
    /// True for a first copy (in order or not): the one to take a latency sample from.
    pub fn is_first(self) -> bool {
        matches!(self, Delivery::New | Delivery::OutOfOrder)
    }
}

/// Sequence numbers of one sender seen by one receiver: a bitmap that starts at `base` (all
/// below it received) and drops every fully received leading word, so in-order delivery needs
/// a word or two whatever the number of messages, and gaps cost one bit per message.
#[derive(Debug, Default)]
struct PairLog {
    /// One more than the highest sequence number seen; 0 before any.
    next: u64,
    base: u64,
    words: VecDeque<u64>,
}

impl PairLog {
    fn record(&mut self, seq: u64, window_bits: u64) -> Delivery {
        if seq < self.base {
            return Delivery::Duplicate;
        }
        let offset = seq - self.base;
        if offset >= window_bits {
            return Delivery::Rejected;
        }
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        if self.words[word] & mask != 0 {
            return Delivery::Duplicate;
        }
        self.words[word] |= mask;
        let outcome = if seq + 1 < self.next {
            Delivery::OutOfOrder
        } else {
            Delivery::New
        };
        self.next = self.next.max(seq + 1);
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += 64;
        }
        outcome
    }

    fn has(&self, seq: u64) -> bool {
        if seq < self.base {
            return true;
        }
        let offset = seq - self.base;
        let word = usize::try_from(offset / 64).unwrap_or(usize::MAX);
        self.words
            .get(word)
            .is_some_and(|w| w & (1u64 << (offset % 64)) != 0)
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.words.capacity() * 8
    }
}

/// A multiplicative hash for the `(sender, receiver)` keys: the tracker's keys are small
/// dense integers that no one chooses adversarially.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type PairMap = HashMap<u64, PairLog, BuildHasherDefault<PairHasher>>;

/// A value alone on its cache line(s), so that neighbouring shards' locks do not bounce the
/// same line between cores.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

#[derive(Default)]
struct TrackerShard {
    pairs: PairMap,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    rejected: u64,
}

/// Counts of a [`DeliveryTracker`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Messages published.
    pub published: u64,
    /// Deliveries expected (given by the scenario).
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    /// Extra copies of deliveries already received.
    pub duplicates: u64,
    /// First copies that arrived after a later message of the same sender.
    pub out_of_order: u64,
    /// `expected - received` (0 if more arrived than expected).
    pub lost: u64,
    /// Deliveries ignored because their sequence number was beyond the window (see
    /// [`DeliveryTracker::with_window`]).
    pub rejected: u64,
}

/// Message accounting for publishing scenarios, per `(sender, sequence number, receiver)`.
///
/// Senders and receivers are numbered by the scenario (`u32`, e.g. the session index); each
/// sender numbers its messages 0, 1, 2 … (one sequence per sender, whatever the room). The
/// scenario says what to expect ([`published`](Self::published) /
/// [`expect`](Self::expect)) and records every `message` a receiver gets
/// ([`record`](Self::record)). Memory per (sender, receiver) pair is a few words plus one bit
/// per message still missing below the highest one received.
pub struct DeliveryTracker {
    shards: Box<[Padded<Mutex<TrackerShard>>]>,
    published: AtomicU64,
    expected: AtomicU64,
    window_bits: u64,
}

impl Default for DeliveryTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for DeliveryTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryTracker")
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl DeliveryTracker {
    /// Default window: a sequence number more than 2^24 (16 777 216) beyond the lowest one
    /// still missing of its pair is rejected rather than allowed to grow the bitmap.
    pub const DEFAULT_WINDOW: u64 = 1 << 24;

    /// An empty tracker.
    pub fn new() -> Self {
        Self::with_window(Self::DEFAULT_WINDOW)
    }

    /// An empty tracker whose per-pair bitmaps hold at most `window` sequence numbers past the
    /// lowest missing one (a bound on memory against a misbehaving sender: at most
    /// `window / 8` bytes per pair).
    pub fn with_window(window: u64) -> Self {
        let shards = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .saturating_mul(16)
            .clamp(64, 1024);
        DeliveryTracker {
            shards: (0..shards)
                .map(|_| Padded(Mutex::new(TrackerShard::default())))
                .collect(),
            published: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            window_bits: window.max(64),
        }
    }

    fn key(sender: u32, receiver: u32) -> u64 {
        (u64::from(sender) << 32) | u64::from(receiver)
    }

    fn shard(&self, receiver: u32) -> MutexGuard<'_, TrackerShard> {
        lock(&self.shards[receiver as usize % self.shards.len()].0)
    }

    /// One message published to a room of `members` sessions (sender included): one more
    /// published, `members` more expected.
    pub fn published(&self, members: u64) {
        self.published.fetch_add(1, Ordering::Relaxed);
        self.expect(members);
    }

    /// `n` more deliveries expected.
    pub fn expect(&self, n: u64) {
        self.expected.fetch_add(n, Ordering::Relaxed);
    }

    /// Receiver `receiver` got message `seq` of sender `sender`.
    pub fn record(&self, sender: u32, seq: u64, receiver: u32) -> Delivery {
        let mut shard = self.shard(receiver);
        let outcome = shard
            .pairs
            .entry(Self::key(sender, receiver))
            .or_default()
            .record(seq, self.window_bits);
        match outcome {
            Delivery::New => shard.received += 1,
            Delivery::OutOfOrder => {
                shard.received += 1;
                shard.out_of_order += 1;
            }
            Delivery::Duplicate => shard.duplicates += 1,
            Delivery::Rejected => shard.rejected += 1,
        }
        outcome
    }

    /// Whether `receiver` got message `seq` of `sender`.
    pub fn received(&self, sender: u32, seq: u64, receiver: u32) -> bool {
        self.shard(receiver)
            .pairs
            .get(&Self::key(sender, receiver))
            .is_some_and(|p| p.has(seq))
    }

    /// How many of the messages `seqs` of `sender` `receiver` did not get: sum it over the
    /// members of a room and the messages published in a window to count the deliveries a
    /// fault cost.
    pub fn missing(&self, sender: u32, receiver: u32, seqs: Range<u64>) -> u64 {
        let shard = self.shard(receiver);
        match shard.pairs.get(&Self::key(sender, receiver)) {
            None => seqs.end.saturating_sub(seqs.start),
            Some(pair) => seqs.filter(|&s| !pair.has(s)).count() as u64,
        }
    }

    /// The counts now.
    pub fn counts(&self) -> DeliveryCounts {
        let mut c = DeliveryCounts {
            published: self.published.load(Ordering::Relaxed),
            expected: self.expected.load(Ordering::Relaxed),
            ..DeliveryCounts::default()
        };
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            c.received += shard.received;
            c.duplicates += shard.duplicates;
            c.out_of_order += shard.out_of_order;
            c.rejected += shard.rejected;
        }
        c.lost = c.expected.saturating_sub(c.received);
        c
    }

    /// The report's [`Deliveries`] for a run of `duration_s` seconds.
    pub fn deliveries(&self, duration_s: f64) -> Deliveries {
        let c = self.counts();
        Deliveries {
            expected: c.expected,
            received: c.received,
            duplicates: c.duplicates,
            out_of_order: c.out_of_order,
            lost: c.lost,
            completeness: if c.expected == 0 {
                0.0
            } else {
                c.received as f64 / c.expected as f64
            },
            per_second: if duration_s > 0.0 {
                c.received as f64 / duration_s
            } else {
                0.0
            },
            published: c.published,
            steady_sessions: 0,
            steady_lost: 0,
        }
    }

    /// Puts [`deliveries`](Self::deliveries) over the report's `duration_s` into `report`
    /// (call it after [`Recorder::fill_report`]), with a warning if deliveries were rejected.
    pub fn fill_report(&self, report: &mut Report) {
        let deliveries = self.deliveries(report.duration_s);
        if deliveries.expected == 0 {
            report.warn(
                "no delivery was expected: nothing was published to a member (were the rooms \
                 joined? does the server speak the bench protocol on this namespace?)",
            );
        }
        let rejected = self.counts().rejected;
        if rejected > 0 {
            report.warn(format!(
                "{rejected} deliveries carried a sequence number far beyond the ones expected \
                 and were ignored: a sender numbers its messages wrongly"
            ));
        }
        report.deliveries = Some(deliveries);
    }

    /// (Sender, receiver) pairs seen.
    pub fn pairs(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).pairs.len()).sum()
    }

    /// Approximate heap use of the bitmaps and their map, bytes.
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = lock(&s.0);
                shard.pairs.capacity() * (8 + std::mem::size_of::<PairLog>())
                    + shard.pairs.values().map(PairLog::bytes).sum::<usize>()
            })
            .sum()
    }

    /// Forgets one pair (a receiver that left the room) to free its bitmap, keeping the
    /// counts; [`missing`](Self::missing) then counts all its messages as missing.
    pub fn forget(&self, sender: u32, receiver: u32) {
        if let Entry::Occupied(e) = self
            .shard(receiver)
            .pairs
            .entry(Self::key(sender, receiver))
        {
            e.remove();
        }
    }
}

/// The CPU time this process has used (user + system, every thread), from `/proc/self/stat`.
/// `None` where there is no procfs (not Linux).
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_proc_stat_cpu(&stat)
}

/// A `/proc` file opened once and read afresh on every [`read`](Self::read): a run with as
/// many sessions as the process may open files can still read it at the end.
#[derive(Debug)]
pub struct ProcFile(std::fs::File);

impl ProcFile {
    /// Opens `path` (e.g. `/proc/self/stat`, `/proc/1234/status`).
    pub fn open(path: &str) -> std::io::Result<ProcFile> {
        std::fs::File::open(path).map(ProcFile)
    }

    /// The file's current contents.
    pub fn read(&self) -> std::io::Result<String> {
        use std::os::unix::fs::FileExt as _;
        let mut out = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        loop {
            let n = self.0.read_at(&mut buf, out.len() as u64)?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out).map_err(std::io::Error::other)
    }
}

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`): 100 on every mainstream Linux
/// architecture (it is part of the ABI, whatever the kernel's own `HZ`).
const USER_HZ: u64 = 100;

/// `utime + stime` of a `/proc/PID/stat` line.
fn parse_proc_stat_cpu(stat: &str) -> Option<Duration> {
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so fields count from
    // the last ')'; utime and stime are fields 14 and 15 (1-based), the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Above this share of all cores (percent) the tester counts as saturated.
pub const SATURATED_CPU_PERCENT: f64 = 85.0;

/// The tester's load for `cpu` time used over `wall` time on `cores` cores.
pub fn tester_load(cpu: Duration, wall: Duration, cores: u32) -> TesterLoad {
    let available = wall.as_secs_f64() * f64::from(cores.max(1));
    let cpu_percent = if available > 0.0 {
        (cpu.as_secs_f64() / available * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    TesterLoad {
        cpu_percent,
        cores,
        saturated: cpu_percent > SATURATED_CPU_PERCENT,
    }
}

/// Measures the process's own CPU over a run, as a share of the cores it may use
/// (`available_parallelism`, which honours affinity masks and cgroup quotas).
#[derive(Debug, Clone)]
pub struct CpuMeter {
    wall: Instant,
    cpu: Option<Duration>,
    cores: u32,
    stat: Option<Arc<ProcFile>>,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start() -> Self {
        let stat = ProcFile::open("/proc/self/stat").ok().map(Arc::new);
        let cpu = stat
            .as_ref()
            .and_then(|s| s.read().ok())
            .and_then(|s| parse_proc_stat_cpu(&s));
        CpuMeter {
            wall: Instant::now(),
            cpu,
            stat,
            cores: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        }
    }

    /// The load since [`start`](Self::start); `None` where the process's CPU time cannot be
    /// read. Put it into the report with [`Report::set_tester_load`], which adds the warning
    /// when the tester was saturated.
    pub fn finish(&self) -> Option<TesterLoad> {
        let now = parse_proc_stat_cpu(&self.stat.as_ref()?.read().ok()?)?;
        let used = now.checked_sub(self.cpu?)?;
        Some(tester_load(used, self.wall.elapsed(), self.cores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_in_milliseconds() {
        let r = Recorder::new();
        for us in 1..=10_000u64 {
            r.record_latency(Duration::from_micros(us));
        }
        let l = r.latency().unwrap();
        assert_eq!(l.count, 10_000);
        assert_eq!(l.min, 0.001);
        assert!((l.p50 - 5.0).abs() < 0.01, "{}", l.p50);
        assert!((l.p99 - 9.9).abs() < 0.01, "{}", l.p99);
        assert!((l.max - 10.0).abs() < 0.01, "{}", l.max);
        assert!((l.mean - 5.0).abs() < 0.01, "{}", l.mean);
        // The distribution runs 0 % … 99.99 % (log10(10 000) = 4) then the maximum.
        assert_eq!(l.distribution.first().unwrap().0, 0.0);
        assert!(l.distribution.iter().any(|&(p, _)| p == 99.0));
        assert!(l.distribution.iter().any(|&(p, _)| p == 99.99));
        assert_eq!(*l.distribution.last().unwrap(), (100.0, l.max));
        assert!(
            l.distribution
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert!(r.connect_latency().is_none());
    }

    #[test]
    fn long_samples_are_clamped_not_lost() {
        let r = Recorder::new();
        r.record_connect(Duration::from_secs(3600));
        let l = r.connect_latency().unwrap();
        assert_eq!(l.count, 1);
        assert!((l.max - 60_000.0).abs() / 60_000.0 < 0.001, "{}", l.max);
    }

    #[test]
    fn records_from_many_threads_all_count() {
        let r = Arc::new(Recorder::new());
        std::thread::scope(|s| {
            for t in 0..8 {
                let r = r.clone();
                s.spawn(move || {
                    let c = r.counter("sent");
                    for i in 0..1000u64 {
                        r.record_latency(Duration::from_micros(100 + i + t));
                        c.incr();
                    }
                    r.record_failure(if t % 2 == 0 { "timeout" } else { "refused" });
                });
            }
        });
        assert_eq!(r.latency().unwrap().count, 8000);
        assert_eq!(r.counters()["sent"], 8000);
        assert_eq!(r.failures()["timeout"], 4);
        assert_eq!(r.failures()["refused"], 4);
        let timeline = r.timeline();
        let total: f64 = timeline.iter().map(|s| s.per_second).sum();
        // All in the first second (scaled if it is still partial): at least the samples.
        assert!(total >= 8000.0, "{total}");
    }

    #[test]
    fn timeline_has_one_sample_per_second_with_its_percentiles() {
        let start = Instant::now() - Duration::from_millis(3300);
        let r = Recorder::starting_at(start);
        r.set_sessions(10);
        for _ in 0..100 {
            r.record_latency_in(Duration::from_millis(1), 0);
        }
        r.record_latency_in(Duration::from_millis(50), 0);
        r.set_sessions(20);
        for _ in 0..10 {
            r.record_latency_in(Duration::from_millis(5), 2);
        }
        r.add_events(7);
        r.tick();
        // tick() closed seconds 0 and 1 (now is second 3); timeline() closes the rest: 0 to 3,
        // and 4 on a machine so slow that a second passed since the start.
        let t = r.timeline();
        assert!(t.len() == 4 || t.len() == 5, "{t:?}");
        assert_eq!(t[0].t_s, 0.0);
        assert_eq!(t[0].sessions, 10);
        assert_eq!(t[0].per_second, 101.0);
        assert!((t[0].p50_ms - 1.0).abs() < 0.02, "{}", t[0].p50_ms);
        assert!((t[0].p99_ms - 1.0).abs() < 0.02, "{}", t[0].p99_ms);
        // Nothing in second 1: no rate, the sessions carried on.
        assert_eq!(t[1].per_second, 0.0);
        assert_eq!(t[1].sessions, 10);
        assert_eq!(t[1].p99_ms, 0.0);
        assert_eq!(t[2].per_second, 10.0);
        assert_eq!(t[2].sessions, 20);
        assert!((t[2].p50_ms - 5.0).abs() < 0.1);
        // Second 3 is partial (~0.3 s): 7 events scaled to a rate.
        assert!(
            t[3..].iter().map(|s| s.per_second).sum::<f64>() >= 7.0,
            "{t:?}"
        );
        // Records into closed seconds still count run-wide.
        r.record_latency_in(Duration::from_millis(1), 0);
        assert_eq!(r.latency().unwrap().count, 112);
        assert_eq!(r.timeline()[0].per_second, 101.0);
    }

    #[test]
    fn fill_report_sets_the_measured_fields() {
        let r = Recorder::new();
        r.record_connect(Duration::from_millis(2));
        r.record_latency(Duration::from_millis(3));
        r.record_failure("refused");
        let mut report = Report::new("echo");
        report.sessions.failed.insert("refused".into(), 1);
        r.fill_report(&mut report);
        assert_eq!(report.connect_ms.as_ref().unwrap().count, 1);
        assert_eq!(report.latency_ms.as_ref().unwrap().count, 1);
        assert_eq!(report.sessions.failed["refused"], 2);
        assert_eq!(report.timeline.len(), 1);
        assert!(report.started_at_ms > 1_600_000_000_000);
        assert!(report.duration_s >= 0.0);
    }

    #[tokio::test]
    async fn ticker_stops_with_the_recorder() {
        let r = Arc::new(Recorder::starting_at(
            Instant::now() - Duration::from_secs(3),
        ));
        r.record_latency_in(Duration::from_millis(1), 0);
        let ticker = r.spawn_ticker();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The first tick ran at once and closed seconds 0 and 1.
        assert_eq!(lock(&r.timeline).samples.len(), 2);
        drop(r);
        tokio::time::timeout(Duration::from_secs(2), ticker)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn tracker_fills_the_report() {
        let t = DeliveryTracker::with_window(64);
        t.published(2);
        t.record(0, 0, 0);
        t.record(0, 1000, 1);
        let mut report = Report::new("chat");
        report.duration_s = 2.0;
        t.fill_report(&mut report);
        let d = report.deliveries.as_ref().unwrap();
        assert_eq!(
            (d.expected, d.received, d.lost, d.per_second),
            (2, 1, 1, 0.5)
        );
        assert_eq!(report.warnings.len(), 1);
        assert!(report.warnings[0].starts_with("1 deliveries carried"));
    }

    #[test]
    fn gauge_never_goes_below_zero() {
        let r = Recorder::new();
        r.session_down();
        assert_eq!(r.sessions(), 0);
        r.session_up();
        r.session_up();
        r.session_down();
        assert_eq!(r.sessions(), 1);
    }

    #[test]
    fn tracker_counts_duplicates_reordering_and_losses_exactly() {
        let t = DeliveryTracker::new();
        // Two senders, a room of three (senders included), 10 messages each.
        for _ in 0..20 {
            t.published(3);
        }
        for sender in 0..2u32 {
            for receiver in 0..3u32 {
                for seq in 0..10u64 {
                    // Receiver 2 loses message 4 of sender 0 and 9 of sender 1.
                    let lost = [(0, 4), (1, 9)].contains(&(sender, seq));
                    if receiver == 2 && lost {
                        continue;
                    }
                    // Receiver 1 gets 6 and 7 of sender 1 swapped: 6 arrives after 7.
                    let seq = match (receiver, sender, seq) {
                        (1, 1, 6) => 7,
                        (1, 1, 7) => 6,
                        _ => seq,
                    };
                    assert!(t.record(sender, seq, receiver).is_first());
                }
            }
        }
        // Duplicates: one copy again in order, one old one, two of the same.
        assert_eq!(t.record(0, 9, 0), Delivery::Duplicate);
        assert_eq!(t.record(0, 0, 1), Delivery::Duplicate);
        assert_eq!(t.record(1, 3, 2), Delivery::Duplicate);
        assert_eq!(t.record(1, 3, 2), Delivery::Duplicate);
        // The lost message 4 of sender 0 arrives late at receiver 2: out of order, not lost.
        assert_eq!(t.record(0, 4, 2), Delivery::OutOfOrder);
        assert_eq!(t.record(0, 4, 2), Delivery::Duplicate);

        let c = t.counts();
        assert_eq!(
            c,
            DeliveryCounts {
                published: 20,
                expected: 60,
                received: 59,
                duplicates: 5,
                out_of_order: 2,
                lost: 1,
                rejected: 0,
            }
        );
        assert!(!t.received(1, 9, 2));
        assert!(t.received(0, 4, 2));
        assert_eq!(t.missing(1, 2, 0..10), 1);
        assert_eq!(t.missing(1, 2, 0..9), 0);
        // A pair never seen misses everything.
        assert_eq!(t.missing(5, 2, 0..10), 10);

        let d = t.deliveries(2.0);
        assert_eq!(d.expected, 60);
        assert_eq!(d.received, 59);
        assert_eq!(d.lost, 1);
        assert_eq!(d.duplicates, 5);
        assert_eq!(d.out_of_order, 2);
        assert_eq!(d.published, 20);
        assert!((d.completeness - 59.0 / 60.0).abs() < 1e-12);
        assert_eq!(d.per_second, 29.5);
    }

    #[test]
    fn tracker_with_nothing_expected_proves_nothing() {
        // A run that delivered nothing must not pass `completeness>=100%`.
        let d = DeliveryTracker::new().deliveries(0.0);
        assert_eq!(d.completeness, 0.0);
        assert_eq!(d.per_second, 0.0);
        assert_eq!(d.lost, 0);
    }

    #[test]
    fn tracker_reordering_across_words() {
        let t = DeliveryTracker::new();
        // 0..200 in reverse: every one but the first is out of order.
        for seq in (0..200u64).rev() {
            t.record(0, seq, 0);
        }
        let c = t.counts();
        assert_eq!((c.received, c.out_of_order, c.duplicates), (200, 199, 0));
        for seq in 0..200u64 {
            assert_eq!(t.record(0, seq, 0), Delivery::Duplicate);
        }
        // All received: the bitmap collapsed to its base.
        assert!(t.received(0, 199, 0));
        assert!(!t.received(0, 200, 0));
    }

    #[test]
    fn tracker_rejects_sequence_numbers_beyond_the_window() {
        let t = DeliveryTracker::with_window(1024);
        assert_eq!(t.record(0, 1023, 0), Delivery::New);
        assert_eq!(t.record(0, 1 << 40, 0), Delivery::Rejected);
        assert_eq!(t.counts().rejected, 1);
        assert_eq!(t.counts().received, 1);
        assert!(t.memory_bytes() < 4096, "{}", t.memory_bytes());
    }

    #[test]
    fn tracker_memory_stays_small_in_order_and_bounded_with_gaps() {
        // 20 senders × 2 000 messages × 10 receivers, in order: a word or two per pair.
        let t = DeliveryTracker::new();
        for seq in 0..2000u64 {
            for sender in 0..20u32 {
                for receiver in 0..10u32 {
                    t.record(sender, seq, receiver);
                }
            }
        }
        assert_eq!(t.pairs(), 200);
        assert!(t.memory_bytes() < 200 * 200, "{}", t.memory_bytes());
        // The first message of every pair lost: the bitmaps keep one bit per message.
        let t = DeliveryTracker::new();
        for seq in 1..2000u64 {
            for sender in 0..20u32 {
                for receiver in 0..10u32 {
                    t.record(sender, seq, receiver);
                }
            }
        }
        assert!(
            t.memory_bytes() < 200 * (2000 / 8 + 200),
            "{}",
            t.memory_bytes()
        );
        assert_eq!(t.counts().out_of_order, 0);
    }

    #[test]
    fn tracker_from_many_threads() {
        let t = Arc::new(DeliveryTracker::new());
        std::thread::scope(|s| {
            for receiver in 0..8u32 {
                let t = t.clone();
                s.spawn(move || {
                    for sender in 0..10u32 {
                        for seq in 0..500u64 {
                            t.record(sender, seq, receiver);
                            if seq % 100 == 0 {
                                t.record(sender, seq, receiver);
                            }
                        }
                    }
                });
            }
        });
        let c = t.counts();
        assert_eq!(c.received, 8 * 10 * 500);
        assert_eq!(c.duplicates, 8 * 10 * 5);
        assert_eq!(c.out_of_order, 0);
    }

    /// The size the brief asks for: `cargo test -p corral-loadtest --release -- --ignored
    /// tracker_at_scale --nocapture`.
    #[test]
    #[ignore = "a measurement: run in release"]
    fn tracker_at_scale() {
        let t = Arc::new(DeliveryTracker::new());
        let started = Instant::now();
        std::thread::scope(|s| {
            for part in 0..2u32 {
                let t = t.clone();
                s.spawn(move || {
                    for seq in 0..10_000u64 {
                        for sender in 0..200u32 {
                            for receiver in (part * 25)..(part * 25 + 25) {
                                t.record(sender, seq, receiver);
                            }
                        }
                    }
                });
            }
        });
        let took = started.elapsed();
        let c = t.counts();
        assert_eq!(c.received, 200 * 10_000 * 50);
        println!(
            "{} deliveries in {took:?} ({:.0} ns each on 2 threads), {} pairs, {} KiB",
            c.received,
            took.as_nanos() as f64 / c.received as f64,
            t.pairs(),
            t.memory_bytes() / 1024
        );
    }

    /// `cargo test -p corral-loadtest --release -- --ignored recorder_at_scale --nocapture`
    #[test]
    #[ignore = "a measurement: run in release"]
    fn recorder_at_scale() {
        let r = Arc::new(Recorder::new());
        let started = Instant::now();
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let r = r.clone();
                s.spawn(move || {
                    for i in 0..10_000_000u64 {
                        r.record_latency(Duration::from_micros(100 + (i * 7 + t) % 50_000));
                    }
                });
            }
        });
        let took = started.elapsed();
        let n = r.latency().unwrap().count;
        assert_eq!(n, 20_000_000);
        println!(
            "{n} latency samples in {took:?} ({:.0} ns each on 2 threads)",
            took.as_nanos() as f64 / n as f64
        );
    }

    #[test]
    fn proc_stat_parsing() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 \
                    100 1000000 200 18446744073709551615";
        assert_eq!(parse_proc_stat_cpu(line), Some(Duration::from_secs(3)));
        assert_eq!(parse_proc_stat_cpu("garbage"), None);
        if cfg!(target_os = "linux") {
            assert!(process_cpu_time().is_some());
        }
    }

    #[test]
    fn tester_load_share_and_saturation() {
        let l = tester_load(Duration::from_secs(9), Duration::from_secs(10), 2);
        assert_eq!((l.cpu_percent, l.cores, l.saturated), (45.0, 2, false));
        let l = tester_load(Duration::from_secs(18), Duration::from_secs(10), 2);
        assert_eq!((l.cpu_percent, l.saturated), (90.0, true));
        let l = tester_load(Duration::from_secs(1), Duration::ZERO, 2);
        assert_eq!(l.cpu_percent, 0.0);
    }

    #[test]
    fn cpu_meter_sees_a_busy_loop() {
        let meter = CpuMeter::start();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        if let Some(load) = meter.finish() {
            assert!(load.cores >= 1);
            // One thread busy for the whole time: about 100 % / cores (ticks are 10 ms, and
            // other tests run alongside).
            assert!(load.cpu_percent * f64::from(load.cores) > 10.0, "{load:?}");
        }
    }
}
