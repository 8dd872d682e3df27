//! `server_ops`: see `execd_core::fuzzing::server_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| execd_core::fuzzing::server_ops(data));
