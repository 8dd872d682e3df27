//! Transport scenarios over real loopback sockets, pipes and a child process.
//!
//! Every await goes through `within`, which fails the scenario after [`TIMEOUT`](super::TIMEOUT).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use futures::StreamExt as _;
use futures_lite::future::zip;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use super::{tcp_connect, within};
use crate::runtime::{AsyncStream, ChildCommand, FdStream, Runtime};
use crate::transport::{
    stdio_transport, ws_connect, FrameReader, FrameWriter, Inbound, Limits, WsListener,
};

type RawWs = async_tungstenite::WebSocketStream<Box<dyn AsyncStream>>;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn url(listener: &WsListener) -> String {
    format!("ws://{}/", listener.local_addr())
}

async fn bind(rt: &Arc<dyn Runtime>, limits: Limits) -> WsListener {
    within(
        rt,
        WsListener::bind_with_runtime(Arc::clone(rt), loopback(), limits),
    )
    .await
    .expect("bind loopback")
}

/// Next inbound item, which must exist and not be an error.
async fn next(rt: &Arc<dyn Runtime>, reader: &mut FrameReader) -> Inbound {
    within(rt, reader.recv())
        .await
        .expect("connection ended early")
        .expect("transport error")
}

async fn next_frame(rt: &Arc<dyn Runtime>, reader: &mut FrameReader) -> Vec<u8> {
    match next(rt, reader).await {
        Inbound::Frame(bytes) => bytes,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Serves one accepted connection: echoes every frame back as text, reports oversize frames as
/// `too-large:<len>`, until the peer closes.
async fn echo_server(rt: &Arc<dyn Runtime>, listener: &WsListener) {
    let (mut reader, mut writer, _peer) = within(rt, listener.accept())
        .await
        .expect("accept connection");
    while let Some(item) = within(rt, reader.recv()).await {
        let text = match item.expect("server read") {
            Inbound::Frame(bytes) => String::from_utf8(bytes).expect("utf-8 test frame"),
            Inbound::TooLarge { len } => format!("too-large:{len}"),
        };
        within(rt, writer.send(text)).await.expect("server send");
        within(rt, writer.flush()).await.expect("server flush");
    }
}

/// A raw async-tungstenite client, to send binary frames and see control frames.
async fn raw_client(rt: &Arc<dyn Runtime>, listener: &WsListener) -> RawWs {
    let tcp = within(rt, tcp_connect(rt, listener.local_addr()))
        .await
        .expect("tcp connect");
    let (ws, _) = within(rt, async_tungstenite::client_async(url(listener), tcp))
        .await
        .expect("client handshake");
    ws
}

/// Sends a raw HTTP request and returns the whole response (the server closes after it).
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

/// Text and binary frames are both received; replies are sent as text.
pub async fn text_and_binary_frames_are_echoed_as_text(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;
    let mut client = raw_client(&rt, &listener).await;
    let client = async {
        within(&rt, client.send(Message::text("hello")))
            .await
            .expect("send text");
        within(&rt, client.send(Message::binary(b"bin".to_vec())))
            .await
            .expect("send binary");
        let first = within(&rt, client.next())
            .await
            .expect("reply")
            .expect("read");
        let second = within(&rt, client.next())
            .await
            .expect("reply")
            .expect("read");
        within(&rt, client.close(None)).await.expect("close");
        (first, second)
    };

    let ((), (first, second)) = zip(echo_server(&rt, &listener), client).await;

    assert_eq!(first, Message::text("hello"));
    assert_eq!(second, Message::text("bin"));
}

/// `GET /readyz` answers 200 `ok` and closes.
pub async fn readyz_answers_200_ok_and_closes(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;

    let response = raw_http(
        &rt,
        listener.local_addr(),
        "GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;

    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok"), "{response}");
}

/// A WebSocket handshake with an `Origin` header is refused with 403.
pub async fn handshake_with_origin_is_refused_with_403(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;
    let request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
                   Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                   Origin: http://example.com\r\n\r\n";

    let response = raw_http(&rt, listener.local_addr(), request).await;

    assert!(
        response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
        "{response}"
    );
}

/// A tungstenite client sending `Origin` sees HTTP 403.
pub async fn tungstenite_client_with_origin_gets_http_403(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;
    let mut request = url(&listener).into_client_request().expect("request");
    request.headers_mut().insert(
        "Origin",
        "http://example.com".parse().expect("header value"),
    );
    let tcp = within(&rt, tcp_connect(&rt, listener.local_addr()))
        .await
        .expect("tcp connect");

    let result = within(&rt, async_tungstenite::client_async(request, tcp)).await;

    match result {
        Err(async_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        Err(other) => panic!("expected HTTP 403, got {other:?}"),
        Ok(_) => panic!("expected HTTP 403, got a WebSocket"),
    }
}

/// Plain HTTP requests get 404 (other paths) or 400 (`/`) and the listener keeps serving.
pub async fn plain_requests_get_404_or_400_and_listener_keeps_serving(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;
    let addr = listener.local_addr();

    let not_found = raw_http(&rt, addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let bad = raw_http(&rt, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;

    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
    let (_reader, mut writer) = within(
        &rt,
        ws_connect(Arc::clone(&rt), &url(&listener), Limits::default()),
    )
    .await
    .expect("connect after plain requests");
    let (_r, _w, _peer) = within(&rt, listener.accept()).await.expect("accept");
    within(&rt, writer.send("x".into())).await.expect("send");
}

/// A silent or half-sent handshake does not delay other connections.
pub async fn slow_client_does_not_block_accept(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;
    // Connected but silent: its handshake waits for a request head that never comes.
    let _silent = within(&rt, tcp_connect(&rt, listener.local_addr()))
        .await
        .expect("tcp connect");
    let _partial = {
        let mut tcp = within(&rt, tcp_connect(&rt, listener.local_addr()))
            .await
            .expect("tcp connect");
        within(&rt, tcp.write_all(b"GET / HTTP/1.1\r\nHost:"))
            .await
            .expect("write partial head");
        tcp
    };

    let (_reader, mut writer) = within(
        &rt,
        ws_connect(Arc::clone(&rt), &url(&listener), Limits::default()),
    )
    .await
    .expect("connect");
    let (mut server_reader, _server_writer, _peer) =
        within(&rt, listener.accept()).await.expect("accept");
    within(&rt, writer.send("hi".into())).await.expect("send");
    within(&rt, writer.flush()).await.expect("flush");

    assert_eq!(next_frame(&rt, &mut server_reader).await, b"hi");
}

/// A frame over `max_frame_bytes` is reported as `TooLarge` and the next frame still arrives.
pub async fn oversize_frame_is_reported_and_next_frame_still_arrives(rt: Arc<dyn Runtime>) {
    let limits = Limits {
        max_frame_bytes: 1024,
        ..Limits::default()
    };
    let listener = bind(&rt, limits).await;
    let mut client = raw_client(&rt, &listener).await;
    let (mut reader, _writer, _peer) = within(&rt, listener.accept()).await.expect("accept");

    within(&rt, client.send(Message::binary(vec![b'x'; 5000])))
        .await
        .expect("send oversize");
    within(&rt, client.send(Message::text("a".repeat(1024))))
        .await
        .expect("send max-size frame");
    within(&rt, client.send(Message::text("next")))
        .await
        .expect("send next");

    assert_eq!(
        next(&rt, &mut reader).await,
        Inbound::TooLarge { len: 5000 }
    );
    assert_eq!(next_frame(&rt, &mut reader).await.len(), 1024);
    assert_eq!(next_frame(&rt, &mut reader).await, b"next");
}

/// A frame above `ws_hard_limit_bytes` ends only that connection.
pub async fn frame_above_hard_limit_ends_only_that_connection(rt: Arc<dyn Runtime>) {
    let limits = Limits {
        max_frame_bytes: 1024,
        ws_hard_limit_bytes: 4096,
        ..Limits::default()
    };
    let listener = bind(&rt, limits.clone()).await;
    let mut client = raw_client(&rt, &listener).await;
    let (mut reader, _writer, _peer) = within(&rt, listener.accept()).await.expect("accept");

    within(&rt, client.send(Message::binary(vec![0; 10_000])))
        .await
        .expect("send huge");

    let item = within(&rt, reader.recv()).await;
    assert!(matches!(item, Some(Err(_))), "{item:?}");
    assert!(within(&rt, reader.recv()).await.is_none());
    let (_r, mut w) = within(&rt, ws_connect(Arc::clone(&rt), &url(&listener), limits))
        .await
        .expect("new connection still accepted");
    let (mut server_reader, _sw, _peer) = within(&rt, listener.accept()).await.expect("accept");
    within(&rt, w.send("ok".into())).await.expect("send");
    within(&rt, w.flush()).await.expect("flush");
    assert_eq!(next_frame(&rt, &mut server_reader).await, b"ok");
}

/// Ten thousand small frames arrive in order in both directions at once.
pub async fn ten_thousand_small_frames_arrive_in_order_both_ways(rt: Arc<dyn Runtime>) {
    const COUNT: usize = 10_000;
    let listener = bind(&rt, Limits::default()).await;
    let (mut client_reader, mut client_writer) = within(
        &rt,
        ws_connect(Arc::clone(&rt), &url(&listener), Limits::default()),
    )
    .await
    .expect("connect");
    let (mut server_reader, mut server_writer, _peer) =
        within(&rt, listener.accept()).await.expect("accept");

    let server = async {
        for i in 0..COUNT {
            within(&rt, server_writer.send(format!("s{i}")))
                .await
                .expect("send");
        }
        within(&rt, server_writer.flush()).await.expect("flush");
        for i in 0..COUNT {
            assert_eq!(
                next_frame(&rt, &mut server_reader).await,
                format!("c{i}").as_bytes()
            );
        }
    };
    let client = async {
        for i in 0..COUNT {
            within(&rt, client_writer.send(format!("c{i}")))
                .await
                .expect("send");
        }
        within(&rt, client_writer.flush()).await.expect("flush");
        for i in 0..COUNT {
            assert_eq!(
                next_frame(&rt, &mut client_reader).await,
                format!("s{i}").as_bytes()
            );
        }
    };

    zip(server, client).await;
}

/// `ws_connect` round-trips a frame, and a client close ends both readers.
pub async fn ws_connect_round_trip_and_close_ends_both_readers(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;
    let (mut reader, mut writer) = within(
        &rt,
        ws_connect(Arc::clone(&rt), &url(&listener), Limits::default()),
    )
    .await
    .expect("connect");
    let client = async {
        within(
            &rt,
            writer.send(r#"{"jsonrpc":"2.0","method":"ping"}"#.into()),
        )
        .await
        .expect("send");
        within(&rt, writer.flush()).await.expect("flush");
        let echoed = next_frame(&rt, &mut reader).await;
        within(&rt, writer.close()).await.expect("close");
        let end = within(&rt, reader.recv()).await;
        (echoed, end)
    };

    let ((), (echoed, end)) = zip(echo_server(&rt, &listener), client).await;

    assert_eq!(echoed, br#"{"jsonrpc":"2.0","method":"ping"}"#);
    assert!(end.is_none(), "client reader ends");
}

/// A server close ends the client's reader after the last frame.
pub async fn server_close_ends_client_reader(rt: Arc<dyn Runtime>) {
    let listener = bind(&rt, Limits::default()).await;
    let (mut reader, _writer) = within(
        &rt,
        ws_connect(Arc::clone(&rt), &url(&listener), Limits::default()),
    )
    .await
    .expect("connect");
    let (mut server_reader, mut server_writer, _peer) =
        within(&rt, listener.accept()).await.expect("accept");

    within(&rt, server_writer.send("bye".into()))
        .await
        .expect("send");
    within(&rt, server_writer.close()).await.expect("close");

    assert_eq!(next_frame(&rt, &mut reader).await, b"bye");
    assert!(
        within(&rt, reader.recv()).await.is_none(),
        "client reader ends"
    );
    assert!(
        within(&rt, server_reader.recv()).await.is_none(),
        "server reader ends"
    );
}

/// An idle connection is pinged and the peer's pings are answered.
pub async fn idle_connection_is_pinged_and_pings_are_answered(rt: Arc<dyn Runtime>) {
    let limits = Limits {
        ping_interval: Some(Duration::from_millis(50)),
        ..Limits::default()
    };
    let listener = bind(&rt, limits).await;
    let mut client = raw_client(&rt, &listener).await;
    let (mut server_reader, _server_writer, _peer) =
        within(&rt, listener.accept()).await.expect("accept");
    let server = async {
        // Reading drives the pings and the pong replies.
        while let Some(item) = within(&rt, server_reader.recv()).await {
            item.expect("server read");
        }
    };
    let client = async {
        within(&rt, client.send(Message::Ping(b"probe".to_vec().into())))
            .await
            .expect("send ping");
        let mut got_pong = false;
        let mut got_ping = false;
        while !(got_pong && got_ping) {
            match within(&rt, client.next())
                .await
                .expect("open")
                .expect("read")
            {
                Message::Pong(payload) => {
                    assert_eq!(&payload[..], b"probe");
                    got_pong = true;
                }
                Message::Ping(_) => got_ping = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        within(&rt, client.close(None)).await.expect("close");
    };

    zip(server, client).await;
}

/// The stdio transport splits lines, strips CRLF, skips empty lines and reports oversize ones.
pub async fn stdio_frames_split_lines_strip_crlf_and_skip_oversize(rt: Arc<dyn Runtime>) {
    let (ours, mut peer) = FdStream::pipe(&*rt).expect("pipe");
    let (_peer_in, ours_out) = FdStream::pipe(&*rt).expect("pipe");
    let limits = Limits {
        max_frame_bytes: 8,
        ..Limits::default()
    };
    let (mut reader, _writer) = stdio_transport(ours, ours_out, limits);

    within(
        &rt,
        peer.write_all(b"one\r\n\n  \ntwo\n0123456789abcdef\r\nthree"),
    )
    .await
    .expect("write");
    within(&rt, peer.write_all(b"\n12345678\r\n"))
        .await
        .expect("write");
    drop(peer);

    assert_eq!(next_frame(&rt, &mut reader).await, b"one");
    assert_eq!(next_frame(&rt, &mut reader).await, b"  ");
    assert_eq!(next_frame(&rt, &mut reader).await, b"two");
    assert_eq!(next(&rt, &mut reader).await, Inbound::TooLarge { len: 16 });
    assert_eq!(next_frame(&rt, &mut reader).await, b"three");
    assert_eq!(next_frame(&rt, &mut reader).await, b"12345678");
    assert!(within(&rt, reader.recv()).await.is_none());
}

/// The stdio writer ends each frame with a newline and refuses frames containing one.
pub async fn stdio_writer_terminates_frames_with_newlines_and_refuses_embedded_ones(
    rt: Arc<dyn Runtime>,
) {
    let (ours_in, _peer_out) = FdStream::pipe(&*rt).expect("pipe");
    let (mut peer, ours) = FdStream::pipe(&*rt).expect("pipe");
    let (_reader, mut writer) = stdio_transport(ours_in, ours, Limits::default());

    within(&rt, writer.send("a".into())).await.expect("send");
    within(&rt, writer.send("b".into())).await.expect("send");
    let refused = within(&rt, writer.send("x\ny".into())).await;
    within(&rt, writer.close()).await.expect("close");
    drop(writer);
    let mut out = Vec::new();
    within(&rt, peer.read_to_end(&mut out)).await.expect("read");

    assert_eq!(out, b"a\nb\n");
    assert_eq!(
        refused.expect_err("newline refused").kind(),
        std::io::ErrorKind::InvalidInput
    );
}

/// Frames round-trip through a child's pipes (`cat`) from `Runtime::spawn_child`.
pub async fn stdio_round_trip_through_a_child_process(rt: Arc<dyn Runtime>) {
    let mut command = ChildCommand::new(std::process::Command::new("cat"));
    command.stdin = Stdio::piped();
    command.stdout = Stdio::piped();
    command.kill_on_drop = true;
    let mut child = rt.spawn_child(command).expect("spawn cat");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut reader, mut writer) = stdio_transport(stdout, stdin, Limits::default());

    let big = "z".repeat(300_000);
    // Write concurrently with reading: `cat` blocks on its stdout until it is read.
    let frames = ["first".to_owned(), big.clone(), "last".to_owned()];
    let feeder = async {
        for text in frames {
            within(&rt, writer.send(text)).await.expect("send");
        }
        // Closing the only handle on the pipe gives `cat` EOF.
        within(&rt, writer.close()).await.expect("close stdin");
        drop(writer);
    };
    let read = async {
        assert_eq!(next_frame(&rt, &mut reader).await, b"first");
        assert_eq!(next_frame(&rt, &mut reader).await, big.as_bytes());
        assert_eq!(next_frame(&rt, &mut reader).await, b"last");
        assert!(within(&rt, reader.recv()).await.is_none());
    };
    zip(feeder, read).await;

    let status = within(&rt, child.status).await.expect("cat exits");
    assert!(status.success(), "{status:?}");
}

/// Transport halves and listeners are `Send + 'static`.
pub async fn halves_move_into_tasks(rt: Arc<dyn Runtime>) {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let listener = bind(&rt, Limits::default()).await;
    let (reader, writer): (FrameReader, FrameWriter) = within(
        &rt,
        ws_connect(Arc::clone(&rt), &url(&listener), Limits::default()),
    )
    .await
    .expect("connect");
    assert_send(&reader);
    assert_send(&writer);
    assert_send(&listener);
}
