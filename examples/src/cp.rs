//! `execd cp [--url URL] [-r] SOURCE DEST`: copies a file or a directory tree between this host
//! and the server's, like `scp`. The remote side is written `:PATH` (relative to the server's
//! working directory, from `environment/info`); exactly one side is remote.
//!
//! Files move in 1 MiB blocks through `fs/open` + `fs/readBlock` / `fs/writeBlock`, several
//! blocks in flight, so neither side holds a whole file. A copy to an existing directory lands
//! inside it under the source's name, as with `cp`. Executable files stay executable: the
//! protocol has no mode bits, so the server's are read with `find -perm /111` and set with
//! `chmod +x` (processes on the server); this works against any exec-server, the reference
//! included. Symlinks and special files inside a tree are skipped with a warning. Progress is
//! drawn on stderr when it is a terminal.

use std::fs::File;
use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use execd_core::protocol::fs::OpenMode;
use execd_core::protocol::{EnvironmentInfo, StartParams};
use execd_core::PathUri;
use execd_runtime::client::Event;
use execd_runtime::{Client, ClientOptions, DefaultRuntime, Error};
use execd_smol::SmolRuntime;
use execd_tokio::TokioRuntime;
use futures::{stream, StreamExt as _, TryStreamExt as _};

use crate::RuntimeKind;

/// The examples shown under `execd help cp`.
pub(crate) const HELP: &str = "\
Examples:
  execd cp ./build.tar.gz :/tmp/                  upload into a server directory
  execd cp --url ws://127.0.0.1:7000 :/var/log/app.log .
  execd cp -r ./src :/srv/app/src                 a tree, executable bits kept
  execd cp -r :logs ./logs-copy                   :PATH relative to the server's cwd

Exactly one side is remote (:PATH); a local name starting with ':' is written ./:name.
Progress is drawn on stderr when it is a terminal. Exit code 0, or 1 when the copy failed.";

/// Bytes per `fs/readBlock` / `fs/writeBlock`: the protocol's largest block (1 MiB).
const BLOCK: usize = 1 << 20;
/// Blocks in flight per file.
const WINDOW: usize = 4;
/// Exit code of a failed copy.
const EXIT_COPY_FAILED: u8 = 1;
/// Paths per `chmod` process on the server.
const CHMOD_BATCH: usize = 256;

#[derive(Debug, clap::Args)]
pub(crate) struct CpArgs {
    /// What to copy: a local path, or `:PATH` on the server.
    source: String,
    /// Where to: `:PATH` on the server, or a local path (the other side of SOURCE). An existing
    /// directory receives SOURCE under its own name.
    dest: String,
    /// Copy directories, with everything below them.
    #[arg(short = 'r', long)]
    recursive: bool,
    /// Server URL (`ws://HOST:PORT`). Without it, a local `execd serve --listen stdio` child
    /// is started and used.
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    security: crate::serve_auth::RunSecurityArgs,
    /// The async runtime to run the client on.
    #[arg(long, value_enum, default_value_t = RuntimeKind::Smol)]
    runtime: RuntimeKind,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    Local(PathBuf),
    /// As written after the `:` (resolved against the server's cwd).
    Remote(String),
}

impl Side {
    fn parse(arg: &str) -> Side {
        match arg.strip_prefix(':') {
            Some(rest) => Side::Remote(rest.to_owned()),
            None => Side::Local(PathBuf::from(arg)),
        }
    }
}

pub(crate) fn cp(args: CpArgs) -> anyhow::Result<ExitCode> {
    let result = match args.runtime {
        RuntimeKind::Smol => cp_on::<SmolRuntime>(&args),
        RuntimeKind::Tokio => cp_on::<TokioRuntime>(&args),
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            crate::logging::eprint_line(&format!("execd cp: {e:#}"));
            Ok(ExitCode::from(EXIT_COPY_FAILED))
        }
    }
}

fn cp_on<R: DefaultRuntime>(args: &CpArgs) -> anyhow::Result<()> {
    let (source, dest) = match (Side::parse(&args.source), Side::parse(&args.dest)) {
        (Side::Local(s), Side::Remote(d)) => (Side::Local(s), Side::Remote(d)),
        (Side::Remote(s), Side::Local(d)) => (Side::Remote(s), Side::Local(d)),
        _ => bail!("exactly one of SOURCE and DEST must be on the server (written :PATH)"),
    };
    R::block_on(async {
        let client = connect::<R>(args).await?;
        let cwd = server_cwd(&client).await?;
        let mut copy = Copy {
            client,
            recursive: args.recursive,
            same_host: same_host(args.url.as_deref()),
            progress: Progress::new(io::stderr().is_terminal()),
        };
        let result = match (source, dest) {
            (Side::Local(src), Side::Remote(dst)) => copy.upload(&src, &cwd.join(dst)).await,
            (Side::Remote(src), Side::Local(dst)) => copy.download(&cwd.join(src), &dst).await,
            _ => Ok(()),
        };
        copy.client.close().await;
        result
    })
    .context("cannot start the async runtime")?
}

async fn connect<R: DefaultRuntime>(args: &CpArgs) -> anyhow::Result<Client<R>> {
    match &args.url {
        Some(url) => {
            let mut options = ClientOptions::default();
            options.core.client_name = "execd-cp".to_owned();
            options.core.recovery_window = Duration::from_secs(5);
            options.security = args.security.client_security(url)?;
            Client::<R>::connect_with(url, options)
                .await
                .with_context(|| format!("cannot connect to {url}"))
        }
        None => crate::local_stdio_client::<R>().await,
    }
}

/// The server's working directory (`environment/info`), against which relative `:PATH`s
/// resolve.
async fn server_cwd<R>(client: &Client<R>) -> anyhow::Result<PathBuf> {
    let info = client
        .call("environment/info", serde_json::Value::Null)
        .await
        .context("environment/info failed")?;
    let info: EnvironmentInfo =
        serde_json::from_value(info).context("unreadable environment/info")?;
    info.cwd
        .to_host_path()
        .context("the server's cwd is not a local path")
}

/// Whether the server runs on this host: a local stdio child, or a loopback URL. Only then can
/// a copy be into itself.
fn same_host(url: Option<&str>) -> bool {
    let Some(url) = url else {
        return true;
    };
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// What a tree holds, collected before anything is written (so a copy into the tree itself
/// cannot see its own output).
#[derive(Debug, Default)]
struct Tree {
    /// Directories, relative, parents first (the root is `""`).
    dirs: Vec<PathBuf>,
    /// Files, relative, with their size.
    files: Vec<(PathBuf, u64)>,
}

struct Copy<R> {
    client: Client<R>,
    recursive: bool,
    same_host: bool,
    progress: Progress,
}

impl<R> Copy<R> {
    /// Local `src` to the server's `dst`.
    async fn upload(&mut self, src: &Path, dst: &Path) -> anyhow::Result<()> {
        let meta =
            std::fs::metadata(src).with_context(|| format!("cannot stat '{}'", src.display()))?;
        let target = match self.client.get_metadata(dst).await {
            Ok(m) if m.is_directory => dst.join(file_name(src)?),
            Ok(_) => dst.to_path_buf(),
            Err(e) if is_not_found(&e) => dst.to_path_buf(),
            Err(e) => return Err(e).with_context(|| format!("cannot stat ':{}'", dst.display())),
        };
        self.check_not_itself(src, &target, meta.is_dir())?;
        if !meta.is_dir() {
            self.upload_file(src, &target, meta.len()).await?;
            if is_executable(&meta) {
                self.chmod_x(&[target]).await?;
            }
            return Ok(());
        }
        if !self.recursive {
            bail!("'{}' is a directory (use -r)", src.display());
        }
        let (tree, executables) = local_tree(src)?;
        self.progress.total = tree.files.iter().map(|(_, n)| n).sum();
        for dir in &tree.dirs {
            self.client
                .create_directory(&target.join(dir), true)
                .await
                .with_context(|| format!("cannot create ':{}'", target.join(dir).display()))?;
        }
        for (file, size) in &tree.files {
            self.upload_file(&src.join(file), &target.join(file), *size)
                .await?;
        }
        let executables: Vec<PathBuf> = executables.iter().map(|f| target.join(f)).collect();
        self.chmod_x(&executables).await
    }

    /// The server's `src` to local `dst`.
    async fn download(&mut self, src: &Path, dst: &Path) -> anyhow::Result<()> {
        let meta = self
            .client
            .get_metadata(src)
            .await
            .with_context(|| format!("cannot stat ':{}'", src.display()))?;
        let target = if dst.is_dir() {
            dst.join(file_name(src)?)
        } else {
            dst.to_path_buf()
        };
        self.check_not_itself(src, &target, meta.is_directory)?;
        let executables = self.remote_executables(src).await;
        if !meta.is_directory {
            self.progress.total = meta.size;
            self.download_file(src, &target).await?;
            if executables.iter().any(|e| e == src) {
                set_executable(&target)?;
            }
            return Ok(());
        }
        if !self.recursive {
            bail!("':{}' is a directory (use -r)", src.display());
        }
        let tree = self.remote_tree(src).await?;
        self.progress.total = tree.files.iter().map(|(_, n)| n).sum();
        for dir in &tree.dirs {
            let path = target.join(dir);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create '{}'", path.display()))?;
        }
        for (file, _) in &tree.files {
            let path = target.join(file);
            self.download_file(&src.join(file), &path).await?;
            if executables.iter().any(|e| *e == src.join(file)) {
                set_executable(&path)?;
            }
        }
        Ok(())
    }

    /// Refuses a copy of a path onto itself, or of a directory into itself, when both sides
    /// are this host.
    fn check_not_itself(&self, src: &Path, target: &Path, is_dir: bool) -> anyhow::Result<()> {
        if !self.same_host {
            return Ok(());
        }
        let (Ok(src_real), Some(target_real)) = (src.canonicalize(), canonical_target(target))
        else {
            return Ok(());
        };
        if src_real == target_real {
            bail!(
                "'{}' and '{}' are the same file",
                src.display(),
                target.display()
            );
        }
        if is_dir && target_real.starts_with(&src_real) {
            bail!(
                "cannot copy a directory, '{}', into itself, '{}'",
                src.display(),
                target.display()
            );
        }
        Ok(())
    }

    async fn upload_file(&mut self, src: &Path, dst: &Path, size: u64) -> anyhow::Result<()> {
        let mut file =
            File::open(src).with_context(|| format!("cannot open '{}'", src.display()))?;
        let handle = self
            .client
            .open(&handle_id(), dst, OpenMode::Replace)
            .await
            .with_context(|| format!("cannot open ':{}' for writing", dst.display()))?;
        self.progress.start(src, size);
        // Blocks are read here in order and written with WINDOW in flight.
        let blocks = stream::iter(std::iter::from_fn(|| {
            let mut buf = vec![0; BLOCK];
            match read_full(&mut file, &mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some(Ok(buf))
                }
                Err(e) => Some(Err(e)),
            }
        }))
        .scan(0u64, |offset, block| {
            let at = *offset;
            if let Ok(b) = &block {
                *offset += b.len() as u64;
            }
            futures::future::ready(Some(block.map(|b| (at, b))))
        });
        let mut writes = blocks
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot read '{}'", src.display())))
            .map_ok(|(at, data)| {
                let handle = &handle;
                async move {
                    handle
                        .write_block(at, &data)
                        .await
                        .map(|()| data.len())
                        .with_context(|| format!("cannot write ':{}'", dst.display()))
                }
            })
            .try_buffer_unordered(WINDOW);
        while let Some(n) = writes.try_next().await? {
            self.progress.add(n);
        }
        drop(writes);
        handle
            .close()
            .await
            .with_context(|| format!("cannot close ':{}'", dst.display()))?;
        self.progress.finish();
        Ok(())
    }

    async fn download_file(&mut self, src: &Path, dst: &Path) -> anyhow::Result<()> {
        let handle = self
            .client
            .open(&handle_id(), src, OpenMode::Read)
            .await
            .with_context(|| format!("cannot open ':{}'", src.display()))?;
        let mut file =
            File::create(dst).with_context(|| format!("cannot create '{}'", dst.display()))?;
        self.progress.start(src, self.progress.total);
        let mut blocks = stream::iter(0u64..)
            .map(|i| handle.read_block(i * BLOCK as u64, BLOCK as u64))
            .buffered(WINDOW);
        while let Some(block) = blocks.next().await {
            let (chunk, eof) =
                block.with_context(|| format!("cannot read ':{}'", src.display()))?;
            file.write_all(&chunk)
                .with_context(|| format!("cannot write '{}'", dst.display()))?;
            self.progress.add(chunk.len());
            if eof {
                break;
            }
        }
        drop(blocks);
        let _ = handle.close().await;
        self.progress.finish();
        Ok(())
    }

    /// Lists the server's tree under `root` with `fs/readDirectory`.
    async fn remote_tree(&self, root: &Path) -> anyhow::Result<Tree> {
        let mut tree = Tree {
            dirs: vec![PathBuf::new()],
            files: Vec::new(),
        };
        let mut i = 0;
        while let Some(dir) = tree.dirs.get(i).cloned() {
            i += 1;
            let path = root.join(&dir);
            let entries = self
                .client
                .read_directory(&path)
                .await
                .with_context(|| format!("cannot list ':{}'", path.display()))?;
            for e in entries {
                let rel = dir.join(&e.file_name);
                if e.is_directory {
                    tree.dirs.push(rel);
                } else if e.is_file {
                    let m = self
                        .client
                        .get_metadata(&root.join(&rel))
                        .await
                        .with_context(|| format!("cannot stat ':{}'", root.join(&rel).display()))?;
                    tree.files.push((rel, m.size));
                } else {
                    warn_skipped(&format!(":{}", root.join(&rel).display()));
                }
            }
        }
        Ok(tree)
    }

    /// The executable regular files at or under `root` on the server (`find -perm /111`).
    /// Without `find` nothing is executable, with a warning.
    async fn remote_executables(&self, root: &Path) -> Vec<PathBuf> {
        let argv = [
            "find",
            &root.to_string_lossy(),
            "-type",
            "f",
            "-perm",
            "/111",
            "-print0",
        ];
        match self.server_command(&argv).await {
            Ok(out) => out
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(String::from_utf8_lossy(p).into_owned()))
                .collect(),
            Err(e) => {
                crate::logging::eprint_line(&format!(
                    "execd cp: warning: cannot read executable bits on the server: {e:#}"
                ));
                Vec::new()
            }
        }
    }

    /// `chmod +x` on the server for `paths`.
    async fn chmod_x(&self, paths: &[PathBuf]) -> anyhow::Result<()> {
        for batch in paths.chunks(CHMOD_BATCH) {
            let mut argv = vec!["chmod".to_owned(), "+x".to_owned(), "--".to_owned()];
            argv.extend(batch.iter().map(|p| p.to_string_lossy().into_owned()));
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            self.server_command(&argv)
                .await
                .context("cannot set the executable bit on the server")?;
        }
        Ok(())
    }

    /// Runs `argv` on the server; its stdout, or an error with its exit code and stderr.
    async fn server_command(&self, argv: &[&str]) -> anyhow::Result<Vec<u8>> {
        let mut env = std::collections::BTreeMap::new();
        env.insert("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned());
        env.insert("LC_ALL".to_owned(), "C".to_owned());
        let params = StartParams {
            process_id: format!("execd-cp-{}", uuid::Uuid::new_v4()),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: PathUri::parse("file:///").context("root PathUri")?,
            env,
            tty: false,
            pipe_stdin: false,
            arg0: None,
            env_policy: None,
            enforce_managed_network: false,
            sandbox: None,
        };
        let process = self.client.start(params).await?;
        let (mut stdout, mut stderr, mut code) = (Vec::new(), Vec::new(), None);
        while let Some(event) = process.next_event().await {
            match event {
                Event::Output { stream, chunk, .. } => match stream {
                    execd_core::protocol::Stream::Stderr => stderr.extend(chunk),
                    _ => stdout.extend(chunk),
                },
                Event::Exited { exit_code, .. } => code = Some(exit_code),
                Event::Closed { .. } => break,
                Event::ProcessLost | Event::SessionLost(_) => break,
                _ => {}
            }
        }
        match code {
            Some(0) => Ok(stdout),
            Some(c) => bail!(
                "{} exited with {c}: {}",
                argv[0],
                String::from_utf8_lossy(&stderr).trim()
            ),
            None => bail!("{} did not finish", argv[0]),
        }
    }
}

/// Lists the local tree under `root`; also returns its executable files (relative).
fn local_tree(root: &Path) -> anyhow::Result<(Tree, Vec<PathBuf>)> {
    let mut tree = Tree {
        dirs: vec![PathBuf::new()],
        files: Vec::new(),
    };
    let mut executables = Vec::new();
    let mut i = 0;
    while let Some(dir) = tree.dirs.get(i).cloned() {
        i += 1;
        let path = root.join(&dir);
        let entries = std::fs::read_dir(&path)
            .with_context(|| format!("cannot list '{}'", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list '{}'", path.display()))?;
            let rel = dir.join(entry.file_name());
            let meta = entry
                .metadata()
                .with_context(|| format!("cannot stat '{}'", root.join(&rel).display()))?;
            if meta.is_dir() {
                tree.dirs.push(rel);
            } else if meta.is_file() {
                if is_executable(&meta) {
                    executables.push(rel.clone());
                }
                tree.files.push((rel, meta.len()));
            } else {
                warn_skipped(&root.join(&rel).display().to_string());
            }
        }
    }
    Ok((tree, executables))
}

/// The canonical form of a path that may not exist yet (its parent's, joined with its name).
fn canonical_target(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    Some(parent.join(path.file_name()?))
}

fn file_name(path: &Path) -> anyhow::Result<&std::ffi::OsStr> {
    path.file_name()
        .with_context(|| format!("'{}' has no file name", path.display()))
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Rpc(rpc) if rpc.code == -32004)
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// `chmod +x` as the shell does it: execute where read is allowed.
fn set_executable(path: &Path) -> anyhow::Result<()> {
    let mut perm = std::fs::metadata(path)
        .with_context(|| format!("cannot stat '{}'", path.display()))?
        .permissions();
    perm.set_mode(perm.mode() | ((perm.mode() & 0o444) >> 2));
    std::fs::set_permissions(path, perm)
        .with_context(|| format!("cannot set the executable bit of '{}'", path.display()))
}

fn warn_skipped(path: &str) {
    crate::logging::eprint_line(&format!(
        "execd cp: warning: skipping '{path}': not a regular file or directory"
    ));
}

/// A handle id unique in this process (at most 32 bytes).
fn handle_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("cp-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Reads until `buf` is full or the end of the file; the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The progress line on a terminal: `NAME  12.0/48.0 MiB  25%  310.2 MiB/s`, redrawn at most
/// every 100 ms, one line per file.
struct Progress {
    tty: bool,
    /// Bytes of the whole copy (the current file's for a single file).
    total: u64,
    done: u64,
    name: String,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    fn new(tty: bool) -> Self {
        Progress {
            tty,
            total: 0,
            done: 0,
            name: String::new(),
            started: Instant::now(),
            drawn: None,
        }
    }

    fn start(&mut self, path: &Path, total_if_unset: u64) {
        if self.total == 0 {
            self.total = total_if_unset;
        }
        if self.done == 0 {
            self.started = Instant::now();
        }
        self.name = path.display().to_string();
        self.drawn = None;
    }

    fn add(&mut self, n: usize) {
        self.done += n as u64;
        if self.tty
            && self
                .drawn
                .is_none_or(|d| d.elapsed() >= Duration::from_millis(100))
        {
            self.draw();
        }
    }

    fn finish(&mut self) {
        if self.tty {
            self.draw();
            eprintln!();
        }
    }

    fn draw(&mut self) {
        self.drawn = Some(Instant::now());
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        let pct = self
            .done
            .saturating_mul(100)
            .checked_div(self.total)
            .unwrap_or(100);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K{}  {:.1}/{:.1} MiB  {pct}%  {:.1} MiB/s",
            self.name,
            mib(self.done),
            mib(self.total),
            mib(self.done) / secs
        );
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_hosts() {
        assert_eq!(Side::parse(":/a"), Side::Remote("/a".into()));
        assert_eq!(Side::parse("./:a"), Side::Local("./:a".into()));
        assert!(same_host(None));
        assert!(same_host(Some("ws://127.0.0.1:4000")));
        assert!(same_host(Some("wss://localhost:4000/")));
        assert!(!same_host(Some("ws://10.0.0.5:4000")));
    }
}
