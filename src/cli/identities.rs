//! `smimegate mailbox import` and `mailbox csr`: identities from elsewhere
//! (`ops::identities`). Reads the files and the PKCS#12 password, calls, prints. No
//! private key is ever printed or written: the PKCS#12 key goes into the token.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::certs::format_time;
use crate::app::App;
use crate::config::Settings;
use crate::hsm::KeyAlgorithm;
use crate::ops::identities::{self, ImportCertificate, ImportPkcs12, Imported, RequestCertificate};
use crate::ops::{Actor, input};

/// `mailbox import ADDRESS (--pkcs12 FILE [--password-file F] | --certificate FILE)`.
pub async fn import(
    settings: Settings,
    address: String,
    pkcs12: Option<PathBuf>,
    certificate: Option<PathBuf>,
    password_file: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    // A mistyped address is refused before anything is read or opened.
    input::address(&address)?;
    let done = match (pkcs12, certificate) {
        (Some(path), None) => {
            let file = read_file(&path)?;
            let password = super::secrets::read_password(
                password_file.as_deref(),
                &format!("Password for {}: ", path.display()),
                false,
            )?;
            let app = App::open(settings).await?;
            identities::import_pkcs12(
                &app,
                &Actor::cli(),
                ImportPkcs12 {
                    address,
                    file,
                    password,
                },
            )
            .await?
        }
        (None, Some(path)) => {
            let file = read_file(&path)?;
            let app = App::open(settings).await?;
            identities::import_certificate(&app, &Actor::cli(), ImportCertificate { address, file })
                .await?
        }
        _ => anyhow::bail!("give either --pkcs12 FILE or --certificate FILE"),
    };
    print_imported(&done, json)
}

fn print_imported(done: &Imported, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(done)?);
        return Ok(());
    }
    outln!(
        "imported {} ({}): certificate serial {} from {} valid until {}, {} chain certificate(s), key in token '{}'; mailbox {}",
        done.address,
        done.key,
        done.certificate.record.serial,
        done.certificate.record.issuer,
        format_time(done.certificate.record.not_after),
        done.chain,
        done.token,
        done.state.as_str()
    );
    Ok(())
}

/// `mailbox csr ADDRESS [--key K]`: the request (PEM) on stdout, what happened on
/// stderr.
pub async fn csr(settings: Settings, address: String, key: Option<KeyAlgorithm>) -> Result<()> {
    input::address(&address)?;
    let app = App::open(settings).await?;
    let request =
        identities::request_certificate(&app, &Actor::cli(), RequestCertificate { address, key })
            .await?;
    out!("{}", request.pem);
    eprintln!(
        "new {} key {} for {} in the token; mailbox {}: import the certificate with `smimegate mailbox import {} --certificate FILE`",
        request.key,
        request.key_id,
        request.address,
        request.state.as_str(),
        request.address
    );
    Ok(())
}

/// A file an operator named, at most 1 MiB (an identity or a certificate is a few KiB).
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>> {
    const MAX: u64 = 1 << 20;
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if len > MAX {
        anyhow::bail!("{} is larger than 1 MiB", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}
