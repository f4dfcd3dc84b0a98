//! `worker load`: a file of one entity's messages — CSV, NDJSON or a JSON array, `.gz` too —
//! read row by row ([`crate::bulk`]), checked like the api checks a batch, and published to
//! JetStream in *chunks* ([`MessageChunk`]: up to [`CHUNK_ROWS`] rows or [`CHUNK_BYTES`] of
//! JSON in one message), which the worker stores with one status row per chunk.
//!
//! Three stages run at once: a reader thread frames rows (and turns CSV records into JSON) and
//! cuts them into chunks; checker threads (one per core) parse every row with the generated
//! parser; the publisher sends the checked chunks in file order, several awaiting their acks.
//! A chunk's id derives from the file's content hash, the entity and the chunk's index, and
//! chunk boundaries depend on the file alone, so loading the same file again — after a crash
//! at any point — publishes only the chunks the database does not hold yet (JetStream drops
//! copies within its de-duplication window, the worker skips members already stored after it).
//!
//! Memory is bounded by the settings, whatever the file size: about
//! `(READ_AHEAD + checkers + in_flight)` chunks of at most [`CHUNK_BYTES`] (plus one row),
//! with the reader's buffers — some 30 MiB with the defaults on two cores.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::bulk::{self, BulkError, CheckedRow, Format, Refusal, Row, RowProblem};
use crate::envelope::{
    CHUNK_BYTES, CHUNK_ROWS, MAX_CHUNK_MEMBERS, MessageChunk, SchemaVersion, chunk_of,
};
use crate::generated::RootEntity;
use crate::nats::{Outgoing, Pipeline, Publish, message_subject};
use crate::runtime::csv::CsvLayout;
use crate::runtime::{FieldError, ParseError};
use crate::store::Store;

/// Namespace of the ids of loaded chunks (UUIDv5 of the file's hash and the entity).
const LOAD_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_6d6e_6f6d_4c6f_9f1d_7a1c_0de5_1d03);

/// Chunks read ahead of the checkers.
const READ_AHEAD: usize = 4;

/// What to load and how.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The entity every row is a message of.
    pub entity: RootEntity,
    /// The file.
    pub path: PathBuf,
    /// Its framing.
    pub format: Format,
    /// Whether it is gzip-compressed.
    pub gzip: bool,
    /// Where rejected rows are written (NDJSON: line, error, details), created only if any.
    pub rejects: PathBuf,
    /// Largest row, as JSON (the NATS server's `max_payload`, less a chunk's headers).
    pub max_row_bytes: usize,
    /// Chunks awaiting their acks at once.
    pub in_flight: usize,
    /// Threads checking rows (default: one per core).
    pub checkers: usize,
}

impl LoadOptions {
    /// Options for `path`: its format `format`, else the one its name says; compression from
    /// its name; rejects go to `<path>.rejected.ndjson`.
    pub fn for_file(
        entity: RootEntity,
        path: &Path,
        format: Option<Format>,
    ) -> Result<Self, LoadError> {
        let (by_name, gzip) = Format::from_path(path);
        let format = format
            .or(by_name)
            .ok_or_else(|| LoadError::Format(path.display().to_string()))?;
        let mut rejects = path.as_os_str().to_owned();
        rejects.push(".rejected.ndjson");
        Ok(Self {
            entity,
            path: path.to_path_buf(),
            format,
            gzip,
            rejects: rejects.into(),
            max_row_bytes: 1024 * 1024 - MessageChunk::overhead(1),
            in_flight: 8,
            checkers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    /// The largest JetStream message a load of these options publishes (a full chunk, or a
    /// chunk of one row of `max_row_bytes`), to compare with the server's `max_payload`.
    pub fn largest_message(&self) -> usize {
        (CHUNK_BYTES + MessageChunk::overhead(CHUNK_ROWS))
            .max(self.max_row_bytes + MessageChunk::overhead(1))
    }
}

/// The outcome of a load.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Rows read (blank lines not counted).
    pub rows: u64,
    /// Valid rows the stream or the database holds (including those it already had).
    pub accepted: u64,
    /// Of those, rows an earlier load of the same file had already published: in chunks the
    /// database had stored (not sent again) or JetStream had (de-duplicated).
    pub already_loaded: u64,
    /// Rows refused, each written to the rejects file with its reason.
    pub rejected: u64,
    /// Chunks published now.
    pub chunks_sent: u64,
}

/// A load that could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file's name says no known format.
    #[error(
        "cannot tell the format of {0}: name it .csv, .tbl, .ndjson, .jsonl or .json (optionally .gz), or pass --format"
    )]
    Format(String),
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file as a whole is not of its format (a bad CSV header, not one JSON array).
    #[error("{path}: {source}")]
    Bulk {
        /// The file.
        path: String,
        /// Why.
        source: BulkError,
    },
    /// JetStream refused or did not answer; nothing is lost (load again: stored rows are
    /// not stored twice).
    #[error(
        "publishing failed after {accepted} rows were stored (loading the file again is safe): {reason}"
    )]
    Publish {
        /// Rows stored before the failure.
        accepted: u64,
        /// Why.
        reason: String,
    },
}

/// One framed row, owned, on its way from the reader to a checker.
enum RawRow {
    /// JSON text (a CSV record already converted) and its line.
    Text(usize, Bytes),
    /// Longer than the largest message: not read.
    TooLong(usize),
    /// A CSV record whose cells do not convert.
    Invalid(usize, RowProblem),
}

/// Rows cut from the file, in order: the `index`th chunk.
struct RawChunk {
    index: u32,
    rows: Vec<RawRow>,
    layout: Option<Arc<CsvLayout>>,
}

/// A chunk after checking: the valid rows (line, JSON) and the refused ones.
struct CheckedChunk {
    index: u32,
    rows: u64,
    valid: Vec<(u64, Bytes)>,
    rejected: Vec<RejectedRow>,
}

/// A line of the rejects file.
#[derive(Debug, Serialize)]
struct RejectedRow {
    /// CSV or NDJSON line, or array position.
    line: usize,
    /// Why it was refused.
    error: String,
    /// Field errors, when the row did not match the entity.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<FieldError>,
}

/// Counts the bytes read from the file (its compressed bytes for `.gz`), for progress.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The SHA-256 of a file's bytes, as hex.
fn content_hash(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The ids of one load (a file's content loaded as one entity): its chunks' ids share their
/// first ten bytes, so the database's status rows of a load are one range of its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadIds {
    prefix: [u8; 10],
}

impl LoadIds {
    /// The ids of loading content `hash` as `entity` (the same file loaded as another entity
    /// is other messages).
    pub fn new(hash: &str, entity: RootEntity) -> Self {
        let seed = Uuid::new_v5(
            &LOAD_NAMESPACE,
            format!("{hash}\n{}", entity.name()).as_bytes(),
        );
        let mut prefix = [0u8; 10];
        prefix.copy_from_slice(&seed.as_bytes()[..10]);
        // The RFC variant bits stay; byte 9 is free for the load.
        prefix[9] = 0;
        Self { prefix }
    }

    /// The id of chunk `index` (its members' ids add their index in the last two bytes).
    pub fn chunk(&self, index: u32) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..10].copy_from_slice(&self.prefix);
        bytes[10..14].copy_from_slice(&index.to_be_bytes());
        Uuid::from_bytes(bytes)
    }

    /// The first and the last id any chunk or member of this load can have.
    pub fn range(&self) -> (Uuid, Uuid) {
        let mut last = [0xffu8; 16];
        last[..10].copy_from_slice(&self.prefix);
        (self.chunk(0), Uuid::from_bytes(last))
    }

    /// The chunk index of an id of this load.
    fn index_of(&self, id: &Uuid) -> Option<u32> {
        let b = id.as_bytes();
        (b[..10] == self.prefix).then(|| u32::from_be_bytes([b[10], b[11], b[12], b[13]]))
    }
}

/// Members of each chunk of this load the database covers already (stored or dead-lettered),
/// by chunk index; empty without a store or when it cannot answer (then every chunk is sent,
/// and the worker skips what it holds).
async fn covered_members(store: Option<&dyn Store>, ids: &LoadIds) -> HashMap<u32, u64> {
    let Some(store) = store else {
        return HashMap::new();
    };
    let (first, last) = ids.range();
    match store.status_runs(first, last).await {
        Ok(runs) => {
            let mut covered: HashMap<u32, u64> = HashMap::new();
            for (id, members) in runs {
                if let Some(index) = ids.index_of(&chunk_of(&id).0) {
                    *covered.entry(index).or_default() += u64::try_from(members).unwrap_or(0);
                }
            }
            covered
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read which chunks the database holds; sending every chunk (the worker stores none twice)");
            HashMap::new()
        }
    }
}

/// Reads and frames every row of the file on the calling (blocking) thread, cutting chunks of
/// at most [`CHUNK_ROWS`] rows and [`CHUNK_BYTES`] of JSON and sending each to `tx`; returns
/// when the file ends, the receiver is gone, or the file is unreadable.
fn read_chunks(
    options: &LoadOptions,
    read: Arc<AtomicU64>,
    tx: tokio::sync::mpsc::Sender<RawChunk>,
) -> Result<(), LoadError> {
    let path = options.path.display().to_string();
    let file = std::fs::File::open(&options.path).map_err(|source| LoadError::Io {
        path: path.clone(),
        source,
    })?;
    let counted = Counting {
        inner: BufReader::with_capacity(256 * 1024, file),
        read,
    };
    let input: Box<dyn Read> = if options.gzip {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(counted)))
    } else {
        Box::new(counted)
    };
    // The receiver is gone: stop reading (the publisher already failed).
    struct Stop;
    enum Either {
        Bulk(BulkError),
        Stop(Stop),
    }
    impl From<BulkError> for Either {
        fn from(e: BulkError) -> Self {
            Either::Bulk(e)
        }
    }
    let layout: std::cell::RefCell<Option<Arc<CsvLayout>>> = Default::default();
    let mut chunk = RawChunk {
        index: 0,
        rows: Vec::new(),
        layout: None,
    };
    let mut bytes = 0usize;
    let send = |chunk: &mut RawChunk| -> Result<(), Either> {
        let next = RawChunk {
            index: chunk.index + 1,
            rows: Vec::new(),
            layout: layout.borrow().clone(),
        };
        let full = std::mem::replace(chunk, next);
        tx.blocking_send(full).map_err(|_| Either::Stop(Stop))
    };
    let mut each = |row: Row<'_>| -> Result<(), Either> {
        let (raw, size) = match row {
            Row::Text(line, text) => (RawRow::Text(line, Bytes::copy_from_slice(text)), text.len()),
            Row::TooLong(line) => (RawRow::TooLong(line), 0),
            Row::Invalid(line, problem) => (RawRow::Invalid(line, problem), 0),
        };
        if !chunk.rows.is_empty() && (chunk.rows.len() >= CHUNK_ROWS || bytes + size > CHUNK_BYTES)
        {
            send(&mut chunk)?;
            bytes = 0;
        }
        if chunk.layout.is_none() {
            chunk.layout = layout.borrow().clone();
        }
        chunk.rows.push(raw);
        bytes += size;
        Ok(())
    };
    let ready = |l| {
        *layout.borrow_mut() = Some(Arc::new(l));
    };
    let walked = bulk::each_row(
        options.format,
        input,
        options.entity,
        options.max_row_bytes,
        ready,
        &mut each,
    );
    let walked = walked.and_then(|()| {
        if chunk.rows.is_empty() {
            Ok(())
        } else {
            send(&mut chunk)
        }
    });
    match walked {
        Ok(()) | Err(Either::Stop(_)) => Ok(()),
        Err(Either::Bulk(BulkError::Io(source))) => Err(LoadError::Io { path, source }),
        Err(Either::Bulk(source)) => Err(LoadError::Bulk { path, source }),
    }
}

/// Checks every row of a chunk with the generated validator (a blocking thread's work).
fn check_chunk(entity: RootEntity, max_row_bytes: usize, chunk: RawChunk) -> CheckedChunk {
    let mut out = CheckedChunk {
        index: chunk.index,
        rows: 0,
        valid: Vec::with_capacity(chunk.rows.len()),
        rejected: Vec::new(),
    };
    let layout = chunk.layout.as_deref();
    for raw in chunk.rows {
        let (row, text) = match &raw {
            RawRow::Text(line, text) => (Row::Text(*line, text), Some(text)),
            RawRow::TooLong(line) => (Row::TooLong(*line), None),
            RawRow::Invalid(line, problem) => (Row::Invalid(*line, problem.clone()), None),
        };
        let (line, why) = match bulk::check_row(entity, row, layout) {
            CheckedRow::Blank => continue,
            CheckedRow::Valid(line, _) => {
                out.rows += 1;
                if let Some(text) = text {
                    out.valid.push((line as u64, text.clone()));
                }
                continue;
            }
            CheckedRow::Refused(line, why) => (line, why),
        };
        out.rows += 1;
        let (error, details) = match why {
            Refusal::TooLong => (
                format!("the row is larger than {max_row_bytes} bytes (the largest message)"),
                Vec::new(),
            ),
            Refusal::NotUtf8 => (RowProblem::NotUtf8.to_string(), Vec::new()),
            Refusal::Cells(errors) => ("cells that do not convert".to_string(), errors),
            Refusal::Message(ParseError::Invalid(details)) => (
                format!("the row does not match entity `{}`", entity.name()),
                details,
            ),
            Refusal::Message(other) => (other.to_string(), Vec::new()),
        };
        out.rejected.push(RejectedRow {
            line,
            error,
            details,
        });
    }
    out
}

/// Where progress is shown: a bar on a terminal, plain lines otherwise, or nowhere.
pub enum Progress {
    /// An indicatif bar over the file's bytes, with rows, rows/s, rejects and the ETA.
    Bar,
    /// A line on stderr every `every`.
    Lines {
        /// How often.
        every: Duration,
    },
    /// Nothing (tests, libraries).
    Silent,
}

impl Progress {
    /// A bar when stderr is a terminal, else a line every 10 s.
    pub fn for_stderr() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            Progress::Bar
        } else {
            Progress::Lines {
                every: Duration::from_secs(10),
            }
        }
    }
}

/// What the publisher shows while it works.
struct Shown {
    bar: Option<indicatif::ProgressBar>,
    every: Option<Duration>,
    last: Instant,
    started: Instant,
    total: u64,
    read: Arc<AtomicU64>,
}

impl Shown {
    fn new(progress: Progress, total: u64, read: Arc<AtomicU64>) -> Self {
        let bar = matches!(progress, Progress::Bar).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let every = match progress {
            Progress::Lines { every } => Some(every),
            _ => None,
        };
        Self {
            bar,
            every,
            last: Instant::now(),
            started: Instant::now(),
            total,
            read,
        }
    }

    fn counts(&self, report: &LoadReport) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{} rows, {:.0} rows/s, {} rejected, {} already loaded",
            report.rows,
            report.rows as f64 / secs,
            report.rejected,
            report.already_loaded
        )
    }

    /// Called once per chunk: redraws the bar, or prints a line when one is due.
    fn update(&mut self, report: &LoadReport) {
        let read = self.read.load(Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_position(read);
            bar.set_message(self.counts(report));
        }
        if let Some(every) = self.every
            && self.last.elapsed() >= every
        {
            self.last = Instant::now();
            let done = read as f64 / self.total.max(1) as f64;
            let secs = self.started.elapsed().as_secs_f64();
            let eta = if done > 0.0 {
                format!(", about {:.0} s to go", secs / done - secs)
            } else {
                String::new()
            };
            eprintln!(
                "load: {}, {:.0}% of the file ({} of {} bytes){eta}",
                self.counts(report),
                done * 100.0,
                read,
                self.total
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Loads the file: every valid row published to `stream` in chunks (each awaiting JetStream's
/// ack), every invalid one written to `options.rejects`. With `store`, chunks the database
/// already holds whole are not sent again (a re-run, or a load resumed after a crash).
pub async fn load_file(
    publisher: &dyn Publish,
    store: Option<&dyn Store>,
    stream: &str,
    options: &LoadOptions,
    progress: Progress,
) -> Result<LoadReport, LoadError> {
    let path = options.path.display().to_string();
    let io = |source| LoadError::Io {
        path: path.clone(),
        source,
    };
    let total = std::fs::metadata(&options.path).map_err(io)?.len();
    let hash = {
        let p = options.path.clone();
        tokio::task::spawn_blocking(move || content_hash(&p))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?
    };
    let entity = options.entity;
    let ids = LoadIds::new(&hash, entity);
    let covered = covered_members(store, &ids).await;
    let read = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::mpsc::channel::<RawChunk>(READ_AHEAD);
    let reader = {
        let options = options.clone();
        let read = read.clone();
        tokio::task::spawn_blocking(move || read_chunks(&options, read, tx))
    };
    // Checked on blocking threads, `checkers` at a time, handed on in file order.
    let max_row = options.max_row_bytes;
    let mut checked = Box::pin(
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .map(|chunk| tokio::task::spawn_blocking(move || check_chunk(entity, max_row, chunk)))
        .buffered(options.checkers.max(1)),
    );
    let mut shown = Shown::new(progress, total, read);
    let mut report = LoadReport::default();
    let mut rejects: Option<BufWriter<std::fs::File>> = None;
    let mut pipeline = Pipeline::new(publisher, options.in_flight.max(1));
    let mut failure: Option<String> = None;
    let mut reading = true;
    let rejects_io = |source| LoadError::Io {
        path: options.rejects.display().to_string(),
        source,
    };
    let received_at = chrono::Utc::now();
    loop {
        // At most `in_flight` chunks unacknowledged; finished acks are taken first.
        let next = tokio::select! {
            biased;
            Some((rows, acked)) = pipeline.next(), if !pipeline.is_idle() => {
                match acked {
                    Ok(duplicate) => {
                        report.accepted += rows;
                        if duplicate {
                            report.already_loaded += rows;
                        }
                    }
                    Err(e) => failure = Some(e.to_string()),
                }
                continue;
            }
            next = checked.next(), if reading && failure.is_none() && pipeline.in_flight() < options.in_flight.max(1) => next,
            else => break,
        };
        let Some(chunk) = next else {
            reading = false;
            continue;
        };
        let chunk = chunk.map_err(|e| io(std::io::Error::other(e)))?;
        report.rows += chunk.rows;
        for rejected in &chunk.rejected {
            report.rejected += 1;
            let writer = match &mut rejects {
                Some(w) => w,
                None => rejects.insert(BufWriter::new(
                    std::fs::File::create(&options.rejects).map_err(rejects_io)?,
                )),
            };
            let line = serde_json::to_string(rejected).unwrap_or_default();
            writeln!(writer, "{line}").map_err(rejects_io)?;
        }
        let rows = chunk.valid.len() as u64;
        debug_assert!(chunk.valid.len() <= MAX_CHUNK_MEMBERS);
        if rows > 0 && covered.get(&chunk.index).copied().unwrap_or(0) >= rows {
            // The database holds every row of this chunk: a re-run skips it.
            report.accepted += rows;
            report.already_loaded += rows;
        } else if rows > 0 {
            let id = ids.chunk(chunk.index);
            let (lines, bodies) = chunk.valid.into_iter().unzip();
            let message = MessageChunk {
                id,
                entity: entity.name().to_string(),
                received_at,
                lines,
                bodies,
                schema: Some(SchemaVersion::own()),
            };
            let outgoing = Outgoing {
                subject: message_subject(stream, entity.snake_name(), &id),
                message: message.to_publish(),
            };
            report.chunks_sent += 1;
            pipeline.send(rows, outgoing).await;
        }
        shown.update(&report);
    }
    drop(checked);
    shown.finish();
    if let Some(mut w) = rejects {
        w.flush().map_err(rejects_io)?;
    }
    let read_result = reader.await.map_err(|e| io(std::io::Error::other(e)))?;
    if let Some(reason) = failure {
        return Err(LoadError::Publish {
            accepted: report.accepted,
            reason,
        });
    }
    read_result?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loads_ids_share_a_prefix_and_its_range_holds_every_chunk_and_member() {
        let entity = RootEntity::ALL[0];
        let ids = LoadIds::new("abc", entity);
        assert_ne!(ids, LoadIds::new("abd", entity));
        let (first, last) = ids.range();
        for index in [0u32, 1, 4096, u32::MAX] {
            let chunk = ids.chunk(index);
            assert_eq!(chunk_of(&chunk), (chunk, 0));
            assert_eq!(ids.index_of(&chunk), Some(index));
            let member = crate::envelope::chunk_member_id(&chunk, 65_535);
            assert!(first <= chunk && member <= last, "{index}");
            assert_eq!(ids.index_of(&chunk_of(&member).0), Some(index));
        }
        assert_eq!(ids.chunk(7).get_variant(), uuid::Variant::RFC4122);
        assert_eq!(ids.index_of(&Uuid::now_v7()), None);
    }
}
