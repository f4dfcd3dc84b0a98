//! One pulled batch, from JetStream messages to acks: [`Batch`] owns the messages, the
//! accepted messages they carry (one each, or a group's members) and what happened to each
//! ([`Outcome`]); the JetStream answer ([`Disposition`]) follows from the outcomes in one place,
//! [`Outcome::disposition`], combined over a group's members by [`Disposition::and`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use uuid::Uuid;

use super::{BatchContext, BatchReport, Disposition, ShuttingDown, outage};

/// Failed attempts of one set, while other writes commit, after which its transient fault is
/// taken to be its own (see [`Batch::write`]): with the hold delays, about 1.75 s.
pub(super) const POISON_ATTEMPTS: u32 = 3;
use crate::envelope::{MessageChunk, MessageEnvelope, SchemaVersion, chunk_member_id};
use crate::generated::{ParsedMessage, RootEntity};
use crate::labels::entity_label;
use crate::runtime::Position;
use crate::store::{ChunkMember, Content, DeadLetter, FaultKind, PendingWrite, ReasonClass};
use crate::throttle::Throttle;

/// An accepted message read from JetStream, before writing: a JetStream message carries one,
/// or a group's members.
pub(super) struct Incoming {
    /// Index of the JetStream message that carries it in [`Batch::messages`].
    source: usize,
    delivered: i64,
    /// The stream sequence of the JetStream message that carries it (to read its body again).
    sequence: i64,
    decoded: Decoded,
}

/// A message parsed, or what becomes of one that did not (boxed: large and rare).
type Decoded = Result<Parsed, Box<Unparsed>>;

/// A message that did not parse: a dead letter, or held for a worker of its schema version.
enum Unparsed {
    Dead(DeadLetter),
    Held(Held),
}

/// A message this worker's rules refuse that was accepted under another schema version (an
/// api or a loader of an older or newer build, during a rolling deploy): it is not
/// dead-lettered for that, but handed back for a worker of its version — or, once delivered
/// [`HOLD_RESEND_AFTER`] times, sent to the stream again as a copy that keeps its position
/// (and its version), so its deliveries never count it as poison.
#[derive(Clone)]
pub(super) struct Held {
    /// The message as it arrived (a chunk member as a message of its own), with `replay_of`
    /// its first position.
    envelope: MessageEnvelope,
    /// The version it was accepted under.
    schema: SchemaVersion,
    /// Why this worker's parse refuses it.
    reason: String,
}

impl Held {
    /// `envelope` held: it keeps `position` (where it first arrived) and `schema` when sent
    /// again.
    fn new(
        envelope: MessageEnvelope,
        position: Position,
        schema: SchemaVersion,
        reason: String,
    ) -> Self {
        Self {
            envelope: MessageEnvelope {
                replay_of: Some(position),
                schema: Some(schema),
                ..envelope
            },
            schema,
            reason,
        }
    }
}

/// How long a held message waits before its next delivery.
pub(super) const HOLD_DELAY: Duration = Duration::from_secs(10);

/// Deliveries of a held message (at least; `MAX_DELIVER` if more) after which it is sent to
/// the stream again instead of handed back once more.
pub(super) const HOLD_RESEND_AFTER: i64 = 2;

impl Incoming {
    fn entity(&self) -> &str {
        match &self.decoded {
            Ok(p) => &p.entity,
            Err(unparsed) => match &**unparsed {
                Unparsed::Dead(dead) => &dead.entity,
                Unparsed::Held(held) => &held.envelope.entity,
            },
        }
    }
}

/// A parsed message without its body text: the rows are all the write needs, and a body that
/// must be dead-lettered after all is read again from the stream (it stays there until acked).
struct Parsed {
    message_id: Uuid,
    entity: String,
    received_at: chrono::DateTime<chrono::Utc>,
    /// Where it first arrived: the carrying message's position, or the original's for a
    /// replayed copy.
    position: Position,
    /// A replayed copy of a dead letter.
    replayed: bool,
    /// The schema version it was accepted under, when not this worker's.
    other_schema: Option<SchemaVersion>,
    /// The delivery that carried it (its dead-letter record id is made from it, if needed).
    delivery: Delivery,
    content: ParsedContent,
}

/// What a parsed message holds: one message, or a chunk's members that parsed.
enum ParsedContent {
    One(ParsedMessage),
    Chunk(Vec<ChunkMember>),
}

impl Parsed {
    /// What the store writes for the members `range` (a chunk's; a message is whole).
    fn content(&self, range: &std::ops::Range<usize>) -> Content<'_> {
        match &self.content {
            ParsedContent::One(m) => Content::Message(m),
            ParsedContent::Chunk(members) => Content::Chunk(&members[range.clone()]),
        }
    }

    /// How many members can be written (1 for a message).
    fn members(&self) -> usize {
        match &self.content {
            ParsedContent::One(_) => 1,
            ParsedContent::Chunk(members) => members.len(),
        }
    }
}

impl Parsed {
    /// A dead letter whose body is filled in from the stream before it is published.
    fn dead_letter(&self, delivered: i64, class: ReasonClass, reason: String) -> DeadLetter {
        DeadLetter {
            message_id: self.message_id,
            entity: self.entity.clone(),
            body: bytes::Bytes::new(),
            class,
            reason,
            attempts: attempts(delivered),
            received_at: self.received_at,
            position: self.position,
            record_id: self.delivery.record_id(&self.message_id),
        }
    }
}

fn attempts(delivered: i64) -> i32 {
    i32::try_from(delivered).unwrap_or(i32::MAX)
}

/// Where one delivery of a stream message stands: the stream's position of it and which
/// delivery this is (dead-letter record ids are made from it).
#[derive(Clone, Copy)]
struct Delivery {
    position: Position,
    delivered: i64,
}

impl Delivery {
    /// The dead-letter record id of message `id` carried by this delivery: unique per message
    /// and delivery, across streams re-created.
    fn record_id(&self, id: &Uuid) -> String {
        format!("{id}:{}:{}", self.position, self.delivered)
    }
}

/// A chunk's members that did not parse: dead letters, and members held for a worker of the
/// chunk's schema version.
#[derive(Default)]
struct MemberRefusals {
    dead: Vec<DeadLetter>,
    held: Vec<Held>,
}

/// Decodes one JetStream message and parses what it carries; anything wrong becomes a dead
/// letter (a message that cannot be read at all, one), unless it is held (see [`Held`]).
fn decode(message: &jetstream::Message, delivery: Delivery) -> (Vec<Decoded>, MemberRefusals) {
    let delivered = delivery.delivered;
    let undecodable = |e: crate::envelope::EnvelopeError| {
        // Keep a stable id across redeliveries of the same stream message.
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{}:{}", message.subject, delivery.position).as_bytes(),
        );
        let dl = DeadLetter {
            message_id: id,
            entity: crate::nats::entity_of_subject(&message.subject).to_string(),
            body: message.payload.clone(),
            class: ReasonClass::Undecodable,
            reason: e.to_string(),
            attempts: attempts(delivered),
            received_at: chrono::Utc::now(),
            position: delivery.position,
            record_id: delivery.record_id(&id),
        };
        vec![Err(Box::new(Unparsed::Dead(dl)))]
    };
    if let Some(chunk) =
        MessageChunk::decode(&message.subject, message.headers.as_ref(), &message.payload)
    {
        return match chunk {
            Ok(chunk) => {
                let (parsed, dead) = parse_chunk(chunk, delivery);
                (vec![parsed], dead)
            }
            Err(e) => (undecodable(e), MemberRefusals::default()),
        };
    }
    let envelopes = match MessageEnvelope::decode_all(
        &message.subject,
        message.headers.as_ref(),
        &message.payload,
    ) {
        Ok(e) => e,
        Err(e) => return (undecodable(e), MemberRefusals::default()),
    };
    let decoded = envelopes
        .into_iter()
        .map(|envelope| parse(envelope, delivery))
        .collect();
    (decoded, MemberRefusals::default())
}

/// Parses every member of a chunk: the chunk with the members that parsed, and a dead letter
/// (its line in the reason) for each that did not — or, for a chunk of another schema version,
/// the member held (see [`Held`]).
fn parse_chunk(chunk: MessageChunk, delivery: Delivery) -> (Decoded, MemberRefusals) {
    let position = delivery.position;
    let mut dead = Vec::new();
    let mut held = Vec::new();
    let dead_letter = |index: usize, body: &bytes::Bytes, reason: String, class| {
        let id = chunk_member_id(&chunk.id, index);
        DeadLetter {
            message_id: id,
            entity: chunk.entity.clone(),
            body: body.clone(),
            class,
            reason,
            attempts: attempts(delivery.delivered),
            received_at: chunk.received_at,
            position,
            record_id: delivery.record_id(&id),
        }
    };
    let Some(entity) = RootEntity::from_name(&chunk.entity) else {
        let reason = format!("unknown entity `{}`", chunk.entity);
        if let Some(schema) = chunk.schema.filter(|v| !v.is_own()) {
            // An entity another version knows: every member held, as a message of its own.
            let mut held: Vec<Held> = chunk
                .members()
                .into_iter()
                .map(|m| Held::new(m, position, schema, reason.clone()))
                .collect();
            let first = held.remove(0);
            return (
                Err(Box::new(Unparsed::Held(first))),
                MemberRefusals { dead, held },
            );
        }
        for (i, body) in chunk.bodies.iter().enumerate() {
            dead.push(dead_letter(
                i,
                body,
                reason.clone(),
                ReasonClass::UnknownEntity,
            ));
        }
        let first = dead.remove(0);
        return (
            Err(Box::new(Unparsed::Dead(first))),
            MemberRefusals { dead, held },
        );
    };
    let other_schema = chunk.schema.filter(|v| !v.is_own());
    let mut members = Vec::with_capacity(chunk.bodies.len());
    for (index, (body, &line)) in chunk.bodies.iter().zip(&chunk.lines).enumerate() {
        match entity.parse_bytes(body) {
            Ok(message) => members.push(ChunkMember {
                index,
                line,
                message,
            }),
            Err(e) => match other_schema {
                Some(schema) => {
                    let member = MessageEnvelope {
                        message_id: chunk_member_id(&chunk.id, index),
                        entity: chunk.entity.clone(),
                        received_at: chunk.received_at,
                        body: body.clone(),
                        replay_of: None,
                        schema: None,
                    };
                    held.push(Held::new(
                        member,
                        position,
                        schema,
                        format!("line {line}: {e}"),
                    ));
                }
                None => dead.push(dead_letter(
                    index,
                    body,
                    format!("line {line}: {e}"),
                    ReasonClass::Invalid,
                )),
            },
        }
    }
    let parsed = Parsed {
        message_id: chunk.id,
        entity: chunk.entity,
        received_at: chunk.received_at,
        position,
        replayed: false,
        other_schema,
        delivery,
        content: ParsedContent::Chunk(members),
    };
    (Ok(parsed), MemberRefusals { dead, held })
}

/// Parses one accepted message; anything wrong becomes a dead letter.
fn parse(envelope: MessageEnvelope, delivery: Delivery) -> Decoded {
    let position = envelope.replay_of.unwrap_or(delivery.position);
    let dead_letter = |reason: String, class| {
        Box::new(Unparsed::Dead(DeadLetter {
            message_id: envelope.message_id,
            entity: envelope.entity.clone(),
            body: envelope.body.clone(),
            class,
            reason,
            attempts: attempts(delivery.delivered),
            received_at: envelope.received_at,
            position,
            record_id: delivery.record_id(&envelope.message_id),
        }))
    };
    let Some(entity) = RootEntity::from_name(&envelope.entity) else {
        let reason = format!("unknown entity `{}`", envelope.entity);
        // An entity another version knows (dropped from this one's YAML) is held too.
        return match envelope.schema.filter(|v| !v.is_own()) {
            Some(schema) => Err(Box::new(Unparsed::Held(Held::new(
                envelope, position, schema, reason,
            )))),
            None => Err(dead_letter(reason, ReasonClass::UnknownEntity)),
        };
    };
    match entity.parse_bytes(&envelope.body) {
        Ok(message) => Ok(Parsed {
            message_id: envelope.message_id,
            entity: envelope.entity,
            received_at: envelope.received_at,
            position,
            replayed: envelope.replay_of.is_some(),
            other_schema: envelope.schema.filter(|v| !v.is_own()),
            delivery,
            content: ParsedContent::One(message),
        }),
        Err(e) => match envelope.schema.filter(|v| !v.is_own()) {
            Some(schema) => Err(Box::new(Unparsed::Held(Held::new(
                envelope,
                position,
                schema,
                e.to_string(),
            )))),
            None => Err(dead_letter(e.to_string(), ReasonClass::Invalid)),
        },
    }
}

/// What became of one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Its rows and status row were committed by this batch.
    Committed,
    /// An earlier delivery committed it.
    AlreadyCommitted,
    /// It is to be dead-lettered (decided; not yet published).
    DeadLetterDue,
    /// Its dead letter is on the dead-letter stream.
    DeadLettered,
    /// Its dead letter could not be published; it comes back to try again.
    DeadLetterFailed,
    /// The worker is stopping (or the database never answered before it did): handed back.
    HandedBack,
    /// Held for a worker of its schema version (see [`Held`]): handed back after a while.
    Held,
    /// Held, and sent to the stream again as a copy (see [`Held`]).
    HeldSentAgain,
}

impl Outcome {
    /// The one mapping from what happened to what JetStream is told.
    pub(super) fn disposition(outcome: Option<Outcome>) -> Disposition {
        match outcome {
            Some(Outcome::Committed | Outcome::AlreadyCommitted | Outcome::HeldSentAgain) => {
                Disposition::Ack
            }
            Some(Outcome::Held) => Disposition::Retry(HOLD_DELAY),
            Some(Outcome::DeadLettered) => Disposition::Term,
            Some(Outcome::DeadLetterFailed) => Disposition::Retry(Duration::from_secs(1)),
            // No outcome means the batch ended early; a dead letter still due was not sent.
            Some(Outcome::HandedBack | Outcome::DeadLetterDue) | None => {
                Disposition::Retry(Duration::ZERO)
            }
        }
    }
}

/// Sends progress acks for a batch's messages until dropped, so JetStream does not redeliver
/// them while the batch is written or held; dropping it (also by a panic) stops the task.
struct ProgressGuard {
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<super::WorkerMetrics>,
}

impl ProgressGuard {
    fn start(cx: &BatchContext, messages: Arc<Vec<jetstream::Message>>) -> Self {
        let every = (cx.ack_wait / 3).max(Duration::from_millis(500));
        cx.metrics.progress_tasks.inc();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for m in messages.iter() {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
            }
        });
        Self {
            task,
            metrics: cx.metrics.clone(),
        }
    }
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.task.abort();
        self.metrics.progress_tasks.dec();
    }
}

/// A pulled batch: its JetStream messages, the accepted messages they carry, what became of
/// each of those, and the dead letters it owes.
pub(super) struct Batch {
    messages: Arc<Vec<jetstream::Message>>,
    incoming: Arc<Vec<Incoming>>,
    outcomes: Vec<Option<Outcome>>,
    dead: Vec<(usize, DeadLetter)>,
    /// Dead letters of single members of the chunk at that index: the chunk's answer waits for
    /// them (published, it stands; not, the chunk comes back).
    member_dead: Vec<(usize, DeadLetter)>,
    /// Messages, or members of the chunk at that index, held for a worker of their schema.
    held: Vec<(usize, Held)>,
    report: BatchReport,
}

/// What one write covers: a message (`0..1`), or members `range` of a chunk (indexes into its
/// parsed members), split when a chunk must be narrowed to the member the database refuses.
#[derive(Clone)]
struct Unit {
    incoming: usize,
    range: std::ops::Range<usize>,
}

impl Batch {
    /// Decodes every message (an undecodable one is a dead letter from the start) and drops the
    /// payloads: the parsed rows are all that is kept.
    /// `epoch` is the stream's (see [`Position`]).
    pub(super) fn decode(mut messages: Vec<jetstream::Message>, epoch: i64) -> Self {
        let mut incoming: Vec<Incoming> = Vec::with_capacity(messages.len());
        let mut member_dead = Vec::new();
        let mut held = Vec::new();
        for (source, message) in messages.iter_mut().enumerate() {
            let (delivered, sequence) = message
                .info()
                .map(|i| {
                    (
                        i.delivered,
                        i64::try_from(i.stream_sequence).unwrap_or(i64::MAX),
                    )
                })
                .unwrap_or((1, 0));
            // A group's members share its stream sequence: they are in member order here and
            // stay so in every write set, so the later member wins a key as the later message
            // does.
            let delivery = Delivery {
                position: Position { epoch, sequence },
                delivered,
            };
            let (decoded, refused) = decode(message, delivery);
            member_dead.extend(refused.dead.into_iter().map(|dl| (incoming.len(), dl)));
            held.extend(refused.held.into_iter().map(|h| (incoming.len(), h)));
            incoming.extend(decoded.into_iter().map(|decoded| Incoming {
                source,
                delivered,
                sequence,
                decoded,
            }));
            message.message.payload = bytes::Bytes::new();
        }
        let mut batch = Self {
            messages: Arc::new(messages),
            outcomes: vec![None; incoming.len()],
            incoming: Arc::new(incoming),
            dead: Vec::new(),
            member_dead,
            held,
            report: BatchReport::default(),
        };
        for i in 0..batch.incoming.len() {
            match batch.incoming[i].decoded.as_ref().map_err(|u| &**u) {
                Err(Unparsed::Dead(dead)) => {
                    let dl = DeadLetter::clone(dead);
                    batch.dead_letter(i, dl);
                }
                Err(Unparsed::Held(held)) => {
                    let held = held.clone();
                    batch.held.push((i, held));
                }
                Ok(_) => {}
            }
        }
        batch
    }

    /// Processes the batch end to end: give up on messages over their delivery budget, write
    /// the rest (one transaction, isolating data errors), publish dead letters, then answer
    /// JetStream for each message. Progress acks keep the messages meanwhile.
    pub(super) async fn process(mut self, cx: &BatchContext) -> BatchReport {
        cx.metrics.batch_size.observe(self.incoming.len() as f64);
        let progress = ProgressGuard::start(cx, self.messages.clone());
        if let Some(hook) = &cx.fault_hook {
            let ids: Vec<(Uuid, i64)> = self
                .parsed()
                .map(|(i, p)| (p.message_id, self.incoming[i].delivered))
                .collect();
            hook(&ids);
        }
        // A chunk is not given up for its deliveries: its rows were checked before it was sent,
        // and each delivery writes only the members none before it covered.
        let (over_budget, within): (Vec<usize>, Vec<usize>) = self
            .parsed()
            .filter(|(_, p)| matches!(p.content, ParsedContent::One(_)))
            .map(|(i, _)| i)
            .partition(|&i| self.incoming[i].delivered > cx.max_deliver);
        let chunks: Vec<usize> = self
            .parsed()
            .filter(|(_, p)| matches!(p.content, ParsedContent::Chunk(_)))
            .map(|(i, _)| i)
            .collect();
        let within: Vec<usize> = within.into_iter().chain(chunks).collect();
        if self.give_up_unfinished(cx, over_budget).await.is_ok() {
            let units = within
                .into_iter()
                .filter_map(|i| {
                    let members = self.incoming[i].decoded.as_ref().ok()?.members();
                    if members == 0 {
                        // A chunk none of whose members parsed: its dead letters are all.
                        self.settle(i, Outcome::Committed);
                        return None;
                    }
                    Some(Unit {
                        incoming: i,
                        range: 0..members,
                    })
                })
                .collect();
            self.write(cx, units).await;
        }
        self.publish_dead_letters(cx).await;
        self.count_other_schemas(cx);
        self.hold(cx).await;
        drop(progress);
        self.answer(cx).await
    }

    /// Counts the messages accepted under another schema version (parsed by this worker's
    /// rules, or held), and says so in the log (at most every 30 s).
    fn count_other_schemas(&self, cx: &BatchContext) {
        let mut parsed = 0u64;
        for (_, p) in self.parsed() {
            if let Some(schema) = p.other_schema {
                let n = p.members() as u64;
                parsed += n;
                cx.metrics
                    .other_schema
                    .with_label_values(&[entity_label(&p.entity), &schema.to_string(), "parsed"])
                    .inc_by(n);
            }
        }
        for (_, h) in &self.held {
            cx.metrics
                .other_schema
                .with_label_values(&[
                    entity_label(&h.envelope.entity),
                    &h.schema.to_string(),
                    "held",
                ])
                .inc();
        }
        if parsed == 0 && self.held.is_empty() {
            return;
        }
        static OTHER_SCHEMA: Throttle = Throttle::new(Duration::from_secs(30));
        if let Some(held_back) = OTHER_SCHEMA.allow() {
            match self.held.first() {
                Some((_, h)) => tracing::warn!(
                    accepted_under = %h.schema,
                    this_worker = %SchemaVersion::own(),
                    held = self.held.len(),
                    parsed,
                    first_held = %h.envelope.message_id,
                    reason = %h.reason,
                    similar_since_last = held_back,
                    "messages accepted under another schema version fail this worker's parse: held (not dead-lettered) for a worker of their version; deploy one, or the api and loader of this one"
                ),
                None => tracing::info!(
                    this_worker = %SchemaVersion::own(),
                    parsed,
                    similar_since_last = held_back,
                    "messages accepted under another schema version parse under this worker's rules"
                ),
            }
        }
    }

    /// Answers for the held messages: handed back for a while, or, once delivered
    /// [`HOLD_RESEND_AFTER`] times (`MAX_DELIVER` if more), sent to the stream again and acked
    /// (a held chunk member likewise; the chunk then stands as its writes left it).
    async fn hold(&mut self, cx: &BatchContext) {
        let held = std::mem::take(&mut self.held);
        let resend_after = HOLD_RESEND_AFTER.max(cx.max_deliver);
        for (i, h) in held {
            if matches!(
                self.outcomes[i],
                Some(Outcome::HandedBack | Outcome::DeadLetterFailed)
            ) {
                continue;
            }
            let member = self.incoming[i].decoded.is_ok();
            let sent = self.incoming[i].delivered >= resend_after
                && {
                    let outgoing = crate::nats::Outgoing {
                        subject: crate::nats::message_subject(
                            &cx.stream,
                            RootEntity::from_name(&h.envelope.entity)
                                .map_or(h.envelope.entity.as_str(), |e| e.snake_name()),
                            &h.envelope.message_id,
                        ),
                        message: h.envelope.to_publish(false),
                    };
                    match cx.publisher.publish(outgoing).await {
                        Ok(_) => true,
                        Err(e) => {
                            static RESEND_FAILED: Throttle = Throttle::new(Duration::from_secs(10));
                            if let Some(held_back) = RESEND_FAILED.allow() {
                                tracing::warn!(error = %e, similar_since_last = held_back, "cannot send a held message to the stream again; it comes back");
                            }
                            false
                        }
                    }
                };
            match (sent, member) {
                // The chunk stands as its writes left it; the copy carries the member.
                (true, true) => {}
                // Sent again, unless another held member of the same message was not.
                (true, false) if self.outcomes[i] != Some(Outcome::Held) => {
                    self.settle(i, Outcome::HeldSentAgain);
                }
                (true, false) => {}
                (false, _) => self.outcomes[i] = Some(Outcome::Held),
            }
        }
    }

    /// The messages that parsed, with their index.
    fn parsed(&self) -> impl Iterator<Item = (usize, &Parsed)> {
        self.incoming
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.decoded.as_ref().ok()?)))
    }

    fn settle(&mut self, i: usize, outcome: Outcome) {
        self.outcomes[i] = Some(outcome);
    }

    fn dead_letter(&mut self, i: usize, dl: DeadLetter) {
        self.settle(i, Outcome::DeadLetterDue);
        self.dead.push((i, dl));
    }

    /// Every message not settled yet goes back to JetStream, and so does every chunk with
    /// members still to write (`unfinished`): its next delivery writes only those.
    fn hand_back_the_rest(&mut self, unfinished: impl IntoIterator<Item = usize>) {
        for i in unfinished {
            self.outcomes[i] = Some(Outcome::HandedBack);
        }
        for o in &mut self.outcomes {
            o.get_or_insert(Outcome::HandedBack);
        }
    }

    /// Messages delivered more than `MAX_DELIVER` times without an outcome: acked if an earlier
    /// delivery committed them after all, else dead-lettered.
    async fn give_up_unfinished(
        &mut self,
        cx: &BatchContext,
        idx: Vec<usize>,
    ) -> Result<(), ShuttingDown> {
        if idx.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = idx.iter().filter_map(|&i| self.message_id(i)).collect();
        let mut attempt = 0;
        let committed = loop {
            let started = Instant::now();
            match cx.store.committed_among(&ids).await {
                Ok(set) => {
                    cx.outage.recovered(started);
                    break set;
                }
                Err(e) => {
                    if cx.hold(&e, idx.len(), attempt).await.is_err() {
                        self.hand_back_the_rest([]);
                        return Err(ShuttingDown);
                    }
                    attempt += 1;
                }
            }
        };
        for i in idx {
            let Ok(p) = &self.incoming[i].decoded else {
                continue;
            };
            if committed.contains(&p.message_id) {
                self.settle(i, Outcome::AlreadyCommitted);
                continue;
            }
            let delivered = self.incoming[i].delivered;
            let reason = format!(
                "delivered {delivered} times without an outcome (MAX_DELIVER={}): the worker stopped or crashed while processing it each time",
                cx.max_deliver
            );
            let dl = p.dead_letter(delivered, ReasonClass::MaxDeliveries, reason);
            self.dead_letter(i, dl);
        }
        Ok(())
    }

    fn message_id(&self, i: usize) -> Option<Uuid> {
        self.incoming[i].decoded.as_ref().ok().map(|p| p.message_id)
    }

    /// Writes the parsed messages and chunk members of `units` in one transaction. A data
    /// error splits the set in halves (a chunk alone, its members in halves) until the
    /// offending message or member is alone; it is then dead-lettered and the rest commit. A
    /// conflict with a concurrent transaction (deadlock, serialization) is retried at once. A
    /// transient fault holds the set and retries it until the store is back (or the worker
    /// stops, when the set is handed back for redelivery), unless it is the set's own: a set
    /// that has failed [`POISON_ATTEMPTS`] times while other writes of this worker committed
    /// (the store works) is split like a data error, so one message that breaks the store
    /// every time ends as a dead letter instead of holding its batch forever.
    async fn write(&mut self, cx: &BatchContext, units: Vec<Unit>) {
        // (units, suspect): a suspect set descends from one isolated as poison, so its
        // transient faults are its own from the first.
        let mut stack = vec![(units, false)];
        let mut attempt = 0u32;
        let mut first_failure: Option<Instant> = None;
        let unfinished = |stack: &[(Vec<Unit>, bool)], set: &[Unit]| -> Vec<usize> {
            stack
                .iter()
                .flat_map(|(s, _)| s.iter())
                .chain(set)
                .map(|u| u.incoming)
                .collect()
        };
        while let Some((set, suspect)) = stack.pop() {
            if set.is_empty() {
                continue;
            }
            let incoming = self.incoming.clone();
            let writes: Vec<PendingWrite<'_>> = set
                .iter()
                .filter_map(|u| {
                    let i = u.incoming;
                    let p = incoming[i].decoded.as_ref().ok()?;
                    Some(PendingWrite {
                        message_id: p.message_id,
                        received_at: p.received_at,
                        attempts: attempts(incoming[i].delivered),
                        position: p.position,
                        replayed: p.replayed,
                        content: p.content(&u.range),
                    })
                })
                .collect();
            let started = Instant::now();
            let result = cx.store.write_batch(&writes).await;
            cx.metrics
                .db_write_seconds
                .observe(started.elapsed().as_secs_f64());
            let e = match result {
                Ok(outcome) => {
                    attempt = 0;
                    first_failure = None;
                    cx.outage.committed(started);
                    self.committed(cx, &set, &writes, outcome);
                    continue;
                }
                Err(e) => e,
            };
            match e.kind() {
                FaultKind::Conflict => {
                    cx.metrics
                        .db_errors
                        .with_label_values(&[e.metric_class()])
                        .inc();
                    static CONFLICT: Throttle = Throttle::new(Duration::from_secs(30));
                    if let Some(held_back) = CONFLICT.allow() {
                        tracing::info!(error = %e, similar_since_last = held_back, "batch rolled back by a concurrent transaction; retrying it");
                    }
                    attempt += 1;
                    // At once, then a little later each time (a few ms, at most 0.5 s).
                    let pause = Duration::from_millis(u64::from(attempt.min(50)) * 10);
                    if cx.pause(pause).await.is_err() {
                        let left = unfinished(&stack, &set);
                        self.hand_back_the_rest(left);
                        return;
                    }
                    stack.push((set, suspect));
                    continue;
                }
                FaultKind::Transient => {
                    let since = *first_failure.get_or_insert(started);
                    let poison = suspect
                        || (attempt + 1 >= POISON_ATTEMPTS && cx.outage.committed_since(since));
                    if !poison {
                        // The first failures of a set that the store still answers are not
                        // an outage (yet): other slots keep pulling, and their commits tell
                        // a poison set from a database that is down.
                        let answers =
                            attempt + 1 < POISON_ATTEMPTS && cx.store.probe().await.is_ok();
                        let held = if answers {
                            cx.metrics
                                .db_errors
                                .with_label_values(&[e.metric_class()])
                                .inc();
                            static FAILING: Throttle = Throttle::new(Duration::from_secs(30));
                            if let Some(held_back) = FAILING.allow() {
                                tracing::warn!(error = %e, messages = set.len(), similar_since_last = held_back, "batch failed while the database answers; retrying it");
                            }
                            cx.pause(outage::hold_delay(attempt)).await
                        } else {
                            cx.hold(&e, set.len(), attempt).await
                        };
                        if held.is_err() {
                            let left = unfinished(&stack, &set);
                            self.hand_back_the_rest(left);
                            return;
                        }
                        attempt += 1;
                        stack.push((set, suspect));
                        continue;
                    }
                    tracing::warn!(error = %e, messages = set.len(), attempts = attempt + 1, "a batch fails every time while other writes commit; isolating the message that causes it");
                }
                FaultKind::Data => {}
            }
            // A data error, or a poison set: split until the message (or a chunk's member) is
            // alone, then dead-letter it.
            let poison = e.kind() == FaultKind::Transient;
            attempt = 0;
            first_failure = None;
            cx.outage.recovered(started);
            cx.metrics
                .db_errors
                .with_label_values(&[e.metric_class()])
                .inc();
            match &set[..] {
                [unit] if unit.range.len() <= 1 => {
                    let i = unit.incoming;
                    if let Ok(p) = &incoming[i].decoded {
                        let dl = p.dead_letter(
                            incoming[i].delivered,
                            ReasonClass::RefusedByDatabase,
                            e.to_string(),
                        );
                        match &p.content {
                            ParsedContent::One(_) => self.dead_letter(i, dl),
                            ParsedContent::Chunk(members) => {
                                let member = &members[unit.range.start];
                                let id = chunk_member_id(&p.message_id, member.index);
                                let dl = DeadLetter {
                                    message_id: id,
                                    reason: format!("line {}: {}", member.line, dl.reason),
                                    record_id: p.delivery.record_id(&id),
                                    ..dl
                                };
                                self.member_dead.push((i, dl));
                            }
                        }
                    }
                }
                [unit] => {
                    tracing::info!(error = %e, members = unit.range.len(), "data error in a chunk; splitting it to isolate the member");
                    let middle = unit.range.start + unit.range.len() / 2;
                    let left = Unit {
                        incoming: unit.incoming,
                        range: unit.range.start..middle,
                    };
                    let right = Unit {
                        incoming: unit.incoming,
                        range: middle..unit.range.end,
                    };
                    stack.push((vec![right], poison));
                    stack.push((vec![left], poison));
                }
                _ => {
                    tracing::info!(error = %e, messages = set.len(), "data error in batch; splitting to isolate it");
                    let mut left = set;
                    let right = left.split_off(left.len() / 2);
                    stack.push((right, poison));
                    stack.push((left, poison));
                }
            }
        }
    }

    /// Settles the messages of a committed set and counts them: a chunk stays committed only
    /// if every part of it written so far committed.
    fn committed(
        &mut self,
        cx: &BatchContext,
        set: &[Unit],
        writes: &[PendingWrite<'_>],
        outcome: crate::store::WriteOutcome,
    ) {
        self.report.rows += outcome.rows.total();
        self.report.processed += outcome.members_written as usize;
        self.report.duplicates += outcome.members_already as usize;
        // A set: one lookup per message instead of a scan of the batch.
        let written: std::collections::HashSet<Uuid> = outcome.written.iter().copied().collect();
        // Counted per entity, then added to the metric once per batch.
        let mut processed: Vec<(&'static str, u64)> = Vec::new();
        let now = chrono::Utc::now();
        for (unit, w) in set.iter().zip(writes) {
            let i = unit.incoming;
            let chunk = matches!(w.content, Content::Chunk(_));
            let outcome = if written.contains(&w.message_id) {
                if !chunk {
                    self.report.processed += 1;
                }
                // From the api's acceptance to this commit (a chunk's: its first row's).
                let latency = (now - w.received_at).num_microseconds().unwrap_or(i64::MAX);
                cx.metrics
                    .commit_latency_seconds
                    .observe(latency.max(0) as f64 / 1e6);
                let entity = crate::labels::entity_label(w.entity());
                let n = w.messages() as u64;
                match processed.iter_mut().find(|(e, _)| *e == entity) {
                    Some((_, count)) => *count += n,
                    None => processed.push((entity, n)),
                }
                Outcome::Committed
            } else {
                if !chunk {
                    self.report.duplicates += 1;
                }
                Outcome::AlreadyCommitted
            };
            // A part of a chunk cannot undo what another part's outcome said.
            match self.outcomes[i] {
                None | Some(Outcome::AlreadyCommitted) => self.settle(i, outcome),
                _ => {}
            }
        }
        for (entity, n) in processed {
            cx.metrics.processed.with_label_values(&[entity]).inc_by(n);
        }
    }

    /// Publishes the dead letters due (bodies of parsed messages are read again from the
    /// stream) and settles each message by whether that worked.
    async fn publish_dead_letters(&mut self, cx: &BatchContext) {
        let mut dead = std::mem::take(&mut self.dead);
        let members = dead.len();
        dead.append(&mut self.member_dead);
        let incoming = &self.incoming;
        let published = futures::future::join_all(dead.iter_mut().map(|(i, dl)| {
            // A parsed message's body (or a chunk member's the database refused) was dropped.
            let reread = (incoming[*i].decoded.is_ok() && dl.body.is_empty())
                .then_some(incoming[*i].sequence);
            async move {
                if let Some(sequence) = reread {
                    dl.body = body_from_stream(cx, sequence, dl.message_id).await?;
                }
                tracing::warn!(message_id = %dl.message_id, entity = %dl.entity, reason = %dl.reason, "dead-lettering message");
                super::dead_letter::publish(&*cx.publisher, &cx.stream, dl).await
            }
        }))
        .await;
        for (n, ((i, dl), result)) in dead.iter().zip(published).enumerate() {
            if self.outcomes[*i] == Some(Outcome::HandedBack) {
                continue;
            }
            let member = n >= members;
            if result.is_ok() {
                self.report.dead_lettered += 1;
                cx.metrics
                    .dead_lettered
                    .with_label_values(&[entity_label(&dl.entity), dl.class.label()])
                    .inc();
            }
            match result {
                // A chunk's member: the chunk stands as its writes left it.
                Ok(()) if member => {}
                Ok(()) => self.settle(*i, Outcome::DeadLettered),
                // The chunk comes back: its next delivery dead-letters the member again.
                Err(e) if member => {
                    tracing::warn!(error = %e, "cannot publish a chunk member's dead letter; the chunk will come back");
                    self.settle(*i, Outcome::DeadLetterFailed);
                }
                Err(e) => {
                    static PUBLISH_FAILED: Throttle = Throttle::new(Duration::from_secs(10));
                    if let Some(held_back) = PUBLISH_FAILED.allow() {
                        tracing::warn!(error = %e, similar_since_last = held_back, "cannot publish dead letter; will retry");
                    }
                    self.settle(*i, Outcome::DeadLetterFailed);
                }
            }
        }
    }

    /// Tells JetStream what became of each message: of a group, what became of all its members.
    async fn answer(mut self, cx: &BatchContext) -> BatchReport {
        let mut dispositions: Vec<Option<Disposition>> = vec![None; self.messages.len()];
        for (m, o) in self.incoming.iter().zip(&self.outcomes) {
            let d = Outcome::disposition(*o);
            if let Disposition::Retry(_) = d {
                self.report.retried += 1;
                cx.metrics
                    .retried
                    .with_label_values(&[entity_label(m.entity())])
                    .inc();
            }
            let combined = &mut dispositions[m.source];
            *combined = Some(match combined.take() {
                Some(earlier) => earlier.and(d),
                None => d,
            });
        }
        let acks = self.messages.iter().zip(&dispositions).map(|(m, d)| {
            // Every message carries at least one accepted message (or its dead letter).
            let d = d.clone().unwrap_or(Disposition::Retry(Duration::ZERO));
            let kind = match d {
                Disposition::Ack => AckKind::Ack,
                Disposition::Retry(delay) => AckKind::Nak(Some(delay)),
                Disposition::Term => AckKind::Term,
            };
            async move {
                if let Err(e) = m.ack_with(kind).await {
                    // The message will be redelivered; the status row makes that harmless.
                    static ACK_FAILED: Throttle = Throttle::new(Duration::from_secs(10));
                    if let Some(held_back) = ACK_FAILED.allow() {
                        tracing::warn!(error = %e, similar_since_last = held_back, "ack failed");
                    }
                }
            }
        });
        futures::future::join_all(acks).await;
        self.report
    }
}

/// The body of message `id`, carried by the stream message at `sequence`, read again for its
/// dead letter.
async fn body_from_stream(
    cx: &BatchContext,
    sequence: i64,
    id: Uuid,
) -> Result<bytes::Bytes, String> {
    let stream = cx
        .jetstream
        .get_stream_no_info(&cx.stream)
        .await
        .map_err(|e| e.to_string())?;
    let raw = stream
        .direct_get(u64::try_from(sequence).unwrap_or(0))
        .await
        .map_err(|e| format!("cannot read message {sequence} again: {e}"))?;
    let members = MessageEnvelope::decode_all(&raw.subject, Some(&raw.headers), &raw.payload)
        .map_err(|e| e.to_string())?;
    members
        .iter()
        .find(|e| e.message_id == id)
        .map(|e| e.body.clone())
        .ok_or_else(|| format!("message {sequence} of the stream does not carry {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_one_answer() {
        let cases = [
            (Some(Outcome::Committed), Disposition::Ack),
            (Some(Outcome::AlreadyCommitted), Disposition::Ack),
            (Some(Outcome::DeadLettered), Disposition::Term),
            (
                Some(Outcome::DeadLetterFailed),
                Disposition::Retry(Duration::from_secs(1)),
            ),
            (
                Some(Outcome::DeadLetterDue),
                Disposition::Retry(Duration::ZERO),
            ),
            (
                Some(Outcome::HandedBack),
                Disposition::Retry(Duration::ZERO),
            ),
            (None, Disposition::Retry(Duration::ZERO)),
        ];
        for (outcome, want) in cases {
            assert_eq!(Outcome::disposition(outcome), want, "{outcome:?}");
        }
    }

    #[test]
    fn a_group_is_redelivered_if_any_member_must_be_and_terminated_only_if_all_were() {
        use Disposition::{Ack, Retry, Term};
        let (now, later) = (Duration::ZERO, Duration::from_secs(1));
        let cases = [
            (vec![Ack, Ack], Ack),
            (vec![Ack, Term], Ack),
            (vec![Term, Ack, Term], Ack),
            (vec![Term, Term], Term),
            (vec![Ack, Retry(now), Term], Retry(now)),
            (vec![Term, Retry(later)], Retry(later)),
            (vec![Retry(later), Ack, Retry(now)], Retry(later)),
            (vec![Retry(now), Retry(later)], Retry(later)),
        ];
        for (members, want) in cases {
            let got = members.iter().cloned().reduce(Disposition::and);
            assert_eq!(got, Some(want.clone()), "{members:?}");
        }
    }
}
