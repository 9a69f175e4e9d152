//! STARTTLS towards next hops (RFC 3207): the level that applies to each hop and the
//! rustls configuration that enforces it.
//!
//! - `opportunistic` / `required`: encrypt to whoever answers (RFC 7435); the handshake
//!   signatures are checked, the certificate is not (internal servers and smarthosts
//!   often present self-signed ones).
//! - `verify`: the certificate must chain to a CA of the hop's `ca_file` (by default
//!   Debian's system bundle) and carry the hop's name (`server_name`, else the host
//!   the hop is written with), checked by rustls-webpki.
//! - `pin`: the end-entity certificate's SHA-256 fingerprint must be one configured for
//!   the hop (no CA, name or validity check, like Postfix's `fingerprint` level).
//!
//! A hop that does not meet its level gets no mail: the sender sees a `4xx` and the
//! log says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{NextHopTls, RelayConfig, parse_fingerprint, split_hop};

/// Building the next-hop TLS settings failed (at start-up, never per message).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read CA file {path} for next hop {hop}: {reason}")]
    CaFile {
        hop: String,
        path: PathBuf,
        reason: String,
    },
    #[error("CA file {path} for next hop {hop} holds no usable certificate")]
    NoCa { hop: String, path: PathBuf },
    #[error("next hop {hop}: {message}")]
    Invalid { hop: String, message: String },
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS level of one hop and the configuration that enforces it.
#[derive(Clone)]
pub struct HopTls {
    pub level: NextHopTls,
    /// The name to verify (and send as SNI) instead of the hop's host.
    pub server_name: Option<String>,
    config: Arc<rustls::ClientConfig>,
}

impl HopTls {
    pub(super) fn rustls(&self) -> Arc<rustls::ClientConfig> {
        self.config.clone()
    }
}

/// Every hop's TLS settings: `[relay.hop."…"]` sections over the default.
pub struct TlsPolicies {
    default: HopTls,
    /// Keyed by the hop as written, lower case (`host:port` or `host`).
    per_hop: BTreeMap<String, HopTls>,
}

impl TlsPolicies {
    /// One level for every hop; `verify` trusts `ca_file`.
    pub fn uniform(level: NextHopTls, ca_file: &Path) -> Result<Self, TlsConfigError> {
        Ok(TlsPolicies {
            default: build("(default)", level, ca_file, None, &[])?,
            per_hop: BTreeMap::new(),
        })
    }

    /// From `[relay]`; `resolve` turns a configured path into a real one (relative
    /// paths are relative to the data directory).
    pub fn from_config(
        relay: &RelayConfig,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<Self, TlsConfigError> {
        let default_ca = resolve(&relay.next_hop_ca_file);
        let default = build("(default)", relay.next_hop_tls, &default_ca, None, &[])?;
        let mut per_hop = BTreeMap::new();
        for (hop, settings) in &relay.hop {
            let level = settings.tls.unwrap_or(relay.next_hop_tls);
            let ca = settings
                .ca_file
                .as_deref()
                .map_or_else(|| default_ca.clone(), resolve);
            let pins = settings
                .pin_sha256
                .iter()
                .map(|p| {
                    parse_fingerprint(p).ok_or_else(|| TlsConfigError::Invalid {
                        hop: hop.clone(),
                        message: format!("pin_sha256 \"{p}\" is not a SHA-256 fingerprint"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tls = build(hop, level, &ca, settings.server_name.clone(), &pins)?;
            per_hop.insert(hop.to_ascii_lowercase(), tls);
        }
        Ok(TlsPolicies { default, per_hop })
    }

    /// The settings for a hop: its `host:port` section, else its `host` section, else
    /// the default.
    pub fn for_hop(&self, hop: &str) -> &HopTls {
        let hop = hop.to_ascii_lowercase();
        if let Some(tls) = self.per_hop.get(&hop) {
            return tls;
        }
        split_hop(&hop)
            .and_then(|(host, _)| {
                self.per_hop
                    .get(host)
                    .or_else(|| self.per_hop.get(&format!("[{host}]")))
            })
            .unwrap_or(&self.default)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(
    hop: &str,
    level: NextHopTls,
    ca_file: &Path,
    server_name: Option<String>,
    pins: &[[u8; 32]],
) -> Result<HopTls, TlsConfigError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match level {
        NextHopTls::Verify => {
            let roots = read_roots(hop, ca_file)?;
            builder
                .with_root_certificates(Arc::new(roots))
                .with_no_client_auth()
        }
        NextHopTls::Pin => {
            if pins.is_empty() {
                return Err(TlsConfigError::Invalid {
                    hop: hop.to_string(),
                    message: "tls = \"pin\" needs pin_sha256".into(),
                });
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    provider,
                    pins: pins.to_vec(),
                }))
                .with_no_client_auth()
        }
        NextHopTls::Off | NextHopTls::Opportunistic | NextHopTls::Required => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(HopTls {
        level,
        server_name,
        config: Arc::new(config),
    })
}

fn read_roots(hop: &str, path: &Path) -> Result<rustls::RootCertStore, TlsConfigError> {
    let fail = |reason: String| TlsConfigError::CaFile {
        hop: hop.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| fail(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(TlsConfigError::NoCa {
            hop: hop.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// The name a hop's certificate is checked against (and sent as SNI).
pub(super) fn server_name(hop: &str, tls: &HopTls) -> Option<ServerName<'static>> {
    let host = match &tls.server_name {
        Some(name) => name.as_str(),
        None => split_hop(hop)?.0,
    };
    ServerName::try_from(host.to_string()).ok()
}

/// Accepts any certificate (opportunistic STARTTLS, RFC 7435) but checks the handshake
/// signatures, so the session is at least encrypted to whoever answered.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Accepts exactly the end-entity certificates whose SHA-256 fingerprint is pinned
/// (compared in constant time), and checks the handshake signatures made with them.
#[derive(Debug)]
struct PinnedVerifier {
    provider: Arc<CryptoProvider>,
    pins: Vec<[u8; 32]>,
}

/// The certificate a pinned hop presented is not a pinned one (its fingerprint goes to
/// the log, so the operator can compare or update the pin).
#[derive(Debug, thiserror::Error)]
#[error("certificate fingerprint sha256:{0} is not pinned for this hop")]
struct NotPinned(String);

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = Sha256::digest(end_entity.as_ref());
        let pinned = self
            .pins
            .iter()
            .fold(subtle::Choice::from(0), |found, pin| {
                found | pin.as_slice().ct_eq(digest.as_slice())
            });
        if bool::from(pinned) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotPinned(
                hex::encode_upper(digest.as_slice()),
            )))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HopConfig;

    fn relay(hops: &[(&str, HopConfig)]) -> RelayConfig {
        RelayConfig {
            hop: hops
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            ..RelayConfig::default()
        }
    }

    #[test]
    fn a_hop_section_applies_by_host_and_port_then_by_host() {
        let pin = HopConfig {
            tls: Some(NextHopTls::Pin),
            pin_sha256: vec!["ab".repeat(32)],
            ..HopConfig::default()
        };
        let required = HopConfig {
            tls: Some(NextHopTls::Required),
            ..HopConfig::default()
        };
        let policies = TlsPolicies::from_config(
            &relay(&[("Smart.Example:587", pin), ("mail.corp.example", required)]),
            &|p| p.to_path_buf(),
        )
        .expect("policies");
        assert_eq!(policies.for_hop("smart.example:587").level, NextHopTls::Pin);
        assert_eq!(
            policies.for_hop("smart.example:25").level,
            NextHopTls::Opportunistic
        );
        assert_eq!(
            policies.for_hop("MAIL.corp.example:2525").level,
            NextHopTls::Required
        );
    }

    #[test]
    fn verify_with_a_missing_ca_file_is_a_start_up_error() {
        let verify = HopConfig {
            tls: Some(NextHopTls::Verify),
            ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..HopConfig::default()
        };
        let err = TlsPolicies::from_config(&relay(&[("h:25", verify)]), &|p| p.to_path_buf())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn the_system_bundle_loads_for_verify() {
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if bundle.exists() {
            let p = TlsPolicies::uniform(NextHopTls::Verify, bundle).expect("system roots");
            assert_eq!(p.for_hop("any:25").level, NextHopTls::Verify);
        }
    }

    #[test]
    fn the_verified_name_is_the_configured_one_or_the_hop_host() {
        let p = TlsPolicies::uniform(NextHopTls::Required, Path::new("")).expect("policies");
        let tls = p.for_hop("mail.example:25");
        assert_eq!(
            server_name("mail.example:25", tls).map(|n| n.to_str().into_owned()),
            Some("mail.example".into())
        );
        assert_eq!(
            server_name("[::1]:25", tls).map(|n| n.to_str().into_owned()),
            Some("::1".into())
        );
        let named = HopTls {
            server_name: Some("mx.corp.example".into()),
            ..tls.clone()
        };
        assert_eq!(
            server_name("10.0.0.7:25", &named).map(|n| n.to_str().into_owned()),
            Some("mx.corp.example".into())
        );
    }
}
