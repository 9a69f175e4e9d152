//! Trust anchors: add (with the domains each may vouch for), remove, list.

use x509_cert::certificate::Certificate;

use super::{Actor, OpError, Ops, audit};
use crate::pki::trust::DomainPattern;
use crate::store::TrustAnchorRow;

/// `trust add`: every certificate of a PEM bundle, vouching for `domains` (patterns;
/// none: any domain except the managed ones).
#[derive(Debug, Clone)]
pub struct AddTrust {
    pub pem: Vec<u8>,
    pub domains: Vec<String>,
}

/// Adds the anchors of a PEM bundle. Refuses, before writing anything, a bundle with
/// no certificate, a certificate that is not a CA, a domain pattern that does not
/// parse, and one of our managed domains (only the built-in CA vouches for those).
pub async fn add(
    ctx: &Ops<'_>,
    actor: &Actor,
    input: AddTrust,
) -> Result<Vec<TrustAnchorRow>, OpError> {
    let store = ctx.store;
    let certificates = Certificate::load_pem_chain(&input.pem)
        .map_err(|e| OpError::Invalid(format!("not a PEM certificate bundle: {e}")))?;
    if certificates.is_empty() {
        return Err(OpError::Invalid("the file holds no certificate".into()));
    }
    for cert in &certificates {
        if !is_ca(cert) {
            return Err(OpError::Invalid(format!(
                "{} is not a CA certificate (basicConstraints cA is not set): trust its issuer instead",
                cert.tbs_certificate().subject()
            )));
        }
    }
    let managed: Vec<String> = store
        .domains()
        .list()
        .await?
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut patterns = Vec::new();
    for d in &input.domains {
        let pattern = DomainPattern::parse(d).map_err(|e| OpError::Invalid(e.to_string()))?;
        if let Some(ours) = managed.iter().find(|m| pattern.matches(m)) {
            return Err(OpError::Invalid(format!(
                "{ours} is a managed domain: only the built-in CA vouches for it"
            )));
        }
        if !patterns.contains(&pattern.to_string()) {
            patterns.push(pattern.to_string());
        }
    }
    let mut added = Vec::new();
    for cert in &certificates {
        let row = store.trust_anchors().add(cert, &patterns).await?;
        audit(
            store,
            actor,
            "trust.add",
            &row.certificate.record.subject,
            &format!(
                "sha-256 {}; vouches for {}",
                row.certificate.record.fingerprint_sha256,
                describe(&row.domains)
            ),
        )
        .await?;
        added.push(row);
    }
    Ok(added)
}

/// Removes the anchor with this SHA-256 fingerprint (hex, colons allowed).
pub async fn remove(
    ctx: &Ops<'_>,
    actor: &Actor,
    fingerprint: &str,
) -> Result<TrustAnchorRow, OpError> {
    let store = ctx.store;
    let row = store.trust_anchors().remove(fingerprint).await?;
    audit(
        store,
        actor,
        "trust.remove",
        &row.certificate.record.subject,
        &format!("sha-256 {}", row.certificate.record.fingerprint_sha256),
    )
    .await?;
    Ok(row)
}

pub async fn list(ctx: &Ops<'_>) -> Result<Vec<TrustAnchorRow>, OpError> {
    Ok(ctx.store.trust_anchors().list().await?)
}

/// What an anchor vouches for, as the operator reads it.
pub fn describe(domains: &[String]) -> String {
    if domains.is_empty() {
        "any domain except the managed ones".into()
    } else {
        domains.join(", ")
    }
}

fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
        .ok()
        .flatten()
        .is_some_and(|(_, bc)| bc.ca)
}

/// A trust anchor as the console lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TrustAnchorView {
    pub fingerprint: String,
    pub subject: String,
    pub not_after: i64,
    /// The domain patterns it vouches for; empty: any domain except the managed ones.
    pub domains: Vec<String>,
}

impl From<TrustAnchorRow> for TrustAnchorView {
    fn from(row: TrustAnchorRow) -> Self {
        TrustAnchorView {
            fingerprint: row.certificate.record.fingerprint_sha256,
            subject: row.certificate.record.subject,
            not_after: row.certificate.record.not_after,
            domains: row.domains,
        }
    }
}

/// The trust anchors as the console lists them.
pub async fn views(ctx: &Ops<'_>) -> Result<Vec<TrustAnchorView>, OpError> {
    Ok(list(ctx).await?.into_iter().map(Into::into).collect())
}
