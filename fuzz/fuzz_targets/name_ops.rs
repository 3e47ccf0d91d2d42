//! Fuzzes the cluster name table with arbitrary gossiped `NameOp`s: no panic, no op
//! takes hold of a local pid, and the table's bounds (name length, names per node) hold.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_net::mesh::fuzzing::name_ops(data));
