//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the target bodies, so
//! CI exercises every seed and every saved finding on stable without cargo-fuzz.

use std::path::Path;

use execd_core::fuzzing;

#[test]
fn committed_corpus_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for target in fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {target}");
        for file in files {
            let data = std::fs::read(&file).expect("readable");
            eprintln!("{target}: {}", file.display());
            assert!(fuzzing::run(target, &data));
            total += 1;
        }
    }
    eprintln!("replayed {total} inputs");
}
