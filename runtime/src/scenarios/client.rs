//! The async client against a real server over real loopback WebSockets, with real children,
//! and through a proxy that cuts the connection ([`CuttingProxy`]). Every await is bounded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use execd_core::protocol::{StartParams, Stream, WriteStatus};
use execd_core::PathUri;

use super::proxy::CuttingProxy;
use super::{sleep, timeout, within, TempDir};
use crate::client::LostReason;
use crate::runtime::{DefaultRuntime, Runtime, Task};
use crate::{
    Client, ClientOptions, Error, Event, Executor, LocalExecutor, Process, RemoteExecutor,
    ServerOptions, WsServer,
};

/// Runs `fut` on `rt` and hands back its output through a channel.
fn spawn_value<T: Send + 'static>(
    rt: &Arc<dyn Runtime>,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> (Task, async_channel::Receiver<T>) {
    let (tx, rx) = async_channel::bounded(1);
    let task = rt.spawn(Box::pin(async move {
        let _ = tx.send(fut.await).await;
    }));
    (task, rx)
}

struct TestServer {
    url: String,
    addr: SocketAddr,
    task: Option<Task>,
}

impl TestServer {
    /// Stops the server: its loop, its connections and its children go away.
    fn kill(&mut self) {
        self.task = None;
    }
}

async fn start_server(rt: &Arc<dyn Runtime>) -> TestServer {
    let server = within(
        rt,
        WsServer::bind_with_runtime(
            rt.clone(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerOptions::default(),
        ),
    )
    .await
    .expect("bind");
    let (url, addr) = (server.url(), server.local_addr());
    let task = rt.spawn(Box::pin(async move {
        let _ = server.run().await;
    }));
    TestServer {
        url,
        addr,
        task: Some(task),
    }
}

pub(super) fn params(id: &str, argv: &[&str], pipe_stdin: bool) -> StartParams {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), "/usr/bin:/bin".to_owned());
    StartParams {
        process_id: id.to_owned(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        cwd: PathUri::parse("file:///tmp").expect("valid"),
        env,
        tty: false,
        pipe_stdin,
        arg0: None,
        env_policy: None,
        sandbox: None,
        enforce_managed_network: false,
    }
}

/// Everything a process delivered, checked for seq order on the way.
#[derive(Debug, Default)]
pub(super) struct Collected {
    pub(super) stdout: Vec<u8>,
    stderr: Vec<u8>,
    pub(super) exit_code: Option<i32>,
    closed: bool,
    pub(super) gaps: u64,
    pub(super) lost: Option<Event>,
}

pub(super) async fn collect(rt: &Arc<dyn Runtime>, process: &Process) -> Collected {
    let mut out = Collected::default();
    let mut last = 0u64;
    while let Some(event) = timeout(rt, "the next process event", process.next_event()).await {
        let seq = match &event {
            Event::Output { seq, .. } | Event::Exited { seq, .. } | Event::Closed { seq } => {
                Some(seq.0)
            }
            _ => None,
        };
        if let Some(seq) = seq {
            assert_eq!(seq, last + 1, "seq is contiguous: {event:?}");
            last = seq;
        }
        match event {
            Event::Output { stream, chunk, .. } => match stream {
                Stream::Stderr => out.stderr.extend(chunk),
                _ => out.stdout.extend(chunk),
            },
            Event::Exited { exit_code, .. } => {
                assert!(out.exit_code.is_none(), "exited once");
                out.exit_code = Some(exit_code);
            }
            Event::Closed { .. } => out.closed = true,
            // Reports of a recovery in progress; the stream goes on.
            Event::Reconnecting | Event::Resumed => {}
            Event::Gap {
                lost_chunks,
                first_retained_seq,
            } => {
                out.gaps += lost_chunks;
                last = first_retained_seq.0 - 1;
            }
            other => out.lost = Some(other),
        }
    }
    out
}

pub(super) fn expected_seq(n: u32) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Scenario.
pub async fn a_process_streams_its_events_in_order_with_its_exit_code(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt).await;
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &server.url, ClientOptions::default()),
    )
    .await
    .expect("connect");
    assert!(client.session_id().is_some());
    let p = within(
        rt,
        client.start(params(
            "p",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
        )),
    )
    .await
    .expect("start");
    let got = collect(rt, &p).await;
    assert_eq!(got.stdout, b"out\n");
    assert_eq!(got.stderr, b"err\n");
    assert_eq!(got.exit_code, Some(3));
    assert!(got.closed && got.lost.is_none());
}

/// Scenario.
pub async fn writes_reach_stdin_in_order_and_close_stdin_ends_it(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt).await;
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &server.url, ClientOptions::default()),
    )
    .await
    .expect("connect");
    let p = within(rt, client.start(params("cat", &["cat"], true)))
        .await
        .expect("start");
    for i in 0..100 {
        let status = within(rt, p.write(format!("line {i}\n")))
            .await
            .expect("write");
        assert_eq!(status, WriteStatus::Accepted);
    }
    within(rt, p.close_stdin()).await.expect("closeStdin");
    let got = collect(rt, &p).await;
    let want: String = (0..100).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&got.stdout), want);
    assert_eq!(got.exit_code, Some(0));
}

/// Scenario.
pub async fn a_server_error_is_typed_and_the_client_keeps_working(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt).await;
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &server.url, ClientOptions::default()),
    )
    .await
    .expect("connect");
    let empty = within(rt, client.start(params("bad", &[], false))).await;
    assert!(matches!(empty, Err(Error::Rpc(_))), "{empty:?}");
    let reserved = within(rt, client.call("initialize", serde_json::json!({}))).await;
    assert!(matches!(reserved, Err(Error::ReservedMethod(_))));
    let p = within(rt, client.start(params("ok", &["true"], false)))
        .await
        .expect("start after an error");
    assert_eq!(within(rt, p.wait()).await, Ok(0));
}

/// Scenario.
pub async fn output_survives_connection_cuts_mid_stream_exactly_once(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt).await;
    let proxy = CuttingProxy::start(rt.clone(), server.addr)
        .await
        .expect("proxy");
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &proxy.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    let p = within(
        rt,
        client.start(params(
            "seq",
            // Slow enough that the cuts land while it is still writing.
            &[
                "sh",
                "-c",
                "for i in $(seq 1 40); do seq $((i*1000-999)) $((i*1000)); sleep 0.01; done",
            ],
            false,
        )),
    )
    .await
    .expect("start");
    // Four times: wait for another 20 KB through the current connection, then cut it.
    let cutter = async {
        for _ in 0..4 {
            let base = proxy.downstream_bytes();
            while proxy.downstream_bytes() < base + 20_000 {
                sleep(rt, Duration::from_millis(1)).await;
            }
            proxy.cut();
        }
    };
    let (got, ()) =
        futures_lite::future::zip(collect(rt, &p), timeout(rt, "the cuts", cutter)).await;
    assert_eq!(got.gaps, 0);
    assert!(got.lost.is_none(), "{:?}", got.lost);
    assert_eq!(
        got.stdout,
        expected_seq(40_000),
        "every byte once, in order"
    );
    assert_eq!(got.exit_code, Some(0));
    assert!(proxy.cuts() >= 4, "cuts: {}", proxy.cuts());
    // A cut can land on a reconnect still in its handshake; that one is retried, not resumed.
    assert!(
        client.reconnects() >= 1,
        "reconnects: {}",
        client.reconnects()
    );
}

/// Scenario.
pub async fn stdin_written_across_connection_cuts_reaches_the_child_once(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt).await;
    let proxy = Arc::new(
        CuttingProxy::start(rt.clone(), server.addr)
            .await
            .expect("proxy"),
    );
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &proxy.url(), ClientOptions::default()),
    )
    .await
    .expect("connect");
    let p = within(rt, client.start(params("cat", &["cat"], true)))
        .await
        .expect("start");
    // Every 50 ms: on a loaded machine (the whole test suite on 2 cores) a debug build needs
    // several ms for a reconnect's handshake, `initialize` and recovery reads, and a client
    // whose connections never outlive that cannot make progress at all.
    proxy.cut_every(Duration::from_millis(50));
    let (_reader, reader) = {
        let (p, task_rt) = (p.clone(), rt.clone());
        spawn_value(rt, async move { collect(&task_rt, &p).await })
    };
    let lines = 3_000;
    for i in 0..lines {
        let status = timeout(rt, "a write across cuts", p.write(format!("{i}\n")))
            .await
            .expect("writes are retried, never failed, while the session lives");
        assert_eq!(status, WriteStatus::Accepted);
    }
    timeout(rt, "closeStdin", async {
        // closeStdin is not retried by the client (it is not idempotent in general); a cut
        // may fail it, and then it is safe to send again.
        while let Err(e) = p.close_stdin().await {
            assert_eq!(e, Error::Closed);
        }
    })
    .await;
    let got = timeout(rt, "cat's output", reader.recv())
        .await
        .expect("the reader task ran");
    proxy.stop_cutting();
    let want: String = (0..lines).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        want,
        "each line once, in order"
    );
    assert_eq!(got.exit_code, Some(0));
    assert!(proxy.cuts() >= 2, "cuts: {}", proxy.cuts());
}

/// Scenario.
pub async fn calls_fail_closed_at_once_when_the_server_dies_without_recovery(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let mut server = start_server(rt).await;
    let mut options = ClientOptions::default();
    options.core.recovery = false;
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &server.url, options),
    )
    .await
    .expect("connect");
    let p = within(rt, client.start(params("sleep", &["sleep", "30"], false)))
        .await
        .expect("start");
    let (_pending, pending) = {
        let p = p.clone();
        spawn_value(rt, async move { p.read(Some(0), None, Some(20_000)).await })
    };
    // Let the long poll reach the server before it dies.
    sleep(rt, Duration::from_millis(50)).await;
    server.kill();
    assert_eq!(
        within(rt, pending.recv())
            .await
            .expect("the read task ran")
            .map(drop),
        Err(Error::Closed)
    );
    assert_eq!(
        within(rt, p.next_event()).await,
        Some(Event::SessionLost(LostReason::Disconnected))
    );
    assert_eq!(within(rt, p.next_event()).await, None);
    assert!(client.is_closed());
    let later = within(rt, client.start(params("x", &["true"], false))).await;
    assert!(matches!(later, Err(Error::Closed)), "{later:?}");
}

/// Scenario.
pub async fn recovery_gives_up_with_closed_errors_when_the_server_stays_dead(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let mut server = start_server(rt).await;
    let mut options = ClientOptions::default();
    options.core.recovery_window = Duration::from_millis(400);
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &server.url, options),
    )
    .await
    .expect("connect");
    let p = within(rt, client.start(params("sleep", &["sleep", "30"], false)))
        .await
        .expect("start");
    server.kill();
    assert_eq!(within(rt, p.next_event()).await, Some(Event::Reconnecting));
    assert_eq!(
        within(rt, p.next_event()).await,
        Some(Event::SessionLost(LostReason::WindowExhausted))
    );
    assert!(client.is_closed());
    let later = within(rt, p.write("x")).await;
    assert_eq!(later, Err(Error::Closed));
}

/// Code written once against `Executor`.
async fn run_on(
    rt: &Arc<dyn Runtime>,
    executor: &dyn Executor,
    id: &str,
) -> (Vec<u8>, Option<i32>) {
    let p = within(
        rt,
        executor.start(params(id, &["sh", "-c", "printf hi; exit 7"], false)),
    )
    .await
    .expect("start");
    let got = collect(rt, &p).await;
    (got.stdout, got.exit_code)
}

/// A [`RemoteExecutor`] connected to the server at `url` and a [`LocalExecutor`], both on
/// `rt`, for scenarios that check the two give the same results.
pub(super) async fn remote_and_local(
    rt: &Arc<dyn Runtime>,
    url: &str,
) -> (RemoteExecutor, LocalExecutor) {
    let remote = within(rt, async {
        Client::connect_with_runtime(rt.clone(), url, ClientOptions::default())
            .await
            .map(RemoteExecutor::new)
    })
    .await
    .expect("connect");
    let local = within(
        rt,
        LocalExecutor::with_runtime(rt.clone(), ServerOptions::default()),
    )
    .await
    .expect("local");
    (remote, local)
}

/// Scenario.
pub async fn local_and_remote_executors_give_the_same_results(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let server = start_server(rt).await;
    let (remote, local) = remote_and_local(rt, &server.url).await;
    let executors: [(&str, &dyn Executor); 2] = [("remote", &remote), ("local", &local)];
    for (name, executor) in executors {
        assert_eq!(
            run_on(rt, executor, name).await,
            (b"hi".to_vec(), Some(7)),
            "{name}"
        );
    }
}

/// Scenario.
pub async fn dropping_a_local_executor_kills_its_processes(rt: Arc<dyn Runtime>) {
    let rt = &rt;
    let local = within(
        rt,
        LocalExecutor::with_runtime(rt.clone(), ServerOptions::default()),
    )
    .await
    .expect("local");
    let p = within(
        rt,
        local.start(params(
            "pid",
            &["sh", "-c", "echo $$; exec sleep 60"],
            false,
        )),
    )
    .await
    .expect("start");
    let pid = match within(rt, p.next_event()).await {
        Some(Event::Output { chunk, .. }) => String::from_utf8_lossy(&chunk).trim().to_owned(),
        other => panic!("expected the pid, got {other:?}"),
    };
    let proc_dir = format!("/proc/{pid}");
    assert!(std::path::Path::new(&proc_dir).exists());
    drop(p);
    drop(local);
    timeout(rt, "the child to die", async {
        while std::fs::read_to_string(format!("{proc_dir}/stat")).is_ok_and(|s| !s.contains(") Z "))
        {
            sleep(rt, Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The constructors that find runtime `R` by type (`WsServer::<R>::bind`,
/// `Client::<R>::connect`, `LocalExecutor::<R>::new`, what `execd_smol::WsServer::bind` and
/// friends are), run by `R::block_on` as the `execd` binary runs them: a server, a remote and a
/// local executor give the same results. Not an `async fn(Arc<dyn Runtime>)`: it builds its
/// runtime itself, so the runtime crates call it from a plain `#[test]`.
///
/// # Panics
/// When the runtime cannot be set up or the scenario fails.
pub fn default_runtime_constructors_serve_and_connect<R: DefaultRuntime>() {
    R::block_on(async {
        let rt: Arc<dyn Runtime> = Arc::new(R::default_runtime().expect("a default runtime"));
        let rt = &rt;
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = within(rt, WsServer::<R>::bind(addr, ServerOptions::default()))
            .await
            .expect("bind");
        let url = server.url();
        let _server = rt.spawn(Box::pin(async move {
            let _ = server.run().await;
        }));
        let client = within(rt, Client::<R>::connect(&url))
            .await
            .expect("connect");
        let remote = RemoteExecutor::from(client);
        let local = within(rt, LocalExecutor::<R>::new(ServerOptions::default()))
            .await
            .expect("local");
        let executors: [(&str, &dyn Executor); 2] = [("remote", &remote), ("local", &local)];
        for (name, executor) in executors {
            assert_eq!(
                run_on(rt, executor, name).await,
                (b"hi".to_vec(), Some(7)),
                "{name}"
            );
        }
    })
    .expect("the runtime starts");
}

/// Scenario.
pub async fn a_unix_socket_server_is_private_serves_sessions_and_removes_its_file(
    rt: Arc<dyn Runtime>,
) {
    use std::os::unix::fs::PermissionsExt as _;
    let rt = &rt;
    let dir = TempDir::new();
    let path = dir.path("serve.sock");
    let server = within(
        rt,
        WsServer::bind_unix_with_runtime(rt.clone(), &path, ServerOptions::default()),
    )
    .await
    .expect("bind");
    let url = server.url();
    assert_eq!(url, format!("unix:{}", path.display()));
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only this user may connect");
    let task = rt.spawn(Box::pin(async move {
        let _ = server.run().await;
    }));
    let again = within(
        rt,
        WsServer::bind_unix_with_runtime(rt.clone(), &path, ServerOptions::default()),
    )
    .await;
    assert_eq!(
        again.map(drop).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::AddrInUse)
    );
    let client = within(
        rt,
        Client::connect_with_runtime(rt.clone(), &url, ClientOptions::default()),
    )
    .await
    .expect("connect");
    let p = within(
        rt,
        client.start(params("p", &["sh", "-c", "seq 1 20000; exit 3"], false)),
    )
    .await
    .expect("start");
    let got = collect(rt, &p).await;
    assert_eq!(got.stdout, expected_seq(20_000));
    assert_eq!(got.exit_code, Some(3));
    drop(client);
    drop(task);
    timeout(rt, "the socket file to go with the server", async {
        while path.exists() {
            sleep(rt, Duration::from_millis(5)).await;
        }
    })
    .await;
}
