//! Every API response decoder and the error-response classifier, on one arbitrary body.
//! The invariants live in `felhom_agent::fuzzing::api_decode` (shared with tests/hostile_input.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| felhom_agent::fuzzing::api_decode(data));
