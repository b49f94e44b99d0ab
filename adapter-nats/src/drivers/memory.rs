//! A bus inside one process: several nodes (each with its own [`MemoryDriver`] on one shared
//! [`MemoryBus`]) form a cluster without any broker. Tests use it, and so does a single node
//! that needs no cluster.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::{
    driver::{BusMessage, BusStatus, Driver, Subscription, subscription},
    subjects::subject_matches,
};

/// Default largest payload, as NATS's default.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// How many messages may wait in one subscription before the publisher waits.
const SUBSCRIPTION_BUFFER: usize = 4096;

struct Subscriber {
    pattern: String,
    connection: u64,
    tx: mpsc::Sender<BusMessage>,
}

/// The shared medium; clone it to hand it to several drivers.
#[derive(Clone, Default)]
pub struct MemoryBus {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
    next_connection: Arc<AtomicU64>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBus(..)")
    }
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }

    /// A new connection to this bus, as one node would have.
    pub fn driver(&self) -> MemoryDriver {
        let (status_tx, status) = watch::channel(BusStatus::Connected);
        MemoryDriver {
            bus: self.clone(),
            connection: self.next_connection.fetch_add(1, Ordering::Relaxed),
            max_payload: DEFAULT_MAX_PAYLOAD,
            // Kept alive: a watch whose sender is gone reports a change at every wait.
            _status_tx: Arc::new(status_tx),
            status,
        }
    }
}

/// One connection to a [`MemoryBus`].
#[derive(Clone)]
pub struct MemoryDriver {
    bus: MemoryBus,
    connection: u64,
    max_payload: usize,
    _status_tx: Arc<watch::Sender<BusStatus>>,
    status: watch::Receiver<BusStatus>,
}

impl std::fmt::Debug for MemoryDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryDriver({})", self.connection)
    }
}

impl MemoryDriver {
    /// The same connection with another payload limit (to test limits).
    pub fn with_max_payload(mut self, max_payload: usize) -> MemoryDriver {
        self.max_payload = max_payload;
        self
    }
}

/// A publish over the limit of a [`MemoryDriver`].
#[derive(Debug, thiserror::Error)]
#[error("message of {size} bytes is over the bus limit of {max} bytes")]
pub struct MemoryError {
    size: usize,
    max: usize,
}

impl Driver for MemoryDriver {
    type Error = MemoryError;

    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), MemoryError> {
        self.publish_with_headers(subject, Vec::new(), payload)
            .await
    }

    async fn publish_with_headers(
        &self,
        subject: String,
        headers: crate::trace::Headers,
        payload: Bytes,
    ) -> Result<(), MemoryError> {
        if payload.len() > self.max_payload {
            return Err(MemoryError {
                size: payload.len(),
                max: self.max_payload,
            });
        }
        let targets: Vec<mpsc::Sender<BusMessage>> = {
            let mut subscribers = self
                .bus
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            subscribers.retain(|s| !s.tx.is_closed());
            subscribers
                .iter()
                .filter(|s| {
                    s.connection != self.connection && subject_matches(&s.pattern, &subject)
                })
                .map(|s| s.tx.clone())
                .collect()
        };
        for tx in targets {
            let message = BusMessage {
                subject: subject.clone(),
                payload: payload.clone(),
                headers: headers.clone(),
            };
            // A subscription dropped meanwhile is simply gone.
            let _ = tx.send(message).await;
        }
        Ok(())
    }

    async fn subscribe(&self, pattern: String) -> Result<Subscription, MemoryError> {
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
        self.bus
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                pattern,
                connection: self.connection,
                tx,
            });
        Ok(subscription(tokio_stream(rx)))
    }

    fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn status(&self) -> watch::Receiver<BusStatus> {
        self.status.clone()
    }
}

fn tokio_stream(
    mut rx: mpsc::Receiver<BusMessage>,
) -> impl futures_util::Stream<Item = BusMessage> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn delivers_to_matching_subscriptions_of_other_connections_only() {
        let bus = MemoryBus::new();
        let (a, b) = (bus.driver(), bus.driver());
        let mut on_b = b.subscribe("x.*".into()).await.unwrap();
        let mut on_a = a.subscribe("x.*".into()).await.unwrap();
        a.publish("x.1".into(), Bytes::from_static(b"hi"))
            .await
            .unwrap();
        a.publish("y.1".into(), Bytes::from_static(b"no"))
            .await
            .unwrap();
        b.publish("x.2".into(), Bytes::from_static(b"back"))
            .await
            .unwrap();
        assert_eq!(on_b.next().await.unwrap().payload, "hi");
        assert_eq!(on_a.next().await.unwrap().subject, "x.2");
    }

    #[tokio::test]
    async fn oversized_publishes_are_refused() {
        let bus = MemoryBus::new();
        let a = bus.driver().with_max_payload(4);
        let err = a
            .publish("x".into(), Bytes::from_static(b"12345"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("over the bus limit of 4 bytes"),
            "{err}"
        );
    }
}
