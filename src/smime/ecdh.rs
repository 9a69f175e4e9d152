//! ECDH key agreement for CMS (RFC 5753, ephemeral-static, with the ANSI X9.63 KDF
//! and AES key wrap, RFC 3394). The static private key stays in the token, which
//! computes the shared secret; the KDF and key wrap run on the host.

use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Encode, Tagged};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use zeroize::Zeroizing;

pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
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

/// The originator's ephemeral public key (RFC 5753 §3.1.1, `originatorKey`), checked on
/// the host before the token uses our key with it (SEC1 §3.2.2.1 public key
/// validation; the invalid-curve attack needs a token that skips it). Our EC keys are
/// all P-256, so the key must be `id-ecPublicKey` on P-256 (parameters absent, NULL or
/// naming the curve) and its point one that decodes on P-256 and is not the point at
/// infinity: 65 bytes uncompressed, or 33 compressed (SEC1 §2.3.3; RFC 5480 §2.2 lets
/// peers send it, OpenSSL and BouncyCastle accept it, and decompression yields a point
/// on the curve by construction). The hybrid forms and every other length are refused.
/// Returns the uncompressed point, the form `CKM_ECDH1_DERIVE` takes.
pub fn peer_point(key: &cms::enveloped_data::OriginatorPublicKey) -> Result<Vec<u8>, String> {
    use p256::elliptic_curve::sec1::ToSec1Point;
    if key.algorithm.oid != EC_PUBLIC_KEY {
        return Err(format!("originator key of type {}", key.algorithm.oid));
    }
    if let Some(params) = &key.algorithm.parameters
        && params.tag() != der::Tag::Null
    {
        let curve: ObjectIdentifier = params
            .decode_as()
            .map_err(|e| format!("originator key parameters: {e}"))?;
        if curve != SECP256R1 {
            return Err(format!("originator key on curve {curve}, not P-256"));
        }
    }
    let bytes = key
        .public_key
        .as_bytes()
        .ok_or("originator key is not whole bytes")?;
    match (bytes.first(), bytes.len()) {
        (Some(0x04), 65) | (Some(0x02 | 0x03), 33) => {}
        (Some(0x00), _) => return Err("originator key is the point at infinity".into()),
        _ => {
            return Err(format!(
                "originator key is not a P-256 point ({} bytes)",
                bytes.len()
            ));
        }
    }
    let point = p256::PublicKey::from_sec1_bytes(bytes)
        .map_err(|_| "originator key is not a point on P-256".to_string())?;
    Ok(point.to_sec1_point(false).as_bytes().to_vec())
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

/// The ECC-CMS-SharedInfo for `scheme` and the sender's ukm (RFC 5753 §7.2): public
/// data, so it is built (and can fail) before our key is used.
pub fn shared_info(scheme: &Scheme, ukm: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let len = scheme.wrap_len();
    SharedInfo {
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
    .map_err(|e| e.to_string())
}

/// The key-encryption key from the shared secret `z` (X9.63 KDF over the SharedInfo).
pub fn kek_from(scheme: &Scheme, z: &[u8], info: &[u8]) -> Zeroizing<Vec<u8>> {
    let len = scheme.wrap_len();
    let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
    let mut counter: u32 = 1;
    while out.len() < len {
        let block = match scheme.kdf {
            STD_DH_SHA1KDF => x963::<sha1::Sha1>(z, counter, info),
            STD_DH_SHA224KDF => x963::<sha2::Sha224>(z, counter, info),
            STD_DH_SHA256KDF => x963::<sha2::Sha256>(z, counter, info),
            STD_DH_SHA384KDF => x963::<sha2::Sha384>(z, counter, info),
            _ => x963::<sha2::Sha512>(z, counter, info),
        };
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(len);
    out
}

/// [`shared_info`] and [`kek_from`] in one (for the sender's side).
pub fn kek(scheme: &Scheme, z: &[u8], ukm: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, String> {
    Ok(kek_from(scheme, z, &shared_info(scheme, ukm)?))
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
