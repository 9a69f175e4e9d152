//! Decryption after the structure is read, with the token replaced by a fake that
//! answers like one: key transport and ECDH parameter parsing (RSAES-OAEP params,
//! ECC-CMS-SharedInfo, the sender's point), the host's EME-OAEP decoding of what a raw
//! RSA decryption would return, the X9.63 KDF and AES key unwrap, and the content
//! decryption (CBC padding, GCM parameters and tag) — everything an attacker's
//! ciphertext reaches once our key has been used.
#![no_main]
use libfuzzer_sys::fuzz_target;
use smimegate::hsm::{ContentKey, HsmError, KeyId, KeyTransport, oaep_decode_fixed};
use smimegate::mime::Limits;
use smimegate::smime::decrypt::{self, KeyOps, RecipientId};
use zeroize::Zeroizing;

/// Answers from the fuzzer's own bytes: the "raw RSA" result is the encrypted key
/// itself, decoded as OAEP or taken as PKCS#1 v1.5 plaintext; Z is a hash of the point.
struct FakeToken;

impl KeyOps for FakeToken {
    fn recover_content_key(
        &self,
        _key: &KeyId,
        transport: &KeyTransport,
        encrypted_key: &[u8],
        cek_len: usize,
    ) -> Result<ContentKey, HsmError> {
        match transport {
            KeyTransport::RsaOaep(params) => {
                let (key, good) = oaep_decode_fixed(encrypted_key, params, cek_len);
                ContentKey::select(&key, good, cek_len)
            }
            KeyTransport::RsaPkcs1v15 => {
                let take = encrypted_key.len().min(cek_len);
                ContentKey::select(&encrypted_key[..take], 1.into(), cek_len)
            }
        }
    }

    fn ecdh_shared_secret(
        &self,
        _key: &KeyId,
        peer_point: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        use sha2::Digest;
        Ok(Zeroizing::new(sha2::Sha256::digest(peer_point).to_vec()))
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let der = match decrypt::cms_from_message(data, &limits) {
        Ok(der) => der,
        Err(_) => data.to_vec(),
    };
    // Every recipient is "ours", so the first usable RecipientInfo is used.
    let held: Vec<(RecipientId, KeyId)> = decrypt::recipients(&der)
        .unwrap_or_default()
        .into_iter()
        .map(|id| (id, KeyId::new(vec![1])))
        .collect();
    if let Err(e) = decrypt::decrypt_within(&FakeToken, &der, &held, &limits) {
        let _ = e.class();
    }
});
