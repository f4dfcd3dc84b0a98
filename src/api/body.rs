//! Reading a request's body: content types, the body size and time limits, the budget of bytes
//! in flight.

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::server::ReadDeadline;
use super::{ApiError, AppState};
use crate::bulk::Format;

/// Checks a single message's Content-Type. Missing, JSON types, `text/plain`, and curl's
/// default for `-d` (`application/x-www-form-urlencoded`) are accepted, since the body is
/// checked as JSON anyway; anything else (XML, multipart, HTML...) is refused with 415.
pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    const EXPECTED: &str = "application/json";
    match media_type(headers, EXPECTED)? {
        None => Ok(()),
        Some(mime) if is_json(&mime) || is_lenient(&mime) => Ok(()),
        Some(mime) => Err(ApiError::UnsupportedMediaType {
            found: mime,
            expected: EXPECTED,
        }),
    }
}

/// The format a batch's Content-Type names (`bulk::Format::from_media_type`): `None` when the
/// body's first byte decides (JSON types, and the lenient ones of [`check_content_type`]); 415
/// for a type no format has.
pub(super) fn batch_format(headers: &HeaderMap) -> Result<Option<Format>, ApiError> {
    match media_type(headers, Format::MEDIA_TYPES)? {
        None => Ok(None),
        Some(mime) => match Format::from_media_type(&mime) {
            Some(format) => Ok(format),
            None if is_lenient(&mime) => Ok(None),
            None => Err(ApiError::UnsupportedMediaType {
                found: mime,
                expected: Format::MEDIA_TYPES,
            }),
        },
    }
}

/// The Content-Type's media type, lower case, parameters left out; `None` without one.
fn media_type(headers: &HeaderMap, expected: &'static str) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let raw = value.to_str().map_err(|_| ApiError::UnsupportedMediaType {
        found: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        expected,
    })?;
    let mime = raw.split(';').next().unwrap_or("").trim();
    Ok(Some(mime.to_ascii_lowercase()))
}

fn is_json(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// What clients send for JSON without meaning anything else.
fn is_lenient(mime: &str) -> bool {
    matches!(
        mime,
        "" | "text/plain" | "application/x-www-form-urlencoded"
    )
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
