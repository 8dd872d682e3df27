//! `frame`: see `execd_core::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| execd_core::fuzzing::frame(data));
