//! Opening an inbound message layer by layer: decrypt what is encrypted to a key we
//! hold, verify what is signed, repeat for nested layers (signed-in-encrypted,
//! encrypted-in-signed, triple wrap), bounded by the CMS nesting limit.

use std::collections::HashMap;
use std::time::SystemTime;

use x509_cert::certificate::Certificate;

use super::decrypt::{self, DecryptError, RecipientId};
use super::verify::{self, Verification};
use crate::hsm::{Hsm, KeyId};
use crate::mime::{self, Limits};

/// Which recipient ids name keys the token holds: built from the certificates the
/// gateway issued or imported (any key, retired ones included).
#[derive(Debug, Default, Clone)]
pub struct KeyDirectory {
    keys: HashMap<RecipientIdKey, KeyId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RecipientIdKey {
    IssuerSerial(Vec<u8>, Vec<u8>),
    Ski(Vec<u8>),
}

impl From<&RecipientId> for RecipientIdKey {
    fn from(id: &RecipientId) -> Self {
        match id {
            RecipientId::IssuerSerial { issuer, serial } => {
                RecipientIdKey::IssuerSerial(issuer.clone(), serial.clone())
            }
            RecipientId::SubjectKeyId(ski) => RecipientIdKey::Ski(ski.clone()),
        }
    }
}

impl KeyDirectory {
    /// Records that the key `key` belongs to `cert`.
    pub fn add(&mut self, cert: &Certificate, key: KeyId) {
        for id in RecipientId::for_certificate(cert) {
            self.keys.insert((&id).into(), key.clone());
        }
        // The CKA_ID is the SKI of the key, whatever the certificate says.
        self.keys
            .insert(RecipientIdKey::Ski(key.as_bytes().to_vec()), key);
    }

    pub fn resolve(&self, ids: &[RecipientId]) -> Vec<(RecipientId, KeyId)> {
        ids.iter()
            .filter_map(|id| self.keys.get(&id.into()).map(|k| (id.clone(), k.clone())))
            .collect()
    }
}

/// One layer that was removed.
#[derive(Debug)]
pub enum Layer {
    Decrypted {
        content_algorithm: &'static str,
        key_transport: &'static str,
        weak: bool,
    },
    Signed(Box<Verification>),
}

/// The innermost entity and the layers removed on the way, outermost first.
#[derive(Debug)]
pub struct Opened {
    pub entity: Vec<u8>,
    pub layers: Vec<Layer>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    #[error("more than {0} nested S/MIME layers")]
    TooDeep(usize),
    #[error(transparent)]
    Mime(#[from] mime::MimeError),
}

/// What opening needs besides the message.
pub struct Opener<'a> {
    pub hsm: &'a Hsm,
    pub keys: &'a KeyDirectory,
    pub anchors: &'a [Certificate],
    pub now: SystemTime,
    pub limits: &'a Limits,
    /// Most S/MIME layers to remove (CMS nesting limit).
    pub max_layers: usize,
}

impl Opener<'_> {
    /// Removes S/MIME layers from `message` until a plain entity remains. A signature
    /// layer is verified (against `from`, the message's From address) and its content
    /// opened further whatever the verdict: the caller decides what an invalid
    /// signature means. An encrypted layer that cannot be decrypted is an error.
    pub fn open(&self, message: &[u8], from: Option<&str>) -> Result<Opened, OpenError> {
        let mut layers = Vec::new();
        let mut current = message.to_vec();
        loop {
            let parsed = mime::split_raw(&current)?;
            let ct = parsed.content_type();
            let smime_type = ct.param("smime-type").map(str::to_ascii_lowercase);
            let is_pkcs7_mime = ct.kind == "application"
                && (ct.subtype == "pkcs7-mime" || ct.subtype == "x-pkcs7-mime");
            let is_signed = (ct.kind == "multipart" && ct.subtype == "signed")
                || (is_pkcs7_mime && smime_type.as_deref() == Some("signed-data"));
            let is_encrypted = is_pkcs7_mime && !is_signed;
            if !is_signed && !is_encrypted {
                return Ok(Opened {
                    entity: current,
                    layers,
                });
            }
            if layers.len() >= self.max_layers {
                return Err(OpenError::TooDeep(self.max_layers));
            }
            if is_encrypted {
                let der = decrypt::cms_from_message(&current, self.limits)?;
                let held = self.keys.resolve(&decrypt::recipients(&der)?);
                let done = decrypt::decrypt_within(self.hsm, &der, &held, self.limits)?;
                layers.push(Layer::Decrypted {
                    content_algorithm: done.content_algorithm,
                    key_transport: done.key_transport,
                    weak: done.weak,
                });
                current = done.entity;
            } else {
                let verification =
                    verify::verify(&current, from, self.anchors, self.now, self.limits);
                let content = verification.content.clone();
                layers.push(Layer::Signed(Box::new(verification)));
                match content {
                    Some(content) => current = content,
                    None => {
                        return Ok(Opened {
                            entity: current,
                            layers,
                        });
                    }
                }
            }
        }
    }
}
