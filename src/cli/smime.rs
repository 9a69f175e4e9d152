//! `smimegate smime …`: the S/MIME engine without SMTP (sign, encrypt, sign-encrypt,
//! verify, decrypt, bench): a message on stdin or in a file, the result on stdout,
//! one verdict line on stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::smime_bench;
use crate::app::{self, App};
use crate::config::Settings;
use crate::pki::address::Address;

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
    /// trust anchors, checking revocation like the relay (CRLs of the certificates'
    /// distribution points, [revocation] settings); the signed content on stdout, the
    /// verdict on stderr; exit 1 unless the verdict is "valid" (or, under
    /// `mode = "soft-fail"`, "revocation-unknown" of an otherwise valid signer).
    Verify {
        /// Check the signer certificate against this address (default: the From header).
        #[arg(long)]
        from: Option<String>,
        /// The verdict as JSON on stderr.
        #[arg(long)]
        json: bool,
        /// CRL(s) to check the signer against besides those of its distribution
        /// points, DER or PEM (verdict "revoked"; an expired or badly signed one makes
        /// the status unknown).
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

pub async fn run(cmd: SmimeCommand, settings: Settings) -> Result<()> {
    match cmd {
        SmimeCommand::Sign { from, opaque, file } => sign(settings, &from, opaque, file).await,
        SmimeCommand::Bench(args) => smime_bench::run(App::open(settings).await?, args).await,
        SmimeCommand::Encrypt {
            to,
            cipher,
            oaep,
            file,
        } => encrypt(&to, cipher, oaep, file),
        SmimeCommand::SignEncrypt {
            from,
            to,
            cipher,
            oaep,
            file,
        } => sign_encrypt(settings, &from, &to, cipher, oaep, file).await,
        SmimeCommand::Verify {
            from,
            json,
            crls,
            file,
        } => verify(&settings, from, json, &crls, file).await,
        SmimeCommand::Decrypt { json, file } => decrypt(settings, json, file).await,
    }
}

async fn sign(settings: Settings, from: &str, opaque: bool, file: Option<PathBuf>) -> Result<()> {
    let address = Address::parse(from)?;
    let message = read_input(file.as_deref())?;
    let limits = settings.config.limits.mime();
    let app = App::open(settings).await?;
    let signer = app.signer_for(&address).await?;
    let serial = hex::encode(
        signer
            .certificate
            .tbs_certificate()
            .serial_number()
            .as_bytes(),
    );
    let signed = sign_in_token(&app, signer, message, limits, opaque).await?;
    std::io::stdout().write_all(&signed)?;
    eprintln!("signed by {address} (certificate serial {serial})");
    Ok(())
}

/// `message` signed by `signer` (detached, or opaque) in the token's worker threads.
async fn sign_in_token(
    app: &App,
    signer: crate::smime::SignerIdentity,
    message: Vec<u8>,
    limits: crate::mime::Limits,
    opaque: bool,
) -> Result<Vec<u8>> {
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
    Ok(signed)
}

fn encrypt(to: &[PathBuf], cipher: CipherArg, oaep: bool, file: Option<PathBuf>) -> Result<()> {
    use crate::smime::encrypt::encrypt_message;
    let message = read_input(file.as_deref())?;
    let recipients = load_recipients(to, oaep, &[])?;
    let out = encrypt_message(
        &message,
        &recipients,
        cipher.into(),
        &crate::mime::Limits::default(),
    )?;
    std::io::stdout().write_all(&out)?;
    eprintln!("encrypted to {} recipient(s)", recipients.len());
    Ok(())
}

async fn sign_encrypt(
    settings: Settings,
    from: &str,
    to: &[PathBuf],
    cipher: CipherArg,
    oaep: bool,
    file: Option<PathBuf>,
) -> Result<()> {
    use crate::smime::encrypt::encrypt_message_owned;
    let address = Address::parse(from)?;
    let message = read_input(file.as_deref())?;
    let limits = settings.config.limits.mime();
    let app = App::open(settings).await?;
    let signer = app.signer_for(&address).await?;
    let own = signer.certificate.clone();
    let signed = sign_in_token(&app, signer, message, limits, false).await?;
    let recipients = load_recipients(to, oaep, &[own])?;
    let out = encrypt_message_owned(signed, &recipients, cipher.into(), &limits)?;
    std::io::stdout().write_all(&out)?;
    eprintln!(
        "signed by {address}, encrypted to {} recipient(s)",
        recipients.len()
    );
    Ok(())
}

async fn verify(
    settings: &Settings,
    from: Option<String>,
    json: bool,
    crl_files: &[PathBuf],
    file: Option<PathBuf>,
) -> Result<()> {
    use crate::smime::verify::{self, FromField, Verdict, VerifyContext};
    let limits = settings.config.limits.mime();
    let message = read_input(file.as_deref())?;
    let store = app::open_store(settings).await?;
    let trust = app::trust_anchors(&store).await?;
    let from = match from {
        Some(f) => FromField::given(&f),
        None => FromField::of_message(&message),
    };
    let crls = read_crls(crl_files)?;
    let revocation = crate::pki::revocation::Revocations::new(
        store.clone(),
        (&settings.config.revocation).into(),
    );
    let mode = revocation.mode();
    let source = revocation.blocking(tokio::runtime::Handle::current());
    let (result, from, message) = tokio::task::spawn_blocking(move || {
        let result = verify::verify(
            &message,
            &from,
            &VerifyContext {
                trust: &trust,
                crls: &crls,
                revocation: Some(&source),
                now: std::time::SystemTime::now(),
                limits: &limits,
            },
        );
        (result, from, message)
    })
    .await?;
    drop(message);
    if let Some(content) = &result.content {
        std::io::stdout().write_all(content)?;
    }
    if json {
        eprintln!("{}", verdict_json(&result, &from));
    } else {
        print_verdict(&result);
    }
    let soft_unknown = result.verdict == Verdict::RevocationUnknown
        && mode == crate::config::RevocationMode::SoftFail
        && result.signer().is_some_and(|s| s.verdict == Verdict::Valid);
    if result.verdict != Verdict::Valid && !soft_unknown {
        anyhow::bail!("signature is {}", result.verdict.as_str());
    }
    Ok(())
}

/// CRLs from files, DER or PEM.
fn read_crls(files: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    files
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            if bytes.starts_with(b"-----BEGIN") {
                let (_, der) = der::pem::decode_vec(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: not a PEM CRL ({e})", path.display()))?;
                Ok(der)
            } else {
                Ok(bytes)
            }
        })
        .collect()
}

fn verdict_json(
    result: &crate::smime::verify::Verification,
    from: &crate::smime::verify::FromField,
) -> serde_json::Value {
    let signer = result
        .signer()
        .and_then(|s| s.certificate.as_ref())
        .map(|c| c.tbs_certificate().subject().to_string())
        .unwrap_or_default();
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
    serde_json::json!({
        "verdict": result.verdict,
        "detail": result.detail,
        "signer": signer,
        "from": from.address(),
        "signers": signers,
    })
}

fn print_verdict(result: &crate::smime::verify::Verification) {
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

async fn decrypt(settings: Settings, json: bool, file: Option<PathBuf>) -> Result<()> {
    let limits = settings.config.limits.mime();
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
