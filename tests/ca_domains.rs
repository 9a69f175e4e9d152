//! The built-in CA as the S/MIME Baseline Requirements want it and the domains'
//! route: `domain set` (the relay sees the change through the configuration
//! version), `domain check` and the MX check of activation against a DNS server on
//! loopback (answers made here with hickory's wire format), the two-tier CA made by
//! `init` checked by openssl (chain, extensions, CRLs), the 825-day cap, long
//! addresses without a common name, an install from before the two-tier CA, and the
//! SMTP TLS certificate re-issued when `[gateway].hostname` changes.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::Arc;

use common::{run, run_ok, smimegate, smimegate_ok};
use hickory_resolver::proto::op::{Message, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, MX};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use smimegate::app::App;
use smimegate::config::{Config, Settings};
use smimegate::dns::MxVerdict;
use smimegate::hsm::{KeyAlgorithm, KeyRole};
use smimegate::ops::domains::{self, AddDomain, SetDomain};
use smimegate::ops::mailboxes::{self, Activate};
use smimegate::ops::{Actor, OpError, Ops};
use smimegate::pki::address::Address;
use smimegate::pki::ca::{self, CaIdentity};
use smimegate::pki::crl::{self, Revocation};
use smimegate::pki::urls::PkiUrls;
use smimegate::store::{CertificateSource, KeyPurpose, Store};

// ---------------------------------------------------------------------------------
// A DNS server on loopback answering from a fixed zone.

/// Records by (lower-case name without the final dot, type); a name with no entry
/// at all is NXDOMAIN, a known name without the type an empty NOERROR answer.
#[derive(Default, Clone)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<RData>>,
}

impl Zone {
    fn mx(mut self, domain: &str, preference: u16, exchange: &str) -> Self {
        let exchange = Name::from_ascii(format!("{exchange}.")).expect("name");
        self.records
            .entry((domain.into(), RecordType::MX))
            .or_default()
            .push(RData::MX(MX::new(preference, exchange)));
        self
    }

    fn a(mut self, host: &str, ip: [u8; 4]) -> Self {
        self.records
            .entry((host.into(), RecordType::A))
            .or_default()
            .push(RData::A(A(Ipv4Addr::from(ip))));
        self
    }

    fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        let question = request.queries.first()?.clone();
        let name = question
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let mut response = Message::response(request.metadata.id, OpCode::Query);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.authoritative = true;
        response.add_query(question.clone());
        let known = self.records.keys().any(|(n, _)| *n == name);
        if !known {
            response.metadata.response_code = ResponseCode::NXDomain;
        } else if let Some(data) = self.records.get(&(name, question.query_type())) {
            for rdata in data {
                response.add_answer(Record::from_rdata(
                    question.name().clone(),
                    60,
                    rdata.clone(),
                ));
            }
        }
        response.to_vec().ok()
    }
}

/// Serves `zone` over UDP on 127.0.0.1 (an ephemeral port) until the process ends;
/// returns `IP:PORT` for `[dns].resolver`.
fn dns_server(zone: Zone) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS socket");
    let address = socket.local_addr().expect("address").to_string();
    let zone = Arc::new(zone);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buffer) else {
                return;
            };
            if let Some(reply) = zone.answer(&buffer[..n]) {
                let _ = socket.send_to(&reply, peer);
            }
        }
    });
    address
}

/// The zone of these tests: the gateway is `gw.test` (192.0.2.10).
/// - `corp.example`: MX → gw.test (by name)
/// - `alias.example`: MX → mail.alias.example, whose address is the gateway's
/// - `elsewhere.example`: MX → mx.provider.example (198.51.100.7)
/// - `mixed.example`: MX 10 → mx.provider.example, MX 20 → gw.test (backup only)
/// - `nomx.example`: an address but no MX, not the gateway's
/// - anything else: NXDOMAIN
fn test_zone() -> Zone {
    Zone::default()
        .a("gw.test", [192, 0, 2, 10])
        .mx("corp.example", 10, "gw.test")
        .mx("alias.example", 5, "mail.alias.example")
        .a("mail.alias.example", [192, 0, 2, 10])
        .mx("elsewhere.example", 10, "mx.provider.example")
        .a("mx.provider.example", [198, 51, 100, 7])
        .mx("mixed.example", 10, "mx.provider.example")
        .mx("mixed.example", 20, "gw.test")
        .a("nomx.example", [203, 0, 113, 5])
}

fn settings_with_dns(resolver: &str) -> Settings {
    let mut config = Config::default();
    config.gateway.hostname = "gw.test".into();
    config.dns.resolver = resolver.into();
    config.dns.timeout_secs = 2;
    Settings::new(std::path::PathBuf::from("."), config)
}

fn console() -> Actor {
    Actor::console("alice", "192.0.2.7".parse().expect("ip"))
}

fn invalid<T: std::fmt::Debug>(result: Result<T, OpError>, text: &str) {
    let err = result.expect_err(text);
    assert!(matches!(err, OpError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains(text), "'{err}' lacks '{text}'");
}

// ---------------------------------------------------------------------------------
// domain set

async fn domain_set_suite(store: &Store) {
    let settings = settings_with_dns("");
    let ctx = Ops::new(&settings, store);
    let actor = console();
    domains::add(
        &ctx,
        &actor,
        AddDomain {
            name: "corp.example".into(),
            next_hop: Some("10.0.0.5:25".into()),
            wildcard: false,
        },
    )
    .await
    .expect("add");
    let audit_rows = || async { store.audit().recent(1000).await.expect("audit").len() };
    let rows = audit_rows().await;
    let version = store.config_version().await.expect("version");

    let set = |next_hop: Option<&str>, clear: bool, wildcard: Option<bool>| SetDomain {
        name: "Corp.Example".into(),
        next_hop: next_hop.map(str::to_string),
        clear_next_hop: clear,
        wildcard,
    };
    let change = domains::set(
        &ctx,
        &actor,
        set(Some("mail.corp.example:2525"), false, None),
    )
    .await
    .expect("set next hop");
    assert_eq!(change.before.next_hop.as_deref(), Some("10.0.0.5:25"));
    assert_eq!(
        change.after.next_hop.as_deref(),
        Some("mail.corp.example:2525")
    );
    assert!(!change.after.wildcard);
    // The relay reloads its snapshot when the configuration version moves.
    assert!(store.config_version().await.expect("version") > version);
    let stored = store
        .domains()
        .get(&smimegate::pki::address::Domain::parse("corp.example").expect("domain"))
        .await
        .expect("get")
        .expect("domain");
    assert_eq!(stored.next_hop.as_deref(), Some("mail.corp.example:2525"));
    let newest = store.audit().recent(1).await.expect("audit");
    assert_eq!(
        (newest[0].action.as_str(), newest[0].target.as_str()),
        ("domain.set", "corp.example")
    );
    assert_eq!(newest[0].actor, actor.name);
    assert!(
        newest[0].detail.contains("10.0.0.5:25") && newest[0].detail.contains("2525"),
        "{}",
        newest[0].detail
    );
    assert_eq!(audit_rows().await, rows + 1);

    let change = domains::set(&ctx, &actor, set(None, false, Some(true)))
        .await
        .expect("set wildcard");
    assert!(change.after.wildcard);
    assert_eq!(
        change.after.next_hop.as_deref(),
        Some("mail.corp.example:2525")
    );
    assert_eq!(audit_rows().await, rows + 2);

    // The same value again changes nothing and writes no row.
    let same = domains::set(&ctx, &actor, set(None, false, Some(true)))
        .await
        .expect("same");
    assert!(!same.changed());
    assert_eq!(audit_rows().await, rows + 2);

    // Refusals: each changes nothing and writes no row.
    invalid(
        domains::set(&ctx, &actor, set(None, false, None)).await,
        "nothing to change for domain corp.example",
    );
    invalid(
        domains::set(&ctx, &actor, set(Some("mx:0"), false, None)).await,
        "next hop 'mx:0' has an invalid port",
    );
    invalid(
        domains::set(&ctx, &actor, set(Some("mx:25"), true, None)).await,
        "not both",
    );
    let missing = domains::set(
        &ctx,
        &actor,
        SetDomain {
            name: "nowhere.example".into(),
            next_hop: Some("mx:25".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(missing, Err(OpError::NotFound(_))), "{missing:?}");
    assert_eq!(audit_rows().await, rows + 2);

    // Clearing the route is refused while a mailbox holds a certificate.
    let address = Address::parse("bob@corp.example").expect("address");
    store.mailboxes().add(&address).await.expect("mailbox");
    store
        .mailboxes()
        .transition(
            &address,
            smimegate::store::MailboxState::Inactive,
            smimegate::store::MailboxState::Pending,
        )
        .await
        .expect("pending");
    let rows = audit_rows().await;
    invalid(
        domains::set(&ctx, &actor, set(None, true, None)).await,
        "has 1 mailbox(es) holding a certificate",
    );
    assert_eq!(audit_rows().await, rows);
    store
        .mailboxes()
        .transition(
            &address,
            smimegate::store::MailboxState::Pending,
            smimegate::store::MailboxState::Inactive,
        )
        .await
        .expect("inactive");
    let cleared = domains::set(&ctx, &actor, set(None, true, None))
        .await
        .expect("clear");
    assert_eq!(cleared.after.next_hop, None);
}

#[tokio::test]
async fn domain_set_changes_the_route_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    domain_set_suite(&store).await;
}

#[tokio::test]
async fn domain_set_changes_the_route_on_postgres() {
    let db = common::postgres_store().await;
    domain_set_suite(&db.store).await;
}

// ---------------------------------------------------------------------------------
// The MX check

#[tokio::test]
async fn the_mx_check_asks_the_configured_dns_server() {
    let resolver = dns_server(test_zone());
    let settings = settings_with_dns(&resolver);
    let (store, _dir) = common::sqlite_store().await;
    let ctx = Ops::new(&settings, &store);
    let rows = store.audit().recent(10).await.expect("audit").len();

    let here = domains::check(&ctx, "corp.example").await.expect("check");
    assert_eq!(here.verdict, MxVerdict::PointsHere, "{here:?}");
    assert_eq!(here.gateway_addresses, [IpAddr::from([192, 0, 2, 10])]);
    assert_eq!(here.mx[0].exchange, "gw.test");
    assert!(here.message.contains("points at this gateway"), "{here:?}");

    let alias = domains::check(&ctx, "alias.example").await.expect("check");
    assert_eq!(alias.verdict, MxVerdict::PointsHere, "{alias:?}");
    assert!(alias.mx[0].points_here);

    for domain in ["elsewhere.example", "mixed.example", "nomx.example"] {
        let report = domains::check(&ctx, domain).await.expect("check");
        assert_eq!(report.verdict, MxVerdict::Elsewhere, "{report:?}");
        assert!(
            report
                .message
                .contains("does not point at this gateway (gw.test"),
            "{report:?}"
        );
    }
    let elsewhere = domains::check(&ctx, "elsewhere.example")
        .await
        .expect("check");
    assert!(
        elsewhere
            .message
            .contains("MX 10 mx.provider.example (198.51.100.7)"),
        "{}",
        elsewhere.message
    );
    let implicit = domains::check(&ctx, "nomx.example").await.expect("check");
    assert_eq!(implicit.mx[0].exchange, "nomx.example");

    let nx = domains::check(&ctx, "missing.example")
        .await
        .expect("check");
    assert_eq!(nx.verdict, MxVerdict::NoSuchDomain, "{nx:?}");
    assert_eq!(
        nx.message,
        "domain missing.example does not exist in the DNS (NXDOMAIN)"
    );

    domains::require_mx(&ctx, "corp.example")
        .await
        .expect("corp.example points here");
    invalid(
        domains::require_mx(&ctx, "elsewhere.example").await,
        "MX check failed: the MX of elsewhere.example does not point at this gateway",
    );
    invalid(
        domains::require_mx(&ctx, "missing.example").await,
        "domain missing.example does not exist in the DNS (NXDOMAIN); fix the DNS",
    );
    // Checks are reads: no audit row.
    assert_eq!(store.audit().recent(10).await.expect("audit").len(), rows);

    // A DNS server that does not answer: the check fails with the reason, it does not
    // pass.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let settings = settings_with_dns(&silent.local_addr().expect("addr").to_string());
    let ctx = Ops::new(&settings, &store);
    let report = domains::check(&ctx, "corp.example").await.expect("check");
    assert_eq!(report.verdict, MxVerdict::LookupFailed, "{report:?}");
    assert!(!report.ok());
}

/// A store with a two-tier CA made in this process's token.
async fn two_tier_ca(store: &Store, urls: &PkiUrls) -> (CaIdentity, CaIdentity) {
    let hsm = &common::token().hsm;
    let root = common::token_ca("CN=test root CA");
    let key = hsm
        .generate_key_pair(KeyAlgorithm::P256, KeyRole::CertificateAuthority, "issuing")
        .expect("issuing key");
    let certificate =
        ca::create_issuing_ca_certificate(hsm, &root, &key, "CN=test issuing CA", 30, urls)
            .expect("issuing CA certificate");
    let issuing = CaIdentity {
        key_id: key.id,
        algorithm: key.algorithm,
        certificate,
    };
    for ca in [&root, &issuing] {
        let row = store
            .keys()
            .insert(&ca.key_id, ca.algorithm, KeyPurpose::Ca, None)
            .await
            .expect("CA key row");
        store
            .certificates()
            .insert(&ca.certificate, CertificateSource::Ca, None, Some(row.id))
            .await
            .expect("CA certificate row");
    }
    (root, issuing)
}

#[tokio::test]
async fn activation_is_refused_where_the_mx_points_elsewhere_unless_skipped() {
    let resolver = dns_server(test_zone());
    let (store, _dir) = common::sqlite_store().await;
    let settings = settings_with_dns(&resolver);
    let urls = PkiUrls::new(&settings.config.ca.public_url).expect("urls");
    two_tier_ca(&store, &urls).await;
    let app = App {
        settings,
        store: store.clone(),
        hsm: common::token().hsm.clone(),
    };
    let ctx = app.ops();
    for (domain, local) in [
        ("corp.example", "ann"),
        ("elsewhere.example", "ben"),
        ("missing.example", "cid"),
    ] {
        domains::add(
            &ctx,
            &console(),
            AddDomain {
                name: domain.into(),
                next_hop: Some("10.0.0.5:25".into()),
                wildcard: false,
            },
        )
        .await
        .expect("domain");
        mailboxes::add(&ctx, &console(), &format!("{local}@{domain}"))
            .await
            .expect("mailbox");
    }
    let activate = |address: &str, skip_mx_check: bool| Activate {
        address: address.into(),
        key: Some(KeyAlgorithm::P256),
        skip_mx_check,
    };
    let rows = store.audit().recent(100).await.expect("audit").len();
    invalid(
        mailboxes::activate(&app, &console(), activate("ben@elsewhere.example", false)).await,
        "does not point at this gateway (gw.test = 192.0.2.10): MX 10 mx.provider.example (198.51.100.7)",
    );
    invalid(
        mailboxes::activate(&app, &console(), activate("cid@missing.example", false)).await,
        "domain missing.example does not exist in the DNS (NXDOMAIN)",
    );
    assert_eq!(store.audit().recent(100).await.expect("audit").len(), rows);
    for address in ["ben@elsewhere.example", "cid@missing.example"] {
        let row = store
            .mailboxes()
            .require(&Address::parse(address).expect("address"))
            .await
            .expect("mailbox");
        assert_eq!(row.state, smimegate::store::MailboxState::Inactive);
    }
    mailboxes::activate(&app, &console(), activate("ann@corp.example", false))
        .await
        .expect("MX points here");
    mailboxes::activate(&app, &console(), activate("ben@elsewhere.example", true))
        .await
        .expect("skipped MX check");
}

// ---------------------------------------------------------------------------------
// The two-tier CA in the library: App::ca / root_ca / trust anchors, CRLs, openssl.

fn pem(cert: &x509_cert::Certificate) -> String {
    der::EncodePem::to_pem(cert, der::pem::LineEnding::LF).expect("PEM")
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path.display().to_string()
}

fn crl_pem(der_bytes: &[u8]) -> String {
    let body = base64_lines(der_bytes);
    format!("-----BEGIN X509 CRL-----\n{body}-----END X509 CRL-----\n")
}

fn base64_lines(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(64)
        .map(|l| format!("{}\n", String::from_utf8_lossy(l)))
        .collect()
}

#[tokio::test]
async fn the_root_signs_the_issuing_ca_and_its_crl_and_openssl_follows_the_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let (store, _db) = common::sqlite_store().await;
    let urls = PkiUrls::new("http://pki.gw.test:8080").expect("urls");
    let (root, issuing) = two_tier_ca(&store, &urls).await;
    let app = App {
        settings: settings_with_dns(""),
        store: store.clone(),
        hsm: common::token().hsm.clone(),
    };
    // App::ca is the issuing CA, App::root_ca the root; the root is the managed anchor.
    assert_eq!(app.ca().await.expect("ca").certificate, issuing.certificate);
    assert_eq!(
        app.root_ca().await.expect("root").certificate,
        root.certificate
    );
    assert!(!issuing.is_root() && root.is_root());
    let anchors = smimegate::app::trust_anchors(&store)
        .await
        .expect("anchors");
    assert_eq!(anchors.anchors.len(), 1);
    assert_eq!(anchors.anchors[0].certificate, root.certificate);

    let hsm = &common::token().hsm;
    let key = hsm
        .generate_key_pair(KeyAlgorithm::P256, KeyRole::Mailbox, "mia")
        .expect("key");
    let address = Address::parse("mia@corp.example").expect("address");
    let leaf = ca::issue_published_mailbox_certificate(hsm, &issuing, &address, &key, 365, &urls)
        .expect("mailbox certificate");
    let root_pem = write(dir.path(), "root.pem", pem(&root.certificate));
    let issuing_pem = write(dir.path(), "issuing.pem", pem(&issuing.certificate));
    let leaf_pem = write(dir.path(), "leaf.pem", pem(&leaf));
    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            &root_pem,
            "-untrusted",
            &issuing_pem,
            &leaf_pem,
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    // The issuing CA alone is no trust anchor: the chain must reach the root.
    let (alone, _, _) = run("openssl", &["verify", "-CAfile", &issuing_pem, &leaf_pem]);
    assert!(!alone, "the issuing CA verified on its own");

    let text = run_ok("openssl", &["x509", "-in", &issuing_pem, "-noout", "-text"]);
    for expected in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "E-mail Protection",
        "2.23.140.1.5.1.3",
        "URI:http://pki.gw.test:8080/pki/root.crl",
        "CA Issuers - URI:http://pki.gw.test:8080/pki/root.crt",
    ] {
        assert!(
            text.contains(expected),
            "issuing CA lacks {expected}: {text}"
        );
    }
    let text = run_ok("openssl", &["x509", "-in", &root_pem, "-noout", "-text"]);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(!text.contains("pathlen"), "{text}");
    let text = run_ok("openssl", &["x509", "-in", &leaf_pem, "-noout", "-text"]);
    for expected in [
        "CA Issuers - URI:http://pki.gw.test:8080/pki/ca.crt",
        "URI:http://pki.gw.test:8080/pki/ca.crl",
        "2.23.140.1.5.1.3",
        "email:mia@corp.example",
    ] {
        assert!(text.contains(expected), "leaf lacks {expected}: {text}");
    }

    // CRLs of both tiers: all clean, then the root revokes the issuing CA.
    let day = std::time::Duration::from_secs(86_400);
    let issuing_crl = crl::build_crl(hsm, &issuing, 1, &[], day).expect("issuing CRL");
    let clean = crl::build_root_crl(hsm, &root, 1, &[], day).expect("root CRL");
    let bundle = |root_crl: &[u8]| {
        format!(
            "{}{}{}",
            pem(&root.certificate),
            crl_pem(root_crl),
            crl_pem(&issuing_crl)
        )
    };
    let trusted = write(dir.path(), "trusted.pem", bundle(&clean));
    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            &trusted,
            "-untrusted",
            &issuing_pem,
            &leaf_pem,
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    let serial = issuing
        .certificate
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .to_vec();
    let revoked = crl::build_root_crl(
        hsm,
        &root,
        2,
        &[Revocation {
            serial,
            revoked_at: std::time::SystemTime::now(),
            reason: None,
        }],
        day,
    )
    .expect("root CRL");
    let trusted = write(dir.path(), "trusted.pem", bundle(&revoked));
    let (ok, stdout, stderr) = run(
        "openssl",
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            &trusted,
            "-untrusted",
            &issuing_pem,
            &leaf_pem,
        ],
    );
    assert!(!ok, "{stdout}");
    assert!(
        format!("{stdout}{stderr}").contains("certificate revoked"),
        "{stdout}{stderr}"
    );
    // Only the root signs a root CRL.
    assert!(crl::build_root_crl(hsm, &issuing, 3, &[], day).is_err());
}

#[tokio::test]
async fn an_install_from_before_the_two_tier_ca_keeps_its_one_ca() {
    let (store, _db) = common::sqlite_store().await;
    let single = common::token_ca("CN=old single CA");
    let row = store
        .keys()
        .insert(&single.key_id, single.algorithm, KeyPurpose::Ca, None)
        .await
        .expect("key");
    store
        .certificates()
        .insert(
            &single.certificate,
            CertificateSource::Ca,
            None,
            Some(row.id),
        )
        .await
        .expect("certificate");
    let app = App {
        settings: settings_with_dns(""),
        store: store.clone(),
        hsm: common::token().hsm.clone(),
    };
    assert_eq!(app.ca().await.expect("ca").certificate, single.certificate);
    assert_eq!(
        app.root_ca().await.expect("root").certificate,
        single.certificate
    );
    let anchors = smimegate::app::trust_anchors(&store)
        .await
        .expect("anchors");
    assert_eq!(anchors.anchors[0].certificate, single.certificate);
}

#[test]
fn mailbox_certificates_stay_within_825_days_and_long_addresses_get_no_common_name() {
    let hsm = &common::token().hsm;
    let urls = PkiUrls::new("http://localhost:8080").expect("urls");
    let issuing = common::token_ca("CN=cap test CA");
    let key = hsm
        .generate_key_pair(KeyAlgorithm::P256, KeyRole::Mailbox, "cap")
        .expect("key");
    let long = format!("{}@corp.example", "l".repeat(60));
    assert!(long.len() > 64);
    let cert = ca::issue_published_mailbox_certificate(
        hsm,
        &issuing,
        &Address::parse(&long).expect("address"),
        &key,
        825,
        &urls,
    )
    .expect("825 days");
    let validity = cert.tbs_certificate().validity();
    let span = validity.not_after.to_unix_duration() - validity.not_before.to_unix_duration();
    assert_eq!(span.as_secs(), 825 * 86_400, "backdating counts");
    let subject = cert.tbs_certificate().subject().to_string();
    assert!(!subject.contains("CN="), "{subject}");
    assert!(subject.contains(&long), "{subject}");
    let err = ca::issue_published_mailbox_certificate(
        hsm,
        &issuing,
        &Address::parse("short@corp.example").expect("address"),
        &key,
        826,
        &urls,
    )
    .expect_err("826 days");
    assert!(err.to_string().contains("825 days at most"), "{err}");
    let short = ca::issue_published_mailbox_certificate(
        hsm,
        &issuing,
        &Address::parse("short@corp.example").expect("address"),
        &key,
        365,
        &urls,
    )
    .expect("short");
    let subject = short.tbs_certificate().subject().to_string();
    assert!(subject.contains("CN=short@corp.example"), "{subject}");

    // The configuration refuses what the BRs do not allow, at load.
    let text = "[ca]\nmailbox_validity_days = 826\n";
    let err = Config::parse(text, Path::new("smimegate.toml")).expect_err("826");
    assert!(
        err.to_string()
            .contains("ca.mailbox_validity_days: 826 is above 825"),
        "{err}"
    );
    Config::parse("[ca]\nmailbox_validity_days = 825\n", Path::new("x")).expect("825");
    let err =
        Config::parse("[dns]\nresolver = \"localhost\"\n", Path::new("x")).expect_err("resolver");
    assert!(err.to_string().contains("dns.resolver"), "{err}");
}

// ---------------------------------------------------------------------------------
// The binary: init's two-tier CA, domain set / check, activation, TLS re-issue.

fn set_config(data: &Path, from: &str, to: &str) {
    let path = data.join("smimegate.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    assert!(text.contains(from), "config lacks {from}");
    std::fs::write(&path, text.replace(from, to)).expect("write config");
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn init_makes_a_two_tier_ca_that_openssl_verifies_mailbox_certificates_against() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("var");
    let out = smimegate_ok(&data, &["init"]);
    assert!(
        out.contains("created root CA 'CN=smimegate Root CA,O=smimegate'"),
        "{out}"
    );
    assert!(
        out.contains("created CA 'CN=smimegate CA,O=smimegate'"),
        "{out}"
    );
    smimegate_ok(
        &data,
        &[
            "domain",
            "add",
            "corp.example",
            "--next-hop",
            "127.0.0.1:2525",
        ],
    );
    let long = format!("{}@corp.example", "x".repeat(56));
    for address in ["amy@corp.example", long.as_str()] {
        smimegate_ok(&data, &["mailbox", "add", address]);
        smimegate_ok(&data, &["mailbox", "activate", address, "--skip-mx-check"]);
    }
    let chain = smimegate_ok(&data, &["cert", "show", "amy@corp.example", "--pem"]);
    let blocks: Vec<&str> = chain
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(blocks.len(), 3, "leaf, issuing CA, root: {chain}");
    let leaf = write(dir.path(), "leaf.pem", blocks[0]);
    let issuing = write(dir.path(), "issuing.pem", blocks[1]);
    let root = write(dir.path(), "root.pem", blocks[2]);
    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            &root,
            "-untrusted",
            &issuing,
            &leaf,
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    let text = run_ok("openssl", &["x509", "-in", &leaf, "-noout", "-text"]);
    for expected in [
        "CA Issuers - URI:http://localhost:8080/pki/ca.crt",
        "URI:http://localhost:8080/pki/ca.crl",
        "Subject: emailAddress = amy@corp.example, CN = amy@corp.example",
    ] {
        assert!(text.contains(expected), "leaf lacks {expected}: {text}");
    }
    let text = run_ok("openssl", &["x509", "-in", &issuing, "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(
        text.contains("Issuer: O = smimegate, CN = smimegate Root CA"),
        "{text}"
    );

    let long_chain = smimegate_ok(&data, &["cert", "show", &long, "--pem"]);
    let long_leaf = write(
        dir.path(),
        "long.pem",
        long_chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .expect("leaf"),
    );
    let subject = run_ok(
        "openssl",
        &["x509", "-in", &long_leaf, "-noout", "-subject"],
    );
    assert!(!subject.contains("CN"), "{subject}");
    assert!(subject.contains(&long), "{subject}");
    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-purpose",
            "smimesign",
            "-CAfile",
            &root,
            "-untrusted",
            &issuing,
            &long_leaf,
        ],
    );
    assert!(out.contains(": OK"), "{out}");

    // A validity above the BR maximum is refused when the configuration loads.
    set_config(
        &data,
        "mailbox_validity_days = 365",
        "mailbox_validity_days = 900",
    );
    let out = smimegate(&data, &["domain", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("ca.mailbox_validity_days: 900 is above 825"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn domain_set_and_check_from_the_command_line() {
    let resolver = dns_server(test_zone());
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("var");
    smimegate_ok(&data, &["init"]);
    set_config(
        &data,
        "resolver = \"\"",
        &format!("resolver = \"{resolver}\""),
    );
    set_config(&data, "hostname = \"localhost\"", "hostname = \"gw.test\"");
    for domain in ["corp.example", "elsewhere.example"] {
        smimegate_ok(
            &data,
            &["domain", "add", domain, "--next-hop", "10.0.0.5:25"],
        );
    }

    let out = smimegate_ok(
        &data,
        &[
            "domain",
            "set",
            "corp.example",
            "--next-hop",
            "mail.corp.example:2525",
        ],
    );
    assert!(
        out.contains("changed domain corp.example: next hop mail.corp.example:2525"),
        "{out}"
    );
    assert!(out.contains("(was next hop 10.0.0.5:25"), "{out}");
    let list = smimegate_ok(&data, &["domain", "list"]);
    assert!(list.contains("mail.corp.example:2525"), "{list}");
    let out = smimegate_ok(&data, &["domain", "set", "corp.example", "--wildcard"]);
    assert!(out.contains("wildcard"), "{out}");
    let out = smimegate(&data, &["domain", "set", "corp.example"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("nothing to change"),
        "{}",
        stderr_of(&out)
    );
    let out = smimegate(&data, &["domain", "set", "nowhere.example", "--wildcard"]);
    assert!(stderr_of(&out).contains("no managed domain nowhere.example"));

    let out = smimegate_ok(&data, &["domain", "check", "corp.example"]);
    assert!(out.contains("gw.test"), "{out}");
    assert!(out.contains("points at this gateway"), "{out}");
    let out = smimegate(&data, &["domain", "check", "elsewhere.example"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mx.provider.example"),
        "{out:?}"
    );
    assert!(
        stderr_of(&out).contains("does not point at this gateway (gw.test = 192.0.2.10)"),
        "{}",
        stderr_of(&out)
    );
    let out = smimegate(&data, &["domain", "check", "missing.example"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("domain missing.example does not exist in the DNS (NXDOMAIN)"),
        "{}",
        stderr_of(&out)
    );
    let json = smimegate_ok(&data, &["domain", "check", "alias.example", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(report["verdict"], "points-here", "{json}");

    smimegate_ok(&data, &["mailbox", "add", "ben@elsewhere.example"]);
    let out = smimegate(&data, &["mailbox", "activate", "ben@elsewhere.example"]);
    assert_eq!(out.status.code(), Some(1));
    // The batch reports each mailbox on stdout, the summary on stderr.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("failed ben@elsewhere.example: MX check failed: the MX of elsewhere.example does not point at this gateway"),
        "{said}"
    );
    assert!(said.contains("--skip-mx-check"), "{said}");
    let err = stderr_of(&out);
    assert!(err.contains("0 mailbox(es) activated"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    smimegate_ok(
        &data,
        &[
            "mailbox",
            "activate",
            "ben@elsewhere.example",
            "--skip-mx-check",
        ],
    );
    smimegate_ok(&data, &["mailbox", "add", "amy@corp.example"]);
    smimegate_ok(&data, &["mailbox", "activate", "amy@corp.example"]);
}

fn tls_dns_names(path: &Path) -> Vec<String> {
    let pem = std::fs::read(path).expect("TLS certificate");
    let chain = x509_cert::Certificate::load_pem_chain(&pem).expect("PEM");
    let text = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            &path.display().to_string(),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert_eq!(chain.len(), 2, "leaf and issuing CA: {text}");
    let mut names: Vec<String> = text
        .split([',', '\n'])
        .filter_map(|part| part.trim().strip_prefix("DNS:").map(str::to_string))
        .collect();
    names.sort();
    names
}

#[test]
fn changing_the_gateway_hostname_reissues_the_smtp_tls_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("var");
    smimegate_ok(&data, &["init"]);
    let path = data.join("smtp-tls.pem");
    assert_eq!(tls_dns_names(&path), ["localhost"]);
    let first = std::fs::read(&path).expect("TLS");
    // Issued by the issuing CA (the file carries it): a server certificate under the root.
    smimegate_ok(
        &data,
        &["domain", "add", "corp.example", "--next-hop", "10.0.0.5:25"],
    );
    smimegate_ok(&data, &["mailbox", "add", "amy@corp.example"]);
    smimegate_ok(
        &data,
        &["mailbox", "activate", "amy@corp.example", "--skip-mx-check"],
    );
    let chain = smimegate_ok(&data, &["cert", "show", "amy@corp.example", "--pem"]);
    let root = write(
        dir.path(),
        "root.pem",
        chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .nth(2)
            .expect("root"),
    );
    let verify_tls = |host: &str| {
        let pem = std::fs::read_to_string(&path).expect("TLS");
        let blocks: Vec<&str> = pem.split_inclusive("-----END CERTIFICATE-----\n").collect();
        assert_eq!(blocks.len(), 2, "leaf and issuing CA: {pem}");
        let leaf = write(dir.path(), "tls.pem", blocks[0]);
        let issuing = write(dir.path(), "tls-ca.pem", blocks[1]);
        let out = run_ok(
            "openssl",
            &[
                "verify",
                "-purpose",
                "sslserver",
                "-verify_hostname",
                host,
                "-CAfile",
                &root,
                "-untrusted",
                &issuing,
                &leaf,
            ],
        );
        assert!(out.contains(": OK"), "{out}");
    };
    verify_tls("localhost");

    set_config(
        &data,
        "hostname = \"localhost\"",
        "hostname = \"mx.gw.test\"",
    );
    let out = smimegate_ok(&data, &["init"]);
    assert!(out.contains("re-issued for mx.gw.test, localhost"), "{out}");
    assert_eq!(tls_dns_names(&path), ["localhost", "mx.gw.test"]);
    assert_ne!(std::fs::read(&path).expect("TLS"), first);
    verify_tls("mx.gw.test");
    let out = smimegate_ok(&data, &["init"]);
    assert!(out.contains("nothing to do"), "{out}");

    // `serve` does the same before its listeners start.
    set_config(
        &data,
        "hostname = \"mx.gw.test\"",
        "hostname = \"mx2.gw.test\"",
    );
    // Port 0 everywhere: serve says what it bound once its listeners are up (after
    // the TLS check), so no other test can answer in its place.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smimegate"))
        .args(["--data-dir", &data.display().to_string(), "serve"])
        .args(["--http", "127.0.0.1:0", "--inbound", "127.0.0.1:0"])
        .args(["--submission", "127.0.0.1:0"])
        .env_remove("SMIMEGATE_HSM_PIN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start serve");
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("smimegate serving:"),
        "serve did not start: {line}"
    );
    assert_eq!(tls_dns_names(&path), ["localhost", "mx2.gw.test"]);
    verify_tls("mx2.gw.test");

    let url = format!("sqlite://{}", data.join("smimegate.db").display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let actions: Vec<(String, String, String)> = runtime.block_on(async {
        let store = Store::connect(&url, 1, std::time::Duration::from_secs(5))
            .await
            .expect("database");
        let rows = store.audit().recent(100).await.expect("audit");
        store.close().await;
        rows.into_iter()
            .filter(|r| r.action.starts_with("tls."))
            .map(|r| (r.action, r.target, r.origin))
            .collect()
    });
    let row = |action: &str, target: &str, origin: &str| {
        (action.to_string(), target.to_string(), origin.to_string())
    };
    assert_eq!(
        actions,
        [
            row("tls.reissue", "mx2.gw.test", "job"),
            row("tls.reissue", "mx.gw.test", "cli"),
            row("tls.issue", "localhost", "cli"),
        ]
    );
}

/// Mail a managed mailbox signs carries the issuing CA; the gateway's verifier, with the
/// root as the managed domains' only anchor, validates it through that CA.
#[tokio::test]
async fn our_own_mail_validates_through_the_issuing_ca_up_to_the_root() {
    use smimegate::smime::verify::{FromField, Verdict, VerifyContext, verify};
    let (store, _db) = common::sqlite_store().await;
    let settings = settings_with_dns("");
    let urls = PkiUrls::new(&settings.config.ca.public_url).expect("urls");
    let (root, issuing) = two_tier_ca(&store, &urls).await;
    let app = App {
        settings,
        store: store.clone(),
        hsm: common::token().hsm.clone(),
    };
    let ctx = app.ops();
    domains::add(
        &ctx,
        &console(),
        AddDomain {
            name: "corp.example".into(),
            next_hop: Some("10.0.0.5:25".into()),
            wildcard: false,
        },
    )
    .await
    .expect("domain");
    mailboxes::add(&ctx, &console(), "ida@corp.example")
        .await
        .expect("mailbox");
    mailboxes::activate(
        &app,
        &console(),
        Activate {
            address: "ida@corp.example".into(),
            key: Some(KeyAlgorithm::P256),
            skip_mx_check: true,
        },
    )
    .await
    .expect("activate");
    let signer = app
        .signer_for(&Address::parse("ida@corp.example").expect("address"))
        .await
        .expect("signer");
    assert_eq!(signer.chain, std::slice::from_ref(&issuing.certificate));
    let message = "From: ida@corp.example\r\nTo: x@partner.example\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\nsigned\r\n";
    let signed = smimegate::smime::sign_detached(
        &app.hsm,
        &signer,
        message.as_bytes(),
        &smimegate::mime::Limits::default(),
    )
    .expect("sign");
    let anchors = smimegate::app::trust_anchors(&store)
        .await
        .expect("anchors");
    assert_eq!(anchors.anchors.len(), 1);
    assert_eq!(anchors.anchors[0].certificate, root.certificate);
    let check = |anchors: &smimegate::pki::trust::TrustAnchors| {
        verify(
            &signed,
            &FromField::given("ida@corp.example"),
            &VerifyContext {
                trust: anchors,
                crls: &[],
                revocation: None,
                now: std::time::SystemTime::now(),
                limits: &smimegate::mime::Limits::default(),
            },
        )
    };
    let verdict = check(&anchors);
    assert_eq!(verdict.verdict, Verdict::Valid, "{}", verdict.detail);
    // Not vacuous: with another root as the anchor the same mail is untrusted.
    let stranger = common::token_ca("CN=stranger root");
    let mut other = anchors.clone();
    other.anchors[0].certificate = stranger.certificate;
    let verdict = check(&other);
    assert_eq!(verdict.verdict, Verdict::Untrusted, "{}", verdict.detail);
}
