//! Micro-benchmarks of the sans-IO server: frames per second through the core alone, with no
//! socket, process or runtime around it.
//!
//! - `inbound`: one small `process/read` or `process/write` request frame (and one
//!   `process/write` of 64 KiB) through [`Server::handle_message`], then
//!   [`Server::poll_output`] drained (the response, and for a write the `WriteStdin` command),
//!   on a session with one running process.
//! - `outbound`: one [`ProcessEvent::Output`] chunk of 8 KiB or 64 KiB through
//!   [`Server::handle_process`], then the `process/output` notification drained.
//!
//! Each benchmark counts items (frames/s) and bytes (inbound: frame bytes; outbound: chunk
//! payload bytes). Run with `cargo bench -p execd-core --bench server`; see
//! `docs/BENCHMARKS.md`.

use std::hint::black_box;

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use execd_core::protocol::Stream;
use execd_core::sim::Sim;
use execd_core::{Command, ConnId, ProcessEvent, ProcessKey};

fn main() {
    // MiB/s, as in docs/BENCHMARKS.md.
    divan::Divan::from_args()
        .bytes_format(divan::counter::BytesFormat::Binary)
        .main();
}

/// The core's simulation harness with one raw connection (`conn`) holding a ready session
/// and one running process `p` (`key`). Commands are neither recorded nor answered, so the
/// loop measures the server alone.
struct Fixture {
    sim: Sim,
    conn: ConnId,
    key: ProcessKey,
}

impl Fixture {
    fn new() -> Fixture {
        let mut sim = Sim::new();
        sim.answer_commands = false;
        let conn = sim.connect_raw();
        let setup: [&[u8]; 3] = [
            br#"{"id":1,"method":"initialize","params":{"clientName":"bench"}}"#,
            br#"{"method":"initialized","params":{}}"#,
            br#"{"id":2,"method":"process/start","params":{"processId":"p","argv":["cat"],"cwd":"file:///tmp","pipeStdin":true}}"#,
        ];
        for frame in setup {
            sim.send_raw(conn, frame);
        }
        let key = sim
            .take_commands()
            .into_iter()
            .find_map(|c| match c {
                Command::Spawn { key, .. } => Some(key),
                _ => None,
            })
            .expect("process/start asks for a spawn");
        sim.record_commands = false;
        sim.frames.clear();
        let now = sim.now;
        sim.server
            .handle_process(now, key, ProcessEvent::Spawned { pid: 4242 });
        let mut fixture = Fixture { sim, conn, key };
        assert_eq!(fixture.drain(), 1, "the start response");
        fixture
    }

    /// Drains every output, as a runtime would hand them on; returns how many there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(out) = self.sim.server.poll_output() {
            black_box(out);
            n += 1;
        }
        n
    }

    fn message(&mut self, frame: &[u8]) {
        let now = self.sim.now;
        self.sim
            .server
            .handle_message(now, self.conn, frame)
            .expect("the connection is open");
        self.drain();
    }
}

mod inbound {
    use super::*;

    /// `process/read` without a wait on a process with nothing retained: the smallest request
    /// that does a lookup and answers with a full result object.
    #[divan::bench(sample_count = 200, sample_size = 1000)]
    fn read(bencher: Bencher) {
        let mut f = Fixture::new();
        let mut id = 0u64;
        bencher
            .with_inputs(|| {
                id += 1;
                format!(r#"{{"id":{id},"method":"process/read","params":{{"processId":"p","afterSeq":0}}}}"#)
            })
            .counter(ItemsCount::new(1usize))
            .input_counter(BytesCount::of_str)
            .bench_local_values(|frame| f.message(frame.as_bytes()));
    }

    /// `process/write` of 5 bytes with a fresh `writeId` each time (so it is remembered and
    /// queued, not deduplicated).
    #[divan::bench(sample_count = 200, sample_size = 1000)]
    fn write(bencher: Bencher) {
        let mut f = Fixture::new();
        let mut id = 0u64;
        bencher
            .with_inputs(|| {
                id += 1;
                format!(r#"{{"id":{id},"method":"process/write","params":{{"processId":"p","chunk":"cGluZwo=","writeId":"w-{id}"}}}}"#)
            })
            .counter(ItemsCount::new(1usize))
            .input_counter(BytesCount::of_str)
            .bench_local_values(|frame| f.message(frame.as_bytes()));
    }

    /// `process/write` of a 64 KiB chunk (87 KiB of base64): the per-byte cost of decoding
    /// stdin data.
    #[divan::bench(sample_count = 200, sample_size = 100)]
    fn write_64k(bencher: Bencher) {
        let mut f = Fixture::new();
        let chunk = base64_chunk(64 * 1024);
        let mut id = 0u64;
        bencher
            .with_inputs(|| {
                id += 1;
                format!(r#"{{"id":{id},"method":"process/write","params":{{"processId":"p","chunk":"{chunk}","writeId":"w-{id}"}}}}"#)
            })
            .counter(ItemsCount::new(1usize))
            .input_counter(BytesCount::of_str)
            .bench_local_values(|frame| f.message(frame.as_bytes()));
    }

    /// Standard base64 of `len` bytes of a repeating pattern.
    fn base64_chunk(len: usize) -> String {
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        base64_simd::STANDARD.encode_to_string(&bytes)
    }
}

mod outbound {
    use super::*;

    /// One stdout chunk of `len` bytes in, one `process/output` notification out (retained in
    /// the 1 MiB ring, evicting the oldest).
    #[divan::bench(args = [8 * 1024, 64 * 1024], sample_count = 200, sample_size = 100)]
    fn output(bencher: Bencher, len: usize) {
        let mut f = Fixture::new();
        let template: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        bencher
            .with_inputs(|| template.clone())
            .counter(ItemsCount::new(1usize))
            .input_counter(BytesCount::of_slice)
            .bench_local_values(|bytes| {
                let (now, key) = (f.sim.now, f.key);
                f.sim.server.handle_process(
                    now,
                    key,
                    ProcessEvent::Output {
                        stream: Stream::Stdout,
                        bytes,
                    },
                );
                f.drain();
            });
    }
}
