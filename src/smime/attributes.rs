//! Signed attributes we add beside contentType and messageDigest (RFC 8551 §2.5).

use const_oid::ObjectIdentifier;
use der::asn1::SetOfVec;
use der::{Any, Decode, Encode};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::certificate::Certificate;

use crate::hsm::KeyAlgorithm;

const SMIME_CAPABILITIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.15");
const ENCRYPTION_KEY_PREFERENCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.11");
pub(crate) const AES256_GCM: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.46");
pub(crate) const AES128_GCM: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.6");
pub(crate) const AES256_CBC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.42");
pub(crate) const AES128_CBC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.1.2");
pub(crate) const RSAES_OAEP: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");

fn single(oid: ObjectIdentifier, value: Any) -> der::Result<Attribute> {
    let mut values = SetOfVec::new();
    values.insert(value)?;
    Ok(Attribute { oid, values })
}

/// SMIMECapabilities: what we can decrypt, best first: AES-256-GCM, AES-128-GCM,
/// AES-256-CBC, AES-128-CBC, and for RSA keys RSAES-OAEP.
pub fn smime_capabilities(key: KeyAlgorithm) -> der::Result<Attribute> {
    let mut caps: Vec<AlgorithmIdentifierOwned> = [AES256_GCM, AES128_GCM, AES256_CBC, AES128_CBC]
        .into_iter()
        .map(|oid| AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        })
        .collect();
    if key.is_rsa() {
        caps.push(AlgorithmIdentifierOwned {
            oid: RSAES_OAEP,
            parameters: None,
        });
    }
    single(SMIME_CAPABILITIES, Any::from_der(&caps.to_der()?)?)
}

/// SMIMEEncryptionKeyPreference naming our own (dual-use) certificate by issuer and
/// serial: `[0] IMPLICIT IssuerAndSerialNumber`.
pub fn encryption_key_preference(cert: &Certificate) -> der::Result<Attribute> {
    let ias = cms::cert::IssuerAndSerialNumber {
        issuer: cert.tbs_certificate().issuer().clone(),
        serial_number: cert.tbs_certificate().serial_number().clone(),
    };
    let mut der_bytes = ias.to_der()?;
    // IMPLICIT [0] replaces the SEQUENCE tag with a constructed context tag 0.
    if let Some(tag) = der_bytes.first_mut() {
        *tag = 0xa0;
    }
    single(ENCRYPTION_KEY_PREFERENCE, Any::from_der(&der_bytes)?)
}
