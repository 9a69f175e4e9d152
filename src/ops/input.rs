//! Reading an operation's input: text from a command line or a JSON body turned into
//! the typed values the store takes, or [`OpError::Invalid`] saying what is wrong.
//! Every operation parses its input here, so the CLI and the console refuse the same
//! things with the same words.

use super::OpError;
use crate::pki::address::{Address, Domain};
use crate::relay::network::Network;

/// A mailbox address (ASCII, canonical lower case).
pub fn address(text: &str) -> Result<Address, OpError> {
    Address::parse(text).map_err(invalid)
}

/// A managed domain's name.
pub fn domain(text: &str) -> Result<Domain, OpError> {
    Domain::parse(text).map_err(invalid)
}

/// A network in CIDR notation (a single address is its own /32 or /128).
pub fn network(text: &str) -> Result<Network, OpError> {
    Network::parse(text).map_err(invalid)
}

/// A next hop or smarthost, `HOST:PORT` (an IPv6 address in brackets); returned as
/// given.
pub fn host_port(value: &str) -> Result<&str, OpError> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| OpError::Invalid(format!("next hop '{value}' must be HOST:PORT")))?;
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(OpError::Invalid(format!(
            "next hop '{value}' has an invalid port"
        )));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_err() {
        Domain::parse(host).map_err(|e| {
            OpError::Invalid(format!("next hop '{value}' has an invalid host: {e}"))
        })?;
    }
    Ok(value)
}

/// An input error whose text says what is wrong.
pub(super) fn invalid(e: impl std::fmt::Display) -> OpError {
    OpError::Invalid(e.to_string())
}

/// A point in time as an operator types it: RFC 3339 (`2026-11-28T09:00:00Z`), unix
/// seconds, or an age before now (`30m`, `2h`, `7d`, `90s`). `what` names the field
/// in the error.
pub fn time(what: &str, text: &str) -> Result<i64, OpError> {
    let text = text.trim();
    if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        return Ok(t.unix_timestamp());
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    let unit_seconds = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86400,
        _ => 0,
    };
    let number = text.get(..text.len().saturating_sub(1)).unwrap_or("");
    match number.parse::<i64>() {
        Ok(n) if unit_seconds > 0 && n >= 0 => {
            Ok(crate::store::unix_now() - n.saturating_mul(unit_seconds))
        }
        _ => Err(OpError::Invalid(format!(
            "{what} '{text}': use RFC 3339 (2026-11-28T09:00:00Z), unix seconds, or an age \
             such as 30m, 2h, 7d"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_takes_names_and_addresses_and_says_what_is_wrong() {
        for ok in ["mail.corp.example:25", "10.0.0.5:2525", "[2001:db8::1]:25"] {
            assert_eq!(host_port(ok).expect(ok), ok);
        }
        for (bad, why) in [
            ("mail.corp.example", "must be HOST:PORT"),
            ("mail.corp.example:0", "invalid port"),
            ("mail.corp.example:x", "invalid port"),
            ("mail..example:25", "invalid host"),
        ] {
            let err = host_port(bad).expect_err(bad);
            assert!(matches!(err, OpError::Invalid(_)), "{err}");
            assert!(err.to_string().contains(why), "{err} lacks {why}");
        }
    }

    #[test]
    fn times_are_read_as_rfc3339_unix_seconds_or_an_age() {
        assert_eq!(
            time("--from", "2026-11-28T09:00:00Z").ok(),
            Some(1_795_856_400)
        );
        assert_eq!(
            time("--from", "2026-11-28T10:00:00+01:00").ok(),
            Some(1_795_856_400)
        );
        assert_eq!(time("--from", " 1795856400 ").ok(), Some(1_795_856_400));
        let now = crate::store::unix_now();
        let two_hours = time("--from", "2h").expect("age");
        assert!((now - 7200 - two_hours).abs() <= 2);
        for bad in [
            "",
            "yesterday",
            "2x",
            "-3d",
            "h",
            "2026-13-01T00:00:00Z",
            "ä",
        ] {
            let e = time("--from", bad).unwrap_err();
            assert!(matches!(e, OpError::Invalid(_)), "{bad}: {e:?}");
            assert!(e.to_string().starts_with("--from"), "{e}");
        }
    }
}
