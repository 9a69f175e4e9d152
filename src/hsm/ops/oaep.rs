//! EME-OAEP decoding (RFC 8017 §7.1.2 step 3) on the host, for tokens that refuse
//! `CKM_RSA_PKCS_OAEP` with the hash a message names (SoftHSM accepts only SHA-1): the
//! token does the raw RSA (`CKM_RSA_X_509`), this undoes the padding. The encoded
//! message is secret, so nothing here branches on it or indexes memory by it: every
//! check is folded into one [`Choice`] (the Manger attack, RFC 8017 §7.1.2 note, needs
//! only to tell one failure from another).

use sha2::Digest;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::{OaepHash, OaepParams};

impl OaepHash {
    /// hLen, the output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            OaepHash::Sha1 => 20,
            OaepHash::Sha224 => 28,
            OaepHash::Sha256 => 32,
            OaepHash::Sha384 => 48,
            OaepHash::Sha512 => 64,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            OaepHash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            OaepHash::Sha224 => sha2::Sha224::digest(data).to_vec(),
            OaepHash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            OaepHash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            OaepHash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// `out ^= MGF1(seed, out.len())` (RFC 8017 Appendix B.2.1).
    fn mgf1_xor(self, seed: &[u8], out: &mut [u8]) {
        match self {
            OaepHash::Sha1 => mgf1_xor::<sha1::Sha1>(seed, out),
            OaepHash::Sha224 => mgf1_xor::<sha2::Sha224>(seed, out),
            OaepHash::Sha256 => mgf1_xor::<sha2::Sha256>(seed, out),
            OaepHash::Sha384 => mgf1_xor::<sha2::Sha384>(seed, out),
            OaepHash::Sha512 => mgf1_xor::<sha2::Sha512>(seed, out),
        }
    }
}

fn mgf1_xor<D: Digest>(seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(<D as Digest>::output_size())) {
        let mut hasher = D::new();
        hasher.update(seed);
        hasher.update(counter.to_be_bytes());
        let block = Zeroizing::new(hasher.finalize().to_vec());
        for (o, m) in chunk.iter_mut().zip(block.iter()) {
            *o ^= m;
        }
    }
}

/// DB = lHash' || PS || 0x01 || M after unmasking `em` (k bytes), whether everything
/// but the length of M checks out, and the index in DB of the 0x01 separator.
/// `em.len() >= 2 * hLen + 2` is the caller's (public) check.
fn unmask(em: &[u8], p: &OaepParams) -> (Zeroizing<Vec<u8>>, Choice, usize) {
    let h_len = p.hash.output_len();
    let (y, rest) = (em[0], &em[1..]);
    let (masked_seed, masked_db) = rest.split_at(h_len);
    let mut seed = Zeroizing::new(masked_seed.to_vec());
    p.mgf1_hash.mgf1_xor(masked_db, &mut seed);
    let mut db = Zeroizing::new(masked_db.to_vec());
    p.mgf1_hash.mgf1_xor(&seed, &mut db);
    let l_hash = p.hash.digest(&p.label);
    let mut good = y.ct_eq(&0) & db[..h_len].ct_eq(&l_hash);
    // PS is zero or more 0x00, then 0x01: scan all of it, remember where the first 0x01
    // was and whether anything else came before it.
    let mut looking = Choice::from(1);
    let mut separator = 0u32;
    let mut stray = Choice::from(0);
    for (i, &b) in (0u32..).zip(db[h_len..].iter()) {
        let zero = b.ct_eq(&0);
        let one = b.ct_eq(&1);
        separator.conditional_assign(&i, looking & one);
        stray |= looking & !zero & !one;
        looking &= !one;
    }
    good &= !stray & !looking;
    (db, good, h_len + separator as usize)
}

/// Decodes `em` expecting a message of exactly `len` bytes (the content-encryption key
/// length the content cipher needs). Returns the last `len` bytes of DB and whether the
/// encoding was valid with a message of that length; on failure the bytes are garbage
/// and the caller substitutes a random key (RFC 3218 §2.3) without branching.
pub(super) fn decode_fixed(em: &[u8], p: &OaepParams, len: usize) -> (Zeroizing<Vec<u8>>, Choice) {
    let h_len = p.hash.output_len();
    // Public: k, hLen and len decide only whether decoding is possible at all.
    if em.len() < 2 * h_len + 2 || len > em.len() - 2 * h_len - 2 {
        return (Zeroizing::new(vec![0u8; len]), Choice::from(0));
    }
    let (db, good, separator) = unmask(em, p);
    let m_len = (db.len() as u64)
        .wrapping_sub(separator as u64)
        .wrapping_sub(1);
    let good = good & m_len.ct_eq(&(len as u64));
    let tail = Zeroizing::new(db[db.len() - len..].to_vec());
    (tail, good)
}

/// Decodes `em` to a message of whatever length it holds; `None` for any decoding
/// error (one outcome for all of them, decided after the whole scan).
pub(super) fn decode(em: &[u8], p: &OaepParams) -> Option<Zeroizing<Vec<u8>>> {
    let h_len = p.hash.output_len();
    if em.len() < 2 * h_len + 2 {
        return None;
    }
    let (db, good, separator) = unmask(em, p);
    bool::from(good).then(|| Zeroizing::new(db[separator + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;
    use std::sync::OnceLock;

    /// One software RSA-2048 key for all cases: the public side encrypts with the rsa
    /// crate's OAEP, the private side only does raw RSA (what the token does).
    fn key() -> &'static rsa::PrivateKey {
        static KEY: OnceLock<rsa::PrivateKey> = OnceLock::new();
        KEY.get_or_init(|| rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key"))
    }

    fn raw_decrypt(ciphertext: &[u8]) -> Vec<u8> {
        let key = key();
        let k = key.size();
        let c = rsa::BoxedUint::from_be_slice(ciphertext, key.n().as_ref().bits_precision())
            .expect("ciphertext");
        let m = rsa::hazmat::rsa_decrypt_and_check(key, Some(&mut getrandom::SysRng), &c)
            .expect("raw RSA");
        let bytes = m.to_be_bytes();
        bytes[bytes.len() - k..].to_vec()
    }

    fn encrypt<D, M>(label: Option<&[u8]>, message: &[u8]) -> Vec<u8>
    where
        D: Digest + sha2::digest::FixedOutputReset,
        M: Digest + sha2::digest::FixedOutputReset,
    {
        let public = key().to_public_key();
        let padding = match label {
            Some(l) => rsa::Oaep::<D, M>::new_with_mgf_hash_and_label(l.to_vec()),
            None => rsa::Oaep::<D, M>::new_with_mgf_hash(),
        };
        public
            .encrypt(&mut getrandom::SysRng, padding, message)
            .expect("OAEP encrypt")
    }

    fn params(hash: OaepHash, mgf1_hash: OaepHash, label: &[u8]) -> OaepParams {
        OaepParams {
            hash,
            mgf1_hash,
            label: label.to_vec(),
        }
    }

    #[test]
    fn decodes_what_the_rsa_crate_encrypts_with_every_hash_pair_and_label() {
        use OaepHash::*;
        let cek = [0x5au8; 32];
        let cases: Vec<(OaepParams, Vec<u8>)> = vec![
            (
                params(Sha1, Sha1, b""),
                encrypt::<sha1::Sha1, sha1::Sha1>(None, &cek),
            ),
            (
                params(Sha224, Sha224, b""),
                encrypt::<sha2::Sha224, sha2::Sha224>(None, &cek),
            ),
            (
                params(Sha256, Sha256, b""),
                encrypt::<sha2::Sha256, sha2::Sha256>(None, &cek),
            ),
            (
                params(Sha384, Sha384, b""),
                encrypt::<sha2::Sha384, sha2::Sha384>(None, &cek),
            ),
            (
                params(Sha512, Sha512, b""),
                encrypt::<sha2::Sha512, sha2::Sha512>(None, &cek),
            ),
            (
                params(Sha256, Sha1, b""),
                encrypt::<sha2::Sha256, sha1::Sha1>(None, &cek),
            ),
            (
                params(Sha512, Sha256, b""),
                encrypt::<sha2::Sha512, sha2::Sha256>(None, &cek),
            ),
            (
                params(Sha256, Sha256, b"smimegate label"),
                encrypt::<sha2::Sha256, sha2::Sha256>(Some(b"smimegate label"), &cek),
            ),
        ];
        for (p, ciphertext) in cases {
            let em = raw_decrypt(&ciphertext);
            let (key, good) = decode_fixed(&em, &p, 32);
            assert!(bool::from(good), "{p:?}");
            assert_eq!(&key[..], &cek, "{p:?}");
            assert_eq!(decode(&em, &p).as_deref().map(|k| &k[..]), Some(&cek[..]));
            // The same encoding with a message length other than expected is refused.
            let (_, good) = decode_fixed(&em, &p, 16);
            assert!(!bool::from(good), "{p:?} with the wrong length");
        }
    }

    #[test]
    fn tampered_encodings_and_wrong_parameters_are_refused() {
        use OaepHash::*;
        let cek = [0x17u8; 16];
        let p = params(Sha256, Sha256, b"");
        let em = raw_decrypt(&encrypt::<sha2::Sha256, sha2::Sha256>(None, &cek));
        assert!(bool::from(decode_fixed(&em, &p, 16).1));
        // Every byte of EM matters: the leading zero, the masked seed and every byte of
        // maskedDB, flipped in turn.
        for at in 0..em.len() {
            let mut bad = em.clone();
            bad[at] ^= 0x01;
            // (A flip in maskedDB changes the seed mask, so even one inside M garbles
            // lHash and PS.)
            assert!(!bool::from(decode_fixed(&bad, &p, 16).1), "flip at {at}");
            assert!(decode(&bad, &p).is_none(), "flip at {at}");
        }
        // Another hash, another MGF1 hash or another label: not this encoding.
        for other in [
            params(Sha1, Sha1, b""),
            params(Sha256, Sha1, b""),
            params(Sha1, Sha256, b""),
            params(Sha256, Sha256, b"label"),
        ] {
            assert!(!bool::from(decode_fixed(&em, &other, 16).1), "{other:?}");
            assert!(decode(&em, &other).is_none(), "{other:?}");
        }
        // Too short to hold an encoding, and all zeros (no separator).
        assert!(!bool::from(decode_fixed(&em[..60], &p, 16).1));
        assert!(decode(&em[..60], &p).is_none());
        assert!(!bool::from(decode_fixed(&vec![0u8; 256], &p, 16).1));
        assert!(decode(&vec![0u8; 256], &p).is_none());
    }
}
