//! Fuzzes the mesh's `Wire` decoder (every frame a member sends on its lane): it must
//! never panic, and a decoded frame must round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_net::mesh::fuzzing::wire_frame(data));
