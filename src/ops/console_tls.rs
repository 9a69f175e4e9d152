//! An operator's own certificate for the console (from the organisation's CA, so that
//! browsers trust it without importing the gateway's root): its private key is
//! imported into the token as sensitive and non-extractable, like every other key of
//! the gateway, and the certificate chain is written to `console-tls.pem` in the data
//! directory. `[console] tls_certificate = "console-tls.pem"` with `tls_key = "token"`
//! then serves it; handshakes are signed in the token.
//!
//! The token signs TLS handshakes with P-256 keys (`smtp::tls`), so only P-256
//! certificates are taken; an RSA one is refused with what to do instead.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use der::Decode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Actor, OpError, audit};
use crate::app::App;
use crate::hsm::{HsmError, KeyId, KeyRole};

/// The file, in the data directory, the imported chain is written to.
pub const CHAIN_FILE: &str = "console-tls.pem";

/// What was imported, and the configuration that serves it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportedTls {
    pub certificate_file: String,
    pub subject: String,
    /// Unix seconds.
    pub not_after: i64,
    pub fingerprint_sha256: String,
    pub key_id: String,
}

fn invalid(why: impl Into<String>) -> OpError {
    OpError::Invalid(why.into())
}

/// Imports `key_pem` (PKCS#8 or SEC1 "EC PRIVATE KEY", P-256, unencrypted) into the
/// token and writes `chain_pem` (leaf first) to [`CHAIN_FILE`]. The key must belong to
/// the leaf certificate, and the leaf must be valid now.
pub async fn import(
    app: &App,
    actor: &Actor,
    chain_pem: &[u8],
    key_pem: Zeroizing<Vec<u8>>,
) -> Result<ImportedTls, OpError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("the certificate file is not PEM certificates: {e}")))?;
    let leaf_der = chain
        .first()
        .ok_or_else(|| invalid("the certificate file holds no certificate"))?;
    let leaf = x509_cert::Certificate::from_der(leaf_der.as_ref())
        .map_err(|e| invalid(format!("the first certificate does not parse: {e}")))?;
    let tbs = leaf.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    if spki.algorithm.oid != const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
        return Err(invalid(
            "only a P-256 (ECDSA) certificate can have its key in the token for TLS; for an RSA \
             certificate set [console] tls_key to the key file instead",
        ));
    }
    let now = crate::store::unix_now();
    let validity = tbs.validity();
    let not_before =
        i64::try_from(validity.not_before.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    let not_after = i64::try_from(validity.not_after.to_unix_duration().as_secs()).unwrap_or(0);
    if now < not_before || now >= not_after {
        return Err(invalid("the certificate is not valid now"));
    }
    let key_id = KeyId::for_public_key(spki).map_err(|e| invalid(e.to_string()))?;
    let pkcs8 = pkcs8_of(&key_pem)?;
    drop(key_pem);
    let label = format!("{} (console TLS)", app.settings.config.hsm.token_label);
    let imported = app
        .hsm
        .call("import key", move |hsm| {
            hsm.import_pkcs8(pkcs8, KeyRole::TlsServer, &label)
        })
        .await
        .map_err(|e| match e {
            HsmError::InvalidKey(why) => invalid(format!("the private key: {why}")),
            other => OpError::Token(other),
        })?;
    if imported.id != key_id {
        let id = imported.id.clone();
        let _ = app
            .hsm
            .call("discard key", move |hsm| {
                hsm.discard_unrecorded_key(&id);
                Ok(())
            })
            .await;
        return Err(invalid(
            "the private key does not belong to the certificate",
        ));
    }
    let path = app.settings.data_dir.join(CHAIN_FILE);
    let mut pem = String::new();
    for der in &chain {
        let cert = x509_cert::Certificate::from_der(der.as_ref())
            .map_err(|e| invalid(format!("a chain certificate does not parse: {e}")))?;
        pem.push_str(
            &der::EncodePem::to_pem(&cert, der::pem::LineEnding::LF)
                .map_err(|e| invalid(format!("cannot write the chain as PEM: {e}")))?,
        );
    }
    write_replacing(&path, pem.as_bytes())
        .map_err(|e| invalid(format!("cannot write {}: {e}", path.display())))?;
    let fingerprint = hex::encode(Sha256::digest(leaf_der.as_ref()));
    let subject = tbs.subject().to_string();
    audit(
        &app.store,
        actor,
        "console.tls-import",
        &subject,
        &format!("sha256={fingerprint} key={key_id} (in the token)"),
    )
    .await?;
    Ok(ImportedTls {
        certificate_file: path.display().to_string(),
        subject,
        not_after,
        fingerprint_sha256: fingerprint,
        key_id: key_id.to_string(),
    })
}

/// The PKCS#8 DER of a PEM private key (PKCS#8, or SEC1 for P-256).
fn pkcs8_of(pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpError> {
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| invalid(format!("the key file is not a PEM private key: {e}")))?;
    match key {
        PrivateKeyDer::Pkcs8(der) => Ok(Zeroizing::new(der.secret_pkcs8_der().to_vec())),
        PrivateKeyDer::Sec1(der) => {
            let secret = p256::SecretKey::from_sec1_der(der.secret_sec1_der())
                .map_err(|e| invalid(format!("the EC key is not a P-256 key: {e}")))?;
            let document = p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&secret)
                .map_err(|e| invalid(format!("cannot re-encode the EC key: {e}")))?;
            Ok(Zeroizing::new(document.as_bytes().to_vec()))
        }
        _ => Err(invalid(
            "the key must be an unencrypted PKCS#8 or EC (SEC1) private key",
        )),
    }
}

/// Writes `contents` to `path` through a temporary file and a rename (mode 0644: a
/// certificate chain is public).
fn write_replacing(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("pem.new");
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
