//! Sender and recipient matchers of a rule, in the written form the CLI, the database
//! and the console share:
//!
//! | form | matches |
//! |---|---|
//! | `anyone` (or `*`) | every address |
//! | `managed` | any managed mailbox |
//! | `mailbox:alice@corp.example` | that managed mailbox |
//! | `address:bob@partner.example` | that (external) address |
//! | `domain:partner.example` (or `@partner.example`) | every address of that domain, not its subdomains |
//!
//! Addresses and domains compare case-insensitively (they are stored lower-cased).

use std::fmt;

use crate::pki::address::{Address, Domain};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Matcher {
    Anyone,
    AnyManaged,
    Mailbox(Address),
    Address(Address),
    Domain(Domain),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{input}' is not a matcher ({reason}); use anyone, managed, mailbox:ADDRESS, \
     address:ADDRESS or domain:DOMAIN"
)]
pub struct MatcherError {
    pub input: String,
    pub reason: String,
}

impl Matcher {
    pub fn parse(text: &str) -> Result<Self, MatcherError> {
        let text = text.trim();
        let err = |reason: String| MatcherError {
            input: text.chars().take(80).collect(),
            reason,
        };
        let lower = text.to_ascii_lowercase();
        if lower == "anyone" || lower == "*" || lower == "any" {
            return Ok(Matcher::Anyone);
        }
        if lower == "managed" {
            return Ok(Matcher::AnyManaged);
        }
        let (kind, value) = match text.split_once(':') {
            Some((kind, value)) => (kind.to_ascii_lowercase(), value),
            None if text.starts_with('@') => ("domain".to_string(), &text[1..]),
            None => return Err(err("no kind given".into())),
        };
        match kind.as_str() {
            "mailbox" => Address::parse(value)
                .map(Matcher::Mailbox)
                .map_err(|e| err(e.to_string())),
            "address" => Address::parse(value)
                .map(Matcher::Address)
                .map_err(|e| err(e.to_string())),
            "domain" => Domain::parse(value.trim_start_matches('@'))
                .map(Matcher::Domain)
                .map_err(|e| err(e.to_string())),
            other => Err(err(format!("unknown kind '{other}'"))),
        }
    }

    /// Whether `address` (a managed mailbox or not) matches.
    pub fn matches(&self, address: &Address, managed: bool) -> bool {
        match self {
            Matcher::Anyone => true,
            Matcher::AnyManaged => managed,
            Matcher::Mailbox(m) => managed && m == address,
            Matcher::Address(a) => a == address,
            Matcher::Domain(d) => d.as_str() == address.domain(),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Anyone => f.write_str("anyone"),
            Matcher::AnyManaged => f.write_str("managed"),
            Matcher::Mailbox(a) => write!(f, "mailbox:{a}"),
            Matcher::Address(a) => write!(f, "address:{a}"),
            Matcher::Domain(d) => write!(f, "domain:{}", d.as_str()),
        }
    }
}

impl serde::Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_forms_round_trip_and_match() {
        for form in [
            "anyone",
            "managed",
            "mailbox:alice@corp.example",
            "address:bob@partner.example",
            "domain:partner.example",
        ] {
            let m = Matcher::parse(form).expect(form);
            assert_eq!(m.to_string(), form);
        }
        assert_eq!(
            Matcher::parse("@Partner.Example").expect("domain"),
            Matcher::parse("domain:partner.example").expect("domain")
        );
        let bob = Address::parse("Bob@Partner.Example").expect("address");
        assert!(
            Matcher::parse("domain:partner.example")
                .expect("m")
                .matches(&bob, false)
        );
        assert!(
            !Matcher::parse("domain:example")
                .expect("m")
                .matches(&bob, false)
        );
        assert!(
            !Matcher::parse("domain:sub.partner.example")
                .expect("m")
                .matches(&bob, false)
        );
        assert!(
            !Matcher::parse("mailbox:bob@partner.example")
                .expect("m")
                .matches(&bob, false)
        );
        assert!(
            Matcher::parse("address:bob@partner.example")
                .expect("m")
                .matches(&bob, false)
        );
        assert!(!Matcher::parse("managed").expect("m").matches(&bob, false));
        assert!(Matcher::parse("nonsense").is_err());
        assert!(Matcher::parse("mailbox:no-at-sign").is_err());
    }
}
