//! The operation layer called directly, as the console and the lifecycle job will call
//! it: every refusal is a typed `OpError` that changed nothing and wrote no audit row;
//! every change writes exactly one audit row naming its actor. Run on a SQLite file
//! and on PostgreSQL; activation also against this process's token.

mod common;

use std::fmt::Debug;

use smimegate::app::App;
use smimegate::config::{Config, Settings};
use smimegate::hsm::KeyAlgorithm;
use smimegate::ops::audit::{self as audit_ops, AuditQuery};
use smimegate::ops::domains::{self, AddDomain};
use smimegate::ops::mailboxes::{self, Activate};
use smimegate::ops::relay_settings::{self, AllowNetwork, Source};
use smimegate::ops::rules::{self, AddRule, EditRule, Explain, MoveRule};
use smimegate::ops::{Actor, OpError, Ops};
use smimegate::pki::address::Address;
use smimegate::policy::{Action, Direction, Matcher};
use smimegate::store::{AuditEntry, CertificateSource, KeyPurpose, MailboxState, Store};

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Invalid,
    NotFound,
    Conflict,
}

/// Asserts that `result` is a refusal of this kind whose message says `text`.
fn refused<T: Debug>(result: Result<T, OpError>, kind: Kind, text: &str) {
    let err = result.expect_err(text);
    let actual = match &err {
        OpError::Invalid(_) => Some(Kind::Invalid),
        OpError::NotFound(_) => Some(Kind::NotFound),
        OpError::Conflict(_) => Some(Kind::Conflict),
        _ => None,
    };
    assert_eq!(actual, Some(kind), "{err:?}");
    assert!(err.to_string().contains(text), "'{err}' lacks '{text}'");
}

/// The audit log as far as the test has accounted for it.
struct AuditTrail<'a> {
    store: &'a Store,
    seen: usize,
}

impl<'a> AuditTrail<'a> {
    fn new(store: &'a Store) -> Self {
        AuditTrail { store, seen: 0 }
    }

    async fn rows(&self) -> Vec<AuditEntry> {
        self.store.audit().recent(10_000).await.expect("audit log")
    }

    /// Nothing was audited since the last check.
    async fn unchanged(&self) {
        assert_eq!(
            self.rows().await.len(),
            self.seen,
            "a refusal wrote an audit row"
        );
    }

    /// Exactly one row since the last check: this action on this target by `actor`.
    async fn one(&mut self, actor: &Actor, action: &str, target: &str) -> AuditEntry {
        let rows = self.rows().await;
        assert_eq!(rows.len(), self.seen + 1, "expected one row for {action}");
        self.seen += 1;
        let row = rows.into_iter().next().expect("newest row");
        assert_eq!((row.action.as_str(), row.target.as_str()), (action, target));
        assert_eq!((&row.actor, &row.origin), (&actor.name, &actor.origin));
        row
    }
}

fn settings() -> Settings {
    Settings::new(std::path::PathBuf::from("."), Config::default())
}

fn job() -> Actor {
    Actor::job("lifecycle")
}

fn console() -> Actor {
    Actor::console("alice", "192.0.2.7".parse().expect("ip"))
}

async fn suite(store: &Store) {
    let settings = settings();
    let ctx = Ops::new(&settings, store);
    let mut audit = AuditTrail::new(store);
    domain_ops(&ctx, &mut audit).await;
    mailbox_ops(&ctx, &mut audit).await;
    rule_ops(&ctx, &mut audit).await;
    rule_edit_ops(&ctx, &mut audit).await;
    relay_setting_ops(&ctx, &mut audit).await;
    audit_search(&ctx, &audit).await;
}

async fn domain_ops(ctx: &Ops<'_>, audit: &mut AuditTrail<'_>) {
    let add = |name: &str, next_hop: Option<&str>, wildcard: bool| AddDomain {
        name: name.into(),
        next_hop: next_hop.map(str::to_string),
        wildcard,
    };
    refused(
        domains::add(ctx, &console(), add("bad_domain", None, false)).await,
        Kind::Invalid,
        "domain labels take letters",
    );
    refused(
        domains::add(ctx, &console(), add("corp.example", Some("mx:0"), false)).await,
        Kind::Invalid,
        "next hop 'mx:0' has an invalid port",
    );
    refused(
        domains::add(ctx, &console(), add("corp.example", Some("mx"), false)).await,
        Kind::Invalid,
        "must be HOST:PORT",
    );
    audit.unchanged().await;
    assert!(domains::list(ctx).await.expect("list").is_empty());

    let corp = domains::add(
        ctx,
        &console(),
        add("Corp.Example.", Some("10.0.0.5:25"), false),
    )
    .await
    .expect("add corp");
    assert_eq!(corp.name, "corp.example");
    let row = audit.one(&console(), "domain.add", "corp.example").await;
    assert!(row.detail.contains("10.0.0.5:25"), "{}", row.detail);
    domains::add(ctx, &job(), add("wild.example", None, true))
        .await
        .expect("add wild");
    audit.one(&job(), "domain.add", "wild.example").await;
    domains::add(
        ctx,
        &job(),
        add("gone.example", Some("mx.gone.example:25"), false),
    )
    .await
    .expect("add gone");
    audit.one(&job(), "domain.add", "gone.example").await;

    refused(
        domains::add(ctx, &console(), add("CORP.example", None, false)).await,
        Kind::Conflict,
        "domain corp.example already exists",
    );
    refused(
        domains::remove(ctx, &console(), "nowhere.example").await,
        Kind::NotFound,
        "no managed domain nowhere.example",
    );
    refused(
        domains::remove(ctx, &console(), "not a domain").await,
        Kind::Invalid,
        "not a valid",
    );
    audit.unchanged().await;

    let removed = domains::remove(ctx, &console(), "gone.example")
        .await
        .expect("remove");
    assert_eq!(removed.next_hop.as_deref(), Some("mx.gone.example:25"));
    audit.one(&console(), "domain.remove", "gone.example").await;
    let names: Vec<String> = domains::list(ctx)
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["corp.example", "wild.example"]);
}

async fn mailbox_ops(ctx: &Ops<'_>, audit: &mut AuditTrail<'_>) {
    refused(
        mailboxes::add(ctx, &console(), "not-an-address").await,
        Kind::Invalid,
        "not a valid mailbox address",
    );
    refused(
        mailboxes::add(ctx, &console(), "bob@elsewhere.example").await,
        Kind::NotFound,
        "elsewhere.example is not a managed domain",
    );
    audit.unchanged().await;

    let alice = mailboxes::add(ctx, &console(), "Alice@Corp.Example")
        .await
        .expect("add alice");
    assert_eq!(alice.mailbox.address, "alice@corp.example");
    assert_eq!(alice.mailbox.state, MailboxState::Inactive);
    assert!(!alice.wildcard_domain);
    audit
        .one(&console(), "mailbox.add", "alice@corp.example")
        .await;
    let carol = mailboxes::add(ctx, &job(), "carol@wild.example")
        .await
        .expect("add carol");
    assert!(carol.wildcard_domain);
    audit.one(&job(), "mailbox.add", "carol@wild.example").await;

    refused(
        mailboxes::add(ctx, &console(), "alice@corp.example").await,
        Kind::Conflict,
        "mailbox alice@corp.example already exists",
    );
    refused(
        domains::remove(ctx, &console(), "wild.example").await,
        Kind::Invalid,
        "still has 1 mailbox",
    );
    refused(
        mailboxes::remove(ctx, &console(), "nobody@corp.example").await,
        Kind::NotFound,
        "no managed mailbox nobody@corp.example",
    );
    audit.unchanged().await;

    let list = mailboxes::list(ctx).await.expect("list");
    assert_eq!(list.mailboxes.len(), 2);
    assert_eq!(list.seats_in_use, 0);

    let removed = mailboxes::remove(ctx, &console(), "carol@wild.example")
        .await
        .expect("remove carol");
    assert_eq!(removed.domain, "wild.example");
    audit
        .one(&console(), "mailbox.remove", "carol@wild.example")
        .await;
}

async fn rule_ops(ctx: &Ops<'_>, audit: &mut AuditTrail<'_>) {
    let rule = |direction: &str, from: &str, to: &str, action: &str| AddRule {
        direction: direction.into(),
        from: from.into(),
        to: to.into(),
        action: action.into(),
        comment: "test".into(),
    };
    for (input, text) in [
        (
            rule("sideways", "anyone", "anyone", "sign"),
            "unknown direction",
        ),
        (
            rule("outbound", "anyone", "anyone", "decrypt-always"),
            "not an outbound action",
        ),
        (
            rule("outbound", "anyone", "anyone", "shout"),
            "unknown action",
        ),
        (
            rule("outbound", "mailbox:dave@corp.example", "anyone", "sign"),
            "dave@corp.example is not a managed mailbox",
        ),
        (rule("outbound", "nonsense:x", "anyone", "sign"), "nonsense"),
        (rule("outbound", "x@", "anyone", "sign"), "not a valid"),
    ] {
        refused(
            rules::add(ctx, &console(), input).await,
            Kind::Invalid,
            text,
        );
    }
    audit.unchanged().await;

    // A bare address is the managed mailbox when there is one.
    let first = rules::add(
        ctx,
        &console(),
        rule(
            "outbound",
            "alice@corp.example",
            "domain:partner.example",
            "encrypt-enforced",
        ),
    )
    .await
    .expect("add first");
    assert_eq!(
        first.sender,
        Matcher::Mailbox(Address::parse("alice@corp.example").expect("address"))
    );
    let row = audit
        .one(&console(), "rule.add", &first.id.to_string())
        .await;
    assert_eq!(row.detail, rules::describe(&first));
    let second = rules::add(
        ctx,
        &job(),
        rule("inbound", "anyone", "managed", "decrypt-always"),
    )
    .await
    .expect("add second");
    audit.one(&job(), "rule.add", &second.id.to_string()).await;
    assert_eq!(second.priority, 1);

    let missing = second.id + 100;
    refused(
        rules::move_to(
            ctx,
            &console(),
            MoveRule {
                id: missing,
                priority: 1,
            },
        )
        .await,
        Kind::NotFound,
        &format!("no rule {missing}"),
    );
    refused(
        rules::remove(ctx, &console(), missing).await,
        Kind::NotFound,
        "no rule",
    );
    refused(
        rules::enable(ctx, &console(), missing).await,
        Kind::NotFound,
        "no rule",
    );
    refused(
        rules::disable(ctx, &console(), missing).await,
        Kind::NotFound,
        "no rule",
    );
    audit.unchanged().await;

    let moved = rules::move_to(
        ctx,
        &console(),
        MoveRule {
            id: second.id,
            priority: 9,
        },
    )
    .await
    .expect("move");
    assert_eq!(moved.priority, 2, "clamped to the last place");
    let row = audit
        .one(&console(), "rule.move", &second.id.to_string())
        .await;
    assert_eq!(row.detail, "priority=2");
    let disabled = rules::disable(ctx, &console(), first.id)
        .await
        .expect("disable");
    assert!(!disabled.enabled);
    audit
        .one(&console(), "rule.disable", &first.id.to_string())
        .await;
    let enabled = rules::enable(ctx, &console(), first.id)
        .await
        .expect("enable");
    assert!(enabled.enabled);
    audit
        .one(&console(), "rule.enable", &first.id.to_string())
        .await;

    let explained = rules::explain(
        ctx,
        Explain {
            from: "alice@corp.example".into(),
            to: "bob@partner.example".into(),
        },
    )
    .await
    .expect("explain");
    assert_eq!(explained.direction, Direction::Outbound);
    assert_eq!(explained.selection.rule_id, Some(first.id));
    assert_eq!(explained.selection.action, Action::EncryptEnforced);
    refused(
        rules::explain(
            ctx,
            Explain {
                from: "alice".into(),
                to: "bob@partner.example".into(),
            },
        )
        .await,
        Kind::Invalid,
        "not a valid mailbox address",
    );
    audit.unchanged().await;

    let removed = rules::remove(ctx, &job(), first.id).await.expect("remove");
    assert_eq!(removed.id, first.id);
    audit
        .one(&job(), "rule.remove", &first.id.to_string())
        .await;
    let left = rules::list(ctx).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].id, left[0].priority), (second.id, 1));
}

/// `rule edit`: refusals change nothing and audit nothing; an edit changes only what
/// it names, keeps the priority, and writes one row with the rule before and after.
async fn rule_edit_ops(ctx: &Ops<'_>, audit: &mut AuditTrail<'_>) {
    let rule = rules::list(ctx).await.expect("list").remove(0);
    assert_eq!(rule.direction, Direction::Inbound, "left by rule_ops");
    let edit = |f: fn(&mut EditRule)| {
        let mut e = EditRule::default();
        f(&mut e);
        e
    };
    refused(
        rules::edit(
            ctx,
            &console(),
            rule.id,
            edit(|e| e.direction = Some("outbound".into())),
        )
        .await,
        Kind::Invalid,
        "give the new action too",
    );
    refused(
        rules::edit(
            ctx,
            &console(),
            rule.id,
            edit(|e| e.action = Some("sign".into())),
        )
        .await,
        Kind::Invalid,
        "not an inbound action",
    );
    refused(
        rules::edit(
            ctx,
            &console(),
            rule.id,
            edit(|e| e.from = Some("nonsense:x".into())),
        )
        .await,
        Kind::Invalid,
        "nonsense",
    );
    refused(
        rules::edit(
            ctx,
            &console(),
            rule.id,
            edit(|e| e.to = Some("mailbox:nobody@corp.example".into())),
        )
        .await,
        Kind::Invalid,
        "is not a managed mailbox",
    );
    refused(
        rules::edit(ctx, &console(), rule.id, EditRule::default()).await,
        Kind::Invalid,
        "leaves rule",
    );
    refused(
        rules::edit(
            ctx,
            &console(),
            rule.id + 100,
            edit(|e| e.comment = Some("x".into())),
        )
        .await,
        Kind::NotFound,
        "no rule",
    );
    audit.unchanged().await;
    assert_eq!(
        rules::list(ctx).await.expect("list")[0],
        rule,
        "nothing changed"
    );

    // One field: the others stay.
    let commented = rules::edit(
        ctx,
        &console(),
        rule.id,
        edit(|e| e.comment = Some("edited".into())),
    )
    .await
    .expect("edit comment");
    assert_eq!(commented.comment, "edited");
    assert_eq!(
        (commented.sender.clone(), commented.action),
        (rule.sender.clone(), rule.action)
    );
    let row = audit
        .one(&console(), "rule.edit", &rule.id.to_string())
        .await;
    assert_eq!(
        row.detail,
        format!(
            "{} -> {}",
            rules::describe(&rule),
            rules::describe(&commented)
        )
    );

    // Everything at once, the direction too: one change, one row, same priority.
    let edited = rules::edit(
        ctx,
        &job(),
        rule.id,
        EditRule {
            direction: Some("outbound".into()),
            from: Some("domain:corp.example".into()),
            to: Some("address:bob@partner.example".into()),
            action: Some("encrypt-optional".into()),
            comment: None,
        },
    )
    .await
    .expect("edit all");
    assert_eq!(edited.direction, Direction::Outbound);
    assert_eq!(edited.action, Action::EncryptOptional);
    assert_eq!(edited.sender.to_string(), "domain:corp.example");
    assert_eq!(edited.recipient.to_string(), "address:bob@partner.example");
    assert_eq!(
        (edited.priority, edited.comment.as_str()),
        (rule.priority, "edited")
    );
    audit.one(&job(), "rule.edit", &rule.id.to_string()).await;

    // explain: the edited rule decides outbound, and the inbound direction is
    // explained too; both serialise for the console.
    let outbound = rules::explain(
        ctx,
        Explain {
            from: "alice@corp.example".into(),
            to: "bob@partner.example".into(),
        },
    )
    .await
    .expect("explain outbound");
    assert_eq!(outbound.selection.rule_id, Some(rule.id));
    assert_eq!(outbound.selection.action, Action::EncryptOptional);
    let inbound = rules::explain(
        ctx,
        Explain {
            from: "bob@partner.example".into(),
            to: "alice@corp.example".into(),
        },
    )
    .await
    .expect("explain inbound");
    assert_eq!(inbound.direction, Direction::Inbound);
    assert_eq!(inbound.selection.rule_id, None, "no inbound rule is left");
    assert_eq!(
        inbound.selection.action,
        Direction::Inbound.default_action()
    );
    let json = serde_json::to_value(&inbound).expect("serialise");
    assert_eq!(json["direction"], "inbound");
    assert!(
        json["outcomes"].as_array().is_some_and(|o| !o.is_empty()),
        "{json}"
    );
    audit.unchanged().await;
}

/// `ops::audit::search` over the rows the suite wrote.
async fn audit_search(ctx: &Ops<'_>, trail: &AuditTrail<'_>) {
    let all = trail.rows().await;
    assert!(all.len() > 5);
    let search = |q: AuditQuery| async move { audit_ops::search(ctx, q).await };
    let page = search(AuditQuery {
        page_size: Some(2),
        ..Default::default()
    })
    .await
    .expect("first page");
    assert_eq!(page.total as usize, all.len());
    assert!(page.has_more);
    assert_eq!(
        page.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        all.iter().take(2).map(|r| r.id).collect::<Vec<_>>(),
        "newest first"
    );
    let second = search(AuditQuery {
        page: Some(2),
        page_size: Some(2),
        ..Default::default()
    })
    .await
    .expect("second page");
    assert_eq!(second.rows[0].id, all[2].id);

    let by_actor = search(AuditQuery {
        actor: Some(job().name),
        action: Some("rule.".into()),
        ..Default::default()
    })
    .await
    .expect("by actor and action");
    let expected = all
        .iter()
        .filter(|r| r.actor == job().name && r.action.starts_with("rule."))
        .count();
    assert_eq!(by_actor.rows.len(), expected);
    assert!(expected >= 3, "rule.add, rule.remove, rule.edit by the job");
    assert!(by_actor.rows.iter().any(|r| r.action == "rule.edit"));
    // The prefix is text, not a pattern: `_` matches only `_`.
    let literal = search(AuditQuery {
        action: Some("rule_".into()),
        ..Default::default()
    })
    .await
    .expect("literal prefix");
    assert_eq!(literal.total, 0);
    let newest = &all[0];
    let by_target = search(AuditQuery {
        target: Some(newest.target.clone()),
        from: Some(newest.at.to_string()),
        to: Some((newest.at + 1).to_string()),
        ..Default::default()
    })
    .await
    .expect("by target and time");
    assert!(by_target.rows.iter().any(|r| r.id == newest.id));
    assert!(by_target.rows.iter().all(|r| r.target == newest.target));
    let future = search(AuditQuery {
        from: Some("2099-01-01T00:00:00Z".into()),
        ..Default::default()
    })
    .await
    .expect("future");
    assert_eq!((future.total, future.rows.len()), (0, 0));
    for (query, text) in [
        (
            AuditQuery {
                page_size: Some(501),
                ..Default::default()
            },
            "page_size must be 1 to 500",
        ),
        (
            AuditQuery {
                from: Some("last tuesday".into()),
                ..Default::default()
            },
            "from 'last tuesday'",
        ),
        (
            AuditQuery {
                actor: Some("a\nb".into()),
                ..Default::default()
            },
            "no control characters",
        ),
    ] {
        refused(search(query).await, Kind::Invalid, text);
    }
    trail.unchanged().await;
}

async fn relay_setting_ops(ctx: &Ops<'_>, audit: &mut AuditTrail<'_>) {
    let none = relay_settings::smarthost(ctx).await.expect("smarthost");
    assert_eq!((none.host_port, none.source), (None, None));
    refused(
        relay_settings::set_smarthost(ctx, &console(), "relay.example").await,
        Kind::Invalid,
        "must be HOST:PORT",
    );
    audit.unchanged().await;
    relay_settings::set_smarthost(ctx, &console(), "relay.example:587")
        .await
        .expect("set smarthost");
    audit
        .one(&console(), "smarthost.set", "relay.example:587")
        .await;
    let set = relay_settings::smarthost(ctx).await.expect("smarthost");
    assert_eq!(set.host_port.as_deref(), Some("relay.example:587"));
    assert_eq!(set.source, Some(Source::Database));

    let allow = |cidr: &str, require_auth: bool| AllowNetwork {
        cidr: cidr.into(),
        comment: "office".into(),
        require_auth,
    };
    refused(
        relay_settings::allow_network(ctx, &console(), allow("10.0.0.0/33", false)).await,
        Kind::Invalid,
        "is not a network",
    );
    audit.unchanged().await;
    let allowed = relay_settings::allow_network(ctx, &console(), allow("10.1.2.3/16", true))
        .await
        .expect("allow");
    assert_eq!(allowed.cidr, "10.1.0.0/16", "host bits cleared");
    let row = audit.one(&console(), "network.allow", "10.1.0.0/16").await;
    assert_eq!(row.detail, "office (authentication required)");
    refused(
        relay_settings::allow_network(ctx, &console(), allow("10.1.0.0/16", false)).await,
        Kind::Conflict,
        "network 10.1.0.0/16 already exists",
    );
    refused(
        relay_settings::remove_network(ctx, &console(), "192.168.0.0/24").await,
        Kind::NotFound,
        "no allowed network 192.168.0.0/24",
    );
    audit.unchanged().await;

    let listed = relay_settings::networks(ctx).await.expect("networks");
    let sources: Vec<(&str, Source)> = listed.iter().map(|n| (n.cidr.as_str(), n.source)).collect();
    assert_eq!(
        sources,
        [
            ("10.1.0.0/16", Source::Database),
            ("127.0.0.0/8", Source::Configuration),
            ("::1/128", Source::Configuration),
        ]
    );
    let removed = relay_settings::remove_network(ctx, &job(), "10.1.0.0/16")
        .await
        .expect("remove");
    assert_eq!(removed, "10.1.0.0/16");
    audit.one(&job(), "network.remove", "10.1.0.0/16").await;
}

#[tokio::test]
async fn operations_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    suite(&store).await;
}

#[tokio::test]
async fn operations_on_postgres() {
    let db = common::postgres_store().await;
    suite(&db.store).await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_smarthost_of_the_configuration_file_applies_until_one_is_set() {
    let (store, _dir) = common::sqlite_store().await;
    let mut settings = settings();
    settings.config.relay.smarthost = "smarthost.corp.example:25".into();
    let ctx = Ops::new(&settings, &store);
    let shown = relay_settings::smarthost(&ctx).await.expect("smarthost");
    assert_eq!(
        shown.host_port.as_deref(),
        Some("smarthost.corp.example:25")
    );
    assert_eq!(shown.source, Some(Source::Configuration));
}

/// The gateway's handles on `store` and this process's token, with a CA recorded
/// when `with_ca`.
async fn app_on(store: &Store, with_ca: bool) -> App {
    if with_ca {
        let ca = common::token_ca("CN=ops test CA");
        let key = store
            .keys()
            .insert(&ca.key_id, ca.algorithm, KeyPurpose::Ca, None)
            .await
            .expect("CA key row");
        store
            .certificates()
            .insert(&ca.certificate, CertificateSource::Ca, None, Some(key.id))
            .await
            .expect("CA certificate row");
    }
    App {
        settings: settings(),
        store: store.clone(),
        hsm: common::token().hsm.clone(),
    }
}

/// Domains and mailboxes for activation: one routed, one without a route.
async fn activation_fixture(ctx: &Ops<'_>) {
    for (name, next_hop) in [
        ("corp.example", Some("10.0.0.5:25")),
        ("noroute.example", None),
    ] {
        let input = AddDomain {
            name: name.into(),
            next_hop: next_hop.map(str::to_string),
            wildcard: false,
        };
        domains::add(ctx, &console(), input).await.expect("domain");
    }
    for address in ["alice@corp.example", "erin@noroute.example"] {
        mailboxes::add(ctx, &console(), address)
            .await
            .expect("mailbox");
    }
}

fn activate(address: &str) -> Activate {
    Activate {
        address: address.into(),
        key: Some(KeyAlgorithm::P256),
        // corp.example has no MX in any DNS: tests/ca_domains.rs covers the check.
        skip_mx_check: true,
    }
}

async fn activation_suite(store: &Store) {
    let app = app_on(store, false).await;
    activation_fixture(&app.ops()).await;
    let mut audit = AuditTrail::new(&app.store);
    audit.seen = audit.rows().await.len();

    let no_ca = mailboxes::activate(&app, &job(), activate("alice@corp.example")).await;
    assert!(matches!(no_ca, Err(OpError::Setup(_))), "{no_ca:?}");
    assert_eq!(no_ca.expect_err("no CA").exit_code(), 1);
    audit.unchanged().await;

    let app = app_on(store, true).await;
    refused(
        mailboxes::activate(&app, &job(), activate("nobody@corp.example")).await,
        Kind::NotFound,
        "no managed mailbox nobody@corp.example",
    );
    refused(
        mailboxes::activate(&app, &job(), activate("erin@noroute.example")).await,
        Kind::Invalid,
        "domain noroute.example has no inbound route",
    );
    refused(
        mailboxes::activate(&app, &job(), activate("alice")).await,
        Kind::Invalid,
        "not a valid mailbox address",
    );
    audit.unchanged().await;

    let done = mailboxes::activate(&app, &job(), activate("Alice@corp.example"))
        .await
        .expect("activate");
    assert_eq!(done.address, "alice@corp.example");
    assert_eq!(done.key, KeyAlgorithm::P256);
    assert_eq!(
        done.certificate.owner_address.as_deref(),
        Some("alice@corp.example")
    );
    assert_eq!(done.token, common::LABEL);
    let row = audit
        .one(&job(), "mailbox.activate", "alice@corp.example")
        .await;
    assert!(
        row.detail.contains(&done.certificate.record.serial),
        "{}",
        row.detail
    );
    let list = mailboxes::list(&app.ops()).await.expect("list");
    assert_eq!(list.seats_in_use, 1);
    let states: Vec<MailboxState> = list.mailboxes.iter().map(|m| m.state).collect();
    assert_eq!(states, [MailboxState::Active, MailboxState::Inactive]);

    refused(
        mailboxes::activate(&app, &job(), activate("alice@corp.example")).await,
        Kind::Invalid,
        "mailbox alice@corp.example is active already",
    );
    refused(
        mailboxes::remove(&app.ops(), &console(), "alice@corp.example").await,
        Kind::Invalid,
        "deactivate it before removing it",
    );
    audit.unchanged().await;
}

#[tokio::test]
async fn activation_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    activation_suite(&store).await;
}

#[tokio::test]
async fn activation_on_postgres() {
    let db = common::postgres_store().await;
    activation_suite(&db.store).await;
    db.drop_database().await;
}
