//! PostgreSQL connections that remember the SQLSTATE of the last server error.
//!
//! diesel reports most server errors as `DatabaseErrorKind::Unknown` without their SQLSTATE, and
//! the worker has to tell a full disk (`53100`, wait) from a bad value (`22003`, dead-letter). So
//! each connection's socket is read through [`SqlStateTap`], which follows the backend's message
//! framing and keeps the `C` (code) field of every `ErrorResponse`; [`PgConnection`] is a diesel
//! connection plus that slot, and [`PgManager`] pools them. [`Database`] is the target parsed
//! once from `DATABASE_URL`: what creating the database, preparing it and pooling share. TLS ([`super::tls`]) sits below the
//! tap, so the tap always reads plaintext.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::PoolableConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::error::{ConnectError, DbError, SqlState};
use super::tls::{PgTls, SslParams};

/// Where a connection's tap leaves the code of the first server error since it was last taken.
type SqlStateSlot = Arc<Mutex<Option<SqlState>>>;

/// Follows PostgreSQL backend messages (type byte, 4-byte length, payload) on a byte stream and
/// extracts the SQLSTATE of each `ErrorResponse` (`E`).
#[derive(Debug, Default)]
struct BackendFraming {
    header: [u8; 5],
    header_len: usize,
    remaining: usize,
    in_error: bool,
    /// The first bytes of an error's fields; the code comes right after the severities.
    error_head: Vec<u8>,
}

/// How much of an `ErrorResponse` is kept to find its code (severity fields come first).
const ERROR_HEAD_BYTES: usize = 128;

impl BackendFraming {
    /// Feeds bytes read from the server; returns the code of an error completed in them.
    fn feed(&mut self, mut bytes: &[u8], mut found: impl FnMut(SqlState)) {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                let take = (5 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len < 5 {
                    return;
                }
                self.header_len = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.remaining = (len as usize).saturating_sub(4);
                self.in_error = self.header[0] == b'E';
                self.error_head.clear();
                if self.remaining == 0 {
                    continue;
                }
            }
            let take = self.remaining.min(bytes.len());
            if self.in_error && self.error_head.len() < ERROR_HEAD_BYTES {
                let room = ERROR_HEAD_BYTES - self.error_head.len();
                self.error_head.extend_from_slice(&bytes[..take.min(room)]);
            }
            self.remaining -= take;
            bytes = &bytes[take..];
            if self.remaining == 0 && self.in_error {
                if let Some(code) = error_code(&self.error_head) {
                    found(code);
                }
                self.in_error = false;
            }
        }
    }
}

/// The `C` field of an `ErrorResponse` body: `(type byte, NUL-terminated string)*, NUL`.
fn error_code(fields: &[u8]) -> Option<SqlState> {
    let mut rest = fields;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let end = tail.iter().position(|b| *b == 0)?;
        if kind == b'C' {
            return SqlState::new(std::str::from_utf8(&tail[..end]).ok()?);
        }
        rest = &tail[end + 1..];
    }
    None
}

/// A socket whose incoming bytes are watched for server errors.
pub struct SqlStateTap<S> {
    inner: S,
    framing: BackendFraming,
    slot: SqlStateSlot,
}

impl<S: AsyncRead + Unpin> AsyncRead for SqlStateTap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let this = &mut *self;
            let slot = &this.slot;
            this.framing.feed(&buf.filled()[before..], |code| {
                if let Ok(mut s) = slot.lock() {
                    s.get_or_insert(code);
                }
            });
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SqlStateTap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A diesel-async connection that knows the SQLSTATE of its last failed statement.
pub struct PgConnection {
    conn: AsyncPgConnection,
    sqlstate: SqlStateSlot,
}

impl PgConnection {
    /// Forgets any error code seen so far (call before the statements to classify).
    pub fn clear_sqlstate(&self) {
        if let Ok(mut s) = self.sqlstate.lock() {
            *s = None;
        }
    }

    /// The diesel connection alone (for diesel's migration harness, which takes it by value).
    pub fn into_inner(self) -> AsyncPgConnection {
        self.conn
    }

    /// The code of the first server error since [`PgConnection::clear_sqlstate`], if any.
    pub fn take_sqlstate(&self) -> Option<SqlState> {
        self.sqlstate.lock().ok().and_then(|mut s| s.take())
    }
}

impl std::ops::Deref for PgConnection {
    type Target = AsyncPgConnection;
    fn deref(&self) -> &AsyncPgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }
}

/// Where and how to connect: tokio-postgres's settings and the TLS policy of `sslmode`.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host, port, user, database… (TLS is done before tokio-postgres sees the stream).
    pub config: tokio_postgres::Config,
    /// TLS as `sslmode`, `sslrootcert`, `sslcert` and `sslkey` ask.
    pub tls: PgTls,
}

/// Parses a URL or key=value connection string, defaulting the connect timeout to 5 s; TLS
/// files named in it are read now.
pub fn parse_config(database_url: &str) -> Result<PgTarget, ConnectError> {
    let (rest, ssl) = SslParams::split(database_url).map_err(ConnectError::Url)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectError::Url(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    // The handshake is ours (below the SQLSTATE tap); tokio-postgres gets a ready stream.
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let tls = PgTls::new(&ssl).map_err(ConnectError::Url)?;
    Ok(PgTarget { config, tls })
}

fn server_error(e: impl std::fmt::Display, sqlstate: Option<SqlState>) -> ConnectError {
    ConnectError::Server {
        message: e.to_string(),
        sqlstate,
    }
}

/// Opens a tokio-postgres client over a tapped socket (every host of the config in turn) and
/// runs its connection task in the background.
pub async fn connect_client(
    target: &PgTarget,
) -> Result<(tokio_postgres::Client, SqlStateSlot), ConnectError> {
    let config = &target.config;
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let ports = config.get_ports();
    let mut last = server_error("no host in the database URL", None);
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let slot = SqlStateSlot::default();
        let attempt = match host {
            tokio_postgres::config::Host::Tcp(name) => {
                match tokio::time::timeout(
                    timeout,
                    tokio::net::TcpStream::connect((name.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(tcp)) => {
                        let _ = tcp.set_nodelay(true);
                        match tokio::time::timeout(timeout, target.tls.negotiate(tcp, name)).await {
                            Ok(Ok(stream)) => finish(config, stream, slot.clone()).await,
                            Ok(Err(e)) => Err(server_error(format!("{name}:{port}: {e}"), None)),
                            Err(_) => Err(server_error(
                                format!("{name}:{port}: no TLS answer within {timeout:?}"),
                                None,
                            )),
                        }
                    }
                    Ok(Err(e)) => Err(server_error(format!("{name}:{port}: {e}"), None)),
                    Err(_) => Err(server_error(
                        format!("{name}:{port}: no answer within {timeout:?}"),
                        None,
                    )),
                }
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(&path)).await {
                    Ok(Ok(sock)) => finish(config, sock, slot.clone()).await,
                    Ok(Err(e)) => Err(server_error(format!("{}: {e}", path.display()), None)),
                    Err(_) => Err(server_error(
                        format!("{}: no answer within {timeout:?}", path.display()),
                        None,
                    )),
                }
            }
        };
        match attempt {
            Ok(client) => return Ok((client, slot)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn finish<S>(
    config: &tokio_postgres::Config,
    socket: S,
    slot: SqlStateSlot,
) -> Result<tokio_postgres::Client, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tap = SqlStateTap {
        inner: socket,
        framing: BackendFraming::default(),
        slot,
    };
    let (client, connection) = config
        .connect_raw(tap, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            let code = e.code().and_then(|c| SqlState::new(c.code()));
            // tokio-postgres says only "db error"; the server's own message says why.
            match e.as_db_error() {
                Some(db) => server_error(format!("{} ({})", db.message(), db.code().code()), code),
                None => server_error(e, code),
            }
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Opens one diesel connection with an SQLSTATE tap.
pub async fn connect(target: &PgTarget) -> Result<PgConnection, ConnectError> {
    let (client, sqlstate) = connect_client(target).await?;
    let conn = AsyncPgConnection::try_from(client)
        .await
        .map_err(|e| server_error(e, None))?;
    Ok(PgConnection { conn, sqlstate })
}

/// deadpool manager of [`PgConnection`]s; a closed or broken connection is not reused.
pub struct PgManager {
    target: PgTarget,
}

impl PgManager {
    /// A manager for `database_url`.
    pub fn new(database_url: &str) -> Result<Self, ConnectError> {
        Ok(Self::for_target(parse_config(database_url)?))
    }

    /// A manager for a target already parsed.
    pub fn for_target(target: PgTarget) -> Self {
        Self { target }
    }
}

impl deadpool::managed::Manager for PgManager {
    type Type = PgConnection;
    type Error = ConnectError;

    async fn create(&self) -> Result<PgConnection, ConnectError> {
        connect(&self.target).await
    }

    async fn recycle(
        &self,
        conn: &mut PgConnection,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<ConnectError> {
        if conn.conn.is_broken() {
            Err(deadpool::managed::RecycleError::Message(
                "connection closed".into(),
            ))
        } else {
            Ok(())
        }
    }
}

/// A pool of async PostgreSQL connections (each knows the SQLSTATE of its last error).
pub type DbPool = deadpool::managed::Pool<PgManager>;

/// A connection taken from a [`DbPool`].
pub type PooledConnection = deadpool::managed::Object<PgManager>;

/// A database target, parsed once from `DATABASE_URL` (host, user, database, TLS files read):
/// what creating it, preparing its schema and pooling connections to it share.
#[derive(Debug, Clone)]
pub struct Database {
    target: PgTarget,
}

impl Database {
    /// Where and how to connect.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// Parses a URL or key=value connection string (see [`parse_config`]).
    pub fn parse(database_url: &str) -> Result<Self, DbError> {
        Ok(Self {
            target: parse_config(database_url)?,
        })
    }

    /// A pool of `size` connections.
    pub fn pool(&self, size: usize) -> Result<DbPool, DbError> {
        deadpool::managed::Pool::builder(PgManager::for_target(self.target.clone()))
            .max_size(size.max(1))
            .build()
            .map_err(|e| DbError::Connection {
                message: e.to_string(),
                sqlstate: None,
            })
    }

    /// One connection outside any pool.
    pub async fn connect(&self) -> Result<PgConnection, DbError> {
        Ok(connect(&self.target).await?)
    }

    /// Creates the database if it does not exist yet (connecting to the `postgres` maintenance
    /// database of the same server to do so).
    pub async fn ensure_exists(&self) -> Result<(), DbError> {
        let config = &self.target;
        let missing = match connect_client(config).await {
            Ok(_) => return Ok(()),
            Err(
                e @ ConnectError::Server {
                    sqlstate: Some(code),
                    ..
                },
            ) if code.as_str() == "3D000" => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        let name = config.config.get_dbname().unwrap_or_default().to_string();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(DbError::Connection {
                message: missing,
                sqlstate: None,
            });
        }
        let mut admin_config = config.clone();
        admin_config.config.dbname("postgres");
        let failed = |e: &dyn std::fmt::Display| DbError::Connection {
            message: format!("{missing}; creating it failed: {e}"),
            sqlstate: None,
        };
        let (admin, _) = connect_client(&admin_config)
            .await
            .map_err(|e| failed(&e))?;
        match admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            Ok(()) => {
                tracing::info!(database = name, "created database");
                Ok(())
            }
            // 42P04 duplicate_database: another worker created it first.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                Ok(())
            }
            Err(e) => Err(failed(&e)),
        }
    }
}

/// Takes a connection from the pool.
pub async fn connection(pool: &DbPool) -> Result<PooledConnection, DbError> {
    pool.get().await.map_err(|e| match e {
        deadpool::managed::PoolError::Backend(e) => DbError::from(e),
        other => DbError::Connection {
            message: other.to_string(),
            sqlstate: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn error_response(code: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', code),
            (b'M', "boom"),
        ] {
            body.push(k);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        message(b'E', &body)
    }

    #[test]
    fn codes_are_found_across_any_split_of_the_stream() {
        let mut wire = message(b'C', b"INSERT 0 1\0");
        wire.extend(error_response("23505"));
        wire.extend(message(b'Z', b"E"));
        wire.extend(error_response("57P01"));
        for chunk in 1..wire.len() {
            let mut framing = BackendFraming::default();
            let mut found = Vec::new();
            for part in wire.chunks(chunk) {
                framing.feed(part, |c| found.push(c.to_string()));
            }
            assert_eq!(found, ["23505", "57P01"], "chunk size {chunk}");
        }
    }

    #[test]
    fn malformed_codes_are_ignored() {
        assert_eq!(SqlState::new("2350"), None);
        assert_eq!(SqlState::new("23 05"), None);
        assert_eq!(
            SqlState::new("57P01").map(|s| s.class().to_string()),
            Some("57".into())
        );
        assert_eq!(error_code(b"Sx\0"), None);
    }
}
