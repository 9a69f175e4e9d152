//! Splitting messages and entities, and making an entity 7-bit clean.

use super::encode::{base64_lines, quoted_printable};
use super::header::{ContentType, Header};
use super::{Limits, MimeError};

/// RFC 5322 line limit, CRLF excluded.
const MAX_LINE: usize = 998;

/// Line endings made canonical: bare LF and bare CR become CRLF. Borrows the input
/// when it is canonical already (large messages are not copied for nothing).
pub fn to_crlf(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let canonical = memchr::memchr2_iter(b'\r', b'\n', input).all(|i| match input[i] {
        b'\r' => input.get(i + 1) == Some(&b'\n'),
        _ => i > 0 && input[i - 1] == b'\r',
    });
    if canonical {
        return std::borrow::Cow::Borrowed(input);
    }
    std::borrow::Cow::Owned(to_crlf_owned(input))
}

fn to_crlf_owned(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A message or entity: header fields and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

impl Message {
    pub fn content_type(&self) -> ContentType {
        content_type(&self.headers)
    }

    /// The Content-Type of these header fields (text/plain when absent).
    pub fn content_type_of(headers: &[Header]) -> ContentType {
        content_type(headers)
    }

    /// Header block, empty line, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        join(&self.headers, &self.body)
    }
}

fn join(headers: &[Header], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 512);
    for h in headers {
        out.extend_from_slice(&h.raw);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Splits canonical (CRLF) bytes into header fields and body.
pub fn split_message(canonical: &[u8]) -> Result<Message, MimeError> {
    let (headers, body_start) = split_headers(canonical)?;
    Ok(Message {
        headers,
        body: canonical[body_start..].to_vec(),
    })
}

/// The header fields of canonical (CRLF) bytes and the offset where the body starts,
/// without copying the body.
pub fn split_headers(canonical: &[u8]) -> Result<(Vec<Header>, usize), MimeError> {
    let (block, body_start) = if canonical.starts_with(b"\r\n") {
        (&canonical[..0], 2)
    } else {
        match find(canonical, b"\r\n\r\n", 0) {
            Some(i) => (&canonical[..i + 2], i + 4),
            None => (canonical, canonical.len()),
        }
    };
    Ok((parse_header_block(block)?, body_start))
}

/// Splits raw bytes whose body must stay untouched (binary CMS): only the header
/// block is made canonical; the body starts after the first empty line, whether the
/// lines end in CRLF or LF.
pub fn split_raw(raw: &[u8]) -> Result<Message, MimeError> {
    let (headers, body_start) = split_raw_headers(raw)?;
    Ok(Message {
        headers,
        body: raw[body_start..].to_vec(),
    })
}

/// [`split_raw`] without copying the body: the header fields and where the body starts.
pub fn split_raw_headers(raw: &[u8]) -> Result<(Vec<Header>, usize), MimeError> {
    let mut i = 0;
    let mut line_start = 0;
    let body_start = loop {
        if i >= raw.len() {
            break raw.len();
        }
        if raw[i] == b'\n' {
            let line = &raw[line_start..i];
            if line.is_empty() || line == b"\r" {
                break i + 1;
            }
            line_start = i + 1;
        }
        i += 1;
    };
    let header_end = if body_start == raw.len() && !raw.ends_with(b"\n") {
        raw.len()
    } else {
        line_start
    };
    Ok((
        parse_header_block(&to_crlf(&raw[..header_end]))?,
        body_start,
    ))
}

fn parse_header_block(block: &[u8]) -> Result<Vec<Header>, MimeError> {
    let mut headers: Vec<Header> = Vec::new();
    let mut start = 0;
    while start < block.len() {
        let end = find(block, b"\r\n", start)
            .map(|i| i + 2)
            .unwrap_or(block.len());
        let line = &block[start..end];
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            let last = headers
                .last_mut()
                .ok_or(MimeError::Malformed("continuation line before any header"))?;
            last.raw.extend_from_slice(line);
        } else {
            let colon = line.iter().position(|&b| b == b':');
            match colon {
                Some(c) if c > 0 && line[..c].iter().all(|&b| (33..=126).contains(&b)) => {}
                _ => return Err(MimeError::Malformed("header line without a field name")),
            }
            let mut raw = line.to_vec();
            if !raw.ends_with(b"\r\n") {
                raw.extend_from_slice(b"\r\n");
            }
            headers.push(Header { raw });
        }
        start = end;
    }
    Ok(headers)
}

fn content_type(headers: &[Header]) -> ContentType {
    headers
        .iter()
        .find(|h| h.is("content-type"))
        .and_then(|h| ContentType::parse(&h.value()))
        .unwrap_or_else(ContentType::default_text)
}

fn transfer_encoding(headers: &[Header]) -> String {
    headers
        .iter()
        .find(|h| h.is("content-transfer-encoding"))
        .map(|h| h.value().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".into())
}

/// True when the bytes are not safe on a 7-bit path: 8-bit or NUL bytes, or a line
/// longer than 998 characters.
fn needs_encoding(body: &[u8]) -> bool {
    let mut line = 0usize;
    for &b in body {
        match b {
            b'\n' => line = 0,
            b'\r' => {}
            0 | 0x80..=0xff => return true,
            _ => {
                line += 1;
                if line > MAX_LINE {
                    return true;
                }
            }
        }
    }
    false
}

/// Rewrites an entity (its Content-* headers and body, canonical CRLF) so that every
/// leaf is 7-bit: 8-bit text becomes quoted-printable, other 8-bit data base64;
/// multiparts and message/rfc822 parts are walked. Returns the entity unchanged when it
/// is already clean. Bytes it need not touch are kept exactly.
pub fn make_seven_bit_safe(entity: Message, limits: &Limits) -> Result<Message, MimeError> {
    let size = entity.body.len();
    if size > limits.max_size {
        return Err(MimeError::TooLarge {
            size,
            limit: limits.max_size,
        });
    }
    walk(entity, limits, 0)
}

/// [`make_seven_bit_safe`] for an entity whose body is borrowed: a single part that is
/// 7-bit clean already is returned as it is, without copying its body (the common
/// case for large messages); anything else is walked.
pub fn seven_bit_entity<'a>(
    headers: Vec<Header>,
    body: &'a [u8],
    limits: &Limits,
) -> Result<(Vec<Header>, std::borrow::Cow<'a, [u8]>), MimeError> {
    if body.len() > limits.max_size {
        return Err(MimeError::TooLarge {
            size: body.len(),
            limit: limits.max_size,
        });
    }
    // A clean, well-formed entity (a multipart with its attachments base64 already,
    // the common large message) is what the walk would give back: it is borrowed.
    if walk_keeps(&headers, body, limits, 0)? {
        return Ok((headers, std::borrow::Cow::Borrowed(body)));
    }
    let walked = make_seven_bit_safe(
        Message {
            headers,
            body: body.to_vec(),
        },
        limits,
    )?;
    Ok((walked.headers, std::borrow::Cow::Owned(walked.body)))
}

fn walk(entity: Message, limits: &Limits, depth: usize) -> Result<Message, MimeError> {
    if depth > limits.max_depth {
        return Err(MimeError::TooDeep {
            limit: limits.max_depth,
        });
    }
    let ct = entity.content_type();
    if ct.is_multipart() {
        return match ct.param("boundary") {
            Some(boundary) if !boundary.is_empty() => {
                let body = walk_multipart(&entity.body, boundary.as_bytes(), limits, depth)?;
                Ok(Message {
                    headers: entity.headers,
                    body,
                })
            }
            _ => Err(MimeError::Malformed("multipart without a boundary")),
        };
    }
    if !needs_encoding(&entity.body) {
        return Ok(entity);
    }
    let cte = transfer_encoding(&entity.headers);
    if cte == "base64" || cte == "quoted-printable" {
        // Already declared 7-bit; the 8-bit bytes in it are the sender's error.
        return Err(MimeError::Malformed(
            "8-bit data in a base64 or quoted-printable part",
        ));
    }
    if ct.is_message() {
        let inner = split_message(&entity.body)?;
        let (inner_content, inner_other): (Vec<Header>, Vec<Header>) = inner
            .headers
            .into_iter()
            .partition(|h| h.is_content_header());
        if inner_other.iter().any(|h| needs_encoding(&h.raw)) {
            return Err(MimeError::Malformed(
                "8-bit header in an attached message cannot be made 7-bit",
            ));
        }
        let walked = walk(
            Message {
                headers: inner_content,
                body: inner.body,
            },
            limits,
            depth + 1,
        )?;
        let mut headers = inner_other;
        headers.extend(walked.headers);
        let body = join(&headers, &walked.body);
        return Ok(Message {
            headers: with_transfer_encoding(entity.headers, "7bit"),
            body,
        });
    }
    let (encoding, body) = if ct.kind == "text" {
        ("quoted-printable", quoted_printable(&entity.body))
    } else {
        ("base64", base64_lines(&entity.body))
    };
    Ok(Message {
        headers: with_transfer_encoding(entity.headers, encoding),
        body,
    })
}

fn with_transfer_encoding(headers: Vec<Header>, encoding: &str) -> Vec<Header> {
    let mut out: Vec<Header> = headers
        .into_iter()
        .filter(|h| !h.is("content-transfer-encoding"))
        .collect();
    out.push(Header::new("Content-Transfer-Encoding", encoding));
    out
}

/// Walks each body part of a multipart body, keeping preamble, delimiters and
/// epilogue byte for byte.
fn walk_multipart(
    body: &[u8],
    boundary: &[u8],
    limits: &Limits,
    depth: usize,
) -> Result<Vec<u8>, MimeError> {
    let lines = delimiter_lines(body, boundary);
    if lines.is_empty() {
        return Err(MimeError::Malformed("multipart body without its boundary"));
    }
    let mut out = Vec::with_capacity(body.len() + body.len() / 3);
    out.extend_from_slice(&body[..lines[0].0]);
    for (k, &(start, end, closing)) in lines.iter().enumerate() {
        out.extend_from_slice(&body[start..end]);
        if closing {
            out.extend_from_slice(&body[end..]);
            return Ok(out);
        }
        let next = lines.get(k + 1).map(|l| l.0).unwrap_or(body.len());
        // The CRLF before the next delimiter belongs to that delimiter.
        let content_end = if next >= end + 2 && lines.get(k + 1).is_some() {
            next - 2
        } else {
            next
        };
        let part = split_message(&body[end..content_end.max(end)])?;
        let walked = walk(part, limits, depth + 1)?;
        out.extend_from_slice(&walked.to_bytes());
        if lines.get(k + 1).is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    // No closing delimiter: keep what we have (RFC 2046 asks for robustness here).
    Ok(out)
}

/// The delimiter lines of a multipart body: (start, end after its CRLF, closing), up
/// to and including the closing one.
fn delimiter_lines(body: &[u8], boundary: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut lines: Vec<(usize, usize, bool)> = Vec::new();
    let mut at = 0;
    while let Some(p) = find(body, &delimiter, at) {
        let line_start = p == 0 || (p >= 2 && &body[p - 2..p] == b"\r\n");
        let line_end = find(body, b"\r\n", p).map(|i| i + 2).unwrap_or(body.len());
        if line_start {
            let rest = &body[p + delimiter.len()..line_end];
            let closing = rest.starts_with(b"--");
            let trailing = if closing { &rest[2..] } else { rest };
            if trailing
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            {
                lines.push((p, line_end, closing));
                if closing {
                    break;
                }
            }
        }
        at = line_end.max(p + 1);
    }
    lines
}

/// Whether [`walk`] would give the entity back byte for byte (every leaf 7-bit clean,
/// every body part with its header block), found without copying anything large. An
/// error is the one the walk would report.
fn walk_keeps(
    headers: &[Header],
    body: &[u8],
    limits: &Limits,
    depth: usize,
) -> Result<bool, MimeError> {
    if depth > limits.max_depth {
        return Err(MimeError::TooDeep {
            limit: limits.max_depth,
        });
    }
    let ct = content_type(headers);
    if !ct.is_multipart() {
        return Ok(!needs_encoding(body));
    }
    let boundary = match ct.param("boundary") {
        Some(boundary) if !boundary.is_empty() => boundary,
        _ => return Err(MimeError::Malformed("multipart without a boundary")),
    };
    let lines = delimiter_lines(body, boundary.as_bytes());
    if lines.is_empty() {
        return Err(MimeError::Malformed("multipart body without its boundary"));
    }
    for (k, &(_, end, closing)) in lines.iter().enumerate() {
        if closing {
            return Ok(true);
        }
        // The CRLF before the next delimiter belongs to that delimiter; two delimiter
        // lines in a row make an empty part, which the walk writes out differently.
        let content_end = match lines.get(k + 1) {
            Some(&(next, ..)) if next >= end + 2 => next - 2,
            Some(_) => return Ok(false),
            None => body.len(),
        };
        let part = &body[end..content_end];
        if !part.starts_with(b"\r\n") && find(part, b"\r\n\r\n", 0).is_none() {
            // No empty line: the walk would add one.
            return Ok(false);
        }
        let (part_headers, body_start) = split_headers(part)?;
        if !walk_keeps(&part_headers, &part[body_start..], limits, depth + 1)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from >= haystack.len() {
        return None;
    }
    memchr::memmem::find(&haystack[from..], needle).map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(text: &str) -> Message {
        split_message(&to_crlf(text.as_bytes())).expect("split")
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(&*to_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert!(matches!(
            to_crlf(b"a\r\nb\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(&*to_crlf(b"\n"), b"\r\n");
        assert_eq!(&*to_crlf(b"\r"), b"\r\n");
        // Only exact CRLF pairs are left as they are.
        for (input, expected) in [
            (&b""[..], &b""[..]),
            (b"\r\n\r\n", b"\r\n\r\n"),
            (b"\r\r\n", b"\r\n\r\n"),
            (b"\r\n\n", b"\r\n\r\n"),
            (b"\n\r", b"\r\n\r\n"),
            (b"x\r\ny\rz", b"x\r\ny\r\nz"),
        ] {
            let out = to_crlf(input);
            assert_eq!(&*out, expected, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(
                matches!(out, std::borrow::Cow::Borrowed(_)),
                input == expected
            );
        }
    }

    #[test]
    fn clean_entities_are_untouched() {
        let e = entity("Content-Type: text/plain\n\nhello\n");
        let out = make_seven_bit_safe(e.clone(), &Limits::default()).expect("ok");
        assert_eq!(out, e);
    }

    /// The borrowed path of [`seven_bit_entity`] is taken exactly when the walk would
    /// give the entity back unchanged, and reports the walk's errors.
    #[test]
    fn a_borrowed_entity_is_what_the_walk_would_give() {
        let cases = [
            "Content-Type: text/plain\n\nhello\n",
            "Content-Type: multipart/mixed; boundary=b\n\npre\n--b\nContent-Type: text/plain\n\none\n--b\n\
             Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nQUJD\n--b--\nepilogue\n",
            // A part without an empty line, two delimiters in a row, no closing one.
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n--b--\n",
            "Content-Type: multipart/mixed; boundary=b\n\n--b\n--b\n\nx\n--b--\n",
            "Content-Type: multipart/mixed; boundary=b\n\n--b\n\nunclosed\n",
            // Nested, and 8-bit inside.
            "Content-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n\
             --i\n\nplain\n--i--\n\n--o--\n",
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\ncaf\u{e9}\n--b--\n",
            "Content-Type: message/rfc822\n\nSubject: x\n\nbody\n",
        ];
        for case in cases {
            let e = entity(case);
            let walked = make_seven_bit_safe(e.clone(), &Limits::default()).expect("walks");
            let (headers, body) =
                seven_bit_entity(e.headers.clone(), &e.body, &Limits::default()).expect("ok");
            assert_eq!(headers, walked.headers, "{case}");
            assert_eq!(&body[..], &walked.body[..], "{case}");
            let kept = walk_keeps(&e.headers, &e.body, &Limits::default(), 0).expect("ok");
            assert_eq!(kept, walked == e, "{case}");
            assert_eq!(
                matches!(body, std::borrow::Cow::Borrowed(_)),
                kept,
                "{case}"
            );
        }
        // Too deep, and a multipart without its boundary: the walk's errors.
        let limits = Limits {
            max_depth: 1,
            ..Limits::default()
        };
        let deep = entity(
            "Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=b\n\n\
             --b\nContent-Type: multipart/mixed; boundary=c\n\n--c\n\nx\n--c--\n--b--\n--a--\n",
        );
        assert!(matches!(
            seven_bit_entity(deep.headers.clone(), &deep.body, &limits),
            Err(MimeError::TooDeep { .. })
        ));
        let lost = entity("Content-Type: multipart/mixed; boundary=zz\n\n--b\n\nx\n--b--\n");
        assert!(matches!(
            seven_bit_entity(lost.headers.clone(), &lost.body, &Limits::default()),
            Err(MimeError::Malformed(_))
        ));
    }

    #[test]
    fn eight_bit_text_becomes_quoted_printable() {
        let e = entity(
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße\n",
        );
        let out = make_seven_bit_safe(e, &Limits::default()).expect("ok");
        let bytes = out.to_bytes();
        let s = String::from_utf8(bytes).expect("ascii");
        assert!(s.is_ascii());
        assert!(s.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
        assert!(!s.contains("8bit"));
        assert!(s.ends_with("Gr=C3=BC=C3=9Fe\r\n"), "{s}");
    }

    #[test]
    fn multiparts_are_walked_and_delimiters_kept() {
        let text = "Content-Type: multipart/mixed; boundary=XX\n\npreamble\n--XX\nContent-Type: text/plain\n\nplain\n--XX\nContent-Type: application/octet-stream\n\n\u{00ff}\u{00fe}\n--XX--\nepilogue\n";
        let out = make_seven_bit_safe(entity(text), &Limits::default()).expect("ok");
        let s = String::from_utf8(out.to_bytes()).expect("ascii");
        assert!(s.is_ascii(), "{s}");
        assert!(
            s.contains("preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nplain\r\n--XX\r\n"),
            "{s}"
        );
        // The CRLF before "--XX--" belongs to the delimiter: the part is just "ÿþ".
        assert!(
            s.contains("Content-Transfer-Encoding: base64\r\n\r\nw7/Dvg==\r\n\r\n--XX--"),
            "{s}"
        );
        assert!(s.ends_with("--XX--\r\nepilogue\r\n"), "{s}");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
            ));
        }
        text.push_str("Content-Type: text/plain\r\n\r\n\u{00e9}\r\n");
        let err = make_seven_bit_safe(entity(&text), &Limits::default()).unwrap_err();
        assert_eq!(err, MimeError::TooDeep { limit: 32 });
    }

    #[test]
    fn raw_split_keeps_binary_bodies() {
        let m = split_raw(b"Content-Type: a/b\nX: y\n\n\x00\r\x01\n").expect("split");
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.headers[1].raw, b"X: y\r\n");
        assert_eq!(m.body, b"\x00\r\x01\n");
        let m = split_raw(b"A: b\r\n\r\nbody").expect("split");
        assert_eq!(m.body, b"body");
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(split_message(b"no colon here\r\n\r\nbody").is_err());
        assert!(split_message(b" leading continuation\r\n\r\n").is_err());
    }
}
