//! Authentication and TLS scenarios (ext), over real loopback sockets: every 401 cause at the
//! handshake, the accepted principals, `/readyz` without a token, `wss://` with a trusted and
//! an untrusted CA, and plain `ws://` against a TLS port.
//!
//! A runtime crate runs them with [`security_tests!`](crate::security_tests), next to
//! [`scenario_tests!`](crate::scenario_tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{tcp_connect, within};
use crate::auth::{AuthConfig, AuthMode, AuthSettings};
use crate::client::{Client, ClientOptions};
use crate::runtime::{Runtime, Task};
use crate::server::{ServerOptions, WsServer};
use crate::transport::{
    ws_connect_with, ClientSecurity, Inbound, Limits, ServerSecurity, TlsClientConfig,
    TlsServerConfig, WsListener,
};

/// Expands to one `#[test]` per security scenario, in a module `security`, each calling
/// `$run(scenario)` (the same `$run` as for [`scenario_tests!`](crate::scenario_tests)).
#[macro_export]
macro_rules! security_tests {
    ($run:ident) => {
        $crate::scenario_tests!(@modules $run;
            security {
                every_jwt_refusal_is_a_401_with_the_reference_body,
                capability_token_refusals_are_401s_and_a_good_token_connects,
                a_good_jwt_connects_as_its_subject,
                a_session_is_resumed_only_by_the_principal_that_opened_it,
                readyz_and_origin_need_no_token,
                wss_with_a_trusted_ca_serves_a_session,
                wss_with_an_untrusted_ca_fails_with_a_certificate_error,
                plain_ws_to_a_tls_port_fails,
            }
        );
    };
}

const SECRET: &[u8] = b"an HS256 secret of at least thirty-two bytes";
const TOKEN: &str = "capability-token-for-tests";

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A file in a fresh temporary directory; both are removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).expect("OS randomness");
        let dir =
            std::env::temp_dir().join(format!("execd-security-test-{}", u64::from_le_bytes(bytes)));
        std::fs::create_dir(&dir).expect("create temp dir");
        let path = dir.join("secret");
        std::fs::write(&path, contents).expect("write temp file");
        TempFile { dir, path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A JWT policy as `--ws-auth signed-bearer-token --ws-issuer issuer --ws-audience execd`.
fn jwt_auth() -> AuthConfig {
    let secret = TempFile::new(SECRET);
    let settings = AuthSettings {
        mode: Some(AuthMode::SignedBearerToken),
        shared_secret_file: Some(secret.path.clone()),
        issuer: Some("issuer".to_owned()),
        audience: Some("execd".to_owned()),
        ..AuthSettings::default()
    };
    AuthConfig::from_settings(&settings)
        .expect("valid settings")
        .expect("auth configured")
}

fn sign(claims: &Value) -> String {
    sign_with(Algorithm::HS256, claims)
}

fn sign_with(algorithm: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("encode jwt")
}

async fn bind(rt: &Arc<dyn Runtime>, security: ServerSecurity) -> WsListener {
    within(
        rt,
        WsListener::bind_with_security(Arc::clone(rt), loopback(), Limits::default(), security),
    )
    .await
    .expect("bind loopback")
}

/// Sends a WebSocket upgrade for `/` with `extra` header lines and returns the whole response
/// (the server closes after a refusal).
async fn upgrade(rt: &Arc<dyn Runtime>, addr: SocketAddr, extra: &str) -> String {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    raw_http(rt, addr, &request).await
}

/// Like [`upgrade`], for an upgrade that succeeds: returns the response head only.
async fn upgrade_head(rt: &Arc<dyn Runtime>, addr: SocketAddr, extra: &str) -> String {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    let mut tcp = within(rt, tcp_connect(rt, addr))
        .await
        .expect("tcp connect");
    within(rt, tcp.write_all(request.as_bytes()))
        .await
        .expect("write request");
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(rt, tcp.read(&mut buf)).await.expect("read head");
        assert!(n > 0, "connection closed inside the response head");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).expect("ascii head")
}

async fn raw_http(rt: &Arc<dyn Runtime>, addr: SocketAddr, request: &str) -> String {
    let mut tcp = within(rt, tcp_connect(rt, addr))
        .await
        .expect("tcp connect");
    within(rt, tcp.write_all(request.as_bytes()))
        .await
        .expect("write request");
    let mut response = Vec::new();
    within(rt, tcp.read_to_end(&mut response))
        .await
        .expect("read response");
    String::from_utf8(response).expect("ascii response")
}

/// Asserts `response` is the reference's 401 with `body`.
fn assert_401(response: &str, body: &str, case: &str) {
    let expected = format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(response, expected, "case: {case}");
}

/// Every JWT failure is answered 401 with the reference's body, before any WebSocket.
pub async fn every_jwt_refusal_is_a_401_with_the_reference_body(rt: Arc<dyn Runtime>) {
    let listener = bind(
        &rt,
        ServerSecurity {
            auth: Some(jwt_auth()),
            tls: None,
        },
    )
    .await;
    let now = now();
    let good = json!({"exp": now + 300, "iss": "issuer", "aud": "execd", "sub": "alice"});
    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        sign(&claims)
    };
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&good));
    let bearer = |token: String| format!("Authorization: Bearer {token}\r\n");
    let cases = [
        ("no header", String::new(), "missing websocket bearer token"),
        (
            "query token only",
            String::new(),
            "missing websocket bearer token",
        ),
        (
            "other scheme",
            "Authorization: Basic YTpi\r\n".to_owned(),
            "invalid authorization header",
        ),
        (
            "empty bearer",
            "Authorization: Bearer\r\n".to_owned(),
            "invalid authorization header",
        ),
        (
            "expired",
            bearer(with("exp", json!(now - 3600))),
            "expired websocket jwt",
        ),
        (
            "not yet valid",
            bearer(with("nbf", json!(now + 3600))),
            "websocket jwt is not valid yet",
        ),
        (
            "wrong issuer",
            bearer(with("iss", json!("other"))),
            "websocket jwt issuer mismatch",
        ),
        (
            "wrong audience",
            bearer(with("aud", json!(["other"]))),
            "websocket jwt audience mismatch",
        ),
        ("alg none", bearer(unsigned), "invalid websocket jwt"),
        (
            "HS512",
            bearer(sign_with(Algorithm::HS512, &good)),
            "invalid websocket jwt",
        ),
        (
            "garbage",
            bearer("not-a-jwt".to_owned()),
            "invalid websocket jwt",
        ),
    ];
    for (case, headers, body) in cases {
        let response = if case == "query token only" {
            let token = sign(&good);
            let request = format!(
                "GET /?token={token} HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            raw_http(&rt, listener.local_addr(), &request).await
        } else {
            upgrade(&rt, listener.local_addr(), &headers).await
        };
        assert_401(&response, body, case);
    }
}

/// A capability-token listener refuses a missing, foreign-scheme or wrong token with 401 and
/// accepts the right one (any scheme case, padded), as principal `capability-token`.
pub async fn capability_token_refusals_are_401s_and_a_good_token_connects(rt: Arc<dyn Runtime>) {
    let listener = bind(
        &rt,
        ServerSecurity {
            auth: Some(AuthConfig::capability_token(TOKEN)),
            tls: None,
        },
    )
    .await;
    let addr = listener.local_addr();
    assert_401(
        &upgrade(&rt, addr, "").await,
        "missing websocket bearer token",
        "no header",
    );
    assert_401(
        &upgrade(&rt, addr, "Authorization: Bearer wrong\r\n").await,
        "invalid websocket bearer token",
        "wrong token",
    );
    assert_401(
        &upgrade(&rt, addr, &format!("Authorization: Token {TOKEN}\r\n")).await,
        "invalid authorization header",
        "other scheme",
    );
    let head = upgrade_head(&rt, addr, &format!("authorization: bEaReR   {TOKEN}  \r\n")).await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "good token refused: {head}"
    );

    let security = ClientSecurity {
        bearer_token: Some(TOKEN.to_owned()),
        tls: None,
    };
    let url = format!("ws://{addr}/");
    let connect = ws_connect_with(Arc::clone(&rt), &url, Limits::default(), &security);
    let (_reader, _writer) = within(&rt, connect).await.expect("connect with token");
    // The raw 101 above was accepted too; take connections until the client's.
    let mut principals = Vec::new();
    for _ in 0..2 {
        let (_r, _w, peer) = within(&rt, listener.accept_peer()).await.expect("accept");
        principals.push(peer.principal.map(|p| p.as_str().to_owned()));
    }
    assert_eq!(principals, vec![Some("capability-token".to_owned()); 2]);

    let wrong = ClientSecurity {
        bearer_token: Some("wrong".to_owned()),
        tls: None,
    };
    let err = within(
        &rt,
        ws_connect_with(Arc::clone(&rt), &url, Limits::default(), &wrong),
    )
    .await
    .expect_err("wrong token refused");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string().contains("invalid websocket bearer token"),
        "{err}"
    );
}

/// A valid JWT connects; the accepted peer carries its `sub` as the principal.
pub async fn a_good_jwt_connects_as_its_subject(rt: Arc<dyn Runtime>) {
    let listener = bind(
        &rt,
        ServerSecurity {
            auth: Some(jwt_auth()),
            tls: None,
        },
    )
    .await;
    let token =
        sign(&json!({"exp": now() + 300, "iss": "issuer", "aud": ["x", "execd"], "sub": "alice"}));
    let security = ClientSecurity {
        bearer_token: Some(token),
        tls: None,
    };
    let url = format!("ws://{}/", listener.local_addr());
    let (_reader, _writer) = within(
        &rt,
        ws_connect_with(Arc::clone(&rt), &url, Limits::default(), &security),
    )
    .await
    .expect("connect with a good jwt");
    let (_r, _w, peer) = within(&rt, listener.accept_peer()).await.expect("accept");
    assert_eq!(peer.principal.as_ref().map(|p| p.as_str()), Some("alice"));
}

/// `initialize` over a fresh connection with `token`, resuming `resume` if given; returns the
/// response. The connection is closed when this returns.
async fn initialize_as(
    rt: &Arc<dyn Runtime>,
    url: &str,
    token: &str,
    resume: Option<&str>,
) -> Value {
    let security = ClientSecurity {
        bearer_token: Some(token.to_owned()),
        tls: None,
    };
    let (mut reader, mut writer) = within(
        rt,
        ws_connect_with(Arc::clone(rt), url, Limits::default(), &security),
    )
    .await
    .expect("connect");
    let mut params = json!({"clientName": "test"});
    if let Some(sid) = resume {
        params["resumeSessionId"] = json!(sid);
    }
    let request = json!({"id": 1, "method": "initialize", "params": params});
    within(rt, writer.send(request.to_string()))
        .await
        .expect("send");
    within(rt, writer.flush()).await.expect("flush");
    loop {
        match within(rt, reader.recv()).await {
            Some(Ok(Inbound::Frame(bytes))) => {
                let v: Value = serde_json::from_slice(&bytes).expect("JSON");
                if v.get("id").is_some() {
                    return v;
                }
            }
            other => panic!("no initialize response: {other:?}"),
        }
    }
}

/// A session opened by one JWT subject cannot be resumed by another (the same error as an
/// unknown id), while its owner resumes it (ext; the reference lets anyone who learns the id).
pub async fn a_session_is_resumed_only_by_the_principal_that_opened_it(rt: Arc<dyn Runtime>) {
    let server = start_server(
        &rt,
        ServerSecurity {
            auth: Some(jwt_auth()),
            tls: None,
        },
    )
    .await;
    let token =
        |sub: &str| sign(&json!({"exp": now() + 300, "iss": "issuer", "aud": "execd", "sub": sub}));
    let opened = initialize_as(&rt, &server.url, &token("alice"), None).await;
    let sid = opened["result"]["sessionId"]
        .as_str()
        .expect("session id")
        .to_owned();
    let stolen = initialize_as(&rt, &server.url, &token("mallory"), Some(&sid)).await;
    assert_eq!(stolen["error"]["code"], -32600, "{stolen}");
    assert_eq!(
        stolen["error"]["message"],
        format!("unknown session id {sid}")
    );
    // The owner gets it back once the server has seen the first connection close.
    let mut attempts = 0;
    let resumed = loop {
        let r = initialize_as(&rt, &server.url, &token("alice"), Some(&sid)).await;
        if r["error"]["code"] != -32010 || attempts == 50 {
            break r;
        }
        attempts += 1;
        super::sleep(&rt, std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(resumed["result"]["sessionId"], sid, "{resumed}");
}

/// `/readyz` answers 200 without a token; an `Origin` header is still refused with 403 first;
/// plain requests for other paths still get 404.
pub async fn readyz_and_origin_need_no_token(rt: Arc<dyn Runtime>) {
    let listener = bind(
        &rt,
        ServerSecurity {
            auth: Some(AuthConfig::capability_token(TOKEN)),
            tls: None,
        },
    )
    .await;
    let addr = listener.local_addr();
    let ready = raw_http(&rt, addr, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ready.starts_with("HTTP/1.1 200 OK\r\n"), "{ready}");
    let origin = upgrade(&rt, addr, "Origin: http://example\r\n").await;
    assert!(origin.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{origin}");
    let other = raw_http(&rt, addr, "GET /x HTTP/1.1\r\n\r\n").await;
    assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
}

/// A CA and a leaf certificate for `localhost` and `127.0.0.1` signed by it, as PEM.
struct TestPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl TestPki {
    fn new() -> TestPki {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "execd test CA");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
        let leaf =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .expect("leaf cert");
        TestPki {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    fn server(&self) -> TlsServerConfig {
        TlsServerConfig::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes())
            .expect("server tls config")
    }

    fn client(&self) -> TlsClientConfig {
        TlsClientConfig::with_roots(false, Some(self.ca_pem.as_bytes())).expect("client roots")
    }
}

/// A running [`WsServer`]; dropping it stops the server.
struct TestServer {
    url: String,
    _task: Task,
}

async fn start_server(rt: &Arc<dyn Runtime>, security: ServerSecurity) -> TestServer {
    let options = ServerOptions {
        security,
        ..ServerOptions::default()
    };
    let server = within(
        rt,
        WsServer::bind_with_runtime(Arc::clone(rt), loopback(), options),
    )
    .await
    .expect("bind server");
    let url = server.url();
    let task = rt.spawn(Box::pin(async move {
        let _ = server.run().await;
    }));
    TestServer { url, _task: task }
}

/// Over `wss://` with the CA trusted and the token sent, `initialize` opens a session; the
/// server prints a `wss://` URL.
pub async fn wss_with_a_trusted_ca_serves_a_session(rt: Arc<dyn Runtime>) {
    let pki = TestPki::new();
    let server = start_server(
        &rt,
        ServerSecurity {
            auth: Some(AuthConfig::capability_token(TOKEN)),
            tls: Some(pki.server()),
        },
    )
    .await;
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    let mut options = ClientOptions::default();
    options.core.recovery = false;
    options.security = ClientSecurity {
        bearer_token: Some(TOKEN.to_owned()),
        tls: Some(pki.client()),
    };
    let client = within(
        &rt,
        Client::connect_with_runtime(Arc::clone(&rt), &server.url, options),
    )
    .await
    .expect("connect and initialize over wss");
    assert!(client.session_id().is_some());
    within(&rt, client.close()).await;

    // The same URL by name: the certificate also covers `localhost`.
    let by_name = server.url.replace("127.0.0.1", "localhost");
    let security = ClientSecurity {
        bearer_token: Some(TOKEN.to_owned()),
        tls: Some(pki.client()),
    };
    within(
        &rt,
        ws_connect_with(Arc::clone(&rt), &by_name, Limits::default(), &security),
    )
    .await
    .expect("connect by name");
}

/// A server whose certificate chains to a CA the client does not trust is refused by the
/// client with a certificate error.
pub async fn wss_with_an_untrusted_ca_fails_with_a_certificate_error(rt: Arc<dyn Runtime>) {
    let pki = TestPki::new();
    let other = TestPki::new();
    let listener = bind(
        &rt,
        ServerSecurity {
            auth: None,
            tls: Some(pki.server()),
        },
    )
    .await;
    assert_eq!(listener.scheme(), "wss");
    let url = format!("wss://{}/", listener.local_addr());
    let security = ClientSecurity {
        bearer_token: None,
        tls: Some(other.client()),
    };
    let err = within(
        &rt,
        ws_connect_with(Arc::clone(&rt), &url, Limits::default(), &security),
    )
    .await
    .expect_err("untrusted certificate refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

/// A plain `ws://` client against a TLS port fails (the server expects a TLS ClientHello)
/// instead of hanging.
pub async fn plain_ws_to_a_tls_port_fails(rt: Arc<dyn Runtime>) {
    let pki = TestPki::new();
    let listener = bind(
        &rt,
        ServerSecurity {
            auth: None,
            tls: Some(pki.server()),
        },
    )
    .await;
    let url = format!("ws://{}/", listener.local_addr());
    let result = within(
        &rt,
        ws_connect_with(
            Arc::clone(&rt),
            &url,
            Limits::default(),
            &ClientSecurity::default(),
        ),
    )
    .await;
    assert!(result.is_err(), "plain ws:// to a TLS port connected");
}
