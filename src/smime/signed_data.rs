//! The CMS SignedData around one signature (RFC 5652 §5), encoded directly in DER.
//!
//! Signing is two steps so that the token holds a session only for the signature: the
//! host builds the signed attributes ([`signed_attributes`]), the token signs their DER
//! encoding (§5.4), and the host wraps the signature ([`content_info`]). The
//! certificates are written from the parsed chain without copying it into a builder;
//! the result is the DER `cms::builder` gave for the same input.

use cms::builder::{
    create_content_type_attribute, create_message_digest_attribute, create_signing_time_attribute,
};
use der::Encode;
use der::asn1::SetOfVec;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

use super::attributes;
use super::sign::{DigestAlgorithm, SignerIdentity, SmimeError};

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
/// `[0]`, constructed: EXPLICIT content, IMPLICIT certificates and signed attributes.
const TAG_CONTEXT_0: u8 = 0xa0;
/// CMSVersion 1: IssuerAndSerialNumber, id-data, X.509 certificates only (§5.1, §5.3).
const VERSION_1: [u8; 3] = [TAG_INTEGER, 1, 1];

fn encoding(e: impl std::fmt::Display) -> SmimeError {
    SmimeError::Encoding(e.to_string())
}

/// The DER encoding of the signed attributes as the token signs them (a SET OF,
/// sorted): contentType id-data, signingTime now, messageDigest, SMIMECapabilities and
/// SMIMEEncryptionKeyPreference.
pub(crate) fn signed_attributes(
    signer: &SignerIdentity,
    message_digest: &[u8],
) -> Result<Vec<u8>, SmimeError> {
    let attributes: Vec<Attribute> = vec![
        create_signing_time_attribute().map_err(encoding)?,
        attributes::smime_capabilities(signer.key_algorithm).map_err(encoding)?,
        attributes::encryption_key_preference(&signer.certificate).map_err(encoding)?,
        create_message_digest_attribute(message_digest).map_err(encoding)?,
        create_content_type_attribute(const_oid::db::rfc5911::ID_DATA).map_err(encoding)?,
    ];
    // DER sorts a SET OF by encoding (X.690 §11.6); `try_from` sorts.
    let set = SetOfVec::try_from(attributes).map_err(encoding)?;
    set.to_der().map_err(encoding)
}

/// The length of a TLV whose content is `len` bytes.
fn tlv_len(len: usize) -> usize {
    1 + header_length_octets(len) + len
}

fn header_length_octets(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    }
}

/// Appends a tag and a definite DER length.
fn push_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn push_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    push_header(out, tag, content.len());
    out.extend_from_slice(content);
}

/// The ContentInfo of a SignedData with one SignerInfo: `signed_attributes` (as
/// returned by [`signed_attributes`]) signed with `signature`, the signer's certificate
/// and chain, and `content` inside when the signature is not detached.
pub(crate) fn content_info(
    signer: &SignerIdentity,
    digest: DigestAlgorithm,
    signed_attributes: &[u8],
    signature: &[u8],
    content: Option<&[u8]>,
) -> Result<Vec<u8>, SmimeError> {
    let digest_algorithm = AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: None,
    }
    .to_der()
    .map_err(encoding)?;
    let signature_algorithm = crate::hsm::signature_algorithm(signer.scheme)
        .map_err(encoding)?
        .to_der()
        .map_err(encoding)?;
    let tbs = signer.certificate.tbs_certificate();

    // SignerInfo ::= SEQUENCE { version, sid IssuerAndSerialNumber, digestAlgorithm,
    //   signedAttrs [0] IMPLICIT, signatureAlgorithm, signature OCTET STRING }
    let mut sid = Vec::new();
    tbs.issuer().encode_to_vec(&mut sid).map_err(encoding)?;
    tbs.serial_number()
        .encode_to_vec(&mut sid)
        .map_err(encoding)?;
    // The attributes are signed as a SET and carried as [0] IMPLICIT: same content.
    let attributes_content = set_content(signed_attributes)?;
    let signer_info_len = VERSION_1.len()
        + tlv_len(sid.len())
        + digest_algorithm.len()
        + tlv_len(attributes_content.len())
        + signature_algorithm.len()
        + tlv_len(signature.len());
    let mut signer_infos = Vec::with_capacity(tlv_len(tlv_len(signer_info_len)));
    push_header(&mut signer_infos, TAG_SET, tlv_len(signer_info_len));
    push_header(&mut signer_infos, TAG_SEQUENCE, signer_info_len);
    signer_infos.extend_from_slice(&VERSION_1);
    push_tlv(&mut signer_infos, TAG_SEQUENCE, &sid);
    signer_infos.extend_from_slice(&digest_algorithm);
    push_tlv(&mut signer_infos, TAG_CONTEXT_0, attributes_content);
    signer_infos.extend_from_slice(&signature_algorithm);
    push_tlv(&mut signer_infos, TAG_OCTET_STRING, signature);

    // certificates [0] IMPLICIT CertificateSet: a SET OF, sorted by encoding.
    let mut certificates = std::iter::once(&signer.certificate)
        .chain(signer.chain.iter())
        .map(|c| c.to_der().map_err(encoding))
        .collect::<Result<Vec<_>, _>>()?;
    certificates.sort();
    certificates.dedup();
    let certificates_len: usize = certificates.iter().map(Vec::len).sum();

    let digest_algorithms_len = tlv_len(digest_algorithm.len());
    let id_data = const_oid::db::rfc5911::ID_DATA.to_der().map_err(encoding)?;
    // EncapsulatedContentInfo ::= SEQUENCE { eContentType, eContent [0] EXPLICIT OCTET STRING OPTIONAL }
    let econtent_len = content.map_or(0, |c| tlv_len(tlv_len(c.len())));
    let eci_len = id_data.len() + econtent_len;
    let signed_data_len = VERSION_1.len()
        + digest_algorithms_len
        + tlv_len(eci_len)
        + tlv_len(certificates_len)
        + signer_infos.len();
    let id_signed_data = const_oid::db::rfc5911::ID_SIGNED_DATA
        .to_der()
        .map_err(encoding)?;
    let content_info_len = id_signed_data.len() + tlv_len(tlv_len(signed_data_len));

    let mut out = Vec::with_capacity(tlv_len(content_info_len));
    push_header(&mut out, TAG_SEQUENCE, content_info_len);
    out.extend_from_slice(&id_signed_data);
    push_header(&mut out, TAG_CONTEXT_0, tlv_len(signed_data_len));
    push_header(&mut out, TAG_SEQUENCE, signed_data_len);
    out.extend_from_slice(&VERSION_1);
    push_tlv(&mut out, TAG_SET, &digest_algorithm);
    push_header(&mut out, TAG_SEQUENCE, eci_len);
    out.extend_from_slice(&id_data);
    if let Some(content) = content {
        push_header(&mut out, TAG_CONTEXT_0, tlv_len(content.len()));
        push_tlv(&mut out, TAG_OCTET_STRING, content);
    }
    push_header(&mut out, TAG_CONTEXT_0, certificates_len);
    for certificate in &certificates {
        out.extend_from_slice(certificate);
    }
    out.extend_from_slice(&signer_infos);
    debug_assert_eq!(out.len(), tlv_len(content_info_len));
    Ok(out)
}

/// The content octets of a DER SET (tag, then its length), as [`signed_attributes`]
/// returns it.
fn set_content(set: &[u8]) -> Result<&[u8], SmimeError> {
    let malformed = || encoding("signed attributes are not one DER SET");
    let (&tag, rest) = set.split_first().ok_or_else(malformed)?;
    let (&first, rest) = rest.split_first().ok_or_else(malformed)?;
    let (len, content) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > std::mem::size_of::<usize>() || rest.len() < octets {
            return Err(malformed());
        }
        let (len_bytes, content) = rest.split_at(octets);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, content)
    };
    if tag != TAG_SET || content.len() != len {
        return Err(malformed());
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_der() {
        for len in [
            0usize,
            1,
            0x7f,
            0x80,
            0xff,
            0x100,
            0xffff,
            0x10000,
            10 << 20,
        ] {
            let mut out = Vec::new();
            push_header(&mut out, TAG_OCTET_STRING, len);
            let length = der::Length::try_from(len).expect("length");
            let expected = der::Header::new(der::Tag::OctetString, length)
                .to_der()
                .expect("header");
            assert_eq!(out, expected, "length {len}");
            assert_eq!(tlv_len(len), out.len() + len);
            let mut set = Vec::new();
            push_header(&mut set, TAG_SET, len);
            set.resize(set.len() + len, 0);
            assert_eq!(set_content(&set).expect("set").len(), len);
        }
    }
}
