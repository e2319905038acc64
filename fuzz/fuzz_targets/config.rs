//! The TOML configuration loader: arbitrary file bytes (UTF-8 or not).
//! The invariants live in `felhom_agent::fuzzing::config` (shared with tests/hostile_input.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| felhom_agent::fuzzing::config(data));
