//! The HTTP runner (`execd_runtime::http`) on smol against real servers on loopback: a small
//! blocking HTTP/1.1 server per test (std `TcpListener`, one thread per connection, requests
//! parsed with httparse), optionally behind rustls or acting as a proxy.

use std::ffi::OsString;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use execd_core::protocol::{BodyStream, HttpRequest, HttpRequestParams};
use execd_runtime::http::{HttpError, HttpRunner, ProxyConfig};
use execd_runtime::Runtime;
use execd_smol::SmolRuntime;

/// Every await in these tests is bounded by this.
const LIMIT: Duration = Duration::from_secs(30);

fn block_on<T>(future: impl Future<Output = T>) -> T {
    smol::block_on(within(LIMIT, future))
}

async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> T {
    smol::future::or(future, async {
        smol::Timer::after(limit).await;
        panic!("not done within {limit:?}");
    })
    .await
}

fn runner() -> HttpRunner {
    runner_with_ca(None)
}

fn runner_with_ca(ca: Option<&[u8]>) -> HttpRunner {
    let runtime: Arc<dyn Runtime> = Arc::new(SmolRuntime);
    HttpRunner::new(runtime, ca)
        .expect("runner")
        .with_proxies(ProxyConfig::none())
}

/// A request as `http/request` params would give it.
fn request(json: serde_json::Value) -> HttpRequest {
    let mut json = json;
    json["requestId"] = "r".into();
    let params: HttpRequestParams = serde_json::from_value(json).expect("params");
    let env = |_: &str| None::<OsString>;
    params.validate(&env).expect("valid")
}

fn get(url: &str) -> HttpRequest {
    request(serde_json::json!({"method": "GET", "url": url}))
}

/// What the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

type Handler = dyn Fn(&Seen, &mut dyn Stream) -> io::Result<()> + Send + Sync;

/// A server on 127.0.0.1 answering each request with `handler`; every request is also sent to
/// the returned receiver. `tls` wraps each connection in rustls.
struct Server {
    addr: SocketAddr,
    seen: mpsc::Receiver<Seen>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    fn start(
        handler: impl Fn(&Seen, &mut dyn Stream) -> io::Result<()> + Send + Sync + 'static,
    ) -> Server {
        Server::start_with(None, Arc::new(handler))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>, handler: Arc<Handler>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, seen) = mpsc::channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let (handler, tx, tls) = (handler.clone(), tx.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = match tls {
                        Some(config) => {
                            let session =
                                rustls::ServerConnection::new(config).expect("tls session");
                            serve(rustls::StreamOwned::new(session, conn), &*handler, &tx)
                        }
                        None => serve(conn, &*handler, &tx),
                    };
                });
            }
        });
        Server {
            addr,
            seen,
            connections,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn next_seen(&self) -> Seen {
        self.seen
            .recv_timeout(LIMIT)
            .expect("a request reached the server")
    }
}

/// Reads requests off one connection until EOF, answering each with `handler`.
fn serve(
    stream: impl Read + Write + Send,
    handler: &Handler,
    tx: &mpsc::Sender<Seen>,
) -> io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read_until(b'\n', &mut head)?;
            if n == 0 {
                return Ok(());
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        parsed.parse(&head).map_err(io::Error::other)?;
        let mut seen = Seen {
            method: parsed.method.unwrap_or_default().to_owned(),
            target: parsed.path.unwrap_or_default().to_owned(),
            headers: parsed
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            body: Vec::new(),
        };
        let length: usize = seen
            .header("content-length")
            .map_or(0, |v| v.parse().expect("length"));
        seen.body.resize(length, 0);
        stream.read_exact(&mut seen.body)?;
        let _ = tx.send(seen.clone());
        handler(&seen, stream.get_mut())?;
        stream.get_mut().flush()?;
    }
}

fn respond(
    stream: &mut dyn Stream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    stream.write_all(body)
}

#[test]
fn buffered_get_sends_method_path_and_default_headers() {
    let server = Server::start(|_, s| {
        respond(
            s,
            "200 OK",
            &[("X-Reply", "yes"), ("X-Bin", "caf\u{e9}")],
            b"hello",
        )
    });
    let result =
        block_on(runner().request_buffered(get(&server.url("/a/b?c=d#frag")))).expect("response");
    let seen = server.next_seen();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("GET", "/a/b?c=d")
    );
    assert_eq!(seen.header("host"), Some(server.addr.to_string().as_str()));
    assert_eq!(seen.header("accept"), Some("*/*"));
    assert!(seen.body.is_empty());
    assert_eq!(result.status, 200);
    assert_eq!(result.body_base64.0, b"hello");
    let headers: Vec<_> = result
        .headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(headers, [("content-length", "5"), ("x-reply", "yes")]);
}

#[test]
fn buffered_post_sends_headers_in_order_and_a_binary_body_byte_exact() {
    let server = Server::start(|seen, s| respond(s, "201 Created", &[], &seen.body));
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let req = request(serde_json::json!({
        "method": "POST", "url": server.url("/upload"),
        "headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"},
                    {"name": "Content-Type", "value": "application/octet-stream"}],
        "bodyBase64": base64_encode(&body),
    }));
    let result = block_on(runner().request_buffered(req)).expect("response");
    let seen = server.next_seen();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/upload")
    );
    let xa: Vec<_> = seen
        .headers
        .iter()
        .filter(|(n, _)| n == "x-a")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(xa, ["1", "2"]);
    assert_eq!(
        seen.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(seen.header("content-length"), Some("70000"));
    assert!(seen.body == body, "the server got the body byte-exact");
    assert_eq!(result.status, 201);
    assert!(
        result.body_base64.0 == body,
        "the response body came back byte-exact"
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    serde_json::to_value(execd_core::protocol::Base64Bytes(bytes.to_vec()))
        .expect("json")
        .as_str()
        .expect("string")
        .to_owned()
}

#[test]
fn a_64_mib_body_streams_in_chunks_of_at_most_one_mib() {
    const TOTAL: usize = 64 << 20;
    let server = Server::start(|_, s| {
        s.write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {TOTAL}\r\n\r\n").as_bytes())?;
        let block = vec![0xa5u8; 256 << 10];
        for _ in 0..TOTAL / block.len() {
            s.write_all(&block)?;
        }
        Ok(())
    });
    let req = request(
        serde_json::json!({"method": "GET", "url": server.url("/big"), "streamResponse": true}),
    );
    block_on(async {
        let mut response = runner().request(req).await.expect("head");
        assert_eq!(response.result().body_base64.0.len(), 0);
        let mut stream = BodyStream::new("r".into());
        let (mut bytes, mut deltas, mut biggest) = (0usize, 0u64, 0usize);
        while let Some(chunk) = response.chunk().await.expect("chunk") {
            assert!(chunk.iter().all(|&b| b == 0xa5));
            for delta in stream.chunk(chunk.to_vec()) {
                let len = delta.delta_base64.0.len();
                assert!(len <= BodyStream::MAX_DELTA);
                assert_eq!(delta.seq, deltas + 1);
                biggest = biggest.max(len);
                bytes += len;
                deltas += 1;
            }
        }
        let last = stream.finish(None).expect("terminal delta");
        assert_eq!((last.seq, last.done, last.error), (deltas + 1, true, None));
        assert_eq!(bytes, TOTAL);
        assert!(biggest > 0);
    });
}

#[test]
fn a_chunked_body_is_decoded() {
    let server = Server::start(|_, s| {
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")?;
        for part in [&b"hello "[..], b"chunked ", b"world"] {
            s.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
            s.write_all(part)?;
            s.write_all(b"\r\n")?;
            s.flush()?;
        }
        s.write_all(b"0\r\n\r\n")
    });
    let result = block_on(runner().request_buffered(get(&server.url("/c")))).expect("response");
    assert_eq!(result.body_base64.0, b"hello chunked world");
}

fn redirecting_server() -> Server {
    Server::start(|seen, s| {
        if let Some(n) = seen.target.strip_prefix("/hop/") {
            let n: u32 = n.parse().expect("hop count");
            let next = if n == 0 {
                "/end".to_owned()
            } else {
                format!("/hop/{}", n - 1)
            };
            respond(s, "302 Found", &[("location", &next)], b"")
        } else if seen.target == "/see-other" {
            respond(s, "303 See Other", &[("location", "end")], b"")
        } else if seen.target == "/temporary" {
            respond(s, "307 Temporary Redirect", &[("location", "/end")], b"")
        } else {
            let text = format!(
                "{} {} {}",
                seen.method,
                seen.target,
                String::from_utf8_lossy(&seen.body)
            );
            respond(s, "200 OK", &[], text.as_bytes())
        }
    })
}

#[test]
fn redirects_are_followed_up_to_ten() {
    let server = redirecting_server();
    let runner = runner();
    let ok = block_on(runner.request_buffered(get(&server.url("/hop/9")))).expect("10 redirects");
    assert_eq!(
        (ok.status, ok.body_base64.0.as_slice()),
        (200, &b"GET /end "[..])
    );
    let err =
        block_on(runner.request_buffered(get(&server.url("/hop/10")))).expect_err("11 redirects");
    assert!(matches!(err, HttpError::TooManyRedirects), "{err}");
    assert_eq!(err.to_string(), "too many redirects");
}

#[test]
fn see_other_turns_post_into_get_and_307_keeps_it() {
    let server = redirecting_server();
    let runner = runner();
    let post = |path: &str| {
        request(
            serde_json::json!({"method": "POST", "url": server.url(path), "bodyBase64": "aGk=",
            "headers": [{"name": "content-type", "value": "text/plain"}]}),
        )
    };
    let see_other = block_on(runner.request_buffered(post("/see-other"))).expect("303");
    assert_eq!(see_other.body_base64.0, b"GET /end ");
    let temporary = block_on(runner.request_buffered(post("/temporary"))).expect("307");
    assert_eq!(temporary.body_base64.0, b"POST /end hi");
    let seen: Vec<Seen> = (0..4).map(|_| server.next_seen()).collect();
    assert_eq!(
        seen[1].header("content-type"),
        None,
        "no body headers after 303"
    );
    assert_eq!(
        seen[1].header("referer"),
        Some(server.url("/see-other").as_str())
    );
    assert_eq!(seen[3].header("content-type"), Some("text/plain"));
}

#[test]
fn stop_policy_returns_the_redirect_as_is() {
    let server = redirecting_server();
    let req = request(
        serde_json::json!({"method": "GET", "url": server.url("/hop/3"), "redirectPolicy": "stop"}),
    );
    let result = block_on(runner().request_buffered(req)).expect("response");
    assert_eq!(result.status, 302);
    assert!(result
        .headers
        .iter()
        .any(|h| h.name == "location" && h.value == "/hop/2"));
}

#[test]
fn timeout_before_the_head_fails_the_request() {
    let server = Server::start(|_, s| {
        thread::sleep(Duration::from_secs(3));
        respond(s, "200 OK", &[], b"late")
    });
    let req =
        request(serde_json::json!({"method": "GET", "url": server.url("/slow"), "timeoutMs": 200}));
    let started = std::time::Instant::now();
    let err = block_on(runner().request(req)).expect_err("timed out");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.to_string(), "request timed out after 200 ms");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn timeout_during_the_body_ends_the_stream_with_an_error() {
    let server = Server::start(|_, s| {
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")?;
        s.flush()?;
        thread::sleep(Duration::from_secs(3));
        s.write_all(b"defghij")
    });
    let req = request(
        serde_json::json!({"method": "GET", "url": server.url("/slow-body"), "timeoutMs": 300}),
    );
    block_on(async {
        let mut response = runner().request(req).await.expect("head in time");
        assert_eq!(
            response.chunk().await.expect("first bytes").as_deref(),
            Some(&b"abc"[..])
        );
        let err = response.chunk().await.expect_err("timed out");
        assert!(err.is_timeout(), "{err}");
        assert_eq!(response.chunk().await.expect("ended"), None);
    });
}

#[test]
fn a_server_dying_mid_body_is_a_body_error() {
    let server = Server::start(|_, s| {
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")?;
        Err(io::Error::other("die"))
    });
    let err = block_on(runner().request_buffered(get(&server.url("/die")))).expect_err("cut short");
    assert!(matches!(err, HttpError::Body { .. }), "{err}");
    assert!(
        err.to_string().starts_with("error decoding response body"),
        "{err}"
    );
}

#[test]
fn connection_refused_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/x");
    let err = block_on(runner().request(get(&url))).expect_err("refused");
    assert!(matches!(err, HttpError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn keep_alive_connections_are_reused() {
    let server = Server::start(|_, s| respond(s, "200 OK", &[], b"ok"));
    let runner = runner();
    for _ in 0..3 {
        block_on(runner.request_buffered(get(&server.url("/k")))).expect("response");
    }
    for _ in 0..3 {
        assert_eq!(server.next_seen().target, "/k");
    }
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "one connection served all three"
    );
}

#[test]
fn a_connection_whose_body_was_not_read_to_the_end_is_not_reused() {
    let body = vec![b'x'; 256 << 10];
    let server = Server::start(move |_, s| respond(s, "200 OK", &[], &body));
    let runner = runner();
    let response = block_on(runner.request(get(&server.url("/dropped")))).expect("response");
    drop(response);
    let result = block_on(runner.request_buffered(get(&server.url("/next")))).expect("response");
    assert_eq!(result.status, 200);
    assert_eq!(server.next_seen().target, "/dropped");
    assert_eq!(server.next_seen().target, "/next");
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        2,
        "the unread body took its connection with it"
    );
}

struct Tls {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn tls() -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .expect("server config");
    Tls {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

#[test]
fn https_works_with_the_extra_ca_and_fails_without_it() {
    let tls = tls();
    let server = Server::start_with(
        Some(tls.server.clone()),
        Arc::new(|seen: &Seen, s: &mut dyn Stream| {
            respond(
                s,
                "200 OK",
                &[],
                format!("secure {}", seen.target).as_bytes(),
            )
        }),
    );
    let url = format!("https://127.0.0.1:{}/s", server.addr.port());
    let ok = block_on(runner_with_ca(Some(tls.ca_pem.as_bytes())).request_buffered(get(&url)))
        .expect("trusted");
    assert_eq!(ok.body_base64.0, b"secure /s");
    let named = format!("https://localhost:{}/n", server.addr.port());
    let ok = block_on(runner_with_ca(Some(tls.ca_pem.as_bytes())).request_buffered(get(&named)))
        .expect("by name");
    assert_eq!(ok.body_base64.0, b"secure /n");
    let err = block_on(runner().request_buffered(get(&url))).expect_err("untrusted");
    assert!(matches!(err, HttpError::Tls { .. }), "{err}");
}

#[test]
fn a_bad_ca_bundle_is_refused() {
    let runtime: Arc<dyn Runtime> = Arc::new(SmolRuntime);
    let err = HttpRunner::new(runtime, Some(b"not a pem")).expect_err("no certificate");
    assert!(matches!(err, HttpError::CaBundle(_)), "{err}");
}

fn proxies(proxy: &Server) -> ProxyConfig {
    let proxy_url = format!("http://{}", proxy.addr);
    ProxyConfig::from_env(&move |name| {
        (name == "http_proxy" || name == "https_proxy").then(|| proxy_url.clone())
    })
}

/// `localhost` is a name, so it goes through the proxy (absolute-form); the literal
/// 127.0.0.1 never does.
#[test]
fn the_http_proxy_is_used_for_names_and_bypassed_for_loopback_literals() {
    let origin = Server::start(|_, s| respond(s, "200 OK", &[], b"direct"));
    let proxy = Server::start(|_, s| respond(s, "200 OK", &[], b"via proxy"));
    let runner = runner().with_proxies(proxies(&proxy));

    let named = format!("http://localhost:{}/p?q=1", origin.addr.port());
    let result = block_on(runner.request_buffered(get(&named))).expect("proxied");
    assert_eq!(result.body_base64.0, b"via proxy");
    let seen = proxy.next_seen();
    assert_eq!(seen.target, named);
    assert_eq!(
        seen.header("host"),
        Some(format!("localhost:{}", origin.addr.port()).as_str())
    );

    let literal = origin.url("/d");
    let result = block_on(runner.request_buffered(get(&literal))).expect("direct");
    assert_eq!(result.body_base64.0, b"direct");
    assert_eq!(origin.next_seen().target, "/d");
}

/// https through the proxy: a `CONNECT localhost:port` tunnel, TLS inside it.
#[test]
fn https_goes_through_a_connect_tunnel() {
    let tls = tls();
    let origin = Server::start_with(
        Some(tls.server.clone()),
        Arc::new(|_: &Seen, s: &mut dyn Stream| respond(s, "200 OK", &[], b"tunnelled")),
    );
    let origin_addr = origin.addr;
    let proxy_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let proxy_addr = proxy_listener.local_addr().expect("addr");
    let (tx, connects) = mpsc::channel();
    thread::spawn(move || {
        let Ok((client, _)) = proxy_listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(client.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("request line");
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).expect("header");
            if header == "\r\n" {
                break;
            }
        }
        let _ = tx.send(line);
        let upstream = TcpStream::connect(origin_addr).expect("origin");
        (&client)
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .expect("reply");
        let (mut up_read, mut up_write) = (upstream.try_clone().expect("clone"), upstream);
        let mut client_write = client;
        thread::spawn(move || io::copy(&mut reader, &mut up_write));
        let _ = io::copy(&mut up_read, &mut client_write);
    });
    let proxy_url = format!("http://{proxy_addr}");
    let proxies =
        ProxyConfig::from_env(&move |name| (name == "https_proxy").then(|| proxy_url.clone()));
    let runner = runner_with_ca(Some(tls.ca_pem.as_bytes())).with_proxies(proxies);
    let url = format!("https://localhost:{}/t", origin_addr.port());
    let result = block_on(runner.request_buffered(get(&url))).expect("tunnelled");
    assert_eq!(result.body_base64.0, b"tunnelled");
    let line = connects.recv_timeout(LIMIT).expect("CONNECT");
    assert_eq!(
        line,
        format!("CONNECT localhost:{} HTTP/1.1\r\n", origin_addr.port())
    );
}
