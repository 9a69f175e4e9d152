//! TLS for the SMTP listeners (STARTTLS, RFC 3207): rustls with the ring provider, a
//! PEM certificate chain from the configuration, and the private key either in the
//! token (the default: `init` makes it; handshakes are signed by `C_Sign`) or, for an
//! operator's own certificate, in a PEM file. Exposure: the handshake talks to the
//! outside world.
//!
//! The rustls `Signer` API is synchronous, but a token signature must go through the
//! token's worker queue ([`Hsm::call`]: its session limit and timeouts) and must not
//! block a runtime worker. So [`accept`] reads the ClientHello on the runtime, then
//! runs the rest of the handshake (where the server signs) on a blocking-pool thread
//! (`spawn_blocking` + `Handle::block_on`); the token signer, called there, submits
//! the signature to `Hsm::call` as a task and waits for its answer on a channel. Only
//! that thread ever waits; a token key used by a handshake anywhere else fails
//! instead of blocking the runtime.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

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

/// Why a STARTTLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("TLS handshake task failed: {0}")]
    Task(String),
}

thread_local! {
    /// Set while this thread runs a handshake for [`accept`]: blocking is allowed here.
    static HANDSHAKE_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The server side of a TLS handshake over `stream` (after `220 Ready to start TLS`),
/// bounded by `timeout`. The ClientHello is read on the runtime (a client that never
/// sends one holds no thread); the rest of the handshake, where the server signs, runs
/// on a blocking-pool thread so that a token signature may wait for the token's
/// worker queue.
pub async fn accept<S>(
    config: Arc<rustls::ServerConfig>,
    stream: S,
    timeout: Duration,
) -> Result<TlsStream<S>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = std::time::Instant::now();
    let hello = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout(timeout, hello).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => return Err(HandshakeError::Failed(e)),
        Err(_) => return Err(HandshakeError::Timeout),
    };
    let remaining = timeout.saturating_sub(started.elapsed());
    let runtime = tokio::runtime::Handle::current();
    let handshake = tokio::task::spawn_blocking(move || {
        HANDSHAKE_THREAD.with(|on| on.set(true));
        let result = runtime.block_on(tokio::time::timeout(remaining, start.into_stream(config)));
        HANDSHAKE_THREAD.with(|on| on.set(false));
        result
    });
    match handshake.await {
        Ok(Ok(Ok(stream))) => Ok(stream),
        Ok(Ok(Err(e))) => Err(HandshakeError::Failed(e)),
        Ok(Err(_)) => Err(HandshakeError::Timeout),
        Err(e) => Err(HandshakeError::Task(e.to_string())),
    }
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
        let refuse = |why: &str| {
            tracing::error!(key = %self.id, "TLS signature in the token failed: {why}");
            rustls::Error::General("handshake signature failed".into())
        };
        if !HANDSHAKE_THREAD.with(Cell::get) {
            return Err(refuse(
                "the handshake is not running under smtp::tls::accept",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| refuse("no runtime"))?;
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let (hsm, id, message) = (self.hsm.clone(), self.id.clone(), message.to_vec());
        runtime.spawn(async move {
            let signed = hsm
                .call("TLS handshake signature", move |hsm| {
                    hsm.sign(&id, SignatureScheme::EcdsaSha256, &message)
                })
                .await;
            let _ = answer.send(signed);
        });
        // Hsm::call always answers (its queue and operation timeouts bound it); a
        // task dropped with the runtime closes the channel.
        match answered.recv() {
            Ok(Ok(signature)) => Ok(signature),
            Ok(Err(e)) => Err(refuse(&e.to_string())),
            Err(_) => Err(refuse("the token task ended without an answer")),
        }
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
