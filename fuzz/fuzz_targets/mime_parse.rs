//! MIME parsing and 7-bit re-encoding, as done to every message before signing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smimegate::mime;

fuzz_target!(|data: &[u8]| {
    let limits = mime::Limits::default();
    if let Ok(message) = mime::split_message(&mime::to_crlf(data)) {
        let _ = mime::make_seven_bit_safe(message, &limits);
    }
    let _ = mime::split_raw(data);
});
