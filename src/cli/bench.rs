//! `smimegate token bench`: sign rate through the session pool (as the relay uses it)
//! against a bare single-session loop, both measured in the same run on a throwaway key.

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
    /// Concurrent workers through the pool (each value is one run).
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

pub async fn run(hsm: Hsm, args: BenchArgs) -> Result<()> {
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
        let outcome = measure(&hsm, &key.id, algorithm, scheme, &args, duration).await;
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
                    "{:<8} {:<5} {} thread(s): {:>9.1} sign/s{ratio}",
                    figure.key, figure.mode, figure.threads, figure.ops_per_sec
                );
            }
        }
    }
    Ok(())
}

async fn measure(
    hsm: &Hsm,
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
        // Baseline: `threads` OS threads, each looping on its own session.
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (hsm, id, data) = (hsm.clone(), id.clone(), data.clone());
            handles.push(tokio::task::spawn_blocking(move || {
                hsm.bare_sign_loop(&id, scheme, &data, duration)
            }));
        }
        let mut bare_total = 0;
        for h in handles {
            bare_total += h.await??;
        }
        let bare = bare_total as f64 / start.elapsed().as_secs_f64();
        figures.push(Figure {
            key,
            mode: "bare",
            threads,
            ops_per_sec: bare,
            ratio_to_bare: None,
        });

        // Through the pool: async workers, each signature a `Hsm::call`.
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = Vec::new();
        for _ in 0..threads {
            let (hsm, id, data, done) = (hsm.clone(), id.clone(), data.clone(), done.clone());
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
        let pooled = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        figures.push(Figure {
            key,
            mode: "pool",
            threads,
            ops_per_sec: pooled,
            ratio_to_bare: Some(pooled / bare),
        });
    }
    Ok(figures)
}
