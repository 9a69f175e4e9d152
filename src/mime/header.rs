//! Header fields and the Content-Type / Content-Transfer-Encoding values.

/// One header field: its raw bytes, folded lines and final CRLF included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub raw: Vec<u8>,
}

impl Header {
    /// A header from name and value; the value must not contain CR or LF.
    pub fn new(name: &str, value: &str) -> Header {
        Header {
            raw: format!("{name}: {value}\r\n").into_bytes(),
        }
    }

    /// The field name, as written.
    pub fn name(&self) -> &str {
        let end = self
            .raw
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(self.raw.len());
        std::str::from_utf8(&self.raw[..end]).unwrap_or("").trim()
    }

    pub fn is(&self, name: &str) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// The unfolded value, without the trailing CRLF.
    pub fn value(&self) -> String {
        let start = self
            .raw
            .iter()
            .position(|&b| b == b':')
            .map(|i| i + 1)
            .unwrap_or(self.raw.len());
        let value: Vec<u8> = self.raw[start..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        String::from_utf8_lossy(&value).trim().to_string()
    }

    /// Content-* headers describe the entity and move with it; MIME-Version counts too.
    pub fn is_content_header(&self) -> bool {
        let name = self.name();
        name.len() >= 8 && name[..8].eq_ignore_ascii_case("content-")
            || name.eq_ignore_ascii_case("mime-version")
    }
}

/// A parsed Content-Type: lower-cased type and subtype, parameters with lower-cased names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub kind: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// The RFC 2045 default: `text/plain; charset=us-ascii`.
    pub fn default_text() -> Self {
        ContentType {
            kind: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
        }
    }

    /// Parses a Content-Type value; `None` for a syntax error (RFC 2045 §5.2 then says
    /// to treat the entity as text/plain).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = split_params(value).into_iter();
        let media = parts.next()?;
        let (kind, subtype) = media.split_once('/')?;
        let (kind, subtype) = (
            kind.trim().to_ascii_lowercase(),
            subtype.trim().to_ascii_lowercase(),
        );
        if kind.is_empty() || subtype.is_empty() || !is_token(&kind) || !is_token(&subtype) {
            return None;
        }
        let params = parts
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
            })
            .collect();
        Some(ContentType {
            kind,
            subtype,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_multipart(&self) -> bool {
        self.kind == "multipart"
    }

    pub fn is_message(&self) -> bool {
        self.kind == "message" && (self.subtype == "rfc822" || self.subtype == "global")
    }
}

fn is_token(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
}

/// Splits on `;` outside quoted strings.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for ch in value.chars() {
        match ch {
            _ if escaped => {
                current.push(ch);
                escaped = false;
            }
            '\\' if quoted => {
                current.push(ch);
                escaped = true;
            }
            '"' => {
                current.push(ch);
                quoted = !quoted;
            }
            ';' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for ch in inner.chars() {
        if escaped {
            out.push(ch);
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_parse_with_quoted_parameters() {
        let ct = ContentType::parse("Multipart/Mixed; boundary=\"a;b \\\"c\\\"\"; charset=utf-8")
            .expect("parses");
        assert_eq!(
            (ct.kind.as_str(), ct.subtype.as_str()),
            ("multipart", "mixed")
        );
        assert_eq!(ct.param("boundary"), Some("a;b \"c\""));
        assert_eq!(ct.param("charset"), Some("utf-8"));
        assert!(ContentType::parse("garbage").is_none());
        assert!(ContentType::parse("text/").is_none());
    }

    #[test]
    fn header_values_unfold() {
        let h = Header {
            raw: b"Subject: a\r\n  folded\r\n".to_vec(),
        };
        assert!(h.is("subject"));
        assert_eq!(h.value(), "a  folded");
        assert!(Header::new("Content-Type", "text/plain").is_content_header());
        assert!(Header::new("MIME-Version", "1.0").is_content_header());
        assert!(!Header::new("Subject", "x").is_content_header());
    }
}
