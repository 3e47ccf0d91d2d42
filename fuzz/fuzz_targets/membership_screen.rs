//! Fuzzes the membership screen and foca behind it with arbitrary SWIM packets from a
//! member: no panic, no third party's `Down` or identity replacement passes, incarnation
//! jumps stay capped, and foca takes what passed without panicking.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_net::mesh::fuzzing::swim_packet(data));
