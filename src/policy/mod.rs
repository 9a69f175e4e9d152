//! The policy engine (DESIGN §3). Pure: rules, an envelope pair and what is known about
//! it go in; the action, the rule that chose it and the SMTP answer come out. No I/O,
//! so the relay, the CLI's `rule explain` and the golden-file tests share one truth.
//!
//! Rules are walked by priority (1 is highest); the first enabled rule of the
//! direction whose sender and recipient matchers both match and whose action is not
//! *undefined* decides. Without one, the default decides: *sign* outbound,
//! *decrypt-optional* inbound.

mod matcher;

use std::fmt;

pub use matcher::{Matcher, MatcherError};

use crate::pki::address::Address;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The recipient is in a managed domain: mail from the internet to the organisation.
    Inbound,
    /// Mail from the organisation to the internet.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "inbound" | "in" => Ok(Direction::Inbound),
            "outbound" | "out" => Ok(Direction::Outbound),
            other => Err(PolicyError::UnknownDirection(other.to_string())),
        }
    }

    /// What applies when no rule decides.
    pub fn default_action(self) -> Action {
        match self {
            Direction::Inbound => Action::DecryptOptional,
            Direction::Outbound => Action::Sign,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's action. The first five are outbound actions, the rest inbound; `Undefined`
/// belongs to both and means "no decision here, look further".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Undefined,
    None,
    Sign,
    EncryptOptional,
    EncryptEnforced,
    NoDecrypt,
    DecryptOptional,
    DecryptAlways,
    DecryptEnforced,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Undefined => "undefined",
            Action::None => "none",
            Action::Sign => "sign",
            Action::EncryptOptional => "encrypt-optional",
            Action::EncryptEnforced => "encrypt-enforced",
            Action::NoDecrypt => "no-decrypt",
            Action::DecryptOptional => "decrypt-optional",
            Action::DecryptAlways => "decrypt-always",
            Action::DecryptEnforced => "decrypt-enforced",
        }
    }

    /// Parses an action and checks that it belongs to `direction`.
    pub fn parse(text: &str, direction: Direction) -> Result<Self, PolicyError> {
        let action = match text.trim().to_ascii_lowercase().as_str() {
            "undefined" => Action::Undefined,
            "none" => Action::None,
            "sign" => Action::Sign,
            "encrypt-optional" => Action::EncryptOptional,
            "encrypt-enforced" => Action::EncryptEnforced,
            "no-decrypt" => Action::NoDecrypt,
            "decrypt-optional" => Action::DecryptOptional,
            "decrypt-always" => Action::DecryptAlways,
            "decrypt-enforced" => Action::DecryptEnforced,
            other => return Err(PolicyError::UnknownAction(other.to_string())),
        };
        if action != Action::Undefined && action.direction() != Some(direction) {
            return Err(PolicyError::WrongDirection { action, direction });
        }
        Ok(action)
    }

    /// The direction the action belongs to; `None` for `Undefined`.
    pub fn direction(self) -> Option<Direction> {
        match self {
            Action::Undefined => None,
            Action::None | Action::Sign | Action::EncryptOptional | Action::EncryptEnforced => {
                Some(Direction::Outbound)
            }
            Action::NoDecrypt
            | Action::DecryptOptional
            | Action::DecryptAlways
            | Action::DecryptEnforced => Some(Direction::Inbound),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown direction '{0}' (inbound or outbound)")]
    UnknownDirection(String),
    #[error(
        "unknown action '{0}' (outbound: undefined, none, sign, encrypt-optional, \
         encrypt-enforced; inbound: undefined, no-decrypt, decrypt-optional, decrypt-always, \
         decrypt-enforced)"
    )]
    UnknownAction(String),
    #[error("action {action} is not an {direction} action")]
    WrongDirection {
        action: Action,
        direction: Direction,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Rule {
    pub id: i64,
    /// 1 is the highest priority.
    pub priority: i64,
    pub direction: Direction,
    /// `anyone`, `managed`, `mailbox:ADDRESS`, `address:ADDRESS`, `domain:DOMAIN`.
    #[schema(value_type = String)]
    pub sender: Matcher,
    #[schema(value_type = String)]
    pub recipient: Matcher,
    pub action: Action,
    pub enabled: bool,
    pub comment: String,
}

/// One side of the envelope: an address and whether it is a managed mailbox.
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    pub address: &'a Address,
    pub managed: bool,
}

/// Why a rule did or did not decide, for `rule explain`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Considered {
    pub rule_id: i64,
    pub priority: i64,
    #[schema(value_type = String)]
    pub outcome: &'static str,
}

/// The action chosen for one sender/recipient pair, and by what.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Selection {
    pub direction: Direction,
    pub action: Action,
    /// The deciding rule; `None` when the default applies.
    pub rule_id: Option<i64>,
    /// Every rule of the direction looked at, in order, up to the deciding one.
    pub considered: Vec<Considered>,
}

/// Walks `rules` (any order; sorted here by priority) for one pair.
pub fn select(rules: &[Rule], direction: Direction, sender: Party, recipient: Party) -> Selection {
    let mut ordered: Vec<&Rule> = rules.iter().filter(|r| r.direction == direction).collect();
    ordered.sort_by_key(|r| (r.priority, r.id));
    let mut considered = Vec::new();
    for rule in ordered {
        let outcome = if !rule.enabled {
            "disabled"
        } else if !rule.sender.matches(sender.address, sender.managed) {
            "sender does not match"
        } else if !rule.recipient.matches(recipient.address, recipient.managed) {
            "recipient does not match"
        } else if rule.action == Action::Undefined {
            "matches, action undefined: falls through"
        } else {
            considered.push(Considered {
                rule_id: rule.id,
                priority: rule.priority,
                outcome: "matches: decides",
            });
            return Selection {
                direction,
                action: rule.action,
                rule_id: Some(rule.id),
                considered,
            };
        };
        considered.push(Considered {
            rule_id: rule.id,
            priority: rule.priority,
            outcome,
        });
    }
    Selection {
        direction,
        action: direction.default_action(),
        rule_id: None,
        considered,
    }
}

/// What the relay does to an outbound message for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transform {
    Plain,
    Sign,
    Encrypt,
    SignEncrypt,
}

impl Transform {
    pub fn as_str(self) -> &'static str {
        match self {
            Transform::Plain => "plain",
            Transform::Sign => "sign",
            Transform::Encrypt => "encrypt",
            Transform::SignEncrypt => "sign-encrypt",
        }
    }

    pub fn signs(self) -> bool {
        matches!(self, Transform::Sign | Transform::SignEncrypt)
    }

    pub fn encrypts(self) -> bool {
        matches!(self, Transform::Encrypt | Transform::SignEncrypt)
    }
}

/// An SMTP rejection with its enhanced status code (RFC 3463) and a text that says
/// exactly why; the upstream MTA puts it into the sender's DSN.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// What is known about an outbound pair when the recipient is given (RCPT TO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundFacts {
    /// The sender is a managed mailbox with an active certificate and its key.
    pub sender_can_sign: bool,
    /// A valid certificate for the recipient is known (harvested or uploaded).
    pub recipient_has_certificate: bool,
    /// The envelope sender is null (`MAIL FROM:<>`: a bounce or DSN). Nobody can sign
    /// it, and it may quote what it bounces: under an enforcing rule it is encrypted
    /// (unsigned) or refused, never sent in clear.
    pub null_sender: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutboundDecision {
    pub selection: Selection,
    /// What to do, or why the recipient is refused.
    pub outcome: Result<Transform, Rejection>,
    /// Why the transform is weaker than the action asks (e.g. no sender key).
    pub notes: Vec<String>,
}

/// The outbound table of DESIGN §3 for one recipient.
pub fn decide_outbound(
    rules: &[Rule],
    sender: Party,
    recipient: Party,
    facts: OutboundFacts,
) -> OutboundDecision {
    let selection = select(rules, Direction::Outbound, sender, recipient);
    let by = rule_words(&selection);
    let mut notes = Vec::new();
    let no_key_note = || {
        if facts.null_sender {
            "sent unsigned: a bounce (null sender) has no signing key".to_string()
        } else {
            format!(
                "sent unsigned: {} has no active certificate",
                sender.address
            )
        }
    };
    let outcome = match selection.action {
        Action::None => Ok(Transform::Plain),
        Action::Sign => {
            if facts.sender_can_sign {
                Ok(Transform::Sign)
            } else {
                notes.push(no_key_note());
                Ok(Transform::Plain)
            }
        }
        Action::EncryptOptional => {
            if !facts.sender_can_sign {
                notes.push(no_key_note());
            }
            if !facts.recipient_has_certificate {
                notes.push(format!(
                    "sent unencrypted: no valid certificate is known for {}",
                    recipient.address
                ));
            }
            Ok(
                match (facts.sender_can_sign, facts.recipient_has_certificate) {
                    (true, true) => Transform::SignEncrypt,
                    (true, false) => Transform::Sign,
                    (false, true) => Transform::Encrypt,
                    (false, false) => Transform::Plain,
                },
            )
        }
        Action::EncryptEnforced if facts.null_sender => {
            if facts.recipient_has_certificate {
                notes.push(no_key_note());
                Ok(Transform::Encrypt)
            } else {
                Err(Rejection {
                    code: 550,
                    enhanced: "5.7.1",
                    text: format!(
                        "<{}>: encryption is required {by}, and no valid certificate is known \
                         for this recipient; a bounce is not sent in clear",
                        recipient.address
                    ),
                })
            }
        }
        Action::EncryptEnforced => {
            if !facts.sender_can_sign {
                Err(Rejection {
                    code: 550,
                    enhanced: "5.7.1",
                    text: format!(
                        "<{}>: encryption is required {by}, but the sender {} has no active \
                         S/MIME certificate",
                        recipient.address, sender.address
                    ),
                })
            } else if !facts.recipient_has_certificate {
                Err(Rejection {
                    code: 550,
                    enhanced: "5.7.1",
                    text: format!(
                        "<{}>: encryption is required {by}, and no valid certificate is known \
                         for this recipient",
                        recipient.address
                    ),
                })
            } else {
                Ok(Transform::SignEncrypt)
            }
        }
        // Inbound actions cannot be selected for the outbound direction; `select`
        // never returns Undefined. Treat anything else as the default.
        _ => {
            if facts.sender_can_sign {
                Ok(Transform::Sign)
            } else {
                Ok(Transform::Plain)
            }
        }
    };
    OutboundDecision {
        selection,
        outcome,
        notes,
    }
}

/// What an inbound message turned out to be, once its content is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundContent {
    /// Not encrypted (signed or not).
    Unencrypted,
    /// Encrypted, and a key the token holds opened it.
    Decryptable,
    /// Encrypted, and decided before any key of ours was used that it cannot be
    /// opened: no key the token holds is named, the structure is malformed, or the
    /// algorithm is unsupported.
    Undecryptable,
    /// Encrypted to a key we hold, and the content did not decrypt (wrong key,
    /// corrupted ciphertext, bad padding, failed authentication: all alike). Never a
    /// reason to reject: a reply that differed from that to a successful decryption
    /// would be a padding oracle (RFC 3218 §2.3); the message is delivered still
    /// encrypted and the stamp says so.
    DecryptionFailed,
}

/// The inbound outcome for the content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InboundOutcome {
    /// Deliver as it is (unencrypted, or left encrypted).
    Deliver,
    /// Deliver the decrypted message.
    DeliverDecrypted,
    Reject(Rejection),
}

/// The inbound table of DESIGN §3, once the message's content is known.
pub fn decide_inbound(selection: &Selection, content: InboundContent) -> InboundOutcome {
    let by = rule_words(selection);
    match (selection.action, content) {
        (Action::NoDecrypt, _) => InboundOutcome::Deliver,
        (_, InboundContent::Decryptable) => InboundOutcome::DeliverDecrypted,
        (_, InboundContent::DecryptionFailed) => InboundOutcome::Deliver,
        (Action::DecryptEnforced, InboundContent::Unencrypted) => {
            InboundOutcome::Reject(Rejection {
                code: 550,
                enhanced: "5.7.1",
                text: format!("only encrypted mail is accepted for this recipient {by}"),
            })
        }
        (Action::DecryptAlways | Action::DecryptEnforced, InboundContent::Undecryptable) => {
            InboundOutcome::Reject(Rejection {
                code: 550,
                enhanced: "5.7.5",
                text: format!(
                    "the message is encrypted and cannot be decrypted here (no key held for \
                     its recipients, or its structure or algorithm is not readable); \
                     decryption is required {by}"
                ),
            })
        }
        _ => InboundOutcome::Deliver,
    }
}

fn rule_words(selection: &Selection) -> String {
    match selection.rule_id {
        Some(id) => format!("by rule {id}"),
        None => "by default".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).expect("address")
    }

    fn rule(id: i64, priority: i64, from: &str, to: &str, action: Action) -> Rule {
        let direction = action.direction().unwrap_or(Direction::Outbound);
        Rule {
            id,
            priority,
            direction,
            sender: Matcher::parse(from).expect("matcher"),
            recipient: Matcher::parse(to).expect("matcher"),
            action,
            enabled: true,
            comment: String::new(),
        }
    }

    #[test]
    fn undefined_falls_through_and_priority_one_wins() {
        let alice = addr("alice@corp.example");
        let bob = addr("bob@partner.example");
        let sender = Party {
            address: &alice,
            managed: true,
        };
        let recipient = Party {
            address: &bob,
            managed: false,
        };
        let rules = vec![
            rule(
                7,
                2,
                "anyone",
                "domain:partner.example",
                Action::EncryptEnforced,
            ),
            rule(8, 1, "managed", "anyone", Action::Undefined),
            rule(9, 3, "anyone", "anyone", Action::None),
        ];
        let s = select(&rules, Direction::Outbound, sender, recipient);
        assert_eq!((s.action, s.rule_id), (Action::EncryptEnforced, Some(7)));
        assert_eq!(s.considered.len(), 2);
        let s = select(&[], Direction::Outbound, sender, recipient);
        assert_eq!((s.action, s.rule_id), (Action::Sign, None));
    }

    #[test]
    fn actions_belong_to_one_direction() {
        assert!(Action::parse("sign", Direction::Inbound).is_err());
        assert!(Action::parse("decrypt-always", Direction::Outbound).is_err());
        assert_eq!(
            Action::parse("undefined", Direction::Inbound),
            Ok(Action::Undefined)
        );
    }
}
