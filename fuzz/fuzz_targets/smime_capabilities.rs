//! A partner's SMIMECapabilities (DER from a signed attribute), as parsed when
//! harvested and when choosing the cipher and key transport to encrypt with.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smimegate::smime::capabilities::{Capabilities, choose_cipher, choose_transport};

fuzz_target!(|data: &[u8]| {
    let caps = Capabilities::parse(data);
    let _ = choose_transport(caps.as_ref());
    let _ = choose_cipher(&[caps, None]);
});
