//! Signature verification of untrusted messages, with a real trust anchor (the seed
//! corpus is signed under it), scoped anchors and the From field read from the
//! message, so every check runs: structure, every SignerInfo, signed attributes,
//! signature, chain, key usage, address binding, encryption key preference.
#![no_main]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use der::DecodePem;
use libfuzzer_sys::fuzz_target;
use smimegate::mime::Limits;
use smimegate::pki::trust::{DomainPattern, Scope, TrustAnchor, TrustAnchors};
use smimegate::smime::verify::{self, FromField, VerifyContext};

fn trust() -> &'static TrustAnchors {
    static TRUST: OnceLock<TrustAnchors> = OnceLock::new();
    TRUST.get_or_init(|| {
        let ca = x509_cert::Certificate::from_pem(include_bytes!("../fixtures/partner-ca.pem"))
            .expect("fixture CA");
        TrustAnchors {
            anchors: vec![
                TrustAnchor {
                    certificate: ca.clone(),
                    scope: Scope::Domains(vec![
                        DomainPattern::parse("partner.example").expect("pattern"),
                    ]),
                },
                TrustAnchor {
                    certificate: ca,
                    scope: Scope::AnyForeign,
                },
            ],
            managed: vec!["corp.example".into()],
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // Inside the fixture certificates' validity, whenever the fuzzer runs.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_600);
    let context = VerifyContext {
        trust: trust(),
        crls: &[],
        revocation: None,
        now,
        limits: &Limits::default(),
    };
    let v = verify::verify(data, &FromField::of_message(data), &context);
    let _ = v.signer_summary();
    let _ = verify::claims_signed(data);
});
