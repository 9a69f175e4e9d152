//! `smimegate serve` (the gateway: SMTP listeners and the HTTP endpoint) and
//! `smimegate sink` (a Maildir next hop for trying it out), with the process's life:
//! one `serve` per data directory (a lock file), SIGHUP reloads what can change at run
//! time, SIGTERM (or Ctrl-C) drains and stops. See docs/operations.md.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::app::App;
use crate::config::{Config, Settings};
use crate::hsm::Hsm;
use crate::relay::Relay;
use crate::relay::network::Network;
use crate::smtp::client::ClientConfig;
use crate::smtp::server::{Control, Limits, Listener, Phase, Server, ServerConfig};
use crate::smtp::tls::{self, TlsKey};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Override [console].listen (HTTPS).
    #[arg(long)]
    pub console: Option<String>,
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

pub use crate::data_dir::LOCK_FILE;

/// Sessions still running this long after the grace time are left behind.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Changes the running log filter; `main` registers it when it sets up logging.
pub type LogReloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static LOG_RELOADER: OnceLock<LogReloader> = OnceLock::new();

/// Registers how SIGHUP changes the log filter (once, at start).
pub fn set_log_reloader(reloader: LogReloader) {
    let _ = LOG_RELOADER.set(reloader);
}

pub use crate::data_dir::{DataDirLock, lock_data_dir};

fn server_config(settings: &Settings, listener: Listener, hsm: &Hsm) -> Result<ServerConfig> {
    let smtp = &settings.config.smtp;
    let certificate = settings.path(&smtp.tls_certificate);
    let tls = if smtp.tls_certificate.as_os_str().is_empty() {
        None
    } else if !certificate.exists() {
        tracing::warn!(file = %certificate.display(), "no TLS certificate: STARTTLS is not offered");
        None
    } else if smtp.tls_key == Path::new("token") {
        Some(tls::server_config(&certificate, TlsKey::Token(hsm))?)
    } else {
        Some(tls::server_config(
            &certificate,
            TlsKey::File(&settings.path(&smtp.tls_key)),
        )?)
    };
    Ok(ServerConfig {
        hostname: settings.config.gateway.hostname.clone(),
        listener,
        auth: listener == Listener::Submission && smtp.submission_auth,
        tls,
    })
}

/// The session limits of a configuration.
fn limits(config: &Config) -> Result<Limits> {
    let exempt = config
        .relay
        .internal_networks
        .iter()
        .map(|n| Network::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .context("[relay].internal_networks")?;
    Ok(config.smtp.limits(&config.limits, exempt))
}

/// The console's TLS configuration: its own certificate and key, or the SMTP ones;
/// None (console off, with a warning) when there is no certificate file yet.
fn console_tls(settings: &Settings, hsm: &Hsm) -> Result<Option<Arc<rustls::ServerConfig>>> {
    let console = &settings.config.console;
    let smtp = &settings.config.smtp;
    let (certificate, key) = if console.tls_certificate.as_os_str().is_empty() {
        (&smtp.tls_certificate, &smtp.tls_key)
    } else {
        (&console.tls_certificate, &console.tls_key)
    };
    let path = settings.path(certificate);
    if certificate.as_os_str().is_empty() || !path.exists() {
        tracing::warn!(file = %path.display(), "no TLS certificate for the console: it is off");
        return Ok(None);
    }
    let config = if key == Path::new("token") {
        tls::server_config(&path, TlsKey::Token(hsm))?
    } else {
        tls::server_config(&path, TlsKey::File(&settings.path(key)))?
    };
    Ok(Some(config))
}

async fn bind(address: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({what})"))
}

pub async fn serve(settings: Settings, args: ServeArgs) -> Result<()> {
    let _lock = lock_data_dir(&settings.data_dir)?;
    let http_listen = args
        .http
        .clone()
        .unwrap_or_else(|| settings.config.http.listen.clone());
    let inbound_listen = args
        .inbound
        .clone()
        .unwrap_or_else(|| settings.config.smtp.inbound_listen.clone());
    let submission_listen = args
        .submission
        .clone()
        .unwrap_or_else(|| settings.config.smtp.submission_listen.clone());
    let relay_config = settings.config.relay.clone();
    let config_networks = relay_config
        .internal_networks
        .iter()
        .map(|n| Network::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .context("[relay].internal_networks")?;
    let control = Control::new(limits(&settings.config)?);
    let client = ClientConfig::from_relay_config(
        settings.config.gateway.hostname.clone(),
        &relay_config,
        &settings.data_dir,
    )
    .context("[relay] next-hop TLS")?;
    let node = settings.config.gateway.node_name.clone();
    let mime_limits = settings.config.limits.mime();
    let app = Arc::new(App::open(settings).await?);
    // Background jobs (the configuration watch, the certificate lifecycle) stop when
    // this turns true.
    let (background_stop, background_stopped) = tokio::sync::watch::channel(false);
    // The configuration version in force, learnt in the background (NOTIFY on
    // PostgreSQL, a poll on SQLite) so that no transaction asks the database.
    let config_watch_task = app
        .store
        .watch_config(background_stopped.clone())
        .await
        .context("watching the configuration version")?;
    // A changed [gateway].hostname gets its TLS certificate before the listeners start.
    if let Some(done) = crate::setup::ensure_smtp_tls(
        &app.settings,
        &app.store,
        &app.hsm,
        &crate::ops::Actor::job("serve"),
    )
    .await?
    {
        tracing::info!("{done}");
    }
    let inbound_config = server_config(&app.settings, Listener::Inbound, &app.hsm)?;
    let submission_config = server_config(&app.settings, Listener::Submission, &app.hsm)?;
    if app.ca().await.is_err() {
        tracing::warn!("the built-in CA is missing: run `smimegate init`");
    }
    let revocation = crate::pki::revocation::Revocations::new(
        app.store.clone(),
        (&app.settings.config.revocation).into(),
    );
    // Keeps the CRLs of known partner certificates current, outside any SMTP reply.
    let refresh_task = tokio::spawn(revocation.clone().run_refresh());
    // One set of metrics for the relay, the listeners' budget and the token pool.
    let metrics = Arc::new(crate::metrics::Metrics::new());
    metrics.watch_budget(control.budget().clone());
    app.hsm.attach_metrics(metrics.clone());
    let relay = Arc::new(Relay {
        metrics: metrics.clone(),
        revocation,
        log_writer: crate::relay::log_writer::LogWriter::start(app.store.clone()),
        hops: crate::relay::HopPool::default(),
        snapshots: crate::relay::directory::SnapshotCache::new(app.store.clone()),
        app: app.clone(),
        client,
        node,
        hostname: app.settings.config.gateway.hostname.clone(),
        limits: mime_limits,
        config_networks,
        config_smarthost: (!relay_config.smarthost.is_empty())
            .then(|| relay_config.smarthost.clone()),
    });
    let inbound = bind(&inbound_listen, "SMTP inbound").await?;
    let submission = bind(&submission_listen, "SMTP submission").await?;
    let http = bind(&http_listen, "HTTP").await?;
    let console_listen = args
        .console
        .clone()
        .unwrap_or_else(|| app.settings.config.console.listen.clone());
    let console_listener = match console_tls(&app.settings, &app.hsm)? {
        Some(tls) if !console_listen.is_empty() => {
            let listener = bind(&console_listen, "console").await?;
            Some(crate::admin::https::TlsListener::spawn(listener, &tls)?)
        }
        _ => None,
    };
    // The addresses as bound (a port 0 in the configuration becomes a real one).
    let bound = |l: &TcpListener, configured: &str| {
        l.local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| configured.to_string())
    };
    let (inbound_listen, submission_listen, http_listen) = (
        bound(&inbound, &inbound_listen),
        bound(&submission, &submission_listen),
        bound(&http, &http_listen),
    );
    let mut signals = Signals::new()?;
    let inbound_server = Server::new(inbound_config, control.clone(), relay.clone());
    let submission_server = Server::new(submission_config, control.clone(), relay.clone());
    let inbound_task = tokio::spawn(async move { inbound_server.serve(inbound).await });
    let submission_task = tokio::spawn(async move { submission_server.serve(submission).await });
    let mut http_phase = control.subscribe();
    let http_task = tokio::spawn(
        axum::serve(http, crate::admin::router(app.clone(), metrics.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_phase.wait_for(|p| *p >= Phase::Draining).await;
            })
            .into_future(),
    );
    // The certificate lifecycle: at start, then every [lifecycle].interval_secs (one
    // node at a time, by a lease in the database).
    let console_url = match console_listener {
        Some(listener) => {
            use axum::serve::Listener as _;
            let local = listener.local_addr()?;
            let origin = crate::admin::console::origin(&app.settings, local);
            let console = Arc::new(
                crate::admin::console::Console::new(app.clone(), origin.clone())
                    .context("[saml]")?,
            );
            let mut phase = control.subscribe();
            let service = crate::admin::console::router(console)
                .into_make_service_with_connect_info::<crate::admin::console::ClientAddr>();
            tokio::spawn(
                axum::serve(listener, service)
                    .with_graceful_shutdown(async move {
                        let _ = phase.wait_for(|p| *p >= Phase::Draining).await;
                    })
                    .into_future(),
            );
            tracing::info!(%local, %origin, "console listening");
            format!(", console https://{local}/ ({origin})")
        }
        None => String::new(),
    };
    let lifecycle_task = tokio::spawn(crate::ops::lifecycle::run_periodically(
        app.clone(),
        background_stopped,
    ));
    tracing::info!(inbound = %inbound_listen, submission = %submission_listen, http = %http_listen, "listening");
    outln!(
        "smimegate serving: SMTP inbound {inbound_listen}, SMTP submission {submission_listen}, http://{http_listen}/health{console_url}"
    );
    let mut current = app.settings.config.clone();
    loop {
        match signals.next().await {
            Signal::Reload => current = reload(&app.settings, current, &control),
            Signal::Stop(name) => {
                tracing::info!(signal = name, "shutting down");
                break;
            }
        }
    }
    let _ = background_stop.send(true);
    drain(&control, current.smtp.shutdown_grace()).await;
    refresh_task.abort();
    if tokio::time::timeout(CLOSE_WAIT, lifecycle_task)
        .await
        .is_err()
    {
        tracing::warn!("lifecycle run did not stop in time");
    }
    if tokio::time::timeout(CLOSE_WAIT, config_watch_task)
        .await
        .is_err()
    {
        tracing::warn!("configuration watch did not stop in time");
    }
    let _ = inbound_task.await;
    let _ = submission_task.await;
    match tokio::time::timeout(CLOSE_WAIT, http_task).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server failed"),
        Err(_) => tracing::warn!("HTTP server did not stop in time"),
        _ => {}
    }
    app.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM: no new connections; idle sessions get 421 at once; transactions in flight
/// get `grace` to finish; then every session gets 421.
async fn drain(control: &Control, grace: Duration) {
    tracing::info!(
        sessions = control.sessions(),
        grace_secs = grace.as_secs(),
        "no longer accepting; letting transactions in flight finish"
    );
    control.advance(Phase::Draining);
    if tokio::time::timeout(grace, control.idle()).await.is_ok() {
        return;
    }
    tracing::warn!(
        sessions = control.sessions(),
        "grace time over: closing the remaining sessions with 421"
    );
    control.advance(Phase::Closing);
    if tokio::time::timeout(CLOSE_WAIT, control.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = control.sessions(),
            "sessions left behind at exit"
        );
    }
}

/// SIGHUP: reads the configuration file again and applies what can change at run time (the
/// log filter and the SMTP limits); says what needs a restart. A file that does not
/// load leaves everything as it was.
fn reload(settings: &Settings, current: Config, control: &Control) -> Config {
    let config = match Config::load_file(&settings.config_file, &settings.data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            let limits = limits(&c)?;
            Ok((c, limits))
        }) {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: configuration not reloaded; keeping the running one");
            return current;
        }
    };
    let (config, limits) = config;
    let mut applied = Vec::new();
    if config.log.filter != current.log.filter {
        match (std::env::var_os("RUST_LOG"), LOG_RELOADER.get()) {
            (Some(_), _) => tracing::warn!("SIGHUP: RUST_LOG is set and overrides [log].filter"),
            (None, Some(reloader)) => match reloader(&config.log.filter) {
                Ok(()) => applied.push(format!("log.filter = {:?}", config.log.filter)),
                Err(e) => tracing::error!(error = %e, "SIGHUP: log filter not changed"),
            },
            (None, None) => tracing::warn!("SIGHUP: this process cannot change its log filter"),
        }
    }
    if config.smtp != current.smtp
        || config.limits.max_message_bytes != current.limits.max_message_bytes
        || config.relay.internal_networks != current.relay.internal_networks
    {
        control.set_limits(limits);
        applied.push("SMTP limits for new sessions".into());
    }
    let restart = restart_needed(&current, &config);
    tracing::info!(
        applied = %if applied.is_empty() { "nothing changed".to_string() } else { applied.join(", ") },
        needs_restart = %restart.join(", "),
        "SIGHUP: configuration reloaded"
    );
    config
}

/// Settings a running process keeps until it is restarted.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let s = (&old.smtp, &new.smtp);
    if s.0.inbound_listen != s.1.inbound_listen || s.0.submission_listen != s.1.submission_listen {
        keys.push("smtp.*_listen");
    }
    if s.0.tls_certificate != s.1.tls_certificate
        || s.0.tls_key != s.1.tls_key
        || s.0.submission_auth != s.1.submission_auth
    {
        keys.push("smtp.tls_*/submission_auth");
    }
    for (changed, key) in [
        (old.gateway != new.gateway, "[gateway]"),
        (old.database != new.database, "[database]"),
        (old.hsm != new.hsm, "[hsm]"),
        (old.ca != new.ca, "[ca]"),
        (old.http != new.http, "[http]"),
        (old.relay != new.relay, "[relay]"),
        (old.log.json != new.log.json, "log.json"),
        (old.log.subjects != new.log.subjects, "log.subjects"),
        (
            old.limits != new.limits
                && (
                    old.limits.max_mime_depth,
                    old.limits.max_smime_layers,
                    old.limits.max_recipients,
                ) != (
                    new.limits.max_mime_depth,
                    new.limits.max_smime_layers,
                    new.limits.max_recipients,
                ),
            "[limits] of the S/MIME engine",
        ),
    ] {
        if changed {
            keys.push(key);
        }
    }
    keys
}

enum Signal {
    Reload,
    Stop(&'static str),
}

/// The signals `serve` and `sink` answer to.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot handle {name}"))
        };
        Ok(Signals {
            hup: listen(SignalKind::hangup(), "SIGHUP")?,
            term: listen(SignalKind::terminate(), "SIGTERM")?,
            int: listen(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.hup.recv() => Signal::Reload,
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
        }
    }
}

pub async fn sink(args: SinkArgs) -> Result<()> {
    let mut maildir = crate::smtp::sink::Maildir::create(args.maildir.clone())
        .with_context(|| format!("cannot create Maildir {}", args.maildir.display()))?;
    maildir.discard = args.discard;
    maildir.unknown_recipients = args
        .unknown_recipients
        .iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    let listener = bind(&args.listen, "sink").await?;
    let config = ServerConfig {
        hostname: "smimegate-sink".into(),
        listener: Listener::Inbound,
        auth: false,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(cert, TlsKey::File(key))?),
            _ => None,
        },
    };
    let control = Control::new(Limits {
        max_connections: 256,
        max_connections_per_ip: 256,
        max_header_bytes: 1024 * 1024,
        max_message_bytes: 100 * 1024 * 1024,
        max_recipients: 1000,
        max_refused_recipients: 1000,
        message_budget_bytes: 1024 * 1024 * 1024,
        command_timeout: Duration::from_secs(300),
        session_deadline: Duration::from_secs(3600),
        ..Limits::default()
    });
    outln!(
        "smimegate sink: SMTP on {}, writing to {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| args.listen.clone()),
        args.maildir.join("new").display()
    );
    let mut signals = Signals::new()?;
    let server = Server::new(config, control.clone(), Arc::new(maildir));
    let task = tokio::spawn(async move { server.serve(listener).await });
    while let Signal::Reload = signals.next().await {
        tracing::info!("SIGHUP: the sink has nothing to reload");
    }
    control.advance(Phase::Closing);
    let _ = task.await;
    let _ = tokio::time::timeout(CLOSE_WAIT, control.idle()).await;
    Ok(())
}
