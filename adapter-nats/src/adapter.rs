//! [`ClusterAdapter`]: socketioxide's `CoreAdapter` over a [`Cluster`]. Every operation runs on
//! the local sockets through socketioxide's `CoreLocalAdapter` and, unless it is local-only,
//! is published as a request so every other node runs it on its sockets too; operations that
//! return data gather the answers of the live nodes.

use std::{
    future::{self, Future, Ready},
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{future::Either, stream};
use socketioxide_core::{
    Sid, Uid,
    adapter::{
        BroadcastOptions, CoreAdapter, CoreLocalAdapter, DefinedAdapter, RemoteSocketData, Room,
        RoomParam, SocketEmitter, Spawnable,
        errors::{AdapterError, BroadcastError, SocketError},
        remote_packet::{RequestIn, RequestOut, RequestTypeIn, RequestTypeOut, Response},
        request::RemoteRequestHandler,
        stream::AckStream,
    },
    packet::Packet,
};

use crate::{
    cluster::{Cluster, ClusterError, HandedOver, NamespaceHandler, decode_response},
    driver::Driver,
};

/// Ack answers that may wait for the reader of one broadcast with acks.
const ACK_QUEUE: usize = 65_536;

/// A socketioxide adapter that shares a namespace across the nodes of a [`Cluster`].
pub struct ClusterAdapter<E, D: Driver> {
    local: CoreLocalAdapter<E>,
    cluster: Cluster<D>,
    path: String,
    uid: Uid,
}

impl<E, D: Driver> DefinedAdapter for ClusterAdapter<E, D> {}

/// The remote half of a broadcast with acks: the answers routed to this request.
type RemoteAcks =
    stream::PollFn<Box<dyn FnMut(&mut Context<'_>) -> Poll<Option<bytes::Bytes>> + Send>>;

/// Initialisation of a namespace's adapter: immediate, the cluster is already running.
#[must_use = "spawn or await it"]
pub struct ClusterInit(Ready<Result<(), ClusterError>>);

impl Future for ClusterInit {
    type Output = Result<(), ClusterError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl Spawnable for ClusterInit {
    fn spawn(self) {}
}

impl<E: SocketEmitter, D: Driver> ClusterAdapter<E, D> {
    fn is_local(&self, opts: &BroadcastOptions) -> bool {
        opts.is_local(self.uid)
    }

    /// Hands a broadcast of this node to its own sockets, measured.
    fn local_broadcast(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
    ) -> Result<(), Vec<SocketError>> {
        let metrics = &self.cluster.inner.metrics;
        if !opts.rooms.is_empty() && metrics.sample_fanout() {
            metrics.fanout(self.local.sockets(opts.clone()).len());
        }
        let started = std::time::Instant::now();
        let sent = self.local.broadcast(packet, opts);
        metrics.broadcast(false, started.elapsed());
        sent
    }

    async fn send(&self, req: RequestOut<'_>, target: Option<Uid>) -> Result<(), ClusterError> {
        self.cluster
            .inner
            .send_request(&self.path, &req, target)
            .await
    }

    /// Adds the matching sockets to `rooms` (or removes them), on every node.
    async fn move_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: Vec<Room>,
        join: bool,
    ) -> Result<(), ClusterError> {
        if !self.is_local(&opts) {
            let kind = if join {
                RequestTypeOut::AddSockets(&rooms)
            } else {
                RequestTypeOut::DelSockets(&rooms)
            };
            let req = RequestOut::new(self.uid, kind, &opts);
            self.send(req, opts.server_id).await?;
        }
        if join {
            self.local.add_sockets(opts, rooms);
        } else {
            self.local.del_sockets(opts, rooms);
        }
        Ok(())
    }

    /// The nodes a request must hear from: the one it targets, or every live node.
    fn expected(&self, target: Option<Uid>) -> Vec<Uid> {
        match target {
            Some(uid) => vec![uid],
            None => self.cluster.inner.live_uids(),
        }
    }

    /// Sends a request that returns data and gathers the answers of the live nodes.
    async fn ask<R: serde::de::DeserializeOwned, T>(
        &self,
        kind: &'static str,
        req: RequestOut<'_>,
        opts_target: Option<Uid>,
        unwrap: fn(Response<R>) -> Option<Vec<T>>,
    ) -> Result<Vec<T>, ClusterError> {
        let inner = &self.cluster.inner;
        let expected = self.expected(opts_target);
        if expected.is_empty() {
            // Nobody else to ask: the local answer is the whole answer, bus or no bus.
            return Ok(Vec::new());
        }
        let responses = inner.expect_responses(req.id, expected.len());
        self.send(req, opts_target).await?;
        let timeout = inner.config.request_timeout;
        let gathered = inner
            .gather(kind, responses, expected, timeout, |bytes| {
                let response: Response<R> = decode_response(&bytes)?;
                let node = response.node_id;
                Some((node, unwrap(response)?))
            })
            .await;
        Ok(gathered
            .answers
            .into_iter()
            .flat_map(|(_, items)| items)
            .collect())
    }
}

impl<E: SocketEmitter, D: Driver> CoreAdapter<E> for ClusterAdapter<E, D> {
    type Error = ClusterError;
    type State = Cluster<D>;
    type AckStream = Either<E::AckStream, AckStream<E, RemoteAcks, bytes::Bytes>>;
    type InitRes = ClusterInit;

    fn new(cluster: &Cluster<D>, local: CoreLocalAdapter<E>) -> Self {
        ClusterAdapter {
            path: local.path().to_string(),
            uid: local.server_id(),
            cluster: cluster.clone(),
            local,
        }
    }

    fn init(self: Arc<Self>, on_success: impl FnOnce() + Send + 'static) -> ClusterInit {
        let weak: Weak<Self> = Arc::downgrade(&self);
        let handler: Weak<dyn NamespaceHandler> = weak;
        self.cluster.inner.register_namespace(&self.path, handler);
        on_success();
        ClusterInit(future::ready(Ok(())))
    }

    async fn close(&self) -> Result<(), ClusterError> {
        self.cluster.inner.unregister_namespace(&self.path);
        Ok(())
    }

    async fn server_count(&self) -> Result<u16, ClusterError> {
        let remote = self.cluster.inner.live_uids().len();
        Ok(u16::try_from(remote + 1).unwrap_or(u16::MAX))
    }

    async fn broadcast(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
    ) -> Result<(), BroadcastError> {
        if self.is_local(&opts) {
            return self
                .local_broadcast(packet, opts)
                .map_err(BroadcastError::from);
        }
        // Encode the request before the local broadcast consumes the packet.
        let req = RequestOut::new(self.uid, RequestTypeOut::Broadcast(&packet), &opts);
        let remote = self.send(req, opts.server_id).await;
        let local = self.local_broadcast(packet, opts);
        // Local sockets get the packet even when the bus failed; the caller still hears of it.
        remote.map_err(|e| BroadcastError::Adapter(e.into()))?;
        local.map_err(BroadcastError::from)
    }

    async fn broadcast_with_ack(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Option<Duration>,
    ) -> Result<Self::AckStream, ClusterError> {
        if self.is_local(&opts) {
            let (local, _) = self.local.broadcast_with_ack(packet, opts, timeout);
            return Ok(Either::Left(local));
        }
        let inner = &self.cluster.inner;
        let expected = self.expected(opts.server_id);
        if expected.is_empty() {
            let (local, _) = self.local.broadcast_with_ack(packet, opts, timeout);
            return Ok(Either::Left(local));
        }
        let req = RequestOut::new(self.uid, RequestTypeOut::BroadcastWithAck(&packet), &opts)
            .with_ack_timeout(timeout);
        let req_id = req.id;
        let nodes = u16::try_from(expected.len()).unwrap_or(u16::MAX);
        // Each node sends its ack count, then one answer per socket. The queue only allocates
        // as it fills, so a generous bound costs nothing and keeps the router from dropping
        // the acks of a big room.
        let responses = inner.expect_responses(req_id, ACK_QUEUE + expected.len());
        self.send(req, opts.server_id).await?;
        let (local, _) = self.local.broadcast_with_ack(packet, opts, timeout);
        let HandedOver {
            mut rx,
            req_id,
            handlers,
        } = responses.into_parts();
        let remote: RemoteAcks =
            stream::poll_fn(Box::new(move |cx: &mut Context<'_>| match rx.as_mut() {
                Some(rx) => rx.poll_recv(cx),
                None => Poll::Ready(None),
            }));
        // Remote acks may take the ack timeout plus the time for the answers to travel.
        let wait = inner
            .config
            .request_timeout
            .saturating_add(timeout.unwrap_or(self.local.ack_timeout()));
        Ok(Either::Right(AckStream::new(
            local,
            remote,
            decode_ack::<E::AckError>,
            wait,
            nodes,
            req_id,
            handlers,
        )))
    }

    async fn add_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), ClusterError> {
        self.move_sockets(opts, rooms.into_room_iter().collect(), true)
            .await
    }

    async fn del_sockets(
        &self,
        opts: BroadcastOptions,
        rooms: impl RoomParam,
    ) -> Result<(), ClusterError> {
        self.move_sockets(opts, rooms.into_room_iter().collect(), false)
            .await
    }

    async fn disconnect_socket(&self, opts: BroadcastOptions) -> Result<(), BroadcastError> {
        if !self.is_local(&opts) {
            let req = RequestOut::new(self.uid, RequestTypeOut::DisconnectSockets, &opts);
            self.send(req, opts.server_id)
                .await
                .map_err(|e| BroadcastError::Adapter(e.into()))?;
        }
        self.local
            .disconnect_socket(opts)
            .map_err(BroadcastError::Socket)
    }

    async fn rooms(&self, opts: BroadcastOptions) -> Result<Vec<Room>, ClusterError> {
        let mut rooms = self.local.rooms(opts.clone());
        if !self.is_local(&opts) {
            let req = RequestOut::new(self.uid, RequestTypeOut::AllRooms, &opts);
            let remote = self
                .ask("rooms", req, opts.server_id, |r: Response<()>| {
                    r.into_rooms().map(|set| vec![set])
                })
                .await;
            for set in remote? {
                rooms.extend(set);
            }
        }
        Ok(rooms.into_iter().collect())
    }

    async fn fetch_sockets(
        &self,
        opts: BroadcastOptions,
    ) -> Result<Vec<RemoteSocketData>, ClusterError> {
        let mut sockets = self.local.fetch_sockets(opts.clone());
        if !self.is_local(&opts) {
            let req = RequestOut::new(self.uid, RequestTypeOut::FetchSockets, &opts);
            let remote = self
                .ask(
                    "fetch_sockets",
                    req,
                    opts.server_id,
                    Response::into_fetch_sockets,
                )
                .await?;
            sockets.extend(remote);
        }
        Ok(sockets)
    }

    fn get_local(&self) -> &CoreLocalAdapter<E> {
        &self.local
    }
}

/// Decodes one remote ack answer for socketioxide's ack stream.
fn decode_ack<A: serde::de::DeserializeOwned>(
    payload: bytes::Bytes,
) -> Result<Response<A>, Box<dyn std::error::Error + Send>> {
    rmp_serde::from_slice::<(Sid, Response<A>)>(&payload)
        .map(|(_, response)| response)
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send>)
}

impl<E: SocketEmitter, D: Driver> RemoteRequestHandler<E> for ClusterAdapter<E, D> {
    type Error = ClusterError;

    fn local(&self) -> &CoreLocalAdapter<E> {
        &self.local
    }

    fn send_res<T: serde::Serialize + std::fmt::Debug + Send + 'static>(
        &self,
        req_id: Sid,
        req_origin: Uid,
        res: Response<T>,
    ) -> impl Future<Output = Result<(), ClusterError>> + Send + 'static {
        let inner = self.cluster.inner.clone();
        // Encoded now, so the future does not hold the response across an await.
        let payload = inner.encode_response(req_id, &res);
        async move { inner.send_encoded_response(req_origin, payload?).await }
    }
}

impl<E: SocketEmitter, D: Driver> NamespaceHandler for ClusterAdapter<E, D> {
    fn on_request(self: Arc<Self>, req: RequestIn) {
        let broadcast = matches!(
            req.r#type,
            RequestTypeIn::Broadcast(_) | RequestTypeIn::BroadcastWithAck(_)
        );
        let started = std::time::Instant::now();
        RemoteRequestHandler::recv_req(&self, req);
        if broadcast {
            self.cluster
                .inner
                .metrics
                .broadcast(true, started.elapsed());
        }
    }
}

impl From<ClusterError> for BroadcastError {
    fn from(err: ClusterError) -> Self {
        BroadcastError::Adapter(AdapterError::from(err))
    }
}
