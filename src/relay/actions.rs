//! What was done to a message, for the message log: one typed entry per step, written
//! as the words `smimegate log` shows.

use std::fmt;

use crate::smime::verify::Verdict;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogAction {
    /// A decision note of the policy (why unsigned, why unencrypted).
    Note(String),
    Signed,
    /// The message left unsigned although the rule signs, and why.
    NotSigned(String),
    /// Encrypted; `copies` > 1 when Bcc recipients got copies of their own.
    Encrypted {
        copies: usize,
    },
    Decrypted {
        content: &'static str,
        transport: &'static str,
    },
    WeakCipher(&'static str),
    KeptEncrypted,
    Undecryptable(String),
    DecryptionFailed,
    /// The verdict of one signature layer.
    Signature(Verdict),
    /// One signer's verdict within a signature layer.
    Signer {
        name: String,
        verdict: Verdict,
        detail: String,
    },
    Harvested,
    Rejected,
    Refused,
    RefusedAtRcpt,
}

impl fmt::Display for LogAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogAction::Note(note) => f.write_str(note),
            LogAction::Signed => f.write_str("signed"),
            LogAction::NotSigned(why) => write!(f, "not signed: {why}"),
            LogAction::Encrypted { copies } if *copies > 1 => {
                write!(f, "encrypted ({copies} copies for Bcc)")
            }
            LogAction::Encrypted { .. } => f.write_str("encrypted"),
            LogAction::Decrypted { content, transport } => {
                write!(f, "decrypted ({content}, {transport})")
            }
            LogAction::WeakCipher(c) => write!(f, "weak-cipher {c}"),
            LogAction::KeptEncrypted => f.write_str("kept-encrypted"),
            LogAction::Undecryptable(why) => write!(f, "undecryptable: {why}"),
            LogAction::DecryptionFailed => f.write_str("decryption-failed"),
            LogAction::Signature(v) => write!(f, "signature-{}", v.as_str()),
            LogAction::Signer {
                name,
                verdict,
                detail,
            } => write!(f, "signer {name} {}: {detail}", verdict.as_str()),
            LogAction::Harvested => f.write_str("harvested"),
            LogAction::Rejected => f.write_str("rejected"),
            LogAction::Refused => f.write_str("refused"),
            LogAction::RefusedAtRcpt => f.write_str("refused at RCPT"),
        }
    }
}

/// The log's words for a list of actions, control characters removed (details quote
/// certificates and messages).
pub fn words(actions: &[LogAction]) -> Vec<String> {
    actions
        .iter()
        .map(|a| a.to_string().chars().filter(|c| !c.is_control()).collect())
        .collect()
}
