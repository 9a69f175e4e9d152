//! `smimegate submitter`: SMTP AUTH accounts of the submission listener. Parses, reads
//! the password (prompt without echo, stdin, or a private file), calls
//! `ops::submitters`, prints.

use std::io::{IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::app;
use crate::config::Settings;
use crate::ops::password::MAX_PASSWORD_BYTES;
use crate::ops::submitters::{self, AddSubmitter, SubmitterView};
use crate::ops::{Actor, OpError, Ops};

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
            let password = read_password(password_file.as_deref(), &name)?;
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
            println!(
                "added submitter {} (may send as {})",
                added.name,
                submitters::describe(&added.may_send_as)
            );
        }
        SubmitterCommand::Remove { name } => {
            let store = app::open_store(settings).await?;
            let removed = submitters::remove(&Ops::new(settings, &store), &actor, &name).await?;
            println!("removed submitter {}", removed.name);
        }
        SubmitterCommand::List { json } => {
            let store = app::open_store(settings).await?;
            let rows = submitters::list(&Ops::new(settings, &store)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&rows);
            }
        }
        SubmitterCommand::Passwd {
            name,
            password_file,
        } => {
            let name = submitters::normalise_name(&name)?;
            let password = read_password(password_file.as_deref(), &name)?;
            let store = app::open_store(settings).await?;
            let row =
                submitters::set_password(&Ops::new(settings, &store), &actor, &name, password)
                    .await?;
            println!("changed the password of submitter {}", row.name);
        }
        SubmitterCommand::Disable { name } => {
            let store = app::open_store(settings).await?;
            let row =
                submitters::set_disabled(&Ops::new(settings, &store), &actor, &name, true).await?;
            println!("disabled submitter {}", row.name);
        }
        SubmitterCommand::Enable { name } => {
            let store = app::open_store(settings).await?;
            let row =
                submitters::set_disabled(&Ops::new(settings, &store), &actor, &name, false).await?;
            println!("enabled submitter {}", row.name);
        }
    }
    Ok(())
}

fn print_table(rows: &[SubmitterView]) {
    println!(
        "{:<32} {:<9} {:<21} {:<40} COMMENT",
        "NAME", "STATE", "PASSWORD SET (UTC)", "MAY SEND AS"
    );
    for s in rows {
        println!(
            "{:<32} {:<9} {:<21} {:<40} {}",
            s.name,
            if s.disabled { "disabled" } else { "enabled" },
            super::certs::format_time(s.password_changed_at),
            submitters::describe(&s.may_send_as),
            s.comment
        );
    }
    println!("{} submitter(s)", rows.len());
}

/// The password: from `file`, else prompted twice without echo on a terminal, else
/// one line of stdin.
fn read_password(file: Option<&Path>, name: &str) -> Result<SecretString> {
    if let Some(path) = file {
        return read_password_file(path);
    }
    if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("Password for submitter {name}: "))
                .context("cannot read the password from the terminal")?,
        );
        let again = Zeroizing::new(
            rpassword::prompt_password("Repeat the password: ")
                .context("cannot read the password from the terminal")?,
        );
        if *first != *again {
            return Err(OpError::Invalid("the passwords differ".into()).into());
        }
        return Ok(SecretString::from(first.as_str()));
    }
    let mut stdin = std::io::stdin().lock();
    let text = read_line(&mut stdin).context("cannot read the password from stdin")?;
    secret_from(&text, "stdin")
}

/// The password in `path`, refused when group or others may read or change the file.
fn read_password_file(path: &Path) -> Result<SecretString> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let mode = file
        .metadata()
        .with_context(|| format!("cannot read the password file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(OpError::Invalid(format!(
            "the password file {} may be read or changed by group or others (mode {:04o}): run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        ))
        .into());
    }
    let text = read_line(&mut file)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    secret_from(&text, &path.display().to_string())
}

/// The first line of `input` without its line end, read into a buffer that is
/// zeroised on drop; more than one password's worth of bytes is refused.
fn read_line(input: &mut impl Read) -> Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(vec![0u8; MAX_PASSWORD_BYTES + 2]);
    let mut len = 0;
    while len < buffer.len() {
        let n = input.read(&mut buffer[len..])?;
        if n == 0 || buffer[len..len + n].contains(&b'\n') {
            len += n;
            break;
        }
        len += n;
    }
    let line_end = buffer[..len]
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(len);
    if line_end > MAX_PASSWORD_BYTES + 1 || (line_end == len && len == buffer.len()) {
        return Err(OpError::Invalid(format!(
            "the password must have at most {MAX_PASSWORD_BYTES} bytes"
        ))
        .into());
    }
    let mut end = line_end;
    if end > 0 && buffer[end - 1] == b'\r' {
        end -= 1;
    }
    Ok(Zeroizing::new(buffer[..end].to_vec()))
}

fn secret_from(bytes: &[u8], source: &str) -> Result<SecretString> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| OpError::Invalid(format!("the password from {source} is not UTF-8")))?;
    if text.is_empty() {
        return Err(OpError::Invalid(format!("no password in {source}")).into());
    }
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn line(input: &[u8]) -> Result<String> {
        let bytes = read_line(&mut &input[..])?;
        Ok(String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    #[test]
    fn the_first_line_is_the_password() {
        assert_eq!(
            line(b"secret pass\r\nignored").expect("line"),
            "secret pass"
        );
        assert_eq!(line(b"no line end").expect("line"), "no line end");
        assert_eq!(line(b"").expect("line"), "");
        let longest = vec![b'a'; MAX_PASSWORD_BYTES];
        assert_eq!(line(&longest).expect("longest").len(), MAX_PASSWORD_BYTES);
        let too_long = vec![b'a'; MAX_PASSWORD_BYTES + 2];
        assert!(line(&too_long).is_err());
    }

    #[test]
    fn a_private_file_is_read_and_an_open_one_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pw");
        std::fs::write(&path, "long enough password\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_password_file(&path).expect("read").expose_secret(),
            "long enough password"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_password_file(&path).expect_err("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert!(!err.to_string().contains("long enough"), "{err}");
    }
}
