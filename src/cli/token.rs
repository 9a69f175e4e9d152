//! `smimegate token status|custody|bench`.

use anyhow::{Result, bail};
use clap::Subcommand;

use super::bench;
use crate::app;
use crate::config::Settings;
use crate::hsm::CustodyCheck;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Module, slot, label, sessions in use/free, mechanisms.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// For every private key: its protection attributes and the token's refusal of
    /// each way out (read, wrap, relax). Exits 1 if any key could leave the token.
    Custody {
        #[arg(long)]
        json: bool,
    },
    /// Sign operations per second through the session pool and on one bare session.
    Bench(bench::BenchArgs),
}

pub async fn run(cmd: TokenCommand, settings: Settings) -> Result<()> {
    let hsm = app::open_hsm(&settings).await?;
    match cmd {
        TokenCommand::Status { json } => {
            let health = hsm.call("health", |h| h.health()).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&health)?);
                return Ok(());
            }
            outln!("module:       {}", health.module);
            outln!(
                "library:      {} {}",
                health.library,
                health.library_version
            );
            outln!("slot:         {}", health.slot);
            outln!(
                "token:        {} ({} {}, serial {})",
                health.label,
                health.manufacturer,
                health.model,
                health.serial
            );
            outln!(
                "logged in:    {}",
                if health.logged_in { "yes" } else { "no" }
            );
            outln!(
                "sessions:     {} in use, {} idle, {} open of {} allowed",
                health.sessions.in_use,
                health.sessions.idle,
                health.sessions.open,
                health.sessions.capacity
            );
            if health.pin_locked {
                outln!("PIN:          LOCKED");
            } else if health.pin_count_low {
                outln!("PIN:          a wrong PIN was entered recently");
            }
            outln!("mechanisms:");
            for m in &health.mechanisms {
                outln!(
                    "  {:<28} {:<8} {}",
                    m.name,
                    if m.offered { "offered" } else { "MISSING" },
                    m.used_for
                );
            }
        }
        TokenCommand::Custody { json } => {
            let check = hsm.call("custody", |h| h.custody_reports()).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&check)?);
            } else {
                print_custody(&check);
            }
            custody_verdict(&check)?;
        }
        TokenCommand::Bench(args) => super::bench::run(hsm, &settings, args).await?,
    }
    Ok(())
}

fn print_custody(check: &CustodyCheck) {
    outln!("How the token treats attempts to get a key out, probed on throwaway keys");
    outln!("(never on the keys below):");
    for p in &check.probes {
        outln!("  {}: {}", p.kind, p.probed_on);
        let mechanism = p.wrap_mechanism.unwrap_or("every wrapping mechanism");
        outln!("    wrap ({mechanism}): {}", p.wrap);
        outln!("    set CKA_EXTRACTABLE=true: {}", p.set_extractable);
        outln!("    set CKA_SENSITIVE=false: {}", p.clear_sensitive);
    }
    outln!("Keys (attributes read, nothing changed):");
    for r in &check.keys {
        let kind = r.kind.map_or("unknown type".to_string(), |k| k.to_string());
        outln!(
            "{} {:<32} {kind} usage={} sensitive={} always_sensitive={} extractable={} never_extractable={} local={}",
            r.id,
            r.label,
            r.usage,
            r.sensitive,
            r.always_sensitive,
            r.extractable,
            r.never_extractable,
            r.local
        );
        outln!("    read secret: {}; probed as: {kind}", r.read_secret);
    }
    outln!("{} key(s) checked", check.keys.len());
}

/// Fails unless every key is proven to stay in the token: keys that can get out are
/// named first; keys for which the token gave no refusal (only answers that prove
/// nothing) are named with what it answered.
fn custody_verdict(check: &CustodyCheck) -> Result<()> {
    let mut exposed = Vec::new();
    let mut unproven = Vec::new();
    for r in &check.keys {
        let findings = r.findings();
        if !findings.exposed.is_empty() {
            exposed.push(format!("{} ({})", r.id, findings.exposed.join("; ")));
        } else if !findings.unproven.is_empty() {
            unproven.push(format!("{} ({})", r.id, findings.unproven.join("; ")));
        }
    }
    if !exposed.is_empty() {
        bail!(
            "key(s) not protected against export: {}",
            exposed.join(", ")
        );
    }
    if !unproven.is_empty() {
        bail!(
            "custody not proven: the token gave no refusal, only answers that prove nothing, for key(s) {}",
            unproven.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::{CustodyReport, KeyKind, KeyRole, KeyUsage, Refusal, TokenProbe};

    fn check(wrap: Refusal, extractable: bool) -> CustodyCheck {
        let probe = TokenProbe {
            kind: KeyKind::Ec,
            probed_on: "a throwaway p256 session key".into(),
            wrap,
            wrap_mechanism: None,
            set_extractable: Refusal::Refused("CKR_ATTRIBUTE_READ_ONLY".into()),
            clear_sensitive: Refusal::Refused("CKR_ATTRIBUTE_READ_ONLY".into()),
        };
        let key = CustodyReport {
            id: "abcd".into(),
            label: "k".into(),
            kind: Some(KeyKind::Ec),
            token: true,
            private: true,
            sensitive: true,
            always_sensitive: true,
            extractable,
            never_extractable: !extractable,
            local: true,
            usage: KeyUsage::for_role(KeyRole::Mailbox, false),
            read_secret: Refusal::Refused("CKR_ATTRIBUTE_SENSITIVE".into()),
            probe: Some(probe.clone()),
        };
        CustodyCheck {
            probes: vec![probe],
            keys: vec![key],
        }
    }

    #[test]
    fn a_proven_token_passes() {
        let proven = check(Refusal::Refused("CKR_KEY_UNEXTRACTABLE".into()), false);
        assert!(custody_verdict(&proven).is_ok());
    }

    #[test]
    fn an_answer_that_proves_nothing_fails_with_what_the_token_said() {
        let unproven = check(Refusal::Inconclusive("CKR_MECHANISM_INVALID".into()), false);
        let err = custody_verdict(&unproven)
            .expect_err("must fail")
            .to_string();
        assert!(err.starts_with("custody not proven"), "{err}");
        assert!(err.contains("abcd"), "{err}");
        assert!(err.contains("CKR_MECHANISM_INVALID"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn an_exposed_key_is_named_before_anything_unproven() {
        let exposed = check(Refusal::Inconclusive("CKR_MECHANISM_INVALID".into()), true);
        let err = custody_verdict(&exposed)
            .expect_err("must fail")
            .to_string();
        assert!(
            err.starts_with("key(s) not protected against export: abcd (CKA_EXTRACTABLE is true)"),
            "{err}"
        );
    }
}
