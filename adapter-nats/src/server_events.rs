//! Server-to-server events: what Socket.IO calls `serverSideEmit`, which socketioxide lacks.
//! A node sends an event to every other node, and may collect their answers within a timeout;
//! nodes that do not answer in time are reported, not hidden.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use socketioxide_core::{Sid, Uid};

use crate::{
    cluster::{Cluster, ClusterError, Inner, decode_response},
    driver::Driver,
    metrics::MessageKind,
};

/// An event from another node.
#[derive(Debug, Clone)]
pub struct ServerEvent {
    /// The sending node's server id.
    pub from: Uid,
    /// The sending node's id.
    pub from_node: String,
    /// The event name.
    pub event: String,
    /// Its data.
    pub data: serde_json::Value,
}

/// The answers to [`Cluster::ask_servers`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServerAnswers {
    /// `(node id, answer)` of every node that answered, in node-id order.
    pub answers: Vec<(String, serde_json::Value)>,
    /// Node ids of live nodes that did not answer in time.
    pub missing: Vec<String>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(ServerEvent) -> BoxFuture<Option<serde_json::Value>> + Send + Sync>;

/// Registered handlers, by event name.
#[derive(Default)]
pub(crate) struct ServerEventHandlers(RwLock<HashMap<String, Handler>>);

#[derive(Serialize, Deserialize)]
struct EventWire {
    version: u8,
    origin: Uid,
    origin_node: String,
    /// Set when the sender waits for answers.
    reply_to: Option<Sid>,
    event: String,
    /// JSON text: MessagePack cannot tell every JSON value apart on the way back.
    data: String,
}

#[derive(Serialize, Deserialize)]
struct ReplyWire {
    node: Uid,
    data: String,
}

impl<D: Driver> Cluster<D> {
    /// Handles `event` from other nodes; what `handler` returns is the answer to a sender that
    /// asked for one (`None` means no answer).
    pub fn on_server_event<F, Fut>(&self, event: impl Into<String>, handler: F)
    where
        F: Fn(ServerEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<serde_json::Value>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |e| Box::pin(handler(e)));
        self.inner
            .server_events
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(event.into(), handler);
    }

    /// Sends `event` with `data` to every other node, without waiting for answers.
    pub async fn emit_to_servers(
        &self,
        event: &str,
        data: &impl Serialize,
    ) -> Result<(), ClusterError> {
        self.send_event(event, data, None).await
    }

    /// Sends `event` to every other node and collects their answers for at most `timeout`.
    pub async fn ask_servers(
        &self,
        event: &str,
        data: &impl Serialize,
        timeout: Duration,
    ) -> Result<ServerAnswers, ClusterError> {
        let inner = &self.inner;
        let expected = inner.live_uids();
        let req_id = Sid::new();
        let responses = inner.expect_responses(req_id, expected.len());
        self.send_event(event, data, Some(req_id)).await?;
        let gathered = inner
            .gather("server_event", responses, expected, timeout, |bytes| {
                let reply: ReplyWire = decode_response(&bytes)?;
                let data = serde_json::from_str(&reply.data).ok()?;
                Some((reply.node, data))
            })
            .await;
        let mut answers: Vec<(String, serde_json::Value)> = gathered
            .answers
            .into_iter()
            .map(|(uid, data)| (inner.describe(&[uid]).remove(0), data))
            .collect();
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut missing = inner.describe(&gathered.missing);
        missing.sort();
        Ok(ServerAnswers { answers, missing })
    }

    async fn send_event(
        &self,
        event: &str,
        data: &impl Serialize,
        reply_to: Option<Sid>,
    ) -> Result<(), ClusterError> {
        let inner = &self.inner;
        let wire = EventWire {
            version: 1,
            origin: inner.config.uid,
            origin_node: inner.config.node_id.clone(),
            reply_to,
            event: event.to_owned(),
            data: serde_json::to_string(data).map_err(|e| ClusterError::Bus(Box::new(e)))?,
        };
        let payload = rmp_serde::to_vec(&wire)?;
        inner
            .publish(
                inner.subjects.server_event(),
                payload,
                MessageKind::ServerEvent,
            )
            .await
    }
}

/// Runs the handler of an event that arrived, and sends its answer back if one was asked for.
pub(crate) fn on_event<D: Driver>(inner: &Arc<Inner<D>>, payload: &[u8]) {
    let Ok(wire) = rmp_serde::from_slice::<EventWire>(payload) else {
        inner.metrics.dropped("undecodable");
        return;
    };
    if wire.origin == inner.config.uid {
        return;
    }
    let Ok(data) = serde_json::from_str(&wire.data) else {
        inner.metrics.dropped("undecodable");
        return;
    };
    let handler = inner
        .server_events
        .0
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&wire.event)
        .cloned();
    let Some(handler) = handler else {
        tracing::debug!(event = wire.event, "server event without a handler");
        return;
    };
    let event = ServerEvent {
        from: wire.origin,
        from_node: wire.origin_node,
        event: wire.event,
        data,
    };
    let inner = inner.clone();
    tokio::spawn(async move {
        let answer = handler(event).await;
        if let (Some(req_id), Some(answer)) = (wire.reply_to, answer) {
            let reply = ReplyWire {
                node: inner.config.uid,
                data: answer.to_string(),
            };
            if let Err(err) = inner.send_response(wire.origin, req_id, &reply).await {
                tracing::warn!(%err, "could not answer a server event");
            }
        }
    });
}
