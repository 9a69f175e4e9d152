//! The SMTP server: a whole session driven by the fuzzer's bytes as the client stream
//! (command parser, per-command handlers, SASL exchanges, DATA reader), with small
//! limits and a handler that accepts everything.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| smimegate::smtp::server::fuzzing::session(data));
