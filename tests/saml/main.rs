//! SAML single sign-on against a real IdP: pysaml2 (Debian `python3-pysaml2`, signing
//! with `xmlsec1`) run as `tests/saml/idp.py` on loopback. Each test makes the IdP's
//! keys with openssl, starts the IdP, builds our service provider from a real
//! configuration file and the IdP's metadata, and posts what the IdP answers to our
//! ACS function. Hostile responses are asked of the IdP (`variant=`); each refusal must
//! give its clear reason and write its audit row.

#[path = "../common/mod.rs"]
mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use common::saml::{IDP_ENTITY_ID, Idp, Posted, fetch_form, start_idp};

use smimegate::admin::saml::{Reason, SamlConfigError, SamlRefusal, SamlSp};
use smimegate::config::Settings;
use smimegate::ops::{Ops, Role};
use smimegate::store::Store;

const PUBLIC_URL: &str = "https://gw.test:8443";
const CLIENT: &str = "192.0.2.10";

struct Fixture {
    idp: Idp,
    dir: tempfile::TempDir,
    store: Store,
    settings: Settings,
    sp: SamlSp,
    client: IpAddr,
}

const ROLES: &str = "[saml.roles]\n\
    \"smimegate-admins\" = \"admin\"\n\
    \"smimegate-editors\" = \"editor\"\n\
    \"smimegate-viewers\" = \"viewer\"\n";

fn write_config(dir: &Path, idp_metadata: &Path) -> Settings {
    let config = format!(
        "[console]\npublic_url = \"{PUBLIC_URL}\"\n\
         [saml]\nidp_metadata = \"{}\"\nrole_attribute = \"groups\"\n{ROLES}",
        idp_metadata.display()
    );
    std::fs::write(dir.join(smimegate::config::CONFIG_FILE), config).expect("write config");
    Settings::load(dir).expect("configuration loads")
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let idp = start_idp(dir.path());
    let settings = write_config(dir.path(), &dir.path().join("idp-metadata.xml"));
    let sp = SamlSp::from_settings(&settings)
        .expect("SAML configuration is accepted")
        .expect("SAML is configured");
    std::fs::write(
        dir.path().join("sp-metadata.xml"),
        sp.metadata_xml().expect("SP metadata"),
    )
    .expect("write SP metadata");
    let url = format!("sqlite://{}", dir.path().join("smimegate.db").display());
    let store = Store::connect(&url, 4, std::time::Duration::from_secs(10))
        .await
        .expect("SQLite store");
    Fixture {
        idp,
        dir,
        store,
        settings,
        sp,
        client: CLIENT.parse().expect("ip"),
    }
}

impl Fixture {
    fn ops(&self) -> Ops<'_> {
        Ops::new(&self.settings, &self.store)
    }

    /// SP-initiated login of `user` through the IdP, answered as `variant` says.
    async fn login(&self, user: &str, variant: &str) -> Posted {
        let redirect = self
            .sp
            .login_redirect(&self.ops())
            .await
            .expect("login URL");
        let expected = format!("http://127.0.0.1:{}/sso?SAMLRequest=", self.idp.port);
        assert!(redirect.starts_with(&expected), "{redirect}");
        fetch_form(&format!("{redirect}&user={user}&variant={variant}")).await
    }

    async fn consume(
        &self,
        posted: &Posted,
    ) -> Result<smimegate::admin::saml::SamlLogin, SamlRefusal> {
        self.sp
            .consume(
                &self.ops(),
                self.client,
                &posted.saml_response,
                posted.relay_state.as_deref(),
            )
            .await
    }

    /// Asserts that `posted` is refused for `reason`, and that exactly that refusal is
    /// the newest audit row, naming `actor`.
    async fn assert_refused(&self, posted: &Posted, reason: Reason, actor: &str) {
        let before = self.store.audit().recent(1000).await.expect("audit").len();
        match self.consume(posted).await {
            Err(SamlRefusal::Refused(got)) => assert_eq!(got, reason, "{got}"),
            other => panic!("expected a refusal ({reason}), got {other:?}"),
        }
        let rows = self.store.audit().recent(1000).await.expect("audit");
        assert_eq!(rows.len(), before + 1, "one audit row per refusal");
        let row = &rows[0];
        assert_eq!(row.action, "saml.login-refused");
        assert_eq!(row.actor, actor);
        assert_eq!(row.origin, format!("console {CLIENT}"));
        assert_eq!(row.target, IDP_ENTITY_ID);
        assert_eq!(row.detail, reason.to_string());
        assert!(
            !row.detail.contains('<'),
            "no XML in the audit: {}",
            row.detail
        );
    }
}

#[tokio::test]
async fn a_signed_response_to_our_request_logs_the_user_in_with_the_mapped_role() {
    let f = fixture().await;
    let posted = f.login("alice", "").await;
    assert_eq!(posted.action, format!("{PUBLIC_URL}/saml/acs"));
    let login = f.consume(&posted).await.expect("alice logs in");
    assert_eq!(login.name_id, "alice");
    assert_eq!(login.role, Role::Admin, "smimegate-admins beats staff");
    let row = &f.store.audit().recent(1).await.expect("audit")[0];
    assert_eq!(
        (row.action.as_str(), row.actor.as_str(), row.detail.as_str()),
        ("saml.login", "saml:alice", "role admin")
    );
    assert_eq!(row.origin, format!("console {CLIENT}"));

    let erin = f.consume(&f.login("erin", "").await).await.expect("erin");
    assert_eq!((erin.name_id.as_str(), erin.role), ("erin", Role::Editor));
    let victor = f
        .consume(&f.login("victor", "").await)
        .await
        .expect("victor");
    assert_eq!(victor.role, Role::Viewer);
}

#[tokio::test]
async fn a_response_signed_as_a_whole_is_accepted_too() {
    let f = fixture().await;
    let login = f
        .consume(&f.login("erin", "sign-response").await)
        .await
        .expect("a signed response with a signed assertion");
    assert_eq!(login.role, Role::Editor);
}

#[tokio::test]
async fn an_unsigned_response_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "unsigned").await;
    f.assert_refused(&posted, Reason::Unsigned, "saml:unknown")
        .await;
}

#[tokio::test]
async fn a_response_signed_by_another_key_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "other-key").await;
    f.assert_refused(&posted, Reason::BadSignature, "saml:unknown")
        .await;
}

#[tokio::test]
async fn a_sha1_signed_response_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "sha1").await;
    f.assert_refused(&posted, Reason::WeakAlgorithm("RSA-SHA1"), "saml:unknown")
        .await;
}

#[tokio::test]
async fn an_assertion_for_another_audience_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "audience").await;
    f.assert_refused(&posted, Reason::WrongAudience, "saml:unknown")
        .await;
}

#[tokio::test]
async fn an_assertion_without_an_audience_restriction_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "no-audience").await;
    f.assert_refused(&posted, Reason::NoAudience, "saml:unknown")
        .await;
}

#[tokio::test]
async fn an_assertion_for_another_recipient_is_refused() {
    let f = fixture().await;
    // Issued for another service's ACS; the unsigned Destination was changed to ours.
    let posted = f.login("alice", "recipient").await;
    f.assert_refused(&posted, Reason::WrongRecipient, "saml:unknown")
        .await;
}

#[tokio::test]
async fn a_response_for_another_destination_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "destination").await;
    f.assert_refused(&posted, Reason::WrongDestination, "saml:unknown")
        .await;
}

#[tokio::test]
async fn an_expired_assertion_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "expired").await;
    f.assert_refused(&posted, Reason::Expired, "saml:unknown")
        .await;
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let f = fixture().await;
    // The IdP gives both answers the same assertion ID, each to its own request.
    let first = f.login("alice", "fixed-id").await;
    f.consume(&first).await.expect("the first use logs in");
    let second = f.login("alice", "fixed-id").await;
    assert_ne!(first.relay_state, second.relay_state);
    f.assert_refused(&second, Reason::Replayed, "saml:alice")
        .await;
}

#[tokio::test]
async fn a_login_request_id_is_answered_once() {
    let f = fixture().await;
    let posted = f.login("alice", "").await;
    f.consume(&posted).await.expect("the first post logs in");
    f.assert_refused(&posted, Reason::UnknownRequest, "saml:unknown")
        .await;
    // Nor can the RelayState be left out or pointed at another request.
    let mut other = f.login("alice", "").await;
    other.relay_state = None;
    f.assert_refused(&other, Reason::NoRelayState, "saml:unknown")
        .await;
    other.relay_state = Some("id-00000000000000000000000000000000".into());
    f.assert_refused(&other, Reason::RequestMismatch, "saml:unknown")
        .await;
}

#[tokio::test]
async fn an_unsolicited_idp_initiated_response_is_refused() {
    let f = fixture().await;
    let url = format!(
        "http://127.0.0.1:{}/unsolicited?acs={}&sp={}&user=alice",
        f.idp.port,
        f.sp.acs_url(),
        f.sp.entity_id()
    );
    let posted = fetch_form(&url).await;
    f.assert_refused(&posted, Reason::Unsolicited, "saml:unknown")
        .await;
}

#[tokio::test]
async fn a_wrapped_unsigned_assertion_does_not_log_its_user_in() {
    let f = fixture().await;
    let posted = f.login("alice", "wrapping").await;
    f.assert_refused(&posted, Reason::AssertionCount(2), "saml:unknown")
        .await;
    let rows = f.store.audit().recent(100).await.expect("audit");
    assert!(
        rows.iter().all(|r| r.action != "saml.login"),
        "nobody logged in"
    );
}

#[tokio::test]
async fn a_comment_inside_the_signed_name_id_is_refused() {
    let f = fixture().await;
    let posted = f.login("alice", "comment").await;
    f.assert_refused(&posted, Reason::Comment, "saml:unknown")
        .await;
}

#[tokio::test]
async fn a_user_without_a_mapped_role_is_refused() {
    let f = fixture().await;
    let posted = f.login("mallory", "").await;
    f.assert_refused(&posted, Reason::NoRole("groups".into()), "saml:mallory")
        .await;
}

#[tokio::test]
async fn idp_metadata_without_a_signing_certificate_is_refused_at_load() {
    let f = fixture().await;
    let metadata = std::fs::read_to_string(f.dir.path().join("idp-metadata.xml")).expect("read");
    let start = metadata
        .find("<ns0:KeyDescriptor")
        .expect("a KeyDescriptor");
    let end =
        metadata.rfind("</ns0:KeyDescriptor>").expect("its end") + "</ns0:KeyDescriptor>".len();
    let stripped: PathBuf = f.dir.path().join("idp-metadata-unsigned.xml");
    std::fs::write(
        &stripped,
        format!("{}{}", &metadata[..start], &metadata[end..]),
    )
    .expect("write");
    let settings = write_config(f.dir.path(), &stripped);
    match SamlSp::from_settings(&settings) {
        Err(SamlConfigError::NoSigningCertificate { .. }) => {}
        other => panic!("expected a refusal, got {:?}", other.map(|sp| sp.is_some())),
    }
}

#[tokio::test]
async fn our_metadata_names_the_acs_and_wants_signed_assertions() {
    let f = fixture().await;
    let xml = f.sp.metadata_xml().expect("metadata");
    assert!(
        xml.contains(&format!("entityID=\"{PUBLIC_URL}/saml/metadata\"")),
        "{xml}"
    );
    assert!(xml.contains("WantAssertionsSigned=\"true\""), "{xml}");
    assert!(
        xml.contains(&format!("Location=\"{PUBLIC_URL}/saml/acs\"")),
        "{xml}"
    );
    assert!(
        xml.contains("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"),
        "{xml}"
    );
    // The IdP read it: the logins above depend on it.
    let posted = f.login("victor", "").await;
    assert_eq!(posted.action, format!("{PUBLIC_URL}/saml/acs"));
}

/// The single-use and replay state on one backend.
async fn saml_state_suite(store: &Store) {
    let state = store.saml();
    let now = 1_800_000_000;
    state
        .add_request("id-a", now, now + 300)
        .await
        .expect("add");
    state
        .add_request("id-old", now - 600, now - 300)
        .await
        .expect("add");
    assert!(
        !state.take_request("id-old", now).await.expect("take"),
        "expired"
    );
    assert!(state.take_request("id-a", now).await.expect("take"));
    assert!(
        !state.take_request("id-a", now).await.expect("take"),
        "used"
    );
    assert!(!state.take_request("id-never", now).await.expect("take"));

    assert!(
        state
            .remember_assertion("as-1", "alice", now, now + 600)
            .await
            .expect("new")
    );
    assert!(
        !state
            .remember_assertion("as-1", "alice", now + 10, now + 600)
            .await
            .expect("replay")
    );
    // Once its time has passed the row is pruned (the assertion itself is expired then).
    assert!(
        state
            .remember_assertion("as-1", "alice", now + 601, now + 1200)
            .await
            .expect("pruned")
    );
}

#[tokio::test]
async fn login_requests_and_used_assertions_are_kept_on_sqlite() {
    let (store, _dir) = common::sqlite_store().await;
    saml_state_suite(&store).await;
}

#[tokio::test]
async fn login_requests_and_used_assertions_are_kept_on_postgres() {
    let db = common::postgres_store().await;
    saml_state_suite(&db.store).await;
    db.drop_database().await;
}

#[tokio::test]
async fn garbage_posted_to_the_acs_is_refused_with_a_clear_reason() {
    use base64::Engine as _;
    let f = fixture().await;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let relay = Some("id-00000000000000000000000000000000".to_string());
    for (field, reason) in [
        ("not base64 at all!".to_string(), Reason::Encoding),
        ("A".repeat(600 * 1024), Reason::Encoding),
        (b64("<unclosed"), Reason::Malformed),
        (b64("\u{feff}plain text"), Reason::Malformed),
        (
            b64("<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>"),
            Reason::DocType,
        ),
        (
            b64("<Response xmlns=\"urn:example\"/>"),
            Reason::NotAResponse,
        ),
    ] {
        let posted = Posted {
            action: f.sp.acs_url().to_string(),
            saml_response: field,
            relay_state: relay.clone(),
        };
        f.assert_refused(&posted, reason, "saml:unknown").await;
    }
}

#[tokio::test]
async fn idp_metadata_that_is_unreadable_or_lacks_a_redirect_endpoint_is_refused_at_load() {
    let f = fixture().await;
    let metadata = std::fs::read_to_string(f.dir.path().join("idp-metadata.xml")).expect("read");
    let post_only = f.dir.path().join("idp-post-only.xml");
    std::fs::write(
        &post_only,
        metadata.replace("bindings:HTTP-Redirect", "bindings:HTTP-POST"),
    )
    .expect("write");
    match SamlSp::from_settings(&write_config(f.dir.path(), &post_only)) {
        Err(SamlConfigError::NoRedirectSso { .. }) => {}
        other => panic!(
            "expected NoRedirectSso, got {:?}",
            other.map(|sp| sp.is_some())
        ),
    }
    let garbage = f.dir.path().join("idp-garbage.xml");
    std::fs::write(&garbage, "<html>not metadata").expect("write");
    match SamlSp::from_settings(&write_config(f.dir.path(), &garbage)) {
        Err(e @ SamlConfigError::Metadata { .. }) => {
            assert!(e.to_string().contains("idp-garbage.xml"), "{e}")
        }
        other => panic!("expected Metadata, got {:?}", other.map(|sp| sp.is_some())),
    }
    let missing = f.dir.path().join("absent.xml");
    assert!(matches!(
        SamlSp::from_settings(&write_config(f.dir.path(), &missing)),
        Err(SamlConfigError::Read { .. })
    ));
}
