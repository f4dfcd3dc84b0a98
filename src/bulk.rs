//! Many messages in one body or file: NDJSON lines, JSON array elements and CSV rows, each
//! handed on as one message's JSON text with its line (or position). The api's batch route
//! reads request bodies with these, the loader (`worker load`) files; both then check and
//! publish every row the same way. Memory stays bounded: NDJSON holds one line, arrays one
//! element, CSV one record (plus a window of recent bytes for line numbers).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use crate::generated::RootEntity;
use crate::runtime::csv::CsvLayout;
use crate::runtime::{FieldError, ParseError};

/// One row of a bulk body: a message's JSON text, or why there is none.
pub enum Row<'a> {
    /// The JSON text of one message, with its line (NDJSON, CSV) or position (array).
    Text(usize, &'a [u8]),
    /// Longer than the per-message limit; not read into memory.
    TooLong(usize),
    /// A CSV row whose cells do not convert (its JSON never existed).
    Invalid(usize, RowProblem),
}

/// Why a CSV row has no JSON.
#[derive(Debug, Clone)]
pub enum RowProblem {
    /// The row is not UTF-8 text.
    NotUtf8,
    /// Cells that do not convert, each naming its column.
    Cells(Vec<FieldError>),
}

impl std::fmt::Display for RowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowProblem::NotUtf8 => f.write_str("the row is not UTF-8 text"),
            RowProblem::Cells(errors) => {
                let shown: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.error))
                    .collect();
                f.write_str(&shown.join("; "))
            }
        }
    }
}

/// How the rows of a body or file are framed: the one list of input formats (the batch route,
/// `worker load --format`, the OpenAPI document's batch bodies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV, as the entity's `csv:` block says.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// One JSON array of objects.
    Json,
}

impl Format {
    /// The media types of batch bodies, for a 415's answer.
    pub const MEDIA_TYPES: &'static str = "application/x-ndjson (one JSON object per line), application/json (an array of objects) or text/csv";

    /// What a batch's media type (lower case, no parameters) says: `Some(Some(format))` for a
    /// type of one format, `Some(None)` for JSON and NDJSON types (the body's first byte then
    /// decides: `[` an array, else NDJSON), `None` for a type no format has.
    pub fn from_media_type(mime: &str) -> Option<Option<Self>> {
        match mime {
            "text/csv" | "application/csv" => Some(Some(Format::Csv)),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines"
            | "application/json" => Some(None),
            m if m.starts_with("application/") && m.ends_with("+json") => Some(None),
            _ => None,
        }
    }

    /// The format a file name says (`.csv`, `.tbl`, `.tsv`; `.ndjson`, `.jsonl`; `.json`),
    /// and whether it is gzip-compressed (`.gz`).
    pub fn from_path(path: &Path) -> (Option<Self>, bool) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let (name, gzip) = match name.strip_suffix(".gz") {
            Some(inner) => (inner.to_string(), true),
            None => (name, false),
        };
        let ext = name.rsplit('.').next().unwrap_or("");
        let format = match ext {
            "csv" | "tbl" | "tsv" | "txt" => Some(Self::Csv),
            "ndjson" | "jsonl" => Some(Self::Ndjson),
            "json" => Some(Self::Json),
            _ => None,
        };
        (format, gzip)
    }
}

/// Walks every row of `input` as `format` frames it, streaming (one row in memory at a time);
/// `layout_ready` gets a CSV file's layout once its header is read.
pub fn each_row<R: Read, E: From<BulkError>>(
    format: Format,
    input: R,
    entity: RootEntity,
    max_row: usize,
    layout_ready: impl FnOnce(CsvLayout),
    each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
) -> Result<(), E> {
    match format {
        Format::Csv => each_csv_row(input, entity, max_row, layout_ready, each),
        Format::Ndjson => each_ndjson_line(input, max_row, each),
        Format::Json => each_array_element_read(input, max_row, each),
    }
}

/// Reads a body that arrives in chunks (the api's batch route) with the same row readers as
/// [`each_row`]: the format is given (CSV, by content type) or decided by the first byte that
/// is not white space (`[`: a JSON array; anything else: NDJSON). NDJSON rows are handed over
/// as their lines complete, holding at most one line; a JSON array or CSV is kept (the caller
/// bounds the body) and walked by [`ChunkWalker::finish`].
pub struct ChunkWalker {
    format: Option<Format>,
    entity: RootEntity,
    max_row: usize,
    splitter: LineSplitter,
    /// Line breaks before the format was known: a JSON array keeps them, so its errors keep
    /// their line numbers.
    leading_newlines: usize,
    /// Over-long white-space lines before the format was known (NDJSON rows after all).
    leading_too_long: Vec<usize>,
    kept: Vec<u8>,
}

impl ChunkWalker {
    /// A walker of rows of `entity`, each at most `max_row` bytes; `format` when known up front.
    pub fn new(format: Option<Format>, entity: RootEntity, max_row: usize) -> Self {
        Self {
            format,
            entity,
            max_row,
            splitter: LineSplitter::new(max_row),
            leading_newlines: 0,
            leading_too_long: Vec::new(),
            kept: Vec::new(),
        }
    }

    /// Feeds the next chunk; calls `each` for every NDJSON row it completes (stops at the
    /// first `Err`).
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.format {
            Some(Format::Json | Format::Csv) => {
                self.kept.extend_from_slice(chunk);
                Ok(())
            }
            Some(Format::Ndjson) => self.splitter.feed(chunk, each),
            None => self.sniff(chunk, each),
        }
    }

    /// Leading white space is not kept: it goes through the line splitter (which notes
    /// over-long lines) and its line breaks are counted; the first other byte decides.
    fn sniff<E>(
        &mut self,
        chunk: &[u8],
        each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let first = chunk.iter().position(|b| !b.is_ascii_whitespace());
        let blank = &chunk[..first.unwrap_or(chunk.len())];
        self.leading_newlines += blank.iter().filter(|b| **b == b'\n').count();
        let too_long = &mut self.leading_too_long;
        self.splitter
            .feed(blank, &mut |row: Row<'_>| {
                if let Row::TooLong(n) = row {
                    too_long.push(n);
                }
                Ok::<(), std::convert::Infallible>(())
            })
            .unwrap_or_else(|never| match never {});
        let Some(first) = first else {
            return Ok(());
        };
        if chunk[first] == b'[' {
            self.format = Some(Format::Json);
            self.kept.resize(self.leading_newlines, b'\n');
            self.kept.extend_from_slice(&chunk[first..]);
            return Ok(());
        }
        self.format = Some(Format::Ndjson);
        for n in std::mem::take(&mut self.leading_too_long) {
            each(Row::TooLong(n))?;
        }
        self.splitter.feed(&chunk[first..], each)
    }

    /// The body is complete: walks a kept JSON array or CSV (`layout_ready` gets the CSV
    /// header's layout first), or hands over NDJSON's last line.
    pub fn finish<E: From<BulkError>>(
        mut self,
        layout_ready: impl FnOnce(CsvLayout),
        each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self.format {
            Some(Format::Json) => each_array_element(&self.kept[..], self.max_row, each),
            Some(Format::Csv) => each_csv_row(
                &self.kept[..],
                self.entity,
                self.max_row,
                layout_ready,
                each,
            ),
            // NDJSON, or nothing but white space.
            _ => {
                for n in std::mem::take(&mut self.leading_too_long) {
                    each(Row::TooLong(n))?;
                }
                self.splitter.finish(each)
            }
        }
    }
}

/// One row checked as the api checks a message: what the batch route and the loader both do
/// with every row, so a row is judged the same whichever way it arrives.
pub enum CheckedRow<'a> {
    /// White space only: not a row (blank NDJSON lines).
    Blank,
    /// A valid message: its line and its JSON text.
    Valid(usize, &'a [u8]),
    /// A refused row: its line and why.
    Refused(usize, Refusal),
}

/// Why a row was refused.
#[derive(Debug)]
pub enum Refusal {
    /// Longer than the largest message (it was not read into memory).
    TooLong,
    /// A CSV row that is not UTF-8 text.
    NotUtf8,
    /// CSV cells that do not convert, each naming its column.
    Cells(Vec<FieldError>),
    /// The JSON is not an object, or not the entity's: field errors name the CSV column when
    /// the row came from CSV.
    Message(ParseError),
}

/// Checks one row against `entity` with the generated validator (`layout`: the CSV layout the
/// row was read with, whose column names the field errors then carry).
pub fn check_row<'a>(
    entity: RootEntity,
    row: Row<'a>,
    layout: Option<&CsvLayout>,
) -> CheckedRow<'a> {
    match row {
        Row::Text(_, text) if text.iter().all(u8::is_ascii_whitespace) => CheckedRow::Blank,
        Row::Text(line, text) => {
            let checked = crate::runtime::parse_json_object(text).and_then(|doc| {
                entity
                    .validate_json(doc.root())
                    .map_err(ParseError::Invalid)
            });
            match (checked, layout) {
                (Ok(()), _) => CheckedRow::Valid(line, text),
                (Err(ParseError::Invalid(errors)), Some(layout)) => CheckedRow::Refused(
                    line,
                    Refusal::Message(ParseError::Invalid(csv_columns(entity, layout, errors))),
                ),
                (Err(e), _) => CheckedRow::Refused(line, Refusal::Message(e)),
            }
        }
        Row::TooLong(line) => CheckedRow::Refused(line, Refusal::TooLong),
        Row::Invalid(line, RowProblem::NotUtf8) => CheckedRow::Refused(line, Refusal::NotUtf8),
        Row::Invalid(line, RowProblem::Cells(errors)) => {
            CheckedRow::Refused(line, Refusal::Cells(errors))
        }
    }
}

/// A body or file that cannot be read as a whole (as opposed to one bad row).
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The CSV header (or `csv.columns`) does not fit the entity.
    #[error("CSV header: {0}")]
    Header(String),
    /// Not CSV, or not one JSON array.
    #[error("{0}")]
    Malformed(String),
    /// A JSON array body that is not JSON, with serde_json's position.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// What is wrong.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// One record (a CSV record, an array element) grew past the per-message limit while it
    /// was read: an unterminated quote, or an element too large to hold. Reading stops there.
    #[error(
        "{what} starting at {at} is longer than {limit} bytes (the largest message); reading stopped there{hint}"
    )]
    RecordTooLong {
        /// `a CSV record` or `an array element`.
        what: &'static str,
        /// `line N` or `element N`.
        at: String,
        /// The limit.
        limit: usize,
        /// What usually causes it.
        hint: &'static str,
    },
}

/// How far a reader may go past the start of the record being read, shared between the
/// reader and the loop that knows where records begin. Reading past it fails with
/// [`RecordBudget::OVER`] as the error's text, turned into [`BulkError::RecordTooLong`].
#[derive(Default)]
struct RecordBudget {
    read: std::cell::Cell<u64>,
    record_start: std::cell::Cell<u64>,
    limit: u64,
}

impl RecordBudget {
    const OVER: &'static str = "nomnom: record over its budget";

    fn new(limit: usize) -> Rc<Self> {
        Rc::new(Self {
            limit: limit as u64,
            ..Default::default()
        })
    }

    /// A new record begins after `consumed` bytes of input.
    fn record_starts_at(&self, consumed: u64) {
        self.record_start.set(consumed);
    }

    /// `n` more bytes were read: an error once the record in progress is over the limit.
    fn add(&self, n: usize) -> std::io::Result<()> {
        let read = self.read.get() + n as u64;
        self.read.set(read);
        if read.saturating_sub(self.record_start.get()) > self.limit {
            return Err(std::io::Error::other(Self::OVER));
        }
        Ok(())
    }

    fn is_over(e: &(dyn std::error::Error + 'static)) -> bool {
        e.to_string().contains(Self::OVER)
    }
}

/// A reader that counts what it reads against a [`RecordBudget`].
struct Budgeted<R> {
    inner: R,
    budget: Rc<RecordBudget>,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget.add(n)?;
        Ok(n)
    }
}

/// Splits a streamed body into lines as it arrives, holding at most one line (up to
/// `max_line` bytes; a longer line is reported, not buffered).
pub struct LineSplitter {
    partial: Vec<u8>,
    overlong: bool,
    max_line: usize,
    number: usize,
}

impl LineSplitter {
    /// A splitter refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            overlong: false,
            max_line,
            number: 0,
        }
    }

    /// Feeds a chunk; calls `each` for every line it completes (stops early on `Err`).
    pub fn feed<E>(
        &mut self,
        mut chunk: &[u8],
        each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            let piece = &chunk[..pos];
            chunk = &chunk[pos + 1..];
            self.number += 1;
            if self.overlong || self.partial.len() + piece.len() > self.max_line {
                self.overlong = false;
                self.partial.clear();
                each(Row::TooLong(self.number))?;
            } else if self.partial.is_empty() {
                each(Row::Text(self.number, piece))?;
            } else {
                self.partial.extend_from_slice(piece);
                let line = std::mem::take(&mut self.partial);
                each(Row::Text(self.number, &line))?;
            }
        }
        if !self.overlong {
            if self.partial.len() + chunk.len() > self.max_line {
                self.overlong = true;
                self.partial = Vec::new();
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
        Ok(())
    }

    /// The last line, when the body does not end with a newline.
    pub fn finish<E>(&mut self, each: &mut impl FnMut(Row<'_>) -> Result<(), E>) -> Result<(), E> {
        if self.overlong {
            self.number += 1;
            self.overlong = false;
            return each(Row::TooLong(self.number));
        }
        if self.partial.is_empty() {
            return Ok(());
        }
        self.number += 1;
        let line = std::mem::take(&mut self.partial);
        each(Row::Text(self.number, &line))
    }
}

/// Every line of an NDJSON input (blank lines included: the caller skips them).
pub fn each_ndjson_line<R: Read, E: From<BulkError>>(
    mut input: R,
    max_line: usize,
    each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut splitter = LineSplitter::new(max_line);
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buffer).map_err(BulkError::from)?;
        if n == 0 {
            return splitter.finish(each);
        }
        splitter.feed(&buffer[..n], each)?;
    }
}

/// Walks the elements of one JSON array, each as its raw text `T` (borrowed from a slice, or
/// boxed when read from a stream), calling `each` until it fails.
struct Walk<'f, F, E, T> {
    each: &'f mut F,
    stopped: &'f mut Option<E>,
    max_element: usize,
    /// For a streamed array: told where each element begins.
    budget: Option<Rc<RecordBudget>>,
    element: std::marker::PhantomData<T>,
}

impl<'de, E, F, T> serde::de::Visitor<'de> for Walk<'_, F, E, T>
where
    F: FnMut(Row<'_>) -> Result<(), E>,
    T: serde::Deserialize<'de> + std::ops::Deref<Target = serde_json::value::RawValue>,
{
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of objects")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        let mut index = 0;
        loop {
            if let Some(budget) = &self.budget {
                budget.record_starts_at(budget.read.get());
            }
            let Some(raw) = seq.next_element::<T>()? else {
                break;
            };
            index += 1;
            let text = raw.get().as_bytes();
            let row = if text.len() > self.max_element {
                Row::TooLong(index)
            } else {
                Row::Text(index, text)
            };
            if let Err(e) = (self.each)(row) {
                *self.stopped = Some(e);
                return Err(A::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// Runs a [`Walk`] over one deserializer; input that is not one JSON array is a
/// [`BulkError::Json`] with the position of the problem.
fn walk_array<'de, R, T, E, F>(
    mut de: serde_json::Deserializer<R>,
    max_element: usize,
    budget: Option<Rc<RecordBudget>>,
    each: &mut F,
) -> Result<(), E>
where
    R: serde_json::de::Read<'de>,
    T: serde::Deserialize<'de> + std::ops::Deref<Target = serde_json::value::RawValue>,
    E: From<BulkError>,
    F: FnMut(Row<'_>) -> Result<(), E>,
{
    use serde::de::Deserializer as _;
    let mut stopped = None;
    let mut elements = 0usize;
    let counting = &mut elements;
    let mut counted = |row: Row<'_>| {
        *counting += 1;
        each(row)
    };
    let walked = (&mut de)
        .deserialize_seq(Walk::<_, E, T> {
            each: &mut counted,
            stopped: &mut stopped,
            max_element,
            budget,
            element: std::marker::PhantomData,
        })
        .and_then(|()| de.end());
    if let Some(e) = stopped {
        return Err(e);
    }
    walked.map_err(|e| {
        if e.is_io() && RecordBudget::is_over(&e) {
            BulkError::RecordTooLong {
                what: "an array element",
                at: format!("element {}", elements + 1),
                limit: max_element,
                hint: "",
            }
        } else if e.is_io() {
            BulkError::Io(std::io::Error::other(e.to_string()))
        } else {
            BulkError::Json {
                message: e.to_string(),
                line: e.line(),
                column: e.column(),
            }
        }
        .into()
    })
}

/// Every element of a JSON array held in memory (1-based position, the element's text as
/// written, borrowed), one at a time; stops at the first `Err` of `each`.
pub fn each_array_element<E: From<BulkError>>(
    body: &[u8],
    max_element: usize,
    each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
) -> Result<(), E> {
    walk_array::<_, &serde_json::value::RawValue, _, _>(
        serde_json::Deserializer::from_slice(body),
        max_element,
        None,
        each,
    )
}

/// The same for a JSON array read from a stream (a file): one element in memory at a time,
/// and an element that grows past `max_element` (plus room for the bytes between elements) is
/// an error while it is read, never held whole.
pub fn each_array_element_read<R: Read, E: From<BulkError>>(
    input: R,
    max_element: usize,
    each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let budget = RecordBudget::new(max_element + 64 * 1024);
    let input = Budgeted {
        inner: input,
        budget: budget.clone(),
    };
    walk_array::<_, Box<serde_json::value::RawValue>, _, _>(
        serde_json::Deserializer::from_reader(input),
        max_element,
        Some(budget),
        each,
    )
}

/// The last bytes read from an input with the offset of the first of them, so that the line
/// a CSV record starts on can be found past the blank lines csv skips (its reported position
/// is where it began reading, before them).
#[derive(Default)]
struct Recent {
    start: u64,
    bytes: VecDeque<u8>,
}

/// Keeps a [`Recent`] window of what passes through.
struct Tap<R> {
    inner: R,
    recent: Rc<RefCell<Recent>>,
    keep: usize,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut recent = self.recent.borrow_mut();
        recent.bytes.extend(&buf[..n]);
        let excess = recent.bytes.len().saturating_sub(self.keep);
        recent.bytes.drain(..excess);
        recent.start += excess as u64;
        Ok(n)
    }
}

impl Recent {
    /// The line of the first content at or after `position`.
    fn first_line(&self, position: &csv::Position) -> usize {
        let mut line = position.line() as usize;
        let Some(mut i) = position.byte().checked_sub(self.start) else {
            return line;
        };
        while let Some(b) = self.bytes.get(i as usize) {
            match b {
                b'\n' => line += 1,
                b'\r' => {}
                _ => break,
            }
            i += 1;
        }
        line
    }
}

/// Every row of a CSV input, read as the entity's `csv:` spec says. The header row (or the
/// spec's `columns`) gives the layout, handed to `layout_ready` before the first row; each row
/// becomes the JSON object the entity's parser reads and goes to `each` as
/// `Row::Text(line, json)` (its line is where the record starts), or as `Row::Invalid` when its
/// cells do not convert. A header that does not fit, or input that is not CSV, is an error.
pub fn each_csv_row<R: Read, E: From<BulkError>>(
    input: R,
    entity: RootEntity,
    max_row: usize,
    layout_ready: impl FnOnce(CsvLayout),
    each: &mut impl FnMut(Row<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let spec = entity.csv();
    let recent = Rc::new(RefCell::new(Recent::default()));
    // csv reads ahead by its buffer: a record may take `max_row` bytes past what it has read.
    let budget = RecordBudget::new(max_row + 2 * 64 * 1024);
    let tap = Tap {
        inner: Budgeted {
            inner: input,
            budget: budget.clone(),
        },
        recent: recent.clone(),
        // csv reads ahead by its buffer; a record is at most `max_row` bytes of interest.
        keep: 2 * (64 * 1024 + max_row),
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(spec.delimiter)
        .quote(spec.quote)
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_reader(tap);
    let mut record = csv::StringRecord::new();
    // Where the record being read begins (csv's own position is per record read).
    let record_line = std::cell::Cell::new(1u64);
    let unreadable = |e: csv::Error| -> BulkError {
        let line = e.position().map_or(0, |p| p.line());
        match e.into_kind() {
            csv::ErrorKind::Io(io) if RecordBudget::is_over(&io) => BulkError::RecordTooLong {
                what: "a CSV record",
                at: format!("line {}", record_line.get()),
                limit: max_row,
                hint: " (an unterminated quote?)",
            },
            csv::ErrorKind::Io(io) => BulkError::Io(io),
            kind => BulkError::Malformed(format!("invalid CSV at line {line}: {kind:?}")),
        }
    };
    let next_record = |reader: &csv::Reader<_>| {
        let at = reader.position();
        budget.record_starts_at(at.byte());
        record_line.set(at.line());
    };
    let header: Option<Vec<String>> = if spec.header && spec.columns.is_empty() {
        if !reader.read_record(&mut record).map_err(unreadable)? {
            return Ok(());
        }
        Some(record.iter().map(str::to_string).collect())
    } else {
        if spec.header {
            // A header row is there, but `columns` decides the layout.
            reader.read_record(&mut record).map_err(unreadable)?;
        }
        None
    };
    let cells: Option<Vec<&str>> = header
        .as_ref()
        .map(|h| h.iter().map(String::as_str).collect());
    let layout = spec.layout(cells.as_deref()).map_err(BulkError::Header)?;
    layout_ready(layout.clone());
    let mut json = Vec::new();
    loop {
        next_record(&reader);
        match reader.read_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) => {
                let line = e.position().map_or(0, |p| recent.borrow().first_line(p));
                each(Row::Invalid(line, RowProblem::NotUtf8))?;
                continue;
            }
            Err(e) => return Err(unreadable(e).into()),
        }
        let line = record
            .position()
            .map_or(0, |p| recent.borrow().first_line(p));
        let cells: Vec<&str> = record.iter().collect();
        match spec.row_to_json_text(&layout, &cells, &mut json) {
            Ok(()) => {
                if json.len() > max_row {
                    each(Row::TooLong(line))?;
                } else {
                    each(Row::Text(line, &json))?;
                }
            }
            Err(errors) => each(Row::Invalid(line, RowProblem::Cells(errors)))?,
        }
    }
}

/// Field errors of a CSV row, with the column that fed each field.
pub fn csv_columns(
    entity: RootEntity,
    layout: &CsvLayout,
    errors: Vec<FieldError>,
) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|e| match layout.label_of_path(entity.csv(), &e.field) {
            Some(label) => FieldError {
                field: label,
                error: e.error,
            },
            None => e,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(row: Row<'_>) -> String {
        match row {
            Row::Text(n, t) => format!("{n}:{}", String::from_utf8_lossy(t).trim()),
            Row::TooLong(n) => format!("{n}:too long"),
            Row::Invalid(n, p) => format!("{n}:{p}"),
        }
    }

    /// The rows a chunked walk gives, chunks of `chunk` bytes (blank lines, which every caller
    /// skips, left out: before the format is known they are not handed over).
    fn walk_chunks(body: &[u8], chunk: usize, max_row: usize) -> Vec<String> {
        let entity = RootEntity::ALL[0];
        let mut out = Vec::new();
        let mut each = |row: Row<'_>| -> Result<(), BulkError> {
            out.push(describe(row));
            Ok(())
        };
        let mut walker = ChunkWalker::new(None, entity, max_row);
        for part in body.chunks(chunk) {
            walker.feed(part, &mut each).expect("feeds");
        }
        walker.finish(|_| {}, &mut each).expect("finishes");
        out.retain(|r| !r.ends_with(':'));
        out
    }

    /// The rows the file reader gives for the same bytes and format.
    fn walk_whole(format: Format, body: &[u8], max_row: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut each = |row: Row<'_>| -> Result<(), BulkError> {
            out.push(describe(row));
            Ok(())
        };
        each_row(format, body, RootEntity::ALL[0], max_row, |_| {}, &mut each).expect("reads");
        out.retain(|r| !r.ends_with(':'));
        out
    }

    #[test]
    fn a_chunked_body_gives_the_rows_the_file_reader_gives_whatever_the_chunking() {
        let ndjson = b"\n  \n{\"a\":1}\n{\"b\":2}\n\n{\"c\":3}";
        let array = b"\n\n [ {\"a\":1},\n {\"b\":2} ]\n";
        for chunk in [1, 2, 5, 64] {
            assert_eq!(
                walk_chunks(ndjson, chunk, 64),
                walk_whole(Format::Ndjson, ndjson, 64),
                "NDJSON in chunks of {chunk}"
            );
            assert_eq!(
                walk_chunks(array, chunk, 64),
                walk_whole(Format::Json, array, 64),
                "a JSON array in chunks of {chunk}"
            );
        }
        // Leading white space longer than a row: an over-long (blank) NDJSON line.
        let long_blank = [vec![b' '; 20], b"\n{\"a\":1}\n".to_vec()].concat();
        assert_eq!(
            walk_chunks(&long_blank, 3, 8),
            ["1:too long", "2:{\"a\":1}"]
        );
    }

    fn split(body: &[u8], chunk: usize, max_line: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut each = |row: Row<'_>| -> Result<(), ()> {
            out.push(match row {
                Row::Text(n, t) => format!("{n}:{}", String::from_utf8_lossy(t)),
                Row::TooLong(n) => format!("{n}:too long"),
                Row::Invalid(n, p) => format!("{n}:{p}"),
            });
            Ok(())
        };
        let mut splitter = LineSplitter::new(max_line);
        for part in body.chunks(chunk) {
            let _ = splitter.feed(part, &mut each);
        }
        let _ = splitter.finish(&mut each);
        out
    }

    #[test]
    fn lines_are_the_same_whatever_the_chunking() {
        let body = b"{\"a\":1}\n\n0123456789abc\n{}\nlast";
        for chunk in 1..body.len() {
            assert_eq!(
                split(body, chunk, 10),
                ["1:{\"a\":1}", "2:", "3:too long", "4:{}", "5:last"],
                "chunk {chunk}"
            );
        }
        assert_eq!(split(b"x\n", 1, 10), ["1:x"]);
        assert_eq!(split(b"0123456789abc", 3, 10), ["1:too long"]);
    }
}
