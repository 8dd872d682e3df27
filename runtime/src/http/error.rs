use std::io;

/// Why an HTTP request failed. The `Display` text is one line with the causes
/// chained, for the `-32603` message or a terminal delta's `error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// Resolving or connecting to the server (or the proxy) failed.
    #[error("error sending request for url ({url}): connect to {addr}: {source}")]
    Connect {
        /// The request URL.
        url: String,
        /// `host:port` connected to (the proxy's when one is used).
        addr: String,
        /// The resolution or connect error.
        source: io::Error,
    },
    /// The TLS handshake failed (e.g. an untrusted certificate).
    #[error(
        "error sending request for url ({url}): tls handshake: {}",
        chain(source)
    )]
    Tls {
        /// The request URL.
        url: String,
        /// The rustls error, as an I/O error.
        source: io::Error,
    },
    /// The proxy refused the `CONNECT` tunnel.
    #[error("error sending request for url ({url}): proxy CONNECT answered {status}")]
    ProxyTunnel {
        /// The request URL.
        url: String,
        /// The proxy's status.
        status: u16,
    },
    /// Sending the request or reading the response head failed.
    #[error("error sending request for url ({url}): {}", chain(source))]
    Send {
        /// The request URL.
        url: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// More than 10 redirects (matches the Codex exec-server).
    #[error("too many redirects")]
    TooManyRedirects,
    /// A redirect's `Location` is missing, unparsable, or not http(s).
    #[error("invalid redirect location {0:?}")]
    RedirectLocation(String),
    /// The `timeoutMs` deadline passed.
    #[error("request timed out after {0} ms")]
    TimedOut(u64),
    /// Reading the body failed (the connection closed early, bad chunked encoding).
    #[error("error decoding response body: {}", chain(source))]
    Body {
        /// hyper's error.
        source: hyper::Error,
    },
    /// The extra CA bundle holds no usable certificate.
    #[error("invalid extra CA bundle: {0}")]
    CaBundle(String),
}

/// `error: cause: cause…`, each level once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

impl HttpError {
    /// Whether this is the `timeoutMs` deadline.
    pub fn is_timeout(&self) -> bool {
        matches!(self, HttpError::TimedOut(_))
    }
}
