//! BER to DER, for the CMS that real clients send: Thunderbird and Outlook write
//! indefinite lengths and segmented (constructed) OCTET STRINGs, which a DER parser
//! refuses. Bounded: nesting depth and lengths are checked, nothing is read past the
//! input, and the output is never larger than the input. Input that is DER already is
//! returned as it is (borrowed), and converted input is written once: a large message
//! is not copied level by level.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    #[error("truncated BER")]
    Truncated,
    #[error("BER nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("invalid BER: {0}")]
    Invalid(&'static str),
}

const OCTET_STRING: u8 = 0x04;
const OCTET_STRING_CONSTRUCTED: u8 = 0x24;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const CONTEXT_0_CONSTRUCTED: u8 = 0xa0;
const CONTEXT_0_PRIMITIVE: u8 = 0x80;

/// One parsed element; primitive contents borrow the input.
struct Element<'a> {
    tag: &'a [u8],
    constructed: bool,
    /// Primitive content, or the converted children of a constructed element.
    content: Content<'a>,
}

enum Content<'a> {
    Primitive(Cow<'a, [u8]>),
    Children(Vec<Element<'a>>),
}

/// Converts BER to DER. `max_depth` bounds nesting. Borrows the input (without any
/// trailing zero padding) when it is DER already.
pub fn to_der(input: &[u8], max_depth: usize) -> Result<Cow<'_, [u8]>, BerError> {
    let mut changed = false;
    let (element, used) = parse(input, 0, max_depth, &mut changed)?;
    if used != input.len() && input[used..].iter().any(|&b| b != 0) {
        return Err(BerError::Invalid("trailing data after the outer element"));
    }
    let element = normalise(element, &mut changed);
    if !changed {
        return Ok(Cow::Borrowed(&input[..used]));
    }
    let mut out = Vec::with_capacity(encoded_len(&element));
    encode(&element, &mut out);
    Ok(Cow::Owned(out))
}

fn parse<'a>(
    input: &'a [u8],
    depth: usize,
    max_depth: usize,
    changed: &mut bool,
) -> Result<(Element<'a>, usize), BerError> {
    if depth > max_depth {
        return Err(BerError::TooDeep(max_depth));
    }
    let first = *input.first().ok_or(BerError::Truncated)?;
    let mut pos = 1;
    if first & 0x1f == 0x1f {
        loop {
            let b = *input.get(pos).ok_or(BerError::Truncated)?;
            pos += 1;
            if pos > 6 {
                return Err(BerError::Invalid("tag number too long"));
            }
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let tag = &input[..pos];
    let constructed = first & 0x20 != 0;
    let len_byte = *input.get(pos).ok_or(BerError::Truncated)?;
    pos += 1;
    if len_byte == 0x80 {
        if !constructed {
            return Err(BerError::Invalid(
                "indefinite length on a primitive element",
            ));
        }
        *changed = true;
        let mut children = Vec::new();
        loop {
            let rest = &input[pos..];
            if rest.len() < 2 {
                return Err(BerError::Truncated);
            }
            if rest[0] == 0 && rest[1] == 0 {
                pos += 2;
                break;
            }
            let (child, used) = parse(rest, depth + 1, max_depth, changed)?;
            children.push(child);
            pos += used;
        }
        return Ok((
            Element {
                tag,
                constructed,
                content: Content::Children(children),
            },
            pos,
        ));
    }
    let len = if len_byte & 0x80 == 0 {
        usize::from(len_byte)
    } else {
        let n = usize::from(len_byte & 0x7f);
        if n == 0 || n > 4 {
            return Err(BerError::Invalid("length field longer than 4 bytes"));
        }
        let bytes = input.get(pos..pos + n).ok_or(BerError::Truncated)?;
        pos += n;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        // DER wants the shortest length form.
        if bytes[0] == 0 || len < 0x80 {
            *changed = true;
        }
        len
    };
    let end = pos.checked_add(len).ok_or(BerError::Truncated)?;
    let body = input.get(pos..end).ok_or(BerError::Truncated)?;
    let content = if constructed {
        let mut children = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let (child, used) = parse(&body[at..], depth + 1, max_depth, changed)?;
            children.push(child);
            at += used;
        }
        Content::Children(children)
    } else {
        Content::Primitive(Cow::Borrowed(body))
    };
    Ok((
        Element {
            tag,
            constructed,
            content,
        },
        end,
    ))
}

/// Joins segmented OCTET STRINGs, including the `[0] IMPLICIT OCTET STRING` of a CMS
/// EncryptedContentInfo (a SEQUENCE of OID, AlgorithmIdentifier, [0]).
fn normalise<'a>(element: Element<'a>, changed: &mut bool) -> Element<'a> {
    let Content::Children(children) = element.content else {
        return element;
    };
    let mut children: Vec<Element> = children
        .into_iter()
        .map(|c| normalise(c, changed))
        .collect();
    let encrypted_content_info = element.tag == [SEQUENCE]
        && children.len() == 3
        && children[0].tag == [OID]
        && children[1].tag == [SEQUENCE]
        && children[2].tag == [CONTEXT_0_CONSTRUCTED];
    if let Some(joined) = encrypted_content_info
        .then(|| join_segments(&children[2]))
        .flatten()
    {
        *changed = true;
        children[2] = Element {
            tag: &[CONTEXT_0_PRIMITIVE],
            constructed: false,
            content: Content::Primitive(Cow::Owned(joined)),
        };
    }
    if element.tag == [OCTET_STRING_CONSTRUCTED] {
        let parent = Element {
            tag: element.tag,
            constructed: true,
            content: Content::Children(children),
        };
        if let Some(joined) = join_segments(&parent) {
            *changed = true;
            return Element {
                tag: &[OCTET_STRING],
                constructed: false,
                content: Content::Primitive(Cow::Owned(joined)),
            };
        }
        return parent;
    }
    Element {
        tag: element.tag,
        constructed: element.constructed,
        content: Content::Children(children),
    }
}

/// The concatenated contents when every child is a primitive OCTET STRING.
fn join_segments(element: &Element) -> Option<Vec<u8>> {
    let Content::Children(children) = &element.content else {
        return None;
    };
    let mut joined = Vec::new();
    for child in children {
        match (child.tag, &child.content) {
            ([OCTET_STRING], Content::Primitive(bytes)) => joined.extend_from_slice(bytes),
            _ => return None,
        }
    }
    Some(joined)
}

fn content_len(element: &Element) -> usize {
    match &element.content {
        Content::Primitive(bytes) => bytes.len(),
        Content::Children(children) => children.iter().map(encoded_len).sum(),
    }
}

fn encoded_len(element: &Element) -> usize {
    let len = content_len(element);
    element.tag.len() + length_header(len).len() + len
}

fn length_header(len: usize) -> Vec<u8> {
    if len < 0x80 {
        return vec![len as u8];
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let mut header = vec![0x80 | (bytes.len() - skip) as u8];
    header.extend_from_slice(&bytes[skip..]);
    header
}

fn encode(element: &Element, out: &mut Vec<u8>) {
    out.extend_from_slice(element.tag);
    out.extend_from_slice(&length_header(content_len(element)));
    match &element.content {
        Content::Primitive(bytes) => out.extend_from_slice(bytes),
        Content::Children(children) => {
            for child in children {
                encode(child, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_and_segments_become_der() {
        // SEQUENCE (indefinite) { OCTET STRING constructed (indefinite) { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0,
        ];
        assert_eq!(
            to_der(&ber, 8).expect("converts"),
            &[0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c'][..]
        );
    }

    #[test]
    fn der_passes_through_unchanged() {
        let der = [0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0xff];
        let converted = to_der(&der, 8).expect("ok");
        assert!(
            matches!(converted, Cow::Borrowed(_)),
            "no copy of DER input"
        );
        assert_eq!(converted, &der[..]);
        // A non-minimal length is not DER: rewritten.
        let long_form = [0x04, 0x81, 0x01, 0xff];
        assert_eq!(to_der(&long_form, 8).expect("ok"), &[0x04, 0x01, 0xff][..]);
    }

    #[test]
    fn hostile_lengths_and_depth_are_refused() {
        assert_eq!(
            to_der(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff, 0x00], 8),
            Err(BerError::Truncated)
        );
        assert!(to_der(&[0x04, 0x85, 1, 0, 0, 0, 0], 8).is_err());
        assert_eq!(
            to_der(&[0x30, 0x80, 0x04, 0x01], 8),
            Err(BerError::Truncated)
        );
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        deep.extend(std::iter::repeat_n(0u8, 200));
        assert_eq!(to_der(&deep, 16), Err(BerError::TooDeep(16)));
    }
}
