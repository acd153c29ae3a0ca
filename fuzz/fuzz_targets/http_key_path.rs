//! Fuzz target `http_key_path`: see `fuzz/src/lib.rs` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringkv_fuzz::http_key_path(data));
