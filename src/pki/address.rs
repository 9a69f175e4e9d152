//! Mailbox addresses as the gateway stores and certifies them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a valid mailbox address: {reason}")]
pub struct AddressError {
    pub input: String,
    pub reason: &'static str,
}

/// A mailbox address in canonical form: ASCII, domain lower-cased, local part
/// lower-cased too (every mail system the gateway fronts treats it case-insensitively,
/// and a certificate must name one spelling).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(String);

impl Address {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let err = |reason| AddressError {
            input: input.chars().take(80).collect(),
            reason,
        };
        let trimmed = input.trim();
        if !trimmed.is_ascii() {
            return Err(err(
                "only ASCII addresses can be certified (rfc822Name is IA5String)",
            ));
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or_else(|| err("no '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(err("local part must be 1 to 64 characters"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(err("misplaced '.' in local part"));
        }
        const LOCAL_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
        {
            return Err(err("local part has a character outside the dot-atom set"));
        }
        let domain = Domain::parse(domain).map_err(|e| err(e.reason))?;
        Ok(Address(format!(
            "{}@{}",
            local.to_ascii_lowercase(),
            domain.0
        )))
    }

    /// An envelope address as the relay matches it: [`Address::parse`] for ASCII; a
    /// UTF-8 address (SMTPUTF8, RFC 6531) is kept lower-cased after basic checks. Such
    /// an address can be routed and matched but never certified.
    pub fn from_envelope(input: &str) -> Result<Self, AddressError> {
        let trimmed = input.trim();
        if trimmed.is_ascii() {
            return Self::parse(trimmed);
        }
        let err = |reason| AddressError {
            input: input.chars().take(80).collect(),
            reason,
        };
        let (local, domain) = trimmed.rsplit_once('@').ok_or_else(|| err("no '@'"))?;
        if local.is_empty() || local.len() > 64 || domain.is_empty() || domain.len() > 255 {
            return Err(err("local part or domain of the wrong length"));
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>()[]\\,;\"".contains(c))
        {
            return Err(err("character not allowed in an address"));
        }
        Ok(Address(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS domain name in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let err = |reason| AddressError {
            input: input.chars().take(80).collect(),
            reason,
        };
        let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || domain.len() > 253 {
            return Err(err("domain must be 1 to 253 characters"));
        }
        for label in domain.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(err("each domain label must be 1 to 63 characters"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a domain label may not start or end with '-'"));
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(err("domain labels take letters, digits and '-' only"));
            }
        }
        Ok(Domain(domain))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_canonicalised() {
        let a = Address::parse(" Alice.B@Corp.Example ").expect("valid");
        assert_eq!(a.as_str(), "alice.b@corp.example");
        assert_eq!(a.domain(), "corp.example");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "",
            "alice",
            "@corp.example",
            "alice@",
            "al ice@corp.example",
            "alice@corp..example",
            "a..b@corp.example",
            "jörg@corp.example",
            "alice@-corp.example",
            "alice,CN=evil@corp.example",
        ] {
            assert!(Address::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
