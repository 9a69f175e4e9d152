//! The nested-layer opener on untrusted messages: layer detection, verification of
//! each signed layer, and the walk into decrypted content, bounded by the layer limit.
//! The token is replaced by a fake that "decrypts" by taking the CMS as the inner
//! entity, so the fuzzer can reach any nesting; the real content decryption has its
//! own target (decrypt_content).
#![no_main]
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use smimegate::hsm::KeyId;
use smimegate::mime::Limits;
use smimegate::pki::trust::TrustAnchors;
use smimegate::smime::decrypt::{self, DecryptError, Decrypted};
use smimegate::smime::layers::{Opener, Unwrapper};
use smimegate::smime::verify::{FromField, VerifyContext};

struct FakeToken;

impl Unwrapper for FakeToken {
    fn decrypt(&self, cms_der: Vec<u8>, _limits: &Limits) -> Result<Decrypted, DecryptError> {
        decrypt::recipients(&cms_der)?;
        Ok(Decrypted {
            entity: cms_der,
            content_algorithm: "fake",
            key_transport: "fake",
            key: KeyId::new(vec![1]),
            weak: false,
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let trust = TrustAnchors::default();
    let opener = Opener {
        keys: &FakeToken,
        verify: VerifyContext {
            trust: &trust,
            crls: &[],
            revocation: None,
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_600),
            limits: &Limits::default(),
        },
        decrypt: true,
        max_layers: 8,
    };
    let _ = opener.open(data, &FromField::of_message(data));
});
