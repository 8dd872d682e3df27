//! `execd fetch` end to end against a local HTTP server, through `execd serve` (`--url`) and
//! through a local stdio server. Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;

use common::{KillOnDrop, EXECD};

const TIMEOUT: Duration = Duration::from_secs(30);

/// A one-thread-per-connection HTTP/1.1 server: `/echo` answers `METHOD x-a-header\nbody`,
/// `/big` 3 MiB of a pattern, anything else 404.
fn http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                reader.read_line(&mut line).expect("request line");
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let (mut len, mut x_a) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let (name, value) = h.trim_end().split_once(':').unwrap_or_default();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => len = value.trim().parse().unwrap_or(0),
                        "x-a" => x_a = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).expect("body");
                let (status, reply) = match path.as_str() {
                    "/echo" => {
                        let mut r = format!("{method} {x_a}\n").into_bytes();
                        r.extend_from_slice(&body);
                        ("200 OK", r)
                    }
                    "/big" => ("200 OK", big()),
                    _ => ("404 Not Found", b"nope".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&reply);
            });
        }
    });
    format!("http://{addr}")
}

fn big() -> Vec<u8> {
    (0..3 << 20).map(|i: u32| (i % 251) as u8).collect()
}

fn output_within(cmd: Command) -> Output {
    common::output_within(cmd, TIMEOUT)
}

fn serve() -> (KillOnDrop, String) {
    let mut cmd = Command::new(EXECD);
    cmd.args(["serve", "--listen", "ws://127.0.0.1:0"])
        .stderr(Stdio::inherit());
    common::serve_with(cmd, TIMEOUT)
}

fn fetch(args: &[&str]) -> Output {
    let mut cmd = Command::new(EXECD);
    cmd.arg("fetch").args(args);
    output_within(cmd)
}

#[test]
fn fetch_streams_the_body_to_stdout_and_the_status_to_stderr() {
    let http = http_server();
    let (_server, url) = serve();
    let out = fetch(&["--url", &url, &format!("{http}/big")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "HTTP 200");
    assert!(out.stdout == big(), "the body is exact");
}

#[test]
fn fetch_sends_method_headers_and_data_through_a_local_server() {
    let http = http_server();
    let out = fetch(&[
        "-X",
        "PUT",
        "-H",
        "X-A: one",
        "--data",
        "payload",
        &format!("{http}/echo"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"PUT one\npayload");
}

#[test]
fn fetch_fail_exits_22_on_an_http_error_and_prints_no_body() {
    let http = http_server();
    let out = fetch(&["--fail", &format!("{http}/missing")]);
    assert_eq!(out.status.code(), Some(22), "{out:?}");
    assert!(out.stdout.is_empty());
    let out = fetch(&[&format!("{http}/missing")]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"nope");
}

#[test]
fn fetch_of_a_bad_url_fails_with_the_servers_message() {
    let out = fetch(&["ftp://example.com/"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("http/request only supports http and https URLs, got ftp"));
}
