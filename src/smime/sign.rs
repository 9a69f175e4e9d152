//! Signing a message as `multipart/signed` with a detached `application/pkcs7-signature`
//! (RFC 8551 §3.5.3). The signed entity is made canonical and 7-bit clean first.

use sha2::Digest;
use x509_cert::certificate::Certificate;

use super::signed_data;
use crate::hsm::{Hsm, HsmError, KeyAlgorithm, KeyId, SignatureScheme};
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

    pub(crate) fn oid(self) -> const_oid::ObjectIdentifier {
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
    let attributes =
        signed_data::signed_attributes(signer, &digest.digest_parts(&entity.parts(&canonical)))?;
    let signature = hsm.sign(&signer.key_id, signer.scheme, &attributes)?;
    let cms = signed_data::content_info(signer, digest, &attributes, &signature, None)?;
    Ok(assemble(&entity, &canonical, &cms, digest))
}

/// A message on its way to a detached signature, for callers that must not hold a
/// token session while the host works: [`DetachedSigning::new`] does everything
/// before the signature (canonical form, 7-bit entity, digest, signed attributes),
/// the token signs [`DetachedSigning::to_be_signed`] alone, and
/// [`DetachedSigning::finish`] builds the multipart/signed. The result is the one
/// [`sign_detached`] gives.
pub struct DetachedSigning {
    signer: std::sync::Arc<SignerIdentity>,
    canonical: Vec<u8>,
    entity: Prepared,
    digest: DigestAlgorithm,
    attributes: Vec<u8>,
}

impl DetachedSigning {
    /// Takes the message (any line endings; CRLF, as SMTP delivers it, is not copied).
    pub fn new(
        signer: std::sync::Arc<SignerIdentity>,
        message: Vec<u8>,
        limits: &Limits,
    ) -> Result<Self, SmimeError> {
        check(&signer, &message, limits)?;
        let converted = match mime::to_crlf(&message) {
            std::borrow::Cow::Owned(converted) => Some(converted),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let canonical = converted.unwrap_or(message);
        let entity = prepare(&canonical, limits)?;
        let digest = DigestAlgorithm::of(signer.scheme);
        let attributes = signed_data::signed_attributes(
            &signer,
            &digest.digest_parts(&entity.parts(&canonical)),
        )?;
        Ok(DetachedSigning {
            signer,
            canonical,
            entity,
            digest,
            attributes,
        })
    }

    /// The key and scheme to sign with, and the bytes the token signs (the DER of the
    /// signed attributes, RFC 5652 §5.4).
    pub fn to_be_signed(&self) -> (&KeyId, SignatureScheme, &[u8]) {
        (&self.signer.key_id, self.signer.scheme, &self.attributes)
    }

    /// The multipart/signed message around `signature` (as [`Hsm::sign`] returns it).
    pub fn finish(self, signature: &[u8]) -> Result<Vec<u8>, SmimeError> {
        let cms = signed_data::content_info(
            &self.signer,
            self.digest,
            &self.attributes,
            signature,
            None,
        )?;
        Ok(assemble(&self.entity, &self.canonical, &cms, self.digest))
    }

    /// The size of the message being signed, in bytes.
    pub fn len(&self) -> usize {
        self.canonical.len()
    }

    pub fn is_empty(&self) -> bool {
        self.canonical.is_empty()
    }
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
    let content = entity.parts(&canonical).concat();
    let attributes = signed_data::signed_attributes(signer, &digest.digest_parts(&[&content]))?;
    let signature = hsm.sign(&signer.key_id, signer.scheme, &attributes)?;
    let der = signed_data::content_info(signer, digest, &attributes, &signature, Some(&content))?;
    drop(content);
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
/// canonical 7-bit entity that is signed (its body the canonical message's own tail
/// when it needed no re-encoding).
struct Prepared {
    outer: Vec<Header>,
    entity_headers: Vec<Header>,
    /// `None`: the body is `canonical[body_start..]`, unchanged.
    reencoded_body: Option<Vec<u8>>,
    body_start: usize,
}

impl Prepared {
    /// The signed entity as consecutive pieces: header fields, the empty line, body.
    /// `canonical` is the message this was prepared from.
    fn parts<'a>(&'a self, canonical: &'a [u8]) -> Vec<&'a [u8]> {
        let mut parts: Vec<&[u8]> = self.entity_headers.iter().map(|h| &h.raw[..]).collect();
        parts.push(b"\r\n");
        parts.push(match &self.reencoded_body {
            Some(body) => body,
            None => canonical.get(self.body_start..).unwrap_or_default(),
        });
        parts
    }
}

fn prepare(canonical: &[u8], limits: &Limits) -> Result<Prepared, SmimeError> {
    let (headers, body_start) = mime::split_headers(canonical)?;
    let (content, outer): (Vec<Header>, Vec<Header>) =
        headers.into_iter().partition(|h| h.is_content_header());
    let entity_headers: Vec<Header> = content
        .into_iter()
        .filter(|h| !h.is("mime-version"))
        .collect();
    let (entity_headers, body) =
        mime::seven_bit_entity(entity_headers, &canonical[body_start..], limits)?;
    let reencoded_body = match body {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(body) => Some(body),
    };
    Ok(Prepared {
        outer,
        entity_headers,
        reencoded_body,
        body_start,
    })
}

fn assemble(
    entity: &Prepared,
    canonical: &[u8],
    signature: &[u8],
    digest: DigestAlgorithm,
) -> Vec<u8> {
    let parts = entity.parts(canonical);
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
        let finder = memchr::memmem::Finder::new(boundary.as_bytes());
        if !parts.iter().any(|part| finder.find(part).is_some()) {
            return boundary;
        }
        attempt += 1;
    }
}
