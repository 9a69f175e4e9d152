//! S/MIME (RFC 8551) over CMS (RFC 5652). Private-key operations go to the token
//! through [`crate::hsm::TokenSigner`]; everything here runs on the calling thread and
//! blocks while the token signs, so async callers use `Hsm::call`.

mod attributes;
pub mod ber;
pub mod capabilities;
pub mod decrypt;
mod ecdh;
pub mod encrypt;
pub mod layers;
mod sign;
mod signed_data;
pub mod verify;

pub use sign::{
    DetachedSigning, DigestAlgorithm, SignerIdentity, SmimeError, sign_detached, sign_opaque,
};
