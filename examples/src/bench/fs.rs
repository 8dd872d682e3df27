//! The `fs` scenario: a `--fs-bytes` file (256 MiB by default) read through the server whole
//! (`fs/readFile`) and in 1 MiB blocks (`fs/open` + `fs/readBlock`, 8 in flight), each in
//! the reference's JSON and, when the server grants them, in binary frames, every byte
//! decoded and checked, next to the floor of a local `cat` of the same file through a pipe; the
//! file written back with `fs/writeFile` (checked on disk) next to a local write; `fs/getMetadata`
//! of one file, `--iterations` sequential round trips and 1,000 with 64 in flight, next to a
//! local `stat`; and `fs/walk` of a tree of 10,000 files next to a local walk of it.
//! The server must see this host's files (a local server or `--server-cmd`). The file is read
//! once first, so every reading is from the page cache.
//!
//! A server that refuses a whole-file `fs/readFile` or `fs/writeFile` (a size cap, a frame
//! limit) is asked for halves until one is accepted; the report names the size measured.
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::client::{response_id, windowed, Conn, Frame};
use super::report::{mib_s, Report};

/// `fs/readBlock` length (the protocol's largest).
const BLOCK: usize = 1 << 20;
/// Smallest whole-file size tried against a server with a cap.
const MIN_WHOLE_FILE: usize = 64 << 10;
/// Largest `fs/writeFile` tried: its frame (4/3 of it in base64, sent as one WebSocket frame)
/// stays under the reference's 16 MiB frame limit (it resets the connection at 16 MiB of
/// data), so both servers are measured at the same size.
const MAX_WRITE_FILE: usize = 8 << 20;
/// `fs/getMetadata` requests of the pipelined run.
const METADATA_PIPELINED: usize = 1000;
/// `fs/getMetadata` requests in flight in the pipelined run. (The reference stops answering
/// a burst of 1,000 sent at once after a few hundred answers, in 2 of 3 tries.)
const METADATA_WINDOW: usize = 64;
/// The walked tree: directories × files per directory.
const TREE: (usize, usize) = (100, 100);

/// What the scenario measures.
pub(crate) struct FsArgs {
    /// Bytes of the file read (and, up to [`MAX_WRITE_FILE`], written).
    pub(crate) bytes: usize,
    /// Block reads in flight (`--fs-window`, 8 by default: 8 MiB outstanding hides a round
    /// trip at a few GiB/s).
    pub(crate) window: usize,
    /// Sequential `fs/getMetadata` round trips.
    pub(crate) iterations: usize,
    /// Measure the local floors too.
    pub(crate) floor: bool,
}

/// Runs the scenario against the server at `url`.
pub(crate) async fn run(url: &str, args: &FsArgs, report: &mut Report) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let bytes = args.bytes.max(1);
    let mib = bytes as f64 / f64::from(1u32 << 20);
    let data = pattern(bytes);
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &data).context("write the file")?;
    let _ = std::fs::read(&file)?;
    if args.floor {
        let secs = cat(&file, bytes)?;
        report.scalar(
            "floor_fs_cat",
            format!("floor: local cat of a {mib:.0} MiB file through a pipe"),
            mib_s(bytes as u64, secs),
            "MiB/s",
            None,
        );
    }

    // The reference's JSON, then (when the server grants them) binary result frames.
    for binary in [false, true] {
        let (c, on) = open(url, binary).await?;
        c.close().await;
        if binary && !on {
            break;
        }
        let suffix = if binary { " (binary frames)" } else { "" };
        let (file_key, blocks_key) = if binary {
            ("fs_read_file_binary", "fs_read_blocks_binary")
        } else {
            ("fs_read_file", "fs_read_blocks")
        };
        let read = |size: usize| {
            let (dir, data, file) = (dir.path(), &data, &file);
            async move {
                let path = if size == data.len() {
                    file.clone()
                } else {
                    let p = dir.join(format!("{size}.bin"));
                    std::fs::write(&p, &data[..size])?;
                    p
                };
                let (mut c, _) = open(url, binary).await?;
                let result = read_file(&mut c, &path, &data[..size]).await;
                c.close().await;
                result
            }
        };
        let method = format!("fs/readFile{suffix}");
        whole_file(report, (file_key, &method), bytes, read).await;

        let (mut c, _) = open(url, binary).await?;
        let secs = read_blocks(&mut c, &file, &data, args.window).await?;
        c.close().await;
        report.scalar(
            blocks_key,
            format!(
                "fs/open + fs/readBlock of a {mib:.0} MiB file, 1 MiB x {} in flight{suffix}",
                args.window
            ),
            mib_s(bytes as u64, secs),
            "MiB/s",
            None,
        );
    }
    let mut c = Conn::open(url).await?;

    let write_size = bytes.min(MAX_WRITE_FILE);
    if args.floor {
        let target = dir.path().join("floor-write.bin");
        let t0 = Instant::now();
        std::fs::write(&target, &data[..write_size])?;
        let secs = t0.elapsed().as_secs_f64();
        report.scalar(
            "floor_fs_write",
            format!(
                "floor: local write of a {} MiB file (page cache)",
                write_size >> 20
            ),
            mib_s(write_size as u64, secs),
            "MiB/s",
            None,
        );
    }
    let write = |size: usize| {
        let (target, data) = (dir.path().join(format!("written-{size}.bin")), &data);
        async move {
            let mut c = Conn::open(url).await?;
            let result = write_file(&mut c, &target, &data[..size]).await;
            c.close().await;
            let _ = std::fs::remove_file(&target);
            result
        }
    };
    whole_file(report, ("fs_write_file", "fs/writeFile"), write_size, write).await;
    drop(data);

    if args.floor {
        let mut samples = Vec::with_capacity(args.iterations);
        for _ in 0..args.iterations {
            let t0 = Instant::now();
            std::fs::metadata(&file)?;
            samples.push(t0.elapsed());
        }
        report.latency("floor_fs_stat", "floor: local stat of a file", &samples);
    }
    let samples = metadata_round_trips(&mut c, &file, args.iterations).await?;
    report.latency(
        "fs_get_metadata",
        "fs/getMetadata of a file, sequential round trips",
        &samples,
    );
    match metadata_pipelined(&mut c, &file, METADATA_PIPELINED).await {
        Ok(secs) => report.scalar(
            "fs_get_metadata_pipelined",
            format!("{METADATA_PIPELINED} x fs/getMetadata, {METADATA_WINDOW} in flight"),
            METADATA_PIPELINED as f64 / secs,
            "calls/s",
            Some(format!("all answered in {:.1} ms", secs * 1e3)),
        ),
        Err(e) => {
            report.skipped(
                "fs_get_metadata_pipelined",
                "fs/getMetadata pipelined",
                format!("{e:#}"),
            );
            // Answers may still come: the walk gets a connection of its own.
            c.close().await;
            c = Conn::open(url).await?;
        }
    }

    let tree = dir.path().join("tree");
    let files = make_tree(&tree)?;
    if args.floor {
        let t0 = Instant::now();
        let n = local_walk(&tree)?;
        anyhow::ensure!(n == files, "local walk found {n} of {files} entries");
        report.scalar(
            "floor_fs_walk",
            format!("floor: local walk of {files} entries (read_dir + file type)"),
            t0.elapsed().as_secs_f64() * 1e3,
            "ms",
            None,
        );
    }
    let (ms, n) = walk(&mut c, &tree).await?;
    report.scalar(
        "fs_walk",
        format!("fs/walk of {files} entries"),
        ms,
        "ms",
        Some(format!("{n} entries listed")),
    );
    c.close().await;
    Ok(())
}

/// A session on `url`, asking for binary frames when `binary`; whether they are on.
async fn open(url: &str, binary: bool) -> anyhow::Result<(Conn, bool)> {
    if binary {
        Conn::open_preferring_binary(url).await
    } else {
        Ok((Conn::open(url).await?, false))
    }
}

/// The bytes of a byte-carrying result, and whether more pieces of it follow: a binary
/// result frame's payload and `more` flag, or the base64 string member `key` of a JSON result
/// decoded (never more).
fn result_bytes<'a>(
    frame: &'a [u8],
    key: &str,
) -> anyhow::Result<(std::borrow::Cow<'a, [u8]>, bool)> {
    use execd_core::protocol::binary::{decode_server_frame, is_binary_frame, ServerFrame};
    if is_binary_frame(frame) {
        return match decode_server_frame(frame) {
            Ok(ServerFrame::Result(r)) => Ok((std::borrow::Cow::Borrowed(r.data), r.more)),
            other => anyhow::bail!("expected a result frame, got {other:?}"),
        };
    }
    let text = member(frame, key).with_context(|| {
        format!(
            "no {key}: {}",
            String::from_utf8_lossy(&frame[..frame.len().min(200)])
        )
    })?;
    let bytes = base64_simd::STANDARD
        .decode_to_vec(text)
        .context("bad base64")?;
    Ok((std::borrow::Cow::Owned(bytes), false))
}

/// Measures a whole-file operation (`key`, `method`) with `op(size)` (seconds), halving the
/// size from `size` while the server refuses it; reports MiB/s with the size measured.
async fn whole_file<F, Fut>(
    report: &mut Report,
    (key, method): (&'static str, &str),
    mut size: usize,
    op: F,
) where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut refusals = Vec::new();
    loop {
        match op(size).await {
            Ok(secs) => {
                let note = (!refusals.is_empty())
                    .then(|| format!("the server refused larger files: {}", refusals.join("; ")));
                report.scalar(
                    key,
                    format!("{method} of a {} KiB file (checked)", size >> 10),
                    mib_s(size as u64, secs),
                    "MiB/s",
                    note,
                );
                return;
            }
            Err(e) if size / 2 >= MIN_WHOLE_FILE => {
                refusals.push(format!("{} KiB: {e:#}", size >> 10));
                size /= 2;
            }
            Err(e) => {
                report.skipped(
                    key,
                    method,
                    format!("refused down to {} KiB: {e:#}", size >> 10),
                );
                return;
            }
        }
    }
}

/// A file's worth of bytes that compress badly (so no layer can shortcut them).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `cat FILE` (of `len` bytes) into a pipe read here in 1 MiB reads; seconds.
fn cat(file: &Path, len: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut child = Command::new("cat")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn cat")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut buf = vec![0; BLOCK];
    let mut total = 0;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    child.wait()?;
    anyhow::ensure!(total == len, "cat gave {total} of {len} bytes");
    Ok(t0.elapsed().as_secs_f64())
}

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The result of response `id`, skipping notifications; an error response is an error.
async fn response(c: &mut Conn, id: i64) -> anyhow::Result<Frame> {
    loop {
        let frame = c.frame().await?;
        if response_id(&frame)? == Some(id) {
            return Ok(frame);
        }
    }
}

/// The bytes of string member `key` in a result frame.
fn member<'a>(frame: &'a [u8], key: &str) -> anyhow::Result<&'a [u8]> {
    let pat = format!(r#""{key}":""#);
    let start = memchr::memmem::find(frame, pat.as_bytes()).context("no such member")? + pat.len();
    let len = memchr::memchr(b'"', &frame[start..]).context("unterminated")?;
    Ok(&frame[start..start + len])
}

/// One `fs/readFile`, decoded and compared; seconds. A binary result may come in pieces
/// (result frames flagged `more`, PROTOCOL.md §2.5), joined here.
async fn read_file(c: &mut Conn, path: &Path, want: &[u8]) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let id = c.request("fs/readFile", json!({"path": uri(path)})).await?;
    let mut data = Vec::new();
    loop {
        let frame = response(c, id).await?;
        let (bytes, more) = result_bytes(&frame, "dataBase64")?;
        if data.is_empty() && !more {
            data = bytes.into_owned();
        } else {
            data.extend_from_slice(&bytes);
        }
        if !more {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(*data == *want, "fs/readFile returned other bytes");
    Ok(secs)
}

/// One `fs/writeFile` of `data` to `path`, checked on disk afterwards; seconds.
async fn write_file(c: &mut Conn, path: &Path, data: &[u8]) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let params =
        json!({"path": uri(path), "dataBase64": base64_simd::STANDARD.encode_to_string(data)});
    let id = c.request("fs/writeFile", params).await?;
    response(c, id).await?;
    let secs = t0.elapsed().as_secs_f64();
    anyhow::ensure!(
        std::fs::read(path)? == data,
        "fs/writeFile wrote other bytes"
    );
    Ok(secs)
}

/// `n` sequential `fs/getMetadata` round trips of `path`, each answer checked.
async fn metadata_round_trips(
    c: &mut Conn,
    path: &Path,
    n: usize,
) -> anyhow::Result<Vec<std::time::Duration>> {
    let params = json!({"path": uri(path)});
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let id = c.request("fs/getMetadata", params.clone()).await?;
        let frame = response(c, id).await?;
        samples.push(t0.elapsed());
        check_metadata(&frame)?;
    }
    Ok(samples)
}

/// `n` `fs/getMetadata` requests of `path` with [`METADATA_WINDOW`] in flight, answers taken
/// in any order (each checked); seconds.
async fn metadata_pipelined(c: &mut Conn, path: &Path, n: usize) -> anyhow::Result<f64> {
    let params = json!({"path": uri(path)});
    let t0 = Instant::now();
    let request = |_| ("fs/getMetadata", params.clone());
    windowed(c, n, METADATA_WINDOW, request, |i, frame| match i {
        Some(_) => check_metadata(frame),
        None => Ok(()),
    })
    .await?;
    Ok(t0.elapsed().as_secs_f64())
}

fn check_metadata(frame: &[u8]) -> anyhow::Result<()> {
    let v: Value = serde_json::from_slice(frame)?;
    anyhow::ensure!(v["result"]["isFile"] == true, "fs/getMetadata answered {v}");
    Ok(())
}

/// `fs/open`, `fs/readBlock` of every block with `window` in flight (each decoded and
/// compared), `fs/close`; seconds.
async fn read_blocks(c: &mut Conn, path: &Path, want: &[u8], window: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let id = c
        .request("fs/open", json!({"handleId": "bench", "path": uri(path)}))
        .await?;
    response(c, id).await?;
    let blocks = want.len().div_ceil(BLOCK);
    let request = |i: usize| {
        let params = json!({"handleId": "bench", "offset": i * BLOCK, "len": BLOCK});
        ("fs/readBlock", params)
    };
    windowed(c, blocks, window, request, |block, frame| {
        let Some(block) = block else {
            return Ok(());
        };
        let (chunk, _) = result_bytes(frame, "chunk").context("fs/readBlock")?;
        let at = block * BLOCK;
        anyhow::ensure!(
            *chunk == want[at..(at + BLOCK).min(want.len())],
            "block {block} differs"
        );
        Ok(())
    })
    .await?;
    let id = c.request("fs/close", json!({"handleId": "bench"})).await?;
    response(c, id).await?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Writes [`TREE`]: directories of empty files; the number of entries (files + directories).
fn make_tree(root: &Path) -> anyhow::Result<usize> {
    let (dirs, files) = TREE;
    for d in 0..dirs {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f:03}.txt")), b"")?;
        }
    }
    Ok(dirs * files + dirs)
}

/// Lists every entry below `root` (breadth first, file types from the directory entries).
fn local_walk(root: &Path) -> anyhow::Result<usize> {
    let mut queue = vec![root.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = queue.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            n += 1;
            if entry.file_type()?.is_dir() {
                queue.push(entry.path());
            }
        }
    }
    Ok(n)
}

/// One `fs/walk` of `root` within the reference's maxima; (ms, entries listed).
async fn walk(c: &mut Conn, root: &Path) -> anyhow::Result<(f64, usize)> {
    let t0 = Instant::now();
    let options = json!({"maxDepth": 64, "maxDirectories": 10_000, "maxEntries": 50_000,
                         "followDirectorySymlinks": false});
    let id = c
        .request("fs/walk", json!({"path": uri(root), "options": options}))
        .await?;
    let frame = response(c, id).await?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let v: Value = serde_json::from_slice(&frame)?;
    let n = v["result"]["entries"].as_array().map_or(0, Vec::len);
    Ok((ms, n))
}
