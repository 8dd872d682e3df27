//! `http/request` end to end: a real server over a real loopback WebSocket, performing requests
//! against a real local HTTP/1.1 server ([`TestHttp`], plain threads and `std::net`, so it
//! serves every runtime alike). Every await is bounded.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use execd_core::protocol::{HttpHeaderParam, HttpRequestParams};

use super::{sleep, timeout, within};
use crate::runtime::{Runtime, Task};
use crate::{Client, ClientOptions, Error, ServerOptions, WsServer};

/// Bytes per write of the test server's bodies.
const WRITE: usize = 64 << 10;

/// One request as the test HTTP server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target.
    pub path: String,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on a loopback port, one thread per connection, `connection: close`:
/// - `/echo`: `200`, body `"{METHOD} {path}\n"` followed by the request body;
/// - `/bytes/N`: `200` with `N` bytes, byte `i` = `i % 251`;
/// - `/slow`: `200` with a chunked body of one chunk `hello` that never ends; when the peer
///   goes away it is reported to [`TestHttp::wait_gone`].
#[derive(Debug)]
pub struct TestHttp {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    gone: async_channel::Receiver<()>,
    sent: Arc<AtomicUsize>,
}

impl TestHttp {
    /// Starts the server on `127.0.0.1:0`.
    pub fn start() -> TestHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (gone_tx, gone) = async_channel::unbounded();
        let sent = Arc::new(AtomicUsize::new(0));
        let (seen2, sent2) = (Arc::clone(&seen), Arc::clone(&sent));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (seen, gone_tx, sent) =
                    (Arc::clone(&seen2), gone_tx.clone(), Arc::clone(&sent2));
                std::thread::spawn(move || serve(stream, &seen, &gone_tx, &sent));
            }
        });
        TestHttp {
            addr,
            seen,
            gone,
            sent,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Body bytes written by `/bytes/N` so far, over all requests.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until a `/slow` body's peer went away.
    pub async fn wait_gone(&self, rt: &Arc<dyn Runtime>) {
        timeout(rt, "the upstream connection to close", self.gone.recv())
            .await
            .expect("the server thread is alive");
    }
}

fn serve(
    stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    gone: &async_channel::Sender<()>,
    total: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((name, value)) = h.trim_end().split_once(':') {
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    let mut out = stream;
    if path == "/echo" {
        let mut reply = format!("{method} {path}\n").into_bytes();
        reply.extend_from_slice(&body);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Echo: yes\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reply.len()
        );
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(&reply);
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n");
        let _ = out.write_all(head.as_bytes());
        let mut sent = 0;
        while sent < n {
            let chunk: Vec<u8> = (sent..n.min(sent + WRITE))
                .map(|i| (i % 251) as u8)
                .collect();
            if out.write_all(&chunk).is_err() {
                return;
            }
            sent += chunk.len();
            total.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    } else if path == "/slow" {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n";
        let _ = out.write_all(head.as_bytes());
        let _ = out.flush();
        let mut buf = [0u8; 256];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        let _ = gone.send_blocking(());
    } else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    let _ = out.flush();
}

struct Setup {
    http: TestHttp,
    client: Client,
    _server: Task,
}

async fn setup(rt: &Arc<dyn Runtime>) -> Setup {
    let server = within(
        rt,
        WsServer::bind_with_runtime(
            Arc::clone(rt),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerOptions::default(),
        ),
    )
    .await
    .expect("bind");
    let url = server.url();
    let task = rt.spawn(Box::pin(async move {
        let _ = server.run().await;
    }));
    let client = within(
        rt,
        Client::connect_with_runtime(Arc::clone(rt), &url, ClientOptions::default()),
    )
    .await
    .expect("connect");
    Setup {
        http: TestHttp::start(),
        client,
        _server: task,
    }
}

fn request(id: &str, method: &str, url: &str) -> HttpRequestParams {
    HttpRequestParams {
        request_id: id.to_owned(),
        method: method.to_owned(),
        url: url.to_owned(),
        headers: Vec::new(),
        body_base64: None,
        timeout_ms: None,
        redirect_policy: None,
        stream_response: false,
    }
}

fn rpc_code(e: &Error) -> i64 {
    match e {
        Error::Rpc(e) => e.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// A buffered GET and POST reach the peer with their method, headers and body; the result has
/// the status, lower-case headers and the whole body.
pub async fn buffered_get_and_post_reach_the_peer(rt: Arc<dyn Runtime>) {
    let s = setup(&rt).await;
    let get = within(
        &rt,
        s.client
            .http_request(request("g", "GET", &s.http.url("/echo"))),
    )
    .await
    .expect("GET");
    assert_eq!(get.status, 200);
    assert_eq!(get.body_base64.0, b"GET /echo\n");
    assert!(get
        .headers
        .iter()
        .any(|h| h.name == "x-echo" && h.value == "yes"));

    let mut post = request("p", "POST", &s.http.url("/echo"));
    post.headers.push(HttpHeaderParam {
        name: "X-Test".into(),
        value: "42".into(),
        value_env_var: None,
    });
    post.body_base64 = Some(execd_core::protocol::Base64Bytes(
        b"payload\x00\xff".to_vec(),
    ));
    let result = within(&rt, s.client.http_request(post))
        .await
        .expect("POST");
    assert_eq!(result.body_base64.0, b"POST /echo\npayload\x00\xff");
    let seen = s.http.seen();
    let post_seen = seen.iter().find(|r| r.method == "POST").expect("seen");
    assert_eq!(post_seen.body, b"payload\x00\xff");
    assert!(post_seen
        .headers
        .iter()
        .any(|(n, v)| n == "x-test" && v == "42"));
}

/// A 64 MiB streamed body arrives whole and in order, in deltas of at most 1 MiB with
/// contiguous seqs (checked by [`HttpBody::next_chunk`](crate::HttpBody::next_chunk)).
pub async fn streamed_64_mib_body_arrives_in_order_in_deltas_of_at_most_1_mib(
    rt: Arc<dyn Runtime>,
) {
    const LEN: usize = 64 << 20;
    let s = setup(&rt).await;
    let url = s.http.url(&format!("/bytes/{LEN}"));
    let (head, mut body) = within(
        &rt,
        s.client.http_request_stream(request("big", "GET", &url)),
    )
    .await
    .expect("head");
    assert_eq!(head.status, 200);
    assert!(head.body_base64.0.is_empty());
    let mut got = 0usize;
    while let Some(chunk) = timeout(&rt, "the next delta", body.next_chunk())
        .await
        .expect("delta")
    {
        assert!(
            !chunk.is_empty() && chunk.len() <= 1 << 20,
            "{}",
            chunk.len()
        );
        for (i, b) in chunk.iter().enumerate() {
            if *b != ((got + i) % 251) as u8 {
                panic!("byte {} differs", got + i);
            }
        }
        got += chunk.len();
    }
    assert_eq!(got, LEN);
}

/// A second streamed request with an active `requestId` is refused with `-32602`; a buffered
/// one may reuse it.
pub async fn duplicate_active_stream_id_is_32602(rt: Arc<dyn Runtime>) {
    let s = setup(&rt).await;
    let slow = s.http.url("/slow");
    let (_, mut body) = within(
        &rt,
        s.client.http_request_stream(request("dup", "GET", &slow)),
    )
    .await
    .expect("head");
    within(&rt, body.next_chunk()).await.expect("a chunk");
    let err = within(
        &rt,
        s.client.http_request_stream(request("dup", "GET", &slow)),
    )
    .await
    .expect_err("active");
    assert_eq!(rpc_code(&err), -32602);
    let reuse = within(
        &rt,
        s.client
            .http_request(request("dup", "GET", &s.http.url("/echo"))),
    )
    .await
    .expect("buffered reuse");
    assert_eq!(reuse.status, 200);
}

/// `http/cancel` ends the body with "cancelled" and closes the upstream connection.
pub async fn cancel_ends_the_body_and_the_upstream_connection(rt: Arc<dyn Runtime>) {
    let s = setup(&rt).await;
    let (_, mut body) = within(
        &rt,
        s.client
            .http_request_stream(request("c", "GET", &s.http.url("/slow"))),
    )
    .await
    .expect("head");
    within(&rt, body.next_chunk()).await.expect("a chunk");
    within(&rt, s.client.http_cancel("c"))
        .await
        .expect("cancel");
    let end = loop {
        match within(&rt, body.next_chunk()).await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(end, Err(Error::HttpBody("cancelled".into())));
    s.http.wait_gone(&rt).await;
    // The id is free again.
    let (_, body) = within(
        &rt,
        s.client
            .http_request_stream(request("c", "GET", &s.http.url("/bytes/10"))),
    )
    .await
    .expect("head");
    assert_eq!(within(&rt, body.collect()).await.expect("body").len(), 10);
}

/// Closing the client's connection cancels its streamed request on the server.
pub async fn disconnect_cancels_the_upstream_request(rt: Arc<dyn Runtime>) {
    let s = setup(&rt).await;
    let (_, mut body) = within(
        &rt,
        s.client
            .http_request_stream(request("d", "GET", &s.http.url("/slow"))),
    )
    .await
    .expect("head");
    within(&rt, body.next_chunk()).await.expect("a chunk");
    // Closing (not dropping the body, whose drop would cancel) ends the connection.
    within(&rt, s.client.close()).await;
    s.http.wait_gone(&rt).await;
    drop(body);
}

/// Bad inputs are `-32602` and the connection keeps working.
pub async fn bad_inputs_are_32602_and_the_connection_keeps_working(rt: Arc<dyn Runtime>) {
    let s = setup(&rt).await;
    let cases = [
        request("a", "GET", "ftp://example.com/x"),
        request("b", "G ET", &s.http.url("/echo")),
        request("c", "GET", "/relative"),
        {
            let mut r = request("d", "GET", &s.http.url("/echo"));
            r.headers.push(HttpHeaderParam {
                name: "X-Tok".into(),
                value: String::new(),
                value_env_var: Some("EXECD_TEST_SURELY_UNSET_VARIABLE".into()),
            });
            r
        },
    ];
    for case in cases {
        let err = within(&rt, s.client.http_request(case.clone()))
            .await
            .expect_err("refused");
        assert_eq!(rpc_code(&err), -32602, "{case:?}: {err}");
    }
    let raw = within(
        &rt,
        s.client.call(
            "http/request",
            serde_json::json!({"method": "GET", "url": s.http.url("/echo")}),
        ),
    )
    .await
    .expect_err("no requestId");
    assert_eq!(rpc_code(&raw), -32602);
    let ok = within(
        &rt,
        s.client
            .http_request(request("ok", "GET", &s.http.url("/echo"))),
    )
    .await
    .expect("still working");
    assert_eq!(ok.status, 200);
}

/// A streamed body the client does not read is not read from the network either: the upstream
/// server gets to write only what the buffers between hold (credits wait on the congested
/// connection), not the whole 4 GiB.
pub async fn an_unread_streamed_body_stops_the_download(rt: Arc<dyn Runtime>) {
    const LEN: usize = 4 << 30;
    let s = setup(&rt).await;
    let url = s.http.url(&format!("/bytes/{LEN}"));
    let (_, mut body) = within(
        &rt,
        s.client.http_request_stream(request("big", "GET", &url)),
    )
    .await
    .expect("head");
    within(&rt, body.next_chunk()).await.expect("a chunk");
    let mut last = 0;
    // Until the download stalls (it must, well before the end).
    loop {
        sleep(&rt, std::time::Duration::from_millis(500)).await;
        let sent = s.http.sent();
        if sent == last {
            break;
        }
        assert!(
            sent < 256 << 20,
            "{sent} bytes downloaded for an unread body"
        );
        last = sent;
    }
    assert!(last < 256 << 20, "{last}");
    drop(body);
}
