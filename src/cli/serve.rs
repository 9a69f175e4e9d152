//! `smimegate serve` (the gateway: SMTP listeners and the HTTP endpoint) and
//! `smimegate sink` (a Maildir next hop for trying it out).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{ServeArgs, SinkArgs, shutdown_signal};
use crate::app::App;
use crate::config::Settings;
use crate::hsm::Hsm;
use crate::relay::Relay;
use crate::relay::network::Network;
use crate::smtp::client::ClientConfig;
use crate::smtp::server::{self, Listener, ServerConfig};
use crate::smtp::tls::{self, TlsKey};

fn server_config(settings: &Settings, listener: Listener, hsm: &Hsm) -> Result<ServerConfig> {
    let smtp = &settings.config.smtp;
    let certificate = settings.path(&smtp.tls_certificate);
    let tls = if smtp.tls_certificate.as_os_str().is_empty() {
        None
    } else if !certificate.exists() {
        tracing::warn!(file = %certificate.display(), "no TLS certificate: STARTTLS is not offered");
        None
    } else if smtp.tls_key == std::path::Path::new("token") {
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
        max_connections: smtp.max_connections,
        max_line_bytes: smtp.max_line_bytes,
        max_header_bytes: smtp.max_header_bytes,
        max_message_bytes: settings.config.limits.max_message_bytes,
        max_recipients: smtp.max_recipients,
        command_timeout: Duration::from_secs(smtp.command_timeout_secs),
        session_deadline: Duration::from_secs(smtp.session_deadline_secs),
        tls,
    })
}

async fn bind(address: &str, what: &str) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({what})"))
}

pub async fn serve(settings: Settings, args: ServeArgs) -> Result<()> {
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
    let client = ClientConfig::from_relay_config(
        settings.config.gateway.hostname.clone(),
        &relay_config,
        &settings.data_dir,
    )
    .context("[relay] next-hop TLS")?;
    let node = settings.config.gateway.node_name.clone();
    let limits = settings.config.limits.mime();
    let app = Arc::new(App::open(settings).await?);
    let inbound_config = server_config(&app.settings, Listener::Inbound, &app.hsm)?;
    let submission_config = server_config(&app.settings, Listener::Submission, &app.hsm)?;
    if app.ca().await.is_err() {
        tracing::warn!("the built-in CA is missing: run `smimegate init`");
    }
    let relay = Arc::new(Relay {
        log_writer: crate::relay::log_writer::LogWriter::start(app.store.clone()),
        hops: crate::relay::HopPool::default(),
        snapshots: crate::relay::directory::SnapshotCache::new(app.store.clone()),
        app: app.clone(),
        client,
        node,
        hostname: app.settings.config.gateway.hostname.clone(),
        limits,
        config_networks,
        config_smarthost: (!relay_config.smarthost.is_empty())
            .then(|| relay_config.smarthost.clone()),
    });
    let inbound = bind(&inbound_listen, "SMTP inbound").await?;
    let submission = bind(&submission_listen, "SMTP submission").await?;
    let http = bind(&http_listen, "HTTP").await?;
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
    let (stop, stopped) = watch::channel(false);
    let inbound_task = tokio::spawn(server::serve(
        inbound,
        inbound_config,
        relay.clone(),
        stopped.clone(),
    ));
    let submission_task = tokio::spawn(server::serve(
        submission,
        submission_config,
        relay.clone(),
        stopped.clone(),
    ));
    tracing::info!(inbound = %inbound_listen, submission = %submission_listen, http = %http_listen, "listening");
    println!(
        "smimegate serving: SMTP inbound {inbound_listen}, SMTP submission {submission_listen}, http://{http_listen}/health"
    );
    axum::serve(http, crate::admin::router(app.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    let _ = stop.send(true);
    let _ = inbound_task.await;
    let _ = submission_task.await;
    app.store.close().await;
    tracing::info!("stopped");
    Ok(())
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
        max_connections: 256,
        max_line_bytes: 4096,
        max_header_bytes: 1024 * 1024,
        max_message_bytes: 100 * 1024 * 1024,
        max_recipients: 1000,
        command_timeout: Duration::from_secs(300),
        session_deadline: Duration::from_secs(3600),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(cert, TlsKey::File(key))?),
            _ => None,
        },
    };
    println!(
        "smimegate sink: SMTP on {}, writing to {}",
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| args.listen.clone()),
        args.maildir.join("new").display()
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(server::serve(listener, config, Arc::new(maildir), stopped));
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = task.await;
    Ok(())
}
