//! A partner's SMIMECapabilities (RFC 8551 §2.5.2), as learnt from its signed mail,
//! and the algorithms we choose from them when encrypting to it.

use der::Decode;
use spki::AlgorithmIdentifierOwned;

use super::attributes::{AES128_CBC, AES128_GCM, AES256_CBC, AES256_GCM, RSAES_OAEP};
use super::encrypt::{ContentCipher, KeyTransportChoice};

/// What a partner said it can decrypt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub aes256_gcm: bool,
    pub aes128_gcm: bool,
    pub aes256_cbc: bool,
    pub aes128_cbc: bool,
    /// RSAES-OAEP with the default parameters (SHA-1, MGF1-SHA-1), the only ones we
    /// write.
    pub rsa_oaep: bool,
}

impl Capabilities {
    /// Parses the DER of the attribute value (`SEQUENCE OF SMIMECapability`); `None`
    /// when it does not parse (then nothing is assumed).
    pub fn parse(der: &[u8]) -> Option<Self> {
        let list = Vec::<AlgorithmIdentifierOwned>::from_der(der).ok()?;
        let mut caps = Capabilities::default();
        for cap in list {
            match cap.oid {
                AES256_GCM => caps.aes256_gcm = true,
                AES128_GCM => caps.aes128_gcm = true,
                AES256_CBC => caps.aes256_cbc = true,
                AES128_CBC => caps.aes128_cbc = true,
                RSAES_OAEP => {
                    // Absent or empty parameters mean the defaults.
                    let defaults = cap.parameters.as_ref().is_none_or(|p| p.value().is_empty());
                    caps.rsa_oaep |= defaults;
                }
                _ => {}
            }
        }
        Some(caps)
    }
}

/// The content cipher for a message to every one of `recipients` (their known
/// capabilities; `None` = unknown): AES-GCM only when every recipient advertised it,
/// AES-128-CBC when someone advertised only that, else AES-256-CBC (our default).
pub fn choose_cipher(recipients: &[Option<Capabilities>]) -> ContentCipher {
    let all = |f: fn(&Capabilities) -> bool| {
        !recipients.is_empty() && recipients.iter().all(|c| c.as_ref().is_some_and(f))
    };
    if all(|c| c.aes256_gcm) {
        ContentCipher::Aes256Gcm
    } else if all(|c| c.aes128_gcm) {
        ContentCipher::Aes128Gcm
    } else if recipients
        .iter()
        .flatten()
        .any(|c| c.aes128_cbc && !c.aes256_cbc)
    {
        ContentCipher::Aes128Cbc
    } else {
        ContentCipher::Aes256Cbc
    }
}

/// RSA key transport for one recipient: OAEP when it advertised it, else PKCS#1 v1.5.
pub fn choose_transport(capabilities: Option<&Capabilities>) -> KeyTransportChoice {
    if capabilities.is_some_and(|c| c.rsa_oaep) {
        KeyTransportChoice::RsaOaep
    } else {
        KeyTransportChoice::RsaPkcs1v15
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::KeyAlgorithm;
    use der::Encode;

    fn ours(key: KeyAlgorithm) -> Capabilities {
        let attr = crate::smime::attributes::smime_capabilities(key).expect("attribute");
        let value = attr
            .values
            .iter()
            .next()
            .expect("one value")
            .to_der()
            .expect("der");
        Capabilities::parse(&value).expect("parses")
    }

    #[test]
    fn what_we_advertise_is_what_we_read_back() {
        let rsa = ours(KeyAlgorithm::Rsa2048);
        assert!(rsa.aes256_gcm && rsa.aes128_gcm && rsa.aes256_cbc && rsa.aes128_cbc);
        assert!(rsa.rsa_oaep);
        assert!(!ours(KeyAlgorithm::P256).rsa_oaep);
        assert_eq!(choose_cipher(&[Some(rsa)]), ContentCipher::Aes256Gcm);
        assert_eq!(choose_transport(Some(&rsa)), KeyTransportChoice::RsaOaep);
    }

    #[test]
    fn the_weakest_reader_decides() {
        let gcm = Capabilities {
            aes256_gcm: true,
            aes256_cbc: true,
            ..Default::default()
        };
        let cbc128 = Capabilities {
            aes128_cbc: true,
            ..Default::default()
        };
        assert_eq!(choose_cipher(&[Some(gcm), None]), ContentCipher::Aes256Cbc);
        assert_eq!(
            choose_cipher(&[Some(gcm), Some(cbc128)]),
            ContentCipher::Aes128Cbc
        );
        assert_eq!(choose_cipher(&[]), ContentCipher::Aes256Cbc);
        assert_eq!(choose_transport(None), KeyTransportChoice::RsaPkcs1v15);
        assert_eq!(Capabilities::parse(b"garbage"), None);
    }
}
