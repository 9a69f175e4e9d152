//! Reading PKCS#12 files (RFC 7292) as operators export identities: OpenSSL 3's
//! default (PBES2 with PBKDF2 and AES-256-CBC, HMAC-SHA-256 MAC) and the legacy
//! formats Windows and `openssl pkcs12 -legacy` write (3DES or RC2 with the PKCS#12
//! key derivation, HMAC-SHA-1 MAC).
//!
//! Why not a PKCS#12 crate: `p12-keystore` 0.4 and `pkcs12` 0.2.0-pre.0 require
//! `cms = "=0.3.0-pre.1"`, which cannot sit beside the `cms 0.3.0-rc.0` the rest of the
//! gateway is built on (one copy per semver range). The container (a handful of
//! SEQUENCEs) is decoded here with `der`; the cryptography is RustCrypto's: `pkcs5`
//! (PBES2), `des`, `rc2`, `cbc`, `hmac`, `sha1`, `sha2`. The PKCS#12 key derivation
//! (RFC 7292 appendix B.2) is written out below.
//!
//! Every buffer that holds key material (derived keys, the decrypted PKCS#8) is
//! zeroised when dropped. The file is never written anywhere; the private key leaves
//! this module only as the PKCS#8 the token import takes.

use cbc::cipher::{BlockModeDecrypt, InnerIvInit, KeyIvInit};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{AnyRef, Decode, Encode, Sequence};
use hmac::{KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::certificate::Certificate;
use zeroize::Zeroizing;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const KEY_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.1");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const CERT_BAG: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.3");
const SAFE_CONTENTS_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.6");
const X509_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
const PBE_SHA1_3DES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const PBE_SHA1_RC2_128: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.5");
const PBE_SHA1_RC2_40: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.6");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBMAC1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.14");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Nesting the BER normaliser allows; PKCS#12 files are shallow.
const MAX_DEPTH: usize = 32;
/// Iteration counts above this are refused (a file could otherwise keep the CPU busy
/// for hours); OpenSSL writes 2048, Windows 2000–10000.
const MAX_ITERATIONS: u32 = 1_000_000;
/// Bags of one file, all levels: far more than any identity needs.
const MAX_BAGS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("not a readable PKCS#12 file: {0}")]
    Malformed(String),
    #[error("wrong password for the PKCS#12 file (or the file was altered)")]
    WrongPassword,
    #[error("the PKCS#12 file uses {0}, which is not supported")]
    Unsupported(String),
    #[error("the PKCS#12 file holds no private key")]
    NoKey,
    #[error("the PKCS#12 file holds {0} private keys; export one identity per file")]
    SeveralKeys(usize),
}

type Result<T> = std::result::Result<T, Pkcs12Error>;

fn malformed(what: &str) -> impl Fn(der::Error) -> Pkcs12Error + '_ {
    move |e| Pkcs12Error::Malformed(format!("{what}: {e}"))
}

/// What a PKCS#12 file holds: one private key (PKCS#8 DER, zeroised on drop) and
/// every certificate, in file order.
pub struct Pkcs12Contents {
    pub key: Zeroizing<Vec<u8>>,
    pub certificates: Vec<Certificate>,
}

impl std::fmt::Debug for Pkcs12Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs12Contents")
            .field("key", &"[redacted]")
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

#[derive(Sequence)]
struct Pfx {
    version: u8,
    auth_safe: ContentInfo,
    mac_data: Option<MacData>,
}

#[derive(Sequence)]
struct MacData {
    mac: DigestInfo,
    mac_salt: OctetString,
    #[asn1(default = "one")]
    iterations: u32,
}

fn one() -> u32 {
    1
}

#[derive(Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// Borrowed from the (zeroised) plaintext it is decoded from: a key bag's contents
/// are never copied into a buffer that is not wiped.
#[derive(Sequence)]
struct SafeBag<'a> {
    bag_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    bag_value: AnyRef<'a>,
    bag_attributes: Option<AnyRef<'a>>,
}

#[derive(Sequence)]
struct CertBag {
    cert_id: ObjectIdentifier,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    cert_value: OctetString,
}

#[derive(Sequence)]
struct ShroudedKey {
    algorithm: AlgorithmIdentifierOwned,
    data: OctetString,
}

#[derive(Sequence)]
struct Pkcs12PbeParams {
    salt: OctetString,
    iterations: u32,
}

/// Decodes `der` (BER accepted, as Windows writes it) as `T`.
fn decode<T: for<'a> Decode<'a, Error = der::Error>>(input: &[u8], what: &str) -> Result<T> {
    let normalised = normalise(input, what)?;
    T::from_der(&normalised).map_err(malformed(what))
}

/// `input` as DER (BER accepted), in a buffer wiped when dropped: it may be plaintext.
fn normalise(input: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>> {
    crate::smime::ber::to_der(input, MAX_DEPTH)
        .map(|der| Zeroizing::new(der.into_owned()))
        .map_err(|e| Pkcs12Error::Malformed(format!("{what}: {e}")))
}

/// The content octets of a `data` ContentInfo (wiped when dropped: a safe of type
/// data may hold an unencrypted key bag).
fn data_octets(info: &ContentInfo, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    if info.content_type != ID_DATA {
        return Err(Pkcs12Error::Malformed(format!(
            "{what} is {}, not data",
            info.content_type
        )));
    }
    let octets: OctetString = info.content.decode_as().map_err(malformed(what))?;
    Ok(Zeroizing::new(octets.into_bytes().into_vec()))
}

/// Reads a PKCS#12 file with `password`: checks its MAC, decrypts every bag, and
/// returns the one private key and the certificates.
pub fn parse(file: &[u8], password: &SecretString) -> Result<Pkcs12Contents> {
    let pfx: Pfx = decode(file, "PFX")?;
    if pfx.version != 3 {
        return Err(Pkcs12Error::Unsupported(format!(
            "PKCS#12 version {}",
            pfx.version
        )));
    }
    let auth_safe = data_octets(&pfx.auth_safe, "authSafe")?;
    let password = Password::new(password);
    if let Some(mac) = &pfx.mac_data {
        verify_mac(mac, &auth_safe, &password)?;
    }
    let infos: Vec<ContentInfo> = decode(&auth_safe, "AuthenticatedSafe")?;
    let mut bags = Bags::default();
    for info in &infos {
        if info.content_type == ID_DATA {
            let contents = data_octets(info, "SafeContents")?;
            bags.read(&contents, &password, 0)?;
        } else if info.content_type == ID_ENCRYPTED_DATA {
            let encrypted: EncryptedData = info
                .content
                .decode_as()
                .map_err(malformed("EncryptedData"))?;
            let content = &encrypted.enc_content_info;
            let ciphertext = content
                .encrypted_content
                .as_ref()
                .ok_or_else(|| Pkcs12Error::Malformed("EncryptedData without content".into()))?;
            let plain = decrypt(&content.content_enc_alg, ciphertext.as_bytes(), &password)?;
            bags.read(&plain, &password, 0)?;
        } else {
            return Err(Pkcs12Error::Unsupported(format!(
                "a safe of type {} (public-key protected PKCS#12)",
                info.content_type
            )));
        }
    }
    let mut keys = bags.keys;
    match keys.len() {
        0 => Err(Pkcs12Error::NoKey),
        1 => Ok(Pkcs12Contents {
            key: keys.remove(0),
            certificates: bags.certificates,
        }),
        n => Err(Pkcs12Error::SeveralKeys(n)),
    }
}

/// The password as the two encodings PKCS#12 uses: UTF-8 octets (PBES2, as OpenSSL
/// passes it to PBKDF2) and a NUL-terminated BMPString (the PKCS#12 KDF).
struct Password {
    utf8: Zeroizing<Vec<u8>>,
    bmp: Zeroizing<Vec<u8>>,
}

impl Password {
    fn new(password: &SecretString) -> Self {
        let text = password.expose_secret();
        let mut bmp = Zeroizing::new(Vec::with_capacity(text.len() * 2 + 2));
        for unit in text.encode_utf16() {
            bmp.extend_from_slice(&unit.to_be_bytes());
        }
        bmp.extend_from_slice(&[0, 0]);
        Password {
            utf8: Zeroizing::new(text.as_bytes().to_vec()),
            bmp,
        }
    }
}

#[derive(Default)]
struct Bags {
    keys: Vec<Zeroizing<Vec<u8>>>,
    certificates: Vec<Certificate>,
    seen: usize,
}

impl Bags {
    fn read(&mut self, safe_contents: &[u8], password: &Password, depth: usize) -> Result<()> {
        if depth > 4 {
            return Err(Pkcs12Error::Malformed(
                "safe contents nested too deep".into(),
            ));
        }
        let normalised = normalise(safe_contents, "SafeContents")?;
        let bags: Vec<SafeBag<'_>> =
            Vec::from_der(&normalised).map_err(malformed("SafeContents"))?;
        for bag in bags {
            self.seen += 1;
            if self.seen > MAX_BAGS {
                return Err(Pkcs12Error::Malformed(format!("more than {MAX_BAGS} bags")));
            }
            let value = Zeroizing::new(bag.bag_value.to_der().map_err(malformed("bag"))?);
            if bag.bag_id == KEY_BAG {
                // An unencrypted PKCS#8 key (the MAC still vouched for it).
                self.keys.push(value);
            } else if bag.bag_id == SHROUDED_KEY_BAG {
                let shrouded: ShroudedKey = decode(&value, "shrouded key bag")?;
                let key = decrypt(&shrouded.algorithm, shrouded.data.as_bytes(), password)?;
                // Without a MAC a wrong password shows here: padding that happens to
                // check out gives bytes that are no PKCS#8.
                if pkcs8::PrivateKeyInfoRef::from_der(&key).is_err() {
                    return Err(Pkcs12Error::WrongPassword);
                }
                self.keys.push(key);
            } else if bag.bag_id == CERT_BAG {
                let cert_bag: CertBag = decode(&value, "certificate bag")?;
                if cert_bag.cert_id != X509_CERTIFICATE {
                    continue; // SDSI certificates: nothing for us
                }
                let cert = Certificate::from_der(cert_bag.cert_value.as_bytes())
                    .map_err(malformed("certificate"))?;
                self.certificates.push(cert);
            } else if bag.bag_id == SAFE_CONTENTS_BAG {
                self.read(&value, password, depth + 1)?;
            }
            // CRL and secret bags are not needed for an identity.
        }
        Ok(())
    }
}

/// Checks the file's MAC over the authenticated safe: HMAC with a key from the
/// PKCS#12 KDF (SHA-1, SHA-2). A mismatch means a wrong password (or tampering).
fn verify_mac(mac: &MacData, auth_safe: &[u8], password: &Password) -> Result<()> {
    let oid = mac.mac.algorithm.oid;
    if oid == PBMAC1 {
        return Err(Pkcs12Error::Unsupported("a PBMAC1 integrity check".into()));
    }
    let salt = mac.mac_salt.as_bytes();
    let iterations = checked_iterations(mac.iterations)?;
    let expected = mac.mac.digest.as_bytes();
    let ok = if oid == SHA1 {
        hmac_verify::<sha1::Sha1>(password, salt, iterations, auth_safe, expected)
    } else if oid == SHA256 {
        hmac_verify::<sha2::Sha256>(password, salt, iterations, auth_safe, expected)
    } else if oid == SHA384 {
        hmac_verify::<sha2::Sha384>(password, salt, iterations, auth_safe, expected)
    } else if oid == SHA512 {
        hmac_verify::<sha2::Sha512>(password, salt, iterations, auth_safe, expected)
    } else {
        return Err(Pkcs12Error::Unsupported(format!("a MAC with digest {oid}")));
    };
    if ok {
        Ok(())
    } else {
        Err(Pkcs12Error::WrongPassword)
    }
}

fn hmac_verify<D>(
    password: &Password,
    salt: &[u8],
    iterations: u32,
    data: &[u8],
    expected: &[u8],
) -> bool
where
    D: hmac::EagerHash + sha2::digest::block_api::BlockSizeUser,
{
    let key = pkcs12_kdf::<D>(
        &password.bmp,
        salt,
        3,
        iterations,
        <D as Digest>::output_size(),
    );
    let Ok(mut mac) = <hmac::Hmac<D> as KeyInit>::new_from_slice(&key) else {
        return false;
    };
    mac.update(data);
    mac.verify_slice(expected).is_ok()
}

fn checked_iterations(iterations: u32) -> Result<u32> {
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return Err(Pkcs12Error::Unsupported(format!(
            "an iteration count of {iterations}"
        )));
    }
    Ok(iterations)
}

/// Decrypts one encrypted safe or key: PBES2 (pkcs5), or the PKCS#12 PBEs with
/// SHA-1 and 3DES / RC2. A wrong password shows as bad padding.
fn decrypt(
    algorithm: &AlgorithmIdentifierOwned,
    ciphertext: &[u8],
    password: &Password,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    if algorithm.oid == PBES2 {
        let der = algorithm.to_der().map_err(malformed("PBES2 parameters"))?;
        let scheme = pkcs5::EncryptionScheme::try_from(der.as_slice())
            .map_err(|e| Pkcs12Error::Unsupported(format!("this PBES2 scheme ({e})")))?;
        if let Some(pbkdf2) = scheme.pbes2().and_then(|p| p.kdf.pbkdf2()) {
            checked_iterations(pbkdf2.iteration_count)?;
        }
        let len = scheme
            .decrypt_in_place(&password.utf8[..], &mut buffer)
            .map_err(|e| match e {
                pkcs5::Error::DecryptFailed => Pkcs12Error::WrongPassword,
                other => Pkcs12Error::Unsupported(format!("this PBES2 scheme ({other})")),
            })?
            .len();
        buffer.truncate(len);
        return Ok(buffer);
    }
    let (key_len, rc2_bits) = if algorithm.oid == PBE_SHA1_3DES {
        (24, None)
    } else if algorithm.oid == PBE_SHA1_RC2_40 {
        (5, Some(40))
    } else if algorithm.oid == PBE_SHA1_RC2_128 {
        (16, Some(128))
    } else {
        return Err(Pkcs12Error::Unsupported(format!(
            "the encryption {}",
            algorithm.oid
        )));
    };
    let params: Pkcs12PbeParams = algorithm
        .parameters
        .as_ref()
        .ok_or_else(|| Pkcs12Error::Malformed("PBE without parameters".into()))?
        .decode_as()
        .map_err(malformed("PBE parameters"))?;
    let iterations = checked_iterations(params.iterations)?;
    let salt = params.salt.as_bytes();
    let key = pkcs12_kdf::<sha1::Sha1>(&password.bmp, salt, 1, iterations, key_len);
    let iv = pkcs12_kdf::<sha1::Sha1>(&password.bmp, salt, 2, iterations, 8);
    use cbc::cipher::block_padding::Pkcs7;
    let plain_len = match rc2_bits {
        None => cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| Pkcs12Error::Malformed("3DES key".into()))?
            .decrypt_padded::<Pkcs7>(&mut buffer)
            .map_err(|_| Pkcs12Error::WrongPassword)?
            .len(),
        Some(bits) => {
            let cipher = rc2::Rc2::new_with_eff_key_len(&key, bits);
            cbc::Decryptor::<rc2::Rc2>::inner_iv_slice_init(cipher, &iv)
                .map_err(|_| Pkcs12Error::Malformed("RC2 IV".into()))?
                .decrypt_padded::<Pkcs7>(&mut buffer)
                .map_err(|_| Pkcs12Error::WrongPassword)?
                .len()
        }
    };
    buffer.truncate(plain_len);
    Ok(buffer)
}

/// The PKCS#12 key derivation (RFC 7292 appendix B.2): `id` 1 for keys, 2 for IVs,
/// 3 for MAC keys; `password` is the NUL-terminated BMPString.
fn pkcs12_kdf<D>(
    password: &[u8],
    salt: &[u8],
    id: u8,
    iterations: u32,
    out_len: usize,
) -> Zeroizing<Vec<u8>>
where
    D: Digest + sha2::digest::block_api::BlockSizeUser,
{
    let u = <D as Digest>::output_size();
    let v = D::block_size();
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        (0..len).map(|i| src[i % src.len()]).collect()
    };
    let mut i_block = Zeroizing::new([fill(salt), fill(password)].concat());
    let mut out = Zeroizing::new(Vec::with_capacity(out_len + u));
    loop {
        let mut hasher = D::new();
        hasher.update(vec![id; v]);
        hasher.update(&i_block[..]);
        let mut a = Zeroizing::new(hasher.finalize().to_vec());
        for _ in 1..iterations {
            *a = D::digest(&a[..]).to_vec();
        }
        out.extend_from_slice(&a);
        if out.len() >= out_len {
            out.truncate(out_len);
            return out;
        }
        let b: Zeroizing<Vec<u8>> = Zeroizing::new((0..v).map(|k| a[k % u]).collect());
        for chunk in i_block.chunks_mut(v) {
            let mut carry = 1u16;
            for k in (0..chunk.len()).rev() {
                let sum = u16::from(chunk[k]) + u16::from(b[k]) + carry;
                chunk[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkcs12_kdf_gives_the_known_answers() {
        // Known answers computed with OpenSSL's PKCS12_key_gen_uni (SHA-1):
        // password "smeg", salt 0a58cf64530d823f, 1 iteration.
        let password = Password::new(&SecretString::from("smeg"));
        let salt = hex::decode("0a58cf64530d823f").expect("hex");
        let key = pkcs12_kdf::<sha1::Sha1>(&password.bmp, &salt, 1, 1, 24);
        assert_eq!(
            hex::encode(&key[..]),
            "8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3"
        );
        let iv = pkcs12_kdf::<sha1::Sha1>(&password.bmp, &salt, 2, 1, 8);
        assert_eq!(hex::encode(&iv[..]), "79993dfe048d3b76");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let password = SecretString::from("x");
        for input in [
            &b""[..],
            b"\x30\x03\x02\x01",
            b"not pkcs12 at all",
            &[0x30; 200],
        ] {
            let err = parse(input, &password).expect_err("garbage");
            assert!(matches!(err, Pkcs12Error::Malformed(_)), "{err:?}");
        }
    }
}
