//! `client_ops`: see `execd_core::fuzzing::client_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| execd_core::fuzzing::client_ops(data));
