//! BER to DER, for the CMS that real clients send: Thunderbird and Outlook write
//! indefinite lengths and segmented (constructed) OCTET STRINGs, which a DER parser
//! refuses (X.690 §8.1.3.6, §8.7.3; DER: §10.1, §10.2). Bounded in time, depth and
//! memory, and streaming: no tree of elements is built.
//!
//! The first pass walks the input once, validates it and measures what each element
//! becomes; input that is DER already is returned as it is (borrowed) and costs nothing
//! more. Otherwise a second walk records one `u32` per constructed element that changes
//! (its new content length), DER subtrees inside are marked to be copied whole, and a
//! third walk writes the output, sized exactly, in one go. Extra memory is at most
//! four bytes per two bytes of input (the smallest constructed element), plus the
//! output, which is about the input's size.

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
const CONSTRUCTED: u8 = 0x20;

/// Plan entry of a constructed element that is DER already, with all it contains:
/// written by copying its bytes.
const VERBATIM: u32 = u32::MAX;
/// Plan entry flag: the element becomes a primitive holding its segments' contents.
const FLATTEN: u32 = 1 << 31;
/// The longest content a plan entry can describe (`FLATTEN | MAX_LEN` stays below
/// [`VERBATIM`]).
const MAX_LEN: u32 = FLATTEN - 2;

/// Converts BER to DER. `max_depth` bounds nesting. Borrows the input (without any
/// trailing zero padding) when it is DER already.
pub fn to_der(input: &[u8], max_depth: usize) -> Result<Cow<'_, [u8]>, BerError> {
    let mut counting = Plan::counting();
    let root = measure(input, 0, max_depth, &mut counting)?;
    if root.used != input.len() && input[root.used..].iter().any(|&b| b != 0) {
        return Err(BerError::Invalid("trailing data after the outer element"));
    }
    let input = &input[..root.used];
    if !root.changed {
        return Ok(Cow::Borrowed(input));
    }
    let mut plan = Plan::recording(counting.peak);
    measure(input, 0, max_depth, &mut plan)?;
    let mut out = Vec::with_capacity(root.der_len());
    let mut cursor = 0;
    write(input, &plan.entries, &mut cursor, &mut out)?;
    Ok(Cow::Owned(out))
}

/// An element's identifier and length octets.
struct Header<'a> {
    tag: &'a [u8],
    constructed: bool,
    /// The definite content length, or `None` for the indefinite form.
    len: Option<usize>,
    /// Identifier and length octets together.
    size: usize,
    /// The length is definite and in its shortest form, as DER wants.
    minimal: bool,
}

/// Reads the header at the start of `input`; a definite length must fit in `input`.
fn header(input: &[u8]) -> Result<Header<'_>, BerError> {
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
    let constructed = first & CONSTRUCTED != 0;
    let len_byte = *input.get(pos).ok_or(BerError::Truncated)?;
    pos += 1;
    if len_byte == 0x80 {
        if !constructed {
            return Err(BerError::Invalid(
                "indefinite length on a primitive element",
            ));
        }
        return Ok(Header {
            tag,
            constructed,
            len: None,
            size: pos,
            minimal: false,
        });
    }
    let (len, minimal) = if len_byte & 0x80 == 0 {
        (usize::from(len_byte), true)
    } else {
        let n = usize::from(len_byte & 0x7f);
        if n > 4 {
            return Err(BerError::Invalid("length field longer than 4 bytes"));
        }
        let bytes = input.get(pos..pos + n).ok_or(BerError::Truncated)?;
        pos += n;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        // DER wants the shortest length form (X.690 §10.1).
        (len, bytes[0] != 0 && len >= 0x80)
    };
    if input.len() - pos < len {
        return Err(BerError::Truncated);
    }
    Ok(Header {
        tag,
        constructed,
        len: Some(len),
        size: pos,
        minimal,
    })
}

/// Calls `f` on the rest of the content at each child of the constructed element
/// `input` (whose header is `h`); `f` returns the bytes the child took. Returns the
/// bytes the whole element takes, end-of-contents octets included.
fn for_each_child<'a>(
    input: &'a [u8],
    h: &Header,
    mut f: impl FnMut(&'a [u8]) -> Result<usize, BerError>,
) -> Result<usize, BerError> {
    let mut pos = h.size;
    match h.len {
        Some(len) => {
            let end = h.size + len;
            while pos < end {
                pos += f(&input[pos..end])?;
            }
            Ok(end)
        }
        None => loop {
            let rest = &input[pos..];
            if rest.len() < 2 {
                return Err(BerError::Truncated);
            }
            if rest[0] == 0 && rest[1] == 0 {
                return Ok(pos + 2);
            }
            pos += f(rest)?;
        },
    }
}

/// The plan for the writing pass: one entry per constructed element that changes, in
/// the order the walk meets them ([`VERBATIM`] for one that does not, whose own
/// children then have none). Counting mode only measures how many entries there will
/// be at most, so that recording never reallocates.
struct Plan {
    entries: Vec<u32>,
    recording: bool,
    len: usize,
    peak: usize,
}

impl Plan {
    fn counting() -> Plan {
        Plan {
            entries: Vec::new(),
            recording: false,
            len: 0,
            peak: 0,
        }
    }

    fn recording(capacity: usize) -> Plan {
        Plan {
            entries: Vec::with_capacity(capacity),
            recording: true,
            len: 0,
            peak: 0,
        }
    }

    fn push(&mut self) -> usize {
        let index = self.len;
        self.len += 1;
        self.peak = self.peak.max(self.len);
        if self.recording {
            self.entries.push(0);
        }
        index
    }

    fn set(&mut self, index: usize, value: u32) {
        if let Some(entry) = self.entries.get_mut(index) {
            *entry = value;
        }
    }

    fn truncate(&mut self, len: usize) {
        self.len = len;
        self.entries.truncate(len);
    }
}

fn entry(content_len: usize, flatten: bool) -> Result<u32, BerError> {
    let len = u32::try_from(content_len)
        .ok()
        .filter(|&l| l <= MAX_LEN)
        .ok_or(BerError::Invalid("element longer than 2 GiB"))?;
    Ok(if flatten { FLATTEN | len } else { len })
}

/// What the measuring walk learned about one element.
struct Measured {
    /// Input bytes the element takes.
    used: usize,
    /// Content length once converted.
    content_len: usize,
    /// Identifier octets (flattening clears the constructed bit, nothing else).
    tag_len: usize,
    /// Its first identifier octet, when it is the only one.
    tag: Option<u8>,
    /// The conversion changes something in it.
    changed: bool,
    /// Converted, it is a primitive OCTET STRING.
    octets: bool,
    /// Constructed with only (converted) primitive OCTET STRINGs inside: the length of
    /// their contents joined.
    segments: Option<usize>,
    /// Its plan entry, when constructed.
    entry: Option<usize>,
}

impl Measured {
    fn der_len(&self) -> usize {
        self.tag_len + length_octets(self.content_len) + self.content_len
    }
}

/// What a constructed element's children add up to.
#[derive(Default)]
struct Children {
    count: usize,
    content_len: usize,
    changed: bool,
    not_octets: bool,
    segments: usize,
    /// Identifier octets of the first three children.
    shape: [Option<u8>; 3],
    /// The third child: its plan entry, segment length and converted length.
    third: Option<(Option<usize>, Option<usize>, usize)>,
}

impl Children {
    fn add(&mut self, child: &Measured) {
        if let Some(slot) = self.shape.get_mut(self.count) {
            *slot = child.tag;
        }
        if self.count == 2 {
            self.third = Some((child.entry, child.segments, child.der_len()));
        }
        self.count += 1;
        self.content_len += child.der_len();
        self.changed |= child.changed;
        self.not_octets |= !child.octets;
        self.segments += child.content_len;
    }

    /// For the CMS EncryptedContentInfo (a SEQUENCE of OID, AlgorithmIdentifier and
    /// `[0] IMPLICIT OCTET STRING`, RFC 5652 §6.1) whose `[0]` came segmented: its
    /// plan entry, segment length and current converted length.
    fn segmented_encrypted_content(&self, tag: &[u8]) -> Option<(usize, usize, usize)> {
        let shape = [Some(OID), Some(SEQUENCE), Some(CONTEXT_0_CONSTRUCTED)];
        if tag != [SEQUENCE] || self.count != 3 || self.shape != shape {
            return None;
        }
        match self.third {
            Some((Some(entry), Some(segments), der_len)) => Some((entry, segments, der_len)),
            _ => None,
        }
    }
}

/// Validates the element at the start of `input` and measures its conversion,
/// recording plan entries in `plan`.
fn measure(
    input: &[u8],
    depth: usize,
    max_depth: usize,
    plan: &mut Plan,
) -> Result<Measured, BerError> {
    if depth > max_depth {
        return Err(BerError::TooDeep(max_depth));
    }
    let h = header(input)?;
    let tag = (h.tag.len() == 1).then_some(h.tag[0]);
    let Some(len) = h.len.filter(|_| !h.constructed) else {
        return measure_constructed(input, &h, depth, max_depth, plan);
    };
    Ok(Measured {
        used: h.size + len,
        content_len: len,
        tag_len: h.tag.len(),
        tag,
        changed: !h.minimal,
        octets: tag == Some(OCTET_STRING),
        segments: None,
        entry: None,
    })
}

fn measure_constructed(
    input: &[u8],
    h: &Header,
    depth: usize,
    max_depth: usize,
    plan: &mut Plan,
) -> Result<Measured, BerError> {
    let index = plan.push();
    let mut children = Children::default();
    let used = for_each_child(input, h, |child| {
        let measured = measure(child, depth + 1, max_depth, plan)?;
        children.add(&measured);
        Ok(measured.used)
    })?;
    let mut content_len = children.content_len;
    let mut changed = children.changed || !h.minimal;
    if let Some((third, segments, der_len)) = children.segmented_encrypted_content(h.tag) {
        plan.set(third, entry(segments, true)?);
        content_len = content_len - der_len + 1 + length_octets(segments) + segments;
        changed = true;
    }
    let segments = (!children.not_octets).then_some(children.segments);
    // A segmented OCTET STRING becomes one primitive OCTET STRING (X.690 §10.2).
    let flatten = h.tag == [OCTET_STRING_CONSTRUCTED] && segments.is_some();
    if flatten {
        content_len = children.segments;
        changed = true;
    }
    if changed {
        plan.set(index, entry(content_len, flatten)?);
    } else {
        plan.truncate(index + 1);
        plan.set(index, VERBATIM);
    }
    Ok(Measured {
        used,
        content_len,
        tag_len: h.tag.len(),
        tag: (h.tag.len() == 1).then_some(h.tag[0]),
        changed,
        octets: flatten,
        segments,
        entry: Some(index),
    })
}

/// Writes the DER of the element at the start of `input`, following the plan from
/// `cursor`. Returns the input bytes it took.
fn write(
    input: &[u8],
    plan: &[u32],
    cursor: &mut usize,
    out: &mut Vec<u8>,
) -> Result<usize, BerError> {
    let h = header(input)?;
    if !h.constructed {
        let len = h.len.ok_or(BerError::Invalid("plan out of step"))?;
        out.extend_from_slice(h.tag);
        push_length(out, len);
        out.extend_from_slice(&input[h.size..h.size + len]);
        return Ok(h.size + len);
    }
    let entry = next_entry(plan, cursor)?;
    if entry == VERBATIM {
        let len = h.len.ok_or(BerError::Invalid("plan out of step"))?;
        out.extend_from_slice(&input[..h.size + len]);
        return Ok(h.size + len);
    }
    push_length_after(out, &h, entry);
    if entry & FLATTEN != 0 {
        return for_each_child(input, &h, |child| write_segments(child, plan, cursor, out));
    }
    for_each_child(input, &h, |child| write(child, plan, cursor, out))
}

/// Writes only the contents of a primitive OCTET STRING, or of the segments of a
/// constructed one being flattened.
fn write_segments(
    input: &[u8],
    plan: &[u32],
    cursor: &mut usize,
    out: &mut Vec<u8>,
) -> Result<usize, BerError> {
    let h = header(input)?;
    if !h.constructed {
        let len = h.len.ok_or(BerError::Invalid("plan out of step"))?;
        out.extend_from_slice(&input[h.size..h.size + len]);
        return Ok(h.size + len);
    }
    let entry = next_entry(plan, cursor)?;
    if entry == VERBATIM || entry & FLATTEN == 0 {
        return Err(BerError::Invalid("plan out of step"));
    }
    for_each_child(input, &h, |child| write_segments(child, plan, cursor, out))
}

fn next_entry(plan: &[u32], cursor: &mut usize) -> Result<u32, BerError> {
    let entry = *plan
        .get(*cursor)
        .ok_or(BerError::Invalid("plan out of step"))?;
    *cursor += 1;
    Ok(entry)
}

/// The identifier (primitive once flattened) and length octets of a constructed
/// element with plan entry `entry`.
fn push_length_after(out: &mut Vec<u8>, h: &Header, entry: u32) {
    if entry & FLATTEN != 0 {
        // Only single-octet tags (0x24, 0xa0) are ever flattened.
        out.push(h.tag[0] & !CONSTRUCTED);
    } else {
        out.extend_from_slice(h.tag);
    }
    push_length(out, (entry & !FLATTEN) as usize);
}

fn length_octets(len: usize) -> usize {
    if len < 0x80 {
        1
    } else {
        1 + (usize::BITS - len.leading_zeros()).div_ceil(8) as usize
    }
}

fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
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
        // Trailing zeros (padding some clients add) are left out of the borrow.
        let padded = [0x04, 0x01, 0xff, 0, 0, 0];
        assert_eq!(to_der(&padded, 8).expect("ok"), &[0x04, 0x01, 0xff][..]);
    }

    #[test]
    fn segmented_encrypted_content_becomes_a_primitive_context_tag() {
        // EncryptedContentInfo { id-data, AlgorithmIdentifier { OID }, [0] { "ab", "c" } }
        let ber = [
            0x30, 0x80, 0x06, 0x01, 0x2a, 0x30, 0x03, 0x06, 0x01, 0x2b, 0xa0, 0x80, 0x04, 0x02,
            b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0,
        ];
        assert_eq!(
            to_der(&ber, 8).expect("converts"),
            &[
                0x30, 0x0d, 0x06, 0x01, 0x2a, 0x30, 0x03, 0x06, 0x01, 0x2b, 0x80, 0x03, b'a', b'b',
                b'c'
            ][..]
        );
        // A fourth element: not an EncryptedContentInfo, the [0] stays constructed.
        let other = [
            0x30, 0x80, 0x06, 0x01, 0x2a, 0x30, 0x00, 0xa0, 0x03, 0x04, 0x01, b'a', 0x05, 0x00, 0,
            0,
        ];
        assert_eq!(
            to_der(&other, 8).expect("converts"),
            &[
                0x30, 0x0c, 0x06, 0x01, 0x2a, 0x30, 0x00, 0xa0, 0x03, 0x04, 0x01, b'a', 0x05, 0x00
            ][..]
        );
    }

    #[test]
    fn der_subtrees_inside_ber_are_copied_and_nested_segments_joined() {
        // SEQUENCE (indefinite) { SEQUENCE { INTEGER 5 } (DER), OCTET STRING constructed {
        // OCTET STRING constructed { "a" }, "bc" } }
        let ber = [
            0x30, 0x80, 0x30, 0x03, 0x02, 0x01, 0x05, 0x24, 0x09, 0x24, 0x03, 0x04, 0x01, b'a',
            0x04, 0x02, b'b', b'c', 0, 0,
        ];
        assert_eq!(
            to_der(&ber, 8).expect("converts"),
            &[
                0x30, 0x0a, 0x30, 0x03, 0x02, 0x01, 0x05, 0x04, 0x03, b'a', b'b', b'c'
            ][..]
        );
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
        assert_eq!(
            to_der(&[0x04, 0x80, 0, 0], 8),
            Err(BerError::Invalid(
                "indefinite length on a primitive element"
            ))
        );
        let mut deep = Vec::new();
        for _ in 0..100 {
            deep.extend_from_slice(&[0x30, 0x80]);
        }
        deep.extend(std::iter::repeat_n(0u8, 200));
        assert_eq!(to_der(&deep, 16), Err(BerError::TooDeep(16)));
        assert_eq!(
            to_der(&[0x04, 0x01, 0xff, 0x01], 8),
            Err(BerError::Invalid("trailing data after the outer element"))
        );
    }

    #[test]
    fn the_length_octets_are_counted_as_written() {
        for len in [
            0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 0xff_ffff, 0x100_0000,
        ] {
            let mut out = Vec::new();
            push_length(&mut out, len);
            assert_eq!(out.len(), length_octets(len), "{len:#x}");
        }
    }

    /// The tree-building converter this module had before, kept as the reference the
    /// streaming one must agree with.
    mod reference {
        use super::super::*;

        pub struct Element<'a> {
            tag: &'a [u8],
            constructed: bool,
            content: Content<'a>,
        }

        enum Content<'a> {
            Primitive(Cow<'a, [u8]>),
            Children(Vec<Element<'a>>),
        }

        pub fn to_der(input: &[u8], max_depth: usize) -> Result<Vec<u8>, BerError> {
            let (element, used) = parse(input, 0, max_depth)?;
            if used != input.len() && input[used..].iter().any(|&b| b != 0) {
                return Err(BerError::Invalid("trailing data after the outer element"));
            }
            let element = normalise(element);
            let mut out = Vec::new();
            encode(&element, &mut out);
            Ok(out)
        }

        fn parse<'a>(
            input: &'a [u8],
            depth: usize,
            max_depth: usize,
        ) -> Result<(Element<'a>, usize), BerError> {
            if depth > max_depth {
                return Err(BerError::TooDeep(max_depth));
            }
            let h = header(input)?;
            let mut children = Vec::new();
            if !h.constructed {
                let len = h.len.unwrap_or(0);
                let body = &input[h.size..h.size + len];
                let element = Element {
                    tag: h.tag,
                    constructed: false,
                    content: Content::Primitive(Cow::Borrowed(body)),
                };
                return Ok((element, h.size + len));
            }
            let used = for_each_child(input, &h, |child| {
                let (element, used) = parse(child, depth + 1, max_depth)?;
                children.push(element);
                Ok(used)
            })?;
            let element = Element {
                tag: h.tag,
                constructed: true,
                content: Content::Children(children),
            };
            Ok((element, used))
        }

        fn normalise(element: Element<'_>) -> Element<'_> {
            let Content::Children(children) = element.content else {
                return element;
            };
            let mut children: Vec<Element> = children.into_iter().map(normalise).collect();
            let encrypted_content_info = element.tag == [SEQUENCE]
                && children.len() == 3
                && children[0].tag == [OID]
                && children[1].tag == [SEQUENCE]
                && children[2].tag == [CONTEXT_0_CONSTRUCTED];
            if let Some(joined) = encrypted_content_info
                .then(|| join_segments(&children[2]))
                .flatten()
            {
                children[2] = Element {
                    tag: &[0x80],
                    constructed: false,
                    content: Content::Primitive(Cow::Owned(joined)),
                };
            }
            let parent = Element {
                tag: element.tag,
                constructed: element.constructed,
                content: Content::Children(children),
            };
            if element.tag == [OCTET_STRING_CONSTRUCTED]
                && let Some(joined) = join_segments(&parent)
            {
                return Element {
                    tag: &[OCTET_STRING],
                    constructed: false,
                    content: Content::Primitive(Cow::Owned(joined)),
                };
            }
            parent
        }

        fn join_segments(element: &Element) -> Option<Vec<u8>> {
            let Content::Children(children) = &element.content else {
                return None;
            };
            let mut joined = Vec::new();
            for child in children {
                match (child.tag, &child.content, child.constructed) {
                    ([OCTET_STRING], Content::Primitive(bytes), false) => {
                        joined.extend_from_slice(bytes)
                    }
                    _ => return None,
                }
            }
            Some(joined)
        }

        fn encode(element: &Element, out: &mut Vec<u8>) {
            out.extend_from_slice(element.tag);
            let mut content = Vec::new();
            match &element.content {
                Content::Primitive(bytes) => content.extend_from_slice(bytes),
                Content::Children(children) => {
                    for child in children {
                        encode(child, &mut content);
                    }
                }
            }
            push_length(out, content.len());
            out.extend_from_slice(&content);
        }
    }

    /// xorshift64*: deterministic test input without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn push_header(rng: &mut Rng, out: &mut Vec<u8>, tag: u8, len: Option<usize>) {
        out.push(tag);
        match len {
            None => out.push(0x80),
            Some(len) if rng.below(4) == 0 => {
                // A needlessly long length form.
                out.push(0x84);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
            Some(len) => push_length(out, len),
        }
    }

    /// A random BER element of the kinds CMS senders write.
    fn random_element(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
        let kind = if depth >= 5 { 0 } else { rng.below(6) };
        if kind <= 1 {
            let tag = [0x02, 0x04, 0x04, 0x06, 0x80, 0x13][rng.below(6)];
            let content: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
            push_header(rng, out, tag, Some(content.len()));
            out.extend_from_slice(&content);
            return;
        }
        let children = match kind {
            // An EncryptedContentInfo with its [0] segmented.
            2 => {
                let mut c = vec![0x06, 0x01, 0x2a, 0x30, 0x03, 0x06, 0x01, 0x2b];
                let mut segments = Vec::new();
                for _ in 0..rng.below(4) {
                    random_segments(rng, depth + 2, &mut segments);
                }
                let indefinite = rng.below(2) == 0;
                push_header(rng, &mut c, 0xa0, (!indefinite).then_some(segments.len()));
                c.extend_from_slice(&segments);
                if indefinite {
                    c.extend_from_slice(&[0, 0]);
                }
                (0x30, c)
            }
            3 => {
                let mut c = Vec::new();
                for _ in 0..rng.below(4) {
                    random_segments(rng, depth + 1, &mut c);
                }
                (0x24, c)
            }
            _ => {
                let mut c = Vec::new();
                for _ in 0..rng.below(4) {
                    random_element(rng, depth + 1, &mut c);
                }
                ([0x30, 0x31, 0xa0, 0xa1][rng.below(4)], c)
            }
        };
        let (tag, content) = children;
        let indefinite = rng.below(2) == 0;
        push_header(rng, out, tag, (!indefinite).then_some(content.len()));
        out.extend_from_slice(&content);
        if indefinite {
            out.extend_from_slice(&[0, 0]);
        }
    }

    /// An OCTET STRING segment: primitive, or itself segmented.
    fn random_segments(rng: &mut Rng, depth: usize, out: &mut Vec<u8>) {
        if depth >= 5 || rng.below(3) != 0 {
            let content: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            push_header(rng, out, 0x04, Some(content.len()));
            out.extend_from_slice(&content);
        } else {
            let mut c = Vec::new();
            for _ in 0..rng.below(3) {
                random_segments(rng, depth + 1, &mut c);
            }
            let indefinite = rng.below(2) == 0;
            push_header(rng, out, 0x24, (!indefinite).then_some(c.len()));
            out.extend_from_slice(&c);
            if indefinite {
                out.extend_from_slice(&[0, 0]);
            }
        }
    }

    #[test]
    fn the_streaming_conversion_agrees_with_the_tree_on_random_and_broken_ber() {
        let mut rng = Rng(0x5eed_1e55_c0ff_ee01);
        for case in 0..3000 {
            let mut ber = Vec::new();
            random_element(&mut rng, 0, &mut ber);
            let expected = reference::to_der(&ber, 16);
            let got = to_der(&ber, 16).map(Cow::into_owned);
            assert_eq!(got, expected, "case {case}: {}", hex::encode(&ber));
            if let Ok(der) = &got {
                // DER converts to itself, borrowed.
                assert!(
                    matches!(to_der(der, 16), Ok(Cow::Borrowed(d)) if d == &der[..]),
                    "case {case}: output is not DER"
                );
            }
            // Broken copies: both refuse or both agree.
            let mut broken = ber.clone();
            let at = rng.below(broken.len());
            match rng.below(3) {
                0 => broken.truncate(at),
                1 => broken[at] ^= 1 << rng.below(8),
                _ => broken.insert(at, rng.next() as u8),
            }
            assert_eq!(
                to_der(&broken, 16).map(Cow::into_owned),
                reference::to_der(&broken, 16),
                "broken case {case}: {}",
                hex::encode(&broken)
            );
        }
    }
}
