//! The HTTP runner on tokio: a smoke test that hyper runs over tokio's `tcp_connect` and
//! timers (the full suite is in execd-smol's tests/http.rs).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use execd_core::protocol::{HttpRequest, HttpRequestParams};
use execd_runtime::http::{HttpRunner, ProxyConfig};
use execd_runtime::Runtime;
use execd_tokio::TokioRuntime;

fn request(url: &str, timeout_ms: Option<u64>) -> HttpRequest {
    let params: HttpRequestParams = serde_json::from_value(serde_json::json!({
        "requestId": "r", "method": "GET", "url": url, "timeoutMs": timeout_ms,
    }))
    .expect("params");
    params.validate(&|_: &str| None::<OsString>).expect("valid")
}

/// Answers every connection's first request with `body`, after `delay`.
fn server(body: &'static [u8], delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                thread::sleep(delay);
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = conn
                    .write_all(head.as_bytes())
                    .and_then(|()| conn.write_all(body));
            });
        }
    });
    format!("http://{addr}/")
}

#[test]
fn get_and_timeout_work_on_a_current_thread_runtime() {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime: Arc<dyn Runtime> = Arc::new(TokioRuntime::new(tokio.handle().clone()));
    let runner = HttpRunner::new(runtime, None)
        .expect("runner")
        .with_proxies(ProxyConfig::none());
    let fast = server(b"hello tokio", Duration::ZERO);
    let slow = server(b"late", Duration::from_secs(3));
    tokio.block_on(async {
        let limit = Duration::from_secs(30);
        let ok = tokio::time::timeout(limit, runner.request_buffered(request(&fast, None)))
            .await
            .expect("in time")
            .expect("response");
        assert_eq!(
            (ok.status, ok.body_base64.0.as_slice()),
            (200, &b"hello tokio"[..])
        );
        let err = tokio::time::timeout(limit, runner.request(request(&slow, Some(200))))
            .await
            .expect("in time")
            .expect_err("timed out");
        assert!(err.is_timeout(), "{err}");
    });
}
