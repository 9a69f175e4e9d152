//! `GET /ready`: readiness, for a load balancer or orchestrator deciding whether to
//! send this node mail. 200 only when the database answers, the token is logged in and
//! every next hop answers (the smarthost in force and each managed domain's inbound
//! route: a TCP connect and an SMTP `220` greeting within [`HOP_TIMEOUT`]); 503
//! otherwise, the JSON body saying which part failed. The result is kept for
//! [`CACHE_FOR`], and concurrent probes wait for one check, so a probe storm does not
//! storm the hops. `/health` (liveness) does not look at the hops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::app::App;

/// How long one next hop has to accept the connection and greet.
pub const HOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a result answers probes before the next check.
pub const CACHE_FOR: Duration = Duration::from_secs(3);
/// The longest greeting line read (a hop that sends more is not an SMTP server).
const MAX_LINE: usize = 1024;

#[derive(Clone, Serialize)]
struct Readiness {
    status: &'static str,
    database: Part,
    token: Part,
    next_hops: Vec<Hop>,
    /// Seconds since this result was checked (0 when checked for this request).
    age_secs: u64,
}

#[derive(Clone, Serialize)]
struct Part {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Clone, Serialize)]
struct Hop {
    /// `HOST:PORT` as configured.
    host_port: String,
    /// `smarthost`, or `inbound route of DOMAIN`.
    role: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Default)]
struct Cache(tokio::sync::Mutex<Option<(Instant, Readiness)>>);

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ready", get(ready))
        .layer(Extension(Arc::new(Cache::default())))
}

async fn ready(
    State(app): State<Arc<App>>,
    Extension(cache): Extension<Arc<Cache>>,
) -> impl IntoResponse {
    // Held across the check: a probe arriving meanwhile waits for this result.
    let mut cached = cache.0.lock().await;
    let mut result = match cached.as_ref() {
        Some((at, result)) if at.elapsed() < CACHE_FOR => {
            let mut result = result.clone();
            result.age_secs = at.elapsed().as_secs();
            result
        }
        _ => {
            let result = check(&app).await;
            *cached = Some((Instant::now(), result.clone()));
            result
        }
    };
    drop(cached);
    let ready = result.database.ok && result.token.ok && result.next_hops.iter().all(|h| h.ok);
    result.status = if ready { "ready" } else { "not ready" };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(result))
}

async fn check(app: &App) -> Readiness {
    let database = match app.store.ping().await {
        Ok(()) => Part {
            ok: true,
            error: None,
        },
        Err(e) => {
            tracing::warn!(error = %e, "ready: database check failed");
            Part {
                ok: false,
                error: Some(
                    if e.is_transient() {
                        "unreachable"
                    } else {
                        "error"
                    }
                    .into(),
                ),
            }
        }
    };
    let token = match app.hsm.call("ready", |hsm| hsm.health()).await {
        Ok(t) if t.logged_in => Part {
            ok: true,
            error: None,
        },
        Ok(_) => Part {
            ok: false,
            error: Some("not logged in".into()),
        },
        Err(e) => {
            tracing::warn!(error = %e, "ready: token check failed");
            Part {
                ok: false,
                error: Some(
                    if e.is_transient() {
                        "unavailable"
                    } else {
                        "error"
                    }
                    .into(),
                ),
            }
        }
    };
    let mut next_hops = Vec::new();
    if database.ok {
        match hops(app).await {
            Ok(list) => {
                // All at once: the check takes one HOP_TIMEOUT at most, not one per hop.
                let probes: Vec<_> = list
                    .into_iter()
                    .map(|(host_port, role)| {
                        let task = tokio::spawn({
                            let host_port = host_port.clone();
                            async move { probe(&host_port).await }
                        });
                        (host_port, role, task)
                    })
                    .collect();
                for (host_port, role, task) in probes {
                    let outcome = task
                        .await
                        .unwrap_or_else(|e| Err(format!("probe failed: {e}")));
                    if let Err(e) = &outcome {
                        tracing::warn!(hop = %host_port, %role, error = %e, "ready: next hop does not answer");
                    }
                    next_hops.push(Hop {
                        ok: outcome.is_ok(),
                        error: outcome.err(),
                        host_port,
                        role,
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "ready: next hops not read"),
        }
    }
    Readiness {
        status: "",
        database,
        token,
        next_hops,
        age_secs: 0,
    }
}

/// The next hops in force: the smarthost (database, else configuration) and each
/// managed domain's inbound route, each once.
async fn hops(app: &App) -> Result<Vec<(String, String)>, crate::ops::OpError> {
    let mut list: Vec<(String, String)> = Vec::new();
    if let Some(host_port) = crate::ops::relay_settings::smarthost(&app.ops())
        .await?
        .host_port
    {
        list.push((host_port, "smarthost".into()));
    }
    for domain in app.store.domains().list().await? {
        if let Some(host_port) = domain.next_hop {
            match list.iter_mut().find(|(h, _)| *h == host_port) {
                Some((_, role)) => role.push_str(&format!(", inbound route of {}", domain.name)),
                None => list.push((host_port, format!("inbound route of {}", domain.name))),
            }
        }
    }
    Ok(list)
}

/// Connects to `host_port` and reads its SMTP greeting; `Ok` for a `220`. Says QUIT
/// and closes either way.
async fn probe(host_port: &str) -> Result<(), String> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(host_port)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (read, mut write) = stream.split();
        let mut reader = BufReader::new(read).take(MAX_LINE as u64 * 8);
        let mut line = String::new();
        // A multi-line greeting: `220-…` lines, then `220 …`.
        let greeting = loop {
            line.clear();
            let n = reader
                .read_line(&mut line)
                .await
                .map_err(|e| format!("reading the greeting: {e}"))?;
            if n == 0 {
                break Err("closed without a greeting".to_string());
            }
            if line.len() > MAX_LINE {
                break Err("greeting line too long".to_string());
            }
            let code = line.get(..3).unwrap_or("");
            let more = line.as_bytes().get(3) == Some(&b'-');
            if code != "220" {
                break Err(format!(
                    "greeted with {:?}, not 220",
                    line.trim_end().chars().take(80).collect::<String>()
                ));
            }
            if !more {
                break Ok(());
            }
        };
        let _ = write.write_all(b"QUIT\r\n").await;
        greeting
    };
    match tokio::time::timeout(HOP_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no greeting within {}s", HOP_TIMEOUT.as_secs())),
    }
}
