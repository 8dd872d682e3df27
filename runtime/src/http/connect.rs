use std::sync::Arc;

use bytes::Bytes;
use futures_rustls::TlsConnector;
use http::uri::Scheme;
use http::{Method, Request};
use http_body_util::Full;
use hyper::client::conn::http1::{self, SendRequest};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tracing::debug;

use super::proxy::Proxy;
use super::{HttpError, HyperIo};
use crate::{AsyncStream, Runtime};

/// The byte stream under a connection: TCP, or TLS over TCP.
pub(crate) type Io = HyperIo<Box<dyn AsyncStream>>;

/// The request body type of every connection.
pub(crate) type Body = Full<Bytes>;

/// Where a connection goes: the pool key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The proxy's `host:port` when the connection goes through one.
    pub(crate) proxy: Option<(String, u16)>,
}

/// The TLS client configuration: webpki roots plus `extra_ca` (PEM, one or more
/// certificates), ring provider, ALPN `http/1.1`.
pub(crate) fn tls_config(extra_ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| HttpError::CaBundle(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| HttpError::CaBundle(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(HttpError::CaBundle("no certificate in the PEM".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::CaBundle(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Opens a connection to `target` (through `proxy` if set: a plain connection to the proxy for
/// http, a `CONNECT` tunnel for https), runs its hyper task on `runtime`, and returns the
/// handle to send requests on.
pub(crate) async fn connect(
    runtime: &Arc<dyn Runtime>,
    tls: &Arc<rustls::ClientConfig>,
    target: &Target,
    proxy: Option<&Proxy>,
    url: &str,
) -> Result<SendRequest<Body>, HttpError> {
    let (host, port) = match proxy {
        Some(p) => (p.host.clone(), p.port),
        None => (target.host.clone(), target.port),
    };
    debug!(%host, port, https = target.https, proxied = proxy.is_some(), "http: connecting");
    let mut stream = runtime
        .tcp_connect(host.clone(), port)
        .await
        .map_err(|source| HttpError::Connect {
            url: url.to_owned(),
            addr: format!("{host}:{port}"),
            source,
        })?;
    if target.https {
        if let Some(proxy) = proxy {
            stream = tunnel(runtime, stream, target, proxy, url).await?;
        }
        let name = ServerName::try_from(target.host.clone()).map_err(|e| HttpError::Tls {
            url: url.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let tls_stream = TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|source| HttpError::Tls {
                url: url.to_owned(),
                source,
            })?;
        stream = Box::new(tls_stream);
    }
    let (sender, connection) =
        http1::handshake::<_, Body>(HyperIo(stream))
            .await
            .map_err(|source| HttpError::Send {
                url: url.to_owned(),
                source,
            })?;
    runtime
        .spawn(Box::pin(async move {
            if let Err(e) = connection.await {
                debug!("http: connection ended: {e}");
            }
        }))
        .detach();
    Ok(sender)
}

/// `CONNECT host:port` through the proxy on `stream`; on 2xx, the raw stream to tunnel TLS in.
async fn tunnel(
    runtime: &Arc<dyn Runtime>,
    stream: Box<dyn AsyncStream>,
    target: &Target,
    proxy: &Proxy,
    url: &str,
) -> Result<Box<dyn AsyncStream>, HttpError> {
    let send_error = |source| HttpError::Send {
        url: url.to_owned(),
        source,
    };
    let (mut sender, connection) = http1::handshake::<_, Body>(HyperIo(stream))
        .await
        .map_err(send_error)?;
    let connection = runtime.spawn(Box::pin(async move {
        if let Err(e) = connection.with_upgrades().await {
            debug!("http: proxy CONNECT connection ended: {e}");
        }
    }));
    let authority = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(authority.as_str())
        .header(http::header::HOST, authority.as_str());
    if let Some(auth) = &proxy.authorization {
        request = request.header(http::header::PROXY_AUTHORIZATION, auth.clone());
    }
    let request = request
        .body(Body::default())
        .map_err(|_| HttpError::ProxyTunnel {
            url: url.to_owned(),
            status: 0,
        })?;
    let response = sender.send_request(request).await.map_err(send_error)?;
    if !response.status().is_success() {
        return Err(HttpError::ProxyTunnel {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(send_error)?;
    // The connection task ended with the upgrade; dropping its handle is a no-op now.
    connection.detach();
    match upgraded.downcast::<Io>() {
        // A proxy sends nothing after its 2xx until the client speaks, so `read_buf` is empty.
        Ok(parts) if parts.read_buf.is_empty() => Ok(parts.io.into_inner()),
        _ => Err(HttpError::ProxyTunnel {
            url: url.to_owned(),
            status: 200,
        }),
    }
}

/// The scheme's default port.
pub(crate) fn default_port(scheme: Option<&Scheme>) -> u16 {
    if scheme == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    }
}
