//! `smimegate cert …`: public certificates (never private keys); `cert show` prints a
//! mailbox's certificate chain; `cert import`, `cert list`, `cert remove` manage
//! partners' certificates (`ops::certs`).

use anyhow::{Result, bail};
use clap::Subcommand;
use const_oid::db::DB;
use der::{Decode, EncodePem};
use x509_cert::certificate::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, SubjectAltName};

use crate::app;
use crate::config::Settings;
use crate::ops::certs::{Kind, ListCertificates};
use crate::ops::{self, Actor, Ops};
use crate::pki::address::Address;
use crate::store::{CertificateSource, Store};

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// The mailbox's certificate chain and its details.
    Show {
        address: String,
        /// Print the chain as PEM (leaf first) instead of details.
        #[arg(long)]
        pem: bool,
    },
    /// Import partners' public certificates: PEM, DER or a .p7c (PKCS#7) bundle. Each
    /// is checked as a harvested one (a trust anchor whose scope covers its address,
    /// valid, emailProtection, never a managed domain).
    Import {
        file: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every certificate the gateway holds: fingerprint, address, source, expiry.
    List {
        /// Only ours (the CA, managed mailboxes, their chains).
        #[arg(long, conflicts_with = "partner")]
        managed: bool,
        /// Only partners' (harvested or imported).
        #[arg(long)]
        partner: bool,
        /// Only certificates of this address.
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a partner's certificate (never one of ours).
    Remove { fingerprint: String },
}

pub async fn run(cmd: CertCommand, settings: &Settings) -> Result<()> {
    match cmd {
        CertCommand::Show { address, pem } => {
            let store = app::open_store(settings).await?;
            show(&store, &Address::parse(&address)?, pem).await
        }
        CertCommand::Import { file, json } => {
            let bytes = super::identities::read_file(&file)?;
            let store = app::open_store(settings).await?;
            let outcomes =
                ops::certs::import(&Ops::new(settings, &store), &Actor::cli(), &bytes).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&outcomes)?);
                return Ok(());
            }
            for o in &outcomes {
                outln!(
                    "{:<8} {} {} ({}){}",
                    o.outcome,
                    o.fingerprint,
                    o.address.as_deref().unwrap_or("-"),
                    o.subject,
                    if o.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", o.detail)
                    }
                );
            }
            Ok(())
        }
        CertCommand::List {
            managed,
            partner,
            address,
            json,
        } => {
            let store = app::open_store(settings).await?;
            let kind = match (managed, partner) {
                (true, _) => Kind::Managed,
                (_, true) => Kind::Partner,
                _ => Kind::All,
            };
            let rows = ops::certs::list(
                &Ops::new(settings, &store),
                ListCertificates { kind, address },
            )
            .await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            outln!(
                "{:<64} {:<36} {:<12} {:<12} {:<20} REVOKED",
                "SHA-256",
                "ADDRESS",
                "SOURCE",
                "KIND",
                "NOT AFTER"
            );
            for c in &rows {
                outln!(
                    "{:<64} {:<36} {:<12} {:<12} {:<20} {}",
                    c.fingerprint,
                    c.address.as_deref().unwrap_or("-"),
                    c.source.as_str(),
                    c.kind,
                    format_time(c.not_after),
                    if c.revoked { "yes" } else { "no" }
                );
            }
            outln!("{} certificate(s)", rows.len());
            Ok(())
        }
        CertCommand::Remove { fingerprint } => {
            let store = app::open_store(settings).await?;
            let removed =
                ops::certs::remove(&Ops::new(settings, &store), &Actor::cli(), &fingerprint)
                    .await?;
            outln!(
                "removed the certificate of {} ({})",
                removed.address.as_deref().unwrap_or("-"),
                removed.fingerprint
            );
            Ok(())
        }
    }
}

async fn show(store: &Store, address: &Address, pem: bool) -> Result<()> {
    let certs = store.certificates().for_owner(address.as_str()).await?;
    let current = store
        .certificates()
        .signing(address.as_str(), crate::store::unix_now())
        .await?;
    let Some(leaf) = current.or_else(|| certs.into_iter().next()) else {
        let state = match store.mailboxes().get(address).await? {
            Some(m) => format!("mailbox is {}", m.state.as_str()),
            None => "not a managed mailbox".into(),
        };
        bail!("no certificate for {address} ({state})");
    };
    let mut chain = vec![Certificate::from_der(&leaf.record.der)?];
    if leaf.source == CertificateSource::Uploaded {
        chain.extend(store.certificates().chain_of(&leaf).await?);
    } else if let Some(ca) = app::load_ca(store)
        .await?
        .filter(|ca| leaf.record.issuer == ca.certificate.tbs_certificate().subject().to_string())
    {
        let self_signed = ca.is_root();
        chain.push(ca.certificate);
        // The two-tier CA: the root above the issuing CA.
        if !self_signed && let Some(root) = app::load_root_ca(store).await? {
            chain.push(root.certificate);
        }
    }
    if pem {
        for cert in &chain {
            out!("{}", cert.to_pem(der::pem::LineEnding::LF)?);
        }
        return Ok(());
    }
    for (i, cert) in chain.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        print_details(cert, if i == 0 { "certificate" } else { "issuer" })?;
    }
    if leaf.revoked_at.is_some() {
        outln!("\nstatus:       REVOKED");
    }
    Ok(())
}

fn print_details(cert: &Certificate, role: &str) -> Result<()> {
    use der::Encode;
    use sha2::Digest;
    let tbs = cert.tbs_certificate();
    let der = cert.to_der()?;
    outln!("{role}:");
    outln!("  subject:      {}", tbs.subject());
    outln!("  issuer:       {}", tbs.issuer());
    outln!(
        "  serial:       {}",
        hex::encode(tbs.serial_number().as_bytes())
    );
    outln!("  not before:   {}", tbs.validity().not_before);
    outln!("  not after:    {}", tbs.validity().not_after);
    outln!(
        "  sha-256:      {}",
        hex::encode(sha2::Sha256::digest(&der))
    );
    let alg = &tbs.subject_public_key_info().algorithm.oid;
    outln!("  public key:   {}", DB.by_oid(alg).unwrap_or("unknown"));
    if let Some((_, san)) = tbs.get_extension::<SubjectAltName>()? {
        let names: Vec<String> = san
            .0
            .iter()
            .map(|n| match n {
                GeneralName::Rfc822Name(e) => format!("email:{e}"),
                GeneralName::DnsName(d) => format!("dns:{d}"),
                other => format!("{other:?}"),
            })
            .collect();
        outln!("  alt names:    {}", names.join(", "));
    }
    if let Some((critical, ku)) = tbs.get_extension::<KeyUsage>()? {
        let usages: Vec<String> = ku.0.into_iter().map(|u| format!("{u:?}")).collect();
        outln!(
            "  key usage:    {}{}",
            usages.join(", "),
            if critical { " (critical)" } else { "" }
        );
    }
    if let Some((_, eku)) = tbs.get_extension::<ExtendedKeyUsage>()? {
        let usages: Vec<&str> = eku
            .0
            .iter()
            .map(|o| DB.by_oid(o).unwrap_or("unknown"))
            .collect();
        outln!("  ext. usage:   {}", usages.join(", "));
    }
    Ok(())
}

pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
