//! The relay: SMTP in → policy → S/MIME → SMTP out, within the sender's session.

pub mod directory;
pub mod explain;
pub mod network;
