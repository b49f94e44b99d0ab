//! [`Emitter`]: publish to the rooms of a cluster from any process (a backend job, a cron, the
//! `corral emit` command) without being a Socket.IO server. The nodes receive an ordinary
//! broadcast request, exactly as if one of them had called `io.to(room).emit(…)`.

use serde::Serialize;
use socketioxide_core::{
    Str, Uid,
    adapter::{
        BroadcastFlags, BroadcastOptions, Room,
        remote_packet::{RequestOut, RequestTypeOut},
    },
    packet::Packet,
    parser::Parse,
};
use socketioxide_parser_common::CommonParser;

use crate::{
    cluster::ClusterError,
    driver::{BusStatus, Driver},
    subjects::Subjects,
};

/// Why an emit failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The data could not be encoded as Socket.IO arguments.
    #[error("encoding the event: {0}")]
    Encode(String),
    /// The namespace is not a Socket.IO namespace path.
    #[error("namespace {0:?} must start with '/'")]
    Namespace(String),
    /// The bus refused the message.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Publishes events to a cluster's rooms.
#[derive(Debug, Clone)]
pub struct Emitter<D: Driver> {
    driver: D,
    subjects: Subjects,
    uid: Uid,
}

/// One emit being built: namespace and rooms.
#[derive(Debug)]
pub struct Emit<'a, D: Driver> {
    emitter: &'a Emitter<D>,
    namespace: String,
    opts: BroadcastOptions,
}

impl<D: Driver> Emitter<D> {
    /// An emitter on `driver` for the cluster under subject `prefix`.
    pub fn new(driver: D, prefix: &str) -> Result<Emitter<D>, ClusterError> {
        Ok(Emitter {
            driver,
            subjects: Subjects::new(prefix)?,
            // Its own id, so no node mistakes the emitter for itself.
            uid: Uid::new(),
        })
    }

    /// Waits until the bus is reachable, at most `timeout`; false if it is not by then.
    pub async fn wait_connected(&self, timeout: std::time::Duration) -> bool {
        let mut status = self.driver.status();
        tokio::time::timeout(timeout, status.wait_for(|s| *s == BusStatus::Connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until every emit so far has left this process.
    pub async fn flush(&self) -> Result<(), ClusterError> {
        self.driver
            .flush()
            .await
            .map_err(|e| ClusterError::Bus(Box::new(e)))
    }

    /// An emit to namespace `namespace` (e.g. `/`).
    pub fn of(&self, namespace: impl Into<String>) -> Emit<'_, D> {
        let mut opts = BroadcastOptions::default();
        // As `io.emit`: every socket (of the rooms, when some are named).
        opts.add_flag(BroadcastFlags::Broadcast);
        Emit {
            emitter: self,
            namespace: namespace.into(),
            opts,
        }
    }
}

impl<D: Driver> Emit<'_, D> {
    /// Restricts the emit to sockets in `room` (several calls: any of the rooms).
    pub fn to(mut self, room: impl Into<String>) -> Self {
        self.opts.rooms.push(Room::Owned(room.into()));
        self
    }

    /// Leaves out sockets in `room`.
    pub fn except(mut self, room: impl Into<String>) -> Self {
        self.opts.except.push(Room::Owned(room.into()));
        self
    }

    /// Sends `event` with `data` (one argument; a tuple sends several).
    pub async fn emit<T: Serialize + ?Sized>(self, event: &str, data: &T) -> Result<(), EmitError> {
        if !self.namespace.starts_with('/') {
            return Err(EmitError::Namespace(self.namespace));
        }
        let value = CommonParser
            .encode_value(data, Some(event))
            .map_err(|e| EmitError::Encode(e.to_string()))?;
        let packet = Packet::event(Str::from(self.namespace.clone()), value);
        let req = RequestOut::new(
            self.emitter.uid,
            RequestTypeOut::Broadcast(&packet),
            &self.opts,
        );
        let payload = rmp_serde::to_vec(&req).map_err(ClusterError::from)?;
        let size = payload.len();
        let max = self.emitter.driver.max_payload();
        if size > max {
            return Err(ClusterError::TooLarge { size, max }.into());
        }
        self.emitter
            .driver
            .publish(
                self.emitter.subjects.broadcast(&self.namespace),
                payload.into(),
            )
            .await
            .map_err(|e| ClusterError::Bus(Box::new(e)))?;
        Ok(())
    }
}
