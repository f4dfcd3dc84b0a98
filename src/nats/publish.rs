//! The one way messages reach JetStream: [`Publish`] (JetStream's is [`JetStreamPublisher`])
//! and [`Pipeline`], which keeps a bounded number of acks in flight. The api's single route,
//! its batches and groups, the loader, dead letters and replay all publish through it.

use std::future::Future;
use std::pin::Pin;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

/// A message ready to publish: its subject and its headers and payload.
pub struct Outgoing {
    /// `<stream>.<entity>.<id>` (see [`super::message_subject`]).
    pub subject: String,
    /// Headers, payload and `Nats-Msg-Id`.
    pub message: PublishMessage,
}

/// Why a message was not stored.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct PublishFailure {
    /// async-nats's classification (`MaxPayloadExceeded`, `TimedOut`, …).
    pub kind: PublishErrorKind,
    /// What the client or the server said.
    pub detail: String,
}

impl From<jetstream::context::PublishError> for PublishFailure {
    fn from(e: jetstream::context::PublishError) -> Self {
        Self {
            kind: e.kind(),
            detail: e.to_string(),
        }
    }
}

/// What publishing one message ends with: whether JetStream saw it as a duplicate of one it
/// stored within its window, or why it was not stored.
pub type Acked = Result<bool, PublishFailure>;

/// A boxed future of a publisher (object-safe, so the api holds any publisher).
pub type PublishFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where messages are published.
pub trait Publish: Send + Sync + 'static {
    /// Sends a message (waiting, if the connection allows no more unacknowledged messages, for
    /// room) and returns the future of its ack. The ack future must be polled for the room to
    /// come back.
    fn send(
        &self,
        out: Outgoing,
    ) -> PublishFuture<'_, Result<PublishFuture<'static, Acked>, PublishFailure>>;

    /// The largest message the broker accepts (headers and payload).
    fn max_payload(&self) -> usize;
}

impl dyn Publish {
    /// Publishes a message and waits for its ack.
    pub async fn publish(&self, out: Outgoing) -> Acked {
        self.send(out).await?.await
    }
}

/// Publishing to NATS JetStream.
#[derive(Clone)]
pub struct JetStreamPublisher {
    jetstream: jetstream::Context,
}

impl JetStreamPublisher {
    /// A publisher over a JetStream context.
    pub fn new(jetstream: jetstream::Context) -> Self {
        Self { jetstream }
    }
}

impl Publish for JetStreamPublisher {
    fn send(
        &self,
        out: Outgoing,
    ) -> PublishFuture<'_, Result<PublishFuture<'static, Acked>, PublishFailure>> {
        Box::pin(async move {
            let ack = self
                .jetstream
                .send_publish(out.subject, out.message)
                .await?;
            let acked: PublishFuture<'static, Acked> =
                Box::pin(
                    async move { ack.await.map(|a| a.duplicate).map_err(PublishFailure::from) },
                );
            Ok(acked)
        })
    }

    fn max_payload(&self) -> usize {
        self.jetstream.client().server_info().max_payload
    }
}

/// Pipelined publishing: messages are sent without waiting for each ack, with at most
/// `max_in_flight` acks outstanding; each result comes back with the caller's tag, in the order
/// acks arrive.
pub struct Pipeline<'p, T> {
    publisher: &'p dyn Publish,
    max_in_flight: usize,
    pending: FuturesUnordered<PublishFuture<'static, (T, Acked)>>,
    finished: Vec<(T, Acked)>,
}

impl<'p, T: Send + 'static> Pipeline<'p, T> {
    /// A pipeline over `publisher` with at most `max_in_flight` (at least 1) acks outstanding.
    pub fn new(publisher: &'p dyn Publish, max_in_flight: usize) -> Self {
        Self {
            publisher,
            max_in_flight: max_in_flight.max(1),
            pending: FuturesUnordered::new(),
            finished: Vec::new(),
        }
    }

    /// Acks outstanding.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether [`Pipeline::next`] has nothing to give (no result kept, no ack outstanding).
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.finished.is_empty()
    }

    /// Sends `out`, tagged `tag`, once fewer than `max_in_flight` acks are outstanding. Acks are
    /// taken while it waits: the connection gives room back only as ack futures complete, and
    /// it is shared by every request, so one caller must not sit on its own unpolled acks
    /// while it waits for room.
    pub async fn send(&mut self, tag: T, out: Outgoing) {
        while self.pending.len() >= self.max_in_flight {
            if let Some(done) = self.pending.next().await {
                self.finished.push(done);
            }
        }
        let sending = self.publisher.send(out);
        tokio::pin!(sending);
        let sent = loop {
            tokio::select! {
                biased;
                sent = &mut sending => break sent,
                Some(done) = self.pending.next(), if !self.pending.is_empty() => {
                    self.finished.push(done);
                }
            }
        };
        match sent {
            Ok(ack) => self.pending.push(Box::pin(async move { (tag, ack.await) })),
            Err(e) => self.finished.push((tag, Err(e))),
        }
    }

    /// The next result: one already taken, or the next ack to arrive; `None` when nothing is
    /// outstanding.
    pub async fn next(&mut self) -> Option<(T, Acked)> {
        if let Some(done) = self.finished.pop() {
            return Some(done);
        }
        self.pending.next().await
    }

    /// Waits for every outstanding ack; returns every result not taken yet.
    pub async fn finish(mut self) -> Vec<(T, Acked)> {
        while let Some(done) = self.pending.next().await {
            self.finished.push(done);
        }
        self.finished
    }
}
