//! Outbound: sign and/or encrypt a message for one group of recipients. Private
//! operations run in the token; a failure is a temporary error and the message is not
//! sent, never sent in plaintext instead.

use crate::app::App;
use crate::pki::address::Address;
use crate::policy::Transform;
use crate::smime::DetachedSigning;
use crate::smime::capabilities::{choose_cipher, choose_transport};
use crate::smime::encrypt::{Recipient, encrypt_message, encrypt_message_owned};

use super::directory::PartnerCertificate;
use super::error::RelayError;

/// The message is malformed beyond what can be signed or encrypted (too deep, 8-bit
/// data in a base64 part, …): a permanent refusal naming the fault.
fn unusable(e: &crate::mime::MimeError) -> RelayError {
    tracing::info!(error = %e, "message refused: cannot be transformed");
    RelayError::refused(
        554,
        "5.6.0",
        format!("The message cannot be signed or encrypted: {e}"),
    )
}

/// Why encryption failed: the message (permanent) or the gateway (temporary; the
/// message is not sent, never sent in clear instead).
fn encryption_failed(e: crate::smime::encrypt::EncryptError) -> RelayError {
    match e {
        crate::smime::encrypt::EncryptError::Mime(m) => unusable(&m),
        other => RelayError::gateway("encryption", other),
    }
}

/// Signs (if the transform says so) as `from` and then encrypts once per group of
/// recipients. Returns one message per group, in order. The signature goes through the
/// token's worker queue (its timeouts and session limit), like every token operation.
pub async fn transform(
    app: &App,
    snapshot: &super::directory::Snapshot,
    limits: &crate::mime::Limits,
    from: Option<&Address>,
    transform: Transform,
    groups: &[Vec<PartnerCertificate>],
    message: Vec<u8>,
) -> Result<Vec<Vec<u8>>, RelayError> {
    let body = if transform.signs() {
        let from = from.ok_or_else(|| RelayError::gateway("signing", "no sender to sign as"))?;
        let signer = snapshot.signer(app, from).await.map_err(|e| match e {
            crate::app::AppError::Store(s) => RelayError::Database(s),
            other => RelayError::gateway("signing", other),
        })?;
        sign(app, signer, message, *limits).await?
    } else {
        message
    };
    if !transform.encrypts() {
        return Ok(vec![body]);
    }
    let groups = groups.to_vec();
    let limits = *limits;
    // Encryption is CPU work on the whole message: off the async threads.
    tokio::task::spawn_blocking(move || encrypt_groups(body, &groups, &limits))
        .await
        .map_err(|e| RelayError::gateway("encryption", e))?
}

/// Messages up to this size are prepared for signing and assembled on the async
/// thread (tens of microseconds for a typical message); larger ones on the blocking pool.
const SIGN_INLINE_UP_TO: usize = 64 * 1024;

/// Signs `message` as multipart/signed. Only the signature itself takes a token
/// session: canonical form, digest, signed attributes and the CMS around the signature
/// are host work, done before and after it.
async fn sign(
    app: &App,
    signer: std::sync::Arc<crate::smime::SignerIdentity>,
    message: Vec<u8>,
    limits: crate::mime::Limits,
) -> Result<Vec<u8>, RelayError> {
    let inline = message.len() <= SIGN_INLINE_UP_TO;
    let prepared = if inline {
        DetachedSigning::new(signer, message, &limits)
    } else {
        tokio::task::spawn_blocking(move || DetachedSigning::new(signer, message, &limits))
            .await
            .map_err(|e| RelayError::gateway("signing", e))?
    }
    .map_err(signing_failed)?;
    let (key, scheme, to_be_signed) = prepared.to_be_signed();
    let (key, to_be_signed) = (key.clone(), to_be_signed.to_vec());
    let signature = app
        .hsm
        .call("sign message", move |hsm| {
            hsm.sign(&key, scheme, &to_be_signed)
        })
        .await
        .map_err(|e| RelayError::gateway("signing", e))?;
    if inline {
        prepared.finish(&signature)
    } else {
        tokio::task::spawn_blocking(move || prepared.finish(&signature))
            .await
            .map_err(|e| RelayError::gateway("signing", e))?
    }
    .map_err(signing_failed)
}

/// Why signing failed: the message (permanent: retrying will not help) or the gateway
/// (temporary).
fn signing_failed(e: crate::smime::SmimeError) -> RelayError {
    match e {
        crate::smime::SmimeError::Mime(m) => unusable(&m),
        other => RelayError::gateway("signing", other),
    }
}

fn encrypt_groups(
    body: Vec<u8>,
    groups: &[Vec<PartnerCertificate>],
    limits: &crate::mime::Limits,
) -> Result<Vec<Vec<u8>>, RelayError> {
    let prepare = |group: &[PartnerCertificate]| {
        let caps: Vec<_> = group.iter().map(|p| p.capabilities).collect();
        let recipients: Vec<Recipient> = group
            .iter()
            .map(|p| Recipient {
                certificate: p.certificate.clone(),
                transport: choose_transport(p.capabilities.as_ref()),
            })
            .collect();
        (recipients, choose_cipher(&caps))
    };
    let Some((last, others)) = groups.split_last() else {
        return Err(RelayError::gateway(
            "encryption",
            "no recipient certificates",
        ));
    };
    let mut out = Vec::with_capacity(groups.len());
    for group in others {
        let (recipients, cipher) = prepare(group);
        out.push(encrypt_message(&body, &recipients, cipher, limits).map_err(encryption_failed)?);
    }
    // The last group takes the buffer: it is encrypted where it lies.
    let (recipients, cipher) = prepare(last);
    out.push(encrypt_message_owned(body, &recipients, cipher, limits).map_err(encryption_failed)?);
    Ok(out)
}
