//! An in-memory [`Store`]: what the api and the worker ask of a store, with no database behind
//! it, for tests of the seam (the real-service tests run against PostgreSQL).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use nomnom::generated::RowBatch;
use nomnom::store::{
    AdminAction, Content, DeadLetter, DeadLetterFilter, DeadLetterGroup, DeadLetterPage,
    DiscardedNote, EntityCounts, FaultKind, MessageTrace, PendingWrite, SchemaChanges, SchemaHead,
    Store, StoreError, StoreFuture, StoredAction, StoredDeadLetter, StoredStatus, WriteOutcome,
};
use uuid::Uuid;

/// Statuses and dead letters in maps; `up` false makes every call a transient fault.
pub(crate) struct MemoryStore {
    /// Whether the store answers.
    pub(crate) up: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    statuses: HashMap<Uuid, StoredStatus>,
    dead_letters: HashMap<Uuid, (StoredDeadLetter, String)>,
    discarded: Vec<(StoredDeadLetter, DiscardedNote)>,
    actions: Vec<(DateTime<Utc>, AdminAction)>,
    prepared: bool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(true),
            state: Mutex::default(),
        }
    }
}

impl MemoryStore {
    /// A store holding `statuses`.
    pub(crate) fn with_statuses(statuses: impl IntoIterator<Item = (Uuid, StoredStatus)>) -> Self {
        let store = Self::default();
        store.state().statuses.extend(statuses);
        store
    }

    /// The status of `id`, if any.
    pub(crate) fn status(&self, id: Uuid) -> Option<StoredStatus> {
        self.state().statuses.get(&id).cloned()
    }

    /// How many messages were stored (`processed`).
    pub(crate) fn processed(&self) -> usize {
        let state = self.state();
        state
            .statuses
            .values()
            .filter(|s| s.status == "processed")
            .count()
    }

    /// Whether `prepare` ran.
    pub(crate) fn prepared(&self) -> bool {
        self.state().prepared
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer<T: Send + 'static>(&self, f: impl FnOnce(&mut State) -> T) -> StoreFuture<'_, T> {
        let result = if self.up.load(Ordering::SeqCst) {
            Ok(f(&mut self.state()))
        } else {
            Err(StoreError::new(
                FaultKind::Transient,
                "connection",
                "the in-memory store is down",
            ))
        };
        Box::pin(async move { result })
    }
}

impl Store for MemoryStore {
    fn prepare(&self) -> StoreFuture<'_, SchemaChanges> {
        self.answer(|state| {
            state.prepared = true;
            SchemaChanges::default()
        })
    }

    fn write_batch<'a>(
        &'a self,
        messages: &'a [PendingWrite<'a>],
    ) -> StoreFuture<'a, WriteOutcome> {
        self.answer(|state| {
            let mut outcome = WriteOutcome::default();
            let mut batch = RowBatch::default();
            for m in messages {
                let now = chrono::Utc::now();
                // A chunk's members get a status each here (the database keeps one per run).
                let members: Vec<(Uuid, &nomnom::generated::ParsedMessage)> = match m.content {
                    Content::Message(message) => vec![(m.message_id, message)],
                    Content::Chunk(members) => members
                        .iter()
                        .map(|c| {
                            let id = nomnom::envelope::chunk_member_id(&m.message_id, c.index);
                            (id, &c.message)
                        })
                        .collect(),
                };
                let mut wrote = false;
                for (id, message) in members {
                    if state.statuses.contains_key(&id)
                        && (matches!(m.content, Content::Chunk(_))
                            || state.statuses[&id].status == "processed")
                    {
                        outcome.members_already += 1;
                        continue;
                    }
                    state.statuses.insert(
                        id,
                        StoredStatus {
                            entity: message.entity().name().to_string(),
                            status: "processed".into(),
                            received_at: m.received_at,
                            processed_at: now,
                            row_count: i32::try_from(message.row_count()).unwrap_or(i32::MAX),
                            attempts: m.attempts,
                            error: None,
                            run: None,
                        },
                    );
                    if m.replayed {
                        state.dead_letters.remove(&id);
                    }
                    batch.push(
                        message,
                        nomnom::runtime::Origin {
                            position: m.position,
                            message_id: id,
                        },
                    );
                    wrote = true;
                    if matches!(m.content, Content::Chunk(_)) {
                        outcome.members_written += 1;
                    }
                }
                if wrote {
                    outcome.written.push(m.message_id);
                } else {
                    outcome.already_processed.push(m.message_id);
                }
            }
            outcome.rows = batch.counts();
            outcome
        })
    }

    fn status_runs(&self, first: Uuid, last: Uuid) -> StoreFuture<'_, Vec<(Uuid, i32)>> {
        self.answer(|state| {
            state
                .statuses
                .keys()
                .filter(|id| (first..=last).contains(*id))
                .map(|id| (*id, 1))
                .collect()
        })
    }

    fn committed_among<'a>(&'a self, ids: &'a [Uuid]) -> StoreFuture<'a, HashSet<Uuid>> {
        self.answer(|state| {
            ids.iter()
                .copied()
                .filter(|id| {
                    state
                        .statuses
                        .get(id)
                        .is_some_and(|s| s.status == "processed")
                })
                .collect()
        })
    }

    fn message_status(&self, id: Uuid) -> StoreFuture<'_, Option<StoredStatus>> {
        self.answer(move |state| state.statuses.get(&id).cloned())
    }

    fn record_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> StoreFuture<'a, ()> {
        self.answer(|state| {
            if state
                .statuses
                .get(&dead.message_id)
                .is_some_and(|s| s.status == "processed")
            {
                return;
            }
            let now = chrono::Utc::now();
            match state.dead_letters.get_mut(&dead.message_id) {
                Some((_, last)) if *last == dead.record_id => {}
                Some((stored, last)) => {
                    stored.reason = dead.reason.clone();
                    stored.class = dead.class;
                    stored.body = dead.body.clone();
                    stored.attempts += dead.attempts;
                    stored.times += 1;
                    stored.last_seen = chrono::Utc::now();
                    *last = dead.record_id.clone();
                }
                None => {
                    let stored = StoredDeadLetter {
                        message_id: dead.message_id,
                        entity: dead.entity.clone(),
                        body: dead.body.clone(),
                        class: dead.class,
                        reason: dead.reason.clone(),
                        attempts: dead.attempts,
                        times: 1,
                        position: dead.position,
                        first_seen: now,
                        last_seen: now,
                    };
                    state
                        .dead_letters
                        .insert(dead.message_id, (stored, dead.record_id.clone()));
                }
            }
            state
                .statuses
                .entry(dead.message_id)
                .or_insert_with(|| StoredStatus {
                    entity: dead.entity.clone(),
                    status: "dead_lettered".into(),
                    received_at: dead.received_at,
                    processed_at: now,
                    row_count: 0,
                    attempts: dead.attempts,
                    error: Some(dead.reason.clone()),
                    run: None,
                });
        })
    }

    fn dead_letters<'a>(
        &'a self,
        page: &'a DeadLetterPage,
    ) -> StoreFuture<'a, Vec<StoredDeadLetter>> {
        self.answer(|state| {
            let mut all: Vec<StoredDeadLetter> = state
                .dead_letters
                .values()
                .map(|(d, _)| d.clone())
                .filter(|d| matches(&page.filter, d))
                .filter(|d| {
                    page.after
                        .is_none_or(|after| (d.first_seen, d.message_id) > after)
                })
                .collect();
            all.sort_by_key(|d| (d.first_seen, d.message_id));
            all.truncate(page.limit);
            all
        })
    }

    fn count_dead_letters<'a>(&'a self, filter: &'a DeadLetterFilter) -> StoreFuture<'a, i64> {
        self.answer(|state| {
            let n = state
                .dead_letters
                .values()
                .filter(|(d, _)| matches(filter, d))
                .count();
            i64::try_from(n).unwrap_or(i64::MAX)
        })
    }

    fn discard_dead_letter<'a>(
        &'a self,
        message_id: Uuid,
        by: &'a str,
        note: &'a str,
    ) -> StoreFuture<'a, bool> {
        self.answer(|state| match state.dead_letters.remove(&message_id) {
            Some(record) => {
                let note = DiscardedNote {
                    by: by.to_string(),
                    note: note.to_string(),
                    at: Utc::now(),
                };
                state.discarded.push((record.0, note));
                true
            }
            None => false,
        })
    }

    fn record_action<'a>(&'a self, action: &'a AdminAction) -> StoreFuture<'a, ()> {
        self.answer(|state| state.actions.push((Utc::now(), action.clone())))
    }

    fn admin_actions(&self, limit: usize) -> StoreFuture<'_, Vec<StoredAction>> {
        self.answer(move |state| {
            let numbered = state.actions.iter().enumerate().rev().take(limit);
            numbered
                .map(|(i, (at, a))| StoredAction {
                    id: i as i64 + 1,
                    at: *at,
                    who: a.who.clone(),
                    action: a.action.to_string(),
                    target: a.target.clone(),
                    count: a.count,
                    note: a.note.clone(),
                })
                .collect()
        })
    }

    fn entity_counts(&self, since: DateTime<Utc>) -> StoreFuture<'_, Vec<EntityCounts>> {
        self.answer(move |state| {
            let mut by_entity: std::collections::BTreeMap<String, EntityCounts> =
                Default::default();
            for s in state.statuses.values() {
                let c = by_entity
                    .entry(s.entity.clone())
                    .or_insert_with(|| EntityCounts {
                        entity: s.entity.clone(),
                        ..Default::default()
                    });
                let recent = i64::from(s.processed_at >= since);
                if s.status == "processed" {
                    c.processed += 1;
                    c.processed_recent += recent;
                } else {
                    c.dead_lettered += 1;
                    c.dead_lettered_recent += recent;
                }
            }
            by_entity.into_values().collect()
        })
    }

    fn dead_letter_groups(&self) -> StoreFuture<'_, Vec<DeadLetterGroup>> {
        self.answer(|state| {
            let mut groups: Vec<DeadLetterGroup> = Vec::new();
            for (d, _) in state.dead_letters.values() {
                match groups
                    .iter_mut()
                    .find(|g| g.entity == d.entity && g.class == d.class)
                {
                    Some(g) => {
                        g.count += 1;
                        g.first_seen = g.first_seen.min(d.first_seen);
                        g.last_seen = g.last_seen.max(d.last_seen);
                    }
                    None => groups.push(DeadLetterGroup {
                        entity: d.entity.clone(),
                        class: d.class,
                        count: 1,
                        first_seen: d.first_seen,
                        last_seen: d.last_seen,
                    }),
                }
            }
            groups.sort_by_key(|g| std::cmp::Reverse(g.count));
            groups
        })
    }

    /// Statuses and dead letters; this store keeps no rows, so the trace lists none.
    fn message_trace(&self, id: Uuid, _row_limit: usize) -> StoreFuture<'_, MessageTrace> {
        self.answer(move |state| MessageTrace {
            status: state.statuses.get(&id).cloned(),
            dead_letter: state.dead_letters.get(&id).map(|(d, _)| d.clone()),
            discarded: state
                .discarded
                .iter()
                .rev()
                .find(|(d, _)| d.message_id == id)
                .map(|(_, n)| n.clone()),
            position: state.dead_letters.get(&id).map(|(d, _)| d.position),
            rows: Vec::new(),
            rows_truncated: false,
        })
    }

    fn probe(&self) -> StoreFuture<'_, ()> {
        self.answer(|_| ())
    }

    fn schema_head(&self) -> StoreFuture<'_, SchemaHead> {
        // Nothing applies schemas to memory: never newer than this build.
        self.answer(|_| SchemaHead::default())
    }
}

/// Whether dead letter `d` is one of `filter`'s, as the PostgreSQL store decides it.
fn matches(filter: &DeadLetterFilter, d: &StoredDeadLetter) -> bool {
    filter.message_id.is_none_or(|id| id == d.message_id)
        && filter
            .reason
            .as_deref()
            .is_none_or(|r| d.reason.to_lowercase().contains(&r.to_lowercase()))
        && filter.since.is_none_or(|t| d.first_seen >= t)
        && filter.class.is_none_or(|c| d.class == c)
        && filter
            .entity
            .as_deref()
            .is_none_or(|e| nomnom::runtime::same_entity_name(&d.entity, e))
}
