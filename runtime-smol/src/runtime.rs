//! [`SmolRuntime`]: the [`Runtime`] implementation on smol (async-io, async-net, async-process,
//! blocking).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use execd_runtime::{
    AsyncFd, AsyncStream, BoxFuture, BoxRead, BoxWrite, Child, ChildCommand, DefaultRuntime,
    Interest, IoOp, IoPoll, Runtime, Sleep, Task, TaskHandle,
};
use smol::net::TcpStream;
use smol::{Async, Timer, Unblock};

/// The smol runtime: tasks on smol's global executor, I/O and timers on async-io's reactor,
/// children through async-process, blocking stdio through the `blocking` thread pool.
///
/// Stateless; usable from any thread, inside or outside `smol::block_on`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmolRuntime;

impl DefaultRuntime for SmolRuntime {
    /// Always available: smol's global executor needs no setup.
    fn default_runtime() -> io::Result<SmolRuntime> {
        Ok(SmolRuntime)
    }

    /// `smol::block_on(future)`; never fails.
    fn block_on<F: Future>(future: F) -> io::Result<F::Output> {
        Ok(smol::block_on(future))
    }
}

impl Runtime for SmolRuntime {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn spawn_blocking(&self, f: Box<dyn FnOnce() + Send + 'static>) {
        smol::unblock(f).detach();
    }

    fn spawn(&self, future: BoxFuture<'static, ()>) -> Task {
        Task::new(SmolTask(smol::spawn(future)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(SmolSleep {
            timer: Timer::at(deadline),
            fired: false,
        })
    }

    fn tcp_stream(&self, stream: std::net::TcpStream) -> io::Result<Box<dyn AsyncStream>> {
        Ok(with_nodelay(TcpStream::from(Async::new(stream)?)))
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

    fn spawn_child(&self, command: ChildCommand) -> io::Result<Child> {
        let ChildCommand {
            command,
            stdin,
            stdout,
            stderr,
            kill_on_drop,
        } = command;
        let mut command = smol::process::Command::from(command);
        command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(kill_on_drop)
            .reap_on_drop(true);
        let mut child = command.spawn()?;
        drop(command);
        Ok(Child {
            pid: child.id(),
            stdin: child.stdin.take().map(|s| Box::new(s) as BoxWrite),
            stdout: child.stdout.take().map(|s| Box::new(s) as BoxRead),
            stderr: child.stderr.take().map(|s| Box::new(s) as BoxRead),
            // The future owns the child: dropping it applies `kill_on_drop`, and async-process
            // reaps the child either way.
            status: Box::pin(async move { child.status().await }),
        })
    }

    fn async_fd(&self, fd: OwnedFd) -> io::Result<Arc<dyn AsyncFd>> {
        Ok(Arc::new(SmolFd(Async::new(fd)?)))
    }

    fn stdio(&self) -> io::Result<(BoxRead, BoxWrite)> {
        Ok((
            Box::new(Unblock::new(io::stdin())),
            Box::new(Unblock::new(io::stdout())),
        ))
    }
}

fn with_nodelay(stream: TcpStream) -> Box<dyn AsyncStream> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "set TCP_NODELAY failed");
    }
    Box::new(stream)
}

struct SmolTask(smol::Task<()>);

impl TaskHandle for SmolTask {
    fn detach(self: Box<Self>) {
        self.0.detach();
    }
}

/// async-io's timer stays pending after it fired; [`Sleep`] stays complete until reset.
struct SmolSleep {
    timer: Timer,
    fired: bool,
}

impl Future for SmolSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.fired {
            ready!(Pin::new(&mut self.timer).poll(cx));
            self.fired = true;
        }
        Poll::Ready(())
    }
}

impl Sleep for SmolSleep {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.timer.set_at(deadline);
        self.fired = false;
    }
}

#[derive(Debug)]
struct SmolFd(Async<OwnedFd>);

impl AsyncFd for SmolFd {
    fn poll_io(&self, cx: &mut Context<'_>, interest: Interest, op: &mut IoOp<'_>) -> IoPoll {
        // Try first: the descriptor is often ready already (a busy pipe), and async-io reports
        // readiness only once per event.
        loop {
            match op(self.fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            ready!(match interest {
                Interest::Read => self.0.poll_readable(cx),
                Interest::Write => self.0.poll_writable(cx),
            })?;
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}
