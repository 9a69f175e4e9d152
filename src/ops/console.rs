//! Who may use the console and the API: local break-glass accounts (argon2id
//! passwords, optional TOTP, lockout after failed logins), browser sessions (idle and
//! absolute timeouts, a CSRF token each), and API tokens for automation (hashed, per
//! account, with a role, revocable). Single sign-on users (SAML) get sessions too,
//! started by [`start_session`] after the SAML response was validated.
//!
//! Secrets never reach the store: the session cookie and API tokens are 256 random
//! bits of which only the SHA-256 is kept; passwords only as argon2id.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Actor, OpError, Ops, Role, audit, password, submitters, totp};
use crate::store::{Account, ApiToken, NewSession, unix_now};

/// Longest account name accepted.
const MAX_NAME_CHARS: usize = 64;
/// Longest API token label accepted.
const MAX_LABEL_CHARS: usize = 100;
/// A session's `last_seen_at` is written at most this often (not on every request).
const TOUCH_EVERY_SECS: i64 = 60;
/// Prefix of API tokens, so that a leaked one is recognisable (secret scanners).
const TOKEN_PREFIX: &str = "sgt_";
/// The one text a refused login shows: it says nothing about which part was wrong or
/// whether the account exists. The audit row says why.
pub const LOGIN_REFUSED: &str =
    "Login failed: wrong name, password or code, or the account is locked or disabled.";

/// A local console account as the CLI and the console show it (never its secrets).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub name: String,
    pub role: Role,
    /// The account needs a TOTP code at login.
    pub totp: bool,
    pub disabled: bool,
    /// Unix seconds until which the account is locked after failed logins.
    pub locked_until: Option<i64>,
    pub created_at: i64,
    pub password_changed_at: i64,
    pub last_login_at: Option<i64>,
}

impl AccountView {
    fn from(account: Account) -> Result<Self, OpError> {
        let role = stored_role(&account.role)?;
        let now = unix_now();
        Ok(AccountView {
            name: account.name,
            role,
            totp: account.totp,
            disabled: account.disabled,
            locked_until: (account.locked_until > now).then_some(account.locked_until),
            created_at: account.created_at,
            password_changed_at: account.password_changed_at,
            last_login_at: account.last_login_at,
        })
    }
}

fn stored_role(text: &str) -> Result<Role, OpError> {
    text.parse::<Role>()
        .map_err(|e| OpError::Store(crate::store::StoreError::Corrupt(e.to_string())))
}

/// `admin add`.
#[derive(Debug)]
pub struct AddAccount {
    pub name: String,
    pub role: Role,
    pub password: SecretString,
    /// Give the account a TOTP secret (shown once in the answer).
    pub totp: bool,
}

/// A new account, with its TOTP secret when it has one: shown once, never again.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AddedAccount {
    pub account: AccountView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_uri: Option<String>,
}

/// The canonical (lower-case) form of an account name, or why it is not one.
pub fn normalise_name(name: &str) -> Result<String, OpError> {
    let shown: String = name.chars().take(MAX_NAME_CHARS).collect();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._@+-".contains(c);
    if name.is_empty()
        || name.len() > MAX_NAME_CHARS
        || !name.chars().all(allowed)
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(OpError::Invalid(format!(
            "account name '{}' must be 1 to {MAX_NAME_CHARS} ASCII letters, digits or . _ @ + - and start with a letter or digit",
            shown.escape_default()
        )));
    }
    Ok(name.to_ascii_lowercase())
}

fn totp_enrolment(name: &str) -> Result<(String, String), OpError> {
    let secret = totp::new_secret()
        .map_err(|e| OpError::Invalid(format!("no randomness for a TOTP secret: {e}")))?;
    let uri = totp::provisioning_uri("smimegate", name, &secret);
    Ok((secret, uri))
}

pub async fn add_account(
    ctx: &Ops<'_>,
    actor: &Actor,
    input: AddAccount,
) -> Result<AddedAccount, OpError> {
    let name = normalise_name(&input.name)?;
    let bytes = submitters::valid_password(&input.password)?;
    let hash = password::hash(bytes).await?;
    let enrolment = if input.totp {
        Some(totp_enrolment(&name)?)
    } else {
        None
    };
    let account = ctx
        .store
        .console()
        .add_account(
            &name,
            input.role.as_str(),
            &hash,
            enrolment.as_ref().map(|(s, _)| s.as_str()),
        )
        .await?;
    let detail = format!("role={} totp={}", input.role, input.totp);
    audit(ctx.store, actor, "account.add", &name, &detail).await?;
    let (totp_secret, totp_uri) = enrolment.unzip();
    Ok(AddedAccount {
        account: AccountView::from(account)?,
        totp_secret,
        totp_uri,
    })
}

/// Refuses a change that would leave no enabled local admin account: the console
/// would then have nobody (but single sign-on, if set up) to manage accounts. Add
/// another admin first.
async fn keep_an_admin(ctx: &Ops<'_>, name: &str, what: &str) -> Result<(), OpError> {
    let console = ctx.store.console();
    let Some(account) = console.account(name).await? else {
        return Ok(());
    };
    if account.role == Role::Admin.as_str()
        && !account.disabled
        && console.other_enabled_admins(name).await? == 0
    {
        return Err(OpError::Invalid(format!(
            "{name} is the last enabled local admin account; add another admin before you {what} it"
        )));
    }
    Ok(())
}

pub async fn remove_account(
    ctx: &Ops<'_>,
    actor: &Actor,
    name: &str,
) -> Result<AccountView, OpError> {
    let name = normalise_name(name)?;
    keep_an_admin(ctx, &name, "remove").await?;
    let account = ctx.store.console().remove_account(&name).await?;
    audit(
        ctx.store,
        actor,
        "account.remove",
        &name,
        "sessions ended, API tokens revoked",
    )
    .await?;
    AccountView::from(account)
}

pub async fn list_accounts(ctx: &Ops<'_>) -> Result<Vec<AccountView>, OpError> {
    ctx.store
        .console()
        .accounts()
        .await?
        .into_iter()
        .map(AccountView::from)
        .collect()
}

/// A new password; clears a lockout and ends the account's sessions.
pub async fn set_password(
    ctx: &Ops<'_>,
    actor: &Actor,
    name: &str,
    password: &SecretString,
) -> Result<AccountView, OpError> {
    let name = normalise_name(name)?;
    let bytes = submitters::valid_password(password)?;
    let hash = password::hash(bytes).await?;
    let account = ctx.store.console().set_password(&name, &hash).await?;
    audit(ctx.store, actor, "account.passwd", &name, "sessions ended").await?;
    AccountView::from(account)
}

pub async fn set_role(
    ctx: &Ops<'_>,
    actor: &Actor,
    name: &str,
    role: Role,
) -> Result<AccountView, OpError> {
    let name = normalise_name(name)?;
    if role != Role::Admin {
        keep_an_admin(ctx, &name, "demote").await?;
    }
    let account = ctx.store.console().set_role(&name, role.as_str()).await?;
    audit(
        ctx.store,
        actor,
        "account.role",
        &name,
        &format!("role={role}"),
    )
    .await?;
    AccountView::from(account)
}

pub async fn set_disabled(
    ctx: &Ops<'_>,
    actor: &Actor,
    name: &str,
    disabled: bool,
) -> Result<AccountView, OpError> {
    let name = normalise_name(name)?;
    if disabled {
        keep_an_admin(ctx, &name, "disable").await?;
    }
    let account = ctx.store.console().set_disabled(&name, disabled).await?;
    let action = if disabled {
        "account.disable"
    } else {
        "account.enable"
    };
    audit(ctx.store, actor, action, &name, "").await?;
    AccountView::from(account)
}

pub async fn unlock(ctx: &Ops<'_>, actor: &Actor, name: &str) -> Result<AccountView, OpError> {
    let name = normalise_name(name)?;
    let account = ctx.store.console().unlock(&name).await?;
    audit(ctx.store, actor, "account.unlock", &name, "").await?;
    AccountView::from(account)
}

/// Gives the account a new TOTP secret (shown once) or takes it away.
pub async fn set_totp(
    ctx: &Ops<'_>,
    actor: &Actor,
    name: &str,
    on: bool,
) -> Result<AddedAccount, OpError> {
    let name = normalise_name(name)?;
    let enrolment = if on {
        Some(totp_enrolment(&name)?)
    } else {
        None
    };
    let account = ctx
        .store
        .console()
        .set_totp(&name, enrolment.as_ref().map(|(s, _)| s.as_str()))
        .await?;
    audit(
        ctx.store,
        actor,
        "account.totp",
        &name,
        if on { "on" } else { "off" },
    )
    .await?;
    let (totp_secret, totp_uri) = enrolment.unzip();
    Ok(AddedAccount {
        account: AccountView::from(account)?,
        totp_secret,
        totp_uri,
    })
}

/// Where a session's user was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionSource {
    /// A local console account.
    Local,
    /// SAML single sign-on (the account is the NameID).
    Saml,
}

impl SessionSource {
    fn as_str(self) -> &'static str {
        match self {
            SessionSource::Local => "local",
            SessionSource::Saml => "saml",
        }
    }
}

/// A started session: the cookie value (secret; only its hash is stored) and the CSRF
/// token the session's pages must send back with every change.
#[derive(Debug)]
pub struct StartedSession {
    pub token: SecretString,
    pub csrf_token: String,
    pub account: String,
    pub role: Role,
    pub expires_at: i64,
}

/// Who is calling the console or the API, as every handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The local account name or the SAML NameID.
    pub account: String,
    pub role: Role,
    pub via: CallerVia,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerVia {
    /// A browser session; changes must carry its CSRF token.
    Session {
        source: SessionSource,
        csrf_token: String,
    },
    /// An API token (no ambient authority: no CSRF token needed).
    ApiToken { id: i64 },
}

impl Caller {
    /// The audit log's name for this caller.
    pub fn actor(&self, client: IpAddr) -> Actor {
        match &self.via {
            CallerVia::Session {
                source: SessionSource::Saml,
                ..
            } => super::saml::actor(Some(&self.account), client),
            CallerVia::Session { .. } => Actor::console(&self.account, client),
            CallerVia::ApiToken { id } => {
                Actor::console(&format!("{} (API token {id})", self.account), client)
            }
        }
    }
}

fn random_token() -> Result<String, OpError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut())
        .map_err(|e| OpError::Invalid(format!("no randomness for a token: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Starts a session for a user already authenticated (by [`login`] or by SAML),
/// ending at `not_after` at the latest (the IdP's SessionNotOnOrAfter) and never later
/// than `[console].session_max_secs` from now.
pub async fn start_session(
    ctx: &Ops<'_>,
    account: &str,
    role: Role,
    source: SessionSource,
    client: IpAddr,
    not_after: Option<i64>,
) -> Result<StartedSession, OpError> {
    let token = random_token()?;
    let csrf_token = random_token()?;
    let max = i64::try_from(ctx.settings.config.console.session_max_secs).unwrap_or(i64::MAX);
    let mut expires_at = unix_now().saturating_add(max);
    if let Some(limit) = not_after {
        expires_at = expires_at.min(limit);
    }
    ctx.store
        .console()
        .start_session(&NewSession {
            token_hash: &token_hash(&token),
            account,
            role: role.as_str(),
            source: source.as_str(),
            csrf_token: &csrf_token,
            client: &client.to_string(),
            expires_at,
        })
        .await?;
    Ok(StartedSession {
        token: SecretString::from(token),
        csrf_token,
        account: account.to_string(),
        role,
        expires_at,
    })
}

/// The caller a session cookie belongs to, or None when it is unknown, ended, idle too
/// long or past its absolute end (an ended session is deleted).
pub async fn session_caller(ctx: &Ops<'_>, token: &str) -> Result<Option<Caller>, OpError> {
    if token.is_empty() || token.len() > 100 {
        return Ok(None);
    }
    let hash = token_hash(token);
    let console = ctx.store.console();
    let Some(session) = console.session(&hash).await? else {
        return Ok(None);
    };
    let now = unix_now();
    let idle = i64::try_from(ctx.settings.config.console.session_idle_secs).unwrap_or(i64::MAX);
    if session.expires_at <= now || session.last_seen_at.saturating_add(idle) <= now {
        console.end_session(&hash).await?;
        return Ok(None);
    }
    let source = match session.source.as_str() {
        "saml" => SessionSource::Saml,
        _ => SessionSource::Local,
    };
    if source == SessionSource::Local {
        let usable = console
            .account(&session.account)
            .await?
            .is_some_and(|a| !a.disabled && a.role == session.role);
        if !usable {
            console.end_session(&hash).await?;
            return Ok(None);
        }
    }
    if now - session.last_seen_at >= TOUCH_EVERY_SECS {
        console.touch_session(&hash, now).await?;
    }
    Ok(Some(Caller {
        account: session.account,
        role: stored_role(&session.role)?,
        via: CallerVia::Session {
            source,
            csrf_token: session.csrf_token,
        },
    }))
}

/// Ends the session of `token` (logout).
pub async fn logout(ctx: &Ops<'_>, actor: &Actor, token: &str) -> Result<(), OpError> {
    if ctx.store.console().end_session(&token_hash(token)).await? {
        audit(ctx.store, actor, "console.logout", &actor.name, "").await?;
    }
    Ok(())
}

/// A login form's content.
pub struct LoginAttempt {
    pub name: String,
    pub password: SecretString,
    /// The TOTP code, for accounts that have one.
    pub code: Option<String>,
}

/// Why a login did not start a session.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong credentials, locked or disabled: the user sees only [`LOGIN_REFUSED`],
    /// the audit row says which.
    #[error("{LOGIN_REFUSED}")]
    Refused,
    /// This client failed too often in the last minute: try later.
    #[error("too many failed logins from this address; try again in a minute")]
    Throttled,
    /// The gateway's own failure (database, hashing slots busy).
    #[error(transparent)]
    Gateway(#[from] OpError),
}

impl From<crate::store::StoreError> for LoginError {
    fn from(e: crate::store::StoreError) -> Self {
        LoginError::Gateway(e.into())
    }
}

/// Failed logins per client address in the current minute: a client past
/// `[console].failed_logins_per_minute` gets [`LoginError::Throttled`] without any
/// password being checked. Held in memory by the console (per node).
pub struct LoginThrottle {
    per_minute: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Most client addresses remembered at once; older windows are dropped first.
const THROTTLE_ENTRIES: usize = 10_000;

impl LoginThrottle {
    pub fn new(per_minute: u32) -> Self {
        LoginThrottle {
            per_minute,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one attempt of `client` and says whether it is within the limit (for
    /// requests that cost something whether or not they succeed, e.g. SAML login
    /// requests, each of which the database keeps until it expires).
    pub fn admit(&self, client: IpAddr) -> bool {
        let allowed = !self.throttled(client);
        self.failed(client);
        allowed
    }

    fn throttled(&self, client: IpAddr) -> bool {
        let Ok(map) = self.failures.lock() else {
            return true;
        };
        map.get(&client).is_some_and(|(start, count)| {
            start.elapsed() < Duration::from_secs(60) && *count >= self.per_minute
        })
    }

    fn failed(&self, client: IpAddr) {
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= THROTTLE_ENTRIES {
            map.retain(|_, (start, _)| start.elapsed() < Duration::from_secs(60));
        }
        let entry = map.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Checks a local account's password (and TOTP code) and starts a session. Exactly one
/// argon2id computation whatever the case; every refusal writes an audit row saying
/// why, and a failure counts toward the account's lockout.
pub async fn login(
    ctx: &Ops<'_>,
    throttle: &LoginThrottle,
    client: IpAddr,
    attempt: LoginAttempt,
) -> Result<StartedSession, LoginError> {
    if throttle.throttled(client) {
        let actor = Actor::console("unknown", client);
        audit(
            ctx.store,
            &actor,
            "console.login-refused",
            "",
            "throttled: too many failures from this address",
        )
        .await?;
        return Err(LoginError::Throttled);
    }
    let name = normalise_name(&attempt.name).ok();
    let shown = name.clone().unwrap_or_else(|| "unknown".into());
    let actor = Actor::console(&shown, client);
    let console = ctx.store.console();
    let found = match &name {
        Some(name) => console.credentials(name).await?,
        None => None,
    };
    let stored = found.as_ref().map(|c| c.password_hash.clone());
    let secret = Zeroizing::new(attempt.password.expose_secret().as_bytes().to_vec());
    let (matched, _) = password::verify(stored, secret)
        .await
        .map_err(OpError::from)?;
    let now = unix_now();
    let config = &ctx.settings.config.console;
    let refuse = |why: String| refused(ctx, throttle, client, &actor, why);
    let Some(credentials) = found else {
        return refuse("no such account".into()).await;
    };
    let account = &credentials.account;
    if account.disabled {
        return refuse("account disabled".into()).await;
    }
    if account.locked_until > now {
        return refuse(format!(
            "account locked until {}",
            super::rfc3339(account.locked_until)
        ))
        .await;
    }
    let totp_step = match &credentials.totp_secret {
        None => None,
        Some(secret) => match attempt
            .code
            .as_deref()
            .and_then(|code| totp::verify(secret, code, now))
        {
            Some(step) if step > credentials.totp_last_step => Some(step),
            Some(_) => None,
            None => None,
        },
    };
    let second_factor_ok = credentials.totp_secret.is_none() || totp_step.is_some();
    if !matched || !second_factor_ok {
        let why = if !matched {
            "wrong password"
        } else {
            "wrong, missing or reused TOTP code"
        };
        let lock_secs = i64::try_from(config.lockout_secs).unwrap_or(i64::MAX);
        let after = console
            .record_failure(
                &account.name,
                i64::from(config.lockout_after),
                now.saturating_add(lock_secs),
            )
            .await?;
        if after.is_some_and(|a| a.locked_until > now) {
            audit(
                ctx.store,
                &actor,
                "account.locked",
                &account.name,
                &format!("after {} failed logins", config.lockout_after),
            )
            .await?;
        }
        return refuse(why.into()).await;
    }
    if !console.record_success(&account.name, totp_step).await? {
        return refuse("TOTP code reused".into()).await;
    }
    let role = stored_role(&account.role)?;
    let session =
        start_session(ctx, &account.name, role, SessionSource::Local, client, None).await?;
    audit(
        ctx.store,
        &actor,
        "console.login",
        &account.name,
        &format!("local, role={role}"),
    )
    .await?;
    Ok(session)
}

/// Counts a refused login against the client, logs and audits why; the user sees only
/// [`LOGIN_REFUSED`].
async fn refused(
    ctx: &Ops<'_>,
    throttle: &LoginThrottle,
    client: IpAddr,
    actor: &Actor,
    why: String,
) -> Result<StartedSession, LoginError> {
    throttle.failed(client);
    let account = actor.name.strip_prefix("console:").unwrap_or(&actor.name);
    tracing::warn!(%account, origin = %actor.origin, %why, "console login refused");
    audit(ctx.store, actor, "console.login-refused", account, &why).await?;
    Err(LoginError::Refused)
}

/// An API token as the console lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub account: String,
    pub label: String,
    pub role: Role,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenView {
    fn from(token: ApiToken) -> Result<Self, OpError> {
        Ok(TokenView {
            id: token.id,
            role: stored_role(&token.role)?,
            account: token.account,
            label: token.label,
            created_at: token.created_at,
            last_used_at: token.last_used_at,
            revoked_at: token.revoked_at,
        })
    }
}

/// `admin token create`: a token for a local account, with at most that account's role.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    pub account: String,
    pub label: String,
    pub role: Role,
}

/// A new token: `token` is shown once and never again.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

pub async fn create_token(
    ctx: &Ops<'_>,
    actor: &Actor,
    input: CreateToken,
) -> Result<CreatedToken, OpError> {
    let account = normalise_name(&input.account)?;
    let label = input.label.trim().to_string();
    if label.is_empty()
        || label.chars().count() > MAX_LABEL_CHARS
        || label.chars().any(char::is_control)
    {
        return Err(OpError::Invalid(format!(
            "the token label must be 1 to {MAX_LABEL_CHARS} characters without control characters"
        )));
    }
    let owner = ctx
        .store
        .console()
        .account(&account)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("no console account {account}")))?;
    let owner_role = stored_role(&owner.role)?;
    if !owner_role.allows(input.role) {
        return Err(OpError::Invalid(format!(
            "account {account} has role {owner_role}; its tokens cannot have role {}",
            input.role
        )));
    }
    let token = format!("{TOKEN_PREFIX}{}", random_token()?);
    let stored = ctx
        .store
        .console()
        .add_token(&account, &label, input.role.as_str(), &token_hash(&token))
        .await?;
    let view = TokenView::from(stored)?;
    let detail = format!("id={} role={} label={label}", view.id, view.role);
    audit(ctx.store, actor, "token.create", &account, &detail).await?;
    Ok(CreatedToken { token, view })
}

pub async fn list_tokens(ctx: &Ops<'_>) -> Result<Vec<TokenView>, OpError> {
    ctx.store
        .console()
        .tokens()
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect()
}

pub async fn revoke_token(ctx: &Ops<'_>, actor: &Actor, id: i64) -> Result<TokenView, OpError> {
    let token = ctx.store.console().revoke_token(id).await?;
    let view = TokenView::from(token)?;
    audit(
        ctx.store,
        actor,
        "token.revoke",
        &view.account,
        &format!("id={id}"),
    )
    .await?;
    Ok(view)
}

/// The caller an `Authorization: Bearer` token belongs to: a live token of an
/// existing, enabled account, with the lower of the token's and the account's roles.
pub async fn token_caller(ctx: &Ops<'_>, bearer: &str) -> Result<Option<Caller>, OpError> {
    if !bearer.starts_with(TOKEN_PREFIX) || bearer.len() > 100 {
        return Ok(None);
    }
    let console = ctx.store.console();
    let Some(token) = console.use_token(&token_hash(bearer)).await? else {
        return Ok(None);
    };
    let Some(account) = console.account(&token.account).await? else {
        return Ok(None);
    };
    if account.disabled {
        return Ok(None);
    }
    let role = stored_role(&token.role)?.min(stored_role(&account.role)?);
    Ok(Some(Caller {
        account: token.account,
        role,
        via: CallerVia::ApiToken { id: token.id },
    }))
}

/// Deletes ended sessions (the lifecycle job calls it).
pub async fn prune_sessions(ctx: &Ops<'_>) -> Result<u64, OpError> {
    let idle = i64::try_from(ctx.settings.config.console.session_idle_secs).unwrap_or(i64::MAX);
    Ok(ctx
        .store
        .console()
        .prune_sessions(unix_now().saturating_sub(idle))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_admitted_up_to_its_limit_a_minute_and_others_are_not_affected() {
        let throttle = LoginThrottle::new(3);
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("ip"),
            "192.0.2.2".parse().expect("ip"),
        );
        assert!((0..3).all(|_| throttle.admit(a)));
        assert!(!throttle.admit(a), "the fourth in a minute is refused");
        assert!(throttle.admit(b), "another address has its own count");
    }

    #[test]
    fn session_and_api_tokens_are_random_and_only_their_hash_is_kept() {
        let (one, two) = (
            random_token().expect("random"),
            random_token().expect("random"),
        );
        assert_ne!(one, two);
        assert_eq!(one.len(), 43, "256 bits, base64url without padding");
        assert_eq!(token_hash(&one).len(), 64);
        assert_ne!(token_hash(&one), one);
    }
}
