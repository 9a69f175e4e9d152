//! `smimegate admin`: local console accounts (break-glass, beside single sign-on) and
//! API tokens. Parses, reads the password (prompt without echo, stdin, or a private
//! file), calls `ops::console`, prints.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::app;
use crate::config::Settings;
use crate::ops::console::{self, AccountView, AddAccount, AddedAccount, CreateToken};
use crate::ops::{Actor, Ops, Role};

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Add a local console account. The password is prompted for (no echo), read as one
    /// line from stdin when stdin is not a terminal, or read from --password-file.
    Add {
        /// Account name (letters, digits, . _ @ + -; case-insensitive).
        name: String,
        /// viewer, editor or admin.
        #[arg(long)]
        role: Role,
        /// A file holding the password (mode 0600 or stricter; one line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Also require a TOTP code at login; the secret is printed once.
        #[arg(long)]
        totp: bool,
    },
    /// Remove an account: its sessions end and its API tokens are revoked.
    Remove { name: String },
    /// List the accounts (never their passwords or secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (prompted, from stdin, or from --password-file); ends the
    /// account's sessions and clears a lockout.
    Passwd {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Change an account's role; ends its sessions.
    Role { name: String, role: Role },
    /// Turn TOTP on (a new secret is printed once) or off.
    Totp {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Stop an account from logging in, keeping it.
    Disable { name: String },
    /// Let a disabled account log in again.
    Enable { name: String },
    /// End a lockout after failed logins.
    Unlock { name: String },
    /// API tokens for automation.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Serve the console with your own certificate (P-256): its key is imported into
    /// the token (non-extractable), the chain written to console-tls.pem. Then set
    /// [console] tls_certificate = "console-tls.pem" and tls_key = "token".
    TlsImport {
        /// PEM certificate chain, leaf first.
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// PEM private key of the leaf (PKCS#8 or EC, unencrypted); delete it afterwards.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for an account, with at most its role; printed once.
    Create {
        account: String,
        #[arg(long)]
        role: Role,
        #[arg(long)]
        label: String,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token.
    Revoke { id: i64 },
}

fn print_account(a: &AccountView) {
    let mut flags = Vec::new();
    if a.totp {
        flags.push("totp".to_string());
    }
    if a.disabled {
        flags.push("disabled".to_string());
    }
    if let Some(until) = a.locked_until {
        flags.push(format!("locked until {}", crate::ops::rfc3339(until)));
    }
    outln!("{}\t{}\t{}", a.name, a.role, flags.join(", "));
}

fn print_added(added: &AddedAccount, what: &str) {
    outln!("{what} {} ({})", added.account.name, added.account.role);
    if let (Some(secret), Some(uri)) = (&added.totp_secret, &added.totp_uri) {
        outln!("TOTP secret (shown once; enter it in an authenticator app): {secret}");
        outln!("{uri}");
    }
}

pub async fn run(cmd: AdminCommand, settings: &Settings) -> Result<()> {
    let actor = Actor::cli();
    let store = app::open_store(settings).await?;
    let ops = Ops::new(settings, &store);
    match cmd {
        AdminCommand::Add {
            name,
            role,
            password_file,
            totp,
        } => {
            // Refuse a wrong name before asking for a password.
            let name = console::normalise_name(&name)?;
            let password = super::secrets::read_password(
                password_file.as_deref(),
                &format!("Password for console account {name}: "),
                true,
            )?;
            let added = console::add_account(
                &ops,
                &actor,
                AddAccount {
                    name,
                    role,
                    password,
                    totp,
                },
            )
            .await?;
            print_added(&added, "added");
        }
        AdminCommand::Remove { name } => {
            let removed = console::remove_account(&ops, &actor, &name).await?;
            outln!(
                "removed {} (sessions ended, API tokens revoked)",
                removed.name
            );
        }
        AdminCommand::List { json } => {
            let accounts = console::list_accounts(&ops).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&accounts)?);
            } else {
                accounts.iter().for_each(print_account);
            }
        }
        AdminCommand::Passwd {
            name,
            password_file,
        } => {
            let name = console::normalise_name(&name)?;
            let password = super::secrets::read_password(
                password_file.as_deref(),
                &format!("New password for console account {name}: "),
                true,
            )?;
            let account = console::set_password(&ops, &actor, &name, &password).await?;
            outln!("password of {} changed; its sessions ended", account.name);
        }
        AdminCommand::Role { name, role } => {
            let account = console::set_role(&ops, &actor, &name, role).await?;
            outln!(
                "{} is {} now; its sessions ended",
                account.name,
                account.role
            );
        }
        AdminCommand::Totp { name, state } => {
            let added = console::set_totp(&ops, &actor, &name, state == "on").await?;
            print_added(&added, &format!("TOTP {state} for"));
        }
        AdminCommand::Disable { name } => {
            let account = console::set_disabled(&ops, &actor, &name, true).await?;
            outln!("disabled {}", account.name);
        }
        AdminCommand::Enable { name } => {
            let account = console::set_disabled(&ops, &actor, &name, false).await?;
            outln!("enabled {}", account.name);
        }
        AdminCommand::Unlock { name } => {
            let account = console::unlock(&ops, &actor, &name).await?;
            outln!("unlocked {}", account.name);
        }
        AdminCommand::Token(TokenCommand::Create {
            account,
            role,
            label,
        }) => {
            let created = console::create_token(
                &ops,
                &actor,
                CreateToken {
                    account,
                    label,
                    role,
                },
            )
            .await?;
            outln!(
                "token {} for {} ({}); shown once:",
                created.view.id,
                created.view.account,
                created.view.role
            );
            outln!("{}", created.token);
        }
        AdminCommand::Token(TokenCommand::List { json }) => {
            let tokens = console::list_tokens(&ops).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                for t in tokens {
                    let state = match t.revoked_at {
                        Some(at) => format!("revoked {}", crate::ops::rfc3339(at)),
                        None => "live".into(),
                    };
                    outln!("{}\t{}\t{}\t{}\t{state}", t.id, t.account, t.role, t.label);
                }
            }
        }
        AdminCommand::TlsImport { certificate, key } => {
            tls_import(settings, &actor, &certificate, &key).await?;
        }
        AdminCommand::Token(TokenCommand::Revoke { id }) => {
            let token = console::revoke_token(&ops, &actor, id).await?;
            outln!("revoked token {} of {}", token.id, token.account);
        }
    }
    Ok(())
}

async fn tls_import(
    settings: &Settings,
    actor: &Actor,
    certificate: &std::path::Path,
    key: &std::path::Path,
) -> Result<()> {
    use anyhow::Context;
    let chain = std::fs::read(certificate)
        .with_context(|| format!("cannot read {}", certificate.display()))?;
    let key = zeroize::Zeroizing::new(
        std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
    );
    let app = crate::app::App::open(settings.clone()).await?;
    let imported = crate::ops::console_tls::import(&app, actor, &chain, key).await?;
    outln!(
        "imported the key of {} into the token (key {}); chain written to {}",
        imported.subject,
        imported.key_id,
        imported.certificate_file
    );
    outln!("serve it: set in smimegate.toml");
    outln!("  [console]");
    outln!(
        "  tls_certificate = \"{}\"",
        crate::ops::console_tls::CHAIN_FILE
    );
    outln!("  tls_key = \"token\"");
    outln!("and restart; the key file can be deleted now.");
    Ok(())
}
