//! The `client_ops` target body (the core `Client` against a real in-memory `Server` over a
//! simulated network and clock, checked after every step) under proptest, the generator of
//! its seed corpus, and a replay helper for findings.

use std::path::Path;

use execd_core::fuzzing::{self, ClientConfigChoice, ClientOp, ClientOps, ClientStats};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    /// Random bytes decoded into an operation sequence by `arbitrary`, exactly as the fuzzer
    /// does.
    #[test]
    fn client_delivers_what_the_server_published(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::client_ops(&data);
    }

    /// The same after a prologue that opens a session with three running processes (piped
    /// stdin, PTY, no stdin), so that random operations hit live processes.
    #[test]
    fn client_delivers_what_the_server_published_after_prologue(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut ops = ClientOps::from_bytes(&data);
        let mut all = prologue();
        all.append(&mut ops.ops);
        ops.ops = all;
        fuzzing::check_client_ops(&ops);
    }

    /// Lossless output (PROTOCOL.md §5.11) with a retention of at most 64 bytes / 8 chunks:
    /// the server holds children at the window instead of evicting, and no gap ever reaches
    /// the client.
    #[test]
    fn lossless_client_never_sees_a_gap(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let ops = lossless(&data);
        let stats = fuzzing::check_client_ops(&ops);
        prop_assert!(stats.tainted || stats.gaps == 0, "{stats:?}");
    }
}

/// `data` decoded as operations, after the prologue, with lossless output and a small
/// retention.
fn lossless(data: &[u8]) -> ClientOps {
    let mut ops = ClientOps::from_bytes(data);
    ops.config.flags |= 64;
    ops.config.retained_bytes |= 128;
    ops.config.retained_chunks |= 128;
    let mut all = prologue();
    all.append(&mut ops.ops);
    ops.ops = all;
    ops
}

/// The lossless runs do reach the window: over a fixed set of inputs, children are held and
/// writes blocked, and output still flows.
#[test]
fn lossless_runs_hold_children_at_the_window() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let (mut holds, mut blocked, mut outputs) = (0, 0, 0);
    for _ in 0..64 {
        let data: Vec<u8> = (0..2048)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let stats = fuzzing::check_client_ops(&lossless(&data));
        assert!(stats.tainted || stats.gaps == 0, "{stats:?}");
        holds += stats.holds;
        blocked += stats.blocked_writes;
        outputs += stats.outputs;
    }
    assert!(
        holds > 0 && blocked > 0 && outputs > 0,
        "{holds} {blocked} {outputs}"
    );
}

/// Connect, start three processes, answer their spawns, deliver everything.
fn prologue() -> Vec<ClientOp> {
    let start = |pid, tty, pipe_stdin| ClientOp::Start {
        pid,
        tty,
        pipe_stdin,
    };
    let spawned = ClientOp::SpawnResult {
        which: 0,
        fail: false,
    };
    vec![
        ClientOp::Reconnect { ok: true },
        ClientOp::Settle,
        start(0, false, true),
        start(1, true, true),
        start(2, false, false),
        ClientOp::Settle,
        spawned.clone(),
        spawned.clone(),
        spawned,
        ClientOp::Settle,
    ]
}

#[test]
fn prologue_starts_three_tracked_processes() {
    for flags in [0, 0b100, 0b10_1000] {
        let ops = ClientOps {
            config: ClientConfigChoice {
                flags,
                ..ClientConfigChoice::default()
            },
            ops: prologue(),
        };
        let stats = fuzzing::check_client_ops(&ops);
        // Three start answers; the final heal finishes the children: three closes.
        assert_eq!(stats.responses, 3, "{flags:#b}: {stats:?}");
        assert_eq!(stats.closes, 3, "{flags:#b}: {stats:?}");
        assert_eq!(stats.session_lost, None, "{flags:#b}: {stats:?}");
    }
}

/// Replays the inputs named in `CLIENT_OPS_REPLAY` (comma-separated paths) with the step
/// log printed: `CLIENT_OPS_REPLAY=crash-… cargo test -p execd-core --test client_ops replay
/// -- --nocapture`; with `CLIENT_OPS_PROLOGUE=1`, after the prologue (for inputs of the
/// prologue proptest).
#[test]
fn replay() {
    let Ok(list) = std::env::var("CLIENT_OPS_REPLAY") else {
        return;
    };
    let with_prologue = std::env::var_os("CLIENT_OPS_PROLOGUE").is_some();
    for f in list.split(',') {
        let data = std::fs::read(f).expect("readable");
        let mut ops = ClientOps::from_bytes(&data);
        if with_prologue {
            ops.ops.splice(0..0, prologue());
        }
        let (result, log) = fuzzing::trace_ops(&ops);
        for line in log {
            eprintln!("{line}");
        }
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

/// Writes the seed corpus of `client_ops` (`fuzz/corpus/client_ops/seed-*`): for each kind of
/// session below, the shortest of a deterministic stream of random inputs that has it. Run with
/// `cargo test -p execd-core --test client_ops -- --ignored generate_seed_corpus`.
#[test]
#[ignore = "writes fuzz/corpus/client_ops"]
fn generate_seed_corpus() {
    type Want = fn(&ClientStats) -> bool;
    let kinds: &[(&str, Want)] = &[
        ("clean-outputs", |s| {
            !s.tainted && s.session_lost.is_none() && s.outputs >= 8 && s.closes >= 3
        }),
        ("clean-resume", |s| {
            !s.tainted && s.session_lost.is_none() && s.resumes >= 2 && s.outputs >= 4
        }),
        ("clean-writes-resumed", |s| {
            !s.tainted && s.session_lost.is_none() && s.resumes >= 1 && s.writes_reached >= 4
        }),
        ("attached-race", |s| {
            !s.tainted && s.session_lost.is_none() && s.attached_races >= 2
        }),
        ("gap", |s| !s.tainted && s.gaps >= 1),
        ("gaps-resumed", |s| {
            !s.tainted && s.gaps >= 2 && s.resumes >= 1
        }),
        ("process-lost", |s| !s.tainted && s.lost >= 1),
        ("window-exhausted", |s| {
            s.session_lost == Some("window exhausted") && s.outputs >= 2
        }),
        ("session-expired", |s| s.session_lost == Some("rejected")),
        ("recovery-off", |s| {
            s.session_lost == Some("disconnected") && s.outputs >= 3
        }),
        ("hostile", |s| s.tainted && s.resumes >= 1 && s.outputs >= 3),
        ("long-clean", |s| {
            !s.tainted && s.session_lost.is_none() && s.steps >= 300 && s.resumes >= 3
        }),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/client_ops");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    let mut best: Vec<Option<Vec<u8>>> = vec![None; kinds.len()];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..8_000 {
        let len = 256 + (round % 8) * 384;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) as u8
            })
            .collect();
        let stats = fuzzing::check_client_ops(&ClientOps::from_bytes(&data));
        for (i, (_, want)) in kinds.iter().enumerate() {
            if want(&stats) && best[i].as_ref().is_none_or(|b| data.len() < b.len()) {
                best[i] = Some(data.clone());
            }
        }
    }
    for ((name, _), data) in kinds.iter().zip(best) {
        let data = data.unwrap_or_else(|| panic!("no input for {name}"));
        std::fs::write(dir.join(format!("seed-{name}")), data).expect("written");
    }
}
