//! Command-line interface: argument types (clap) and one function per command.

mod bench;
mod certs;
mod load;
mod relay;
mod rules;
pub mod serve;
mod smime_bench;
mod submitters;
mod token;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::app::{self, Actor, App};
use crate::config::Settings;
use crate::hsm::KeyAlgorithm;
use crate::pki::address::{Address, Domain};
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "smimegate",
    version,
    about = "S/MIME gateway with every private key in a PKCS#11 token"
)]
pub struct Cli {
    /// Data directory holding smimegate.toml, the SQLite database and the SoftHSM2 token.
    #[arg(
        long,
        global = true,
        env = "SMIMEGATE_DATA_DIR",
        default_value = "./var"
    )]
    pub data_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the data directory, configuration, token, database and built-in CA (idempotent).
    Init,
    /// Token health, key custody proofs and benchmarks.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Managed domains and their inbound routes.
    #[command(subcommand)]
    Domain(DomainCommand),
    /// Managed mailboxes and their S/MIME activation.
    #[command(subcommand)]
    Mailbox(MailboxCommand),
    /// Public certificates (never private keys).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Run the gateway: the SMTP listeners (inbound, submission) and the HTTP endpoint.
    Serve(ServeArgs),
    /// A small SMTP sink that writes what it receives to a Maildir (a next hop for
    /// trying the gateway out).
    Sink(SinkArgs),
    /// SMTP load generator: concurrent sessions sending one message for a while.
    SmtpLoad(load::LoadArgs),
    /// Trust anchors for verifying partners' signatures.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Use the S/MIME engine without SMTP: a message on stdin or in a file, the result
    /// on stdout, one verdict line on stderr.
    #[command(subcommand)]
    Smime(SmimeCommand),
    /// Policy rules: what is signed, encrypted, decrypted; `rule explain` says why.
    #[command(subcommand)]
    Rule(rules::RuleCommand),
    /// The message log: one line per SMTP transaction.
    Log(relay::LogArgs),
    /// Where outbound mail goes.
    #[command(subcommand)]
    Smarthost(relay::SmarthostCommand),
    /// Networks allowed to relay outbound mail through the gateway.
    #[command(subcommand)]
    Network(relay::NetworkCommand),
    /// SMTP AUTH accounts of the submission listener.
    #[command(subcommand)]
    Submitter(submitters::SubmitterCommand),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CipherArg {
    Aes128Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl From<CipherArg> for crate::smime::encrypt::ContentCipher {
    fn from(c: CipherArg) -> Self {
        use crate::smime::encrypt::ContentCipher as C;
        match c {
            CipherArg::Aes128Cbc => C::Aes128Cbc,
            CipherArg::Aes256Cbc => C::Aes256Cbc,
            CipherArg::Aes128Gcm => C::Aes128Gcm,
            CipherArg::Aes256Gcm => C::Aes256Gcm,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Add every certificate of a PEM file as a trust anchor (a partner's CA).
    Add {
        file: PathBuf,
        /// A mail domain the anchor may vouch for (repeat for several; `.example.org`
        /// for every subdomain). Default: any domain except the managed ones.
        #[arg(long = "domain")]
        domains: Vec<String>,
    },
    /// Remove a trust anchor by its SHA-256 fingerprint (as `trust list` shows it).
    Remove { fingerprint: String },
    /// List the trust anchors and the domains each vouches for.
    List,
}

#[derive(Subcommand, Debug)]
pub enum SmimeCommand {
    /// Sign as multipart/signed with the mailbox's key in the token.
    Sign {
        /// The signing mailbox (must be active).
        #[arg(long)]
        from: String,
        /// application/pkcs7-mime signed-data instead of multipart/signed.
        #[arg(long)]
        opaque: bool,
        /// The message; stdin when absent.
        file: Option<PathBuf>,
    },
    /// Encrypt to recipient certificates (RSA): AES-256-CBC unless --cipher says otherwise.
    Encrypt {
        /// Recipient certificate(s), PEM.
        #[arg(long = "to", required = true)]
        to: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "aes256-cbc")]
        cipher: CipherArg,
        /// RSA-OAEP instead of PKCS#1 v1.5 key transport.
        #[arg(long)]
        oaep: bool,
        /// The message; stdin when absent.
        file: Option<PathBuf>,
    },
    /// Sign with the mailbox's token key, then encrypt to the recipients (and to the
    /// sender's own certificate, so the sent copy stays readable).
    SignEncrypt {
        #[arg(long)]
        from: String,
        #[arg(long = "to", required = true)]
        to: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "aes256-cbc")]
        cipher: CipherArg,
        #[arg(long)]
        oaep: bool,
        file: Option<PathBuf>,
    },
    /// Verify a signed message (detached or opaque) against the built-in CA and the
    /// trust anchors; the signed content on stdout, the verdict on stderr; exit 1
    /// unless the verdict is "valid".
    Verify {
        /// Check the signer certificate against this address (default: the From header).
        #[arg(long)]
        from: Option<String>,
        /// The verdict as JSON on stderr.
        #[arg(long)]
        json: bool,
        /// CRL(s) to check the signer against, DER or PEM (verdict "revoked").
        #[arg(long = "crl")]
        crls: Vec<PathBuf>,
        /// The message; stdin when absent.
        file: Option<PathBuf>,
    },
    /// Measure the engine on a throwaway key (used by scripts/bench-smime).
    Bench(smime_bench::SmimeBenchArgs),
    /// Decrypt an application/pkcs7-mime message with any key the token holds;
    /// prints the message with the decrypted entity in place of the encrypted one.
    /// Exit 1 on failure, whose class says whose it is: structure (the message),
    /// integrity (wrong key or tampered), gateway (token or database; try again).
    Decrypt {
        /// The outcome as JSON on stderr: result, class, content_algorithm,
        /// key_transport, key, weak, detail.
        #[arg(long)]
        json: bool,
        /// The message; stdin when absent.
        file: Option<PathBuf>,
    },
}

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

#[derive(Subcommand, Debug)]
pub enum DomainCommand {
    /// Add a managed domain with its inbound route.
    Add {
        domain: String,
        /// Internal mail server for this domain.
        #[arg(long, value_name = "HOST:PORT")]
        next_hop: Option<String>,
        /// Accept any local part (such addresses cannot be activated for S/MIME).
        #[arg(long)]
        wildcard: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a domain that has no mailboxes left.
    Remove { domain: String },
}

#[derive(Subcommand, Debug)]
pub enum MailboxCommand {
    /// Add a known mailbox of a managed domain.
    Add { address: String },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an inactive mailbox (its keys stay in the token for old mail).
    Remove { address: String },
    /// Generate the mailbox key in the token and issue its certificate.
    Activate {
        address: String,
        /// Key type; default from [ca].mailbox_key.
        #[arg(long, value_enum)]
        key: Option<KeyAlgorithm>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// The mailbox's certificate chain and its details.
    Show {
        address: String,
        /// Print the chain as PEM (leaf first) instead of details.
        #[arg(long)]
        pem: bool,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Override [http].listen.
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<String>,
    /// Override [smtp].inbound_listen (mail from the internet).
    #[arg(long, value_name = "ADDR:PORT")]
    pub inbound: Option<String>,
    /// Override [smtp].submission_listen (mail from the internal servers).
    #[arg(long, value_name = "ADDR:PORT")]
    pub submission: Option<String>,
}

#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Where to listen.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:2526")]
    pub listen: String,
    /// Maildir to write messages to (created if missing).
    #[arg(long)]
    pub maildir: PathBuf,
    /// Accept and drop messages instead of writing them (for benchmarks).
    #[arg(long)]
    pub discard: bool,
    /// Refuse this recipient at RCPT with 550 5.1.1, as a mail server that does not
    /// know the mailbox (repeat for several).
    #[arg(long = "unknown-recipient", value_name = "ADDRESS")]
    pub unknown_recipients: Vec<String>,
    /// PEM certificate chain to offer STARTTLS with (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for STARTTLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Runs a command whose settings are already loaded (and whose SoftHSM2 configuration,
/// if any, is already exported).
pub async fn run(
    command: Command,
    settings: Settings,
    mut init_changes: Vec<String>,
) -> Result<()> {
    match command {
        Command::Init => {
            crate::setup::initialise(&settings, &mut init_changes).await?;
            if init_changes.is_empty() {
                println!(
                    "nothing to do: {} is already initialised",
                    settings.data_dir.display()
                );
            } else {
                for change in &init_changes {
                    println!("created {change}");
                }
            }
            Ok(())
        }
        Command::Token(cmd) => token::run(cmd, settings).await,
        Command::Domain(cmd) => domain(cmd, &settings).await,
        Command::Mailbox(cmd) => mailbox(cmd, settings).await,
        Command::Cert(CertCommand::Show { address, pem }) => {
            let store = app::open_store(&settings).await?;
            certs::show(&store, &Address::parse(&address)?, pem).await
        }
        Command::Serve(args) => serve::serve(settings, args).await,
        Command::Sink(args) => serve::sink(args).await,
        Command::SmtpLoad(args) => load::run(args).await,
        Command::Smime(cmd) => smime(cmd, settings).await,
        Command::Trust(cmd) => trust(cmd, &settings).await,
        Command::Rule(cmd) => rules::run(cmd, &settings).await,
        Command::Log(args) => relay::log(args, &settings).await,
        Command::Smarthost(cmd) => relay::smarthost(cmd, &settings).await,
        Command::Network(cmd) => relay::network(cmd, &settings).await,
        Command::Submitter(cmd) => submitters::run(cmd, &settings).await,
    }
}

async fn domain(cmd: DomainCommand, settings: &Settings) -> Result<()> {
    let store = app::open_store(settings).await?;
    let actor = Actor::cli();
    match cmd {
        DomainCommand::Add {
            domain,
            next_hop,
            wildcard,
        } => {
            let domain = Domain::parse(&domain)?;
            if let Some(hop) = &next_hop {
                validate_host_port(hop)?;
            }
            let row = store
                .domains()
                .add(&domain, next_hop.as_deref(), wildcard)
                .await?;
            audit(
                &store,
                &actor,
                "domain.add",
                domain.as_str(),
                &format!("next_hop={next_hop:?} wildcard={wildcard}"),
            )
            .await?;
            println!(
                "added domain {} (next hop {}, {})",
                row.name,
                row.next_hop.as_deref().unwrap_or("none"),
                if row.wildcard {
                    "wildcard"
                } else {
                    "known mailboxes only"
                }
            );
        }
        DomainCommand::List { json } => {
            let rows = store.domains().list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<40} {:<28} ROUTE", "DOMAIN", "NEXT HOP");
                for d in rows {
                    println!(
                        "{:<40} {:<28} {}",
                        d.name,
                        d.next_hop.as_deref().unwrap_or("-"),
                        if d.wildcard {
                            "wildcard"
                        } else {
                            "known mailboxes"
                        }
                    );
                }
            }
        }
        DomainCommand::Remove { domain } => {
            let domain = Domain::parse(&domain)?;
            store.domains().remove(&domain).await?;
            audit(&store, &actor, "domain.remove", domain.as_str(), "").await?;
            println!("removed domain {domain}");
        }
    }
    Ok(())
}

async fn mailbox(cmd: MailboxCommand, settings: Settings) -> Result<()> {
    let actor = Actor::cli();
    match cmd {
        MailboxCommand::Add { address } => {
            let store = app::open_store(&settings).await?;
            let address = Address::parse(&address)?;
            let domain = store
                .domains()
                .get(&Domain::parse(address.domain())?)
                .await?;
            let row = store.mailboxes().add(&address).await?;
            audit(&store, &actor, "mailbox.add", address.as_str(), "").await?;
            println!("added mailbox {} ({})", row.address, row.state.as_str());
            if domain.is_some_and(|d| d.wildcard) {
                println!(
                    "note: {} is wildcard-routed; listed mailboxes can be activated",
                    address.domain()
                );
            }
        }
        MailboxCommand::List { json } => {
            let store = app::open_store(&settings).await?;
            let rows = store.mailboxes().list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!("{:<48} STATE", "MAILBOX");
                for m in &rows {
                    println!("{:<48} {}", m.address, m.state.as_str());
                }
                let seats = store.mailboxes().seats_in_use().await?;
                println!("{} mailbox(es), {seats} holding a seat", rows.len());
            }
        }
        MailboxCommand::Remove { address } => {
            let store = app::open_store(&settings).await?;
            let address = Address::parse(&address)?;
            store.mailboxes().remove(&address).await?;
            audit(&store, &actor, "mailbox.remove", address.as_str(), "").await?;
            println!("removed mailbox {address}");
        }
        MailboxCommand::Activate { address, key } => {
            let address = Address::parse(&address)?;
            let app = App::open(settings).await?;
            let cert = app.activate_mailbox(&address, key, &actor).await?;
            println!(
                "activated {address}: certificate serial {} valid until {}, key in token '{}'",
                cert.record.serial,
                certs::format_time(cert.record.not_after),
                app.hsm.token_label()
            );
        }
    }
    Ok(())
}

async fn trust(cmd: TrustCommand, settings: &Settings) -> Result<()> {
    use crate::ops::trust;
    let store = app::open_store(settings).await?;
    match cmd {
        TrustCommand::Add { file, domains } => {
            let pem =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let added = trust::add(&store, &Actor::cli(), trust::AddTrust { pem, domains })
                .await
                .with_context(|| format!("trust add {}", file.display()))?;
            for row in added {
                println!(
                    "trusted {} (sha-256 {}) for {}",
                    row.certificate.record.subject,
                    row.certificate.record.fingerprint_sha256,
                    trust::describe(&row.domains)
                );
            }
        }
        TrustCommand::Remove { fingerprint } => {
            let row = trust::remove(&store, &Actor::cli(), &fingerprint).await?;
            println!(
                "removed trust anchor {} (sha-256 {})",
                row.certificate.record.subject, row.certificate.record.fingerprint_sha256
            );
        }
        TrustCommand::List => {
            for row in trust::list(&store).await? {
                println!(
                    "{}  {}  until {}  vouches for {}",
                    row.certificate.record.fingerprint_sha256,
                    row.certificate.record.subject,
                    certs::format_time(row.certificate.record.not_after),
                    trust::describe(&row.domains)
                );
            }
        }
    }
    Ok(())
}

async fn smime(cmd: SmimeCommand, settings: Settings) -> Result<()> {
    let limits = settings.config.limits.mime();
    match cmd {
        SmimeCommand::Sign { from, opaque, file } => {
            let address = Address::parse(&from)?;
            let message = read_input(file.as_deref())?;
            let app = App::open(settings).await?;
            let signer = app.signer_for(&address).await?;
            let serial = hex::encode(
                signer
                    .certificate
                    .tbs_certificate()
                    .serial_number()
                    .as_bytes(),
            );
            let signed = app
                .hsm
                .call("sign message", move |hsm| {
                    (if opaque {
                        crate::smime::sign_opaque
                    } else {
                        crate::smime::sign_detached
                    })(hsm, &signer, &message, &limits)
                    .map_err(|e| match e {
                        crate::smime::SmimeError::Token(t) => t,
                        other => crate::hsm::HsmError::Encoding(other.to_string()),
                    })
                })
                .await?;
            use std::io::Write;
            std::io::stdout().write_all(&signed)?;
            eprintln!("signed by {address} (certificate serial {serial})");
            Ok(())
        }
        SmimeCommand::Bench(args) => smime_bench::run(App::open(settings).await?, args).await,
        SmimeCommand::Encrypt {
            to,
            cipher,
            oaep,
            file,
        } => {
            use crate::smime::encrypt::encrypt_message;
            let message = read_input(file.as_deref())?;
            let recipients = load_recipients(&to, oaep, &[])?;
            let out = encrypt_message(
                &message,
                &recipients,
                cipher.into(),
                &crate::mime::Limits::default(),
            )?;
            use std::io::Write;
            std::io::stdout().write_all(&out)?;
            eprintln!("encrypted to {} recipient(s)", recipients.len());
            Ok(())
        }
        SmimeCommand::SignEncrypt {
            from,
            to,
            cipher,
            oaep,
            file,
        } => {
            use crate::smime::encrypt::encrypt_message_owned;
            let address = Address::parse(&from)?;
            let message = read_input(file.as_deref())?;
            let app = App::open(settings).await?;
            let signer = app.signer_for(&address).await?;
            let own = signer.certificate.clone();
            let signed = app
                .hsm
                .call("sign message", move |hsm| {
                    crate::smime::sign_detached(hsm, &signer, &message, &limits).map_err(
                        |e| match e {
                            crate::smime::SmimeError::Token(t) => t,
                            other => crate::hsm::HsmError::Encoding(other.to_string()),
                        },
                    )
                })
                .await?;
            let recipients = load_recipients(&to, oaep, &[own])?;
            let out = encrypt_message_owned(signed, &recipients, cipher.into(), &limits)?;
            use std::io::Write;
            std::io::stdout().write_all(&out)?;
            eprintln!(
                "signed by {address}, encrypted to {} recipient(s)",
                recipients.len()
            );
            Ok(())
        }
        SmimeCommand::Verify {
            from,
            json,
            crls,
            file,
        } => {
            use crate::smime::verify::{self, FromField, Verdict, VerifyContext};
            let message = read_input(file.as_deref())?;
            let store = app::open_store(&settings).await?;
            let trust = app::trust_anchors(&store).await?;
            let from = match from {
                Some(f) => FromField::given(&f),
                None => FromField::of_message(&message),
            };
            let crls = crls
                .iter()
                .map(|path| {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    if bytes.starts_with(b"-----BEGIN") {
                        let (_, der) = der::pem::decode_vec(&bytes).map_err(|e| {
                            anyhow::anyhow!("{}: not a PEM CRL ({e})", path.display())
                        })?;
                        Ok(der)
                    } else {
                        Ok(bytes)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let result = verify::verify(
                &message,
                &from,
                &VerifyContext {
                    trust: &trust,
                    crls: &crls,
                    now: std::time::SystemTime::now(),
                    limits: &limits,
                },
            );
            if let Some(content) = &result.content {
                use std::io::Write;
                std::io::stdout().write_all(content)?;
            }
            let signer = result
                .signer()
                .and_then(|s| s.certificate.as_ref())
                .map(|c| c.tbs_certificate().subject().to_string())
                .unwrap_or_default();
            if json {
                let signers: Vec<serde_json::Value> = result
                    .signers
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "verdict": s.verdict,
                            "detail": s.detail,
                            "addresses": s.addresses,
                            "subject": s.certificate.as_ref().map(|c| c.tbs_certificate().subject().to_string()),
                        })
                    })
                    .collect();
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "verdict": result.verdict,
                        "detail": result.detail,
                        "signer": signer,
                        "from": from.address(),
                        "signers": signers,
                    })
                );
            } else {
                eprintln!("signature={}; {}", result.verdict.as_str(), result.detail);
                if result.signers.len() > 1 {
                    for s in &result.signers {
                        eprintln!(
                            "  signer {}: {}; {}",
                            s.name(),
                            s.verdict.as_str(),
                            s.detail
                        );
                    }
                }
            }
            if result.verdict != Verdict::Valid {
                anyhow::bail!("signature is {}", result.verdict.as_str());
            }
            Ok(())
        }
        SmimeCommand::Decrypt { json, file } => {
            let message = read_input(file.as_deref())?;
            let outcome = match decrypt_prepare(&message, &limits) {
                Ok((der, outer)) => {
                    drop(message);
                    decrypt_in_token(settings, der, limits)
                        .await
                        .map(|done| (done, outer))
                }
                Err(failure) => Err(failure),
            };
            decrypt_report(outcome, json)
        }
    }
}

/// Why `smime decrypt` failed: the class (see `smime::decrypt::FailureClass`) and
/// the error's text.
struct DecryptFailure {
    class: crate::smime::decrypt::FailureClass,
    detail: String,
}

impl From<crate::smime::decrypt::DecryptError> for DecryptFailure {
    fn from(e: crate::smime::decrypt::DecryptError) -> Self {
        DecryptFailure {
            class: e.class(),
            detail: e.to_string(),
        }
    }
}

impl DecryptFailure {
    /// The gateway's own failure: configuration, database, token.
    fn gateway(e: impl std::fmt::Display) -> Self {
        DecryptFailure {
            class: crate::smime::decrypt::FailureClass::Gateway,
            detail: e.to_string(),
        }
    }
}

/// The CMS and the outer header fields of `message`: what needs no key.
fn decrypt_prepare(
    message: &[u8],
    limits: &crate::mime::Limits,
) -> std::result::Result<(Vec<u8>, Vec<crate::mime::Header>), DecryptFailure> {
    use crate::smime::decrypt::{self, DecryptError};
    let der = decrypt::cms_from_message(message, limits)?;
    let (outer, _) = crate::mime::split_raw_headers(message).map_err(DecryptError::from)?;
    Ok((der, outer))
}

async fn decrypt_in_token(
    settings: Settings,
    der: Vec<u8>,
    limits: crate::mime::Limits,
) -> std::result::Result<crate::smime::decrypt::Decrypted, DecryptFailure> {
    use crate::smime::decrypt::{self, DecryptError};
    let recipients = decrypt::recipients(&der)?;
    let app = App::open(settings).await.map_err(DecryptFailure::gateway)?;
    let held = app
        .key_directory()
        .await
        .map_err(DecryptFailure::gateway)?
        .resolve(&recipients);
    let done = app
        .hsm
        .call("decrypt message", move |hsm| {
            Ok(decrypt::decrypt_within(hsm, &der, &held, &limits))
        })
        .await
        .map_err(DecryptError::Token)??;
    Ok(done)
}

/// The decrypted message on stdout, the outcome on stderr (one line, or JSON).
fn decrypt_report(
    outcome: std::result::Result<
        (crate::smime::decrypt::Decrypted, Vec<crate::mime::Header>),
        DecryptFailure,
    >,
    json: bool,
) -> Result<()> {
    use std::io::Write;
    let (done, outer) = match outcome {
        Ok(done) => done,
        Err(failure) => {
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({
                        "result": "failed",
                        "class": failure.class.as_str(),
                        "content_algorithm": null,
                        "key_transport": null,
                        "key": null,
                        "weak": null,
                        "detail": failure.detail,
                    })
                );
            }
            anyhow::bail!("{} ({} failure)", failure.detail, failure.class.as_str());
        }
    };
    // Outer headers stay; the entity's own Content-* headers replace ours.
    let mut stdout = std::io::stdout().lock();
    for h in outer.iter().filter(|h| !h.is_content_header()) {
        stdout.write_all(&h.raw)?;
    }
    stdout.write_all(b"MIME-Version: 1.0\r\n")?;
    stdout.write_all(&done.entity)?;
    stdout.flush()?;
    let detail = format!(
        "decrypted: {} with {}, key {}{}",
        done.content_algorithm,
        done.key_transport,
        done.key,
        if done.weak { " (weak cipher)" } else { "" }
    );
    if json {
        eprintln!(
            "{}",
            serde_json::json!({
                "result": "decrypted",
                "class": null,
                "content_algorithm": done.content_algorithm,
                "key_transport": done.key_transport,
                "key": done.key.to_hex(),
                "weak": done.weak,
                "detail": detail,
            })
        );
    } else {
        eprintln!("{detail}");
    }
    Ok(())
}

/// Recipient certificates from PEM files, plus `extra` ones.
fn load_recipients(
    files: &[PathBuf],
    oaep: bool,
    extra: &[x509_cert::Certificate],
) -> Result<Vec<crate::smime::encrypt::Recipient>> {
    use crate::smime::encrypt::{KeyTransportChoice, Recipient};
    let transport = if oaep {
        KeyTransportChoice::RsaOaep
    } else {
        KeyTransportChoice::RsaPkcs1v15
    };
    let mut certs = extra.to_vec();
    for file in files {
        let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let chain = x509_cert::Certificate::load_pem_chain(&pem)
            .with_context(|| format!("{} holds no PEM certificate", file.display()))?;
        certs.extend(chain.into_iter().take(1));
    }
    Ok(certs
        .into_iter()
        .map(|certificate| Recipient {
            certificate,
            transport,
        })
        .collect())
}

/// A message from a file, or from stdin.
fn read_input(file: Option<&std::path::Path>) -> Result<Vec<u8>> {
    use std::io::Read;
    match file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        }
        None => {
            // A file redirected to stdin says its size: read it without regrowing.
            let size_hint = std::fs::metadata("/dev/stdin")
                .ok()
                .filter(|m| m.is_file())
                .map_or(0, |m| m.len() as usize);
            let mut buf = Vec::with_capacity(size_hint.saturating_add(1));
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            Ok(buf)
        }
    }
}

async fn audit(
    store: &Store,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<()> {
    store
        .audit()
        .append(&actor.name, &actor.origin, action, target, detail)
        .await?;
    Ok(())
}

fn validate_host_port(value: &str) -> Result<()> {
    let (host, port) = value
        .rsplit_once(':')
        .with_context(|| format!("next hop '{value}' must be HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .with_context(|| format!("next hop '{value}' has an invalid port"))?;
    let _ = port;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_err() {
        Domain::parse(host).with_context(|| format!("next hop '{value}' has an invalid host"))?;
    }
    Ok(())
}
