//! `chat` and `broadcast`: sessions join rooms and publish into them.
//!
//! **What is expected.** A message is owed to the members of its room at the moment it was
//! sent, as the tester knows them: a session counts as a member from the moment its `join`
//! ack arrived until it is noticed gone. Joining, leaving and sending take the room's lock,
//! and every message carries its send time, so a receiver counts exactly the messages that
//! were sent while it was a member — the same ones the sender counted as expected. Messages
//! sent to a member whose server died before the tester noticed are expected and lost: that
//! is what the fault cost.
//!
//! **Latency.** chat: from the message's due time on the open-loop schedule to its arrival,
//! per delivery. broadcast: from the due time to the arrival at the *last* member of the room.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::client::{Args, Incoming, Session};
use crate::settings::Scenario;

use super::{Role, Run, WireIn, WireOut, live, lock, publish_loop};

/// How long a `join` may take to be acked.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Not a member (a `joined_at` value).
const NOT_JOINED: u64 = u64::MAX;

/// One room and the members the tester knows of.
pub(super) struct Room {
    name: String,
    members: Mutex<u64>,
}

impl Room {
    pub(super) fn new(i: u64) -> Room {
        Room {
            name: format!("loadtest-{i}"),
            members: Mutex::new(0),
        }
    }
}

/// Per slot, what the steady-session accounting needs: when the slot first joined its room and
/// how many messages it published (sequence numbers `0..published`).
pub(super) struct SlotLedger {
    first_joined: Box<[AtomicU64]>,
    published: Box<[AtomicU64]>,
}

impl SlotLedger {
    pub(super) fn new(slots: usize) -> SlotLedger {
        SlotLedger {
            first_joined: (0..slots).map(|_| AtomicU64::new(NOT_JOINED)).collect(),
            published: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn joined(&self, slot: u32, at_micros: u64) {
        if let Some(first) = self.first_joined.get(slot as usize) {
            first.fetch_min(at_micros, Ordering::Relaxed);
        }
    }

    fn published(&self, slot: u32, seq: u64) {
        if let Some(n) = self.published.get(slot as usize) {
            n.fetch_max(seq + 1, Ordering::Relaxed);
        }
    }
}

/// Deliveries between *steady* sessions: those in their room before the measured part began
/// that never lost their connection. Every message a steady member published is owed to every
/// steady member of its room, so what is missing between them is what a fault cost the clients
/// it did not touch. Returns (steady sessions, deliveries lost between them).
pub(super) fn steady_losses(run: &Run) -> (u64, u64) {
    let measured_from = run.micros(run.measure_start());
    let mut lost_slots = vec![false; run.ledger.first_joined.len()];
    for &(_, slot, event) in lock(&run.log).iter() {
        if event == super::SlotEvent::Lost
            && let Some(l) = lost_slots.get_mut(slot as usize)
        {
            *l = true;
        }
    }
    let mut by_room: Vec<Vec<u32>> = vec![Vec::new(); run.rooms.len()];
    for (slot, first) in run.ledger.first_joined.iter().enumerate() {
        if first.load(Ordering::Relaxed) <= measured_from && !lost_slots[slot] {
            by_room[slot % run.rooms.len()].push(slot as u32);
        }
    }
    let sessions = by_room.iter().map(|m| m.len() as u64).sum();
    let mut lost = 0;
    for members in &by_room {
        for &sender in members {
            let sent = run.ledger.published[sender as usize].load(Ordering::Relaxed);
            if sent == 0 {
                continue;
            }
            for &receiver in members {
                lost += run.tracker.missing(sender, receiver, 0..sent);
            }
        }
    }
    (sessions, lost)
}

/// broadcast: each message's members still to receive it and its latest arrival.
#[derive(Default)]
pub(super) struct FanOut {
    pending: Mutex<HashMap<u64, Pending>>,
}

struct Pending {
    remaining: u64,
    due: Instant,
    last: Instant,
}

impl FanOut {
    fn sent(&self, seq: u64, members: u64, due: Instant) {
        if members > 0 {
            lock(&self.pending).insert(
                seq,
                Pending {
                    remaining: members,
                    due,
                    last: due,
                },
            );
        }
    }

    fn unsent(&self, seq: u64) {
        lock(&self.pending).remove(&seq);
    }

    /// One member got message `seq` at `at`; the fan-out latency when it was the last.
    fn arrived(&self, seq: u64, at: Instant) -> Option<Duration> {
        let mut pending = lock(&self.pending);
        let p = pending.get_mut(&seq)?;
        p.last = p.last.max(at);
        p.remaining -= 1;
        if p.remaining > 0 {
            return None;
        }
        let p = pending.remove(&seq)?;
        Some(p.last.saturating_duration_since(p.due))
    }
}

/// A slot in a room.
struct Member {
    slot: u32,
    room: usize,
    /// When the current session's `join` was acked, µs since the start; [`NOT_JOINED`].
    joined_at: AtomicU64,
    /// The next sequence number (kept across reconnects).
    seq: AtomicU64,
    publishes: bool,
}

/// The life of a room member.
pub(super) async fn member(run: Arc<Run>, slot: u32) {
    let member = Member {
        slot,
        room: slot as usize % run.rooms.len(),
        joined_at: AtomicU64::new(NOT_JOINED),
        seq: AtomicU64::new(0),
        // broadcast: slot 0 publishes, the others listen.
        publishes: run.settings.scenario == Scenario::Chat || slot == 0,
    };
    live(run, slot, Arc::new(member)).await;
}

impl Role for Member {
    fn incoming(&self, run: &Run, incoming: Incoming) {
        if let Incoming::Event {
            event,
            args,
            received_at,
            ..
        } = incoming
            && event.as_str() == "message"
        {
            self.deliver(run, &args, received_at);
        }
    }

    async fn setup(&self, run: &Arc<Run>, session: &Session) -> Result<(), &'static str> {
        let room = &run.rooms[self.room];
        let ack = session
            .emit_with_ack("join", room.name.as_str(), JOIN_TIMEOUT)
            .await
            .map_err(|_| "join_timeout")?;
        let answer = ack.args.decode::<serde_json::Value>().unwrap_or_default();
        if answer.get("error").is_some() {
            return Err("join_refused");
        }
        let mut members = lock(&room.members);
        let now = run.micros(Instant::now());
        self.joined_at.store(now, Ordering::Release);
        run.ledger.joined(self.slot, now);
        *members += 1;
        Ok(())
    }

    async fn active(&self, run: &Arc<Run>, session: &Session) {
        if !self.publishes {
            return;
        }
        let room = &run.rooms[self.room];
        publish_loop(run, self.slot, session, |due| {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let members = lock(&room.members);
            let sent = run.micros(Instant::now());
            let wire = WireOut {
                s: self.slot,
                q: seq,
                t: run.micros(due),
                a: sent,
                p: &run.padding,
            };
            if run.settings.scenario == Scenario::Broadcast {
                run.fanout.sent(seq, *members, due);
            }
            if session
                .emit("publish", &(room.name.as_str(), &wire))
                .is_err()
            {
                run.fanout.unsent(seq);
                return false;
            }
            run.tracker.published(*members);
            run.ledger.published(self.slot, seq);
            run.by_second.expect(sent, *members);
            true
        })
        .await;
    }

    fn ended(&self, run: &Run) {
        let mut members = lock(&run.rooms[self.room].members);
        if self.joined_at.swap(NOT_JOINED, Ordering::AcqRel) != NOT_JOINED {
            *members -= 1;
        }
    }
}

impl Member {
    fn deliver(&self, run: &Run, args: &Args, at: Instant) {
        let Ok((room, wire)) = args.decode::<(String, WireIn)>() else {
            run.warn("a `message` event did not carry (room, message): ignored".into());
            return;
        };
        if room != run.rooms[self.room].name {
            run.warn(format!(
                "a member of {} received a message for {room}: ignored",
                run.rooms[self.room].name
            ));
            return;
        }
        // Sent before this session was a member: neither expected nor counted.
        if wire.a < self.joined_at.load(Ordering::Acquire) {
            return;
        }
        if !run.tracker.record(wire.s, wire.q, self.slot).is_first() {
            return;
        }
        run.by_second.receive(wire.a);
        match run.settings.scenario {
            Scenario::Broadcast => {
                if let Some(latency) = run.fanout.arrived(wire.q, at) {
                    run.recorder.record_latency(latency);
                }
            }
            _ => run
                .recorder
                .record_latency(at.saturating_duration_since(run.instant(wire.t))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_latency_is_the_last_arrival() {
        let f = FanOut::default();
        let due = Instant::now();
        f.sent(7, 3, due);
        f.sent(8, 0, due);
        assert_eq!(f.arrived(7, due + Duration::from_millis(5)), None);
        assert_eq!(f.arrived(7, due + Duration::from_millis(9)), None);
        assert_eq!(
            f.arrived(7, due + Duration::from_millis(2)),
            Some(Duration::from_millis(9))
        );
        assert_eq!(f.arrived(7, due), None, "complete messages are forgotten");
        assert_eq!(f.arrived(8, due), None, "nobody was owed message 8");
    }
}
