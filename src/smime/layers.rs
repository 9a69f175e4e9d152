//! Opening an inbound message layer by layer (RFC 8551 §3.7, RFC 2634 triple wrap):
//! verify what is signed, decrypt what is encrypted to a key we hold, and go on into
//! the content until a plain entity remains, bounded by the CMS nesting limit. Every
//! layer is reported, outermost first. The token is reached only through
//! [`Unwrapper`], so the relay can route it through its worker queue.

use std::borrow::Cow;
use std::collections::HashMap;

use x509_cert::certificate::Certificate;

use super::decrypt::{self, DecryptError, Decrypted, FailureClass, RecipientId};
use super::verify::{self, FromField, Verification, VerifyContext};
use crate::hsm::{Hsm, KeyId};
use crate::mime::{self, Limits};

/// Which recipient ids name keys the token holds, and whose mailbox each key is: built
/// from the certificates the gateway issued or imported (any key, retired ones
/// included).
#[derive(Debug, Default, Clone)]
pub struct KeyDirectory {
    keys: HashMap<RecipientIdKey, (KeyId, Option<String>)>,
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
    /// Records that the key `key` belongs to `cert` (of no particular mailbox).
    pub fn add(&mut self, cert: &Certificate, key: KeyId) {
        self.add_owned(cert, key, None);
    }

    /// Records that the key `key` belongs to `cert`, the certificate of mailbox
    /// `owner`.
    pub fn add_owned(&mut self, cert: &Certificate, key: KeyId, owner: Option<&str>) {
        let owner = owner.map(str::to_ascii_lowercase);
        for id in RecipientId::for_certificate(cert) {
            self.keys.insert((&id).into(), (key.clone(), owner.clone()));
        }
        // The CKA_ID is the SKI of the key, whatever the certificate says.
        self.keys
            .insert(RecipientIdKey::Ski(key.as_bytes().to_vec()), (key, owner));
    }

    pub fn resolve(&self, ids: &[RecipientId]) -> Vec<(RecipientId, KeyId)> {
        ids.iter()
            .filter_map(|id| {
                self.keys
                    .get(&id.into())
                    .map(|(k, _)| (id.clone(), k.clone()))
            })
            .collect()
    }

    /// Only the keys of these mailboxes (lower case): a message is decrypted only with
    /// a key of someone it is delivered to.
    pub fn of_owners(&self, owners: &[String]) -> KeyDirectory {
        KeyDirectory {
            keys: self
                .keys
                .iter()
                .filter(|(_, (_, owner))| owner.as_ref().is_some_and(|o| owners.contains(o)))
                .map(|(id, entry)| (id.clone(), entry.clone()))
                .collect(),
        }
    }

    /// The mailboxes whose keys `ids` name.
    pub fn owners_named(&self, ids: &[RecipientId]) -> Vec<String> {
        let mut owners: Vec<String> = ids
            .iter()
            .filter_map(|id| self.keys.get(&id.into()).and_then(|(_, o)| o.clone()))
            .collect();
        owners.sort();
        owners.dedup();
        owners
    }
}

/// Recovers the content of an encrypted layer with a key we hold.
pub trait Unwrapper {
    fn decrypt(&self, cms_der: Vec<u8>, limits: &Limits) -> Result<Decrypted, DecryptError>;
}

/// The token itself, called on this thread (CLI, tests, blocking callers).
pub struct TokenKeys<'a> {
    pub hsm: &'a Hsm,
    pub keys: &'a KeyDirectory,
}

impl Unwrapper for TokenKeys<'_> {
    fn decrypt(&self, cms_der: Vec<u8>, limits: &Limits) -> Result<Decrypted, DecryptError> {
        let held = self.keys.resolve(&decrypt::recipients(&cms_der)?);
        decrypt::decrypt_within(self.hsm, &cms_der, &held, limits)
    }
}

/// Why an encrypted layer was left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Policy said not to decrypt.
    ByPolicy,
    /// Decided before any key of ours was used: no key for us, malformed structure,
    /// unsupported algorithm. Policy may reject for it.
    Undecryptable(String),
    /// A key of ours was used and the content did not decrypt. Every cause looks the
    /// same (RFC 3218), and it is never a reason to reject: a reply that differed
    /// from a successful decryption's would be a padding oracle.
    Failed,
}

/// One layer, outermost first.
#[derive(Debug)]
pub enum Layer {
    Signed(Box<Verification>),
    Decrypted {
        content_algorithm: &'static str,
        key_transport: &'static str,
        weak: bool,
    },
    /// An encrypted layer that was not removed (the last layer when present).
    Encrypted(Kept),
}

/// The layers of a message and what is left when they are removed.
#[derive(Debug)]
pub struct Opened {
    pub layers: Vec<Layer>,
    /// The entity inside the innermost encryption layer removed, when one was: what
    /// to deliver in place of the message's content. Signed layers inside it stay
    /// (the recipient's client can verify them too); signatures outside it covered
    /// the ciphertext and cannot survive decryption.
    pub decrypted: Option<Vec<u8>>,
    /// More layers were inside a decrypted one than the limit allows: not opened.
    pub truncated: bool,
}

impl Opened {
    pub fn is_encrypted(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l, Layer::Decrypted { .. } | Layer::Encrypted(_)))
    }

    /// The signature layers, outermost first.
    pub fn signatures(&self) -> impl Iterator<Item = &Verification> {
        self.layers.iter().filter_map(|l| match l {
            Layer::Signed(v) => Some(v.as_ref()),
            _ => None,
        })
    }

    /// The plain entity at the centre, when every layer was opened.
    pub fn innermost(&self) -> Option<&[u8]> {
        match self.layers.last() {
            Some(Layer::Signed(v)) => v.content.as_deref(),
            Some(Layer::Decrypted { .. }) => self.decrypted.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The gateway's own failure (token, PIN, library): try again later.
    #[error("the gateway could not decrypt: {0}")]
    Gateway(DecryptError),
    #[error("more than {0} nested S/MIME layers")]
    TooDeep(usize),
}

/// What a layer is, from its Content-Type (and, for `application/pkcs7-mime`
/// without smime-type, from its CMS content type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Signed,
    Encrypted,
}

fn kind(entity: &[u8], limits: &Limits) -> Kind {
    let Ok((headers, _)) = mime::split_raw_headers(entity) else {
        return Kind::Plain;
    };
    let types: Vec<mime::ContentType> = headers
        .iter()
        .filter(|h| h.is("content-type"))
        .filter_map(|h| mime::ContentType::parse(&h.value()))
        .collect();
    let is_pkcs7 = |ct: &mime::ContentType| {
        ct.kind == "application" && (ct.subtype == "pkcs7-mime" || ct.subtype == "x-pkcs7-mime")
    };
    let signed = |ct: &mime::ContentType| ct.kind == "multipart" && ct.subtype == "signed";
    match types.as_slice() {
        [ct] if signed(ct) => Kind::Signed,
        [ct] if is_pkcs7(ct) => {
            match ct
                .param("smime-type")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("signed-data") => Kind::Signed,
                Some("enveloped-data" | "authenveloped-data") => Kind::Encrypted,
                Some(_) => Kind::Plain,
                None => match decrypt::cms_from_message(entity, limits) {
                    Err(DecryptError::NotEncrypted(_)) => Kind::Signed,
                    _ => Kind::Encrypted,
                },
            }
        }
        // Several Content-Type fields and one of them S/MIME: the verifier calls it
        // malformed rather than guess which one the client reads.
        [_, _, ..] if types.iter().any(|ct| signed(ct) || is_pkcs7(ct)) => Kind::Signed,
        _ => Kind::Plain,
    }
}

/// What opening needs besides the message.
pub struct Opener<'a> {
    pub keys: &'a dyn Unwrapper,
    pub verify: VerifyContext<'a>,
    /// Whether encryption layers are removed (policy `no-decrypt` says not).
    pub decrypt: bool,
    /// Most S/MIME layers to look into (CMS nesting limit).
    pub max_layers: usize,
}

impl Opener<'_> {
    /// Removes the S/MIME layers of `message`. A signature layer is verified against
    /// `from` (the message's From field) and opened further whatever its verdict; an
    /// encrypted layer that is not decrypted ends the walk.
    pub fn open(&self, message: &[u8], from: &FromField) -> Result<Opened, OpenError> {
        let limits = self.verify.limits;
        let mut layers = Vec::new();
        let mut decrypted: Option<Vec<u8>> = None;
        // The entity looked at: inside the last decryption, or a signed content.
        let mut inner: Option<Vec<u8>> = None;
        loop {
            let current: Cow<'_, [u8]> = match (inner.take(), &decrypted) {
                (Some(bytes), _) => Cow::Owned(bytes),
                (None, Some(bytes)) => Cow::Borrowed(bytes.as_slice()),
                (None, None) => Cow::Borrowed(message),
            };
            let kind = kind(&current, limits);
            if kind == Kind::Plain {
                give_back(current, &mut layers);
                break;
            }
            if layers.len() >= self.max_layers {
                // Inside decrypted content nothing may change the answer (it would
                // tell the sender about the plaintext): stop, deliver what is open.
                if decrypted.is_some() {
                    give_back(current, &mut layers);
                    return Ok(Opened {
                        layers,
                        decrypted,
                        truncated: true,
                    });
                }
                return Err(OpenError::TooDeep(self.max_layers));
            }
            if kind == Kind::Signed {
                let mut verification = verify::verify(&current, from, &self.verify);
                drop(current);
                // The content is looked at next (not copied: a large message is held
                // once); it goes back to its layer if nothing is inside it.
                let content = verification.content.take();
                layers.push(Layer::Signed(Box::new(verification)));
                match content {
                    Some(content) => inner = Some(content),
                    None => break,
                }
                continue;
            }
            if !self.decrypt {
                layers.push(Layer::Encrypted(Kept::ByPolicy));
                break;
            }
            let result = decrypt::cms_from_message(&current, limits)
                .and_then(|der| self.keys.decrypt(der, limits));
            drop(current);
            match result {
                Ok(done) => {
                    layers.push(Layer::Decrypted {
                        content_algorithm: done.content_algorithm,
                        key_transport: done.key_transport,
                        weak: done.weak,
                    });
                    decrypted = Some(done.entity);
                    inner = None;
                }
                Err(e) => {
                    layers.push(Layer::Encrypted(match e.class() {
                        // Inside decrypted content, even our own failure must not
                        // change the answer: the layer stays as it is.
                        FailureClass::Gateway if decrypted.is_some() => Kept::Failed,
                        FailureClass::Gateway => return Err(OpenError::Gateway(e)),
                        FailureClass::Integrity => Kept::Failed,
                        FailureClass::Structure => Kept::Undecryptable(e.to_string()),
                    }));
                    break;
                }
            }
        }
        Ok(Opened {
            layers,
            decrypted,
            truncated: false,
        })
    }
}

/// The signed content that was looked at for a further layer and held none goes back
/// to its signature layer ([`Opened::innermost`]).
fn give_back(current: Cow<'_, [u8]>, layers: &mut [Layer]) {
    if let (Cow::Owned(content), Some(Layer::Signed(v))) = (current, layers.last_mut()) {
        v.content = Some(content);
    }
}
