//! The broker's frame handling, without sockets: any lines from two clients taking turns (an
//! unknown program and dhcp-takeover) never panic, and nothing of another agent's is ever kept
//! (`fieldnet::bus::broker::fuzz_lines` checks it after every line).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fieldnet::bus::broker::fuzz_lines(data);
});
