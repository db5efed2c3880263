//! TLS to the PostgreSQL database: which URLs ask for it, and the rustls connector the driver
//! dials with.
//!
//! **Asked for in the URL, as libpq users write it**: `sslmode=verify-full` with
//! `sslrootcert=/etc/loupe/db-ca.pem`, the CA that signed the database server's certificate.
//! The driver does not know these parameters (nor `verify-*` modes), so they are taken out of
//! the URL here, before the rest is parsed.
//!
//! **Always verified, never downgraded.** With TLS, the server's certificate must chain to the
//! `sslrootcert` CA and name the host the URL dials (the `host`, also when `hostaddr` gives the
//! address) — libpq's `verify-full`, whichever of `require`, `verify-ca` or `verify-full` the
//! URL says: an unverified TLS connection protects against nobody who can sit in the path, so
//! Loupe does not offer one (stricter than libpq, whose `require` checks nothing). A server
//! that does not speak TLS is an error, not a reason to carry on in the clear. `prefer` and
//! `allow`, which fall back to plaintext without saying so, are refused. No `sslmode` (or
//! `disable`) means plaintext, for a local socket or a private network; giving `sslrootcert`
//! alone means `verify-full`. There is no default CA bundle: a database's CA is the operator's
//! to name. Client certificates (`sslcert`, `sslkey`) are not supported yet; the driver
//! refuses those parameters.
//!
//! The connector is rustls with the ring provider (as every other Loupe endpoint), over
//! tokio-rustls, the driver's transport. SCRAM channel binding is not offered (the driver
//! falls back to plain SCRAM-SHA-256, which the verified TLS session already protects).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::store::StoreError;

/// What the URL asked for, with the TLS parameters taken out of it.
pub(super) struct TlsRequest {
    /// The URL (or key=value string) without `sslmode` and `sslrootcert`.
    pub rest: String,
    /// `Some(CA file)` when TLS is to be used.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` and decides whether to use TLS.
pub(super) fn tls_request(url: &str) -> Result<TlsRequest, StoreError> {
    let (rest, params) = take_params(url, &["sslmode", "sslrootcert"])?;
    let mode = params
        .iter()
        .find(|(key, _)| key == "sslmode")
        .map(|(_, v)| v.as_str());
    let root_cert = params
        .iter()
        .find(|(key, _)| key == "sslrootcert")
        .map(|(_, v)| PathBuf::from(v));
    let tls = match mode {
        None => root_cert.is_some(),
        Some("disable") => false,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some(mode @ ("allow" | "prefer")) => {
            return Err(invalid(format!(
                "sslmode={mode} would fall back to plaintext without saying so: use sslmode=verify-full with sslrootcert=<the database's CA file>, or sslmode=disable on a private network"
            )));
        }
        Some(other) => {
            return Err(invalid(format!(
                "sslmode={other} is not a mode: use verify-full (with sslrootcert) or disable"
            )));
        }
    };
    match (tls, root_cert) {
        (true, None) => Err(invalid(format!(
            "sslmode={} needs sslrootcert=<the CA file that signed the database's certificate>: the server is always verified",
            mode.unwrap_or("verify-full")
        ))),
        (false, Some(_)) => Err(invalid(
            "sslrootcert is given but sslmode=disable: drop one of them".into(),
        )),
        (true, root_cert) => Ok(TlsRequest { rest, root_cert }),
        (false, None) => Ok(TlsRequest {
            rest,
            root_cert: None,
        }),
    }
}

fn invalid(message: String) -> StoreError {
    StoreError::Other(format!("the database URL is not valid: {message}"))
}

/// Removes the parameters named in `keys` from a `postgres://` URL's query or a key=value
/// string, returning what is left and the removed `(key, value)` pairs.
fn take_params(url: &str, keys: &[&str]) -> Result<(String, Vec<(String, String)>), StoreError> {
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), taken));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if keys.contains(&key) {
                taken.push((key.to_owned(), percent_decode(value)?));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, taken));
    }
    // key=value form: whitespace-separated; ours must be written unquoted.
    let mut kept = Vec::new();
    for token in url.split_whitespace() {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        if keys.contains(&key) {
            if value.starts_with('\'') {
                return Err(invalid(format!("write {key} without quotes")));
            }
            taken.push((key.to_owned(), value.to_owned()));
        } else {
            kept.push(token);
        }
    }
    Ok((kept.join(" "), taken))
}

/// Decodes `%XX` escapes of a URL query value.
fn percent_decode(value: &str) -> Result<String, StoreError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("a %-escape in the query is cut short".into()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("a query value is not UTF-8".into()))
}

/// Makes a TLS connector per connection, verifying the server against one CA file.
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl RustlsConnect {
    /// Trusts exactly the certificates in `root_cert` (PEM).
    pub fn new(root_cert: &Path) -> Result<RustlsConnect, StoreError> {
        let failed = |reason: String| {
            StoreError::Other(format!(
                "the database's CA file (sslrootcert) {}: {reason}",
                root_cert.display()
            ))
        };
        let roots = loupe_trust::tls::load_roots(root_cert).map_err(|e| failed(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(loupe_trust::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(RustlsConnect {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnector> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "`{host}` is not a host name the database's certificate can be checked against: give the URL a host (hostaddr may give the address)"
                ),
            )
        })?;
        Ok(RustlsConnector {
            name,
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
        })
    }
}

/// Connects one stream, verifying the server as `name`.
pub struct RustlsConnector {
    name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A TLS connection to the database.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str) -> Result<(String, Option<PathBuf>), String> {
        tls_request(url)
            .map(|r| (r.rest, r.root_cert))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tls_is_asked_for_in_the_url_and_never_downgraded() {
        assert_eq!(
            request("postgres://u@db/loupe"),
            Ok(("postgres://u@db/loupe".into(), None))
        );
        assert_eq!(
            request("postgres://u@db/loupe?sslmode=disable&connect_timeout=3"),
            Ok(("postgres://u@db/loupe?connect_timeout=3".into(), None))
        );
        for mode in ["require", "verify-ca", "verify-full"] {
            assert_eq!(
                request(&format!(
                    "postgres://u@db/loupe?sslmode={mode}&sslrootcert=%2Fetc%2Fca.pem"
                )),
                Ok(("postgres://u@db/loupe".into(), Some("/etc/ca.pem".into())))
            );
        }
        assert_eq!(
            request("host=db user=u sslrootcert=/etc/ca.pem dbname=loupe"),
            Ok((
                "host=db user=u dbname=loupe".into(),
                Some("/etc/ca.pem".into())
            ))
        );
        for refused in [
            "postgres://u@db/loupe?sslmode=prefer",
            "postgres://u@db/loupe?sslmode=allow",
        ] {
            let error = request(refused).expect_err(refused);
            assert!(error.contains("fall back to plaintext"), "{error}");
        }
        let error = request("postgres://u@db/loupe?sslmode=verify-full").expect_err("no CA");
        assert!(error.contains("needs sslrootcert"), "{error}");
        let error = request("postgres://u@db/loupe?sslmode=disable&sslrootcert=/ca.pem")
            .expect_err("contradiction");
        assert!(error.contains("drop one"), "{error}");
        let error = request("postgres://u@db/loupe?sslmode=sometimes").expect_err("bad mode");
        assert!(error.contains("not a mode"), "{error}");
    }
}
