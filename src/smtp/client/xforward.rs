//! XFORWARD (Postfix's extension, see Postfix XFORWARD_README): tells a Postfix next
//! hop who the original client was (NAME, ADDR, PROTO, HELO), so its logging, SPF and
//! DNSBL checks see the real client instead of the gateway. Sent before MAIL, only the
//! attributes the hop announced, values as xtext (RFC 3461 §4).

use std::net::IpAddr;

/// The original client of a transaction, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XforwardAttrs {
    /// The client's host name as verified by us (reverse and forward DNS); `None`
    /// sends `[UNAVAILABLE]`.
    pub name: Option<String>,
    pub addr: Option<IpAddr>,
    /// `SMTP` or `ESMTP` (what the client used: HELO or EHLO).
    pub proto: Option<String>,
    /// The name the client gave in HELO/EHLO.
    pub helo: Option<String>,
}

/// Longest XFORWARD command line we write (RFC 5321 §4.5.3.1.4: 512 with CRLF).
const MAX_COMMAND: usize = 500;

impl XforwardAttrs {
    /// The XFORWARD command lines (without CRLF) carrying every attribute the hop
    /// offers (`offered`: the words after XFORWARD in its EHLO reply, upper case).
    pub fn commands(&self, offered: &[String]) -> Vec<String> {
        let offers = |name: &str| offered.iter().any(|o| o == name);
        let mut attrs = Vec::new();
        if offers("NAME") {
            let name = self.name.as_deref().unwrap_or("[UNAVAILABLE]");
            attrs.push(format!("NAME={}", xtext(name)));
        }
        if offers("ADDR") {
            let addr = match self.addr {
                Some(IpAddr::V4(a)) => a.to_string(),
                // Postfix expects IPv6 addresses with their "IPv6:" prefix.
                Some(IpAddr::V6(a)) => format!("IPv6:{a}"),
                None => "[UNAVAILABLE]".into(),
            };
            attrs.push(format!("ADDR={}", xtext(&addr)));
        }
        if offers("PROTO")
            && let Some(proto) = &self.proto
        {
            attrs.push(format!("PROTO={}", xtext(proto)));
        }
        if offers("HELO")
            && let Some(helo) = &self.helo
        {
            attrs.push(format!("HELO={}", xtext(helo)));
        }
        let mut lines: Vec<String> = Vec::new();
        for attr in attrs {
            match lines.last_mut() {
                Some(line) if line.len() + 1 + attr.len() <= MAX_COMMAND => {
                    line.push(' ');
                    line.push_str(&attr);
                }
                _ => lines.push(format!("XFORWARD {attr}")),
            }
        }
        lines
    }
}

/// RFC 3461 §4 xtext: `+`, `=`, controls, space and non-ASCII as `+HH`; values longer
/// than 255 characters are cut (Postfix refuses longer ones).
fn xtext(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes().take(255) {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offered_attributes_are_sent_as_xtext() {
        let attrs = XforwardAttrs {
            name: None,
            addr: Some("2001:db8::1".parse().expect("ip")),
            proto: Some("ESMTP".into()),
            helo: Some("evil\r\nRSET x=y".into()),
        };
        let offered = ["ADDR".to_string(), "HELO".to_string(), "NAME".to_string()];
        assert_eq!(
            attrs.commands(&offered),
            ["XFORWARD NAME=[UNAVAILABLE] ADDR=IPv6:2001:db8::1 HELO=evil+0D+0ARSET+20x+3Dy"]
        );
        assert!(attrs.commands(&[]).is_empty());
    }

    #[test]
    fn long_values_are_split_over_commands() {
        let attrs = XforwardAttrs {
            name: Some("n".repeat(300)),
            helo: Some("h".repeat(300)),
            ..XforwardAttrs::default()
        };
        let lines = attrs.commands(&["NAME".into(), "HELO".into()]);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() <= MAX_COMMAND + 10));
    }
}
