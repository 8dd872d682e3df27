//! `path_uri`: see `execd_core::fuzzing::path_uri`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| execd_core::fuzzing::path_uri(data));
