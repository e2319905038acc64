//! vzdump task-log scanning (consistency point, progress) and the poll planner fed with it.
//! The invariants live in `felhom_agent::fuzzing::tasklog` (shared with tests/hostile_input.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| felhom_agent::fuzzing::tasklog(data));
