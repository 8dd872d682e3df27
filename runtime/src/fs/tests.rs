//! Behaviour of [`perform`] against real temporary directories. The expected texts and codes
//! were observed on `codex exec-server` 0.169.0. Tests run as root in CI containers, where
//! DAC permission bits do not stop reads or writes; the permission case uses what root
//! cannot bypass (a file opened for writing is not readable through that handle).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use execd_core::protocol::fs::{OpenMode, WalkEntryKind};
use execd_core::protocol::{
    walk_limits, FileHandleId, FsError, FsOp, FsPolicy, FsResult, WalkLimits, MAX_HANDLES,
};

use super::{perform, FsHandles};

fn run(op: FsOp) -> Result<FsResult, FsError> {
    perform(op, &mut FsHandles::new())
}

fn code_and_message(r: Result<FsResult, FsError>) -> (i64, String) {
    let e = r.expect_err("must fail").to_rpc_error();
    (e.code, e.message)
}

fn read(path: &Path, follow: bool) -> Result<FsResult, FsError> {
    run(FsOp::ReadFile {
        path: path.into(),
        follow_symlinks: follow,
        max_bytes: FsPolicy::default().read_file_max_bytes,
    })
}

fn read_bytes(path: &Path) -> Vec<u8> {
    match read(path, true).expect("readable") {
        FsResult::ReadFile(r) => r.data_base64.0,
        other => panic!("{other:?}"),
    }
}

fn meta(path: &Path, follow: bool) -> Result<FsResult, FsError> {
    run(FsOp::GetMetadata {
        path: path.into(),
        follow_symlinks: follow,
        real_birth_time: false,
    })
}

/// `t/f` ("hi\n"), `t/d/sub/`, `t/lnk -> f`, `t/dang -> nowhere`, `t/loop -> loop`,
/// `t/dlnk -> d`, `t/fifo`.
fn tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path().to_path_buf();
    std::fs::write(t.join("f"), b"hi\n").expect("write");
    std::fs::create_dir_all(t.join("d/sub")).expect("mkdir");
    symlink("f", t.join("lnk")).expect("symlink");
    symlink("nowhere", t.join("dang")).expect("symlink");
    symlink("loop", t.join("loop")).expect("symlink");
    symlink("d", t.join("dlnk")).expect("symlink");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        t.join("fifo"),
        rustix::fs::Mode::from_raw_mode(0o644),
    )
    .expect("mkfifo");
    (dir, t)
}

#[test]
fn read_file_errors_match_the_reference() {
    let (_dir, t) = tree();
    let not_file = |p: &Path| (-32600, format!("path `{}` is not a file", p.display()));
    let cases = [
        (
            read(&t.join("missing"), true),
            (-32004, "No such file or directory (os error 2)".to_owned()),
        ),
        (
            read(&t.join("lnk"), false),
            (-32603, "Symbolic link loop (os error 40)".to_owned()),
        ),
        (
            read(&t.join("dlnk/sub"), false),
            (-32603, "Not a directory (os error 20)".to_owned()),
        ),
        (read(&t.join("d"), true), not_file(&t.join("d"))),
        (read(&t.join("fifo"), true), not_file(&t.join("fifo"))),
        (
            read(&t.join("dang"), true),
            (-32004, "No such file or directory (os error 2)".to_owned()),
        ),
        (
            read(&t.join("loop"), true),
            (-32603, "Symbolic link loop (os error 40)".to_owned()),
        ),
    ];
    for (got, want) in cases {
        assert_eq!(code_and_message(got), want);
    }
    assert_eq!(read_bytes(&t.join("lnk")), b"hi\n");
}

#[test]
fn read_file_cap_names_the_limit_and_fs_open() {
    let (_dir, t) = tree();
    let r = run(FsOp::ReadFile {
        path: t.join("f"),
        follow_symlinks: true,
        max_bytes: 2,
    });
    let (code, message) = code_and_message(r);
    assert_eq!(code, -32600);
    assert!(
        message.contains("limit of 2 bytes") && message.contains("fs/open"),
        "{message}"
    );
}

#[test]
fn read_file_in_pieces_emits_full_pieces_behind_their_headroom_and_returns_the_rest() {
    let (dir, _) = tree();
    for len in [0usize, 5, 9, 10, 23] {
        let path = dir.path().join(format!("p{len}"));
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let mut pieces = Vec::new();
        let rest = super::read_file_in_pieces(&path, true, 1 << 20, (5, 3), &mut |p| {
            pieces.push(p);
            true
        })
        .expect("read");
        assert!(
            pieces.iter().all(|p| p.len() == 8 && p[..3] == [0, 0, 0]),
            "{len}"
        );
        let mut joined: Vec<u8> = pieces.iter().flat_map(|p| p[3..].to_vec()).collect();
        assert!(rest.len() < 5, "{len}: the rest is shorter than a piece");
        joined.extend_from_slice(&rest);
        assert_eq!(joined, data, "{len}");
    }
    // Over the cap: refused before any piece.
    let path = dir.path().join("p23");
    let mut emitted = 0;
    let e = super::read_file_in_pieces(&path, true, 20, (5, 0), &mut |_| {
        emitted += 1;
        true
    })
    .expect_err("over the cap");
    assert!(e.message.contains("limit of 20 bytes"), "{}", e.message);
    assert_eq!(emitted, 0);
    // `emit` answering false stops the read after that piece.
    let mut emitted = 0;
    let e = super::read_file_in_pieces(&path, true, 1 << 20, (5, 0), &mut |_| {
        emitted += 1;
        false
    })
    .expect_err("stopped");
    assert_eq!(e.message, super::read_stopped().message);
    assert_eq!(emitted, 1);
}

#[test]
fn write_file_is_byte_exact_and_refuses_symlinks_when_asked() {
    let (_dir, t) = tree();
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let write = |p: PathBuf, follow| {
        run(FsOp::WriteFile {
            path: p,
            data: data.clone(),
            follow_symlinks: follow,
        })
    };
    write(t.join("bin"), false).expect("writes");
    assert_eq!(read_bytes(&t.join("bin")), data);
    assert_eq!(
        code_and_message(write(t.join("lnk"), false)),
        (-32603, "Symbolic link loop (os error 40)".into())
    );
    assert_eq!(
        code_and_message(write(t.join("nodir/w"), true)),
        (-32004, "No such file or directory (os error 2)".into())
    );
    assert_eq!(
        code_and_message(write(t.join("d"), true)),
        (-32603, "Is a directory (os error 21)".into())
    );
    // Following: the write lands in the target, and a dangling link creates it.
    write(t.join("dang"), true).expect("creates the target");
    assert_eq!(read_bytes(&t.join("nowhere")), data);
}

#[test]
fn metadata_follows_or_refuses_symlinks() {
    let (_dir, t) = tree();
    let FsResult::Metadata(m) = meta(&t.join("lnk"), true).expect("ok") else {
        panic!()
    };
    assert!(m.is_file && m.is_symlink && !m.is_directory);
    assert_eq!((m.size, m.created_at_ms), (3, 0));
    assert!(m.modified_at_ms > 0);
    let FsResult::Metadata(m) = meta(&t.join("f"), false).expect("ok") else {
        panic!()
    };
    assert!(m.is_file && !m.is_symlink);
    let FsResult::Metadata(m) = meta(&t.join("fifo"), true).expect("ok") else {
        panic!()
    };
    assert!(!m.is_file && !m.is_directory);
    let cases = [
        (
            meta(&t.join("lnk"), false),
            (-32600, "path contains a symbolic link"),
        ),
        (
            meta(&t.join("dlnk/sub"), false),
            (-32603, "Not a directory (os error 20)"),
        ),
        (
            meta(&t.join("dang"), true),
            (-32004, "No such file or directory (os error 2)"),
        ),
        (
            meta(&t.join("loop"), true),
            (-32603, "Symbolic link loop (os error 40)"),
        ),
    ];
    for (got, (code, message)) in cases {
        assert_eq!(code_and_message(got), (code, message.to_owned()));
    }
}

#[test]
fn create_directory_and_remove() {
    let (_dir, t) = tree();
    let mkdir = |p: PathBuf, recursive, follow| {
        run(FsOp::CreateDirectory {
            path: p,
            recursive,
            follow_symlinks: follow,
        })
    };
    let rm = |p: PathBuf, recursive, force, follow| {
        run(FsOp::Remove {
            path: p,
            recursive,
            force,
            follow_symlinks: follow,
        })
    };
    assert_eq!(
        code_and_message(mkdir(t.join("d"), false, true)),
        (-32603, "File exists (os error 17)".into())
    );
    assert_eq!(
        code_and_message(mkdir(t.join("a/b"), false, true)),
        (-32004, "No such file or directory (os error 2)".into())
    );
    assert_eq!(
        code_and_message(mkdir(t.join("f"), true, true)),
        (-32603, "File exists (os error 17)".into())
    );
    assert_eq!(
        code_and_message(mkdir(t.join("dlnk/n"), true, false)),
        (-32603, "Not a directory (os error 20)".into())
    );
    mkdir(t.join("d"), true, true).expect("existing is fine");
    mkdir(t.join("x/y/z"), true, false).expect("no-follow recursive");
    assert!(t.join("x/y/z").is_dir());

    rm(t.join("missing"), true, true, true).expect("force");
    assert_eq!(
        code_and_message(rm(t.join("missing"), true, false, true)),
        (-32004, "No such file or directory (os error 2)".into())
    );
    assert_eq!(
        code_and_message(rm(t.join("d"), false, true, true)),
        (-32603, "Directory not empty (os error 39)".into())
    );
    assert_eq!(
        code_and_message(rm(t.join("f"), true, true, false)),
        (-32603, "recursive no-follow removal is unsupported".into())
    );
    assert_eq!(
        code_and_message(rm(t.join("lnk"), false, true, false)),
        (-32600, "path contains a symbolic link".into())
    );
    rm(t.join("dlnk"), true, true, true).expect("removes the link");
    assert!(t.join("d/sub").is_dir(), "not the target");
    rm(t.join("d"), true, true, true).expect("recursive");
    assert!(!t.join("d").exists());
    rm(t.join("fifo"), false, true, false).expect("no-follow non-recursive");
}

#[test]
fn read_directory_lists_unsorted_with_target_kinds() {
    let (_dir, t) = tree();
    let FsResult::ReadDirectory(r) = run(FsOp::ReadDirectory { path: t.clone() }).expect("ok")
    else {
        panic!()
    };
    let mut names: Vec<_> = r
        .entries
        .iter()
        .map(|e| (e.file_name.as_str(), e.is_directory, e.is_file))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            ("d", true, false),
            ("dang", false, false),
            ("dlnk", true, false),
            ("f", false, true),
            ("fifo", false, false),
            ("lnk", false, true),
            ("loop", false, false)
        ]
    );
    assert_eq!(
        code_and_message(run(FsOp::ReadDirectory { path: t.join("f") })),
        (-32603, "Not a directory (os error 20)".into())
    );
}

fn limits(depth: u64, dirs: u64, entries: u64, follow: bool, prune: bool) -> WalkLimits {
    let options = serde_json::from_value(
        serde_json::json!({"maxDepth": depth, "maxDirectories": dirs,
        "maxEntries": entries, "followDirectorySymlinks": follow, "pruneHiddenDirectories": prune}),
    )
    .expect("options");
    walk_limits(&options).expect("valid")
}

fn walk(root: &Path, l: WalkLimits) -> (Vec<String>, bool) {
    let FsResult::Walk(r) = run(FsOp::Walk {
        path: root.into(),
        limits: l,
    })
    .expect("walks") else {
        panic!()
    };
    let prefix = execd_core::PathUri::from_host_path(root)
        .expect("abs")
        .as_str()
        .to_owned();
    let names = r
        .entries
        .iter()
        .map(|e| {
            let rel = e
                .path
                .as_str()
                .strip_prefix(&prefix)
                .expect("under root")
                .to_owned();
            if e.kind == WalkEntryKind::Directory {
                rel + "/"
            } else {
                rel
            }
        })
        .collect();
    (names, r.truncated)
}

/// The reference's answers on the same trees (t3 and t of the probes).
#[test]
fn walk_matches_the_reference_order_and_bounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path().join("r");
    for d in ["r/x", "out/o1", "r/y", "r/.hd"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    symlink("../out", r.join("ol")).expect("symlink");
    symlink("../out", r.join("am")).expect("symlink");
    std::fs::write(r.join("y/.hf"), b"").expect("write");
    std::fs::write(r.join(".hd/q"), b"").expect("write");
    let top = ["/.hd/", "/am/", "/ol/", "/x/", "/y/"];
    assert_eq!(
        walk(&r, limits(0, 100, 100, true, false)),
        (top.map(String::from).to_vec(), false)
    );
    let mut deeper = top.map(String::from).to_vec();
    deeper.extend(["/.hd/q", "/am/o1/", "/y/.hf"].map(String::from));
    assert_eq!(walk(&r, limits(1, 100, 100, true, false)), (deeper, false));
    let mut pruned = top.map(String::from).to_vec();
    pruned.extend(["/am/o1/", "/y/.hf"].map(String::from));
    assert_eq!(walk(&r, limits(5, 100, 100, true, true)), (pruned, false));
    assert_eq!(
        walk(&r, limits(5, 100, 2, true, false)),
        (vec!["/.hd/".into(), "/am/".into()], true)
    );
    assert_eq!(
        walk(&r, limits(5, 1, 100, true, false)),
        (top.map(String::from).to_vec(), true)
    );

    let (_t_dir, t) = tree();
    assert_eq!(
        walk(&t, limits(10, 100, 100, false, false)).0,
        ["/d/", "/f", "/d/sub/"]
    );
    assert_eq!(
        walk(&t, limits(10, 100, 100, true, false)).0,
        ["/d/", "/dlnk/", "/f", "/d/sub/"]
    );
    assert_eq!(
        walk(&t.join("f"), limits(10, 100, 100, true, false)),
        (vec![], false)
    );
    assert_eq!(
        walk(&t.join("dlnk"), limits(10, 100, 100, false, false)),
        (vec![], false)
    );
    let missing = run(FsOp::Walk {
        path: t.join("dang"),
        limits: limits(1, 1, 1, false, false),
    });
    assert_eq!(code_and_message(missing).0, -32004);
}

#[test]
fn walk_stops_at_the_response_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..50 {
        std::fs::write(dir.path().join(format!("{i:03}")), b"").expect("write");
    }
    let mut l = limits(1, 10, 1000, false, false);
    l.max_response_bytes = 1000;
    let (names, truncated) = walk(dir.path(), l);
    assert!(
        truncated && !names.is_empty() && names.len() < 50,
        "{}",
        names.len()
    );
}

#[test]
fn copy_cases() {
    let (_dir, t) = tree();
    let copy = |s: &str, d: &str, recursive| {
        run(FsOp::Copy {
            source: t.join(s),
            destination: t.join(d),
            recursive,
        })
    };
    let cases = [
        (
            copy("d", "d/sub/x", true),
            (
                -32600,
                "fs/copy cannot copy a directory to itself or one of its descendants",
            ),
        ),
        (
            copy("d", "d", true),
            (
                -32600,
                "fs/copy cannot copy a directory to itself or one of its descendants",
            ),
        ),
        (
            copy("d", "e", false),
            (
                -32600,
                "fs/copy requires recursive: true when sourcePath is a directory",
            ),
        ),
        (
            copy("missing", "e", false),
            (-32004, "No such file or directory (os error 2)"),
        ),
        (
            copy("fifo", "e", false),
            (
                -32600,
                "fs/copy only supports regular files, directories, and symlinks",
            ),
        ),
        (
            copy("f", "d", false),
            (-32603, "Is a directory (os error 21)"),
        ),
    ];
    for (got, (code, message)) in cases {
        assert_eq!(code_and_message(got), (code, message.to_owned()));
    }
    copy("f", "f", false).expect("onto itself");
    assert_eq!(read_bytes(&t.join("f")), b"hi\n");
    copy("dang", "dang2", false).expect("copies the link");
    assert_eq!(
        std::fs::read_link(t.join("dang2")).expect("a link"),
        Path::new("nowhere")
    );
    // Merge into an existing directory; links inside stay links.
    std::fs::create_dir(t.join("m")).expect("mkdir");
    std::fs::write(t.join("m/keep"), b"k").expect("write");
    symlink("../f", t.join("d/up")).expect("symlink");
    copy("d", "m", true).expect("merges");
    assert!(t.join("m/keep").is_file() && t.join("m/sub").is_dir());
    assert_eq!(
        std::fs::read_link(t.join("m/up")).expect("a link"),
        Path::new("../f")
    );
}

#[test]
fn canonicalize_resolves_links() {
    let (_dir, t) = tree();
    let FsResult::Canonicalize(r) = run(FsOp::Canonicalize {
        path: t.join("dlnk/sub"),
    })
    .expect("ok") else {
        panic!()
    };
    let want = std::fs::canonicalize(t.join("d/sub")).expect("exists");
    assert_eq!(r.path.to_host_path().expect("local"), want);
    assert_eq!(
        code_and_message(run(FsOp::Canonicalize {
            path: t.join("dang")
        }))
        .0,
        -32004
    );
    assert_eq!(
        code_and_message(run(FsOp::Canonicalize {
            path: t.join("loop")
        }))
        .0,
        -32603
    );
}

fn open(h: &mut FsHandles, id: &str, path: &Path, mode: OpenMode) -> Result<FsResult, FsError> {
    let handle = FileHandleId::new(id.to_owned()).expect("short id");
    perform(
        FsOp::Open {
            handle,
            path: path.into(),
            mode,
        },
        h,
    )
}

fn read_block(
    h: &mut FsHandles,
    id: &str,
    offset: u64,
    len: usize,
) -> Result<(Vec<u8>, bool), FsError> {
    match perform(
        FsOp::ReadBlock {
            handle: id.into(),
            offset,
            len,
        },
        h,
    )? {
        FsResult::ReadBlock(r) => Ok((r.chunk.0, r.eof)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_mib_round_trip_in_one_mib_blocks() {
    let (_dir, t) = tree();
    let data: Vec<u8> = (0..2 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(t.join("big"), &data).expect("write");
    let mut h = FsHandles::new();
    open(&mut h, "r", &t.join("big"), OpenMode::Read).expect("opens");
    open(&mut h, "w", &t.join("copy"), OpenMode::Replace).expect("opens");
    let mib = 1 << 20;
    // Write the blocks out of order.
    for offset in [mib as u64, 0, 2 * mib as u64] {
        let (chunk, eof) = read_block(&mut h, "r", offset, mib).expect("reads");
        assert_eq!(eof, offset == 2 * mib as u64);
        perform(
            FsOp::WriteBlock {
                handle: "w".into(),
                offset,
                data: chunk,
            },
            &mut h,
        )
        .expect("writes");
    }
    perform(FsOp::Close { handle: "w".into() }, &mut h).expect("closes");
    assert_eq!(std::fs::read(t.join("copy")).expect("read"), data);
}

#[test]
fn handle_table_rules() {
    let (_dir, t) = tree();
    let mut h = FsHandles::new();
    let f = t.join("f");
    open(&mut h, "", &f, OpenMode::Read).expect("empty id accepted");
    assert_eq!(
        code_and_message(open(&mut h, "", &f, OpenMode::Read)),
        (-32600, "file handle `` already exists".into())
    );
    assert_eq!(
        code_and_message(
            read_block(&mut h, "nope", 0, 1).map(|_| FsResult::Empty(Default::default()))
        ),
        (-32004, "unknown file handle `nope`".into())
    );
    let write = perform(
        FsOp::WriteBlock {
            handle: "".into(),
            offset: 0,
            data: b"x".to_vec(),
        },
        &mut h,
    );
    assert_eq!(
        code_and_message(write),
        (-32603, "Bad file descriptor (os error 9)".into())
    );
    open(&mut h, "w", &t.join("new"), OpenMode::Replace).expect("creates");
    let read = read_block(&mut h, "w", 0, 1).map(|_| FsResult::Empty(Default::default()));
    assert_eq!(
        code_and_message(read),
        (-32603, "Bad file descriptor (os error 9)".into()),
        "root cannot read a write-only fd"
    );
    assert_eq!(
        read_block(&mut h, "", 1, 100).expect("reads"),
        (b"i\n".to_vec(), true)
    );
    assert_eq!(
        read_block(&mut h, "", 100, 100).expect("past the end"),
        (vec![], true)
    );
    // The handle keeps the opened file when the path is replaced.
    std::fs::remove_file(&f).expect("rm");
    std::fs::write(&f, b"other").expect("write");
    assert_eq!(read_block(&mut h, "", 0, 3).expect("reads").0, b"hi\n");
    for (p, mode) in [("d", OpenMode::Read), ("d", OpenMode::Replace)] {
        assert_eq!(
            code_and_message(open(&mut h, "x", &t.join(p), mode)).1,
            format!("path `{}` is not a file", t.join(p).display())
        );
    }
    assert_eq!(
        code_and_message(open(&mut h, "x", &t.join("nodir/x"), OpenMode::Replace)).0,
        -32004
    );
    perform(
        FsOp::Close {
            handle: "zz".into(),
        },
        &mut h,
    )
    .expect("close is idempotent");
    for i in h.len()..MAX_HANDLES {
        open(&mut h, &format!("h{i}"), &t.join("lnk"), OpenMode::Read).expect("within the limit");
    }
    assert_eq!(
        code_and_message(open(&mut h, "one-more", &t.join("lnk"), OpenMode::Read)),
        (
            -32600,
            "at most 128 file handles may be open per connection".into()
        )
    );
}

#[test]
fn fifo_is_refused_without_blocking() {
    let (dir, t) = tree();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut h = FsHandles::new();
        let read = open(&mut h, "f", &t.join("fifo"), OpenMode::Read).map(|_| ());
        let replace = open(&mut h, "g", &t.join("fifo"), OpenMode::Replace).map(|_| ());
        let read_file = read_file_result(&t.join("fifo"));
        let _ = tx.send((read, replace, read_file));
    });
    let (read, replace, read_file) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("did not block");
    for r in [read, replace, read_file] {
        assert_eq!(
            r.expect_err("refused").message,
            format!("path `{}` is not a file", dir.path().join("fifo").display())
        );
    }
}

fn read_file_result(p: &Path) -> Result<(), FsError> {
    read(p, true).map(|_| ())
}
