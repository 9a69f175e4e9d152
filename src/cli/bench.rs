//! `smimegate token bench`: sign rate through the session pool (as the relay uses it)
//! against bare signing loops, both measured in the same run on a throwaway key.
//!
//! For N workers: N OS threads each loop on their own session ("bare", the baseline);
//! then a pool of N sessions kept busy by 4×N concurrent async callers, each signature
//! a `Hsm::call` ("pool", what the relay does under load); and, for the record, one
//! caller at a time through that pool ("pool-seq", latency-bound: every signature waits
//! for two thread hand-offs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use crate::hsm::{Hsm, KeyAlgorithm, SignatureScheme};
use crate::pki::ca::default_scheme;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Key types to measure.
    #[arg(long = "key", value_enum, default_values_t = [KeyAlgorithm::Rsa2048, KeyAlgorithm::P256])]
    pub keys: Vec<KeyAlgorithm>,
    /// Token sessions (and bare threads) to measure with; each value is one run.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    pub workers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Figure {
    key: KeyAlgorithm,
    mode: &'static str,
    threads: usize,
    ops_per_sec: f64,
    ratio_to_bare: Option<f64>,
}

pub async fn run(hsm: Hsm, settings: &crate::config::Settings, args: BenchArgs) -> Result<()> {
    let duration = Duration::from_secs(args.seconds.max(1));
    for key_algorithm in &args.keys {
        let algorithm = *key_algorithm;
        let key = hsm
            .call_keygen(move |h| {
                h.generate_key_pair(
                    algorithm,
                    crate::hsm::KeyRole::Mailbox,
                    "smimegate-bench (throwaway)",
                )
            })
            .await?;
        let scheme = default_scheme(algorithm);
        let outcome = measure(&hsm, settings, &key.id, algorithm, scheme, &args, duration).await;
        let id = key.id.clone();
        hsm.call("destroy bench key", move |h| h.destroy_bench_key(&id))
            .await?;
        for figure in outcome? {
            if args.json {
                println!("{}", serde_json::to_string(&figure)?);
            } else {
                let ratio = figure
                    .ratio_to_bare
                    .map(|r| format!("  ({:.1} % of bare)", r * 100.0))
                    .unwrap_or_default();
                println!(
                    "{:<8} {:<8} {} session(s): {:>9.1} sign/s{ratio}",
                    figure.key, figure.mode, figure.threads, figure.ops_per_sec
                );
            }
        }
    }
    Ok(())
}

async fn measure(
    hsm: &Hsm,
    settings: &crate::config::Settings,
    id: &crate::hsm::KeyId,
    key: KeyAlgorithm,
    scheme: SignatureScheme,
    args: &BenchArgs,
    duration: Duration,
) -> Result<Vec<Figure>> {
    let data: Arc<[u8]> = Arc::from(vec![0x5a; 4096]);
    let mut figures = Vec::new();
    for &threads in &args.workers {
        let threads = threads.max(1);
        // Baseline: `threads` OS threads, each looping on its own session. Measured
        // before and after the pool runs, half the time each, and averaged, so that
        // drift in the machine's speed does not favour either side.
        let half = duration / 2;
        let before = bare_rate(hsm, id, scheme, &data, threads, half).await?;
        // Through a pool of `threads` sessions.
        let mut config = crate::app::hsm_config(settings)?;
        config.max_sessions = threads;
        let pool = tokio::task::spawn_blocking(move || Hsm::open(config)).await??;
        let saturated = pooled_rate(&pool, id, scheme, &data, threads * 4, duration).await?;
        let sequential = pooled_rate(&pool, id, scheme, &data, 1, duration).await?;
        let after = bare_rate(hsm, id, scheme, &data, threads, half).await?;
        let bare = (before + after) / 2.0;
        figures.push(Figure {
            key,
            mode: "bare",
            threads,
            ops_per_sec: bare,
            ratio_to_bare: None,
        });
        for (mode, rate) in [("pool", saturated), ("pool-seq", sequential)] {
            figures.push(Figure {
                key,
                mode,
                threads,
                ops_per_sec: rate,
                ratio_to_bare: Some(rate / bare),
            });
        }
    }
    Ok(figures)
}

/// Signatures per second from `threads` OS threads each looping on its own session.
async fn bare_rate(
    hsm: &Hsm,
    id: &crate::hsm::KeyId,
    scheme: SignatureScheme,
    data: &Arc<[u8]>,
    threads: usize,
    duration: Duration,
) -> Result<f64> {
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..threads {
        let (hsm, id, data) = (hsm.clone(), id.clone(), data.clone());
        handles.push(std::thread::spawn(move || {
            hsm.bare_sign_loop(&id, scheme, &data, duration)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("bare signing thread panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Signatures per second from `callers` async tasks looping on `Hsm::call`.
async fn pooled_rate(
    pool: &Hsm,
    id: &crate::hsm::KeyId,
    scheme: SignatureScheme,
    data: &Arc<[u8]>,
    callers: usize,
    duration: Duration,
) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (hsm, id, data, done) = (pool.clone(), id.clone(), data.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let (id, data) = (id.clone(), data.clone());
                hsm.call("sign", move |h| h.sign(&id, scheme, &data))
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), crate::hsm::HsmError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}
