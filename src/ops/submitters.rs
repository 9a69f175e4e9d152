//! SMTP AUTH submitters: add, remove, list, change a password, disable — and
//! [`verify`], which the submission listener calls for SASL PLAIN/LOGIN.
//!
//! A name is the SASL authentication identity: ASCII letters, digits and `._@+-`,
//! 1 to 64 characters, starting with a letter or digit, compared case-insensitively
//! (stored lower-case). A password has 12 to 1024 bytes and no NUL or line break
//! (SASL PLAIN separates its fields with NUL; the prompt and the file are read by
//! line). Passwords are argon2id-hashed (see `ops::password`) and never stored,
//! logged or audited; the audit row says only that a password was set.

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::password::{self, MAX_PASSWORD_BYTES};
use super::{Actor, OpError, Ops, audit};
use crate::pki::address::Address;
use crate::store::{NewSubmitter, Store, StoreError, Submitter};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest name accepted.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest comment accepted.
const MAX_COMMENT_CHARS: usize = 200;
/// Most addresses one submitter may send as.
const MAX_ADDRESSES: usize = 1000;

/// `submitter add`.
pub struct AddSubmitter {
    pub name: String,
    pub password: SecretString,
    /// Addresses the submitter may send as; none: it may relay, but vouches for no
    /// address (its mail is signed only where the header From is the envelope sender).
    pub may_send_as: Vec<String>,
    pub comment: String,
}

/// A submitter as the CLI and the console show it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubmitterView {
    pub name: String,
    pub may_send_as: Vec<String>,
    pub comment: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub password_changed_at: i64,
    pub disabled: bool,
}

impl From<Submitter> for SubmitterView {
    fn from(s: Submitter) -> Self {
        SubmitterView {
            name: s.name,
            may_send_as: s.may_send_as,
            comment: s.comment,
            created_at: s.created_at,
            password_changed_at: s.password_changed_at,
            disabled: s.disabled,
        }
    }
}

/// Adds a submitter. Refuses, before hashing or writing anything, an invalid name,
/// password, address or comment; a name already taken is a conflict.
pub async fn add(
    ctx: &Ops<'_>,
    actor: &Actor,
    input: AddSubmitter,
) -> Result<SubmitterView, OpError> {
    let store = ctx.store;
    let name = normalise_name(&input.name)?;
    let may_send_as = addresses(&input.may_send_as)?;
    let comment = comment(&input.comment)?;
    let secret = valid_password(&input.password)?;
    if store.submitters().get(&name).await?.is_some() {
        return Err(OpError::Conflict(format!("submitter {name}")));
    }
    let password_hash = password::hash(secret).await?;
    let row = store
        .submitters()
        .add(&NewSubmitter {
            name: &name,
            password_hash: &password_hash,
            may_send_as: &may_send_as,
            comment: &comment,
        })
        .await?;
    audit(
        store,
        actor,
        "submitter.add",
        &name,
        &format!("may send as {}", describe(&row.may_send_as)),
    )
    .await?;
    Ok(row.into())
}

/// Removes a submitter: it cannot authenticate any more.
pub async fn remove(ctx: &Ops<'_>, actor: &Actor, name: &str) -> Result<SubmitterView, OpError> {
    let store = ctx.store;
    let name = normalise_name(name)?;
    let row = store.submitters().remove(&name).await?;
    audit(store, actor, "submitter.remove", &name, "").await?;
    Ok(row.into())
}

/// Every submitter, by name.
pub async fn list(ctx: &Ops<'_>) -> Result<Vec<SubmitterView>, OpError> {
    Ok(ctx
        .store
        .submitters()
        .list()
        .await?
        .into_iter()
        .map(SubmitterView::from)
        .collect())
}

/// Replaces a submitter's password.
pub async fn set_password(
    ctx: &Ops<'_>,
    actor: &Actor,
    name: &str,
    new_password: SecretString,
) -> Result<SubmitterView, OpError> {
    let store = ctx.store;
    let name = normalise_name(name)?;
    let secret = valid_password(&new_password)?;
    if store.submitters().get(&name).await?.is_none() {
        return Err(OpError::NotFound(format!("no submitter {name}")));
    }
    let password_hash = password::hash(secret).await?;
    let row = store
        .submitters()
        .set_password_hash(&name, &password_hash)
        .await?;
    audit(store, actor, "submitter.passwd", &name, "password changed").await?;
    Ok(row.into())
}

/// Disables (or enables again) a submitter without forgetting it.
pub async fn set_disabled(
    ctx: &Ops<'_>,
    actor: &Actor,
    name: &str,
    disabled: bool,
) -> Result<SubmitterView, OpError> {
    let store = ctx.store;
    let name = normalise_name(name)?;
    let row = store.submitters().set_disabled(&name, disabled).await?;
    let action = if disabled {
        "submitter.disable"
    } else {
        "submitter.enable"
    };
    audit(store, actor, action, &name, "").await?;
    Ok(row.into())
}

/// The submitter `name` authenticates as with `password`, or `None` (unknown name,
/// wrong password, disabled). Exactly one argon2id computation whatever the case, on
/// the blocking pool; the password is never logged. An `Err` is the gateway's own
/// failure (database, hashing slots busy): answer it as temporary (`454 4.7.0`),
/// never as a wrong password.
pub async fn verify(
    store: &Store,
    name: &str,
    password: &SecretString,
) -> Result<Option<Submitter>, StoreError> {
    check(store, name, password).await.map(|(found, _)| found)
}

/// [`verify`] with the trace of what it computed.
async fn check(
    store: &Store,
    name: &str,
    password: &SecretString,
) -> Result<(Option<Submitter>, password::Trace), StoreError> {
    let found = match normalise_name(name) {
        Ok(name) => store.submitters().credentials(&name).await?,
        Err(_) => None,
    };
    let (submitter, stored) = match found {
        Some(c) => (Some(c.submitter), Some(c.password_hash)),
        None => (None, None),
    };
    let secret = Zeroizing::new(password.expose_secret().as_bytes().to_vec());
    let (matched, trace) = password::verify(stored, secret).await?;
    let authenticated = submitter.filter(|s| matched && !s.disabled);
    Ok((authenticated, trace))
}

/// The canonical (lower-case) form of a submitter name, or why it is not one.
pub fn normalise_name(name: &str) -> Result<String, OpError> {
    let shown: String = name.chars().take(MAX_NAME_CHARS).collect();
    if name.is_empty() || name.len() > MAX_NAME_CHARS {
        return Err(OpError::Invalid(format!(
            "submitter name '{shown}' must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._@+-".contains(c);
    if !name.chars().all(allowed) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(OpError::Invalid(format!(
            "submitter name '{}' may hold only ASCII letters, digits and . _ @ + - and must start with a letter or digit",
            shown.escape_default()
        )));
    }
    Ok(name.to_ascii_lowercase())
}

/// The password's bytes when it is acceptable for a new hash.
pub(crate) fn valid_password(password: &SecretString) -> Result<Zeroizing<Vec<u8>>, OpError> {
    let text = password.expose_secret();
    if text.chars().count() < MIN_PASSWORD_CHARS {
        return Err(OpError::Invalid(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if text.len() > MAX_PASSWORD_BYTES {
        return Err(OpError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if text.contains(['\0', '\r', '\n']) {
        return Err(OpError::Invalid(
            "the password must not contain NUL or a line break".into(),
        ));
    }
    Ok(Zeroizing::new(text.as_bytes().to_vec()))
}

fn addresses(input: &[String]) -> Result<Vec<String>, OpError> {
    if input.len() > MAX_ADDRESSES {
        return Err(OpError::Invalid(format!(
            "at most {MAX_ADDRESSES} addresses per submitter"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(input.len());
    for a in input {
        let address = Address::from_envelope(a).map_err(|e| OpError::Invalid(e.to_string()))?;
        if !out.iter().any(|o| o == address.as_str()) {
            out.push(address.as_str().to_string());
        }
    }
    Ok(out)
}

fn comment(input: &str) -> Result<String, OpError> {
    if input.chars().count() > MAX_COMMENT_CHARS {
        return Err(OpError::Invalid(format!(
            "the comment must have at most {MAX_COMMENT_CHARS} characters"
        )));
    }
    if input.chars().any(char::is_control) {
        return Err(OpError::Invalid(
            "the comment must not contain control characters".into(),
        ));
    }
    Ok(input.trim().to_string())
}

/// What a submitter may send as, as the operator reads it.
pub fn describe(may_send_as: &[String]) -> String {
    if may_send_as.is_empty() {
        "no address (relay only)".into()
    } else {
        may_send_as.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, 2, std::time::Duration::from_secs(5))
            .await
            .expect("store");
        (store, dir)
    }

    fn settings() -> crate::config::Settings {
        crate::config::Settings::new(
            std::path::PathBuf::from("."),
            crate::config::Config::default(),
        )
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_string())
    }

    fn actor() -> Actor {
        Actor {
            name: "test".into(),
            origin: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_name_fail_on_the_same_path() {
        let (store, _dir) = store().await;
        let settings = settings();
        let ctx = Ops::new(&settings, &store);
        add(
            &ctx,
            &actor(),
            AddSubmitter {
                name: "App-Server".into(),
                password: secret("correct horse battery"),
                may_send_as: vec!["Noreply@Corp.Example".into()],
                comment: String::new(),
            },
        )
        .await
        .expect("add");

        let (ok, ok_trace) = check(&store, "app-server", &secret("correct horse battery"))
            .await
            .expect("check");
        let ok = ok.expect("the right password authenticates");
        assert_eq!(ok.name, "app-server");
        assert!(ok.may_send_as("noreply@corp.example"));

        let (wrong, wrong_trace) = check(&store, "app-server", &secret("correct horse batterz"))
            .await
            .expect("check");
        let (unknown, unknown_trace) = check(&store, "nobody", &secret("correct horse battery"))
            .await
            .expect("check");
        let (invalid, invalid_trace) = check(&store, "no body\0", &secret("x"))
            .await
            .expect("check");
        assert!(wrong.is_none() && unknown.is_none() && invalid.is_none());
        // One argon2id computation of the same cost in every case: the reply's timing
        // says nothing about whether the name exists.
        for trace in [wrong_trace, unknown_trace, invalid_trace] {
            assert_eq!(trace, ok_trace);
        }
        assert_eq!(ok_trace.argon2_runs, 1);
        assert_eq!(
            ok_trace.cost,
            (password::M_COST_KIB, password::T_COST, password::P_COST)
        );

        // Disabled: the right password no longer authenticates, on the same path.
        set_disabled(&ctx, &actor(), "APP-SERVER", true)
            .await
            .expect("disable");
        let (disabled, disabled_trace) =
            check(&store, "app-server", &secret("correct horse battery"))
                .await
                .expect("check");
        assert!(disabled.is_none());
        assert_eq!(disabled_trace, ok_trace);
    }

    #[tokio::test]
    async fn invalid_input_is_refused_before_anything_is_written() {
        let (store, _dir) = store().await;
        let settings = settings();
        let ctx = Ops::new(&settings, &store);
        let attempt = |name: &str, password: &str, may: &[&str], comment: &str| AddSubmitter {
            name: name.into(),
            password: secret(password),
            may_send_as: may.iter().map(|s| s.to_string()).collect(),
            comment: comment.into(),
        };
        for (input, expected) in [
            (attempt("", "long enough pw", &[], ""), "1 to 64"),
            (attempt("a b", "long enough pw", &[], ""), "may hold only"),
            (attempt("-x", "long enough pw", &[], ""), "must start"),
            (attempt("ok", "short", &[], ""), "at least 12"),
            (attempt("ok", "long enough\0pw", &[], ""), "NUL"),
            (attempt("ok", "long enough\npw", &[], ""), "line break"),
            (
                attempt("ok", "long enough pw", &["not-an-address"], ""),
                "valid mailbox",
            ),
            (
                attempt("ok", "long enough pw", &[], "bad\ncomment"),
                "control",
            ),
        ] {
            let err = add(&ctx, &actor(), input).await.expect_err(expected);
            assert!(matches!(err, OpError::Invalid(_)), "{err}");
            assert!(err.to_string().contains(expected), "{err} lacks {expected}");
            assert!(!err.to_string().contains("long enough"), "{err}");
        }
        assert!(list(&ctx).await.expect("list").is_empty());
        assert!(store.audit().recent(10).await.expect("audit").is_empty());
    }
}
