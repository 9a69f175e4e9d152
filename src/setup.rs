//! `smimegate init`: the data directory, configuration, SoftHSM2 token, database and
//! built-in CA. Each step checks first and changes nothing that is already there, so a
//! second run reports "nothing to do".

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use crate::app::{self, AppError};
use crate::config::{Settings, TEMPLATE};
use crate::hsm::HsmError;
use crate::hsm::provision::{self, TokenInit};
use crate::ops::Actor;
use crate::pki::ca;
use crate::store::{CertificateSource, KeyPurpose};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Token(#[from] HsmError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The file-system half of `init`, run before the token module is loaded: data
/// directory, configuration (`config_file`, normally `DATA_DIR/smimegate.toml`; one
/// that exists, such as the Debian package's `/etc/smimegate/smimegate.toml`, is
/// used as it is), SoftHSM2 configuration and token directory.
/// Returns the settings and what it created.
pub fn prepare_data_dir(
    data_dir: &Path,
    config_file: &Path,
) -> Result<(Settings, Vec<String>), SetupError> {
    let mut created = Vec::new();
    if !data_dir.exists() {
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(io(data_dir))?;
        created.push(format!("data directory {}", data_dir.display()));
    }
    if !config_file.exists() {
        write_new(config_file, TEMPLATE.as_bytes(), 0o640)?;
        created.push(format!("configuration {}", config_file.display()));
    }
    let settings = Settings::load_from(data_dir, config_file)?;
    if let Some(conf) = settings.softhsm2_conf().filter(|conf| !conf.exists()) {
        let token_dir = data_dir.join("tokens");
        fs::create_dir_all(&token_dir).map_err(io(&token_dir))?;
        fs::set_permissions(&token_dir, fs::Permissions::from_mode(0o700))
            .map_err(io(&token_dir))?;
        let absolute = fs::canonicalize(&token_dir).map_err(io(&token_dir))?;
        write_new(
            &conf,
            provision::softhsm2_conf_text(&absolute).as_bytes(),
            0o600,
        )?;
        created.push(format!("SoftHSM2 configuration {}", conf.display()));
    }
    Ok((settings, created))
}

/// The token half of `init`: token (SoftHSM2 only), database, CA.
/// Expects `SOFTHSM2_CONF` to be exported already when a SoftHSM2 configuration is used.
pub async fn initialise(settings: &Settings, created: &mut Vec<String>) -> Result<(), SetupError> {
    if settings.softhsm2_conf().is_some() {
        init_softhsm_token(settings, created).await?;
    }
    let store = app::open_store(settings).await.map_err(AppError::from)?;
    if app::load_ca(&store).await?.is_none() {
        create_ca(settings, &store, created).await?;
    }
    if matches!(
        smtp_tls_status(settings)?,
        SmtpTlsStatus::Missing | SmtpTlsStatus::Stale(_)
    ) {
        let hsm = app::open_hsm(settings).await?;
        if let Some(done) = ensure_smtp_tls(settings, &store, &hsm, &Actor::cli()).await? {
            created.push(done);
        }
    }
    Ok(())
}

/// The two-tier built-in CA: a root key and self-signed certificate, then the issuing
/// CA's key certified by the root, both keys in the token. Recorded root first, so the
/// newest CA key is the issuing CA ([`app::load_ca`]).
async fn create_ca(
    settings: &Settings,
    store: &crate::store::Store,
    created: &mut Vec<String>,
) -> Result<(), SetupError> {
    let hsm = app::open_hsm(settings).await?;
    let ca_config = settings.config.ca.clone();
    let urls = crate::pki::urls::PkiUrls::new(&ca_config.public_url).map_err(|e| {
        crate::config::ConfigError::Invalid {
            key: "ca.public_url",
            message: e.to_string(),
        }
    })?;
    let algorithm = ca_config.key;
    let token_label = settings.config.hsm.token_label.clone();
    let root_label = format!("{token_label} (root CA)");
    let root_key = hsm
        .call_keygen(move |hsm| {
            hsm.generate_key_pair(
                algorithm,
                crate::hsm::KeyRole::CertificateAuthority,
                &root_label,
            )
        })
        .await?;
    let (key, config) = (root_key.clone(), ca_config.clone());
    let root_cert = hsm
        .call("create root CA certificate", move |hsm| {
            ca::create_ca_certificate(hsm, &key, &config.root_subject, config.validity_days)
                .map_err(token_error)
        })
        .await?;
    let root = ca::CaIdentity {
        key_id: root_key.id.clone(),
        algorithm,
        certificate: root_cert,
    };
    let issuing_label = format!("{token_label} (CA)");
    let issuing_key = hsm
        .call_keygen(move |hsm| {
            hsm.generate_key_pair(
                algorithm,
                crate::hsm::KeyRole::CertificateAuthority,
                &issuing_label,
            )
        })
        .await?;
    let (key, config, root_for_task) = (issuing_key.clone(), ca_config.clone(), root.clone());
    let issuing_cert = hsm
        .call("create issuing CA certificate", move |hsm| {
            ca::create_issuing_ca_certificate(
                hsm,
                &root_for_task,
                &key,
                &config.subject,
                config.validity_days,
                &urls,
            )
            .map_err(token_error)
        })
        .await?;
    let actor = Actor::cli();
    for (what, key, cert, action) in [
        ("root CA", &root_key, &root.certificate, "ca.create-root"),
        ("CA", &issuing_key, &issuing_cert, "ca.create"),
    ] {
        let key_row = store
            .keys()
            .insert(&key.id, algorithm, KeyPurpose::Ca, None)
            .await
            .map_err(AppError::from)?;
        let stored = store
            .certificates()
            .insert(cert, CertificateSource::Ca, None, Some(key_row.id))
            .await
            .map_err(AppError::from)?;
        store
            .audit()
            .append(
                &actor.name,
                &actor.origin,
                action,
                &stored.record.subject,
                &format!("{algorithm}; issuer {}", stored.record.issuer),
            )
            .await
            .map_err(AppError::from)?;
        created.push(format!(
            "{what} '{}' ({algorithm}, key {} in the token)",
            stored.record.subject, key.id
        ));
    }
    Ok(())
}

fn token_error(e: ca::IssueError) -> HsmError {
    match e {
        ca::IssueError::Token(h) => h,
        other => HsmError::Encoding(other.to_string()),
    }
}

/// The host names the SMTP TLS certificate names: `[gateway].hostname`, and
/// `localhost` for local clients.
pub fn smtp_tls_hostnames(settings: &Settings) -> Vec<String> {
    let hostname = settings.config.gateway.hostname.to_ascii_lowercase();
    let mut hostnames = vec![hostname.clone()];
    if hostname != "localhost" {
        hostnames.push("localhost".into());
    }
    hostnames
}

/// The dNSName entries of a certificate's subjectAltName, lower case.
fn dns_names(cert: &x509_cert::Certificate) -> Vec<String> {
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let Ok(Some(san)) = cert.tbs_certificate().get_extension::<SubjectAltName>() else {
        return Vec::new();
    };
    san.1
        .0
        .iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(dns) => Some(dns.as_str().to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Whether the SMTP TLS certificate file is ours to make and up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpTlsStatus {
    /// STARTTLS is off, or the key is a file the operator manages.
    NotManaged,
    /// The file names exactly the configured host names.
    Current,
    /// No file yet.
    Missing,
    /// The file names other host names (these).
    Stale(String),
}

/// Reads the SMTP TLS certificate file and compares its host names with the
/// configuration's.
pub fn smtp_tls_status(settings: &Settings) -> Result<SmtpTlsStatus, SetupError> {
    let smtp = &settings.config.smtp;
    if smtp.tls_certificate.as_os_str().is_empty() || smtp.tls_key != Path::new("token") {
        return Ok(SmtpTlsStatus::NotManaged);
    }
    let path = settings.path(&smtp.tls_certificate);
    if !path.exists() {
        return Ok(SmtpTlsStatus::Missing);
    }
    let pem = fs::read(&path).map_err(io(&path))?;
    let current = x509_cert::Certificate::load_pem_chain(&pem)
        .ok()
        .and_then(|chain| chain.into_iter().next());
    let mut named = current.as_ref().map(dns_names).unwrap_or_default();
    named.sort();
    named.dedup();
    let mut wanted = smtp_tls_hostnames(settings);
    wanted.sort();
    Ok(if named == wanted {
        SmtpTlsStatus::Current
    } else {
        SmtpTlsStatus::Stale(named.join(", "))
    })
}

/// The SMTP listeners' TLS certificate when the configuration asks for a token key:
/// made when the file does not exist, and made anew when it names other host names
/// than the configuration (`[gateway].hostname` changed). A P-256 key made in the
/// token (sign only) and a certificate from the issuing CA for the host names; the
/// file holds it and the issuing CA. The file is replaced atomically; the old key
/// stays in the token. Returns what it did, which is also audited (`tls.issue`,
/// `tls.reissue`); nothing without a CA.
pub async fn ensure_smtp_tls(
    settings: &Settings,
    store: &crate::store::Store,
    hsm: &crate::hsm::Hsm,
    actor: &Actor,
) -> Result<Option<String>, SetupError> {
    let previous = match smtp_tls_status(settings)? {
        SmtpTlsStatus::NotManaged | SmtpTlsStatus::Current => return Ok(None),
        SmtpTlsStatus::Missing => None,
        SmtpTlsStatus::Stale(old) => Some(old),
    };
    let Some(ca_identity) = app::load_ca(store).await? else {
        return Ok(None);
    };
    let path = settings.path(&settings.config.smtp.tls_certificate);
    let hostnames = smtp_tls_hostnames(settings);
    let hostname = hostnames[0].clone();
    let label = format!("{} (SMTP TLS {hostname})", settings.config.hsm.token_label);
    let key = hsm
        .call_keygen(move |hsm| {
            hsm.generate_key_pair(
                crate::hsm::KeyAlgorithm::P256,
                crate::hsm::KeyRole::TlsServer,
                &label,
            )
        })
        .await?;
    let (names, key_for_task, issuer) = (hostnames.clone(), key.clone(), ca_identity.clone());
    let cert = hsm
        .call("issue TLS certificate", move |hsm| {
            ca::issue_tls_certificate(hsm, &issuer, &names, &key_for_task, 365).map_err(token_error)
        })
        .await?;
    let pem = [&cert, &ca_identity.certificate]
        .into_iter()
        .map(|c| der::EncodePem::to_pem(c, der::pem::LineEnding::LF))
        .collect::<Result<String, _>>()
        .map_err(|e| HsmError::Encoding(e.to_string()))?;
    let temporary = path.with_extension("pem.new");
    let _ = fs::remove_file(&temporary);
    write_new(&temporary, pem.as_bytes(), 0o644)?;
    fs::rename(&temporary, &path).map_err(io(&path))?;
    let (action, done) = match &previous {
        None => (
            "tls.issue",
            format!(
                "SMTP TLS certificate {} for {} (key in the token)",
                path.display(),
                hostnames.join(", ")
            ),
        ),
        Some(old) => (
            "tls.reissue",
            format!(
                "SMTP TLS certificate {} re-issued for {} (was for {}; new key in the token)",
                path.display(),
                hostnames.join(", "),
                if old.is_empty() { "no host name" } else { old }
            ),
        ),
    };
    store
        .audit()
        .append(
            &actor.name,
            &actor.origin,
            action,
            &hostname,
            &format!("hosts {}; key {}", hostnames.join(","), key.id),
        )
        .await
        .map_err(AppError::from)?;
    Ok(Some(done))
}

async fn init_softhsm_token(
    settings: &Settings,
    created: &mut Vec<String>,
) -> Result<(), SetupError> {
    let hsm = &settings.config.hsm;
    let user_pin_path = settings.path(&hsm.pin_file);
    let so_pin_path = settings.path(&hsm.so_pin_file);
    // PINs are created together with the token; existing PIN files are reused. A PIN
    // file that exists but cannot be used (unreadable, readable by others) is an
    // error to fix, never a reason to make a new PIN.
    let from_env = (!hsm.pin_env.is_empty())
        .then(|| crate::hsm::pin::read_pin_env(&hsm.pin_env))
        .flatten();
    let user_pin = if let Some(pin) = from_env {
        pin
    } else if user_pin_path.exists() {
        app::read_pin(settings)?
    } else {
        let pin = provision::random_pin()?;
        write_pin_file(&user_pin_path, &pin)?;
        created.push(format!("user PIN file {}", user_pin_path.display()));
        pin
    };
    let so_pin = if so_pin_path.exists() {
        crate::hsm::pin::read_pin_file(&so_pin_path)?
    } else {
        let pin = provision::random_pin()?;
        write_pin_file(&so_pin_path, &pin)?;
        created.push(format!(
            "security officer PIN file {}",
            so_pin_path.display()
        ));
        pin
    };
    let module = hsm.module.clone();
    let label = hsm.token_label.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        provision::init_token(&module, &label, &so_pin, &user_pin)
    })
    .await
    .map_err(|e| HsmError::Task(e.to_string()))??;
    if outcome == TokenInit::Created {
        created.push(format!("SoftHSM2 token '{}'", hsm.token_label));
    }
    Ok(())
}

/// Writes a new PIN file, owner-only; the formatted PIN is wiped afterwards.
fn write_pin_file(path: &Path, pin: &secrecy::SecretString) -> Result<(), SetupError> {
    let line = zeroize::Zeroizing::new(format!("{}\n", pin.expose_secret()));
    write_new(path, line.as_bytes(), 0o600)
}

/// Creates `path` with `mode`; never overwrites.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), SetupError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(contents).map_err(io(path))?;
    Ok(())
}
