//! Signing a message as `multipart/signed` with a detached `application/pkcs7-signature`
//! (RFC 8551 §3.5.3). The signed entity is made canonical and 7-bit clean first.

use cms::builder::{SignedDataBuilder, SignerInfoBuilder, create_signing_time_attribute};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
use der::Encode;
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::certificate::Certificate;

use super::attributes;
use crate::hsm::{
    Hsm, HsmError, KeyAlgorithm, KeyId, SignatureScheme, TokenSignature, TokenSigner,
};
use crate::mime::{self, Header, Limits, MimeError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmimeError {
    #[error(transparent)]
    Mime(#[from] MimeError),
    #[error(transparent)]
    Token(#[from] HsmError),
    #[error("CMS encoding failed: {0}")]
    Encoding(String),
    #[error("signature scheme {scheme:?} does not fit a {key} key")]
    SchemeMismatch {
        scheme: SignatureScheme,
        key: KeyAlgorithm,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn micalg(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha-256",
            DigestAlgorithm::Sha384 => "sha-384",
            DigestAlgorithm::Sha512 => "sha-512",
        }
    }

    fn oid(self) -> const_oid::ObjectIdentifier {
        use const_oid::db::rfc5912::{ID_SHA_256, ID_SHA_384, ID_SHA_512};
        match self {
            DigestAlgorithm::Sha256 => ID_SHA_256,
            DigestAlgorithm::Sha384 => ID_SHA_384,
            DigestAlgorithm::Sha512 => ID_SHA_512,
        }
    }

    /// The digest of the concatenation of `parts`.
    fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            DigestAlgorithm::Sha256 => run::<sha2::Sha256>(parts),
            DigestAlgorithm::Sha384 => run::<sha2::Sha384>(parts),
            DigestAlgorithm::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// The digest a signature scheme uses.
    pub fn of(scheme: SignatureScheme) -> Self {
        match scheme.digest_len() {
            32 => DigestAlgorithm::Sha256,
            48 => DigestAlgorithm::Sha384,
            _ => DigestAlgorithm::Sha512,
        }
    }
}

/// Who signs: a key in the token, its certificate and the chain to include.
#[derive(Clone)]
pub struct SignerIdentity {
    pub key_id: KeyId,
    pub key_algorithm: KeyAlgorithm,
    pub scheme: SignatureScheme,
    pub certificate: Certificate,
    pub chain: Vec<Certificate>,
}

/// Signs `message` (a whole RFC 5322 message, any line endings) as multipart/signed.
/// Header fields other than Content-* stay outside the signature; the entity is
/// canonicalised to CRLF and its 8-bit parts re-encoded before it is signed.
pub fn sign_detached(
    hsm: &Hsm,
    signer: &SignerIdentity,
    message: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, SmimeError> {
    check(signer, message, limits)?;
    let canonical = mime::to_crlf(message);
    let entity = prepare(&canonical, limits)?;
    let digest = DigestAlgorithm::of(signer.scheme);
    let signature = cms_signature(
        hsm,
        signer,
        digest,
        Signed::Detached(&digest.digest_parts(&entity.parts())),
    )?;
    Ok(assemble(&entity, &signature, digest))
}

/// Signs `message` as `application/pkcs7-mime; smime-type=signed-data` (the entity
/// inside the CMS): for recipients whose path mangles multipart/signed. Clients without
/// S/MIME cannot show it, which is why detached is the default.
pub fn sign_opaque(
    hsm: &Hsm,
    signer: &SignerIdentity,
    message: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, SmimeError> {
    check(signer, message, limits)?;
    let canonical = mime::to_crlf(message);
    let entity = prepare(&canonical, limits)?;
    let digest = DigestAlgorithm::of(signer.scheme);
    let der = cms_signature(
        hsm,
        signer,
        digest,
        Signed::Encapsulated(&entity.parts().concat()),
    )?;
    let mut out = Vec::with_capacity(der.len() * 4 / 3 + 1024);
    for h in &entity.outer {
        out.extend_from_slice(&h.raw);
    }
    out.extend_from_slice(
        b"MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\n\
          Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n",
    );
    mime::base64_lines_into(&der, &mut out);
    Ok(out)
}

fn check(signer: &SignerIdentity, message: &[u8], limits: &Limits) -> Result<(), SmimeError> {
    if message.len() > limits.max_size {
        return Err(MimeError::TooLarge {
            size: message.len(),
            limit: limits.max_size,
        }
        .into());
    }
    if signer.scheme.is_ecdsa() == signer.key_algorithm.is_rsa() {
        return Err(SmimeError::SchemeMismatch {
            scheme: signer.scheme,
            key: signer.key_algorithm,
        });
    }
    Ok(())
}

/// A message split for signing: the header fields that stay outside, and the
/// canonical 7-bit entity that is signed (its body borrowed from the message when it
/// needed no re-encoding).
struct Prepared<'a> {
    outer: Vec<Header>,
    entity_headers: Vec<Header>,
    body: std::borrow::Cow<'a, [u8]>,
}

impl Prepared<'_> {
    /// The signed entity as consecutive pieces: header fields, the empty line, body.
    fn parts(&self) -> Vec<&[u8]> {
        let mut parts: Vec<&[u8]> = self.entity_headers.iter().map(|h| &h.raw[..]).collect();
        parts.push(b"\r\n");
        parts.push(&self.body);
        parts
    }
}

fn prepare<'a>(canonical: &'a [u8], limits: &Limits) -> Result<Prepared<'a>, SmimeError> {
    let (headers, body_start) = mime::split_headers(canonical)?;
    let (content, outer): (Vec<Header>, Vec<Header>) =
        headers.into_iter().partition(|h| h.is_content_header());
    let entity_headers: Vec<Header> = content
        .into_iter()
        .filter(|h| !h.is("mime-version"))
        .collect();
    let (entity_headers, body) =
        mime::seven_bit_entity(entity_headers, &canonical[body_start..], limits)?;
    Ok(Prepared {
        outer,
        entity_headers,
        body,
    })
}

/// What the SignerInfo covers: external content by its digest, or content carried
/// inside the SignedData.
enum Signed<'a> {
    Detached(&'a [u8]),
    Encapsulated(&'a [u8]),
}

fn cms_signature(
    hsm: &Hsm,
    signer: &SignerIdentity,
    digest: DigestAlgorithm,
    what: Signed<'_>,
) -> Result<Vec<u8>, SmimeError> {
    let enc = |e: &dyn std::fmt::Display| SmimeError::Encoding(e.to_string());
    let (econtent, message_digest) = match what {
        Signed::Detached(md) => (None, Some(md)),
        Signed::Encapsulated(content) => (
            Some(der::Any::new(der::Tag::OctetString, content.to_vec()).map_err(|e| enc(&e))?),
            None,
        ),
    };
    let eci = EncapsulatedContentInfo {
        econtent_type: const_oid::db::rfc5911::ID_DATA,
        econtent,
    };
    let digest_algorithm = AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: None,
    };
    let tbs = signer.certificate.tbs_certificate();
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: tbs.issuer().clone(),
        serial_number: tbs.serial_number().clone(),
    });
    let mut info = SignerInfoBuilder::new(sid, digest_algorithm.clone(), &eci, message_digest)
        .map_err(|e| enc(&e))?;
    info.add_signed_attribute(create_signing_time_attribute().map_err(|e| enc(&e))?)
        .map_err(|e| enc(&e))?;
    info.add_signed_attribute(
        attributes::smime_capabilities(signer.key_algorithm).map_err(|e| enc(&e))?,
    )
    .map_err(|e| enc(&e))?;
    info.add_signed_attribute(
        attributes::encryption_key_preference(&signer.certificate).map_err(|e| enc(&e))?,
    )
    .map_err(|e| enc(&e))?;
    let token_signer = TokenSigner::new(
        hsm.clone(),
        signer.key_id.clone(),
        signer.scheme,
        tbs.subject_public_key_info().clone(),
    );
    let mut builder = SignedDataBuilder::new(&eci);
    builder
        .add_digest_algorithm(digest_algorithm)
        .map_err(|e| enc(&e))?;
    for cert in std::iter::once(&signer.certificate).chain(signer.chain.iter()) {
        builder
            .add_certificate(CertificateChoices::Certificate(cert.clone()))
            .map_err(|e| enc(&e))?;
    }
    // The token's own error is logged by TokenSigner; the builder only says "failed".
    builder
        .add_signer_info::<_, TokenSignature>(info, &token_signer)
        .map_err(|e| enc(&format!("signing in the token failed ({e})")))?;
    let content_info = builder.build().map_err(|e| enc(&e))?;
    content_info.to_der().map_err(|e| enc(&e))
}

fn assemble(entity: &Prepared<'_>, signature: &[u8], digest: DigestAlgorithm) -> Vec<u8> {
    let parts = entity.parts();
    let boundary = boundary_for(&parts);
    let signed_len: usize = parts.iter().map(|p| p.len()).sum();
    // Room for the signature part, and for the padding block should the result be
    // encrypted in place (encrypt_message_owned).
    let mut out = Vec::with_capacity(signed_len + signature.len() * 2 + 1024);
    for h in &entity.outer {
        out.extend_from_slice(&h.raw);
    }
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; \
             micalg={}; boundary=\"{boundary}\"\r\n\r\n\
             This is a cryptographically signed message in MIME format.\r\n\r\n--{boundary}\r\n",
            digest.micalg()
        )
        .as_bytes(),
    );
    for part in &parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
             Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
        )
        .as_bytes(),
    );
    mime::base64_lines_into(signature, &mut out);
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// A random boundary that occurs in none of the signed entity's pieces (it holds no
/// CR or LF, so it cannot straddle two of them).
fn boundary_for(parts: &[&[u8]]) -> String {
    let mut attempt: u64 = 0;
    loop {
        let mut random = [0u8; 12];
        if getrandom::fill(&mut random).is_err() {
            // No OS randomness: derive one from the content and the attempt number.
            let mut hasher = sha2::Sha256::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.update(attempt.to_be_bytes());
            random.copy_from_slice(&hasher.finalize()[..12]);
        }
        let boundary = format!("----=_smimegate_{}", hex::encode(random));
        if !parts.iter().any(|part| {
            part.windows(boundary.len())
                .any(|w| w == boundary.as_bytes())
        }) {
            return boundary;
        }
        attempt += 1;
    }
}
