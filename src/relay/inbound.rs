//! Inbound: decrypt with any key the token holds (per the inbound table), verify the
//! signature, harvest a valid signer's certificate, and stamp the result.

use std::time::SystemTime;

use crate::app::App;
use crate::pki::address::Address;
use crate::policy::{self, InboundContent, InboundOutcome, Selection};
use crate::smime::decrypt::{self, DecryptError};
use crate::smime::verify::{self, Verdict};
use crate::smtp::Reply;

use super::headers;

/// The message to deliver and what was done to it.
pub struct Processed {
    pub message: Vec<u8>,
    /// The value of the stamp header.
    pub stamp: String,
    /// For the message log.
    pub actions: Vec<String>,
}

fn temporary(what: &str, detail: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %detail, "{what} failed");
    Reply::new(
        451,
        "4.3.0",
        format!("{what} failed on the gateway; try again later"),
    )
}

/// Decides on, opens and stamps one inbound message. `Err` is the SMTP reply that
/// refuses it (5xx by policy, 4xx when the gateway itself failed).
pub async fn process(
    app: &App,
    limits: &crate::mime::Limits,
    selection: &Selection,
    message: Vec<u8>,
) -> Result<Processed, Reply> {
    let mut actions = Vec::new();
    // Encrypted? A body that claims to be and does not parse counts as undecryptable.
    // (Decoding a large body is CPU work: off the async threads.)
    let limits_for_decode = *limits;
    let (message, cms) = tokio::task::spawn_blocking(move || {
        let cms = decrypt::cms_from_message(&message, &limits_for_decode);
        (message, cms)
    })
    .await
    .map_err(|e| temporary("decoding the message", e))?;
    let (content, decrypted) = match cms {
        Err(DecryptError::NotEncrypted(_)) => (InboundContent::Unencrypted, None),
        Err(e) => {
            actions.push(format!("undecryptable: {e}"));
            (InboundContent::Undecryptable, None)
        }
        Ok(_) if selection.action == policy::Action::NoDecrypt => {
            (InboundContent::Undecryptable, None)
        }
        Ok(der) => {
            let recipients = decrypt::recipients(&der).unwrap_or_default();
            let held = app
                .key_directory()
                .await
                .map_err(|e| temporary("reading the key directory", e))?
                .resolve(&recipients);
            let limits_copy = *limits;
            let result = app
                .hsm
                .call("decrypt message", move |hsm| {
                    Ok(decrypt::decrypt_within(hsm, &der, &held, &limits_copy))
                })
                .await
                .map_err(|e| temporary("decryption", e))?;
            match result {
                Ok(done) => {
                    actions.push(format!(
                        "decrypted ({}, {})",
                        done.content_algorithm, done.key_transport
                    ));
                    if done.weak {
                        actions.push(format!("weak-cipher {}", done.content_algorithm));
                    }
                    (InboundContent::Decryptable, Some(done))
                }
                Err(DecryptError::Token(e)) if e.is_transient() => {
                    return Err(temporary("decryption", e));
                }
                Err(e) => {
                    actions.push(format!("undecryptable: {e}"));
                    (InboundContent::Undecryptable, None)
                }
            }
        }
    };
    let message = match policy::decide_inbound(selection, content) {
        InboundOutcome::Reject(rejection) => {
            actions.push("rejected".into());
            return Err(rejection.into());
        }
        InboundOutcome::DeliverDecrypted => match decrypted {
            Some(done) => with_entity(&message, &done.entity)?,
            None => message,
        },
        InboundOutcome::Deliver => message,
    };
    let encryption = match (content, decrypted_flag(&actions)) {
        (InboundContent::Unencrypted, _) => "not-encrypted",
        (_, true) => "decrypted",
        _ => {
            actions.push("kept-encrypted".into());
            "encrypted"
        }
    };
    let (signature, signer) = verify_and_harvest(app, limits, &message, &mut actions).await;
    let mut stamp = format!("{encryption}; signature={signature}");
    if let Some(signer) = signer {
        stamp.push_str(&format!("; signer={signer}"));
    }
    let message = headers::prepend(&message, headers::STAMP, &stamp);
    Ok(Processed {
        message,
        stamp,
        actions,
    })
}

fn decrypted_flag(actions: &[String]) -> bool {
    actions.iter().any(|a| a.starts_with("decrypted"))
}

/// The outer header fields (not Content-*) with the decrypted entity.
fn with_entity(message: &[u8], entity: &[u8]) -> Result<Vec<u8>, Reply> {
    let (outer, _) = crate::mime::split_raw_headers(message)
        .map_err(|e| Reply::new(554, "5.6.0", format!("Malformed message header: {e}")))?;
    let mut out = Vec::with_capacity(entity.len() + 4096);
    for h in outer.iter().filter(|h| !h.is_content_header()) {
        out.extend_from_slice(&h.raw);
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    out.extend_from_slice(entity);
    Ok(out)
}

/// Verifies a signed message against the trust anchors and the From address; a valid
/// signer's certificate is harvested with its capabilities. Returns the verdict word
/// for the stamp and the signer address.
async fn verify_and_harvest(
    app: &App,
    limits: &crate::mime::Limits,
    message: &[u8],
    actions: &mut Vec<String>,
) -> (String, Option<String>) {
    let content_type = headers::value(message, "Content-Type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let signed = content_type.starts_with("multipart/signed")
        || ((content_type.contains("pkcs7-mime")) && content_type.contains("signed-data"));
    if !signed {
        return ("none".into(), None);
    }
    let from = headers::value(message, "From")
        .map(|v| headers::addresses(&v))
        .and_then(|a| a.into_iter().next());
    let anchors = match crate::app::trust_anchors(&app.store).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot read trust anchors");
            Vec::new()
        }
    };
    let owned = message.to_vec();
    let limits = *limits;
    let from_for_verify = from.clone();
    let result = tokio::task::spawn_blocking(move || {
        verify::verify(
            &owned,
            from_for_verify.as_deref(),
            &anchors,
            SystemTime::now(),
            &limits,
        )
    })
    .await;
    let Ok(result) = result else {
        actions.push("signature-unchecked".into());
        return ("unchecked".into(), None);
    };
    let verdict = result.verdict.as_str().to_string();
    actions.push(format!("signature-{verdict}"));
    if result.verdict != Verdict::Valid {
        tracing::info!(verdict = %verdict, detail = %result.detail, "signature not valid");
        return (verdict, None);
    }
    let (Some(signer), Some(from)) = (result.signer.as_ref(), from) else {
        return (verdict, None);
    };
    let owner = match Address::from_envelope(&from) {
        Ok(a) => a.to_string(),
        Err(_) => return (verdict, Some(from)),
    };
    match app
        .store
        .certificates()
        .harvest(signer, &owner, result.capabilities.as_deref())
        .await
    {
        Ok(true) => {
            tracing::info!(owner = %owner, "harvested a partner certificate");
            actions.push("harvested".into());
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "could not store the signer's certificate"),
    }
    (verdict, Some(owner))
}
