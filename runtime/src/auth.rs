//! WebSocket authentication: the Codex exec-server's `--ws-auth` modes, checked once per
//! connection at the HTTP handshake, before any JSON-RPC.
//!
//! Build an [`AuthConfig`] from the plain [`AuthSettings`] a CLI fills
//! ([`AuthConfig::from_settings`] validates and reads the files, refusing every inconsistent
//! combination the reference refuses), then call [`AuthConfig::authenticate`] with the request's
//! `Authorization` header and the wall-clock time. It is pure: no clock, no I/O.
//!
//! Rules (PROTOCOL.md "Authentication", matching the Codex exec-server 0.169.0):
//!
//! - Only `Authorization: Bearer <token>` authenticates. The scheme is matched
//!   case-insensitively, the value and the token are trimmed of whitespace. No query token.
//! - `capability-token`: the token is compared with the expected one as SHA-256 digests in
//!   constant time (`subtle`); only the digest is kept in memory.
//! - `signed-bearer-token`: an HS256 JWT signed with the shared secret (at least 32 bytes).
//!   `exp` is required, `nbf` enforced when present, both with a leeway of the clock skew
//!   (default 30 s, as measured on the reference); `iss` is checked only when an issuer is
//!   configured, `aud` only when an audience is configured (a string or an array claim; a
//!   missing claim is a mismatch). Any other algorithm, `alg: none` included, is refused.
//! - A refusal is an [`Unauthorized`], answered with HTTP 401 and [`Unauthorized::body`].

use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Default leeway for `exp` and `nbf`, in seconds (measured on the Codex exec-server 0.169.0:
/// a token expired 25 s ago is accepted, one expired 35 s ago is not).
pub const DEFAULT_MAX_CLOCK_SKEW_SECS: u64 = 30;

/// Shortest accepted shared secret for `signed-bearer-token`, in bytes after trimming (matches
/// the reference).
pub const MIN_SHARED_SECRET_BYTES: usize = 32;

/// How WebSocket clients authenticate (`--ws-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMode {
    /// `capability-token`: a shared opaque token (from a file, or only its SHA-256 digest).
    CapabilityToken,
    /// `signed-bearer-token`: an HS256 JWT signed with a shared secret.
    SignedBearerToken,
}

/// The authentication flags as given on a command line, unvalidated.
///
/// Field names follow the reference's flags (`--ws-auth`, `--ws-token-file`, …). Relative
/// paths are resolved against the working directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// `--ws-auth`; `None` means no authentication.
    pub mode: Option<AuthMode>,
    /// `--ws-token-file`: a file holding the capability token (trimmed of whitespace).
    pub token_file: Option<PathBuf>,
    /// `--ws-token-sha256`: the capability token's SHA-256 digest, 64 hex digits (any case).
    pub token_sha256: Option<String>,
    /// `--ws-shared-secret-file`: a file holding the JWT secret (trimmed; at least 32 bytes).
    pub shared_secret_file: Option<PathBuf>,
    /// `--ws-issuer`: the required `iss` claim.
    pub issuer: Option<String>,
    /// `--ws-audience`: the audience the `aud` claim must contain.
    pub audience: Option<String>,
    /// `--ws-max-clock-skew-seconds`: leeway for `exp` and `nbf`, in seconds. Default
    /// [`DEFAULT_MAX_CLOCK_SKEW_SECS`].
    pub max_clock_skew_secs: Option<u64>,
}

/// Why [`AuthConfig::from_settings`] refused the settings. `Display` is the reference's
/// one-line startup error (without its `Error: ` prefix).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// A token, secret, issuer, audience or skew flag without `--ws-auth`.
    #[error(
        "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`"
    )]
    FlagsWithoutMode,
    /// JWT flags with `--ws-auth capability-token`.
    #[error("`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`")]
    JwtFlagsWithoutJwtMode,
    /// Token flags with `--ws-auth signed-bearer-token`.
    #[error("`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, not `signed-bearer-token`")]
    TokenFlagsWithJwtMode,
    /// `capability-token` without a token source.
    #[error("`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set")]
    NoTokenSource,
    /// Both token sources.
    #[error("`--ws-token-file` and `--ws-token-sha256` are mutually exclusive")]
    BothTokenSources,
    /// `signed-bearer-token` without a secret file.
    #[error("`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set")]
    NoSharedSecret,
    /// The digest is not 64 hex digits.
    #[error("--ws-token-sha256 must be a 64-character hex SHA-256 digest")]
    BadDigest,
    /// A token or secret file could not be read.
    #[error("failed to read websocket auth secret {}: {source}", path.display())]
    ReadFile {
        /// The file, made absolute.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// A token or secret file is empty after trimming.
    #[error("websocket auth secret {} must not be empty", path.display())]
    EmptyFile {
        /// The file, made absolute.
        path: PathBuf,
    },
    /// The shared secret is shorter than [`MIN_SHARED_SECRET_BYTES`].
    #[error("signed websocket bearer secret {} must be at least 32 bytes", path.display())]
    ShortSecret {
        /// The file, made absolute.
        path: PathBuf,
    },
}

/// Who a connection authenticated as (the core's [`Principal`]): `capability-token` for a
/// capability token (everyone holding it is one principal); for a JWT, its `sub` claim when it
/// is a string, else `jwt-sha256:` and the hex SHA-256 of the token.
pub use execd_core::Principal;

/// Why a handshake was refused; answered with HTTP 401 and [`body`](Self::body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unauthorized {
    /// No `Authorization` header (a `?token=` query does not count).
    #[error("missing websocket bearer token")]
    MissingToken,
    /// Another scheme, an empty Bearer token, or a header that is not text.
    #[error("invalid authorization header")]
    InvalidHeader,
    /// A capability token that does not match.
    #[error("invalid websocket bearer token")]
    InvalidToken,
    /// A JWT with a bad signature, another algorithm, no or a malformed `exp`, or not a JWT.
    #[error("invalid websocket jwt")]
    InvalidJwt,
    /// `exp` is more than the clock skew in the past.
    #[error("expired websocket jwt")]
    ExpiredJwt,
    /// `nbf` is more than the clock skew in the future.
    #[error("websocket jwt is not valid yet")]
    JwtNotYetValid,
    /// `iss` is missing or differs from the configured issuer.
    #[error("websocket jwt issuer mismatch")]
    IssuerMismatch,
    /// `aud` is missing or does not contain the configured audience.
    #[error("websocket jwt audience mismatch")]
    AudienceMismatch,
}

impl Unauthorized {
    /// The 401 response body, exactly the reference's plain text.
    pub fn body(self) -> &'static str {
        match self {
            Unauthorized::MissingToken => "missing websocket bearer token",
            Unauthorized::InvalidHeader => "invalid authorization header",
            Unauthorized::InvalidToken => "invalid websocket bearer token",
            Unauthorized::InvalidJwt => "invalid websocket jwt",
            Unauthorized::ExpiredJwt => "expired websocket jwt",
            Unauthorized::JwtNotYetValid => "websocket jwt is not valid yet",
            Unauthorized::IssuerMismatch => "websocket jwt issuer mismatch",
            Unauthorized::AudienceMismatch => "websocket jwt audience mismatch",
        }
    }
}

/// A validated authentication policy for WebSocket handshakes.
#[derive(Clone)]
pub struct AuthConfig {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Capability {
        /// SHA-256 of the expected token.
        digest: [u8; 32],
    },
    Jwt {
        key: DecodingKey,
        issuer: Option<String>,
        audience: Option<String>,
        skew_secs: u64,
    },
}

impl AuthConfig {
    /// Validates `settings` and reads the token or secret file.
    ///
    /// Returns `Ok(None)` when no authentication is configured (no `--ws-auth` and no other
    /// auth flag).
    ///
    /// # Errors
    /// Every combination the reference refuses at startup, in the reference's order: flags
    /// without a mode, flags of the other mode, no or both token sources, no secret file, an
    /// unreadable or empty file, a bad digest, a secret under 32 bytes.
    pub fn from_settings(settings: &AuthSettings) -> Result<Option<AuthConfig>, AuthConfigError> {
        let jwt_flags = settings.shared_secret_file.is_some()
            || settings.issuer.is_some()
            || settings.audience.is_some()
            || settings.max_clock_skew_secs.is_some();
        let token_flags = settings.token_file.is_some() || settings.token_sha256.is_some();
        let inner = match settings.mode {
            None if jwt_flags || token_flags => return Err(AuthConfigError::FlagsWithoutMode),
            None => return Ok(None),
            Some(AuthMode::CapabilityToken) => {
                if jwt_flags {
                    return Err(AuthConfigError::JwtFlagsWithoutJwtMode);
                }
                let digest = match (&settings.token_file, &settings.token_sha256) {
                    (Some(_), Some(_)) => return Err(AuthConfigError::BothTokenSources),
                    (None, None) => return Err(AuthConfigError::NoTokenSource),
                    (Some(path), None) => sha256(&read_secret(path)?),
                    (None, Some(hex)) => parse_digest(hex).ok_or(AuthConfigError::BadDigest)?,
                };
                Inner::Capability { digest }
            }
            Some(AuthMode::SignedBearerToken) => {
                if token_flags {
                    return Err(AuthConfigError::TokenFlagsWithJwtMode);
                }
                let path = settings
                    .shared_secret_file
                    .as_ref()
                    .ok_or(AuthConfigError::NoSharedSecret)?;
                let secret = read_secret(path)?;
                if secret.len() < MIN_SHARED_SECRET_BYTES {
                    return Err(AuthConfigError::ShortSecret {
                        path: absolute(path),
                    });
                }
                Inner::Jwt {
                    key: DecodingKey::from_secret(&secret),
                    issuer: settings.issuer.clone(),
                    audience: settings.audience.clone(),
                    skew_secs: settings
                        .max_clock_skew_secs
                        .unwrap_or(DEFAULT_MAX_CLOCK_SKEW_SECS),
                }
            }
        };
        Ok(Some(AuthConfig { inner }))
    }

    /// A capability-token policy for `token` (already trimmed), for tests and embedders.
    pub fn capability_token(token: &str) -> AuthConfig {
        AuthConfig {
            inner: Inner::Capability {
                digest: sha256(token.as_bytes()),
            },
        }
    }

    /// Checks one handshake's `Authorization` header value (`None` when absent) at
    /// `now_unix_secs` (seconds since the Unix epoch).
    ///
    /// # Errors
    /// The [`Unauthorized`] cause, whose [`body`](Unauthorized::body) is the 401 text.
    pub fn authenticate(
        &self,
        authorization_header: Option<&[u8]>,
        now_unix_secs: u64,
    ) -> Result<Principal, Unauthorized> {
        let token = bearer_token(authorization_header)?;
        match &self.inner {
            Inner::Capability { digest } => {
                if bool::from(sha256(token.as_bytes()).ct_eq(digest)) {
                    Ok(Principal::new("capability-token"))
                } else {
                    Err(Unauthorized::InvalidToken)
                }
            }
            Inner::Jwt {
                key,
                issuer,
                audience,
                skew_secs,
            } => verify_jwt(
                token,
                key,
                issuer.as_deref(),
                audience.as_deref(),
                *skew_secs,
                now_unix_secs,
            ),
        }
    }

    /// The configured mode.
    pub fn mode(&self) -> AuthMode {
        match self.inner {
            Inner::Capability { .. } => AuthMode::CapabilityToken,
            Inner::Jwt { .. } => AuthMode::SignedBearerToken,
        }
    }
}

impl fmt::Debug for AuthConfig {
    /// Shows the mode and the JWT claims checked, never the token digest or the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Capability { .. } => f
                .debug_struct("AuthConfig")
                .field("mode", &AuthMode::CapabilityToken)
                .finish_non_exhaustive(),
            Inner::Jwt {
                issuer,
                audience,
                skew_secs,
                ..
            } => f
                .debug_struct("AuthConfig")
                .field("mode", &AuthMode::SignedBearerToken)
                .field("issuer", issuer)
                .field("audience", audience)
                .field("skew_secs", skew_secs)
                .finish_non_exhaustive(),
        }
    }
}

/// Extracts the token from `Authorization: Bearer <token>`.
fn bearer_token(header: Option<&[u8]>) -> Result<&str, Unauthorized> {
    let header = header.ok_or(Unauthorized::MissingToken)?;
    let value = std::str::from_utf8(header)
        .map_err(|_| Unauthorized::InvalidHeader)?
        .trim();
    let (scheme, token) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or(Unauthorized::InvalidHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Unauthorized::InvalidHeader);
    }
    Ok(token)
}

/// Verifies an HS256 JWT's signature with `jsonwebtoken`, then its time and identity claims
/// against `now` here (so the check stays pure), in the reference's order: `exp`, `nbf`,
/// `iss`, `aud`.
fn verify_jwt(
    token: &str,
    key: &DecodingKey,
    issuer: Option<&str>,
    audience: Option<&str>,
    skew: u64,
    now: u64,
) -> Result<Principal, Unauthorized> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map_err(|_| Unauthorized::InvalidJwt)?
        .claims;
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(Unauthorized::InvalidJwt)?;
    if exp < now.saturating_sub(skew) {
        return Err(Unauthorized::ExpiredJwt);
    }
    match claims.get("nbf") {
        None => {}
        Some(nbf) => {
            let nbf = nbf.as_u64().ok_or(Unauthorized::InvalidJwt)?;
            if nbf > now.saturating_add(skew) {
                return Err(Unauthorized::JwtNotYetValid);
            }
        }
    }
    if let Some(issuer) = issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == issuer => {}
            None | Some(Value::String(_)) => return Err(Unauthorized::IssuerMismatch),
            Some(_) => return Err(Unauthorized::InvalidJwt),
        }
    }
    if let Some(audience) = audience {
        let matches = match claims.get("aud") {
            None => false,
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => {
                let mut found = false;
                for aud in auds {
                    match aud {
                        Value::String(aud) => found |= aud == audience,
                        _ => return Err(Unauthorized::InvalidJwt),
                    }
                }
                found
            }
            Some(_) => return Err(Unauthorized::InvalidJwt),
        };
        if !matches {
            return Err(Unauthorized::AudienceMismatch);
        }
    }
    let principal = match claims.get("sub") {
        Some(Value::String(sub)) => sub.clone(),
        _ => format!("jwt-sha256:{}", hex(&sha256(token.as_bytes()))),
    };
    Ok(Principal::new(principal))
}

/// Reads a token or secret file, trimmed of surrounding whitespace; refuses an empty one.
fn read_secret(path: &Path) -> Result<Vec<u8>, AuthConfigError> {
    let bytes = std::fs::read(path).map_err(|source| AuthConfigError::ReadFile {
        path: absolute(path),
        source,
    })?;
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(AuthConfigError::EmptyFile {
            path: absolute(path),
        });
    }
    Ok(trimmed.to_vec())
}

/// `path` made absolute against the working directory (as the reference prints it).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Parses 64 hex digits (either case, surrounding whitespace ignored) into a digest.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(digest)
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
