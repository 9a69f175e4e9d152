//! Everything decryption does before the token is asked: MIME, base64, BER, CMS,
//! RecipientInfos.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smimegate::mime::Limits;
use smimegate::smime::decrypt;

fuzz_target!(|data: &[u8]| {
    if let Ok(der) = decrypt::cms_from_message(data, &Limits::default()) {
        let _ = decrypt::recipients(&der);
    }
});
