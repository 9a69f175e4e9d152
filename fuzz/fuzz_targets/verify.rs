//! Signature verification of untrusted messages (no trust anchors: every path up to
//! the chain check runs).
#![no_main]
use libfuzzer_sys::fuzz_target;
use smimegate::mime::Limits;
use smimegate::smime::verify;

fuzz_target!(|data: &[u8]| {
    let _ = verify::verify(data, Some("a@b.example"), &[], std::time::SystemTime::now(), &Limits::default());
});
