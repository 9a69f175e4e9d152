//! Transfer encodings that produce 7-bit lines of at most 76 characters.

use base64::Engine;

/// Base64 with CRLF line breaks every 76 characters, final CRLF included.
pub fn base64_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 57 * 78 + 80);
    base64_lines_into(data, &mut out);
    out
}

/// [`base64_lines`] appended to `out`, 57 input bytes (one 76-character line) at a
/// time, with no intermediate copy of the whole encoding.
pub fn base64_lines_into(data: &[u8], out: &mut Vec<u8>) {
    let engine = &base64::engine::general_purpose::STANDARD;
    out.reserve(data.len() / 57 * 78 + 80);
    let mut line = [0u8; 76];
    for chunk in data.chunks(57) {
        // 57 bytes encode to exactly 76 characters; a shorter last chunk to fewer.
        match engine.encode_slice(chunk, &mut line) {
            Ok(n) => out.extend_from_slice(&line[..n]),
            Err(_) => out.extend_from_slice(engine.encode(chunk).as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// [`base64_lines_into`] of the concatenation of `parts`, without joining them first
/// (a large encrypted message is encoded from its DER header and its ciphertext).
pub fn base64_lines_of_parts(parts: &[&[u8]], out: &mut Vec<u8>) {
    let engine = &base64::engine::general_purpose::STANDARD;
    let total: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(total / 57 * 78 + 80);
    let mut line = [0u8; 76];
    let mut carry = [0u8; 57];
    let mut carried = 0usize;
    let mut emit = |chunk: &[u8], out: &mut Vec<u8>| {
        match engine.encode_slice(chunk, &mut line) {
            Ok(n) => out.extend_from_slice(&line[..n]),
            Err(_) => out.extend_from_slice(engine.encode(chunk).as_bytes()),
        }
        out.extend_from_slice(b"\r\n");
    };
    for part in parts {
        let mut rest: &[u8] = part;
        if carried > 0 {
            let take = (57 - carried).min(rest.len());
            carry[carried..carried + take].copy_from_slice(&rest[..take]);
            carried += take;
            rest = &rest[take..];
            if carried < 57 {
                continue;
            }
            emit(&carry, out);
        }
        let whole = rest.len() / 57 * 57;
        for chunk in rest[..whole].chunks(57) {
            emit(chunk, out);
        }
        let tail = &rest[whole..];
        carry[..tail.len()].copy_from_slice(tail);
        carried = tail.len();
    }
    if carried > 0 {
        emit(&carry[..carried], out);
    }
}

/// Decodes base64 text broken into lines (any white space is skipped) without first
/// copying it into one compact string.
pub fn base64_decode_lines(text: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 3);
    // A multiple of four characters, so that chunks decode as the whole would.
    let mut chunk = [0u8; 4096];
    let mut filled = 0;
    for &b in text {
        if b.is_ascii_whitespace() {
            continue;
        }
        chunk[filled] = b;
        filled += 1;
        if filled == chunk.len() {
            engine.decode_vec(&chunk[..], &mut out)?;
            filled = 0;
        }
    }
    if filled > 0 {
        engine.decode_vec(&chunk[..filled], &mut out)?;
    }
    Ok(out)
}

/// Quoted-printable (RFC 2045 §6.7) of canonical CRLF text: line breaks stay hard
/// breaks, every other CR, LF and 8-bit byte is escaped, trailing white space is
/// escaped, soft breaks keep lines within 76 characters. "From " at a line start is
/// escaped too, so mbox-style relays cannot alter it.
pub fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    let lines: Vec<&[u8]> = split_crlf_lines(text);
    for (n, line) in lines.iter().enumerate() {
        let mut width = 0usize;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let needs_escape = b == b'='
                || !(b == b' ' || b == b'\t' || (33..=126).contains(&b))
                || ((b == b' ' || b == b'\t') && last)
                || (i == 0 && b == b'F' && line.starts_with(b"From "))
                || (i == 0 && b == b'.');
            let piece_len = if needs_escape { 3 } else { 1 };
            // Leave room for the soft break '='.
            if width + piece_len > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if needs_escape {
                out.extend_from_slice(format!("={b:02X}").as_bytes());
            } else {
                out.push(b);
            }
            width += piece_len;
        }
        if n + 1 < lines.len() || text.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Lines of a CRLF text without their CRLF; a text ending in CRLF has no empty last line.
fn split_crlf_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < text.len() {
        if text[i] == b'\r' && text[i + 1] == b'\n' {
            lines.push(&text[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_keeps_lines_short_and_seven_bit() {
        let text = "Grüße aus Köln = schön \r\nFrom here\r\n.dot\r\n".as_bytes();
        let qp = quoted_printable(text);
        let s = std::str::from_utf8(&qp).expect("ascii");
        assert!(s.is_ascii());
        assert!(s.contains("Gr=C3=BC=C3=9Fe"));
        assert!(s.contains("=3D"));
        assert!(s.contains("sch=C3=B6n=20\r\n"), "{s}");
        assert!(s.contains("=46rom here"), "{s}");
        assert!(s.contains("=2Edot"), "{s}");
        let long = vec![b'a'; 300];
        let qp = quoted_printable(&long);
        assert!(qp.split(|&b| b == b'\n').all(|l| l.len() <= 77));
    }

    #[test]
    fn base64_lines_decode_back_for_every_length() {
        for len in 0..300usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let text = base64_lines(&data);
            let compact: Vec<u8> = text
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let back = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("decodes");
            assert_eq!(back, data, "length {len}");
        }
    }

    #[test]
    fn base64_of_parts_equals_base64_of_the_joined_parts() {
        let data: Vec<u8> = (0..700usize).map(|i| (i * 13 % 256) as u8).collect();
        for cuts in [
            [0, 0],
            [1, 2],
            [56, 57],
            [57, 114],
            [3, 600],
            [100, 699],
            [700, 700],
        ] {
            let parts = [&data[..cuts[0]], &data[cuts[0]..cuts[1]], &data[cuts[1]..]];
            let mut ours = Vec::new();
            base64_lines_of_parts(&parts, &mut ours);
            assert_eq!(ours, base64_lines(&data), "cuts {cuts:?}");
        }
    }

    #[test]
    fn base64_decode_lines_reverses_base64_lines() {
        for len in [0usize, 1, 2, 3, 56, 57, 3071, 3072, 3073, 10_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let text = base64_lines(&data);
            assert_eq!(base64_decode_lines(&text).expect("decodes"), data, "{len}");
        }
        assert!(base64_decode_lines(b"QUJD\r\nR!==\r\n").is_err());
        assert!(base64_decode_lines(b"QUJDRA").is_err());
    }

    #[test]
    fn base64_lines_are_76_wide() {
        let out = base64_lines(&[0xffu8; 200]);
        let s = std::str::from_utf8(&out).expect("ascii");
        assert!(s.lines().all(|l| l.len() <= 76));
        assert!(s.ends_with("\r\n"));
    }
}
