//! [`TokioRuntime`]: [`Runtime`] on `tokio::{net, process, io::unix::AsyncFd, io::stdin}`,
//! adapted to futures-io with `tokio_util::compat`.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use execd_runtime::{
    AsyncFd, AsyncStream, BoxFuture, BoxRead, BoxWrite, Child, ChildCommand, DefaultRuntime,
    Interest, IoOp, IoPoll, Runtime, Sleep, Task, TaskHandle,
};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::compat::{TokioAsyncReadCompatExt as _, TokioAsyncWriteCompatExt as _};
use tokio_util::task::AbortOnDropHandle;

/// One tokio runtime, named by its [`Handle`] (with I/O and time drivers: `enable_all`). Objects
/// are created in the handle's context, so any thread may call the methods; the futures they
/// return (e.g. [`Runtime::tcp_connect`]'s) must be polled inside a tokio runtime.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    handle: Handle,
}

impl TokioRuntime {
    /// The runtime `handle` belongs to.
    pub fn new(handle: Handle) -> TokioRuntime {
        TokioRuntime { handle }
    }

    /// The runtime the caller runs in.
    ///
    /// # Errors
    /// Called outside a tokio runtime.
    pub fn current() -> io::Result<TokioRuntime> {
        Handle::try_current()
            .map(TokioRuntime::new)
            .map_err(io::Error::other)
    }
}

impl DefaultRuntime for TokioRuntime {
    /// [`TokioRuntime::current`]: the runtime the caller runs in.
    fn default_runtime() -> io::Result<TokioRuntime> {
        TokioRuntime::current()
    }

    /// Runs `future` on a current-thread runtime with all drivers, then shuts it down, waiting
    /// at most 100 ms for what is left. One thread runs the loop (the serial part anyway), the
    /// pumps and the connections, and forks the children (`PR_SET_PDEATHSIG` ties them to it).
    fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let output = runtime.block_on(future);
        runtime.shutdown_timeout(Duration::from_millis(100));
        Ok(output)
    }
}

impl Runtime for TokioRuntime {
    /// tokio's clock (`tokio::time::Instant::now`), which a paused test clock controls.
    fn now(&self) -> Instant {
        let _context = self.handle.enter();
        tokio::time::Instant::now().into_std()
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) -> Task {
        Task::new(TokioTask(AbortOnDropHandle::new(self.handle.spawn(future))))
    }

    fn spawn_blocking(&self, f: Box<dyn FnOnce() + Send + 'static>) {
        // Dropping the JoinHandle detaches the work; `f` reports its own result.
        drop(self.handle.spawn_blocking(f));
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let _context = self.handle.enter();
        let inner = tokio::time::sleep_until(deadline.into());
        Box::pin(TokioSleep { inner })
    }

    fn tcp_stream(&self, stream: std::net::TcpStream) -> io::Result<Box<dyn AsyncStream>> {
        let _context = self.handle.enter();
        Ok(with_nodelay(TcpStream::from_std(stream)?))
    }

    fn tcp_connect(
        &self,
        host: String,
        port: u16,
    ) -> BoxFuture<'static, io::Result<Box<dyn AsyncStream>>> {
        Box::pin(async move {
            let stream = TcpStream::connect((host.as_str(), port)).await?;
            Ok(with_nodelay(stream))
        })
    }

    fn spawn_child(&self, spec: ChildCommand) -> io::Result<Child> {
        let _context = self.handle.enter();
        let mut command = tokio::process::Command::from(spec.command);
        command
            .stdin(spec.stdin)
            .stdout(spec.stdout)
            .stderr(spec.stderr);
        command.kill_on_drop(spec.kill_on_drop);
        let mut child = command.spawn()?;
        drop(command);
        // `id` is `None` only once the child has been reaped, which needs a poll of `wait`.
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child reaped before its pid was read"))?;
        Ok(Child {
            pid,
            stdin: child
                .stdin
                .take()
                .map(|s| Box::new(s.compat_write()) as BoxWrite),
            stdout: child.stdout.take().map(|s| Box::new(s.compat()) as BoxRead),
            stderr: child.stderr.take().map(|s| Box::new(s.compat()) as BoxRead),
            // The future owns the child: dropping it applies `kill_on_drop`, and tokio reaps an
            // unwaited child in the background either way.
            status: Box::pin(async move { child.wait().await }),
        })
    }

    fn async_fd(&self, fd: OwnedFd) -> io::Result<Arc<dyn AsyncFd>> {
        let _context = self.handle.enter();
        // SAFETY: the `AsyncFd` owns the `OwnedFd`, which stays open and names the same
        // descriptor until the `AsyncFd` drops it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd)? };
        Ok(Arc::new(TokioFd(fd)))
    }

    fn stdio(&self) -> io::Result<(BoxRead, BoxWrite)> {
        let _context = self.handle.enter();
        Ok((
            Box::new(tokio::io::stdin().compat()),
            Box::new(tokio::io::stdout().compat_write()),
        ))
    }
}

fn with_nodelay(stream: TcpStream) -> Box<dyn AsyncStream> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set TCP_NODELAY failed");
    }
    Box::new(stream.compat())
}

/// Aborts the task on drop unless detached (a dropped `JoinHandle` alone detaches).
struct TokioTask(AbortOnDropHandle<()>);

impl TaskHandle for TokioTask {
    fn detach(self: Box<Self>) {
        self.0.detach();
    }
}

pin_project_lite::pin_project! {
    struct TokioSleep {
        #[pin]
        inner: tokio::time::Sleep,
    }
}

impl Future for TokioSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

impl Sleep for TokioSleep {
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.project().inner.reset(deadline.into());
    }
}

#[derive(Debug)]
struct TokioFd(tokio::io::unix::AsyncFd<OwnedFd>);

impl AsyncFd for TokioFd {
    fn poll_io(&self, cx: &mut Context<'_>, interest: Interest, op: &mut IoOp<'_>) -> IoPoll {
        loop {
            let mut guard = ready!(match interest {
                Interest::Read => self.0.poll_read_ready(cx),
                Interest::Write => self.0.poll_write_ready(cx),
            })?;
            // `try_io` clears the cached readiness when `op` would block.
            if let Ok(result) = guard.try_io(|fd| op(fd.get_ref().as_fd())) {
                return Poll::Ready(result);
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}
