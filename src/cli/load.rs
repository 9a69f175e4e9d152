//! `smimegate smtp-load`: an SMTP load generator for `scripts/bench-relay` (and for
//! operators sizing a gateway): N concurrent sessions send one message over and over
//! for a while, each on its own connection; prints one JSON line with messages/s and
//! latency percentiles (MAIL to the reply to DATA).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::config::NextHopTls;
use crate::smtp::client::{ClientConfig, Connection};
use crate::smtp::command::{MailParams, RcptParams};

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// HOST:PORT to send to.
    #[arg(long)]
    pub target: String,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Seconds to send for.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub to: String,
    /// The message to send (a file); without it, a text message of --size bytes.
    #[arg(long)]
    pub message: Option<PathBuf>,
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Messages each session sends at most (0: as many as --seconds allow). A message
    /// refused with a 4xx is sent again, and counts only once it is accepted.
    #[arg(long, default_value_t = 0)]
    pub count: usize,
}

fn text_message(from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut m =
        format!("From: {from}\r\nTo: {to}\r\nSubject: load\r\nContent-Type: text/plain\r\n\r\n")
            .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrst\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

pub async fn run(args: LoadArgs) -> Result<()> {
    let message = match &args.message {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => text_message(&args.from, &args.to, args.size),
    };
    // One copy shared by every session, however many there are.
    let message = std::sync::Arc::new(message);
    let client = ClientConfig::new(
        "load.invalid".into(),
        Duration::from_secs(10),
        Duration::from_secs(60),
        NextHopTls::Off,
    )?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let count = args.count;
        let (client, target, from, to, message) = (
            client.clone(),
            args.target.clone(),
            args.from.clone(),
            args.to.clone(),
            message.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut busy = 0u64;
            let mut conn: Option<Connection> = None;
            while Instant::now() < deadline && (count == 0 || latencies.len() < count) {
                if conn.is_none() {
                    match Connection::open(&client, &target).await {
                        Ok(c) => conn = Some(c),
                        Err(_) => {
                            errors += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let t0 = Instant::now();
                // The reply that refused the message, if one did.
                let refused = async {
                    let r = c
                        .mail(&from, &MailParams::default(), Some(message.len() as u64))
                        .await?;
                    if !r.is_positive() {
                        return Err(r);
                    }
                    let r = c.rcpt(&to, &RcptParams::default()).await?;
                    if !r.is_positive() {
                        return Err(r);
                    }
                    let r = c.data(&message).await?;
                    if !r.is_positive() {
                        return Err(r);
                    }
                    Ok(())
                }
                .await;
                match refused {
                    Ok(()) => latencies.push(t0.elapsed()),
                    // The gateway's memory budget is full: the transaction is over
                    // (RFC 5321 §4.2.5), the connection stays usable; wait a little.
                    Err(r) if r.code == 452 && r.enhanced == "4.3.1" => {
                        busy += 1;
                        let _ = c.rset().await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(_) => {
                        errors += 1;
                        if let Some(c) = conn.take() {
                            c.quit().await;
                        }
                    }
                }
            }
            if let Some(c) = conn {
                c.quit().await;
            }
            (latencies, errors, busy)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut busy = 0;
    for task in tasks {
        let (l, e, b) = task.await?;
        latencies.extend(l);
        errors += e;
        busy += b;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    outln!(
        "{}",
        serde_json::json!({
            "sent": latencies.len(),
            "errors": errors,
            "busy_452": busy,
            "seconds": elapsed,
            "per_sec": latencies.len() as f64 / elapsed,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "concurrency": args.concurrency,
            "size": message.len(),
        })
    );
    Ok(())
}
