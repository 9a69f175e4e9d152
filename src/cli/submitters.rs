//! `smimegate submitter`: SMTP AUTH accounts of the submission listener. Parses, reads
//! the password (prompt without echo, stdin, or a private file), calls
//! `ops::submitters`, prints.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::app;
use crate::config::Settings;
use crate::ops::submitters::{self, AddSubmitter, SubmitterView};
use crate::ops::{Actor, Ops};

#[derive(Subcommand, Debug)]
pub enum SubmitterCommand {
    /// Add an account that may authenticate (SMTP AUTH PLAIN/LOGIN after STARTTLS) on
    /// the submission listener. The password is prompted for (no echo), read as one
    /// line from stdin when stdin is not a terminal, or read from --password-file.
    Add {
        /// The SASL user name (letters, digits, . _ @ + -; case-insensitive).
        name: String,
        /// An address the submitter may send as (repeatable). None: it may relay, but
        /// vouches for no address.
        #[arg(long = "may-send-as", value_name = "ADDRESS", num_args = 1..)]
        may_send_as: Vec<String>,
        #[arg(long, default_value = "")]
        comment: String,
        /// A file holding the password (mode 0600 or stricter; one line).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Remove a submitter: it cannot authenticate any more.
    Remove { name: String },
    /// List the submitters (never their passwords or hashes).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (prompted, from stdin, or from --password-file).
    Passwd {
        name: String,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// Stop a submitter from authenticating, keeping its account.
    Disable { name: String },
    /// Let a disabled submitter authenticate again.
    Enable { name: String },
}

pub async fn run(cmd: SubmitterCommand, settings: &Settings) -> Result<()> {
    let actor = Actor::cli();
    match cmd {
        SubmitterCommand::Add {
            name,
            may_send_as,
            comment,
            password_file,
        } => {
            // Refuse a wrong name before asking for a password.
            let name = submitters::normalise_name(&name)?;
            let password = super::secrets::read_password(
                password_file.as_deref(),
                &format!("Password for submitter {name}: "),
                true,
            )?;
            let store = app::open_store(settings).await?;
            let added = submitters::add(
                &Ops::new(settings, &store),
                &actor,
                AddSubmitter {
                    name,
                    password,
                    may_send_as,
                    comment,
                },
            )
            .await?;
            outln!(
                "added submitter {} (may send as {})",
                added.name,
                submitters::describe(&added.may_send_as)
            );
        }
        SubmitterCommand::Remove { name } => {
            let store = app::open_store(settings).await?;
            let removed = submitters::remove(&Ops::new(settings, &store), &actor, &name).await?;
            outln!("removed submitter {}", removed.name);
        }
        SubmitterCommand::List { json } => {
            let store = app::open_store(settings).await?;
            let rows = submitters::list(&Ops::new(settings, &store)).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
        }
        SubmitterCommand::Passwd {
            name,
            password_file,
        } => {
            let name = submitters::normalise_name(&name)?;
            let password = super::secrets::read_password(
                password_file.as_deref(),
                &format!("Password for submitter {name}: "),
                true,
            )?;
            let store = app::open_store(settings).await?;
            let row =
                submitters::set_password(&Ops::new(settings, &store), &actor, &name, password)
                    .await?;
            outln!("changed the password of submitter {}", row.name);
        }
        SubmitterCommand::Disable { name } => {
            let store = app::open_store(settings).await?;
            let row =
                submitters::set_disabled(&Ops::new(settings, &store), &actor, &name, true).await?;
            outln!("disabled submitter {}", row.name);
        }
        SubmitterCommand::Enable { name } => {
            let store = app::open_store(settings).await?;
            let row =
                submitters::set_disabled(&Ops::new(settings, &store), &actor, &name, false).await?;
            outln!("enabled submitter {}", row.name);
        }
    }
    Ok(())
}

fn print_table(rows: &[SubmitterView]) {
    outln!(
        "{:<32} {:<9} {:<21} {:<40} COMMENT",
        "NAME",
        "STATE",
        "PASSWORD SET (UTC)",
        "MAY SEND AS"
    );
    for s in rows {
        outln!(
            "{:<32} {:<9} {:<21} {:<40} {}",
            s.name,
            if s.disabled { "disabled" } else { "enabled" },
            super::certs::format_time(s.password_changed_at),
            submitters::describe(&s.may_send_as),
            s.comment
        );
    }
    outln!("{} submitter(s)", rows.len());
}
