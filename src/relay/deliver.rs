//! After DATA: the message is made unambiguous (header line endings, stamps stripped),
//! checked for loops, given its Received field, transformed (inbound: opened and
//! stamped; outbound: signed as its sender and encrypted per group), and handed to the
//! next hop over the transaction's link, whose answer is ours.

use std::time::Instant;

use crate::metrics::{HopStep, Stage};
use crate::pki::address::Address;
use crate::policy::{Action, Transform};
use crate::smime::verify::FromField;
use crate::smtp::Reply;
use crate::smtp::server::SessionInfo;

use super::actions::LogAction;
use super::directory::{PartnerCertificate, Snapshot};
use super::error::RelayError;
use super::hops::Envelope;
use super::transaction::{self, Class, Routed, State, Transaction};
use super::{Relay, headers, inbound, outbound, received};

/// What came of a message: the reply, what was done, and its header (for the log).
pub struct Outcome {
    pub reply: Reply,
    pub actions: Vec<LogAction>,
    pub header: Vec<u8>,
}

impl Relay {
    pub(super) async fn deliver(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        message: Vec<u8>,
    ) -> Outcome {
        let message = headers::strip(headers::canonical_header(message), headers::STAMP);
        let header = summary_headers(&message);
        let mut actions = tx.notes.clone();
        let reply = match self
            .deliver_routed(session, tx, message, &mut actions)
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                actions.push(LogAction::Refused);
                Reply::from(&e)
            }
        };
        Outcome {
            reply,
            actions,
            header,
        }
    }

    async fn deliver_routed(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        message: Vec<u8>,
        actions: &mut Vec<LogAction>,
    ) -> Result<Reply, RelayError> {
        let State::Routed(routed) = &mut tx.state else {
            return Err(RelayError::refused(554, "5.5.1", "No valid recipients"));
        };
        if received::hops(&message) >= received::MAX_HOPS {
            return Err(RelayError::refused(
                554,
                "5.4.6",
                "Too many hops: the message is looping",
            ));
        }
        let single = (routed.recipients.len() == 1).then(|| routed.recipients[0].envelope.as_str());
        let trace = received::field(session, &self.hostname, &tx.mail.id, single);
        // In the message's own buffer: a large message is never held twice.
        let mut message = message;
        message.splice(0..0, trace.into_bytes());
        match routed.class.clone() {
            Class::Inbound { .. } => {
                let recipients: Vec<Address> = routed
                    .recipients
                    .iter()
                    .map(|r| r.address.clone())
                    .collect();
                let started = Instant::now();
                let processed = inbound::process(
                    self.app.clone(),
                    tx.mail.snapshot.clone(),
                    &self.revocation,
                    &self.limits,
                    &routed.selection,
                    &recipients,
                    message,
                )
                .await;
                self.metrics.stage(Stage::Smime, started.elapsed());
                let processed = match processed {
                    Ok(p) => p,
                    Err(reply) => {
                        actions.push(if reply.is_permanent() {
                            LogAction::Rejected
                        } else {
                            LogAction::Refused
                        });
                        return Ok(reply);
                    }
                };
                actions.extend(processed.actions);
                let started = Instant::now();
                let reply = routed
                    .link
                    .data(&self.hops, &self.client, &processed.message)
                    .await;
                self.metrics.next_hop(HopStep::Data, started, reply.code);
                Ok(reply)
            }
            Class::Outbound { transform, .. } => {
                let sender = tx.mail.sender.as_ref();
                let may_send_as = self.may_send_as(session, &tx.mail.snapshot);
                let transform = signing_identity(
                    sender,
                    may_send_as.as_deref(),
                    routed,
                    transform,
                    &message,
                    actions,
                )?;
                let snapshot = tx.mail.snapshot.clone();
                self.send_outbound(sender, &snapshot, routed, transform, message, actions)
                    .await
            }
        }
    }

    /// Signs and encrypts (per Bcc group) and hands over.
    async fn send_outbound(
        &self,
        sender: Option<&Address>,
        snapshot: &Snapshot,
        routed: &mut Routed,
        transform: Transform,
        message: Vec<u8>,
        actions: &mut Vec<LogAction>,
    ) -> Result<Reply, RelayError> {
        // Bcc recipients (in the envelope, not in To/Cc) get their own copy when
        // encrypting, so no RecipientInfo reveals them.
        let visible: Vec<String> = ["To", "Cc"]
            .iter()
            .flat_map(|h| headers::values(&message, h))
            .flat_map(|v| headers::addresses(&v))
            .map(|a| a.to_lowercase())
            .collect();
        let recipients = &routed.recipients;
        let groups: Vec<Vec<usize>> = if transform.encrypts() {
            let (shown, hidden): (Vec<usize>, Vec<usize>) = (0..recipients.len())
                .partition(|&i| visible.contains(&recipients[i].address.to_string()));
            let mut groups = Vec::new();
            if !shown.is_empty() {
                groups.push(shown);
            }
            groups.extend(hidden.into_iter().map(|i| vec![i]));
            groups
        } else {
            vec![(0..recipients.len()).collect()]
        };
        let certs: Vec<Vec<PartnerCertificate>> = groups
            .iter()
            .map(|g| {
                transaction::group_recipients(recipients, g)
                    .filter_map(|r| r.partner.clone())
                    .collect()
            })
            .collect();
        if transform.encrypts() && certs.iter().zip(&groups).any(|(c, g)| c.len() != g.len()) {
            return Err(RelayError::refused(
                451,
                "4.7.5",
                "A recipient certificate is no longer available; try again later",
            ));
        }
        let started = Instant::now();
        let outputs = outbound::transform(
            &self.app,
            snapshot,
            &self.limits,
            sender,
            transform,
            &certs,
            message,
        )
        .await;
        self.metrics.stage(Stage::Smime, started.elapsed());
        let outputs = outputs?;
        if transform.signs() {
            actions.push(LogAction::Signed);
        }
        if transform.encrypts() {
            actions.push(LogAction::Encrypted {
                copies: groups.len(),
            });
        }
        match outputs.as_slice() {
            [only] if groups.len() == 1 => {
                let started = Instant::now();
                let reply = routed.link.data(&self.hops, &self.client, only).await;
                self.metrics.next_hop(HopStep::Data, started, reply.code);
                Ok(reply)
            }
            _ => Ok(self.send_groups(routed, &groups, &outputs).await),
        }
    }
}

/// Who the message is signed as: the mailbox in its header From, and only when that
/// is the envelope sender — and, for an authenticated submitter, an address it may
/// send as (`None`: not authenticated) (DESIGN §2). Otherwise it leaves unsigned —
/// refused where the rule requires a signature — and the log says why.
fn signing_identity(
    sender: Option<&Address>,
    may_send_as: Option<&[String]>,
    routed: &Routed,
    transform: Transform,
    message: &[u8],
    actions: &mut Vec<LogAction>,
) -> Result<Transform, RelayError> {
    if !transform.signs() {
        return Ok(transform);
    }
    let from = FromField::of_message(message);
    let why = match (&from, sender) {
        (FromField::One(author), Some(sender))
            if author.eq_ignore_ascii_case(sender.as_str())
                && may_send_as
                    .is_none_or(|list| list.iter().any(|a| a.eq_ignore_ascii_case(author))) =>
        {
            return Ok(transform);
        }
        (FromField::One(author), Some(sender)) if !author.eq_ignore_ascii_case(sender.as_str()) => {
            format!("the header From <{author}> is not the sender <{sender}>")
        }
        (FromField::One(author), Some(_)) => {
            format!("the authenticated submitter may not send as <{author}>")
        }
        (FromField::One(author), None) => format!("a bounce cannot sign as <{author}>"),
        _ => "the message has no single From address to sign as".to_string(),
    };
    if routed.selection.action == Action::EncryptEnforced {
        return Err(RelayError::refused(
            550,
            "5.7.1",
            format!("The message must be signed and encrypted, but {why}"),
        ));
    }
    actions.push(LogAction::NotSigned(why));
    Ok(match transform {
        Transform::SignEncrypt => Transform::Encrypt,
        _ => Transform::Plain,
    })
}

/// The header fields the log reads (Message-ID, Subject), without the body.
fn summary_headers(message: &[u8]) -> Vec<u8> {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 4);
    message[..end].to_vec()
}

impl Relay {
    /// One transaction per group on the link's connection (Bcc copies). When the first
    /// group fails, its reply is the answer. When a later one fails after others were
    /// delivered, the answer is a 4xx: a 5xx would bounce recipients who have the
    /// message; the retry may give them a second copy, never none.
    async fn send_groups(
        &self,
        routed: &mut Routed,
        groups: &[Vec<usize>],
        outputs: &[Vec<u8>],
    ) -> Reply {
        let mut delivered = 0usize;
        let mut last = Reply::new(250, "2.0.0", "OK");
        for (group, output) in groups.iter().zip(outputs) {
            let envelope = Envelope {
                size: Some(output.len() as u64),
                recipients: transaction::group_recipients(&routed.recipients, group)
                    .map(|r| (r.envelope.clone(), r.params.clone()))
                    .collect(),
                ..routed.link.envelope.clone()
            };
            let started = Instant::now();
            let reply = routed
                .link
                .copy(&self.hops, &self.client, &envelope, output)
                .await;
            self.metrics.next_hop(HopStep::Data, started, reply.code);
            if reply.is_positive() {
                delivered += 1;
                last = reply;
            } else if delivered == 0 {
                return reply;
            } else {
                tracing::warn!(delivered, reply = %reply, "a Bcc copy failed after others were delivered");
                return Reply::new(
                    451,
                    "4.4.1",
                    "Part of the message was delivered, the rest could not be; try again later",
                );
            }
        }
        last
    }
}
