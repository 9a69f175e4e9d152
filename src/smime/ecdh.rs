//! ECDH key agreement for CMS (RFC 5753, ephemeral-static, with the ANSI X9.63 KDF
//! and AES key wrap, RFC 3394). The static private key stays in the token, which
//! computes the shared secret; the KDF and key wrap run on the host.

use const_oid::ObjectIdentifier;
use der::Encode;
use der::asn1::OctetString;
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub const STD_DH_SHA1KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.133.16.840.63.0.2");
pub const STD_DH_SHA224KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.0");
pub const STD_DH_SHA256KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.1");
pub const STD_DH_SHA384KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.2");
pub const STD_DH_SHA512KDF: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.1.11.3");
pub const AES128_WRAP: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.5");
pub const AES192_WRAP: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.25");
pub const AES256_WRAP: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.45");

/// The KDF hash and key-wrap algorithm named by a keyEncryptionAlgorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    pub kdf: ObjectIdentifier,
    pub wrap: ObjectIdentifier,
}

impl Scheme {
    pub fn from_algorithm(alg: &AlgorithmIdentifierOwned) -> Result<Scheme, String> {
        if ![
            STD_DH_SHA1KDF,
            STD_DH_SHA224KDF,
            STD_DH_SHA256KDF,
            STD_DH_SHA384KDF,
            STD_DH_SHA512KDF,
        ]
        .contains(&alg.oid)
        {
            return Err(format!("key agreement scheme {}", alg.oid));
        }
        let wrap: AlgorithmIdentifierOwned = alg
            .parameters
            .as_ref()
            .ok_or("key agreement without a key-wrap algorithm")?
            .decode_as()
            .map_err(|e| format!("key-wrap algorithm: {e}"))?;
        wrap_len(&wrap.oid).ok_or_else(|| format!("key wrap {}", wrap.oid))?;
        Ok(Scheme {
            kdf: alg.oid,
            wrap: wrap.oid,
        })
    }

    pub fn algorithm(&self) -> der::Result<AlgorithmIdentifierOwned> {
        let wrap = AlgorithmIdentifierOwned {
            oid: self.wrap,
            parameters: None,
        };
        Ok(AlgorithmIdentifierOwned {
            oid: self.kdf,
            parameters: Some(der::Any::encode_from(&wrap)?),
        })
    }

    pub fn wrap_len(&self) -> usize {
        wrap_len(&self.wrap).unwrap_or(32)
    }
}

fn wrap_len(oid: &ObjectIdentifier) -> Option<usize> {
    match *oid {
        AES128_WRAP => Some(16),
        AES192_WRAP => Some(24),
        AES256_WRAP => Some(32),
        _ => None,
    }
}

/// ECC-CMS-SharedInfo (RFC 5753 §7.2).
#[derive(Clone, Debug, der::Sequence)]
struct SharedInfo {
    key_info: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    entity_u_info: Option<OctetString>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    supp_pub_info: OctetString,
}

/// The key-encryption key from the shared secret `z` (X9.63 KDF over SharedInfo).
pub fn kek(scheme: &Scheme, z: &[u8], ukm: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, String> {
    let len = scheme.wrap_len();
    let info = SharedInfo {
        key_info: AlgorithmIdentifierOwned {
            oid: scheme.wrap,
            parameters: None,
        },
        entity_u_info: ukm
            .map(|u| OctetString::new(u.to_vec()))
            .transpose()
            .map_err(|e| e.to_string())?,
        supp_pub_info: OctetString::new(((len * 8) as u32).to_be_bytes().to_vec())
            .map_err(|e| e.to_string())?,
    }
    .to_der()
    .map_err(|e| e.to_string())?;
    let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
    let mut counter: u32 = 1;
    while out.len() < len {
        let block = match scheme.kdf {
            STD_DH_SHA1KDF => x963::<sha1::Sha1>(z, counter, &info),
            STD_DH_SHA224KDF => x963::<sha2::Sha224>(z, counter, &info),
            STD_DH_SHA256KDF => x963::<sha2::Sha256>(z, counter, &info),
            STD_DH_SHA384KDF => x963::<sha2::Sha384>(z, counter, &info),
            _ => x963::<sha2::Sha512>(z, counter, &info),
        };
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(len);
    Ok(out)
}

fn x963<D: Digest>(z: &[u8], counter: u32, info: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut hasher = D::new();
    hasher.update(z);
    hasher.update(counter.to_be_bytes());
    hasher.update(info);
    Zeroizing::new(hasher.finalize().to_vec())
}

/// RFC 3394 unwrap of the content-encryption key.
pub fn unwrap(scheme: &Scheme, kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    use aes_kw::KeyInit;
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err("wrapped key of an impossible length".into());
    }
    let mut buf = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    let unwrapped = match scheme.wrap {
        AES128_WRAP => aes_kw::KwAes128::new_from_slice(kek)
            .map_err(|e| e.to_string())?
            .unwrap_key(wrapped, &mut buf)
            .map(|k| k.len()),
        AES192_WRAP => aes_kw::KwAes192::new_from_slice(kek)
            .map_err(|e| e.to_string())?
            .unwrap_key(wrapped, &mut buf)
            .map(|k| k.len()),
        _ => aes_kw::KwAes256::new_from_slice(kek)
            .map_err(|e| e.to_string())?
            .unwrap_key(wrapped, &mut buf)
            .map(|k| k.len()),
    }
    .map_err(|_| "key unwrap integrity check failed".to_string())?;
    buf.truncate(unwrapped);
    Ok(buf)
}

/// RFC 3394 wrap of the content-encryption key.
pub fn wrap(scheme: &Scheme, kek: &[u8], key: &[u8]) -> Result<Vec<u8>, String> {
    use aes_kw::KeyInit;
    let mut buf = vec![0u8; key.len() + 8];
    let len = match scheme.wrap {
        AES128_WRAP => aes_kw::KwAes128::new_from_slice(kek)
            .map_err(|e| e.to_string())?
            .wrap_key(key, &mut buf)
            .map(|k| k.len()),
        AES192_WRAP => aes_kw::KwAes192::new_from_slice(kek)
            .map_err(|e| e.to_string())?
            .wrap_key(key, &mut buf)
            .map(|k| k.len()),
        _ => aes_kw::KwAes256::new_from_slice(kek)
            .map_err(|e| e.to_string())?
            .wrap_key(key, &mut buf)
            .map(|k| k.len()),
    }
    .map_err(|e| e.to_string())?;
    buf.truncate(len);
    Ok(buf)
}
