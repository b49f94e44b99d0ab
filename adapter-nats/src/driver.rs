//! The [`Driver`]: the little a message bus must do for a Corral cluster.
//!
//! All cluster logic (requests, responses, acks, membership, server events) is written once
//! over this trait; a bus only publishes bytes to a subject and delivers what matches a
//! subscription. Subjects follow NATS rules (`.`-separated tokens, `*` for one token and `>` for
//! the rest), see [`crate::subjects`]. Drivers here: [`NatsDriver`](crate::NatsDriver) and
//! [`MemoryDriver`](crate::MemoryDriver); `docs/custom-adapter.md` shows how to write one.

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use futures_util::{Stream, stream::BoxStream};
use tokio::sync::watch;

/// One message received from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// The subject it was published to (not the subscription pattern).
    pub subject: String,
    /// Its bytes.
    pub payload: Bytes,
    /// Headers it carried: the W3C trace context (`traceparent`, `tracestate`) of the span
    /// that published it, so the receiving node's work joins the same trace. Empty when the
    /// bus has no headers or tracing is off.
    pub headers: crate::trace::Headers,
}

impl BusMessage {
    /// A message without headers.
    pub fn new(subject: String, payload: Bytes) -> BusMessage {
        BusMessage {
            subject,
            payload,
            headers: Vec::new(),
        }
    }
}

/// Whether the bus is reachable right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusStatus {
    /// Publishing and receiving work.
    Connected,
    /// The bus is unreachable; the driver reconnects in the background.
    Disconnected,
}

/// The messages of one subscription; dropping it ends the subscription.
pub type Subscription = BoxStream<'static, BusMessage>;

/// A publish/subscribe bus a cluster can run on.
///
/// Implementations must:
/// - be cheap to clone (clones share one connection);
/// - not deliver a connection's own publishes back to it (NATS `no_echo`);
/// - keep the order of one publisher's messages within one subscription, whatever their
///   subjects (a node's requests to one node and to all arrive on one wildcard subscription
///   and must not overtake each other);
/// - accept subscriptions while the bus is down and keep every subscription stream open
///   across reconnects (the cluster subscribes once, at start; a stream that ends is gone);
/// - never block `publish` for long while the bus is down: return an error instead, the node
///   keeps serving its local clients meanwhile.
pub trait Driver: Clone + Send + Sync + 'static {
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sends `payload` to everyone subscribed to a pattern matching `subject`.
    fn publish(
        &self,
        subject: String,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// [`publish`](Self::publish) with headers to deliver along (the trace context; see
    /// [`BusMessage::headers`]). `headers` is empty when tracing is off. Buses without headers
    /// keep the default, which drops them: traces then stop at the bus, nothing else changes.
    fn publish_with_headers(
        &self,
        subject: String,
        headers: crate::trace::Headers,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = headers;
        self.publish(subject, payload)
    }

    /// Receives every message whose subject matches `pattern`, until the stream is dropped.
    fn subscribe(
        &self,
        pattern: String,
    ) -> impl Future<Output = Result<Subscription, Self::Error>> + Send;

    /// The largest payload the bus accepts, in bytes.
    fn max_payload(&self) -> usize;

    /// The connection state, as it changes.
    fn status(&self) -> watch::Receiver<BusStatus>;

    /// Waits until what was published so far has left this process (for short-lived
    /// publishers such as `corral emit`). Drivers that publish synchronously need not override it.
    fn flush(&self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        std::future::ready(Ok(()))
    }
}

/// An error of a driver whose type was erased (see [`DynDriver`]).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`Driver`], so a node can take any driver at run time.
trait ErasedDriver: Send + Sync {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BoxError>>;
    fn publish_with_headers(
        &self,
        subject: String,
        headers: crate::trace::Headers,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<(), BoxError>>;
    fn subscribe(&self, pattern: String) -> BoxFuture<'_, Result<Subscription, BoxError>>;
    fn max_payload(&self) -> usize;
    fn status(&self) -> watch::Receiver<BusStatus>;
    fn flush(&self) -> BoxFuture<'_, Result<(), BoxError>>;
}

impl<D: Driver> ErasedDriver for D {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            Driver::publish(self, subject, payload)
                .await
                .map_err(Into::into)
        })
    }
    fn publish_with_headers(
        &self,
        subject: String,
        headers: crate::trace::Headers,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            Driver::publish_with_headers(self, subject, headers, payload)
                .await
                .map_err(Into::into)
        })
    }
    fn subscribe(&self, pattern: String) -> BoxFuture<'_, Result<Subscription, BoxError>> {
        Box::pin(async move { Driver::subscribe(self, pattern).await.map_err(Into::into) })
    }
    fn max_payload(&self) -> usize {
        Driver::max_payload(self)
    }
    fn status(&self) -> watch::Receiver<BusStatus> {
        Driver::status(self)
    }
    fn flush(&self) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move { Driver::flush(self).await.map_err(Into::into) })
    }
}

/// Any [`Driver`], behind one type: what `corral node` uses, so the bus is chosen by a flag.
#[derive(Clone)]
pub struct DynDriver(Arc<dyn ErasedDriver>);

impl std::fmt::Debug for DynDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynDriver(..)")
    }
}

impl DynDriver {
    /// Erases the type of `driver`.
    pub fn new(driver: impl Driver) -> DynDriver {
        DynDriver(Arc::new(driver))
    }
}

/// The error of a [`DynDriver`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DynDriverError(#[from] pub BoxError);

impl Driver for DynDriver {
    type Error = DynDriverError;

    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), Self::Error> {
        self.0
            .publish(subject, payload)
            .await
            .map_err(DynDriverError)
    }

    async fn publish_with_headers(
        &self,
        subject: String,
        headers: crate::trace::Headers,
        payload: Bytes,
    ) -> Result<(), Self::Error> {
        self.0
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(DynDriverError)
    }

    async fn subscribe(&self, pattern: String) -> Result<Subscription, Self::Error> {
        self.0.subscribe(pattern).await.map_err(DynDriverError)
    }

    fn max_payload(&self) -> usize {
        self.0.max_payload()
    }

    fn status(&self) -> watch::Receiver<BusStatus> {
        self.0.status()
    }

    async fn flush(&self) -> Result<(), Self::Error> {
        self.0.flush().await.map_err(DynDriverError)
    }
}

/// Boxes any stream of messages into a [`Subscription`].
pub fn subscription(stream: impl Stream<Item = BusMessage> + Send + 'static) -> Subscription {
    Box::pin(stream)
}
