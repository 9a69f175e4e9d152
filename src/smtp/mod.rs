//! SMTP: the server the senders talk to and the client that talks to the next hop.
//! Protocol only; what happens to a message is decided in [`crate::relay`].

pub mod client;
pub mod command;
pub mod reply;
pub mod server;

pub use reply::Reply;
pub mod sink;
pub mod tls;
