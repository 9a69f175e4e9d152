//! `smimegate token bench`: sign rate through the session pool (as the relay uses it)
//! against bare signing loops, both measured in the same run on a throwaway key.
//!
//! For N workers: N OS threads each loop on their own session ("bare", the baseline);
//! then a pool of N sessions kept busy by 4×N concurrent async callers, each signature
//! a `Hsm::call` ("pool", what the relay does under load); and, for the record, one
//! caller at a time through that pool ("pool-seq", latency-bound: every signature waits
//! for two thread hand-offs).
//!
//! Each figure also carries the process's CPU time per signature over its measurement
//! (`/proc/self/stat` utime+stime, every thread of this process: the signing threads,
//! and for the pool modes the async callers and their hand-offs too). One bare worker's
//! figure is the token's own CPU cost of a signature, the unit `scripts/bench-relay`
//! divides the gateway's CPU per message by.

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
    /// Process CPU time per signature, in milliseconds.
    cpu_ms_per_op: f64,
    /// `cpu_ms_per_op` of this mode ÷ that of the bare loop (pool modes only).
    cpu_ratio_to_bare: Option<f64>,
}

/// What one measurement did: signatures, wall time and process CPU time.
#[derive(Clone, Copy, Default)]
struct Run {
    ops: u64,
    wall: Duration,
    cpu: Duration,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    fn cpu_ms_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.ops.max(1) as f64
    }

    fn plus(self, other: Run) -> Run {
        Run {
            ops: self.ops + other.ops,
            wall: self.wall + other.wall,
            cpu: self.cpu + other.cpu,
        }
    }
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat`
/// fields 14 and 15, in clock ticks of 1/100 s (Linux's `USER_HZ` for every
/// architecture the gateway runs on).
fn process_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| anyhow::anyhow!("cannot read /proc/self/stat: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count from
    // after its closing parenthesis, where field 3 starts.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("/proc/self/stat: no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("/proc/self/stat: field {n} missing or not a number"))
    };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
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
                outln!("{}", serde_json::to_string(&figure)?);
            } else {
                let ratio = figure
                    .ratio_to_bare
                    .map(|r| format!("  ({:.1} % of bare)", r * 100.0))
                    .unwrap_or_default();
                let cpu_ratio = figure
                    .cpu_ratio_to_bare
                    .map(|r| format!(" ({:.2}× bare)", r))
                    .unwrap_or_default();
                outln!(
                    "{:<8} {:<8} {} session(s): {:>9.1} sign/s{ratio}, {:.3} ms CPU/sign{cpu_ratio}",
                    figure.key,
                    figure.mode,
                    figure.threads,
                    figure.ops_per_sec,
                    figure.cpu_ms_per_op
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
        let bare_run = before.plus(after);
        let bare = (before.per_sec() + after.per_sec()) / 2.0;
        let bare_cpu = bare_run.cpu_ms_per_op();
        figures.push(Figure {
            key,
            mode: "bare",
            threads,
            ops_per_sec: bare,
            ratio_to_bare: None,
            cpu_ms_per_op: bare_cpu,
            cpu_ratio_to_bare: None,
        });
        for (mode, run) in [("pool", saturated), ("pool-seq", sequential)] {
            figures.push(Figure {
                key,
                mode,
                threads,
                ops_per_sec: run.per_sec(),
                ratio_to_bare: Some(run.per_sec() / bare),
                cpu_ms_per_op: run.cpu_ms_per_op(),
                cpu_ratio_to_bare: Some(run.cpu_ms_per_op() / bare_cpu.max(f64::EPSILON)),
            });
        }
    }
    Ok(figures)
}

/// Signatures from `threads` OS threads each looping on its own session.
async fn bare_rate(
    hsm: &Hsm,
    id: &crate::hsm::KeyId,
    scheme: SignatureScheme,
    data: &Arc<[u8]>,
    threads: usize,
    duration: Duration,
) -> Result<Run> {
    let cpu = process_cpu()?;
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
    Ok(Run {
        ops: total,
        wall: start.elapsed(),
        cpu: process_cpu()?.saturating_sub(cpu),
    })
}

/// Signatures from `callers` async tasks looping on `Hsm::call`.
async fn pooled_rate(
    pool: &Hsm,
    id: &crate::hsm::KeyId,
    scheme: SignatureScheme,
    data: &Arc<[u8]>,
    callers: usize,
    duration: Duration,
) -> Result<Run> {
    let done = Arc::new(AtomicU64::new(0));
    let cpu = process_cpu()?;
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
    Ok(Run {
        ops: done.load(Ordering::Relaxed),
        wall: start.elapsed(),
        cpu: process_cpu()?.saturating_sub(cpu),
    })
}
