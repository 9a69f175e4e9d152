//! Trust anchors and the mail domains each may vouch for.
//!
//! A partner's CA is trusted to certify its own people, not anybody's: left unscoped,
//! one partner's CA could issue a certificate for another partner (or for one of our
//! own mailboxes), have it harvested and receive mail encrypted for someone else.
//! X.509 name constraints would say this in the CA certificate, but partners rarely
//! set them and rustls-webpki refuses rfc822Name constraints, so the scope is ours: it
//! is given when the anchor is added (`smimegate trust add FILE --domain D…`) and
//! enforced by the verifier before any chain is built.

use x509_cert::certificate::Certificate;

use super::address::{AddressError, Domain};

/// One domain pattern: `partner.example` is that domain only; `.partner.example`
/// every subdomain of it (the leading-period convention of RFC 5280 §4.2.1.10).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct DomainPattern(String);

impl DomainPattern {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let trimmed = input.trim();
        match trimmed.strip_prefix('.') {
            Some(rest) => Ok(DomainPattern(format!(".{}", Domain::parse(rest)?))),
            None => Ok(DomainPattern(Domain::parse(trimmed)?.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `domain` (lower case) falls under this pattern.
    pub fn matches(&self, domain: &str) -> bool {
        match self.0.strip_prefix('.') {
            Some(parent) => domain
                .strip_suffix(parent)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => domain == self.0,
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The mail domains an anchor may vouch for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only these domains (`trust add --domain`). Our managed domains stay excluded
    /// even when listed: a partner never vouches for our own mailboxes.
    Domains(Vec<DomainPattern>),
    /// Any domain that is not one of ours (the default of `trust add`).
    AnyForeign,
    /// Our managed domains only: the built-in CA, which certifies our mailboxes.
    Managed,
}

impl Scope {
    /// The scope as the operator reads it.
    pub fn describe(&self) -> String {
        match self {
            Scope::Domains(d) => d
                .iter()
                .map(DomainPattern::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            Scope::AnyForeign => "any domain except the managed ones".into(),
            Scope::Managed => "the managed domains".into(),
        }
    }
}

/// A certificate signatures are verified against, and what it may vouch for.
#[derive(Debug, Clone)]
pub struct TrustAnchor {
    pub certificate: Certificate,
    pub scope: Scope,
}

/// Every anchor the verifier knows, and our managed domains (which only the built-in
/// CA may vouch for).
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    pub anchors: Vec<TrustAnchor>,
    pub managed: Vec<String>,
}

impl TrustAnchors {
    /// Anchors that any address may chain to, for callers with no managed domains
    /// (tests, one-off checks).
    pub fn unscoped(certificates: &[Certificate]) -> Self {
        TrustAnchors {
            anchors: certificates
                .iter()
                .map(|c| TrustAnchor {
                    certificate: c.clone(),
                    scope: Scope::AnyForeign,
                })
                .collect(),
            managed: Vec::new(),
        }
    }

    /// A managed domain or a subdomain of one.
    fn is_managed(&self, domain: &str) -> bool {
        self.managed.iter().any(|m| {
            domain.eq_ignore_ascii_case(m)
                || domain.len() > m.len()
                    && domain.as_bytes()[domain.len() - m.len() - 1] == b'.'
                    && domain[domain.len() - m.len()..].eq_ignore_ascii_case(m)
        })
    }

    /// Whether an anchor of `scope` may vouch for an address in `domain`.
    pub fn allows(&self, scope: &Scope, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        let managed = self.is_managed(&domain);
        match scope {
            Scope::Managed => managed,
            Scope::AnyForeign => !managed,
            Scope::Domains(patterns) => !managed && patterns.iter().any(|p| p.matches(&domain)),
        }
    }

    /// The anchors that may vouch for an address in `domain`.
    pub fn for_domain(&self, domain: &str) -> Vec<&Certificate> {
        self.anchors
            .iter()
            .filter(|a| self.allows(&a.scope, domain))
            .map(|a| &a.certificate)
            .collect()
    }

    /// Whether the anchor with SHA-256 fingerprint `fingerprint` (hex) is still trusted
    /// and may vouch for every one of `addresses`.
    pub fn still_vouches(&self, fingerprint: Option<&str>, addresses: &[String]) -> bool {
        use der::Encode;
        use sha2::Digest;
        let Some(fingerprint) = fingerprint else {
            return false;
        };
        !addresses.is_empty()
            && self.anchors.iter().any(|a| {
                a.certificate
                    .to_der()
                    .is_ok_and(|der| hex::encode(sha2::Sha256::digest(der)) == fingerprint)
                    && addresses.iter().all(|address| {
                        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
                        self.allows(&a.scope, domain)
                    })
            })
    }

    pub fn all(&self) -> Vec<&Certificate> {
        self.anchors.iter().map(|a| &a.certificate).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_a_domain_or_its_subdomains() {
        let exact = DomainPattern::parse("Partner.Example").expect("pattern");
        assert!(exact.matches("partner.example"));
        assert!(!exact.matches("mail.partner.example"));
        assert!(!exact.matches("evilpartner.example"));
        let subs = DomainPattern::parse(".partner.example").expect("pattern");
        assert!(subs.matches("mail.partner.example"));
        assert!(!subs.matches("partner.example"));
        assert!(!subs.matches("evilpartner.example"));
        assert!(!subs.matches(".partner.example"));
        assert!(DomainPattern::parse("..x").is_err());
        assert!(DomainPattern::parse("a b").is_err());
    }

    #[test]
    fn scopes_never_cover_managed_domains_except_for_the_built_in_ca() {
        let trust = TrustAnchors {
            anchors: Vec::new(),
            managed: vec!["corp.example".into()],
        };
        let partner = Scope::Domains(vec![
            DomainPattern::parse("partner.example").expect("pattern"),
            DomainPattern::parse("corp.example").expect("pattern"),
        ]);
        assert!(trust.allows(&partner, "partner.example"));
        assert!(!trust.allows(&partner, "other.example"));
        assert!(!trust.allows(&partner, "CORP.example"));
        assert!(trust.allows(&Scope::AnyForeign, "other.example"));
        assert!(!trust.allows(&Scope::AnyForeign, "corp.example"));
        assert!(!trust.allows(&Scope::AnyForeign, "mail.corp.example"));
        assert!(trust.allows(&Scope::AnyForeign, "notcorp.example"));
        assert!(trust.allows(&Scope::Managed, "corp.example"));
        assert!(!trust.allows(&Scope::Managed, "partner.example"));
    }
}
