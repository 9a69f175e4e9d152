//! Command-line interface: the clap tree and the dispatch to one module per resource.
//! A command parses its arguments, calls the operation in `ops` (or the engine, for
//! `smime`, `token`, `serve`), and prints: human text, or JSON with `--json`. No
//! validation or auditing here: that is the operation's, so the console does the same.

#[macro_use]
pub mod output;

mod admins;
mod backup;
mod bench;
mod certs;
mod domains;
mod identities;
mod licence;
mod lifecycle;
mod load;
mod mailboxes;
mod relay;
mod rules;
mod secrets;
pub mod serve;
mod smime;
mod smime_bench;
mod submitters;
mod token;
mod trust;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::Settings;

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
    /// Configuration file, when it does not live in the data directory (the Debian
    /// package: /etc/smimegate/smimegate.toml). Relative paths in it still resolve
    /// against the data directory. Default: DATA_DIR/smimegate.toml.
    #[arg(long, global = true, env = "SMIMEGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the data directory, configuration, token, database and built-in CA (idempotent).
    Init,
    /// Apply pending database migrations and list them (`serve` applies them at start
    /// too); exits 0 when the schema is up to date.
    Migrate,
    /// Token health, key custody proofs and benchmarks.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Managed domains and their inbound routes.
    #[command(subcommand)]
    Domain(domains::DomainCommand),
    /// Managed mailboxes and their S/MIME activation.
    #[command(subcommand)]
    Mailbox(mailboxes::MailboxCommand),
    /// The seat licence.
    #[command(subcommand)]
    Licence(licence::LicenceCommand),
    /// The certificate lifecycle job (renewal, end of deactivation, CRL).
    #[command(subcommand)]
    Lifecycle(lifecycle::LifecycleCommand),
    /// Public certificates (never private keys).
    #[command(subcommand)]
    Cert(certs::CertCommand),
    /// Run the gateway: the SMTP listeners (inbound, submission) and the HTTP endpoint.
    Serve(serve::ServeArgs),
    /// A small SMTP sink that writes what it receives to a Maildir (a next hop for
    /// trying the gateway out).
    Sink(serve::SinkArgs),
    /// SMTP load generator: concurrent sessions sending one message for a while.
    SmtpLoad(load::LoadArgs),
    /// Trust anchors for verifying partners' signatures.
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Use the S/MIME engine without SMTP: a message on stdin or in a file, the result
    /// on stdout, one verdict line on stderr.
    #[command(subcommand)]
    Smime(smime::SmimeCommand),
    /// Policy rules: what is signed, encrypted, decrypted; `rule explain` says why.
    #[command(subcommand)]
    Rule(rules::RuleCommand),
    /// The message log: one line per SMTP transaction.
    Log(relay::LogArgs),
    /// The audit log: who changed what, when, from where (newest first).
    Audit(relay::AuditArgs),
    /// Where outbound mail goes.
    #[command(subcommand)]
    Smarthost(relay::SmarthostCommand),
    /// Networks allowed to relay outbound mail through the gateway.
    #[command(subcommand)]
    Network(relay::NetworkCommand),
    /// SMTP AUTH accounts of the submission listener.
    #[command(subcommand)]
    Submitter(submitters::SubmitterCommand),
    /// Local console accounts (break-glass) and API tokens.
    #[command(subcommand)]
    Admin(admins::AdminCommand),
    /// Backup and restore of the database and the configuration (never keys or PINs).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
}

/// Runs a command whose settings are already loaded (and whose SoftHSM2 configuration,
/// if any, is already exported).
pub async fn run(command: Command, settings: Settings, init_changes: Vec<String>) -> Result<()> {
    match command {
        Command::Init => init(&settings, init_changes).await,
        Command::Migrate => migrate(&settings).await,
        Command::Token(cmd) => token::run(cmd, settings).await,
        Command::Domain(cmd) => domains::run(cmd, &settings).await,
        Command::Mailbox(cmd) => mailboxes::run(cmd, settings).await,
        Command::Licence(cmd) => licence::run(cmd, &settings).await,
        Command::Lifecycle(cmd) => lifecycle::run(cmd, settings).await,
        Command::Cert(cmd) => certs::run(cmd, &settings).await,
        Command::Serve(args) => serve::serve(settings, args).await,
        Command::Sink(args) => serve::sink(args).await,
        Command::SmtpLoad(args) => load::run(args).await,
        Command::Smime(cmd) => smime::run(cmd, settings).await,
        Command::Trust(cmd) => trust::run(cmd, &settings).await,
        Command::Rule(cmd) => rules::run(cmd, &settings).await,
        Command::Log(args) => relay::log(args, &settings).await,
        Command::Audit(args) => relay::audit(args, &settings).await,
        Command::Smarthost(cmd) => relay::smarthost(cmd, &settings).await,
        Command::Network(cmd) => relay::network(cmd, &settings).await,
        Command::Submitter(cmd) => submitters::run(cmd, &settings).await,
        Command::Admin(cmd) => admins::run(cmd, &settings).await,
        Command::Backup(cmd) => backup::run(cmd, &settings).await,
    }
}

async fn init(settings: &Settings, mut changes: Vec<String>) -> Result<()> {
    crate::setup::initialise(settings, &mut changes).await?;
    if changes.is_empty() {
        outln!(
            "nothing to do: {} is already initialised",
            settings.data_dir.display()
        );
    }
    for change in &changes {
        outln!("created {change}");
    }
    Ok(())
}

/// `smimegate migrate`: the schema brought to this release's, each applied migration
/// printed. Needs no token.
async fn migrate(settings: &Settings) -> Result<()> {
    let url = settings.database_url();
    let store =
        crate::store::Store::connect_unmigrated(&url, &crate::app::connect_options(settings))
            .await?;
    let applied = store.apply_migrations().await?;
    for m in &applied {
        outln!("applied migration {:04} {}", m.version, m.description);
    }
    let latest = store.latest_migration().unwrap_or(0);
    if applied.is_empty() {
        outln!("database schema is up to date (migration {latest:04})");
    } else {
        outln!("database schema migrated to {latest:04}");
    }
    tracing::info!(applied = applied.len(), latest, "database migrated");
    store.close().await;
    Ok(())
}

/// A failure as the one line `smimegate: error: …` prints: the error and each cause
/// that does not repeat what is already said.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

/// Keeps exit status 1 for a failure of a command that existed before the operation
/// layer (domain, mailbox, rule, smarthost, network): they have always exited 1 on
/// every failure (docs/operations.md, "Error messages"; tests/cli.rs relies on it).
/// The text stays; the [`OpError`](crate::ops::OpError) type, which `main` turns into
/// exit status 2 for what the operator can fix, is dropped. Commands added since
/// (submitter, trust, and any new one) do not use this: they exit 2 for the
/// operator's mistakes. Moving the old ones to the exit-2 rule is then removing this
/// call from their arms.
fn exit_status_1(err: anyhow::Error) -> anyhow::Error {
    anyhow::Error::msg(error_line(&err))
}
