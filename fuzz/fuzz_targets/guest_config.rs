//! Guest config property strings (netN, agent, smbios1).
//! The invariants live in `felhom_agent::fuzzing::guest_config` (shared with tests/hostile_input.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| felhom_agent::fuzzing::guest_config(data));
