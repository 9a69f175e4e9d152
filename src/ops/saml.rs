//! The audit side of SAML single sign-on: every console login through the IdP, and
//! every refused attempt, is one audit row. The checks themselves live in
//! `crate::admin::saml` (they need the IdP's metadata and samael); these functions
//! only write what it decided, so the console's ACS handler holds no logic.

use std::net::IpAddr;

use super::{Actor, OpError, Ops, Role, audit};

/// The audit action of a login through the IdP.
pub const LOGIN: &str = "saml.login";
/// The audit action of a refused SAML response.
pub const LOGIN_REFUSED: &str = "saml.login-refused";

/// Who a SAML login (or attempt) names: `saml:<NameID>`, or `saml:unknown` when no
/// NameID could be trusted yet, connecting from `client`.
pub fn actor(name_id: Option<&str>, client: IpAddr) -> Actor {
    Actor {
        name: format!("saml:{}", name_id.unwrap_or("unknown")),
        origin: format!("console {client}"),
    }
}

/// Records a successful login of `name_id` with `role`, as asserted by `idp`.
pub async fn login(
    ctx: &Ops<'_>,
    client: IpAddr,
    idp: &str,
    name_id: &str,
    role: Role,
) -> Result<(), OpError> {
    let who = actor(Some(name_id), client);
    audit(ctx.store, &who, LOGIN, idp, &format!("role {role}")).await
}

/// Records a refused SAML response: `reason` is our own text (never the response's
/// XML); `name_id` only when the signature made it trustworthy.
pub async fn login_refused(
    ctx: &Ops<'_>,
    client: IpAddr,
    idp: &str,
    name_id: Option<&str>,
    reason: &str,
) -> Result<(), OpError> {
    let who = actor(name_id, client);
    audit(ctx.store, &who, LOGIN_REFUSED, idp, reason).await
}
