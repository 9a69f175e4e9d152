//! smimegate: an on-premises S/MIME gateway whose private keys never leave a PKCS#11
//! token. See docs/architecture.md for the modules and who may call whom.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod dns;
pub mod hsm;
pub mod metrics;
pub mod mime;
pub mod ops;
pub mod pki;
pub mod policy;
pub mod relay;
pub mod setup;
pub mod smime;
pub mod smtp;
pub mod store;
