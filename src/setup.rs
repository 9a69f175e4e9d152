//! `smimegate init`: the data directory, configuration, SoftHSM2 token, database and
//! built-in CA. Each step checks first and changes nothing that is already there, so a
//! second run reports "nothing to do".

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use crate::app::{self, AppError};
use crate::config::{CONFIG_FILE, Settings, TEMPLATE};
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
/// directory, configuration, SoftHSM2 configuration and token directory.
/// Returns the settings and what it created.
pub fn prepare_data_dir(data_dir: &Path) -> Result<(Settings, Vec<String>), SetupError> {
    let mut created = Vec::new();
    if !data_dir.exists() {
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).map_err(io(data_dir))?;
        created.push(format!("data directory {}", data_dir.display()));
    }
    let config_path = data_dir.join(CONFIG_FILE);
    if !config_path.exists() {
        write_new(&config_path, TEMPLATE.as_bytes(), 0o640)?;
        created.push(format!("configuration {}", config_path.display()));
    }
    let settings = Settings::load(data_dir)?;
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
    ensure_smtp_tls(settings, &store, created).await
}

async fn create_ca(
    settings: &Settings,
    store: &crate::store::Store,
    created: &mut Vec<String>,
) -> Result<(), SetupError> {
    let hsm = app::open_hsm(settings).await?;
    let ca_config = settings.config.ca.clone();
    let label = format!("{} (CA)", settings.config.hsm.token_label);
    let algorithm = ca_config.key;
    let key = hsm
        .call_keygen(move |hsm| {
            hsm.generate_key_pair(algorithm, crate::hsm::KeyRole::CertificateAuthority, &label)
        })
        .await?;
    let key_for_task = key.clone();
    let cert = hsm
        .call("create CA certificate", move |hsm| {
            ca::create_ca_certificate(
                hsm,
                &key_for_task,
                &ca_config.subject,
                ca_config.validity_days,
            )
            .map_err(|e| match e {
                ca::IssueError::Token(h) => h,
                other => HsmError::Encoding(other.to_string()),
            })
        })
        .await?;
    let key_row = store
        .keys()
        .insert(&key.id, algorithm, KeyPurpose::Ca, None)
        .await
        .map_err(AppError::from)?;
    let stored = store
        .certificates()
        .insert(&cert, CertificateSource::Ca, None, Some(key_row.id))
        .await
        .map_err(AppError::from)?;
    let actor = Actor::cli();
    store
        .audit()
        .append(
            &actor.name,
            &actor.origin,
            "ca.create",
            &stored.record.subject,
            &format!("{algorithm}"),
        )
        .await
        .map_err(AppError::from)?;
    created.push(format!(
        "CA '{}' ({algorithm}, key {} in the token)",
        stored.record.subject, key.id
    ));
    Ok(())
}

/// The SMTP listeners' TLS certificate, when the configuration asks for a token key
/// and the certificate file does not exist yet: a P-256 key made in the token (sign
/// only) and a certificate from the built-in CA for the gateway's host name.
async fn ensure_smtp_tls(
    settings: &Settings,
    store: &crate::store::Store,
    created: &mut Vec<String>,
) -> Result<(), SetupError> {
    let smtp = &settings.config.smtp;
    if smtp.tls_certificate.as_os_str().is_empty() || smtp.tls_key != Path::new("token") {
        return Ok(());
    }
    let path = settings.path(&smtp.tls_certificate);
    if path.exists() {
        return Ok(());
    }
    let Some(ca_identity) = app::load_ca(store).await? else {
        return Ok(());
    };
    let hsm = app::open_hsm(settings).await.map_err(AppError::from)?;
    let hostname = settings.config.gateway.hostname.clone();
    let mut hostnames = vec![hostname.clone()];
    if hostname != "localhost" {
        hostnames.push("localhost".into());
    }
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
    let cert = hsm
        .call("issue TLS certificate", move |hsm| {
            ca::issue_tls_certificate(hsm, &ca_identity, &hostnames, &key, 365).map_err(|e| match e
            {
                ca::IssueError::Token(h) => h,
                other => HsmError::Encoding(other.to_string()),
            })
        })
        .await?;
    let ca_pem = app::load_ca(store)
        .await?
        .map(|ca| der::EncodePem::to_pem(&ca.certificate, der::pem::LineEnding::LF))
        .transpose()
        .map_err(|e| HsmError::Encoding(e.to_string()))?
        .unwrap_or_default();
    let leaf_pem = der::EncodePem::to_pem(&cert, der::pem::LineEnding::LF)
        .map_err(|e| HsmError::Encoding(e.to_string()))?;
    write_new(&path, format!("{leaf_pem}{ca_pem}").as_bytes(), 0o644)?;
    created.push(format!(
        "SMTP TLS certificate {} for {hostname} (key in the token)",
        path.display()
    ));
    Ok(())
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
