//! MIME handling for signing: canonical CRLF line endings, header and
//! Content-Type parsing, and the transfer re-encoding that makes an entity 7-bit clean
//! before it is signed, so no relay can break the signature (RFC 8551 §3.1.2/§3.1.3).
//! Pure: bytes in, bytes out, no I/O. Every recursion is bounded by [`Limits`].

pub mod address_list;
mod encode;
mod entity;
mod header;

pub use address_list::{AddressListError, parse_address_list};
pub use encode::{
    base64_decode_lines, base64_lines, base64_lines_into, base64_lines_of_parts, quoted_printable,
};
pub use entity::{
    Message, make_seven_bit_safe, seven_bit_entity, split_headers, split_message, split_raw,
    split_raw_headers, to_crlf,
};
pub use header::{ContentType, Header};

/// Bounds on what the MIME code will walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of multiparts and message/rfc822 parts.
    pub max_depth: usize,
    /// Largest message, in bytes.
    pub max_size: usize,
    /// Most recipients (RecipientInfos) one encrypted message may name, and one
    /// encryption may address.
    pub max_recipients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_size: 50 * 1024 * 1024,
            max_recipients: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MimeError {
    #[error("MIME nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed MIME: {0}")]
    Malformed(&'static str),
}
