//! Next-hop replies on the wire (RFC 5321 §4.2), parsed without I/O: one line at a
//! time into a [`Reply`], strictly (a code of 2xx..5xx, a space or hyphen after it, the
//! same code on every line of a multi-line reply) and sanitised (no control characters,
//! no over-long text), because the hop's text is passed on to our sender as its verdict.

use super::error::ProtocolError;
use crate::smtp::Reply;

/// Longest reply line read from a hop, CRLF included. RFC 5321 §4.5.3.1.5 allows 512;
/// real servers stay far below this.
pub const MAX_LINE: usize = 4096;
/// Most lines of one reply (an EHLO reply has one per extension).
pub const MAX_LINES: usize = 200;
/// Bytes of one line of text passed on: code, enhanced code and text then fit
/// the 512-octet reply line of RFC 5321 §4.5.3.1.5.
pub const MAX_TEXT: usize = 480;

/// A reply being read, line by line.
#[derive(Default)]
pub struct ReplyParser {
    code: u16,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Takes one line (with or without its CRLF). `Ok(Some(reply))` after the last line
    /// of the reply, `Ok(None)` when more lines follow.
    pub fn push(&mut self, raw: &[u8]) -> Result<Option<Reply>, ProtocolError> {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let malformed = || ProtocolError::Malformed {
            line: String::from_utf8_lossy(&raw[..raw.len().min(80)]).into_owned(),
        };
        let code = match raw {
            [a @ b'2'..=b'5', b @ b'0'..=b'5', c @ b'0'..=b'9', ..] => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(malformed()),
        };
        let more = match raw.get(3) {
            None | Some(b' ') => false,
            Some(b'-') => true,
            Some(_) => return Err(malformed()),
        };
        if self.code != 0 && self.code != code {
            return Err(ProtocolError::MixedCodes {
                first: self.code,
                then: code,
            });
        }
        self.code = code;
        self.lines
            .push(clean_text(raw.get(4..).unwrap_or_default()));
        if !more {
            return Ok(Some(finish(code, std::mem::take(&mut self.lines))));
        }
        if self.lines.len() >= MAX_LINES {
            return Err(ProtocolError::TooManyLines { limit: MAX_LINES });
        }
        Ok(None)
    }
}

/// The text of one line as we may pass it on: valid UTF-8, control characters (bare
/// CR, NUL, TAB, ESC …) turned into spaces, at most [`MAX_TEXT`] bytes (whole
/// characters).
pub fn clean_text(raw: &[u8]) -> String {
    let mut text = String::new();
    for c in String::from_utf8_lossy(raw).chars() {
        let c = if c.is_control() { ' ' } else { c };
        if text.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        text.push(c);
    }
    text
}

/// Splits an RFC 3463 enhanced status code off the text when its class matches the
/// reply code (RFC 2034 §3: `class.subject.detail` on every line).
fn finish(code: u16, mut lines: Vec<String>) -> Reply {
    let enhanced = lines
        .first()
        .and_then(|l| l.split_whitespace().next())
        .filter(|w| is_enhanced_code(w, code))
        .map(str::to_string)
        .unwrap_or_default();
    if !enhanced.is_empty() {
        for line in lines.iter_mut() {
            if let Some(rest) = line.strip_prefix(enhanced.as_str()) {
                *line = rest.trim_start().to_string();
            }
        }
    }
    Reply {
        code,
        enhanced,
        lines,
    }
}

fn is_enhanced_code(word: &str, code: u16) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    parts.len() == 3
        && parts[0] == (code / 100).to_string()
        && digits(parts[1], 3)
        && digits(parts[2], 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&[u8]]) -> Result<Reply, ProtocolError> {
        let mut p = ReplyParser::default();
        for line in lines {
            if let Some(reply) = p.push(line)? {
                return Ok(reply);
            }
        }
        panic!("reply not finished")
    }

    #[test]
    fn single_and_multi_line_replies_with_enhanced_codes() {
        let r = parse(&[b"250 2.1.0 Sender ok\r\n"]).expect("reply");
        assert_eq!((r.code, r.enhanced.as_str()), (250, "2.1.0"));
        assert_eq!(r.lines, ["Sender ok"]);
        let r = parse(&[b"550-5.1.1 no such\r\n", b"550 5.1.1 user\r\n"]).expect("reply");
        assert_eq!(r.lines, ["no such", "user"]);
        let r = parse(&[b"354\r\n"]).expect("bare code");
        assert_eq!((r.code, r.lines.len()), (354, 1));
    }

    #[test]
    fn an_enhanced_code_of_another_class_stays_text() {
        let r = parse(&[b"250 5.1.1 odd\r\n"]).expect("reply");
        assert_eq!(r.enhanced, "");
        assert_eq!(r.lines, ["5.1.1 odd"]);
    }

    #[test]
    fn mixed_codes_and_malformed_lines_are_protocol_errors() {
        assert!(matches!(
            parse(&[b"250-a\r\n", b"550 b\r\n"]),
            Err(ProtocolError::MixedCodes {
                first: 250,
                then: 550
            })
        ));
        for bad in [&b"25O ok"[..], b"250ok", b"199 x", b"600 x", b"", b"hello"] {
            assert!(
                matches!(parse(&[bad]), Err(ProtocolError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_is_sanitised_before_it_is_passed_on() {
        let r = parse(&[b"550 5.7.1 bad\rinjected\x00\x1b[31m"]).expect("reply");
        assert_eq!(r.lines, ["bad injected  [31m"]);
        let long = format!("550 {}", "x".repeat(3000));
        let r = parse(&[long.as_bytes()]).expect("reply");
        assert_eq!(r.lines[0].len(), MAX_TEXT);
        let r = parse(&[b"550 5.1.1 caf\xc3\xa9 \xff"]).expect("reply");
        assert_eq!(r.lines, ["café \u{fffd}"]);
        let wide = format!("550 {}", "é".repeat(400));
        let r = parse(&[wide.as_bytes()]).expect("reply");
        assert_eq!(r.lines[0].len(), MAX_TEXT);
    }

    #[test]
    fn endless_replies_stop() {
        let mut p = ReplyParser::default();
        let mut result = Ok(None);
        for _ in 0..=MAX_LINES {
            result = p.push(b"250-x");
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(ProtocolError::TooManyLines { .. })));
    }
}
