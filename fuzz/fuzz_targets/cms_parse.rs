//! BER to DER conversion and CMS ContentInfo parsing of untrusted bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smimegate::smime::{ber, decrypt};

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = ber::to_der(data, 64) {
        let _ = decrypt::recipients(&der);
    }
    let _ = decrypt::recipients(data);
});
