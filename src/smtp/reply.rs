//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code ("2.1.0"); empty for replies that carry none (220, 354).
    pub enhanced: String,
    /// One entry per line of text.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply {
            code,
            enhanced: enhanced.to_string(),
            lines: vec![text.into()],
        }
    }

    pub fn multiline(code: u16, enhanced: &str, lines: Vec<String>) -> Self {
        Reply {
            code,
            enhanced: enhanced.to_string(),
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The text as one line, for logs.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Wire form: `CODE-…` continuation lines, `CODE …` last line, CRLF each. Text is
    /// cleaned of CR, LF and control characters so no reply can inject a line.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let lines: Vec<&String> = if self.lines.is_empty() {
            Vec::new()
        } else {
            self.lines.iter().collect()
        };
        let count = lines.len().max(1);
        for i in 0..count {
            let sep = if i + 1 == count { ' ' } else { '-' };
            let text = lines.get(i).map(|s| s.as_str()).unwrap_or("");
            let clean: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let line = if self.enhanced.is_empty() {
                format!("{}{sep}{clean}\r\n", self.code)
            } else {
                format!("{}{sep}{} {clean}\r\n", self.code, self.enhanced)
            };
            out.extend_from_slice(line.as_bytes());
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.enhanced.is_empty() {
            write!(f, "{} {}", self.code, self.text())
        } else {
            write!(f, "{} {} {}", self.code, self.enhanced, self.text())
        }
    }
}

impl From<crate::policy::Rejection> for Reply {
    fn from(r: crate::policy::Rejection) -> Self {
        Reply::new(r.code, r.enhanced, r.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_written_one_line_each_without_injection() {
        let r = Reply::multiline(
            250,
            "",
            vec!["gw".into(), "PIPELINING".into(), "SIZE 10".into()],
        );
        assert_eq!(r.to_wire(), b"250-gw\r\n250-PIPELINING\r\n250 SIZE 10\r\n");
        let r = Reply::new(550, "5.7.1", "bad\r\n250 ok");
        assert_eq!(r.to_wire(), b"550 5.7.1 bad  250 ok\r\n");
    }
}
