//! The retention planner on arbitrary item lists, policies and time zones.
//! The invariants live in `felhom_agent::fuzzing::retention` (shared with tests/hostile_input.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| felhom_agent::fuzzing::retention(data));
