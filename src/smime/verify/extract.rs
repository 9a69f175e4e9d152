//! Finding what was signed and the signature, strictly. A multipart/signed (RFC 1847
//! §2.1, RFC 8551 §3.5.3) has exactly two body parts and a closing delimiter, one
//! Content-Type and one boundary; anything a standard MIME parser could read
//! differently from us is `malformed`, never "valid": the verdict is about the text
//! the recipient's client shows, so we must see the same parts it sees.

use crate::mime::{self, ContentType, Header, Limits};
use crate::smime::ber;

/// What a signed message carries.
pub(super) enum Extracted {
    /// multipart/signed: the first body part (the signed bytes) and the CMS.
    Detached { content: Vec<u8>, cms: Vec<u8> },
    /// application/pkcs7-mime signed-data: the CMS with its content inside.
    Opaque { cms: Vec<u8> },
}

/// Why a message cannot be verified as it stands.
#[derive(Debug)]
pub(super) enum ExtractError {
    /// It does not claim to be signed.
    NotSigned,
    /// It claims to be signed and is not well formed.
    Malformed(String),
}

fn malformed(detail: impl Into<String>) -> ExtractError {
    ExtractError::Malformed(detail.into())
}

/// The one Content-Type of `headers`: `Ok(None)` when there is none, an error when
/// there are several (clients disagree on which one counts).
fn single_content_type(headers: &[Header]) -> Result<Option<ContentType>, ExtractError> {
    let mut fields = headers.iter().filter(|h| h.is("content-type"));
    let first = fields.next();
    if fields.next().is_some() {
        return Err(malformed("several Content-Type header fields"));
    }
    Ok(first.and_then(|h| ContentType::parse(&h.value())))
}

fn single_transfer_encoding(headers: &[Header]) -> Result<String, ExtractError> {
    let mut fields = headers.iter().filter(|h| h.is("content-transfer-encoding"));
    let first = fields.next();
    if fields.next().is_some() {
        return Err(malformed("several Content-Transfer-Encoding header fields"));
    }
    Ok(first
        .map(|h| h.value().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into()))
}

/// Whether a Content-Type names the CMS of S/MIME (`application/pkcs7-…` or the
/// `x-` spelling of older clients).
pub(super) fn is_pkcs7(ct: &ContentType, subtype: &str) -> bool {
    ct.kind == "application"
        && (ct.subtype == subtype || ct.subtype.strip_prefix("x-") == Some(subtype))
}

/// Splits a signed message. Line endings are made canonical first (RFC 8551 §3.1.1:
/// the signature covers the CRLF form).
pub(super) fn extract(message: &[u8], limits: &Limits) -> Result<Extracted, ExtractError> {
    let canonical = mime::to_crlf(message);
    let (headers, body_start) =
        mime::split_headers(&canonical).map_err(|e| malformed(format!("message header: {e}")))?;
    let ct = single_content_type(&headers)?.ok_or(ExtractError::NotSigned)?;
    let body = &canonical[body_start..];
    if ct.kind == "multipart" && ct.subtype == "signed" {
        let raw_value = headers
            .iter()
            .find(|h| h.is("content-type"))
            .map(raw_value)
            .unwrap_or_default();
        let params = strict_params(&raw_value)?;
        let boundary = boundary(&params)?;
        check_protocol(&params)?;
        let (content, signature_part) = two_parts(body, boundary.as_bytes())?;
        let (sig_headers, sig_body) = mime::split_headers(signature_part)
            .map(|(h, start)| (h, &signature_part[start..]))
            .map_err(|e| malformed(format!("signature part header: {e}")))?;
        let sig_ct = single_content_type(&sig_headers)?
            .ok_or_else(|| malformed("the signature part has no Content-Type"))?;
        if !is_pkcs7(&sig_ct, "pkcs7-signature") {
            return Err(malformed(
                "the second part is not application/pkcs7-signature",
            ));
        }
        let cms = decode_cms(&sig_headers, sig_body, limits)?;
        return Ok(Extracted::Detached {
            content: content.to_vec(),
            cms,
        });
    }
    if is_pkcs7(&ct, "pkcs7-mime") {
        match ct
            .param("smime-type")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("signed-data") | None => {}
            Some(_) => return Err(ExtractError::NotSigned),
        }
        return Ok(Extracted::Opaque {
            cms: decode_cms(&headers, body, limits)?,
        });
    }
    Err(ExtractError::NotSigned)
}

/// Content-Type parameters read strictly (RFC 2045 §5.1): `; name=value` with the
/// value a token or a quoted string, nothing else. A lenient reader and a strict one
/// can take different boundaries from the same field (an unquoted `a b`, a stray
/// comment, a duplicate), and then show different parts: such a field is malformed.
/// `value` is the field as written, folds included. Quoted strings may hold neither a
/// backslash nor a line break: parsers disagree on both (Python's `email` counts
/// quotes without honouring `\"`, and keeps a folded line break in the value), and
/// such a disagreement moves the boundary.
fn strict_params(value: &str) -> Result<Vec<(String, String)>, ExtractError> {
    let bad = || malformed("the Content-Type parameters cannot be read unambiguously");
    let is_token = |c: char| c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?=".contains(c);
    let mut chars = value.chars().peekable();
    // The media type itself.
    while chars.peek().is_some_and(|&c| c != ';') {
        chars.next();
    }
    let mut params = Vec::new();
    while chars.next() == Some(';') {
        let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
        };
        skip_ws(&mut chars);
        if chars.peek().is_none() {
            break; // a trailing ';'
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek().filter(|&&c| is_token(c)) {
            name.push(c.to_ascii_lowercase());
            chars.next();
        }
        skip_ws(&mut chars);
        if name.is_empty() || chars.next() != Some('=') {
            return Err(bad());
        }
        skip_ws(&mut chars);
        let mut text = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next().ok_or_else(bad)? {
                    '\\' | '\r' | '\n' => return Err(bad()),
                    '"' => break,
                    c => text.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek().filter(|&&c| is_token(c)) {
                text.push(c);
                chars.next();
            }
            if text.is_empty() {
                return Err(bad());
            }
        }
        skip_ws(&mut chars);
        if chars.peek().is_some_and(|&c| c != ';') {
            return Err(bad());
        }
        params.push((name, text));
    }
    Ok(params)
}

/// A field's value as written: after the colon, folds kept, the final CRLF removed.
fn raw_value(header: &Header) -> String {
    let raw = &header.raw;
    let start = raw
        .iter()
        .position(|&b| b == b':')
        .map_or(raw.len(), |i| i + 1);
    let value = raw[start..].strip_suffix(b"\r\n").unwrap_or(&raw[start..]);
    String::from_utf8_lossy(value).into_owned()
}

/// The boundary parameter: exactly one, no RFC 2231 forms, and a valid boundary
/// (RFC 2046 §5.1.1: 1 to 70 bchars, not ending in a space).
fn boundary(params: &[(String, String)]) -> Result<String, ExtractError> {
    let mut named = params
        .iter()
        .filter(|(name, _)| name == "boundary" || name.starts_with("boundary*"));
    let (name, value) = named
        .next()
        .ok_or_else(|| malformed("multipart/signed without a boundary"))?;
    if named.next().is_some() || name != "boundary" {
        return Err(malformed(
            "the boundary parameter is given more than once or in RFC 2231 form",
        ));
    }
    let bchar = |b: u8| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b);
    if value.is_empty() || value.len() > 70 || value.ends_with(' ') || !value.bytes().all(bchar) {
        return Err(malformed("the boundary is not a valid MIME boundary"));
    }
    Ok(value.clone())
}

/// RFC 1847 §2.1: the protocol parameter names the signature's type. Absent is
/// tolerated (the second part's own Content-Type decides); a different one is not.
fn check_protocol(params: &[(String, String)]) -> Result<(), ExtractError> {
    let protocols: Vec<&(String, String)> =
        params.iter().filter(|(n, _)| n == "protocol").collect();
    match protocols.as_slice() {
        [] => Ok(()),
        [(_, value)]
            if ContentType::parse(value).is_some_and(|p| is_pkcs7(&p, "pkcs7-signature")) =>
        {
            Ok(())
        }
        _ => Err(malformed(
            "the protocol parameter does not name application/pkcs7-signature",
        )),
    }
}

/// Kinds of line that begin with `--boundary`.
#[derive(Debug, PartialEq, Eq)]
enum Delimiter {
    Part,
    Close,
}

/// Classifies a line (without its CRLF) that begins with the dash-boundary: a
/// delimiter, a close delimiter (both may carry transport padding), or something
/// else, which a prefix-matching parser would take for a delimiter and a strict one
/// would not: the classic way to show a client other parts than were verified.
fn classify(rest: &[u8]) -> Option<Delimiter> {
    let (kind, padding) = match rest.strip_prefix(b"--") {
        Some(after) => (Delimiter::Close, after),
        None => (Delimiter::Part, rest),
    };
    padding
        .iter()
        .all(|&b| b == b' ' || b == b'\t')
        .then_some(kind)
}

/// The two body parts of a multipart/signed body (canonical CRLF). The CRLF before a
/// delimiter belongs to the delimiter (RFC 2046 §5.1.1), so the first part is exactly
/// the bytes the signature covers.
fn two_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<(&'a [u8], &'a [u8]), ExtractError> {
    let mut dash_boundary = b"--".to_vec();
    dash_boundary.extend_from_slice(boundary);
    // (start of the delimiter line, end of it including CRLF)
    let mut delimiters: Vec<(usize, usize)> = Vec::new();
    let mut closed: Option<(usize, usize)> = None;
    let mut at = 0;
    while at < body.len() {
        let line_end = find_crlf(body, at).map_or(body.len(), |i| i + 2);
        let line = body[at..line_end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&body[at..line_end]);
        if let Some(rest) = line.strip_prefix(dash_boundary.as_slice()) {
            match (classify(rest), closed) {
                (_, Some(_)) => {
                    return Err(malformed("the boundary occurs after the closing delimiter"));
                }
                (None, None) => {
                    return Err(malformed(
                        "a line begins with the boundary but is not a delimiter",
                    ));
                }
                (Some(Delimiter::Part), None) if delimiters.len() == 2 => {
                    return Err(malformed("multipart/signed has more than two body parts"));
                }
                (Some(Delimiter::Part), None) => delimiters.push((at, line_end)),
                (Some(Delimiter::Close), None) => closed = Some((at, line_end)),
            }
        }
        at = line_end;
    }
    let (close_start, _) = closed.ok_or_else(|| malformed("no closing delimiter"))?;
    let [(_, first_end), (second_start, second_end)] = delimiters[..] else {
        return Err(malformed(format!(
            "multipart/signed has {} body parts, not two",
            delimiters.len()
        )));
    };
    let part = |start: usize, next_delimiter: usize| {
        // The delimiter's CRLF precedes it; a part directly followed by one is empty.
        next_delimiter
            .checked_sub(2)
            .filter(|&end| end > start && body.get(end..next_delimiter) == Some(b"\r\n"))
            .map(|end| &body[start..end])
            .ok_or_else(|| malformed("an empty body part"))
    };
    Ok((
        part(first_end, second_start)?,
        part(second_end, close_start)?,
    ))
}

fn find_crlf(haystack: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| i + from)
}

/// The CMS of a signature part or opaque body, as DER.
fn decode_cms(headers: &[Header], body: &[u8], limits: &Limits) -> Result<Vec<u8>, ExtractError> {
    let raw = match single_transfer_encoding(headers)?.as_str() {
        "base64" => mime::base64_decode_lines(body)
            .map_err(|_| malformed("the signature is not valid base64"))?,
        "7bit" | "8bit" | "binary" => body.to_vec(),
        other => {
            return Err(malformed(format!(
                "the signature has transfer encoding {other}"
            )));
        }
    };
    ber::to_der(&raw, limits.max_depth * 4)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| malformed(format!("signature: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(body: &str, boundary: &str) -> Result<(String, String), String> {
        two_parts(body.as_bytes(), boundary.as_bytes())
            .map(|(a, b)| {
                (
                    String::from_utf8_lossy(a).into_owned(),
                    String::from_utf8_lossy(b).into_owned(),
                )
            })
            .map_err(|e| match e {
                ExtractError::Malformed(d) => d,
                ExtractError::NotSigned => "not signed".into(),
            })
    }

    #[test]
    fn two_parts_and_a_close_delimiter_are_split_exactly() {
        let body = "preamble\r\n--b\r\nsigned\r\n\r\n--b  \r\nsig\r\n--b--\t\r\nepilogue\r\n";
        assert_eq!(
            parts(body, "b"),
            Ok(("signed\r\n".to_string(), "sig".to_string()))
        );
    }

    #[test]
    fn anything_else_is_malformed() {
        for (body, why) in [
            ("--b\r\na\r\n--b\r\nsig\r\n", "no closing delimiter"),
            ("--b\r\na\r\n--b--\r\n", "one body part"),
            (
                "--b\r\na\r\n--b\r\nx\r\n--b\r\nsig\r\n--b--\r\n",
                "three body parts",
            ),
            ("--b\r\na\r\n--bc\r\nsig\r\n--b--\r\n", "boundary prefix"),
            (
                "--b\r\na\r\n--b\r\nsig\r\n--b--\r\n--b\r\nmore\r\n",
                "after close",
            ),
            ("--b\r\n--b\r\nsig\r\n--b--\r\n", "empty first part"),
        ] {
            assert!(parts(body, "b").is_err(), "{why}: accepted");
        }
    }

    #[test]
    fn boundaries_are_validated() {
        let b = |v: &str| strict_params(v).and_then(|p| boundary(&p)).ok();
        assert_eq!(b("multipart/signed; BOUNDARY=\"a b\""), Some("a b".into()));
        assert_eq!(
            b("multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x;"),
            Some("x".into())
        );
        for bad in [
            "multipart/signed; boundary=a; boundary=b",
            "multipart/signed; boundary=a; Boundary=a",
            "multipart/signed; boundary*=us-ascii''a",
            "multipart/signed; boundary*0=a",
            "multipart/signed; boundary=\"a \"",
            "multipart/signed; boundary=\"\"",
            "multipart/signed; boundary=a b",
            "multipart/signed; boundary=a (comment)",
            "multipart/signed; boundary=\"a\\\"b\"",
            "multipart/signed; boundary=\"unterminated",
            "multipart/signed; boundary",
            "multipart/signed; x=\"\\\\\"; boundary=\"a\"; y=\"; boundary=EVIL; w=\"",
            "multipart/signed; boundary=\"\\-\\-a\"",
            "multipart/signed; boundary=\"XX\r\n YY\"",
        ] {
            assert_eq!(b(bad), None, "accepted {bad:?}");
        }
        assert_eq!(
            b(&format!("multipart/signed; boundary={}", "x".repeat(71))),
            None
        );
    }
}
