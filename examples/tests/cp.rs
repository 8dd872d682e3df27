//! `execd cp` end to end: the real binary against `execd serve` (`--url`) and a local stdio
//! server, on real temporary directories. Every wait is bounded.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::{output_within, serve_with, EXECD};

const TIMEOUT: Duration = Duration::from_secs(60);

fn cp(url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(EXECD);
    cmd.arg("cp");
    if let Some(url) = url {
        cmd.args(["--url", url]);
    }
    cmd.args(args);
    output_within(cmd, TIMEOUT)
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "execd cp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stderr of a failed copy (exit code 1).
fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 3 MiB and a bit of every byte value: several 1 MiB blocks and a short last one.
fn binary() -> Vec<u8> {
    (0..3 * (1 << 20) + 4099)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_binary_file_goes_both_ways_byte_exact_with_its_executable_bit() {
    let (_server, url) = serve_with(
        {
            let mut c = Command::new(EXECD);
            c.arg("serve");
            c
        },
        TIMEOUT,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = binary();
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).expect("write");
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let up = dir.path().join("up.bin");
    ok(&cp(Some(&url), &[s(&src), &format!(":{}", s(&up))]));
    assert!(
        std::fs::read(&up).expect("uploaded") == data,
        "upload differs"
    );
    assert_ne!(
        std::fs::metadata(&up).expect("stat").permissions().mode() & 0o111,
        0,
        "executable bit kept on upload"
    );
    // Download into an existing directory: it lands under the source's name.
    let into = dir.path().join("into");
    std::fs::create_dir(&into).expect("mkdir");
    ok(&cp(Some(&url), &[&format!(":{}", s(&up)), s(&into)]));
    let down = into.join("up.bin");
    assert!(
        std::fs::read(&down).expect("downloaded") == data,
        "download differs"
    );
    assert_ne!(
        std::fs::metadata(&down).expect("stat").permissions().mode() & 0o111,
        0,
        "executable bit kept on download"
    );
    // A plain file stays plain; an empty file copies.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    let empty_up = dir.path().join("empty.up");
    ok(&cp(Some(&url), &[s(&empty), &format!(":{}", s(&empty_up))]));
    let meta = std::fs::metadata(&empty_up).expect("stat");
    assert_eq!((meta.len(), meta.permissions().mode() & 0o111), (0, 0));
}

#[test]
fn a_directory_tree_goes_both_ways_through_a_local_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("a/b/c")).expect("mkdir");
    std::fs::create_dir_all(tree.join("empty-dir")).expect("mkdir");
    std::fs::write(tree.join("top.txt"), b"top\n").expect("write");
    std::fs::write(tree.join("a/b/c/deep.bin"), binary()).expect("write");
    std::fs::write(tree.join("a/run.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(
        tree.join("a/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    let up = dir.path().join("up");
    ok(&cp(None, &["-r", s(&tree), &format!(":{}", s(&up))]));
    let back = dir.path().join("back");
    ok(&cp(None, &["-r", &format!(":{}", s(&up)), s(&back)]));
    for copy in [&up, &back] {
        let diff = output_within(
            {
                let mut c = Command::new("diff");
                c.args(["-r", s(&tree), s(copy)]);
                c
            },
            TIMEOUT,
        );
        assert!(
            diff.status.success(),
            "{}",
            String::from_utf8_lossy(&diff.stdout)
        );
        assert!(copy.join("empty-dir").is_dir());
        let mode = std::fs::metadata(copy.join("a/run.sh"))
            .expect("stat")
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0, "{}: run.sh executable", copy.display());
        let mode = std::fs::metadata(copy.join("top.txt"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0, "top.txt stays plain");
    }
}

#[test]
fn errors_are_clear_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
    let missing = dir.path().join("missing");
    let err = failed(&cp(
        None,
        &[s(&missing), &format!(":{}", s(&dir.path().join("x")))],
    ));
    assert!(
        err.contains("cannot stat") && err.contains("No such file or directory"),
        "{err}"
    );
    let err = failed(&cp(
        None,
        &[&format!(":{}", s(&missing)), s(&dir.path().join("x"))],
    ));
    assert!(
        err.contains("No such file or directory (os error 2)"),
        "{err}"
    );
    let err = failed(&cp(
        None,
        &[s(&tree), &format!(":{}", s(&dir.path().join("y")))],
    ));
    assert!(err.contains("is a directory (use -r)"), "{err}");
    let err = failed(&cp(
        None,
        &["-r", s(&tree), &format!(":{}", s(&tree.join("sub")))],
    ));
    assert!(err.contains("into itself"), "{err}");
    assert!(!tree.join("sub/tree").exists(), "nothing copied");
    let err = failed(&cp(None, &["a", "b"]));
    assert!(err.contains("exactly one of SOURCE and DEST"), "{err}");
    let err = failed(&cp(Some("ws://127.0.0.1:1"), &[s(&tree), ":/tmp/never"]));
    assert!(err.contains("cannot connect"), "{err}");
}
