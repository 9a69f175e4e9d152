//! RCPT: where a recipient goes and what the policy does to it, decided from the
//! envelope alone (DESIGN §2), and the call-ahead to the next hop whose answer becomes
//! ours. Listener roles: the inbound listener takes mail for our domains only, from
//! anyone, and a sender address there is never "managed" (anyone can write it); the
//! submission listener takes mail from the internal networks or authenticated
//! submitters, to anywhere.

use crate::metrics::{HopStep, Stage};
use crate::pki::address::Address;
use crate::policy::{self, Direction, Selection};
use crate::smtp::Reply;
use crate::smtp::command::RcptParams;
use crate::smtp::server::{Listener, SessionInfo};

use super::Relay;
use super::directory::{self, Directory, NULL_SENDER, PartnerCertificate, Route, party};
use super::error::RelayError;
use super::hops::Envelope;
use super::transaction::{self, AcceptedRecipient, Class, HopLink, Routed, State, Transaction};

/// A recipient's class and what goes with it.
pub struct Decided {
    pub class: Class,
    pub selection: Selection,
    pub partner: Option<PartnerCertificate>,
}

impl Relay {
    /// Whether the session's client may submit: an authenticated submitter, or a client
    /// on an internal network that does not require authentication (the configuration
    /// file's networks, and `smimegate network allow` without `--require-auth`).
    pub(super) fn may_submit(&self, session: &SessionInfo, snapshot: &super::Snapshot) -> bool {
        let ip = session.peer.ip();
        session.authenticated.is_some()
            || self.config_networks.iter().any(|n| n.contains(ip))
            || snapshot
                .networks
                .iter()
                .any(|(n, require_auth)| !require_auth && n.contains(ip))
    }

    /// The class of one recipient, or the error refusing it.
    pub(super) async fn classify(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        recipient: &Address,
    ) -> Result<Decided, RelayError> {
        let snapshot = tx.mail.snapshot.clone();
        let directory = Directory::new(&self.app.store, snapshot.clone())
            .with_revocation(Some(self.revocation.clone()));
        let route = directory.route(recipient);
        tx.direction = Some(route.direction());
        let null_sender = Address::from_envelope(NULL_SENDER)
            .map_err(|e| RelayError::gateway("naming the null sender", e))?;
        let sender = tx.mail.sender.as_ref().unwrap_or(&null_sender);
        match route {
            Route::Inbound {
                next_hop,
                known_mailbox,
                wildcard,
            } => {
                if !known_mailbox && !wildcard {
                    return Err(RelayError::refused(
                        550,
                        "5.1.1",
                        format!("<{recipient}>: no such mailbox here"),
                    ));
                }
                let hop = next_hop.ok_or_else(|| {
                    RelayError::refused(
                        451,
                        "4.3.0",
                        format!("<{recipient}>: no route to the internal server is configured"),
                    )
                })?;
                // Anyone on the internet can write our addresses into MAIL FROM.
                let sender_managed = session.listener == Listener::Submission
                    && tx.mail.sender.is_some()
                    && directory.is_managed(sender);
                let selection = policy::select(
                    &snapshot.rules,
                    Direction::Inbound,
                    party(sender, sender_managed),
                    party(recipient, known_mailbox),
                );
                Ok(Decided {
                    class: Class::Inbound { hop },
                    selection,
                    partner: None,
                })
            }
            Route::Outbound => {
                if session.listener == Listener::Inbound || !self.may_submit(session, &snapshot) {
                    return Err(RelayError::refused(
                        554,
                        "5.7.1",
                        format!("<{recipient}>: relaying denied"),
                    ));
                }
                let hop = snapshot
                    .smarthost
                    .clone()
                    .or_else(|| self.config_smarthost.clone())
                    .ok_or_else(|| {
                        RelayError::refused(
                            451,
                            "4.3.0",
                            "No smarthost is configured for outbound mail",
                        )
                    })?;
                let (sender_managed, recipient_managed, facts, lookup) =
                    directory.outbound_lookup(sender, recipient).await?;
                let decide = |facts| {
                    policy::decide_outbound(
                        &snapshot.rules,
                        party(sender, sender_managed),
                        party(recipient, recipient_managed),
                        facts,
                    )
                };
                // A revoked (or, under hard-fail, unknown) certificate: the reply says so.
                let decision = directory::apply_revocation(
                    decide(facts),
                    &decide(policy::OutboundFacts {
                        recipient_has_certificate: true,
                        ..facts
                    }),
                    &lookup,
                    recipient,
                );
                tx.notes.extend(
                    decision
                        .notes
                        .iter()
                        .cloned()
                        .map(super::actions::LogAction::Note),
                );
                let transform = decision.outcome?;
                let partner = if transform.encrypts() {
                    lookup.certificate().cloned()
                } else {
                    None
                };
                Ok(Decided {
                    class: Class::Outbound { hop, transform },
                    selection: decision.selection,
                    partner,
                })
            }
        }
    }

    /// Decides on one recipient and, when it is ours to relay, asks the next hop: the
    /// hop's answer is the reply. Only an accepted recipient changes the transaction.
    pub(super) async fn accept(
        &self,
        session: &SessionInfo,
        tx: &mut Transaction,
        to: &str,
        params: &RcptParams,
    ) -> Result<Reply, RelayError> {
        let address = Address::from_envelope(to).map_err(|e| {
            RelayError::refused(
                553,
                "5.1.3",
                format!("Invalid recipient address: {}", e.reason),
            )
        })?;
        let started = std::time::Instant::now();
        let decided = self.classify(session, tx, &address).await;
        self.metrics.stage(Stage::Policy, started.elapsed());
        let decided = decided?;
        let accepted = |partner| AcceptedRecipient {
            envelope: to.to_string(),
            address: address.clone(),
            params: params.clone(),
            partner,
        };
        match &mut tx.state {
            State::Routed(routed) => {
                if routed.class != decided.class {
                    // RFC 5321 §4.5.3.1.10: the client sends this recipient in a later
                    // transaction, so every transaction has one next hop and treatment.
                    return Err(RelayError::refused(
                        452,
                        "4.5.3",
                        format!("<{address}>: send this recipient in a separate transaction"),
                    ));
                }
                let started = std::time::Instant::now();
                let reply = routed.link.rcpt(&self.hops, &self.client, to, params).await;
                self.metrics.next_hop(HopStep::Rcpt, started, reply.code);
                if reply.is_positive() {
                    routed.recipients.push(accepted(decided.partner));
                }
                Ok(reply)
            }
            State::Open => {
                let envelope = Envelope {
                    from: tx.mail.from.clone(),
                    params: tx.mail.params.clone(),
                    size: transaction::announced_size(&tx.mail.params, &decided.class),
                    recipients: Vec::new(),
                    xforward: Some(xforward(session)),
                };
                let hop = decided.class.hop().to_string();
                let started = std::time::Instant::now();
                let begun = self
                    .hops
                    .begin(&self.client, &hop, &envelope, to, params)
                    .await;
                let code = match &begun {
                    Ok((_, reply)) | Err(reply) => reply.code,
                };
                self.metrics.next_hop(HopStep::Rcpt, started, code);
                let (conn, reply) = begun.map_err(RelayError::NextHop)?;
                if !reply.is_positive() {
                    // Nobody was accepted: the connection goes back, the state stays.
                    self.hops.put_back(conn).await;
                    return Ok(reply);
                }
                let mut envelope = envelope;
                envelope.recipients.push((to.to_string(), params.clone()));
                tx.state = State::Routed(Box::new(Routed {
                    class: decided.class,
                    selection: decided.selection,
                    link: HopLink::new(conn, &hop, envelope),
                    recipients: vec![accepted(decided.partner)],
                }));
                Ok(reply)
            }
        }
    }
}

/// What a Postfix next hop offering XFORWARD is told about the real client, so it can
/// still check it (SPF, DNSBL) behind the gateway.
fn xforward(session: &SessionInfo) -> crate::smtp::client::XforwardAttrs {
    crate::smtp::client::XforwardAttrs {
        name: None,
        addr: Some(session.peer.ip()),
        proto: Some("ESMTP".to_string()),
        helo: (!session.helo.is_empty()).then(|| session.helo.clone()),
    }
}
