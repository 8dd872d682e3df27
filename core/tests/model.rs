//! The `server_ops` model test (the body of the fuzz target of the same name) under proptest:
//! operation sequences against `Server`, checked after every step against the reference model
//! in `execd_core::fuzzing`. Plus the other target bodies on random input.

use execd_core::fuzzing::{self, ServerOps};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    /// Random bytes decoded into an operation sequence by `arbitrary`, exactly as the fuzzer
    /// does.
    #[test]
    fn server_matches_the_model_from_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzzing::server_ops(&data);
    }

    /// The same after a prologue that opens a session with three running processes, so that
    /// random operations hit live processes.
    #[test]
    fn server_matches_the_model_after_prologue(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut ops = ServerOps::from_bytes(&data);
        let mut all = fuzzing::prologue();
        all.append(&mut ops.ops);
        ops.ops = all;
        fuzzing::check_server_ops(&ops);
    }

    #[test]
    fn frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::frame(&data);
    }

    #[test]
    fn path_uris_round_trip(
        text in "(file:|FILE:|http:)?(//(localhost|srv)?)?(/|[a-z]|%[0-9A-Fa-f]{0,2}|[ ?#é])*"
    ) {
        fuzzing::path_uri(text.as_bytes());
    }

    #[test]
    fn denial_ignores_chunking(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::denial(&data);
    }
}

/// The prologue alone reaches the states the random tail builds on.
#[test]
fn prologue_spawns_three_processes() {
    let ops = ServerOps {
        config: ServerOps::from_bytes(&[0; 64]).config,
        ops: fuzzing::prologue(),
    };
    let stats = fuzzing::check_server_ops(&ops);
    assert_eq!(stats.commands, 3, "{stats:?}");
    assert_eq!(stats.responses, 4, "{stats:?}");
}
