//! A first, structural read of a SAML Response before any cryptography: what the
//! unsigned envelope says (Destination, InResponseTo, Status), how many assertions it
//! carries, and which signature and digest algorithms it names. Pure: no I/O.
//!
//! samael checks the signed part; when only the assertion is signed (the common
//! case), it never looks at the envelope at all, so these checks are ours. They also
//! give a refusal its clear reason (unsigned, SHA-1, two assertions) where samael only
//! says "signature not valid".

use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;

use super::Reason;

pub(super) const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
pub(super) const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const DSIG_NS: &[u8] = b"http://www.w3.org/2000/09/xmldsig#";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
/// Deeper nesting than this is not a SAML response (and not worth parsing).
const MAX_DEPTH: usize = 48;

/// What the envelope of a SAML Response says, before any signature is checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Envelope {
    pub destination: Option<String>,
    pub in_response_to: Option<String>,
    /// The top-level StatusCode's Value.
    pub status: Option<String>,
    pub assertions: usize,
    pub encrypted_assertions: usize,
    pub signatures: usize,
    pub signature_methods: Vec<String>,
    pub digest_methods: Vec<String>,
}

impl Envelope {
    pub fn status_is_success(&self) -> bool {
        self.status.as_deref() == Some(STATUS_SUCCESS)
    }
}

/// Reads the envelope, refusing what is not a single well-formed SAML Response
/// without a DTD.
pub(super) fn read(xml: &str) -> Result<Envelope, Reason> {
    let mut reader = NsReader::from_str(xml);
    let mut envelope = Envelope::default();
    // Local names of the open elements (protocol namespace only; others as "").
    let mut path: Vec<&'static str> = Vec::new();
    let mut seen_root = false;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|_| Reason::Malformed)?;
        let ns = match ns {
            ResolveResult::Bound(ns) => Some(ns.0.to_vec()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(_) => return Err(Reason::Malformed),
        };
        match event {
            Event::DocType(_) => return Err(Reason::DocType),
            // Canonicalisation drops comments, so a comment inside signed text (a
            // NameID) keeps the signature valid while a parser may read only part of
            // the text (CVE-2017-11427 and its kin). No IdP needs them.
            Event::Comment(_) | Event::PI(_) => return Err(Reason::Comment),
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if !seen_root {
                    seen_root = true;
                    if ns.as_deref() != Some(PROTOCOL_NS) || e.local_name().as_ref() != b"Response"
                    {
                        return Err(Reason::NotAResponse);
                    }
                    envelope.destination = attribute(e, b"Destination")?;
                    envelope.in_response_to = attribute(e, b"InResponseTo")?;
                } else if path.is_empty() {
                    // A second root element.
                    return Err(Reason::Malformed);
                }
                element(&mut envelope, &path, ns.as_deref(), e)?;
                if !empty {
                    if path.len() >= MAX_DEPTH {
                        return Err(Reason::Malformed);
                    }
                    path.push(name_of(ns.as_deref(), e));
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root || !path.is_empty() {
        return Err(Reason::Malformed);
    }
    Ok(envelope)
}

/// The names the envelope checks care about; every other element is "".
fn name_of(ns: Option<&[u8]>, e: &BytesStart<'_>) -> &'static str {
    match (ns, e.local_name().as_ref()) {
        (Some(PROTOCOL_NS), b"Response") => "Response",
        (Some(PROTOCOL_NS), b"Status") => "Status",
        _ => "",
    }
}

fn element(
    envelope: &mut Envelope,
    path: &[&'static str],
    ns: Option<&[u8]>,
    e: &BytesStart<'_>,
) -> Result<(), Reason> {
    let local = e.local_name();
    match (ns, local.as_ref()) {
        (Some(ASSERTION_NS), b"Assertion") => envelope.assertions += 1,
        (Some(ASSERTION_NS), b"EncryptedAssertion") => envelope.encrypted_assertions += 1,
        (Some(DSIG_NS), b"Signature") => envelope.signatures += 1,
        (Some(DSIG_NS), b"SignatureMethod") => {
            envelope
                .signature_methods
                .push(attribute(e, b"Algorithm")?.unwrap_or_default());
        }
        (Some(DSIG_NS), b"DigestMethod") => {
            envelope
                .digest_methods
                .push(attribute(e, b"Algorithm")?.unwrap_or_default());
        }
        (Some(PROTOCOL_NS), b"StatusCode") if path == ["Response", "Status"] => {
            envelope.status = attribute(e, b"Value")?;
        }
        // An assertion-namespace element that only samael's flexible parsing would
        // accept under another name is no concern here: samael reads the signed part.
        _ => {}
    }
    Ok(())
}

/// An attribute's raw value (no entity expansion: the values compared here never
/// need one, so an escaped value just fails to match).
fn attribute(e: &BytesStart<'_>, name: &[u8]) -> Result<Option<String>, Reason> {
    for attr in e.attributes() {
        let attr = attr.map_err(|_| Reason::Malformed)?;
        if attr.key.as_ref() == name {
            let value = std::str::from_utf8(&attr.value).map_err(|_| Reason::Malformed)?;
            return Ok(Some(value.to_string()));
        }
    }
    Ok(None)
}

/// Signature algorithms accepted (XML-DSig URIs, RFC 9231 §2.3): RSA with SHA-256,
/// SHA-384 or SHA-512 (PKCS#1 v1.5), ECDSA with SHA-256 or SHA-384.
pub(super) const ALLOWED_SIGNATURES: [(&str, samael::crypto::AllowedSignatureAlgorithm); 5] = {
    use samael::crypto::AllowedSignatureAlgorithm as A;
    [
        (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            A::RsaSha256,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384",
            A::RsaSha384,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512",
            A::RsaSha512,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            A::EcdsaSha256,
        ),
        (
            "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384",
            A::EcdsaSha384,
        ),
    ]
};

/// Digest algorithms accepted in signature references.
const ALLOWED_DIGESTS: [&str; 3] = [
    "http://www.w3.org/2001/04/xmlenc#sha256",
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha512",
];

/// A refused algorithm's name for the refusal text: only names from this list are
/// ever repeated, never the response's own text.
fn algorithm_name(uri: &str) -> &'static str {
    match uri.rsplit_once('#').map(|(_, name)| name) {
        Some("rsa-sha1") => "RSA-SHA1",
        Some("dsa-sha1") => "DSA-SHA1",
        Some("hmac-sha1") => "HMAC-SHA1",
        Some("ecdsa-sha1") => "ECDSA-SHA1",
        Some("sha1") => "SHA-1",
        Some("rsa-md5") => "RSA-MD5",
        Some("md5") => "MD5",
        Some("rsa-sha224") => "RSA-SHA224",
        Some("ecdsa-sha224") => "ECDSA-SHA224",
        Some("sha224") => "SHA-224",
        Some("ecdsa-sha512") => "ECDSA-SHA512",
        Some(name) if name.starts_with("hmac-") => "HMAC",
        _ => "an unknown algorithm",
    }
}

/// Refuses a response that names a signature or digest algorithm outside the lists.
pub(super) fn check_algorithms(envelope: &Envelope) -> Result<(), Reason> {
    for method in &envelope.signature_methods {
        if !ALLOWED_SIGNATURES.iter().any(|(uri, _)| uri == method) {
            return Err(Reason::WeakAlgorithm(algorithm_name(method)));
        }
    }
    for method in &envelope.digest_methods {
        if !ALLOWED_DIGESTS.contains(&method.as_str()) {
            return Err(Reason::WeakAlgorithm(algorithm_name(method)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &str = r##"<?xml version="1.0"?>
<p:Response xmlns:p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:a="urn:oasis:names:tc:SAML:2.0:assertion" ID="r1" InResponseTo="id-1" Destination="https://gw/saml/acs">
  <a:Issuer>idp</a:Issuer>
  <p:Status><p:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"><p:StatusCode Value="x"/></p:StatusCode></p:Status>
  <a:Assertion ID="a1"><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>
    <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
    <ds:Reference URI="#a1"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/></ds:Reference>
  </ds:SignedInfo></ds:Signature></a:Assertion>
</p:Response>"##;

    #[test]
    fn the_envelope_of_a_response_is_read() {
        let e = read(RESPONSE).expect("reads");
        assert_eq!(e.destination.as_deref(), Some("https://gw/saml/acs"));
        assert_eq!(e.in_response_to.as_deref(), Some("id-1"));
        assert!(e.status_is_success(), "{e:?}");
        assert_eq!((e.assertions, e.signatures), (1, 1));
        assert!(check_algorithms(&e).is_ok());
    }

    #[test]
    fn sha1_signatures_are_named_and_refused() {
        let xml = RESPONSE
            .replace("xmldsig-more#rsa-sha256", "xmldsig#rsa-sha1")
            .replace("xmlenc#sha256", "xmldsig#sha1");
        let e = read(&xml).expect("reads");
        let err = check_algorithms(&e).unwrap_err();
        assert_eq!(err, Reason::WeakAlgorithm("RSA-SHA1"));
    }

    #[test]
    fn a_dtd_another_root_or_broken_xml_is_refused() {
        let dtd = format!(
            "<!DOCTYPE p:Response [<!ENTITY x \"y\">]>{}",
            RESPONSE.trim_start_matches("<?xml version=\"1.0\"?>\n")
        );
        assert_eq!(read(&dtd), Err(Reason::DocType));
        assert_eq!(
            read("<a:Assertion xmlns:a=\"urn:oasis:names:tc:SAML:2.0:assertion\"/>"),
            Err(Reason::NotAResponse)
        );
        assert_eq!(read(&RESPONSE[..200]), Err(Reason::Malformed));
        assert_eq!(read("<x:Response>"), Err(Reason::Malformed));
    }

    #[test]
    fn a_comment_or_processing_instruction_anywhere_is_refused() {
        let xml = RESPONSE.replace(
            "<a:Issuer>idp</a:Issuer>",
            "<a:Issuer>i<!-- x -->dp</a:Issuer>",
        );
        assert_eq!(read(&xml), Err(Reason::Comment));
        let xml = RESPONSE.replace(
            "<a:Issuer>idp</a:Issuer>",
            "<?pi x?><a:Issuer>idp</a:Issuer>",
        );
        assert_eq!(read(&xml), Err(Reason::Comment));
    }

    #[test]
    fn a_failed_status_is_not_success() {
        let xml = RESPONSE.replace("status:Success", "status:Responder");
        assert!(!read(&xml).expect("reads").status_is_success());
        // Only the top-level StatusCode counts, not a nested one.
        let xml = RESPONSE
            .replace(
                "Value=\"x\"",
                "Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"",
            )
            .replacen("status:Success", "status:Requester", 1);
        assert!(!read(&xml).expect("reads").status_is_success());
    }

    #[test]
    fn assertions_are_counted_wherever_they_hide() {
        let xml = RESPONSE.replace(
            "<p:Status>",
            "<p:Extensions><a:Assertion ID=\"evil\"/></p:Extensions><p:Status>",
        );
        assert_eq!(read(&xml).expect("reads").assertions, 2);
    }
}
