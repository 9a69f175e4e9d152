//! Inbound: open every S/MIME layer the policy allows (decrypt with any key the token
//! holds, verify every signature), decide by the inbound table, harvest valid
//! signers' certificates, and stamp what was found, layer by layer.
//!
//! Replies are decided only by what is known before any key of ours is used (RFC
//! 3218): a message encrypted to our key whose content does not decrypt is delivered
//! still encrypted, like any other, so the reply is no padding oracle. Failures of the
//! gateway itself (token, database, a check it could not make) are 4xx.

use std::sync::Arc;
use std::time::SystemTime;

use crate::app::App;
use crate::mime::Limits;
use crate::pki::address::Address;
use crate::policy::{self, InboundContent, InboundOutcome, Selection};
use crate::smime::decrypt::{DecryptError, Decrypted};
use crate::smime::layers::{Kept, KeyDirectory, Layer, Opened, Opener, TokenKeys, Unwrapper};
use crate::smime::verify::{FromField, Verdict, Verification, VerifyContext};
use crate::smtp::Reply;

use super::actions::LogAction;
use super::directory::Snapshot;
use super::headers;

/// The message to deliver and what was done to it.
pub struct Processed {
    pub message: Vec<u8>,
    /// The value of the stamp header.
    pub stamp: String,
    /// For the message log.
    pub actions: Vec<LogAction>,
}

fn temporary(what: &str, detail: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %detail, "{what} failed");
    Reply::new(
        451,
        "4.3.0",
        format!("{what} failed on the gateway; try again later"),
    )
}

/// The token through the gateway's worker queue (its timeouts and session limits),
/// called from the blocking thread the opener runs on. Only the keys of the
/// transaction's recipients are used, and only when the message names a key of each
/// of them: nobody reads what was sealed for someone else by having it relayed to
/// themselves, or to themselves and its addressee together.
struct QueuedKeys {
    app: Arc<App>,
    keys: Arc<KeyDirectory>,
    recipients: Vec<String>,
    runtime: tokio::runtime::Handle,
}

impl Unwrapper for QueuedKeys {
    fn decrypt(&self, cms_der: Vec<u8>, limits: &Limits) -> Result<Decrypted, DecryptError> {
        let named = self
            .keys
            .owners_named(&crate::smime::decrypt::recipients(&cms_der)?);
        if let Some(missing) = self.recipients.iter().find(|r| !named.contains(r)) {
            return Err(DecryptError::NotForRecipient(missing.clone()));
        }
        let keys = self.keys.clone();
        let limits = *limits;
        self.runtime
            .block_on(self.app.hsm.call("decrypt message", move |hsm| {
                Ok(TokenKeys { hsm, keys: &keys }.decrypt(cms_der, &limits))
            }))
            .map_err(DecryptError::Token)?
    }
}

/// Decides on, opens and stamps one inbound message. `Err` is the SMTP reply that
/// refuses it (5xx by policy, 4xx when the gateway itself failed).
pub async fn process(
    app: Arc<App>,
    snapshot: Arc<Snapshot>,
    revocation: &Arc<crate::pki::revocation::Revocations>,
    limits: &Limits,
    selection: &Selection,
    recipients: &[Address],
    message: Vec<u8>,
) -> Result<Processed, Reply> {
    let decrypt = selection.action != policy::Action::NoDecrypt;
    let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let keys = if decrypt && headers::is_smime(&message) {
        Arc::new(
            snapshot
                .key_directory(&app)
                .await
                .map_err(|e| temporary("reading the key directory", e))?
                .of_owners(&recipients),
        )
    } else {
        Arc::new(KeyDirectory::default())
    };
    let limits = *limits;
    let max_layers = app.settings.config.limits.max_smime_layers;
    let unwrapper = QueuedKeys {
        app: app.clone(),
        keys,
        recipients,
        runtime: tokio::runtime::Handle::current(),
    };
    let trust = snapshot.trust.clone();
    // Verification runs on a blocking thread: CRL downloads are waited for there,
    // each at most `[revocation].reply_wait_ms`.
    let crl_source = revocation.blocking(tokio::runtime::Handle::current());
    let (message, opened) = tokio::task::spawn_blocking(move || {
        let from = FromField::of_message(&message);
        let opener = Opener {
            keys: &unwrapper,
            verify: VerifyContext {
                trust: &trust,
                crls: &[],
                revocation: Some(&crl_source),
                now: SystemTime::now(),
                limits: &limits,
            },
            decrypt,
            max_layers,
        };
        let opened = opener.open(&message, &from);
        (message, opened.map(|o| (o, from)))
    })
    .await
    .map_err(|e| temporary("opening the message", e))?;
    let (opened, from) = match opened {
        Ok(done) => done,
        Err(crate::smime::layers::OpenError::Gateway(e)) => {
            return Err(temporary("decryption", e));
        }
        Err(e @ crate::smime::layers::OpenError::TooDeep(_)) => {
            tracing::info!(error = %e, "message refused");
            return Err(Reply::new(554, "5.6.0", format!("Message refused: {e}")));
        }
    };
    if let Some(unchecked) = opened.signatures().find(|v| v.verdict.is_temporary()) {
        return Err(temporary("checking the signature", &unchecked.detail));
    }
    let mut actions = layer_actions(&opened);
    let content = content_of(&opened);
    let outcome = policy::decide_inbound(selection, content);
    let Opened {
        mut layers,
        decrypted,
        truncated,
    } = opened;
    if let InboundOutcome::Reject(rejection) = outcome {
        return Err(rejection.into());
    }
    // What was verified inside is not delivered: only the verdicts are kept.
    for layer in &mut layers {
        if let Layer::Signed(v) = layer {
            v.content = None;
        }
    }
    let opened = Opened {
        layers,
        decrypted: None,
        truncated,
    };
    harvest(&app, &snapshot, revocation, &opened, &from, &mut actions).await;
    let stamp = stamp(&opened, &from);
    // One new buffer at most: the decrypted entity under the outer header fields, or
    // the message as it came with the stamp put in place.
    let message = match decrypted {
        Some(entity) if decrypt => with_entity(message, entity, &stamp)?,
        _ => headers::prepend_owned(message, headers::STAMP, &stamp),
    };
    Ok(Processed {
        message,
        stamp,
        actions,
    })
}

/// What the inbound table decides on: the state of the outermost encryption layer.
/// Nothing found inside decrypted content may change the reply: the sender could
/// shape that content (CBC malleability) and learn about the plaintext from it.
fn content_of(opened: &Opened) -> InboundContent {
    let outer_encryption = opened.layers.iter().find_map(|l| match l {
        Layer::Decrypted { .. } => Some(InboundContent::Decryptable),
        Layer::Encrypted(Kept::Failed) => Some(InboundContent::DecryptionFailed),
        Layer::Encrypted(_) => Some(InboundContent::Undecryptable),
        Layer::Signed(_) => None,
    });
    outer_encryption.unwrap_or(InboundContent::Unencrypted)
}

/// The log's account of each layer, outermost first.
fn layer_actions(opened: &Opened) -> Vec<LogAction> {
    let mut actions = Vec::new();
    for layer in &opened.layers {
        match layer {
            Layer::Decrypted {
                content_algorithm,
                key_transport,
                weak,
            } => {
                actions.push(LogAction::Decrypted {
                    content: content_algorithm,
                    transport: key_transport,
                });
                if *weak {
                    actions.push(LogAction::WeakCipher(content_algorithm));
                }
            }
            Layer::Encrypted(Kept::ByPolicy) => actions.push(LogAction::KeptEncrypted),
            Layer::Encrypted(Kept::Undecryptable(why)) => {
                actions.push(LogAction::Undecryptable(why.clone()));
                actions.push(LogAction::KeptEncrypted);
            }
            Layer::Encrypted(Kept::Failed) => {
                actions.push(LogAction::DecryptionFailed);
                actions.push(LogAction::KeptEncrypted);
            }
            Layer::Signed(v) => {
                actions.push(LogAction::Signature(v.verdict));
                for s in &v.signers {
                    actions.push(LogAction::Signer {
                        name: s.name(),
                        verdict: s.verdict,
                        detail: s.detail.clone(),
                    });
                }
                if v.verdict != Verdict::Valid {
                    tracing::info!(verdict = v.verdict.as_str(), detail = %v.detail, "signature not valid");
                }
            }
        }
    }
    actions
}

/// The stamp: `ENCRYPTION; signature=VERDICT[; signer=ADDRESS][; signers=…][;
/// layers=…]`. The signature word is `valid` only when every signature layer is; else
/// the first one's that is not. Every signer and every layer is listed when there is
/// more than one.
fn stamp(opened: &Opened, from: &FromField) -> String {
    let encryption = opened
        .layers
        .iter()
        .rev()
        .find_map(|l| match l {
            Layer::Decrypted { .. } => Some("decrypted"),
            Layer::Encrypted(Kept::Failed) => Some("decryption-failed"),
            Layer::Encrypted(_) => Some("encrypted"),
            Layer::Signed(_) => None,
        })
        .unwrap_or("not-encrypted");
    let signatures: Vec<&Verification> = opened.signatures().collect();
    let verdict = signatures
        .iter()
        .find(|v| v.verdict != Verdict::Valid)
        .or(signatures.first())
        .map_or("none", |v| v.verdict.as_str());
    let mut parts = vec![encryption.to_string(), format!("signature={verdict}")];
    // Soft-fail: the signer is named though its revocation status is unknown.
    let vouched = !signatures.is_empty()
        && signatures
            .iter()
            .all(|v| v.signer().is_some_and(|s| s.verdict == Verdict::Valid));
    if (verdict == "valid" || (verdict == "revocation-unknown" && vouched))
        && let Some(address) = from.address()
    {
        parts.push(format!("signer={address}"));
    }
    if signatures.iter().any(|v| v.signers.len() > 1) {
        parts.push(format!(
            "signers={}",
            signatures
                .iter()
                .map(|v| v.signer_summary())
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    if opened.layers.len() > 1 {
        let words: Vec<String> = opened
            .layers
            .iter()
            .map(|l| match l {
                Layer::Signed(v) => format!("signed({})", v.verdict.as_str()),
                Layer::Decrypted {
                    content_algorithm, ..
                } => format!("decrypted({content_algorithm})"),
                Layer::Encrypted(Kept::Failed) => "encrypted(failed)".into(),
                Layer::Encrypted(_) => "encrypted".into(),
            })
            .collect();
        let more = if opened.truncated { " ..." } else { "" };
        parts.push(format!("layers={}{more}", words.join(" ")));
    }
    parts.join("; ")
}

/// The outer header fields (not Content-*) with the decrypted entity, of whose header
/// fields only the Content-* ones are kept. Anything else inside the encryption was
/// written by the sender and is not bound to anything we checked: a From there would
/// sit beside the outer one the signature verdict was bound to, a stamp there would
/// pose as ours. Decrypted content is never a reason for a reply of its own (it would
/// be an oracle), so whatever its header looks like, it is delivered.
fn with_entity(message: Vec<u8>, entity: Vec<u8>, stamp: &str) -> Result<Vec<u8>, Reply> {
    let (outer, _) = crate::mime::split_raw_headers(&message)
        .map_err(|e| Reply::new(554, "5.6.0", format!("Malformed message header: {e}")))?;
    // The encrypted message is not needed any more: given back before the new one is
    // built.
    drop(message);
    // SMTP carries CRLF lines only (RFC 5321 §2.3.8); openssl encrypts LF text.
    let converted = match crate::mime::to_crlf(&entity) {
        std::borrow::Cow::Owned(canonical) => Some(canonical),
        std::borrow::Cow::Borrowed(_) => None,
    };
    let entity = converted.unwrap_or(entity);
    let entity = headers::canonical_header(entity);
    let fields_end = headers::field_lines_len(&entity);
    let kept = headers::retain(entity[..fields_end].to_vec(), |name| {
        name.len() > 8 && name[..8].eq_ignore_ascii_case(b"content-")
    });
    let rest = &entity[fields_end..];
    // The body starts after an empty line; an entity without one gets it.
    let separator: &[u8] = if rest.starts_with(b"\r\n") {
        b""
    } else {
        b"\r\n"
    };
    let mut out = Vec::with_capacity(kept.len() + rest.len() + 4096);
    out.extend_from_slice(&headers::field_line(headers::STAMP, stamp));
    for h in outer.iter().filter(|h| !h.is_content_header()) {
        out.extend_from_slice(&h.raw);
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    out.extend_from_slice(&kept);
    out.extend_from_slice(separator);
    out.extend_from_slice(rest);
    Ok(out)
}

/// Stores the encryption certificate of every valid signature layer's signer (the
/// one its EncryptionKeyPreference names, else its own when it may encrypt), with the
/// capabilities it advertised and when. Not for our own domains: their certificates
/// are ours already.
async fn harvest(
    app: &App,
    snapshot: &Snapshot,
    revocation: &crate::pki::revocation::Revocations,
    opened: &Opened,
    from: &FromField,
    actions: &mut Vec<LogAction>,
) {
    let Some(owner) = from.address().and_then(|a| Address::from_envelope(a).ok()) else {
        return;
    };
    if snapshot.is_managed_domain(owner.domain()) {
        return;
    }
    for verification in opened.signatures() {
        // A valid signer; under soft-fail also one whose revocation status is unknown
        // (checked again before anything is encrypted to it). Never a revoked one.
        let Some(signer) = verification.signer().filter(|s| {
            s.verdict == Verdict::Valid
                && matches!(
                    verification.verdict,
                    Verdict::Valid | Verdict::RevocationUnknown
                )
        }) else {
            continue;
        };
        let Some(encryption) = &signer.encryption_certificate else {
            continue;
        };
        // Its CAs, whose CRLs are checked before encrypting to it later.
        revocation.remember_cas(&encryption.intermediates).await;
        match app
            .store
            .certificates()
            .harvest(
                &encryption.certificate,
                owner.as_str(),
                signer.capabilities.as_deref(),
                signer.signing_time,
                &encryption.anchor,
            )
            .await
        {
            Ok(true) => {
                tracing::info!(%owner, "harvested a partner certificate");
                actions.push(LogAction::Harvested);
                // This node encrypts to it from its next transaction on (the others
                // within a second, by the version's notification).
                if let Err(e) = app.store.refresh_config_version().await {
                    tracing::warn!(error = %e, "cannot read the configuration version");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not store the signer's certificate"),
        }
    }
}
