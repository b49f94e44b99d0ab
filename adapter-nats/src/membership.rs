//! Who is in the cluster: every node announces itself on the heartbeat subject (a hello when
//! it starts or its bus connection comes back, a heartbeat every interval, a goodbye when it
//! stops cleanly); a node not heard from within the timeout is forgotten. Requests wait only
//! for the nodes listed here, and the gateway discovers nodes from the same list.
//!
//! socketioxide-core's `HeartbeatTracker` keeps only server ids; membership here also carries
//! what a router needs (node id, address, ready or draining, connection count) and detects two
//! processes running under the same node id.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use socketioxide_core::{Sid, Uid};

/// Whether a node takes new sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new sessions.
    Ready,
    /// Shutting down: keeps its sessions for now, takes no new ones.
    Draining,
}

/// A member of the cluster, as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The socketioxide server id (derived from the node id).
    pub uid: Uid,
    /// The node id.
    pub node_id: String,
    /// Where clients and gateways reach the node (`host:port`).
    pub address: String,
    /// Ready or draining.
    pub state: NodeState,
    /// Socket.IO sockets connected to the node.
    pub connections: u64,
}

/// What a membership message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Announcement {
    /// A node (re)joined: everyone answers with a heartbeat so it learns the members at once.
    Hello,
    /// A node is still alive.
    Heartbeat,
    /// A node leaves cleanly: forget it now.
    Goodbye,
}

/// The membership message on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    /// Format version, for rolling upgrades.
    pub version: u8,
    /// What happens.
    pub kind: Announcement,
    /// Random per process, so two processes with one node id can be told apart.
    pub instance: u64,
    /// The sender.
    pub node: NodeInfo,
}

/// Current format version of [`Beat`].
pub const BEAT_VERSION: u8 = 1;

struct Member {
    info: NodeInfo,
    instance: u64,
    last_seen: Instant,
}

/// What an incoming beat changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Observed {
    /// A node we did not know.
    Joined,
    /// A known node, still alive.
    Alive,
    /// A node left.
    Left,
    /// Another process claims this node's own id.
    Impostor,
}

/// The live members other than this node.
#[derive(Debug)]
pub struct Membership {
    own_uid: Uid,
    own_instance: u64,
    timeout: Duration,
    /// Keyed by the server id's inner session-id type, which is hashable.
    members: Mutex<HashMap<Sid, Member>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("info", &self.info).finish()
    }
}

impl Membership {
    /// Membership of node `own_uid` (process `own_instance`); members not heard from within
    /// `timeout` are forgotten.
    pub fn new(own_uid: Uid, own_instance: u64, timeout: Duration) -> Membership {
        Membership {
            own_uid,
            own_instance,
            timeout,
            members: Mutex::new(HashMap::new()),
        }
    }

    /// Records a received beat.
    pub fn observe(&self, beat: Beat) -> Observed {
        if beat.node.uid == self.own_uid {
            // NATS does not echo our own messages back, so this is another process.
            return if beat.instance == self.own_instance {
                Observed::Alive
            } else {
                Observed::Impostor
            };
        }
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if beat.kind == Announcement::Goodbye {
            return match members.remove(&*beat.node.uid) {
                Some(_) => Observed::Left,
                None => Observed::Alive,
            };
        }
        let member = Member {
            info: beat.node,
            instance: beat.instance,
            last_seen: Instant::now(),
        };
        let instance = member.instance;
        match members.insert(*member.info.uid, member) {
            // Same process, heard within the timeout: nothing new. A new instance is a restart.
            Some(previous)
                if previous.last_seen.elapsed() <= self.timeout
                    && previous.instance == instance =>
            {
                Observed::Alive
            }
            _ => Observed::Joined,
        }
    }

    /// The live members, in node-id order; forgets the expired ones.
    pub fn live(&self) -> Vec<NodeInfo> {
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|_, m| m.last_seen.elapsed() <= self.timeout);
        let mut live: Vec<NodeInfo> = members.values().map(|m| m.info.clone()).collect();
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        live
    }

    /// The server ids of the live members.
    pub fn live_uids(&self) -> Vec<Uid> {
        self.live().into_iter().map(|n| n.uid).collect()
    }

    /// True when `uid` is a live member.
    pub fn is_alive(&self, uid: Uid) -> bool {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members
            .get(&*uid)
            .is_some_and(|m| m.last_seen.elapsed() <= self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(uid: Uid, kind: Announcement, instance: u64) -> Beat {
        Beat {
            version: BEAT_VERSION,
            kind,
            instance,
            node: NodeInfo {
                uid,
                node_id: format!("n-{uid}"),
                address: "127.0.0.1:1".into(),
                state: NodeState::Ready,
                connections: 0,
            },
        }
    }

    #[test]
    fn members_join_stay_and_leave() {
        let me = Uid::new();
        let m = Membership::new(me, 1, Duration::from_secs(60));
        let other = Uid::new();
        assert_eq!(
            m.observe(beat(other, Announcement::Hello, 7)),
            Observed::Joined
        );
        assert_eq!(
            m.observe(beat(other, Announcement::Heartbeat, 7)),
            Observed::Alive
        );
        assert_eq!(m.live_uids(), vec![other]);
        // Restarted under the same id: a new process joins.
        assert_eq!(
            m.observe(beat(other, Announcement::Hello, 8)),
            Observed::Joined
        );
        assert!(m.is_alive(other));
        assert_eq!(
            m.observe(beat(other, Announcement::Goodbye, 7)),
            Observed::Left
        );
        assert!(m.live().is_empty());
    }

    #[test]
    fn silent_members_expire() {
        let m = Membership::new(Uid::new(), 1, Duration::from_millis(30));
        let other = Uid::new();
        m.observe(beat(other, Announcement::Heartbeat, 7));
        std::thread::sleep(Duration::from_millis(50));
        assert!(m.live().is_empty());
        assert!(!m.is_alive(other));
        assert_eq!(
            m.observe(beat(other, Announcement::Heartbeat, 7)),
            Observed::Joined
        );
    }

    #[test]
    fn a_second_process_with_our_id_is_reported() {
        let me = Uid::new();
        let m = Membership::new(me, 1, Duration::from_secs(60));
        assert_eq!(
            m.observe(beat(me, Announcement::Heartbeat, 2)),
            Observed::Impostor
        );
        assert!(m.live().is_empty());
    }
}

/// Follows a cluster's membership without joining it: what a gateway uses to discover nodes.
/// It only listens to the heartbeat subject, so it never appears in the member list.
#[derive(Clone)]
pub struct MemberWatch {
    membership: std::sync::Arc<Membership>,
}

impl std::fmt::Debug for MemberWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberWatch").finish()
    }
}

impl MemberWatch {
    /// Subscribes to the heartbeats under subject `prefix` on `driver`; members silent for
    /// `timeout` are forgotten. Ends its background task when the last clone is dropped.
    pub async fn start<D: crate::Driver>(
        driver: &D,
        prefix: &str,
        timeout: Duration,
    ) -> Result<MemberWatch, crate::ClusterError> {
        use futures_util::StreamExt;
        let subjects = crate::subjects::Subjects::new(prefix)?;
        let mut beats = driver
            .subscribe(subjects.heartbeat())
            .await
            .map_err(|e| crate::ClusterError::Bus(Box::new(e)))?;
        // A random id of its own: every node is someone else.
        let membership = std::sync::Arc::new(Membership::new(Uid::new(), 0, timeout));
        let weak = std::sync::Arc::downgrade(&membership);
        tokio::spawn(async move {
            while let Some(message) = beats.next().await {
                let Some(membership) = weak.upgrade() else {
                    return;
                };
                if let Ok(beat) = rmp_serde::from_slice::<Beat>(&message.payload) {
                    membership.observe(beat);
                }
            }
        });
        Ok(MemberWatch { membership })
    }

    /// The live members.
    pub fn live(&self) -> Vec<NodeInfo> {
        self.membership.live()
    }
}
