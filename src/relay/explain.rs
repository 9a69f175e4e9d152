//! `smimegate rule explain FROM TO`: which rule decides for a sender/recipient pair,
//! what happens, and why, from the same data and code the relay uses.

use crate::pki::address::Address;
use crate::policy::{self, Direction, InboundContent, InboundOutcome, Selection};
use crate::store::{Store, StoreError};

use super::directory::{Directory, Route, party};

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub direction: Direction,
    pub sender: String,
    pub sender_managed: bool,
    pub recipient: String,
    pub recipient_managed: bool,
    /// Outbound: the sender has an active certificate.
    pub sender_can_sign: Option<bool>,
    /// Outbound: a valid certificate is known for the recipient.
    pub recipient_has_certificate: Option<bool>,
    pub selection: Selection,
    /// What happens, one line per case.
    pub outcomes: Vec<String>,
    pub notes: Vec<String>,
}

pub async fn explain(
    store: &Store,
    sender: &Address,
    recipient: &Address,
) -> Result<Explanation, StoreError> {
    explain_with(store, None, sender, recipient).await
}

/// [`explain`], checking partner certificates for revocation as the relay does.
pub async fn explain_with(
    store: &Store,
    revocation: Option<std::sync::Arc<crate::pki::revocation::Revocations>>,
    sender: &Address,
    recipient: &Address,
) -> Result<Explanation, StoreError> {
    let directory = Directory::current(store).await?.with_revocation(revocation);
    let rules = directory.snapshot.rules.clone();
    let route = directory.route(recipient);
    let sender_managed = directory.is_managed(sender);
    let recipient_managed = directory.is_managed(recipient);
    let mut explanation = Explanation {
        direction: route.direction(),
        sender: sender.to_string(),
        sender_managed,
        recipient: recipient.to_string(),
        recipient_managed,
        sender_can_sign: None,
        recipient_has_certificate: None,
        selection: policy::select(
            &rules,
            route.direction(),
            party(sender, sender_managed),
            party(recipient, recipient_managed),
        ),
        outcomes: Vec::new(),
        notes: Vec::new(),
    };
    match route {
        Route::Outbound => {
            let (_, _, facts, lookup) = directory.outbound_lookup(sender, recipient).await?;
            explanation.sender_can_sign = Some(facts.sender_can_sign);
            explanation.recipient_has_certificate = Some(facts.recipient_has_certificate);
            let decide = |facts| {
                policy::decide_outbound(
                    &rules,
                    party(sender, sender_managed),
                    party(recipient, recipient_managed),
                    facts,
                )
            };
            let decision = super::directory::apply_revocation(
                decide(facts),
                &decide(policy::OutboundFacts {
                    recipient_has_certificate: true,
                    ..facts
                }),
                &lookup,
                recipient,
            );
            explanation.outcomes.push(match &decision.outcome {
                Ok(transform) => format!("accepted at RCPT; relayed {}", describe(*transform)),
                Err(rejection) => format!("refused at RCPT: {rejection}"),
            });
            explanation.notes = decision.notes;
        }
        Route::Inbound {
            known_mailbox,
            wildcard,
            next_hop,
        } => {
            if !known_mailbox && !wildcard {
                explanation.outcomes.push(format!(
                    "refused at RCPT: 550 5.1.1 <{recipient}>: no such mailbox here"
                ));
                return Ok(explanation);
            }
            if next_hop.is_none() {
                explanation
                    .notes
                    .push("the domain has no next hop: mail to it is deferred (451)".into());
            }
            for (content, label) in [
                (InboundContent::Unencrypted, "unencrypted mail"),
                (
                    InboundContent::Decryptable,
                    "encrypted mail we hold a key for",
                ),
                (
                    InboundContent::Undecryptable,
                    "encrypted mail we hold no key for",
                ),
                (
                    InboundContent::DecryptionFailed,
                    "encrypted mail to our key that does not decrypt",
                ),
            ] {
                let outcome = match policy::decide_inbound(&explanation.selection, content) {
                    InboundOutcome::Deliver => "delivered as it is".to_string(),
                    InboundOutcome::DeliverDecrypted => "delivered decrypted".to_string(),
                    InboundOutcome::Reject(r) => format!("refused after DATA: {r}"),
                };
                explanation.outcomes.push(format!("{label}: {outcome}"));
            }
        }
    }
    Ok(explanation)
}

fn describe(transform: policy::Transform) -> &'static str {
    match transform {
        policy::Transform::Plain => "unsigned and unencrypted",
        policy::Transform::Sign => "signed",
        policy::Transform::Encrypt => "encrypted (not signed)",
        policy::Transform::SignEncrypt => "signed and encrypted",
    }
}
