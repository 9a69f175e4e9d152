//! Where this gateway publishes its CA certificates and CRLs, and the URLs written into
//! every certificate it issues (CRL distribution point, authority information access).
//!
//! One base, `[ca].public_url`, and fixed paths below it, so the HTTP endpoint that
//! serves the documents and the profiles that name them cannot disagree. The base is a
//! plain `http://` URL: relying parties fetch CRLs and issuer certificates without TLS
//! (RFC 5280 §4.2.1.13, §4.2.2.1; the S/MIME Baseline Requirements §7.1.2.3 ask for an
//! HTTP URL), since checking the TLS certificate would need the very revocation data.

/// Path of the issuing CA's CRL (the one covering mailbox certificates).
pub const ISSUING_CRL_PATH: &str = "/pki/ca.crl";
/// Path of the issuing CA's certificate (DER), named by mailbox certificates' AIA.
pub const ISSUING_CERTIFICATE_PATH: &str = "/pki/ca.crt";
/// Path of the root CA's CRL (covering the issuing CA certificate).
pub const ROOT_CRL_PATH: &str = "/pki/root.crl";
/// Path of the root CA's certificate (DER), named by the issuing CA certificate's AIA.
pub const ROOT_CERTIFICATE_PATH: &str = "/pki/root.crt";

/// A base URL that is not usable for publishing.
#[derive(Debug, thiserror::Error)]
#[error("'{url}' is not a usable public URL: {reason}")]
pub struct PublicUrlError {
    pub url: String,
    pub reason: &'static str,
}

/// The published URLs under one checked base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiUrls {
    base: String,
}

impl PkiUrls {
    /// Checks `public_url` (`http://host[:port][/prefix]`, no query or fragment) and
    /// keeps it without a trailing slash.
    pub fn new(public_url: &str) -> Result<Self, PublicUrlError> {
        let error = |reason| PublicUrlError {
            url: public_url.to_string(),
            reason,
        };
        let rest = public_url
            .strip_prefix("http://")
            .ok_or_else(|| error("it must start with http:// (CRLs are fetched without TLS)"))?;
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() {
            return Err(error("it names no host"));
        }
        if public_url
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control() || !c.is_ascii())
        {
            return Err(error("it contains spaces, control or non-ASCII characters"));
        }
        if public_url.contains(['?', '#']) {
            return Err(error("it must not have a query or fragment"));
        }
        Ok(PkiUrls {
            base: public_url.trim_end_matches('/').to_string(),
        })
    }

    /// The base as configured, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The CRL distribution point of mailbox certificates.
    pub fn issuing_crl(&self) -> String {
        format!("{}{ISSUING_CRL_PATH}", self.base)
    }

    /// The caIssuers URL of mailbox certificates.
    pub fn issuing_certificate(&self) -> String {
        format!("{}{ISSUING_CERTIFICATE_PATH}", self.base)
    }

    /// The CRL distribution point of the issuing CA certificate.
    pub fn root_crl(&self) -> String {
        format!("{}{ROOT_CRL_PATH}", self.base)
    }

    /// The caIssuers URL of the issuing CA certificate.
    pub fn root_certificate(&self) -> String {
        format!("{}{ROOT_CERTIFICATE_PATH}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_sit_under_the_base_without_a_double_slash() {
        let urls = PkiUrls::new("http://pki.example.org:8080/smimegate/").expect("valid");
        assert_eq!(urls.base(), "http://pki.example.org:8080/smimegate");
        assert_eq!(
            urls.issuing_crl(),
            "http://pki.example.org:8080/smimegate/pki/ca.crl"
        );
        assert_eq!(
            urls.root_certificate(),
            "http://pki.example.org:8080/smimegate/pki/root.crt"
        );
    }

    #[test]
    fn unusable_bases_are_refused() {
        for bad in [
            "https://pki.example.org",
            "ftp://pki.example.org",
            "http://",
            "http:///path",
            "http://pki.example.org/a b",
            "http://pki.example.org/?x=1",
            "http://pki.example.org/#top",
            "pki.example.org",
        ] {
            assert!(PkiUrls::new(bad).is_err(), "{bad} accepted");
        }
    }
}
