//! Trace fields (RFC 5321 §4.4): the Received field the gateway adds to every message
//! it relays, in both directions, and the hop count that ends a mail loop (§6.3).

use crate::smtp::server::SessionInfo;

/// More Received fields than this is a loop (Postfix's `hopcount_limit` default).
pub const MAX_HOPS: usize = 50;

/// The Received field (with its CRLF) for a message from `session`, received by
/// `hostname` as transaction `id`. `for` names the recipient only when there is one
/// (RFC 5321 §4.4: it would disclose Bcc recipients otherwise). The protocol word says
/// TLS and authentication (RFC 3848).
pub fn field(
    session: &SessionInfo,
    hostname: &str,
    id: &str,
    single_recipient: Option<&str>,
) -> String {
    let helo: String = session
        .helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let protocol = match (session.tls, session.authenticated.is_some()) {
        (true, true) => "ESMTPSA",
        (true, false) => "ESMTPS",
        (false, true) => "ESMTPA",
        (false, false) => "ESMTP",
    };
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let recipient = single_recipient
        .map(|r| format!("\r\n\tfor <{r}>"))
        .unwrap_or_default();
    format!(
        "Received: from {} ([{}])\r\n\tby {hostname} (smimegate) with {protocol} id {id}{recipient};\r\n\t{date}\r\n",
        if helo.is_empty() { "unknown" } else { &helo },
        session.peer.ip()
    )
}

/// How many Received fields the header section carries.
pub fn hops(message: &[u8]) -> usize {
    super::headers::values(message, "Received").len()
}
