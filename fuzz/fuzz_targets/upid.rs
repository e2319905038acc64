//! UPID parsing and printing.
//! The invariants live in `felhom_agent::fuzzing::upid` (shared with tests/hostile_input.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| felhom_agent::fuzzing::upid(data));
