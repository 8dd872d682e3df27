//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the target bodies, so
//! CI exercises every seed and every saved finding on stable without cargo-fuzz. One test per
//! target (they run in parallel), each spreading its files over the available cores.

use std::path::{Path, PathBuf};

use execd_core::fuzzing;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        for part in files.chunks(chunk) {
            s.spawn(move || {
                for file in part {
                    let data = std::fs::read(file).expect("readable");
                    // On a finding the panic message names the step; this names the file.
                    eprintln!("{target}: {}", file.display());
                    assert!(fuzzing::run(target, &data));
                }
            });
        }
    });
    eprintln!("{target}: replayed {} inputs", files.len());
}

#[test]
fn every_target_has_a_corpus_and_a_replay() {
    let replayed = ["frame", "server_ops", "client_ops", "path_uri", "denial"];
    assert_eq!(fuzzing::TARGETS, replayed);
    for target in fuzzing::TARGETS {
        assert!(!corpus(target).is_empty(), "no corpus for {target}");
    }
}

#[test]
fn frame_corpus_passes() {
    replay("frame");
}

#[test]
fn server_ops_corpus_passes() {
    replay("server_ops");
}

#[test]
fn client_ops_corpus_passes() {
    replay("client_ops");
}

#[test]
fn path_uri_corpus_passes() {
    replay("path_uri");
}

#[test]
fn denial_corpus_passes() {
    replay("denial");
}
