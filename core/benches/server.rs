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
use std::time::Instant;

use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;
use execd_core::protocol::Stream;
use execd_core::{Command, ConnId, Output, ProcessEvent, ProcessKey, Server, ServerConfig};

fn main() {
    // MiB/s, as in docs/BENCHMARKS.md.
    divan::Divan::from_args()
        .bytes_format(divan::counter::BytesFormat::Binary)
        .main();
}

/// A server with one ready session (`conn`) and one running process `p` (`key`).
struct Fixture {
    server: Server,
    conn: ConnId,
    key: ProcessKey,
    now: Instant,
}

impl Fixture {
    fn new() -> Fixture {
        let mut server = Server::new(ServerConfig::default(), [7; 32]);
        let now = Instant::now();
        let conn = server.handle_connect(now);
        let setup: [&[u8]; 3] = [
            br#"{"id":1,"method":"initialize","params":{"clientName":"bench"}}"#,
            br#"{"method":"initialized","params":{}}"#,
            br#"{"id":2,"method":"process/start","params":{"processId":"p","argv":["cat"],"cwd":"file:///tmp","pipeStdin":true}}"#,
        ];
        let mut key = None;
        for frame in setup {
            server
                .handle_message(now, conn, frame)
                .expect("the connection is open");
            while let Some(out) = server.poll_output() {
                if let Output::Command(Command::Spawn { key: k, .. }) = out {
                    key = Some(k);
                }
            }
        }
        let key = key.expect("process/start asks for a spawn");
        server.handle_process(now, key, ProcessEvent::Spawned { pid: 4242 });
        let mut fixture = Fixture {
            server,
            conn,
            key,
            now,
        };
        assert_eq!(fixture.drain(), 1, "the start response");
        fixture
    }

    /// Drains every output, as a runtime would hand them on; returns how many there were.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Some(out) = self.server.poll_output() {
            black_box(out);
            n += 1;
        }
        n
    }

    fn message(&mut self, frame: &[u8]) {
        self.server
            .handle_message(self.now, self.conn, frame)
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
                let (now, key) = (f.now, f.key);
                f.server.handle_process(
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
