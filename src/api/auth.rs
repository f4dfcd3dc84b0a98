//! API keys: who may call the api, and which entities each client may post.
//!
//! Keys come from `API_KEYS` and/or `API_KEYS_FILE`, one entry per line (or comma-separated in
//! the variable): `name:secret[:scopes]`. `secret` is the key itself (at least
//! [`MIN_SECRET_LEN`] characters) or `sha256:<64 hex digits>`, its digest, so that the
//! plaintext need not be stored anywhere. `scopes` is a `|`-separated list of entity names, `*`
//! (every entity), `metrics` (read `/metrics`) and `admin` (the console and its endpoints on
//! `ADMIN_PORT`); without it a key may post every entity and read status and the OpenAPI
//! document, but not metrics nor the console. Only SHA-256 digests are kept in
//! memory, and a presented key is compared with every digest in constant time.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower::{Layer, Service};

use super::{ApiError, AppState};
use crate::generated::RootEntity;

/// Shortest plaintext key accepted: shorter keys can be guessed.
pub const MIN_SECRET_LEN: usize = 16;

/// A key file or variable could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} line {line}: {reason}")]
pub struct KeyError {
    /// `API_KEYS` or the file's path.
    pub source_name: String,
    /// 1-based line (or entry, in a comma-separated variable).
    pub line: usize,
    /// What is wrong (never contains the secret).
    pub reason: String,
}

/// What a client may do besides reading status and the API description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Entities it may post; `None`: every entity.
    entities: Option<Vec<RootEntity>>,
    /// Whether it may read `/metrics`.
    metrics: bool,
    /// Whether it may use the console (`ADMIN_PORT`).
    admin: bool,
}

impl Scope {
    /// Every entity and metrics: what an unauthenticated api allows everyone.
    const EVERYTHING: Scope = Scope {
        entities: None,
        metrics: true,
        admin: true,
    };

    /// Whether messages of `entity` may be posted.
    pub fn may_post(&self, entity: RootEntity) -> bool {
        self.entities.as_ref().is_none_or(|e| e.contains(&entity))
    }

    /// Whether the status of a message of the entity named `name` may be read: an entity the
    /// scope covers; a name of no entity of this build (a dead letter of a raw message) only
    /// with every entity in scope.
    pub fn may_read_status_of(&self, name: &str) -> bool {
        match RootEntity::from_name(name) {
            Some(entity) => self.may_post(entity),
            None => self.entities.is_none(),
        }
    }

    /// Whether `/metrics` may be read.
    pub fn may_read_metrics(&self) -> bool {
        self.metrics
    }

    /// Whether the console may be used (its pages, dead letters, replay, discard).
    pub fn may_administer(&self) -> bool {
        self.admin
    }
}

/// The client a request is authenticated as (a request extension set by [`RequireKeyLayer`]).
#[derive(Debug, Clone)]
pub struct Client {
    /// The key's name; empty when authentication is off.
    pub name: Arc<str>,
    /// What it may do.
    pub scope: Arc<Scope>,
}

impl Client {
    /// The client of an api without keys: may do everything.
    pub fn anonymous() -> Self {
        // Built once: every request of an api without keys carries it (two counter increments,
        // no allocation).
        static ANONYMOUS: std::sync::LazyLock<Client> = std::sync::LazyLock::new(|| Client {
            name: Arc::from(""),
            scope: Arc::new(Scope::EVERYTHING),
        });
        ANONYMOUS.clone()
    }

    /// Whether this is the anonymous client of an api without keys.
    pub fn is_anonymous(&self) -> bool {
        self.name.is_empty()
    }

    /// `Ok` if this client may post `entity`, else 403.
    pub fn check_entity(&self, entity: RootEntity) -> Result<(), ApiError> {
        if self.scope.may_post(entity) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the key `{}` may not post `{}`",
                self.name,
                entity.snake_name()
            )))
        }
    }
}

/// One configured key: its name, digest and scope.
#[derive(Clone)]
struct ApiKey {
    client: Client,
    digest: [u8; 32],
}

/// The configured API keys; empty means authentication is off.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<Vec<ApiKey>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: digests are secrets too (an offline guess can be checked against them).
        f.debug_list()
            .entries(self.keys.iter().map(|k| &*k.client.name))
            .finish()
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    let mut entities = Some(Vec::new());
    let mut metrics = false;
    let mut admin = false;
    for item in text.split('|').map(str::trim) {
        match item {
            "" => {
                return Err(
                    "an empty scope; list entities, `*`, `metrics` or `admin` separated by `|`"
                        .into(),
                );
            }
            "*" => entities = None,
            "metrics" => metrics = true,
            "admin" => admin = true,
            name => {
                let entity = RootEntity::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = RootEntity::ALL.iter().map(|e| e.snake_name()).collect();
                    format!(
                        "unknown entity `{name}` in the scope (known: {}; or `*`, `metrics`, `admin`)",
                        known.join(", ")
                    )
                })?;
                if let Some(list) = entities.as_mut()
                    && !list.contains(&entity)
                {
                    list.push(entity);
                }
            }
        }
    }
    Ok(Scope {
        entities,
        metrics,
        admin,
    })
}

impl ApiKeys {
    /// No keys: authentication off.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether any key is configured (authentication on).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds the entries of `text` (lines, or comma-separated when `commas`), `#` starting a
    /// comment line; `source_name` names it in errors.
    pub fn add(&mut self, text: &str, source_name: &str, commas: bool) -> Result<(), KeyError> {
        let mut keys: Vec<ApiKey> = self.keys.as_ref().clone();
        let entries: Vec<&str> = if commas {
            text.split([',', '\n']).collect()
        } else {
            text.lines().collect()
        };
        for (i, entry) in entries.into_iter().enumerate() {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let fail = |reason: String| KeyError {
                source_name: source_name.to_string(),
                line: i + 1,
                reason,
            };
            let mut parts = entry.splitn(3, ':');
            let name = parts.next().unwrap_or("").trim();
            let secret = parts
                .next()
                .map(str::trim)
                .ok_or_else(|| fail("expected `name:secret` or `name:secret:scopes`".into()))?;
            let rest = parts.next();
            // `sha256:<hex>` spans two `:`-separated parts.
            let (digest, scope_text) = if secret == "sha256" {
                let rest = rest.unwrap_or("");
                let (hex, scopes) = match rest.split_once(':') {
                    Some((hex, scopes)) => (hex.trim(), Some(scopes)),
                    None => (rest.trim(), None),
                };
                let d = parse_digest(hex).ok_or_else(|| {
                    fail(format!(
                        "key `{name}`: `sha256:` must be followed by 64 hex digits"
                    ))
                })?;
                (d, scopes)
            } else {
                if secret.chars().count() < MIN_SECRET_LEN {
                    return Err(fail(format!(
                        "key `{name}` is shorter than {MIN_SECRET_LEN} characters"
                    )));
                }
                if !secret.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(fail(format!(
                        "key `{name}` must be visible ASCII (it travels in an HTTP header)"
                    )));
                }
                (digest(secret.as_bytes()), rest)
            };
            if !valid_name(name) {
                return Err(fail(format!(
                    "key name `{name}` must be 1 to 64 letters, digits, `_`, `-` or `.`"
                )));
            }
            if keys.iter().any(|k| &*k.client.name == name) {
                return Err(fail(format!("key name `{name}` is listed twice")));
            }
            if keys.iter().any(|k| k.digest == digest) {
                return Err(fail(format!(
                    "key `{name}` has the same secret as another key; give every client its own"
                )));
            }
            let scope = match scope_text {
                Some(text) => parse_scope(text).map_err(|e| fail(format!("key `{name}`: {e}")))?,
                None => Scope {
                    entities: None,
                    metrics: false,
                    admin: false,
                },
            };
            keys.push(ApiKey {
                client: Client {
                    name: Arc::from(name),
                    scope: Arc::new(scope),
                },
                digest,
            });
        }
        self.keys = Arc::new(keys);
        Ok(())
    }

    /// Keys from a text in the file format (tests, examples).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys = Self::none();
        keys.add(text, "API keys", false)?;
        Ok(keys)
    }

    /// The client whose key this is. Every configured digest is compared, each in constant
    /// time, so the answer's timing does not depend on how much of a key matched.
    pub fn authenticate(&self, presented: &str) -> Option<&Client> {
        let presented = digest(presented.as_bytes());
        let mut found = None;
        for key in self.keys.iter() {
            if bool::from(key.digest.ct_eq(&presented)) {
                found = Some(&key.client);
            }
        }
        found
    }
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
            return Some(token.trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Why a request was not let through (label of `nomnom_auth_failures_total`).
fn failure(state: &AppState, reason: &'static str, error: ApiError) -> Response {
    state
        .metrics
        .auth_failures
        .with_label_values(&[reason])
        .inc();
    error.into_response()
}

/// The client of a request, or the 401 answer, when keys are configured; without keys every
/// request is the anonymous client.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Client, Box<Response>> {
    if !state.keys.enabled() {
        return Ok(Client::anonymous());
    }
    let Some(presented) = presented_key(headers) else {
        let refused = failure(state, "missing", ApiError::Unauthorized { invalid: false });
        return Err(Box::new(refused));
    };
    match state.keys.authenticate(presented) {
        Some(client) => Ok(client.clone()),
        None => {
            let refused = failure(state, "invalid", ApiError::Unauthorized { invalid: true });
            Err(Box::new(refused))
        }
    }
}

/// Layer of the routes that need a key when keys are configured: sets the [`Client`] request
/// extension, or answers 401. A tower layer rather than `from_fn`, which clones the route and
/// boxes a future for every request.
#[derive(Clone)]
pub(super) struct RequireKeyLayer(pub(super) Arc<AppState>);

impl<S> Layer<S> for RequireKeyLayer {
    type Service = RequireKey<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireKey {
            inner,
            state: self.0.clone(),
        }
    }
}

/// See [`RequireKeyLayer`].
#[derive(Clone)]
pub(super) struct RequireKey<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> Service<Request> for RequireKey<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match authenticate(&self.state, request.headers()) {
            Ok(client) => {
                request.extensions_mut().insert(client);
                Either::Right(self.inner.call(request))
            }
            Err(refused) => Either::Left(ready(Ok(*refused))),
        }
    }
}

/// Middleware of `/metrics` on the main port: with keys, only a key scoped `metrics`.
pub(super) async fn require_metrics_scope(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .extensions()
        .get::<Client>()
        .is_some_and(|c| c.scope.may_read_metrics());
    if !allowed {
        let name = request
            .extensions()
            .get::<Client>()
            .map(|c| c.name.to_string())
            .unwrap_or_default();
        return failure(
            &state,
            "forbidden",
            ApiError::Forbidden(format!(
                "the key `{name}` may not read metrics; give it the `metrics` scope or serve metrics on METRICS_PORT"
            )),
        );
    }
    next.run(request).await
}

/// Middleware of the console's port: with keys, only a key scoped `admin` (401 without a valid
/// key, 403 without the scope); without keys the port is loopback-only (see `ApiConfig`) and
/// every request is `local`. The request carries a [`Client`] that may check any entity (the
/// console's validate box publishes nothing) under the key's name.
pub(super) async fn require_admin_scope(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = match authenticate(&state, request.headers()) {
        Ok(client) => client,
        Err(refused) => return *refused,
    };
    if !client.scope.may_administer() {
        return failure(
            &state,
            "forbidden",
            ApiError::Forbidden(format!(
                "the key `{}` may not use the console; give it the `admin` scope",
                client.name
            )),
        );
    }
    request.extensions_mut().insert(Client {
        name: client.name,
        scope: Arc::new(Scope::EVERYTHING),
    });
    next.run(request).await
}

/// Counts a 403 for an entity outside the client's scope.
pub(super) fn count_forbidden(state: &AppState) {
    state
        .metrics
        .auth_failures
        .with_label_values(&["forbidden"])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "k3y-of-the-ingest-client";

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn keys_authenticate_by_digest_with_their_scope() {
        let entity = RootEntity::ALL[0];
        let text = format!(
            "# comment\ningest:{SECRET}\nprom:sha256:{}:metrics\none:another-long-secret:{}\n",
            hex(digest(b"prometheus-scrape-key")),
            entity.snake_name()
        );
        let keys = ApiKeys::parse(&text).expect("valid keys");
        assert_eq!(keys.len(), 3);
        let ingest = keys.authenticate(SECRET).expect("ingest key");
        assert_eq!(&*ingest.name, "ingest");
        assert!(ingest.scope.may_post(entity) && !ingest.scope.may_read_metrics());
        let prom = keys
            .authenticate("prometheus-scrape-key")
            .expect("digest key");
        assert!(prom.scope.may_read_metrics() && !prom.scope.may_post(entity));
        let one = keys
            .authenticate("another-long-secret")
            .expect("scoped key");
        assert!(one.scope.may_post(entity));
        for other in RootEntity::ALL.iter().skip(1) {
            assert!(!one.scope.may_post(*other));
        }
        assert!(keys.authenticate("k3y-of-the-ingest-clien").is_none());
        assert!(keys.authenticate("").is_none());
        // Debug output names keys, never secrets or digests.
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains(SECRET) && shown.contains("ingest"),
            "{shown}"
        );
    }

    #[test]
    fn bad_entries_name_their_line_and_never_the_secret() {
        let cases = [
            ("a:short", "shorter than 16"),
            ("nosecret", "expected `name:secret`"),
            ("bad name:aaaaaaaaaaaaaaaaaaaa", "key name `bad name`"),
            ("a:sha256:abc", "64 hex digits"),
            (
                "a:aaaaaaaaaaaaaaaaaaaa:nosuchentity",
                "unknown entity `nosuchentity`",
            ),
            ("a:aaaaaaaaaaaaaaaaaaaa:", "an empty scope"),
            (
                "a:aaaaaaaaaaaaaaaaaaaa\na:bbbbbbbbbbbbbbbbbbbb",
                "listed twice",
            ),
            (
                "a:aaaaaaaaaaaaaaaaaaaa\nb:aaaaaaaaaaaaaaaaaaaa",
                "same secret",
            ),
        ];
        for (text, expected) in cases {
            let e = ApiKeys::parse(text).expect_err(text).to_string();
            assert!(e.contains(expected), "{text}: {e}");
            assert!(!e.contains("aaaaaaaaaaaaaaaaaaaa"), "secret in error: {e}");
        }
        let e = ApiKeys::parse("\n\na:aaaaaaaaaaaaaaaaaaaa\nb:x").unwrap_err();
        assert_eq!(e.line, 4);
    }

    #[test]
    fn variable_entries_may_be_comma_separated() {
        let mut keys = ApiKeys::none();
        keys.add(
            "a:aaaaaaaaaaaaaaaaaaaa, b:bbbbbbbbbbbbbbbbbbbb",
            "API_KEYS",
            true,
        )
        .expect("valid");
        assert_eq!(keys.len(), 2);
        assert!(keys.authenticate("bbbbbbbbbbbbbbbbbbbb").is_some());
    }

    #[test]
    fn both_headers_carry_a_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "abc".parse().expect("header"));
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            "Bearer  xyz ".parse().expect("header"),
        );
        assert_eq!(presented_key(&h), Some("xyz"));
        h.insert(
            header::AUTHORIZATION,
            "Basic Zm9vOmJhcg==".parse().expect("header"),
        );
        assert_eq!(presented_key(&h), Some("abc"));
    }
}
