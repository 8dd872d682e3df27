//! TLS for the WebSocket transport (ext: the Codex exec-server has none): `wss://` on both
//! sides, with rustls over futures-io streams (`futures-rustls`) and the `ring` provider,
//! passed per config (no process-wide default is installed).
//!
//! - Server: [`TlsServerConfig`] from a PEM certificate chain and private key. The TLS
//!   handshake runs inside the listener's handshake timeout, before the HTTP request head.
//! - Client: [`TlsClientConfig`] trusting the platform's root certificates
//!   (`rustls-native-certs`), extra CA certificates, or both. The server name checked is the
//!   URL's host (a DNS name or an IP address).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use crate::runtime::AsyncStream;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A PEM file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The read error.
        source: io::Error,
    },
    /// The certificate PEM holds no certificate.
    #[error("no certificate found in the TLS certificate PEM")]
    NoCertificate,
    /// The key PEM holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found in the TLS key PEM")]
    NoPrivateKey,
    /// A PEM section could not be decoded.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// rustls refused the certificate, the key or a CA certificate.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// No root certificate to verify servers with: the platform has none and no CA was given.
    #[error("no trusted root certificates: the platform store is empty and no CA file was given")]
    NoRoots,
}

/// A server's TLS certificate and key, ready to accept `wss://` connections. Cheap to clone.
#[derive(Clone)]
pub struct TlsServerConfig {
    acceptor: futures_rustls::TlsAcceptor,
}

impl TlsServerConfig {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key from files.
    ///
    /// # Errors
    /// A read error, or as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsServerConfig, TlsConfigError> {
        TlsServerConfig::from_pem(&read(cert)?, &read(key)?)
    }

    /// Builds the config from a PEM certificate chain (leaf first) and a PEM private key.
    ///
    /// # Errors
    /// No certificate or key in the PEM, a malformed PEM, or a key that does not fit rustls.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsServerConfig, TlsConfigError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::Pem(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsConfigError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::NoPrivateKey,
            e => TlsConfigError::Pem(e.to_string()),
        })?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsServerConfig {
            acceptor: futures_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Runs the server side of the TLS handshake over `stream`.
    pub(super) async fn accept(
        &self,
        stream: Box<dyn AsyncStream>,
    ) -> io::Result<Box<dyn AsyncStream>> {
        let tls = self.acceptor.accept(stream).await?;
        Ok(Box::new(tls))
    }
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig").finish_non_exhaustive()
    }
}

/// Which servers a client trusts for `wss://`. Cheap to clone.
#[derive(Clone)]
pub struct TlsClientConfig {
    connector: futures_rustls::TlsConnector,
}

impl TlsClientConfig {
    /// Trusts the platform's root certificates (as found by `rustls-native-certs`: the system
    /// store, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), plus the CA certificates in `extra_ca_file`
    /// (PEM) if given.
    ///
    /// Certificates of the platform store that fail to load or parse are skipped.
    ///
    /// # Errors
    /// The extra CA file cannot be read or holds an invalid certificate; no root at all.
    pub fn platform(extra_ca_file: Option<&Path>) -> Result<TlsClientConfig, TlsConfigError> {
        let extra = extra_ca_file.map(read).transpose()?;
        TlsClientConfig::with_roots(true, extra.as_deref())
    }

    /// Trusts the CA certificates in `extra_ca_pem` (PEM, any number) and, when
    /// `platform_roots` is true, the platform's root certificates.
    ///
    /// # Errors
    /// A malformed PEM or certificate; no root at all.
    pub fn with_roots(
        platform_roots: bool,
        extra_ca_pem: Option<&[u8]>,
    ) -> Result<TlsClientConfig, TlsConfigError> {
        let mut roots = RootCertStore::empty();
        if platform_roots {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "skipping part of the platform certificate store");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "platform root certificates loaded");
        }
        if let Some(pem) = extra_ca_pem {
            let mut any = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TlsConfigError::Pem(e.to_string()))?;
                roots.add(cert)?;
                any = true;
            }
            if !any {
                return Err(TlsConfigError::NoCertificate);
            }
        }
        if roots.is_empty() {
            return Err(TlsConfigError::NoRoots);
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClientConfig {
            connector: futures_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// The platform roots only, built once per process (for `wss://` without a configured
    /// [`TlsClientConfig`]).
    pub(super) fn platform_default() -> io::Result<TlsClientConfig> {
        static DEFAULT: OnceLock<Result<TlsClientConfig, String>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| TlsClientConfig::with_roots(true, None).map_err(|e| e.to_string()))
            .clone()
            .map_err(io::Error::other)
    }

    /// Runs the client side of the TLS handshake over `stream`, verifying the server's
    /// certificate for `host` (a DNS name or an IP address).
    ///
    /// Errors: `InvalidInput` for a host that is no valid server name; the handshake error
    /// (`InvalidData` carrying the rustls error for a certificate that does not verify).
    pub(super) async fn connect(
        &self,
        host: &str,
        stream: Box<dyn AsyncStream>,
    ) -> io::Result<Box<dyn AsyncStream>> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = self.connector.connect(name, stream).await?;
        Ok(Box::new(tls))
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClientConfig").finish_non_exhaustive()
    }
}

/// The ring provider, passed to every config explicitly.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_owned(),
        source,
    })
}
