//! A signer whose private half is a key in the token. It implements the traits that
//! `x509_cert::builder` and `cms::builder` need, so certificates, CRLs and CMS
//! SignedData are all signed by `C_Sign`. `try_sign` blocks: call the builders from
//! [`Hsm::call`] (the blocking pool), never directly on the async runtime.

use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ECDSA_WITH_SHA_512, ID_RSASSA_PSS,
    SHA_256_WITH_RSA_ENCRYPTION, SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
use der::asn1::BitString;
use der::{Any, Encode};
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding, SubjectPublicKeyInfoOwned,
};

use super::Hsm;
use super::keys::KeyId;
use super::ops::SignatureScheme;

/// The public half of a token key, as the builders want it.
#[derive(Clone, Debug)]
pub struct TokenPublicKey(pub SubjectPublicKeyInfoOwned);

impl EncodePublicKey for TokenPublicKey {
    fn to_public_key_der(&self) -> spki::Result<der::Document> {
        Ok(der::Document::encode_msg(&self.0)?)
    }
}

/// A DER signature value as returned by [`Hsm::sign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSignature(pub Vec<u8>);

impl SignatureBitStringEncoding for TokenSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl AsRef<[u8]> for TokenSignature {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Clone)]
pub struct TokenSigner {
    hsm: Hsm,
    key: KeyId,
    scheme: SignatureScheme,
    public_key: SubjectPublicKeyInfoOwned,
}

impl TokenSigner {
    pub fn new(
        hsm: Hsm,
        key: KeyId,
        scheme: SignatureScheme,
        public_key: SubjectPublicKeyInfoOwned,
    ) -> Self {
        Self {
            hsm,
            key,
            scheme,
            public_key,
        }
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key
    }

    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

impl signature::Keypair for TokenSigner {
    type VerifyingKey = TokenPublicKey;

    fn verifying_key(&self) -> TokenPublicKey {
        TokenPublicKey(self.public_key.clone())
    }
}

impl DynSignatureAlgorithmIdentifier for TokenSigner {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        signature_algorithm(self.scheme)
    }
}

impl signature::Signer<TokenSignature> for TokenSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<TokenSignature, signature::Error> {
        self.hsm
            .sign(&self.key, self.scheme, msg)
            .map(TokenSignature)
            .map_err(|e| {
                tracing::error!(key_id = %self.key, error = %e, "token signature failed");
                signature::Error::from_source(e)
            })
    }
}

/// The AlgorithmIdentifier that names `scheme` in certificates and CMS.
pub fn signature_algorithm(scheme: SignatureScheme) -> spki::Result<AlgorithmIdentifierOwned> {
    use SignatureScheme::*;
    let null = || Some(Any::from(der::asn1::Null));
    let (oid, parameters) = match scheme {
        RsaPkcs1Sha256 => (SHA_256_WITH_RSA_ENCRYPTION, null()),
        RsaPkcs1Sha384 => (SHA_384_WITH_RSA_ENCRYPTION, null()),
        RsaPkcs1Sha512 => (SHA_512_WITH_RSA_ENCRYPTION, null()),
        EcdsaSha256 => (ECDSA_WITH_SHA_256, None),
        EcdsaSha384 => (ECDSA_WITH_SHA_384, None),
        EcdsaSha512 => (ECDSA_WITH_SHA_512, None),
        RsaPssSha256 | RsaPssSha384 | RsaPssSha512 => {
            let salt = scheme.digest_len() as u8;
            let params = match scheme {
                RsaPssSha256 => rsa::pkcs1::RsaPssParamsRef::new::<sha2::Sha256>(salt),
                RsaPssSha384 => rsa::pkcs1::RsaPssParamsRef::new::<sha2::Sha384>(salt),
                _ => rsa::pkcs1::RsaPssParamsRef::new::<sha2::Sha512>(salt),
            };
            let der = params.to_der()?;
            (ID_RSASSA_PSS, Some(Any::from_der(&der)?))
        }
    };
    Ok(AlgorithmIdentifierOwned { oid, parameters })
}

use der::Decode as _;
