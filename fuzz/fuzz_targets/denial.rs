//! `denial`: see `execd_core::fuzzing::denial`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| execd_core::fuzzing::denial(data));
