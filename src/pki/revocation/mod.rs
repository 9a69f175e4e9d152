//! Revocation checks of partner certificates (RFC 5280 CRLs): before encrypting to a
//! partner certificate and when verifying a signature.
//!
//! - [`fetch`]: one bounded HTTP GET of a CRL distribution point;
//! - [`cache`]: the CRL cache (memory and the `partner_crls` table shared by every
//!   node), background downloads, the bounded wait of an SMTP reply;
//! - [`check`]: the status of a certificate on a path, judged by rustls-webpki.
//!
//! OCSP is not used: the one maintained OCSP crate (RustCrypto's `x509-ocsp` 0.2) is
//! built on der 0.7 / x509-cert 0.2, not the der 0.8 line this gateway uses.

pub mod cache;
pub mod check;
pub mod fetch;

pub use cache::{Blocking, RevocationSettings, Revocations};
pub use check::{CrlSource, Status};
