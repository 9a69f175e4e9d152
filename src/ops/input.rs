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
}
