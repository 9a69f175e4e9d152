//! Parsing SMTP command lines (RFC 5321 §4.1) with the ESMTP parameters the relay
//! passes on: SIZE, BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET/ENVID/NOTIFY/ORCPT
//! (RFC 3461), and AUTH (RFC 4954). Pure parsing, no I/O.
//! Exposure: every command line of every client.

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: String,
        params: MailParams,
    },
    Rcpt {
        to: String,
        params: RcptParams,
    },
    Data,
    Rset,
    Noop,
    Quit,
    StartTls,
    /// `AUTH mechanism [initial-response]`; the mechanism upper-cased.
    Auth {
        mechanism: String,
        initial: Option<SaslResponse>,
    },
    Vrfy,
    Help,
    /// Recognised verb, unusable arguments: the text says what is wrong.
    Invalid(&'static str),
    Unknown,
}

/// A SASL response as the client sent it (base64): it may carry a password, so it is
/// never shown by `Debug`.
#[derive(Clone)]
pub struct SaslResponse(SecretString);

impl SaslResponse {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SaslResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaslResponse([redacted])")
    }
}

impl PartialEq for SaslResponse {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SaslResponse {}

impl Command {
    /// The command's name, for logs (never its arguments: AUTH carries secrets).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
            Command::Vrfy => "VRFY",
            Command::Help => "HELP",
            Command::Invalid(_) => "(invalid)",
            Command::Unknown => "(unknown)",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    /// "7BIT" or "8BITMIME" (BINARYMIME is not offered).
    pub body: Option<String>,
    pub smtputf8: bool,
    /// DSN: FULL or HDRS.
    pub ret: Option<String>,
    /// DSN: xtext as received.
    pub envid: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// DSN: NEVER, or a comma list of SUCCESS, FAILURE, DELAY, as received.
    pub notify: Option<String>,
    /// DSN: addr-type;xtext as received.
    pub orcpt: Option<String>,
}

pub fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim_start()),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" | "HELO" if rest.trim().is_empty() => Command::Invalid("a domain is required"),
        "EHLO" => Command::Ehlo(rest.trim().to_string()),
        "HELO" => Command::Helo(rest.trim().to_string()),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" if rest.is_empty() => Command::Data,
        "RSET" if rest.is_empty() => Command::Rset,
        "NOOP" => Command::Noop,
        "QUIT" if rest.is_empty() => Command::Quit,
        "STARTTLS" if rest.is_empty() => Command::StartTls,
        "AUTH" => parse_auth(rest),
        "VRFY" => Command::Vrfy,
        "HELP" => Command::Help,
        "DATA" | "RSET" | "QUIT" | "STARTTLS" => Command::Invalid("no parameters allowed"),
        _ => Command::Unknown,
    }
}

fn parse_auth(rest: &str) -> Command {
    let mut words = rest.split_ascii_whitespace();
    let Some(mechanism) = words.next() else {
        return Command::Invalid("a mechanism is required");
    };
    let initial = words.next();
    if words.next().is_some() {
        return Command::Invalid("too many parameters");
    }
    Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial: initial.map(|r| SaslResponse(SecretString::from(r))),
    }
}

/// Splits `<path> params…` after the `FROM:`/`TO:` keyword.
fn path_and_params<'a>(
    rest: &'a str,
    keyword: &str,
) -> Result<(String, Vec<&'a str>), &'static str> {
    let head = rest.get(..keyword.len()).ok_or("syntax error")?;
    if !head.eq_ignore_ascii_case(keyword) {
        return Err("syntax error");
    }
    let rest = rest[keyword.len()..].trim_start();
    if !rest.starts_with('<') {
        return Err("the address must be in angle brackets");
    }
    let close = rest.find('>').ok_or("missing '>'")?;
    let inner = &rest[1..close];
    // A source route (@a,@b:user@host) is ignored (RFC 5321 §4.1.2).
    let inner = match inner.find(':') {
        Some(i) if inner.starts_with('@') => &inner[i + 1..],
        _ => inner,
    };
    if inner
        .chars()
        .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
    {
        return Err("invalid character in address");
    }
    if !inner.is_empty() {
        let (local, domain) = inner.rsplit_once('@').ok_or("the address needs a domain")?;
        if local.is_empty() || domain.is_empty() || local.len() > 64 || domain.len() > 255 {
            return Err("invalid address");
        }
    }
    let params = rest[close + 1..].split_whitespace().collect();
    Ok((inner.to_string(), params))
}

fn parse_mail(rest: &str) -> Command {
    let (from, params) = match path_and_params(rest, "FROM:") {
        Ok(x) => x,
        Err(e) => return Command::Invalid(e),
    };
    let mut p = MailParams::default();
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (param.to_ascii_uppercase(), None),
        };
        match (key.as_str(), value) {
            ("SIZE", Some(v)) => match v.parse() {
                Ok(n) => p.size = Some(n),
                Err(_) => return Command::Invalid("SIZE must be a number"),
            },
            ("BODY", Some(v))
                if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") =>
            {
                p.body = Some(v.to_ascii_uppercase())
            }
            ("BODY", _) => return Command::Invalid("BODY must be 7BIT or 8BITMIME"),
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v))
                if v.eq_ignore_ascii_case("FULL") || v.eq_ignore_ascii_case("HDRS") =>
            {
                p.ret = Some(v.to_ascii_uppercase())
            }
            ("ENVID", Some(v)) if valid_xtext(v) && v.len() <= 100 => p.envid = Some(v.to_string()),
            ("RET" | "ENVID", _) => return Command::Invalid("invalid DSN parameter"),
            _ => return Command::Invalid("unsupported MAIL parameter"),
        }
    }
    Command::Mail { from, params: p }
}

fn parse_rcpt(rest: &str) -> Command {
    let (to, params) = match path_and_params(rest, "TO:") {
        Ok(x) => x,
        Err(e) => return Command::Invalid(e),
    };
    if to.is_empty() {
        return Command::Invalid("a recipient is required");
    }
    let mut p = RcptParams::default();
    for param in params {
        let (key, value) = match param.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
            None => (param.to_ascii_uppercase(), None),
        };
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) if valid_notify(v) => p.notify = Some(v.to_ascii_uppercase()),
            ("ORCPT", Some(v)) if v.contains(';') && valid_xtext(v) && v.len() <= 500 => {
                p.orcpt = Some(v.to_string())
            }
            ("NOTIFY" | "ORCPT", _) => return Command::Invalid("invalid DSN parameter"),
            _ => return Command::Invalid("unsupported RCPT parameter"),
        }
    }
    Command::Rcpt { to, params: p }
}

fn valid_notify(v: &str) -> bool {
    let v = v.to_ascii_uppercase();
    if v == "NEVER" {
        return true;
    }
    !v.is_empty()
        && v.split(',')
            .all(|w| matches!(w, "SUCCESS" | "FAILURE" | "DELAY"))
}

/// RFC 3461 xtext: printable ASCII without '=' and '+' except "+XX" escapes (checked
/// loosely: printable, no space).
fn valid_xtext(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| (33..=126).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_and_rcpt_with_every_parameter() {
        assert_eq!(
            parse(
                "MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159\r\n"
            ),
            Command::Mail {
                from: "a@b.example".into(),
                params: MailParams {
                    size: Some(1000),
                    body: Some("8BITMIME".into()),
                    smtputf8: true,
                    ret: Some("HDRS".into()),
                    envid: Some("QQ314159".into()),
                }
            }
        );
        assert_eq!(
            parse("mail from:<>"),
            Command::Mail {
                from: String::new(),
                params: MailParams::default()
            }
        );
        assert_eq!(
            parse(
                "RCPT TO:<@relay.example:bob@c.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@c.example"
            ),
            Command::Rcpt {
                to: "bob@c.example".into(),
                params: RcptParams {
                    notify: Some("SUCCESS,FAILURE".into()),
                    orcpt: Some("rfc822;bob@c.example".into()),
                }
            }
        );
        assert_eq!(
            parse("RCPT TO:<jürgen@bücher.example>"),
            Command::Rcpt {
                to: "jürgen@bücher.example".into(),
                params: RcptParams::default()
            }
        );
    }

    #[test]
    fn auth_keeps_its_initial_response_out_of_debug() {
        let command = parse("auth plain AGFsaWNlAHMzY3JldA==");
        let Command::Auth { mechanism, initial } = &command else {
            panic!("{command:?}");
        };
        assert_eq!(mechanism, "PLAIN");
        assert_eq!(
            initial.as_ref().map(|r| r.expose()),
            Some("AGFsaWNlAHMzY3JldA==")
        );
        assert!(!format!("{command:?}").contains("AGFsaWNl"));
        assert_eq!(command.verb(), "AUTH");
        assert!(matches!(
            parse("AUTH LOGIN"),
            Command::Auth { initial: None, .. }
        ));
    }

    #[test]
    fn malformed_commands_say_what_is_wrong() {
        for bad in [
            "MAIL FROM:a@b.example",
            "MAIL FROM:<a@b.example",
            "MAIL FROM:<a b@c.example>",
            "MAIL FROM:<a@b.example> SIZE=lots",
            "MAIL FROM:<a@b.example> BODY=BINARYMIME",
            "MAIL FROM:<a@b.example> X-UNKNOWN=1",
            "RCPT TO:<>",
            "RCPT TO:<bob>",
            "RCPT TO:<b@c.example> NOTIFY=SOMETIMES",
            "EHLO",
            "DATA now",
        ] {
            assert!(matches!(parse(bad), Command::Invalid(_)), "{bad}");
        }
        assert_eq!(parse("XYZZY"), Command::Unknown);
        assert!(matches!(parse("AUTH"), Command::Invalid(_)));
        assert!(matches!(parse("AUTH PLAIN a b"), Command::Invalid(_)));
        assert_eq!(
            parse("ehlo client.example"),
            Command::Ehlo("client.example".into())
        );
    }
}
