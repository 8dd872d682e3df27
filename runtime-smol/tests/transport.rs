//! Transport tests over real loopback sockets, pipes and a child process.
//!
//! Every await goes through `within`, which fails the test after 10 s.

mod common;
use common::within;

use std::net::SocketAddr;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::Message;
use execd_smol::transport::{
    stdio_transport, ws_connect, FrameReader, FrameWriter, Inbound, Limits, WsListener,
};
use futures::StreamExt;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn url(listener: &WsListener) -> String {
    format!("ws://{}/", listener.local_addr())
}

async fn bind(limits: Limits) -> WsListener {
    within(WsListener::bind(loopback(), limits))
        .await
        .expect("bind loopback")
}

/// Next inbound item, which must exist and not be an error.
async fn next(reader: &mut FrameReader) -> Inbound {
    within(reader.recv())
        .await
        .expect("connection ended early")
        .expect("transport error")
}

async fn next_frame(reader: &mut FrameReader) -> Vec<u8> {
    match next(reader).await {
        Inbound::Frame(bytes) => bytes,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Serves one accepted connection: echoes every frame back as text, reports oversize frames as
/// `too-large:<len>`, until the peer closes.
fn spawn_echo_server(listener: WsListener) -> smol::Task<WsListener> {
    smol::spawn(async move {
        let (mut reader, mut writer, _peer) =
            within(listener.accept()).await.expect("accept connection");
        while let Some(item) = within(reader.recv()).await {
            let text = match item.expect("server read") {
                Inbound::Frame(bytes) => String::from_utf8(bytes).expect("utf-8 test frame"),
                Inbound::TooLarge { len } => format!("too-large:{len}"),
                other => panic!("unexpected inbound {other:?}"),
            };
            within(writer.send(text)).await.expect("server send");
            within(writer.flush()).await.expect("server flush");
        }
        listener
    })
}

/// A raw async-tungstenite client, to send binary frames and see control frames.
async fn raw_client(listener: &WsListener) -> async_tungstenite::WebSocketStream<TcpStream> {
    let tcp = within(TcpStream::connect(listener.local_addr()))
        .await
        .expect("tcp connect");
    let (ws, _) = within(async_tungstenite::client_async(url(listener), tcp))
        .await
        .expect("client handshake");
    ws
}

/// Sends a raw HTTP request and returns the whole response (the server closes after it).
async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = within(TcpStream::connect(addr)).await.expect("tcp connect");
    within(tcp.write_all(request.as_bytes()))
        .await
        .expect("write request");
    let mut response = Vec::new();
    within(tcp.read_to_end(&mut response))
        .await
        .expect("read response");
    String::from_utf8(response).expect("ascii response")
}

#[test]
fn text_and_binary_frames_are_echoed_as_text() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        let mut client = raw_client(&listener).await;
        let server = spawn_echo_server(listener);

        within(client.send(Message::text("hello")))
            .await
            .expect("send text");
        within(client.send(Message::binary(b"bin".to_vec())))
            .await
            .expect("send binary");

        let first = within(client.next()).await.expect("reply").expect("read");
        let second = within(client.next()).await.expect("reply").expect("read");
        assert_eq!(first, Message::text("hello"));
        assert_eq!(second, Message::text("bin"));

        within(client.close(None)).await.expect("close");
        within(server).await;
    });
}

#[test]
fn readyz_answers_200_ok_and_closes() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;

        let response = raw_http(
            listener.local_addr(),
            "GET /readyz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await;

        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok"), "{response}");
    });
}

#[test]
fn handshake_with_origin_is_refused_with_403() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        let request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n\
                       Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Origin: http://example.com\r\n\r\n";

        let response = raw_http(listener.local_addr(), request).await;

        assert!(
            response.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{response}"
        );
    });
}

#[test]
fn tungstenite_client_with_origin_gets_http_403() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        let mut request = url(&listener).into_client_request().expect("request");
        request.headers_mut().insert(
            "Origin",
            "http://example.com".parse().expect("header value"),
        );
        let tcp = within(TcpStream::connect(listener.local_addr()))
            .await
            .expect("tcp connect");

        let result = within(async_tungstenite::client_async(request, tcp)).await;

        match result {
            Err(async_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403);
            }
            other => panic!("expected HTTP 403, got {other:?}"),
        }
    });
}

#[test]
fn plain_requests_get_404_or_400_and_listener_keeps_serving() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        let addr = listener.local_addr();

        let not_found = raw_http(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let bad = raw_http(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;

        assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let (_reader, mut writer) = within(ws_connect(&url(&listener), Limits::default()))
            .await
            .expect("connect after plain requests");
        let (_r, _w, _peer) = within(listener.accept()).await.expect("accept");
        within(writer.send("x".into())).await.expect("send");
    });
}

#[test]
fn slow_client_does_not_block_accept() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        // Connected but silent: its handshake waits for a request head that never comes.
        let _silent = within(TcpStream::connect(listener.local_addr()))
            .await
            .expect("tcp connect");
        let _partial = {
            let mut tcp = within(TcpStream::connect(listener.local_addr()))
                .await
                .expect("tcp connect");
            within(tcp.write_all(b"GET / HTTP/1.1\r\nHost:"))
                .await
                .expect("write partial head");
            tcp
        };

        let (_reader, mut writer) = within(ws_connect(&url(&listener), Limits::default()))
            .await
            .expect("connect");
        let (mut server_reader, _server_writer, _peer) =
            within(listener.accept()).await.expect("accept");
        within(writer.send("hi".into())).await.expect("send");
        within(writer.flush()).await.expect("flush");

        assert_eq!(next_frame(&mut server_reader).await, b"hi");
    });
}

#[test]
fn oversize_frame_is_reported_and_next_frame_still_arrives() {
    smol::block_on(async {
        let limits = Limits {
            max_frame_bytes: 1024,
            ..Limits::default()
        };
        let listener = bind(limits).await;
        let mut client = raw_client(&listener).await;
        let (mut reader, _writer, _peer) = within(listener.accept()).await.expect("accept");

        within(client.send(Message::binary(vec![b'x'; 5000])))
            .await
            .expect("send oversize");
        within(client.send(Message::text("a".repeat(1024))))
            .await
            .expect("send max-size frame");
        within(client.send(Message::text("next")))
            .await
            .expect("send next");

        assert_eq!(next(&mut reader).await, Inbound::TooLarge { len: 5000 });
        assert_eq!(next_frame(&mut reader).await.len(), 1024);
        assert_eq!(next_frame(&mut reader).await, b"next");
    });
}

#[test]
fn frame_above_hard_limit_ends_only_that_connection() {
    smol::block_on(async {
        let limits = Limits {
            max_frame_bytes: 1024,
            ws_hard_limit_bytes: 4096,
            ..Limits::default()
        };
        let listener = bind(limits.clone()).await;
        let mut client = raw_client(&listener).await;
        let (mut reader, _writer, _peer) = within(listener.accept()).await.expect("accept");

        within(client.send(Message::binary(vec![0; 10_000])))
            .await
            .expect("send huge");

        let item = within(reader.recv()).await;
        assert!(matches!(item, Some(Err(_))), "{item:?}");
        assert!(within(reader.recv()).await.is_none());
        let (_r, mut w) = within(ws_connect(&url(&listener), limits))
            .await
            .expect("new connection still accepted");
        let (mut server_reader, _sw, _peer) = within(listener.accept()).await.expect("accept");
        within(w.send("ok".into())).await.expect("send");
        within(w.flush()).await.expect("flush");
        assert_eq!(next_frame(&mut server_reader).await, b"ok");
    });
}

#[test]
fn ten_thousand_small_frames_arrive_in_order_both_ways() {
    smol::block_on(async {
        const COUNT: usize = 10_000;
        let listener = bind(Limits::default()).await;
        let (mut client_reader, mut client_writer) =
            within(ws_connect(&url(&listener), Limits::default()))
                .await
                .expect("connect");
        let (mut server_reader, mut server_writer, _peer) =
            within(listener.accept()).await.expect("accept");

        let server = smol::spawn(async move {
            for i in 0..COUNT {
                within(server_writer.send(format!("s{i}")))
                    .await
                    .expect("send");
            }
            within(server_writer.flush()).await.expect("flush");
            for i in 0..COUNT {
                assert_eq!(
                    next_frame(&mut server_reader).await,
                    format!("c{i}").as_bytes()
                );
            }
            (server_reader, server_writer)
        });
        for i in 0..COUNT {
            within(client_writer.send(format!("c{i}")))
                .await
                .expect("send");
        }
        within(client_writer.flush()).await.expect("flush");

        for i in 0..COUNT {
            assert_eq!(
                next_frame(&mut client_reader).await,
                format!("s{i}").as_bytes()
            );
        }
        let _halves = within(server).await;
    });
}

#[test]
fn ws_connect_round_trip_and_close_ends_both_readers() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        let (mut reader, mut writer) = within(ws_connect(&url(&listener), Limits::default()))
            .await
            .expect("connect");
        let server = spawn_echo_server(listener);

        within(writer.send(r#"{"jsonrpc":"2.0","method":"ping"}"#.into()))
            .await
            .expect("send");
        within(writer.flush()).await.expect("flush");
        let echoed = next_frame(&mut reader).await;
        within(writer.close()).await.expect("close");

        assert_eq!(echoed, br#"{"jsonrpc":"2.0","method":"ping"}"#);
        assert!(within(reader.recv()).await.is_none(), "client reader ends");
        within(server).await;
    });
}

#[test]
fn server_close_ends_client_reader() {
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        let (mut reader, _writer) = within(ws_connect(&url(&listener), Limits::default()))
            .await
            .expect("connect");
        let (mut server_reader, mut server_writer, _peer) =
            within(listener.accept()).await.expect("accept");

        within(server_writer.send("bye".into()))
            .await
            .expect("send");
        within(server_writer.close()).await.expect("close");

        assert_eq!(next_frame(&mut reader).await, b"bye");
        assert!(within(reader.recv()).await.is_none(), "client reader ends");
        assert!(
            within(server_reader.recv()).await.is_none(),
            "server reader ends"
        );
    });
}

#[test]
fn idle_connection_is_pinged_and_pings_are_answered() {
    smol::block_on(async {
        let limits = Limits {
            ping_interval: Some(Duration::from_millis(50)),
            ..Limits::default()
        };
        let listener = bind(limits).await;
        let mut client = raw_client(&listener).await;
        let (mut server_reader, _server_writer, _peer) =
            within(listener.accept()).await.expect("accept");
        let server = smol::spawn(async move {
            // Reading drives the pings and the pong replies.
            while let Some(item) = within(server_reader.recv()).await {
                item.expect("server read");
            }
        });

        within(client.send(Message::Ping(b"probe".to_vec().into())))
            .await
            .expect("send ping");
        let mut got_pong = false;
        let mut got_ping = false;
        while !(got_pong && got_ping) {
            match within(client.next()).await.expect("open").expect("read") {
                Message::Pong(payload) => {
                    assert_eq!(&payload[..], b"probe");
                    got_pong = true;
                }
                Message::Ping(_) => got_ping = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        within(client.close(None)).await.expect("close");
        within(server).await;
    });
}

#[test]
fn stdio_frames_split_lines_strip_crlf_and_skip_oversize() {
    smol::block_on(async {
        let (mut peer, ours) = smol::net::unix::UnixStream::pair().expect("socketpair");
        let limits = Limits {
            max_frame_bytes: 8,
            ..Limits::default()
        };
        let (mut reader, _writer) = stdio_transport(ours.clone(), ours, limits);

        within(peer.write_all(b"one\r\n\n  \ntwo\n0123456789abcdef\r\nthree"))
            .await
            .expect("write");
        within(peer.write_all(b"\n12345678\r\n"))
            .await
            .expect("write");
        peer.shutdown(std::net::Shutdown::Write).expect("shutdown");

        assert_eq!(next_frame(&mut reader).await, b"one");
        assert_eq!(next_frame(&mut reader).await, b"  ");
        assert_eq!(next_frame(&mut reader).await, b"two");
        assert_eq!(next(&mut reader).await, Inbound::TooLarge { len: 16 });
        assert_eq!(next_frame(&mut reader).await, b"three");
        assert_eq!(next_frame(&mut reader).await, b"12345678");
        assert!(within(reader.recv()).await.is_none());
    });
}

#[test]
fn stdio_writer_terminates_frames_with_newlines_and_refuses_embedded_ones() {
    smol::block_on(async {
        let (mut peer, ours) = smol::net::unix::UnixStream::pair().expect("socketpair");
        let (_reader, mut writer) = stdio_transport(ours.clone(), ours, Limits::default());

        within(writer.send("a".into())).await.expect("send");
        within(writer.send("b".into())).await.expect("send");
        let refused = within(writer.send("x\ny".into())).await;
        within(writer.close()).await.expect("close");
        drop(writer);
        drop(_reader);
        let mut out = Vec::new();
        within(peer.read_to_end(&mut out)).await.expect("read");

        assert_eq!(out, b"a\nb\n");
        assert_eq!(
            refused.expect_err("newline refused").kind(),
            std::io::ErrorKind::InvalidInput
        );
    });
}

#[test]
fn stdio_round_trip_through_a_child_process() {
    smol::block_on(async {
        let mut child = async_process::Command::new("cat")
            .stdin(async_process::Stdio::piped())
            .stdout(async_process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn cat");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (mut reader, mut writer) = stdio_transport(stdout, stdin, Limits::default());

        let big = "z".repeat(300_000);
        // Write from another task: `cat` blocks on its stdout until this task reads.
        let frames = ["first".to_owned(), big.clone(), "last".to_owned()];
        let feeder = smol::spawn(async move {
            for text in frames {
                within(writer.send(text)).await.expect("send");
            }
            within(writer.close()).await.expect("close stdin");
        });

        assert_eq!(next_frame(&mut reader).await, b"first");
        assert_eq!(next_frame(&mut reader).await, big.as_bytes());
        assert_eq!(next_frame(&mut reader).await, b"last");
        assert!(within(reader.recv()).await.is_none());
        within(feeder).await;
        within(child.status()).await.expect("cat exits");
    });
}

#[test]
fn halves_move_into_tasks() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    smol::block_on(async {
        let listener = bind(Limits::default()).await;
        let (reader, writer): (FrameReader, FrameWriter) =
            within(ws_connect(&url(&listener), Limits::default()))
                .await
                .expect("connect");
        assert_send(&reader);
        assert_send(&writer);
        assert_send(&listener);
    });
}
