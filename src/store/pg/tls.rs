//! TLS to PostgreSQL, with libpq's `sslmode` meanings, through rustls.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and its TLS stream would sit
//! below the SQLSTATE tap (which must read plaintext). So the TLS parameters of `DATABASE_URL`
//! (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) are taken off before tokio-postgres parses it,
//! and the TLS request and handshake happen here, before tokio-postgres starts its protocol on
//! the resulting stream:
//!
//! | sslmode | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | always | no (as `verify-ca` when `sslrootcert` is given, as in libpq) |
//! | `verify-ca` | always | chains to `sslrootcert` |
//! | `verify-full` | always | chains to `sslrootcert` and names the host |

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, without checking its certificate.
    Prefer,
    /// TLS always, certificate not checked (unless `sslrootcert` is given).
    Require,
    /// TLS always; the certificate must chain to `sslrootcert`.
    VerifyCa,
    /// TLS always; the certificate must chain to `sslrootcert` and name the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            // `allow` tries plaintext first; starting with TLS is the safer reading of it.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    /// Whether a server without TLS is refused.
    fn demands_tls(self) -> bool {
        !matches!(self, Self::Disable | Self::Prefer)
    }
}

/// The TLS parameters of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslParams {
    /// `sslmode` (default `prefer`).
    pub mode: SslMode,
    /// `sslrootcert`: PEM file of the CA(s) to trust.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `sslkey`: client key (PEM).
    pub key: Option<PathBuf>,
}

impl Default for SslParams {
    fn default() -> Self {
        Self {
            mode: SslMode::Prefer,
            root_cert: None,
            cert: None,
            key: None,
        }
    }
}

const SSL_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SslParams {
    fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        match key {
            "sslmode" => self.mode = SslMode::parse(&value)?,
            "sslrootcert" => self.root_cert = Some(value.into()),
            "sslcert" => self.cert = Some(value.into()),
            "sslkey" => self.key = Some(value.into()),
            _ => {}
        }
        Ok(())
    }

    /// Takes the TLS parameters off a URL (`postgres://…?sslmode=…`) or a `key=value` string;
    /// returns the rest, for tokio-postgres, and the parameters.
    pub fn split(database_url: &str) -> Result<(String, Self), String> {
        let mut params = Self::default();
        let is_url =
            database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
        if is_url {
            let Some((base, query)) = database_url.split_once('?') else {
                return Ok((database_url.to_string(), params));
            };
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if SSL_KEYS.contains(&key) {
                    params.set(key, percent_decode(value))?;
                } else {
                    kept.push(pair);
                }
            }
            let rest = if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            };
            return Ok((rest, params));
        }
        // key=value pairs separated by spaces; values of the TLS keys may be single-quoted.
        let mut kept = Vec::new();
        let mut rest = database_url.trim_start();
        while !rest.is_empty() {
            let key_end = rest.find('=').unwrap_or(rest.len());
            let key = rest[..key_end].trim();
            let after = rest.get(key_end + 1..).unwrap_or("").trim_start();
            let (value, remaining, raw_len) = if let Some(quoted) = after.strip_prefix('\'') {
                let end = quoted
                    .find('\'')
                    .ok_or("an unterminated quote in DATABASE_URL")?;
                (quoted[..end].to_string(), &quoted[end + 1..], end + 2)
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (after[..end].to_string(), &after[end..], end)
            };
            if SSL_KEYS.contains(&key) {
                params.set(key, value)?;
            } else {
                let consumed = rest.len() - after.len() + raw_len;
                kept.push(rest[..consumed].trim().to_string());
            }
            rest = remaining.trim_start();
        }
        Ok((kept.join(" "), params))
    }
}

/// Accepts any certificate (`prefer`, `require`): encryption without authentication, as libpq
/// does in these modes. Handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name in it is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// How connections to one server are secured: the mode and, unless disabled, the connector.
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").field("mode", &self.mode).finish()
    }
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}={}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}={}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

impl PgTls {
    /// The connector for `params`; files are read now, so a wrong path fails at start-up.
    pub fn new(params: &SslParams) -> Result<Self, String> {
        if params.mode == SslMode::Disable {
            return Ok(Self {
                mode: SslMode::Disable,
                connector: None,
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let roots = match &params.root_cert {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs("sslrootcert", path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert={}: {e}", path.display()))?;
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (params.mode, roots) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(format!(
                    "sslmode={} needs sslrootcert=<PEM file of the CA that signed the server's certificate>",
                    if params.mode == SslMode::VerifyCa {
                        "verify-ca"
                    } else {
                        "verify-full"
                    }
                ));
            }
            (SslMode::Prefer, _) | (SslMode::Require, None) => {
                Arc::new(AnyCertificate(provider.clone()))
            }
            (mode, Some(roots)) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("sslrootcert: {e}"))?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                }
            }
            (SslMode::Disable, _) => unreachable!("handled above"),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&params.cert, &params.key) {
            (Some(cert), Some(key)) => {
                let certs = read_certs("sslcert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("sslkey={}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("sslcert/sslkey: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("sslcert and sslkey go together: set both".into()),
        };
        Ok(Self {
            mode: params.mode,
            connector: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
        })
    }

    /// A plaintext-only policy (Unix sockets, tests).
    pub fn disabled() -> Self {
        Self {
            mode: SslMode::Disable,
            connector: None,
        }
    }

    /// Asks the server for TLS (PostgreSQL's `SSLRequest`) and, if it agrees, performs the
    /// handshake; `host` is the name the certificate must carry under `verify-full`.
    pub async fn negotiate<S>(&self, mut socket: S, host: &str) -> Result<MaybeTls<S>, String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(connector) = &self.connector else {
            return Ok(MaybeTls::Plain(socket));
        };
        // SSLRequest: length 8, code 80877103.
        let mut request = [0u8; 8];
        request[..4].copy_from_slice(&8u32.to_be_bytes());
        request[4..].copy_from_slice(&80_877_103u32.to_be_bytes());
        socket
            .write_all(&request)
            .await
            .map_err(|e| format!("TLS request: {e}"))?;
        let mut answer = [0u8; 1];
        socket
            .read_exact(&mut answer)
            .await
            .map_err(|e| format!("TLS request: {e}"))?;
        if answer[0] != b'S' {
            return if self.mode.demands_tls() {
                Err("the server does not offer TLS, and sslmode demands it (enable ssl on the server, or lower sslmode)".into())
            } else {
                Ok(MaybeTls::Plain(socket))
            };
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` cannot be checked against a certificate: {e}"))?;
        let stream = connector.connect(name, socket).await.map_err(|e| {
            let hint = match self.mode {
                SslMode::VerifyCa | SslMode::VerifyFull => {
                    " (check sslrootcert, and under verify-full that the certificate names the host)"
                }
                _ => "",
            };
            format!("TLS handshake failed: {e}{hint}")
        })?;
        Ok(MaybeTls::Tls(Box::new(stream)))
    }
}

/// A connection's byte stream: plaintext, or TLS over it.
pub enum MaybeTls<S> {
    /// No TLS.
    Plain(S),
    /// TLS established.
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_come_off_urls_and_key_value_strings() {
        let (rest, p) = SslParams::split(
            "postgres://u:p@db:5432/app?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .expect("valid");
        assert_eq!(rest, "postgres://u:p@db:5432/app?application_name=x");
        assert_eq!(p.mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        let (rest, p) = SslParams::split("postgres://db/app?sslmode=require").expect("valid");
        assert_eq!(
            (rest.as_str(), p.mode),
            ("postgres://db/app", SslMode::Require)
        );
        let (rest, p) = SslParams::split("postgres://db/app").expect("valid");
        assert_eq!(
            (rest.as_str(), p),
            ("postgres://db/app", SslParams::default())
        );
        let (rest, p) = SslParams::split(
            "host=db user=app sslmode=verify-ca sslrootcert='/etc/my ca.pem' dbname=x sslcert=/c sslkey=/k",
        )
        .expect("valid");
        assert_eq!(rest, "host=db user=app dbname=x");
        assert_eq!(p.mode, SslMode::VerifyCa);
        assert_eq!(p.root_cert.as_deref(), Some(Path::new("/etc/my ca.pem")));
        assert_eq!(p.cert.as_deref(), Some(Path::new("/c")));
        assert_eq!(p.key.as_deref(), Some(Path::new("/k")));
        let e = SslParams::split("postgres://db/app?sslmode=verify").expect_err("bad mode");
        assert!(e.contains("sslmode `verify`"), "{e}");
    }

    #[test]
    fn verifying_modes_need_a_root_certificate() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let e = PgTls::new(&SslParams {
                mode,
                ..SslParams::default()
            })
            .expect_err("no root");
            assert!(e.contains("needs sslrootcert"), "{e}");
        }
        let e = PgTls::new(&SslParams {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..SslParams::default()
        })
        .expect_err("missing file");
        assert!(e.starts_with("sslrootcert=/nonexistent/ca.pem"), "{e}");
        assert!(PgTls::new(&SslParams::default()).is_ok());
    }
}
