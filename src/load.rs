//! `worker load`: a file of one entity's messages — CSV, NDJSON or a JSON array, `.gz` too —
//! read row by row ([`crate::bulk`]), checked like the api checks a batch, and published to
//! JetStream as the api publishes, for the worker to store. Each row's message id derives from
//! the file's content hash and the row's line (or position), so loading the same file again
//! stores nothing twice: JetStream drops the copies inside its de-duplication window, the
//! worker's status rows after it. Memory stays bounded whatever the file size: the reader runs
//! on its own thread, one row at a time, and at most `in_flight` publishes await their acks.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::bulk::{self, BulkError, CheckedRow, Format, Refusal, Row, RowProblem};
use crate::envelope::MessageEnvelope;
use crate::generated::RootEntity;
use crate::nats::{Outgoing, Pipeline, Publish, message_subject};
use crate::runtime::{FieldError, ParseError};

/// Namespace of the message ids of loaded rows (UUIDv5 of the file's hash and the row).
const LOAD_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_6d6e_6f6d_4c6f_9f1d_7a1c_0de5_1d03);

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
    /// Largest row, as JSON (the NATS server's `max_payload` is the natural bound).
    pub max_row_bytes: usize,
    /// Publishes awaiting their acks at once.
    pub in_flight: usize,
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
            max_row_bytes: 1024 * 1024,
            in_flight: 1024,
        })
    }
}

/// The outcome of a load.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    /// Rows read (blank lines not counted).
    pub rows: u64,
    /// Rows JetStream stored (including those it already had).
    pub accepted: u64,
    /// Of those, rows an earlier load of the same file had already published (JetStream
    /// de-duplicated them).
    pub already_loaded: u64,
    /// Rows refused, each written to the rejects file with its reason.
    pub rejected: u64,
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

/// One checked row on its way from the reader thread to the publisher.
enum Checked {
    /// A valid message body.
    Valid(usize, Bytes),
    /// A refused row.
    Rejected(RejectedRow),
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

/// Reads, frames and checks every row of the file on the calling (blocking) thread, sending
/// each to `tx`; returns when the file ends, the receiver is gone, or the file is unreadable.
fn read_rows(
    options: &LoadOptions,
    read: Arc<AtomicU64>,
    tx: tokio::sync::mpsc::Sender<Checked>,
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
    let entity = options.entity;
    let layout: std::sync::OnceLock<crate::runtime::csv::CsvLayout> = std::sync::OnceLock::new();
    // The receiver is gone: stop reading (the publisher already failed).
    struct Stop;
    impl From<BulkError> for Either {
        fn from(e: BulkError) -> Self {
            Either::Bulk(e)
        }
    }
    enum Either {
        Bulk(BulkError),
        Stop(Stop),
    }
    let mut each = |row: Row<'_>| -> Result<(), Either> {
        let checked = match bulk::check_row(entity, row, layout.get()) {
            CheckedRow::Blank => return Ok(()),
            CheckedRow::Valid(line, text) => Checked::Valid(line, Bytes::copy_from_slice(text)),
            CheckedRow::Refused(line, why) => {
                let (error, details) = match why {
                    Refusal::TooLong => (
                        format!(
                            "the row is larger than {} bytes (the largest message)",
                            options.max_row_bytes
                        ),
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
                Checked::Rejected(RejectedRow {
                    line,
                    error,
                    details,
                })
            }
        };
        tx.blocking_send(checked).map_err(|_| Either::Stop(Stop))
    };
    let ready = |l| {
        let _ = layout.set(l);
    };
    let walked = bulk::each_row(
        options.format,
        input,
        entity,
        options.max_row_bytes,
        ready,
        &mut each,
    );
    match walked {
        Ok(()) | Err(Either::Stop(_)) => Ok(()),
        Err(Either::Bulk(BulkError::Io(source))) => Err(LoadError::Io { path, source }),
        Err(Either::Bulk(source)) => Err(LoadError::Bulk { path, source }),
    }
}

/// Where progress is shown: a bar on a terminal, plain lines otherwise, or nowhere.
pub enum Progress {
    /// An indicatif bar over the file's bytes, with rows, rows/s and counts.
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

/// Loads the file: every valid row published to `stream` (awaiting JetStream's ack), every
/// invalid one written to `options.rejects`.
pub async fn load_file(
    publisher: &dyn Publish,
    stream: &str,
    options: &LoadOptions,
    progress: Progress,
) -> Result<LoadReport, LoadError> {
    let started = Instant::now();
    let path = options.path.display().to_string();
    let total = std::fs::metadata(&options.path)
        .map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?
        .len();
    let hash = {
        let p = options.path.clone();
        tokio::task::spawn_blocking(move || content_hash(&p))
            .await
            .map_err(|e| LoadError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| LoadError::Io {
                path: path.clone(),
                source,
            })?
    };
    let read = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Checked>(4096);
    let reader = {
        let options = options.clone();
        let read = read.clone();
        tokio::task::spawn_blocking(move || read_rows(&options, read, tx))
    };
    let bar = match progress {
        Progress::Bar => {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} (ETA {eta})",
            ) {
                bar.set_style(style);
            }
            Some(bar)
        }
        _ => None,
    };
    let every = match progress {
        Progress::Lines { every } => Some(every),
        _ => None,
    };
    let mut last_line = Instant::now();
    let mut last_draw = Instant::now();
    let mut report = LoadReport::default();
    let mut rejects: Option<BufWriter<std::fs::File>> = None;
    let mut pipeline = Pipeline::new(publisher, options.in_flight);
    let entity = options.entity;
    let mut failure: Option<String> = None;
    let show = |report: &LoadReport| {
        let secs = started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{} rows, {:.0} rows/s, {} accepted, {} rejected",
            report.rows,
            report.rows as f64 / secs,
            report.accepted,
            report.rejected
        )
    };
    let mut reading = true;
    loop {
        // At most `in_flight` acks outstanding; finished ones are taken first.
        let row = tokio::select! {
            biased;
            Some(((), acked)) = pipeline.next(), if !pipeline.is_idle() => {
                match acked {
                    Ok(duplicate) => {
                        report.accepted += 1;
                        if duplicate {
                            report.already_loaded += 1;
                        }
                    }
                    Err(e) => failure = Some(e.to_string()),
                }
                continue;
            }
            row = rx.recv(), if reading && failure.is_none() && pipeline.in_flight() < options.in_flight => row,
            else => break,
        };
        let Some(row) = row else {
            reading = false;
            continue;
        };
        report.rows += 1;
        match row {
            Checked::Valid(line, body) => {
                // The entity too: the same file loaded as another entity is other messages.
                let id = Uuid::new_v5(
                    &LOAD_NAMESPACE,
                    format!("{hash}\n{}\n{line}", entity.name()).as_bytes(),
                );
                let envelope = MessageEnvelope::new(id, entity.name(), body);
                let outgoing = Outgoing {
                    subject: message_subject(stream, entity.snake_name(), &id),
                    message: envelope.to_publish(true),
                };
                pipeline.send((), outgoing).await;
            }
            Checked::Rejected(rejected) => {
                report.rejected += 1;
                let writer = match &mut rejects {
                    Some(w) => w,
                    None => {
                        let file = std::fs::File::create(&options.rejects).map_err(|source| {
                            LoadError::Io {
                                path: options.rejects.display().to_string(),
                                source,
                            }
                        })?;
                        rejects.insert(BufWriter::new(file))
                    }
                };
                let line = serde_json::to_string(&rejected).unwrap_or_default();
                writeln!(writer, "{line}").map_err(|source| LoadError::Io {
                    path: options.rejects.display().to_string(),
                    source,
                })?;
            }
        }
        // Redrawn ten times a second, not once per row (the message is formatted each time).
        if let Some(bar) = &bar
            && last_draw.elapsed() >= Duration::from_millis(100)
        {
            last_draw = Instant::now();
            bar.set_position(read.load(Ordering::Relaxed));
            bar.set_message(show(&report));
        }
        if let Some(every) = every
            && last_line.elapsed() >= every
        {
            last_line = Instant::now();
            let done = read.load(Ordering::Relaxed) as f64 * 100.0 / total.max(1) as f64;
            eprintln!("load: {}, {done:.0}% of the file", show(&report));
        }
    }
    drop(rx);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(mut w) = rejects {
        w.flush().map_err(|source| LoadError::Io {
            path: options.rejects.display().to_string(),
            source,
        })?;
    }
    let read_result = reader.await.map_err(|e| LoadError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    if let Some(reason) = failure {
        return Err(LoadError::Publish {
            accepted: report.accepted,
            reason,
        });
    }
    read_result?;
    Ok(report)
}
