//! Authentication and TLS flags: `execd serve`'s (the Codex exec-server's `--ws-*` flags, flag
//! for flag, plus `--tls-cert`/`--tls-key`) and `execd run`'s (`--token-file`, `EXECD_TOKEN`,
//! `--ca-file`).
//!
//! A refused combination of `execd serve` flags is a [`Refusal`]: one line on stderr and exit
//! code 1, as the reference (which prints `Error: <reason>`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use execd_runtime::transport::{ClientSecurity, ServerSecurity, TlsClientConfig, TlsServerConfig};
use execd_runtime::{AuthConfig, AuthMode, AuthSettings};

/// Exit code of a refused startup configuration (the reference's).
const EXIT_REFUSED: u8 = 1;

/// `--ws-auth` values, spelled as the reference's.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum WsAuth {
    /// A shared opaque token: `--ws-token-file` or `--ws-token-sha256`.
    CapabilityToken,
    /// HS256 JWTs signed with `--ws-shared-secret-file`.
    SignedBearerToken,
}

/// `execd serve`'s authentication and TLS flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeSecurityArgs {
    /// Authentication mode for incoming WebSocket connections.
    #[arg(long, value_enum, value_name = "MODE")]
    ws_auth: Option<WsAuth>,
    /// Path to the capability-token file (whitespace trimmed).
    #[arg(long, value_name = "PATH")]
    ws_token_file: Option<PathBuf>,
    /// Hex-encoded SHA-256 digest of the capability token.
    #[arg(long, value_name = "HEX")]
    ws_token_sha256: Option<String>,
    /// Path to the shared secret file (at least 32 bytes) for signed JWT bearer tokens.
    #[arg(long, value_name = "PATH")]
    ws_shared_secret_file: Option<PathBuf>,
    /// Expected issuer (`iss`) of signed JWT bearer tokens.
    #[arg(long, value_name = "ISSUER")]
    ws_issuer: Option<String>,
    /// Expected audience (`aud`) of signed JWT bearer tokens.
    #[arg(long, value_name = "AUDIENCE")]
    ws_audience: Option<String>,
    /// Maximum clock skew when validating signed JWT bearer tokens (default 30).
    #[arg(long, value_name = "SECONDS")]
    ws_max_clock_skew_seconds: Option<u64>,
    /// PEM certificate chain (leaf first): serve `wss://` (needs --tls-key).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// A startup configuration `execd serve` refuses; exits with code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refusal(String);

impl Refusal {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

/// The exit code for a failed command: 1 for a [`Refusal`], else `other`.
pub(crate) fn exit_code(error: &anyhow::Error, other: u8) -> u8 {
    if error.is::<Refusal>() {
        EXIT_REFUSED
    } else {
        other
    }
}

impl ServeSecurityArgs {
    /// Validates the flags and reads their files.
    ///
    /// `addr` is the WebSocket address (`None` for stdio, where no flag applies). A non-loopback
    /// address needs authentication (or `allow_non_loopback`); with authentication but without
    /// TLS it is served with one warning on stderr (tokens cross the network in clear text).
    ///
    /// # Errors
    /// A [`Refusal`] with the reference's one-line reason, or a TLS file that does not load.
    pub(crate) fn server_security(
        &self,
        addr: Option<SocketAddr>,
        allow_non_loopback: bool,
    ) -> anyhow::Result<ServerSecurity> {
        let settings = AuthSettings {
            mode: self.ws_auth.map(|mode| match mode {
                WsAuth::CapabilityToken => AuthMode::CapabilityToken,
                WsAuth::SignedBearerToken => AuthMode::SignedBearerToken,
            }),
            token_file: self.ws_token_file.clone(),
            token_sha256: self.ws_token_sha256.clone(),
            shared_secret_file: self.ws_shared_secret_file.clone(),
            issuer: self.ws_issuer.clone(),
            audience: self.ws_audience.clone(),
            max_clock_skew_secs: self.ws_max_clock_skew_seconds,
        };
        let auth = AuthConfig::from_settings(&settings).map_err(|e| Refusal(e.to_string()))?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsServerConfig::from_pem_files(cert, key)
                    .map_err(|e| Refusal(format!("invalid --tls-cert/--tls-key: {e}")))?,
            ),
            _ => None,
        };
        let Some(addr) = addr else {
            if auth.is_some() || tls.is_some() {
                return Err(Refusal(
                    "--ws-auth and --tls-* apply to ws:// listeners, not --listen stdio or unix:"
                        .to_owned(),
                )
                .into());
            }
            return Ok(ServerSecurity::default());
        };
        if !addr.ip().is_loopback() {
            if auth.is_none() && !allow_non_loopback {
                return Err(Refusal(format!(
                    "refusing to listen on non-loopback {addr} without --ws-auth (or --allow-non-loopback): anyone who can reach the port could run commands as this user"
                ))
                .into());
            }
            if auth.is_some() && tls.is_none() {
                eprintln!(
                    "execd: warning: serving {addr} with authentication but without TLS: tokens and all traffic cross the network in clear text (use --tls-cert/--tls-key or ssh)"
                );
            }
        }
        Ok(ServerSecurity { auth, tls })
    }
}

/// `execd run`'s token and CA flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunSecurityArgs {
    /// File holding the bearer token sent on the WebSocket handshake (whitespace trimmed).
    /// Default: the `EXECD_TOKEN` environment variable, if set.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Extra PEM CA certificate(s) to trust for `wss://`, besides the platform's roots.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

impl RunSecurityArgs {
    /// The client security for `url`: the token from `--token-file` or `EXECD_TOKEN`, and for
    /// `wss://` the platform's roots plus `--ca-file`.
    ///
    /// # Errors
    /// The token file cannot be read or is empty; the CA file does not load.
    pub(crate) fn client_security(&self, url: &str) -> anyhow::Result<ClientSecurity> {
        let bearer_token = match &self.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --token-file {}", path.display()))?;
                let token = token.trim();
                anyhow::ensure!(
                    !token.is_empty(),
                    "--token-file {} is empty",
                    path.display()
                );
                Some(token.to_owned())
            }
            None => std::env::var("EXECD_TOKEN")
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        let tls = if url.starts_with("wss://") {
            Some(
                TlsClientConfig::platform(self.ca_file.as_deref())
                    .context("cannot set up TLS roots")?,
            )
        } else {
            None
        };
        Ok(ClientSecurity { bearer_token, tls })
    }
}
