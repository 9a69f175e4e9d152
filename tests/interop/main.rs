//! Interop of the S/MIME engine with real peers (DESIGN §9): everything it emits is
//! verified and decrypted by `openssl cms` and, where it can, `gpgsm`; everything they
//! make for token-held keys is decrypted and verified by the engine; the negative cases
//! get their specific verdicts and errors.

#[path = "../common/mod.rs"]
mod common;

mod decrypt;
mod encrypt;
mod gpgsm;
mod layers;
mod sign;
mod trust;
mod verify;
