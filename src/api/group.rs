//! Group publishing: single messages with fresh ids that arrive while an entity's previous
//! publish awaits its ack go out together as one [`MessageGroup`]. JetStream's costs per
//! message (storing it, indexing its subject, acking it, delivering it, the worker's ack) are
//! then paid once per group; every member is still answered only after JetStream has stored
//! it. A request that arrives when nothing is waiting goes out alone at once, so grouping adds
//! latency only under load, and then at most one publish round trip.

use std::sync::{Arc, OnceLock};

use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use prometheus::Histogram;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::envelope::{MAX_GROUP_MEMBERS, MessageGroup, member_id, new_group_id};
use crate::generated::RootEntity;
use crate::nats::{Outgoing, Publish, PublishFailure, message_subject};

/// Bytes of bodies in one group at most (beyond the first member, which goes out whatever its
/// size and gets the server's own answer): larger groups amortize nothing more.
const MAX_GROUP_BYTES: usize = 1024 * 1024;

/// Room left in the server's `max_payload` for the lengths header (at most 256 lengths).
const HEADER_ROOM: usize = 4096;

/// One request waiting to be published.
struct Member {
    body: Bytes,
    answer: oneshot::Sender<Result<Uuid, PublishFailure>>,
}

/// The group publishers of every entity, each started by its first message.
pub(super) struct GroupPublishers {
    publisher: Arc<dyn Publish>,
    stream: String,
    /// Members per publish (`nomnom_publish_group_messages`).
    sizes: Histogram,
    queues: Vec<OnceLock<mpsc::UnboundedSender<Member>>>,
}

impl GroupPublishers {
    /// Publishers for `stream`, one per root entity, started on first use.
    pub(super) fn new(publisher: Arc<dyn Publish>, stream: String, sizes: Histogram) -> Self {
        Self {
            publisher,
            stream,
            sizes,
            queues: RootEntity::ALL.iter().map(|_| OnceLock::new()).collect(),
        }
    }

    /// Counts a group published elsewhere (a batch's lines) in the group-size histogram.
    pub(super) fn observe(&self, members: usize) {
        self.sizes.observe(members as f64);
    }

    /// Publishes `body` as a message of `entity` with a fresh id, in a group with whatever
    /// else is waiting; resolves with its id once JetStream has stored it.
    pub(super) async fn publish(
        &self,
        entity: RootEntity,
        body: Bytes,
    ) -> Result<Uuid, PublishFailure> {
        let i = RootEntity::ALL
            .iter()
            .position(|e| *e == entity)
            .expect("a root entity");
        let queue = self.queues[i].get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let max_bytes = max_group_bytes(self.publisher.max_payload());
            tokio::spawn(run(
                rx,
                self.publisher.clone(),
                Arc::from(message_subject(
                    &self.stream,
                    entity.snake_name(),
                    &Uuid::nil(),
                )),
                max_bytes,
                self.sizes.clone(),
            ));
            tx
        });
        let (answer, answered) = oneshot::channel();
        let gone = || PublishFailure {
            kind: PublishErrorKind::Other,
            detail: "the publisher stopped".into(),
        };
        queue.send(Member { body, answer }).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

/// Bytes of bodies one group may carry: within the server's `max_payload` (with room for the
/// lengths header) and [`MAX_GROUP_BYTES`].
pub(super) fn max_group_bytes(max_payload: usize) -> usize {
    max_payload.saturating_sub(HEADER_ROOM).min(MAX_GROUP_BYTES)
}

/// Publishes the queue's messages a group at a time, one group in flight: what arrives while
/// a group awaits its ack forms the next one. `nil_subject` is the subject of the nil id
/// (every group's subject is it with the group's id in place of the nil one).
async fn run(
    mut queue: mpsc::UnboundedReceiver<Member>,
    publisher: Arc<dyn Publish>,
    nil_subject: Arc<str>,
    max_bytes: usize,
    sizes: Histogram,
) {
    let prefix = &nil_subject[..nil_subject.len() - uuid::fmt::Hyphenated::LENGTH];
    let mut next: Option<Member> = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match queue.recv().await {
                Some(m) => m,
                None => return, // every sender is gone: the api stopped
            },
        };
        let mut bytes = first.body.len();
        let mut members = vec![first];
        while members.len() < MAX_GROUP_MEMBERS {
            let Ok(m) = queue.try_recv() else { break };
            if bytes + m.body.len() > max_bytes {
                next = Some(m);
                break;
            }
            bytes += m.body.len();
            members.push(m);
        }
        // A request given up meanwhile (its timeout, the client gone) is not published.
        members.retain(|m| !m.answer.is_closed());
        if members.is_empty() {
            continue;
        }
        let group = MessageGroup {
            first_id: new_group_id(),
            bodies: members.iter().map(|m| m.body.clone()).collect(),
        };
        let subject = format!("{prefix}{}", group.first_id);
        sizes.observe(members.len() as f64);
        let stored = publisher
            .publish(Outgoing {
                subject,
                message: group.to_publish(),
            })
            .await
            .map(drop);
        for (i, m) in members.into_iter().enumerate() {
            let _ = m.answer.send(match &stored {
                Ok(()) => Ok(member_id(&group.first_id, i)),
                Err(e) => Err(e.clone()),
            });
        }
    }
}
