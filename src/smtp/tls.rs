//! TLS for the SMTP listeners (STARTTLS, RFC 3207): rustls with the ring provider, a
//! PEM certificate chain from the configuration, and the private key either in the
//! token (the default: `init` makes it; handshakes are signed by `C_Sign`) or, for an
//! operator's own certificate, in a PEM file.

use std::path::Path;
use std::sync::Arc;

use der::Decode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::hsm::{Hsm, KeyId, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the TLS private key is.
pub enum TlsKey<'a> {
    /// In the token, found by the certificate's subject key identifier.
    Token(&'a Hsm),
    File(&'a Path),
}

fn read_chain(certificate: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError::Certificate {
        path: certificate.display().to_string(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| fail(e.to_string()))?;
    if chain.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    Ok(chain)
}

pub fn server_config(
    certificate: &Path,
    key: TlsKey<'_>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_chain(certificate)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth();
    let config = match key {
        TlsKey::File(path) => {
            let key = PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            builder.with_single_cert(chain, key)?
        }
        TlsKey::Token(hsm) => {
            let fail = |reason: String| TlsError::Key {
                path: format!("token (for {})", certificate.display()),
                reason,
            };
            let leaf = x509_cert::Certificate::from_der(chain[0].as_ref())
                .map_err(|e| fail(format!("certificate does not parse: {e}")))?;
            let spki = leaf.tbs_certificate().subject_public_key_info();
            if spki.algorithm.oid != const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
                return Err(fail(
                    "only a P-256 key in the token is supported for TLS".into(),
                ));
            }
            let id = KeyId::for_public_key(spki).map_err(|e| fail(e.to_string()))?;
            hsm.public_key(&id)
                .map_err(|e| fail(format!("no key for this certificate: {e}")))?;
            let signing_key = Arc::new(TokenTlsKey {
                hsm: hsm.clone(),
                id,
            });
            let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signing_key));
            builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
        }
    };
    Ok(Arc::new(config))
}

/// A P-256 key in the token as a rustls signing key.
struct TokenTlsKey {
    hsm: Hsm,
    id: KeyId,
}

impl std::fmt::Debug for TokenTlsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenTlsKey({})", self.id)
    }
}

impl std::fmt::Debug for TokenTlsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenTlsSigner({})", self.id)
    }
}

impl rustls::sign::SigningKey for TokenTlsKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| {
                Box::new(TokenTlsSigner {
                    hsm: self.hsm.clone(),
                    id: self.id.clone(),
                }) as Box<dyn rustls::sign::Signer>
            })
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

struct TokenTlsSigner {
    hsm: Hsm,
    id: KeyId,
}

impl rustls::sign::Signer for TokenTlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let sign = || {
            self.hsm
                .sign(&self.id, SignatureScheme::EcdsaSha256, message)
        };
        // The token call blocks; on the multi-threaded runtime, tell tokio so.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(sign)
            }
            _ => sign(),
        };
        result.map_err(|e| {
            tracing::error!(error = %e, "TLS signature in the token failed");
            rustls::Error::General(format!("token signature failed: {e}"))
        })
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
