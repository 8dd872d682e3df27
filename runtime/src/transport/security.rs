//! Who may connect and over what (ext): the server's authentication policy and TLS, the
//! client's bearer token and trusted roots, and the peer of an accepted connection.

use std::fmt;
use std::net::SocketAddr;

use super::tls::{TlsClientConfig, TlsServerConfig};
use crate::auth::{AuthConfig, Principal};

/// Security of a WebSocket listener. The default is the reference's: no authentication, plain
/// `ws://`.
#[derive(Debug, Clone, Default)]
pub struct ServerSecurity {
    /// Required bearer authentication at the handshake; a refusal is HTTP 401 before any
    /// JSON-RPC. `GET /readyz` stays open. `None`: every upgrade is accepted.
    pub auth: Option<AuthConfig>,
    /// Serve `wss://` with this certificate. `None`: plain `ws://`.
    pub tls: Option<TlsServerConfig>,
}

/// Security of a WebSocket client connection.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// Sent as `Authorization: Bearer <token>` on the handshake.
    pub bearer_token: Option<String>,
    /// Roots to verify a `wss://` server with. `None`: the platform's roots. Ignored for
    /// `ws://` URLs.
    pub tls: Option<TlsClientConfig>,
}

impl fmt::Debug for ClientSecurity {
    /// Shows whether a token is set, never the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecurity")
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

/// The other end of an accepted WebSocket connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// The peer's socket address.
    pub addr: SocketAddr,
    /// Who it authenticated as; `None` when the listener requires no authentication.
    pub principal: Option<Principal>,
}
