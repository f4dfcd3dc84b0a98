//! Reading a request's body: content types, the body size and time limits, the budget of bytes
//! in flight.

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::server::ReadDeadline;
use super::{ApiError, AppState};

/// Checks the Content-Type. Missing, JSON types, `text/plain`, and curl's default for `-d`
/// (`application/x-www-form-urlencoded`) are accepted, since the body is checked as JSON anyway;
/// anything else (XML, multipart, HTML...) is refused with 415.
pub(super) fn check_content_type(headers: &HeaderMap, batch: bool) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let expected = if batch {
        "application/x-ndjson (one JSON object per line), application/json (an array of objects) or text/csv"
    } else {
        "application/json"
    };
    if batch && is_csv(headers) {
        return Ok(());
    }
    let raw = value.to_str().map_err(|_| ApiError::UnsupportedMediaType {
        found: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        expected,
    })?;
    let mime = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    let ndjson = matches!(
        mime.as_str(),
        "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines"
    );
    let lenient = matches!(
        mime.as_str(),
        "" | "text/plain" | "application/x-www-form-urlencoded"
    );
    if json || lenient || (batch && ndjson) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            found: raw.to_string(),
            expected,
        })
    }
}

/// Reads a single message's body, of at most `limit` bytes. Read here rather than by axum's
/// `Bytes` extractor under a `DefaultBodyLimit` layer, which would wrap the route in one more
/// boxed service that every request clones.
pub(super) async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::TooLarge { limit });
    }
    let mut stream = body.into_data_stream();
    let mut whole = bytes::BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(body_read_error)?;
        let read = first.as_ref().map_or(0, Bytes::len) + whole.len() + chunk.len();
        if read > limit {
            return Err(ApiError::TooLarge { limit });
        }
        // A body that comes in one chunk (nearly all) is kept as it came, without a copy.
        match first.take() {
            None if whole.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    whole.extend_from_slice(&earlier);
                }
                whole.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| whole.freeze()))
}

/// `read` (reading a request's body, checking it) within the request's [`ReadDeadline`], if it
/// has one: past it, 408, nothing published. Once publishing starts there is no deadline: the
/// answer must say what was stored.
pub(super) async fn within<T>(
    deadline: Option<ReadDeadline>,
    read: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match deadline {
        Some(ReadDeadline(at)) => tokio::time::timeout_at(at, read)
            .await
            .unwrap_or(Err(ApiError::Timeout)),
        None => read.await,
    }
}

/// Reserves the body's bytes in the budget of bodies in flight (see [`super::budget`]). When they
/// do not fit, the answer is 503 without the body being held: a client that sent
/// `Expect: 100-continue` is answered before it sends the body; from any other the body is
/// read and dropped as it comes (at most `limit` bytes, within the body timeout), so that the
/// client, still writing, reads the answer instead of a reset connection.
pub(super) async fn reserve(
    state: &AppState,
    headers: &HeaderMap,
    limit: usize,
    body: axum::body::Body,
) -> Result<(super::budget::BodyPermit, axum::body::Body), ApiError> {
    match state.body_budget.reserve(headers, limit) {
        Ok(permit) => Ok((permit, body)),
        Err(e) => {
            let expects_continue = headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !expects_continue {
                let mut stream = body.into_data_stream();
                let mut drained = 0usize;
                while let Some(Ok(chunk)) = futures::StreamExt::next(&mut stream).await {
                    drained += chunk.len();
                    if drained > limit {
                        break;
                    }
                }
            }
            Err(e)
        }
    }
}

/// The error of a body that could not be read to its end.
pub(super) fn body_read_error(e: axum::Error) -> ApiError {
    if super::server::is_body_timeout(&e) {
        ApiError::Timeout
    } else {
        ApiError::Body {
            status: StatusCode::BAD_REQUEST,
            message: format!("the request body could not be read: {e}"),
        }
    }
}

/// Whether the body is CSV (`text/csv`, `application/csv`).
pub(super) fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| m == "text/csv" || m == "application/csv")
}
