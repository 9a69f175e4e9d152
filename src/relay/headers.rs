//! The header fields the relay reads and writes on a raw message (CRLF lines): the
//! result stamp it adds and strips, From/To/Cc for the policy and Bcc detection,
//! Message-ID and Subject for the log. The body is never touched here.

/// The stamp header: added to inbound mail, stripped from anything arriving.
pub const STAMP: &str = "X-Smimegate";

/// Offset of the empty line that ends the header section (or the message length).
fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 2)
}

/// The header fields: (name, raw field including continuation lines and CRLF).
fn fields(message: &[u8]) -> Vec<(&[u8], std::ops::Range<usize>)> {
    let end = header_end(message);
    let mut out: Vec<(&[u8], std::ops::Range<usize>)> = Vec::new();
    let mut at = 0;
    while at < end {
        let line_end = message[at..end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(end, |i| at + i + 2);
        let line = &message[at..line_end];
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = out.last_mut() {
                last.1.end = line_end;
            }
        } else {
            // `Name :` (white space before the colon, RFC 5322 §4.5.1 obsolete syntax)
            // is the same field to most readers: the name is trimmed.
            let colon = line.iter().position(|&b| b == b':');
            let name = colon.map_or(&line[..0], |c| line[..c].trim_ascii_end());
            out.push((name, at..line_end));
        }
        at = line_end;
    }
    out
}

/// Unfolded values of every field called `name`.
pub fn values(message: &[u8], name: &str) -> Vec<String> {
    fields(message)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, range)| {
            let field = &message[range.clone()];
            let colon = field.iter().position(|&b| b == b':').map_or(0, |c| c + 1);
            let raw = &field[colon..];
            String::from_utf8_lossy(raw)
                .replace("\r\n", "")
                .trim()
                .to_string()
        })
        .collect()
}

/// The Subject, decoded (RFC 2047 encoded words in any charset mail-parser knows,
/// folded lines joined), read with mail-parser from the header section only. `None`
/// when there is no Subject field or it is empty. Malformed encoded words are kept
/// as their text, never an error: the log shows what the sender wrote.
pub fn subject(message: &[u8]) -> Option<String> {
    use mail_parser::{HeaderName, MessageParser};
    let header = &message[..header_end(message).min(message.len())];
    // mail-parser reads a field up to its line end: end the last one.
    let header: std::borrow::Cow<'_, [u8]> = if header.ends_with(b"\n") {
        header.into()
    } else {
        [header, b"\r\n"].concat().into()
    };
    let parsed = MessageParser::new()
        .header_text(HeaderName::Subject)
        .parse_headers(header.as_ref())?;
    let subject = parsed.subject()?.trim();
    (!subject.is_empty()).then(|| subject.to_string())
}

/// The first value of `name`.
pub fn value(message: &[u8], name: &str) -> Option<String> {
    values(message, name).into_iter().next()
}

/// The length of the leading run of header field lines of a CRLF message: fields and
/// their continuations, up to an empty line (not included) or the first line that is
/// neither (which, with everything after it, is body).
pub fn field_lines_len(message: &[u8]) -> usize {
    let mut at = 0;
    while at < message.len() {
        let end = message[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(message.len(), |i| at + i + 2);
        let line = &message[at..end];
        let is_field = match line.first() {
            Some(b' ' | b'\t') => at > 0,
            // A field name, then the colon (white space between them is the obsolete
            // syntax of RFC 5322 §4.5.1, still read by most).
            _ => line.iter().position(|&b| b == b':').is_some_and(|c| {
                let name = line[..c].trim_ascii_end();
                !name.is_empty() && name.iter().all(|b| (33..=126).contains(b))
            }),
        };
        if !is_field {
            break;
        }
        at = end;
    }
    at
}

/// Removes every field called `name` (with its continuation lines).
pub fn strip(message: Vec<u8>, name: &str) -> Vec<u8> {
    retain(message, |field| {
        !field.eq_ignore_ascii_case(name.as_bytes())
    })
}

/// Keeps the fields whose name `keep` accepts (with their continuation lines); a line
/// without a field name is dropped too.
pub fn retain(message: Vec<u8>, keep: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let ranges: Vec<std::ops::Range<usize>> = fields(&message)
        .into_iter()
        .filter(|(n, _)| n.is_empty() || !keep(n))
        .map(|(_, r)| r)
        .collect();
    if ranges.is_empty() {
        return message;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for r in ranges {
        out.extend_from_slice(&message[at..r.start]);
        at = r.end;
    }
    out.extend_from_slice(&message[at..]);
    out
}

/// The message with its header section made unambiguous; the body is untouched.
/// Every line ending of the header section becomes CRLF (a bare CR or LF ends a line
/// for some readers and not for others, so a stamp hidden behind one would survive
/// stripping), and a continuation line before the first field is dropped (it would
/// continue whatever field is put above it: our stamp).
pub fn canonical_header(message: Vec<u8>) -> Vec<u8> {
    // The header section ends at the first empty line, whatever ends its lines.
    let mut at = 0;
    let body_start = loop {
        let Some(rel) = message[at..].iter().position(|&b| b == b'\r' || b == b'\n') else {
            break None;
        };
        let end = at + rel;
        let next = if message[end] == b'\r' && message.get(end + 1) == Some(&b'\n') {
            end + 2
        } else {
            end + 1
        };
        if end == at {
            break Some(next);
        }
        at = next;
    };
    let header_len = body_start.map_or(message.len(), |b| b.min(message.len()));
    let header = crate::mime::to_crlf(&message[..header_len]);
    let mut start = 0;
    while matches!(header.get(start), Some(b' ' | b'\t')) {
        start = header[start..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header.len(), |i| start + i + 2);
    }
    if start == 0 && header.len() == header_len && header[..] == message[..header_len] {
        return message;
    }
    let mut out = Vec::with_capacity(message.len() + 64);
    out.extend_from_slice(&header[start..]);
    out.extend_from_slice(&message[header_len..]);
    out
}

/// Whether the message is S/MIME at the top (signed or encrypted), by its
/// Content-Type alone: a cheap test before anything is decoded.
pub fn is_smime(message: &[u8]) -> bool {
    values(message, "Content-Type").iter().any(|v| {
        let v = v.to_ascii_lowercase();
        v.contains("pkcs7") || v.starts_with("multipart/signed")
    })
}

/// Puts a field at the top of the header section. The value is cleaned of CR/LF.
pub fn prepend(message: &[u8], name: &str, value: &str) -> Vec<u8> {
    let line = field_line(name, value);
    let mut out = Vec::with_capacity(message.len() + line.len());
    out.extend_from_slice(&line);
    out.extend_from_slice(message);
    out
}

/// [`prepend`] in the message's own buffer (a large message is not copied).
pub fn prepend_owned(mut message: Vec<u8>, name: &str, value: &str) -> Vec<u8> {
    let line = field_line(name, value);
    message.splice(0..0, line);
    message
}

/// `name: value` and CRLF, the value cleaned of CR/LF.
pub fn field_line(name: &str, value: &str) -> Vec<u8> {
    let clean: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    format!("{name}: {clean}\r\n").into_bytes()
}

/// The addr-specs of an address-list header value (`Name <a@b>, c@d, group: e@f;`).
pub fn addresses(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut angle, mut comment) = (false, false, 0usize);
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
                continue;
            }
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            '<' if !quoted && comment == 0 => {
                angle = true;
                current.clear();
                continue;
            }
            '>' if angle => {
                angle = false;
                items.push(std::mem::take(&mut current));
                // Skip to the next separator.
                for c in chars.by_ref() {
                    if c == ',' || c == ';' {
                        break;
                    }
                }
                continue;
            }
            ',' | ';' if !quoted && !angle && comment == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            ':' if !quoted && !angle && comment == 0 => {
                // A group name ends here.
                current.clear();
                continue;
            }
            _ => {}
        }
        if comment == 0 && !(c == '"' || c == ')') {
            current.push(c);
        }
    }
    items.push(current);
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| s.contains('@') && !s.contains(' '))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"X-Smimegate: forged\r\nFrom: Bob <bob@partner.example>\r\nTo: \"Doe, Jane\" <jane@corp.example>,\r\n carl@corp.example\r\nx-smimegate: forged too\r\n folded\r\nX-Smimegate : forged with a space\r\nX-SMIMEGATE\t:forged with a tab\r\nSubject: hi\r\n\r\nX-Smimegate: in the body stays\r\n";

    #[test]
    fn stamp_fields_are_stripped_only_from_the_header() {
        let out = strip(MESSAGE.to_vec(), STAMP);
        let text = String::from_utf8(out).expect("utf8");
        assert!(!text.contains("forged"), "{text}");
        assert!(text.contains("X-Smimegate: in the body stays"));
        assert!(text.starts_with("From: Bob"));
        let stamped = prepend(text.as_bytes(), STAMP, "decrypted\r\nBcc: evil@x");
        assert!(stamped.starts_with(b"X-Smimegate: decrypted  Bcc: evil@x\r\nFrom:"));
    }

    #[test]
    fn header_sections_are_made_unambiguous_before_stamping() {
        let bare_cr = b"Subject: hi\rX-Smimegate: decrypted; signature=valid\r\nFrom: a@b.example\r\n\r\nbody\rstays\n".to_vec();
        let out = strip(canonical_header(bare_cr), STAMP);
        assert_eq!(
            out,
            b"Subject: hi\r\nFrom: a@b.example\r\n\r\nbody\rstays\n"
        );
        let leading = b" ; signature=valid; signer=ceo@corp.example\r\n\tmore\r\nFrom: a@b.example\r\n\r\nbody\r\n".to_vec();
        let stamped = prepend(
            &canonical_header(leading),
            STAMP,
            "not-encrypted; signature=none",
        );
        assert_eq!(
            stamped,
            b"X-Smimegate: not-encrypted; signature=none\r\nFrom: a@b.example\r\n\r\nbody\r\n"
        );
        let lf = b"From: a@b.example\nSubject: x\n\nbody\n".to_vec();
        assert_eq!(
            canonical_header(lf),
            b"From: a@b.example\r\nSubject: x\r\n\r\nbody\n"
        );
        let clean = b"From: a@b.example\r\n\r\nbody\r\n".to_vec();
        assert_eq!(canonical_header(clean.clone()), clean);
    }

    #[test]
    fn address_lists_are_read_like_a_mail_client_reads_them() {
        let to = value(MESSAGE, "to").expect("to");
        assert_eq!(addresses(&to), ["jane@corp.example", "carl@corp.example"]);
        assert_eq!(
            addresses("team: a@x.example, B <b@x.example>; (c@comment) d@x.example"),
            ["a@x.example", "b@x.example", "d@x.example"]
        );
        assert_eq!(value(MESSAGE, "Subject").as_deref(), Some("hi"));
        assert_eq!(value(MESSAGE, "Cc"), None);
    }

    #[test]
    fn subjects_are_decoded_from_rfc_2047_encoded_words() {
        let subject = |raw: &str| {
            super::subject(format!("From: a@b\r\n{raw}\r\nTo: c@d\r\n\r\nbody\r\n").as_bytes())
        };
        assert_eq!(
            subject("Subject: plain words").as_deref(),
            Some("plain words")
        );
        assert_eq!(
            subject("Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=").as_deref(),
            Some("Grüße aus Köln")
        );
        assert_eq!(
            subject("Subject: =?ISO-8859-1?Q?Stra=DFe_und_Pl=E4tze?=").as_deref(),
            Some("Straße und Plätze")
        );
        // Folded over two lines, two encoded words: the white space between adjacent
        // encoded words is dropped (RFC 2047 §6.2).
        assert_eq!(
            subject("Subject: =?UTF-8?Q?Rechnung_f=C3=BCr?=\r\n =?UTF-8?Q?_November?=").as_deref(),
            Some("Rechnung für November")
        );
        assert_eq!(
            subject("Subject: a long\r\n\tfolded subject").as_deref(),
            Some("a long folded subject")
        );
        assert_eq!(subject("X-Other: no subject"), None);
        assert_eq!(subject("Subject:   "), None);
    }

    #[test]
    fn malformed_encoded_words_are_kept_as_text_without_failing() {
        let subject = |raw: &[u8]| {
            let mut m = b"From: a@b\r\n".to_vec();
            m.extend_from_slice(raw);
            m.extend_from_slice(b"\r\n\r\nbody\r\n");
            super::subject(&m)
        };
        for raw in [
            &b"Subject: =?UTF-8?B?not base64!?="[..],
            b"Subject: =?NO-SUCH-CHARSET?Q?abc?=",
            b"Subject: =?UTF-8?Q?unterminated",
            b"Subject: =?UTF-8?X?abc?=",
            b"Subject: raw \xff\xfe bytes",
        ] {
            let got = subject(raw);
            assert!(
                got.as_deref().is_some_and(|s| !s.is_empty()),
                "{:?}: {got:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(super::subject(b""), None);
        assert_eq!(
            super::subject(b"Subject: only a header"),
            Some("only a header".into())
        );
    }
}
