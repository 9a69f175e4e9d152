//! What the S/MIME engine holds at once for one large message, per mode (issue 12
//! item 2): a counting global allocator measures the peak each step adds beyond its
//! input, deterministically (no timing). The token is SoftHSM2 through PKCS#11; its own
//! (C++) allocations are not counted, and are small. This binary has one test
//! function, so no other test thread allocates while it measures. The gateway's RSS
//! for the same modes is printed by `BENCH_ONLY=big scripts/bench-relay`.

#[path = "common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use smimegate::hsm::{KeyAlgorithm, KeyRole};
use smimegate::mime::Limits;
use smimegate::pki::address::Address;
use smimegate::pki::ca::{self, CaIdentity};
use smimegate::smime::decrypt::{self, RecipientId};
use smimegate::smime::encrypt::{self, ContentCipher, KeyTransportChoice, Recipient};
use smimegate::smime::{SignerIdentity, sign_detached};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if old and new block existed at once (what a copy costs); a
        // large block's realloc is an mremap in glibc, so this overstates it.
        grew(new_size);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the most memory it held at once beyond what
/// was allocated before (its result included).
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let result = f();
    (result, PEAK.load(Ordering::SeqCst) - base)
}

const MIB: usize = 1024 * 1024;

/// One line per measurement (`--no-capture` shows them): peak ÷ message size.
fn report(what: &str, peak: usize, size: usize) -> f64 {
    let ratio = peak as f64 / size as f64;
    eprintln!(
        "{what:<34} message {:>5.1} MiB  peak added {:>6.2} MiB  peak/message {ratio:.3}",
        size as f64 / MIB as f64,
        peak as f64 / MIB as f64,
    );
    ratio
}

/// A multipart message of `size` bytes: a text part and a base64 attachment.
fn big_message(size: usize) -> Vec<u8> {
    let mut m = b"From: rsa2048@corp.example\r\nTo: bob@partner.example\r\nSubject: big\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nThe report.\r\n\
--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    while m.len() + line.len() + 8 < size {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b"--b1--\r\n");
    m
}

#[test]
fn the_engine_holds_a_large_message_about_once_per_step() {
    let hsm = &common::token().hsm;
    let ca_key = hsm
        .generate_key_pair(
            KeyAlgorithm::P256,
            KeyRole::CertificateAuthority,
            "memory CA",
        )
        .expect("CA key");
    let ca_cert = ca::create_ca_certificate(hsm, &ca_key, "CN=Memory Test CA", 30).expect("CA");
    let ca = CaIdentity {
        key_id: ca_key.id,
        algorithm: ca_key.algorithm,
        certificate: ca_cert.clone(),
    };
    let key = hsm
        .generate_key_pair(KeyAlgorithm::Rsa2048, KeyRole::Mailbox, "memory")
        .expect("key");
    let address = Address::parse("rsa2048@corp.example").expect("address");
    let cert = ca::issue_mailbox_certificate(hsm, &ca, &address, &key, 365, "http://crl/ca.crl")
        .expect("certificate");
    let signer = SignerIdentity {
        key_id: key.id.clone(),
        key_algorithm: KeyAlgorithm::Rsa2048,
        scheme: ca::default_scheme(KeyAlgorithm::Rsa2048),
        certificate: cert.clone(),
        chain: vec![ca_cert],
    };
    let recipients = [Recipient {
        certificate: cert.clone(),
        transport: KeyTransportChoice::RsaPkcs1v15,
    }];
    let held: Vec<(RecipientId, _)> = RecipientId::for_certificate(&cert)
        .into_iter()
        .map(|id| (id, key.id.clone()))
        .collect();
    let size = 10 * MIB;
    let limits = Limits {
        max_size: 4 * size,
        ..Limits::default()
    };
    let message = big_message(size);

    // Signing: the entity is borrowed from the message (a clean multipart is not
    // rewritten), so the signed message is the one new copy.
    let (signed, peak) = peak_of(|| sign_detached(hsm, &signer, &message, &limits).expect("sign"));
    let ratio = report("sign (output included)", peak, size);
    assert!(ratio < 1.15, "signing held {ratio:.2} times the message");

    // Encrypting the signed message handed over: the ciphertext is made where the
    // entity lies; the base64 output is the new copy (4/3 of the DER, with CRLFs).
    let signed_len = signed.len();
    let (encrypted, peak) = peak_of(move || {
        encrypt::encrypt_message_owned(signed, &recipients, ContentCipher::Aes256Cbc, &limits)
            .expect("encrypt")
    });
    let ratio = report("encrypt, owned (output included)", peak, signed_len);
    assert!(ratio < 1.5, "encryption held {ratio:.2} times the message");

    // Decrypting: the DER decoded from base64, and the ciphertext copied out of it and
    // decrypted where it lies (0.73 + 0.73 of the base64 message).
    let (entity, peak) = peak_of(|| {
        let der = decrypt::cms_from_message(&encrypted, &limits).expect("CMS");
        decrypt::decrypt_within(hsm, &der, &held, &limits)
            .expect("decrypt")
            .entity
    });
    let ratio = report("decrypt (output included)", peak, encrypted.len());
    assert!(
        entity.len() >= message.len() / 2,
        "decrypted {} bytes",
        entity.len()
    );
    assert!(ratio < 1.6, "decryption held {ratio:.2} times the message");
}
