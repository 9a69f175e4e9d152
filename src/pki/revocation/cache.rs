//! The CRL cache: a copy in memory, the `partner_crls` table shared by every node, and
//! downloads that run as background tasks. A check waits for a CRL it has never seen
//! at most [`RevocationSettings::reply_wait`]; the download goes on after that, and
//! the next check finds it. A distribution point that just failed is not tried again
//! for [`FAILURE_BACKOFF`] (the failure is the answer meanwhile), so an unreachable CRL
//! server costs an SMTP reply nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use der::Decode;
use sha2::Digest;
use tokio::sync::watch;
use x509_cert::certificate::Certificate;
use x509_cert::crl::CertificateList;

use super::check::{self, CrlSource, Status};
use crate::config::{RevocationConfig, RevocationMode};
use crate::store::{CachedCrl, Store, unix_now};

/// How long a failed download is the answer before the URL is tried again.
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(60);
/// A CRL is refreshed this long before its nextUpdate.
const BEFORE_NEXT_UPDATE: i64 = 300;
/// How long a computed status of a certificate to encrypt to is reused (while no CRL
/// changed).
const STATUS_TTL: Duration = Duration::from_secs(60);

/// `[revocation]` as the checker uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationSettings {
    pub mode: RevocationMode,
    pub fetch_timeout: Duration,
    pub max_crl_bytes: usize,
    pub refresh_interval: Duration,
    pub reply_wait: Duration,
}

impl From<&RevocationConfig> for RevocationSettings {
    fn from(c: &RevocationConfig) -> Self {
        RevocationSettings {
            mode: c.mode,
            fetch_timeout: Duration::from_secs(c.fetch_timeout_secs),
            max_crl_bytes: c.max_crl_bytes,
            refresh_interval: Duration::from_secs(c.refresh_interval_secs),
            reply_wait: Duration::from_millis(c.reply_wait_ms),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    der: Arc<Vec<u8>>,
    next_update: Option<i64>,
    fetched_at: i64,
}

impl Entry {
    fn current(&self, now: i64) -> bool {
        self.next_update.is_some_and(|n| n > now)
    }
}

/// The checker's state: one per process, shared by the relay, the background refresh
/// and the CLI.
pub struct Revocations {
    settings: RevocationSettings,
    store: Store,
    memory: Mutex<HashMap<String, Entry>>,
    failures: Mutex<HashMap<String, (Instant, String)>>,
    inflight: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Bumped whenever a cached CRL changes: computed statuses are then stale.
    generation: AtomicU64,
    statuses: Mutex<HashMap<String, (u64, Instant, Status)>>,
}

fn parse_crl(der: &[u8]) -> Result<(String, i64, Option<i64>), String> {
    let crl = CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der)
        .map_err(|e| format!("not a CRL ({e})"))?;
    // What the checker will use it with must accept it too.
    webpki::BorrowedCertRevocationList::from_der(der)
        .map_err(|e| format!("not a usable CRL ({e:?})"))?;
    let secs = |t: &x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    Ok((
        crl.tbs_cert_list.issuer.to_string(),
        secs(&crl.tbs_cert_list.this_update),
        crl.tbs_cert_list.next_update.as_ref().map(secs),
    ))
}

/// A CRL as served: DER, or PEM (`-----BEGIN X509 CRL-----`).
fn to_der(body: Vec<u8>) -> Result<Vec<u8>, String> {
    if body.starts_with(b"-----BEGIN") {
        let (label, der) =
            der::pem::decode_vec(&body).map_err(|e| format!("not a PEM CRL ({e})"))?;
        if label != "X509 CRL" {
            return Err(format!("PEM of a {label}, not of a CRL"));
        }
        Ok(der)
    } else {
        Ok(body)
    }
}

impl Revocations {
    pub fn new(store: Store, settings: RevocationSettings) -> Arc<Revocations> {
        Arc::new(Revocations {
            settings,
            store,
            memory: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            statuses: Mutex::new(HashMap::new()),
        })
    }

    pub fn settings(&self) -> &RevocationSettings {
        &self.settings
    }

    pub fn mode(&self) -> RevocationMode {
        self.settings.mode
    }

    fn remembered(&self, url: &str) -> Option<Entry> {
        self.memory.lock().ok()?.get(url).cloned()
    }

    fn remember(&self, url: &str, entry: Entry) {
        if let Ok(mut m) = self.memory.lock() {
            m.insert(url.to_string(), entry);
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn failure(&self, url: &str) -> Option<String> {
        let failures = self.failures.lock().ok()?;
        let (at, why) = failures.get(url)?;
        (at.elapsed() < FAILURE_BACKOFF).then(|| why.clone())
    }

    /// The CRL published at `url`: from memory or the database when current, else
    /// downloaded (waiting at most the reply bound for it). An expired CRL is returned
    /// when nothing newer can be had: the check then says why it is unknown.
    pub async fn crl(self: &Arc<Self>, url: &str) -> Result<Arc<Vec<u8>>, String> {
        let now = unix_now();
        let mut best = self.remembered(url);
        if let Some(entry) = best.as_ref().filter(|e| e.current(now)) {
            return Ok(entry.der.clone());
        }
        match self.store.crls().get(url).await {
            Ok(Some(row)) if best.as_ref().is_none_or(|b| row.fetched_at > b.fetched_at) => {
                let entry = Entry {
                    der: Arc::new(row.der),
                    next_update: row.next_update,
                    fetched_at: row.fetched_at,
                };
                self.remember(url, entry.clone());
                if entry.current(now) {
                    return Ok(entry.der);
                }
                best = Some(entry);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(url, error = %e, "cannot read the CRL cache"),
        }
        if self.failure(url).is_none() {
            let mut done = self.start_fetch(url);
            let _ = tokio::time::timeout(self.settings.reply_wait, done.wait_for(|d| *d)).await;
            if let Some(entry) = self.remembered(url) {
                best = Some(entry);
            }
        }
        match (best, self.failure(url)) {
            (Some(entry), _) if entry.current(unix_now()) => Ok(entry.der),
            (_, Some(why)) => Err(why),
            (Some(entry), None) => Ok(entry.der),
            (None, None) => Err(format!(
                "still downloading after {} ms",
                self.settings.reply_wait.as_millis()
            )),
        }
    }

    /// Starts downloading `url` in the background unless that is under way; the
    /// receiver turns true when it is done.
    fn start_fetch(self: &Arc<Self>, url: &str) -> watch::Receiver<bool> {
        let Ok(mut inflight) = self.inflight.lock() else {
            return watch::channel(true).1;
        };
        if let Some(rx) = inflight.get(url) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        inflight.insert(url.to_string(), rx.clone());
        let this = self.clone();
        let url = url.to_string();
        tokio::spawn(async move {
            this.download(&url).await;
            if let Ok(mut inflight) = this.inflight.lock() {
                inflight.remove(&url);
            }
            let _ = tx.send(true);
        });
        rx
    }

    /// Downloads, checks and caches one CRL (memory and database); a failure is
    /// remembered for [`FAILURE_BACKOFF`].
    async fn download(&self, url: &str) {
        let result = match super::fetch::get(
            url,
            self.settings.fetch_timeout,
            self.settings.max_crl_bytes,
        )
        .await
        {
            Ok(body) => to_der(body).and_then(|der| parse_crl(&der).map(|p| (der, p))),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok((der, (issuer, this_update, next_update))) => {
                let fetched_at = unix_now();
                tracing::info!(url, %issuer, next_update, "CRL fetched");
                let row = CachedCrl {
                    url: url.to_string(),
                    der,
                    issuer,
                    this_update,
                    next_update,
                    fetched_at,
                };
                if let Err(e) = self.store.crls().put(&row).await {
                    tracing::warn!(url, error = %e, "cannot store the CRL in the database");
                }
                self.remember(
                    url,
                    Entry {
                        der: Arc::new(row.der),
                        next_update,
                        fetched_at,
                    },
                );
                // A CRL that is not current is no answer: it is kept (the check says
                // why the status is unknown) and, like a failure, not asked for again
                // before the back-off has passed.
                let stale = next_update.is_none_or(|n| n <= fetched_at);
                if let Ok(mut f) = self.failures.lock() {
                    if stale {
                        let why = match next_update {
                            Some(n) => format!("the CRL it serves expired at {}", rfc3339(n)),
                            None => "the CRL it serves has no nextUpdate".to_string(),
                        };
                        tracing::warn!(url, "{why}");
                        f.insert(url.to_string(), (Instant::now(), why));
                    } else {
                        f.remove(url);
                    }
                }
            }
            Err(why) => {
                tracing::warn!(url, error = %why, "CRL download failed");
                if let Ok(mut f) = self.failures.lock() {
                    f.insert(url.to_string(), (Instant::now(), why));
                }
            }
        }
    }

    /// Whether the certificate (DER) is one of ours, and revoked in our database.
    pub async fn own_certificate(&self, der: &[u8]) -> Option<bool> {
        let fingerprint = hex::encode(sha2::Sha256::digest(der));
        match self.store.crls().own_certificate(&fingerprint).await {
            Ok(own) => own.map(|o| o.revoked_at.is_some()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read our certificate's revocation");
                None
            }
        }
    }

    /// A [`CrlSource`] for blocking code on `runtime` (verification runs on a
    /// blocking thread).
    pub fn blocking(self: &Arc<Self>, runtime: tokio::runtime::Handle) -> Blocking {
        Blocking {
            revocations: self.clone(),
            runtime,
        }
    }

    /// The status of a partner certificate before encrypting to it, reused for a
    /// minute while no CRL changed. `anchors` are the trust anchors' certificates.
    pub async fn encryption_status(
        self: &Arc<Self>,
        cert: &Certificate,
        anchors: Vec<Certificate>,
    ) -> Status {
        let key = der::Encode::to_der(cert)
            .map(|d| hex::encode(sha2::Sha256::digest(d)))
            .unwrap_or_default();
        let generation = self.generation.load(Ordering::Relaxed);
        if let Some((g, at, status)) = self.statuses.lock().ok().and_then(|s| s.get(&key).cloned())
            && g == generation
            && at.elapsed() < STATUS_TTL
        {
            return status;
        }
        let cas: Vec<Certificate> = match self.store.crls().ca_certificates().await {
            Ok(ders) => ders
                .iter()
                .filter_map(|d| Certificate::from_der(d).ok())
                .collect(),
            Err(e) => {
                return Status::Unknown(format!("the CA certificates cannot be read ({e})"));
            }
        };
        let source = self.blocking(tokio::runtime::Handle::current());
        let cert = cert.clone();
        let status = tokio::task::spawn_blocking(move || {
            check::certificate_status(&cert, &cas, &anchors, now_unix_time(), &source)
        })
        .await
        .unwrap_or_else(|e| Status::Unknown(format!("the check failed ({e})")));
        // An unknown status may be a download still under way: not kept.
        if !matches!(status, Status::Unknown(_))
            && let Ok(mut s) = self.statuses.lock()
        {
            if s.len() > 10_000 {
                s.clear();
            }
            s.insert(key, (generation, Instant::now(), status.clone()));
        }
        status
    }

    /// Remembers the CA certificates of a verified partner path (for the checks before
    /// encrypting to the partner later).
    pub async fn remember_cas(&self, cas: &[Vec<u8>]) {
        for der in cas {
            let Ok(cert) = Certificate::from_der(der) else {
                continue;
            };
            let fingerprint = hex::encode(sha2::Sha256::digest(der));
            let subject = cert.tbs_certificate().subject().to_string();
            if let Err(e) = self
                .store
                .crls()
                .remember_ca(&fingerprint, &subject, der)
                .await
            {
                tracing::warn!(error = %e, "cannot store a partner CA certificate");
            }
        }
    }

    /// One round of the background refresh: every distribution point of the partner
    /// certificates and partner CA certificates we know, and every CRL cached, is
    /// downloaded again when its refresh interval has passed or its nextUpdate is near
    /// (unless another node did so meanwhile: the database is read first).
    pub async fn refresh_round(self: &Arc<Self>) {
        let mut urls: HashSet<String> = HashSet::new();
        let crls = self.store.crls();
        let mut ders = crls.partner_certificates().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "CRL refresh: cannot list partner certificates");
            Vec::new()
        });
        ders.extend(crls.ca_certificates().await.unwrap_or_default());
        for der in &ders {
            if let Ok(cert) = Certificate::from_der(der) {
                urls.extend(check::distribution_points(&cert));
            }
        }
        let cached = crls.list().await.unwrap_or_default();
        urls.extend(cached.iter().map(|(u, _, _)| u.clone()));
        if let Ok(m) = self.memory.lock() {
            urls.extend(m.keys().cloned());
        }
        let mut urls: Vec<String> = urls.into_iter().collect();
        urls.sort();
        for url in urls {
            let now = unix_now();
            let due = |fetched_at: i64, next_update: Option<i64>| {
                now >= fetched_at + self.settings.refresh_interval.as_secs() as i64
                    || next_update.is_none_or(|n| now >= n - BEFORE_NEXT_UPDATE)
            };
            if let Some((_, fetched_at, next_update)) = cached.iter().find(|(u, _, _)| *u == url)
                && !due(*fetched_at, *next_update)
            {
                // Fresh in the database (perhaps from another node): take it.
                if self
                    .remembered(&url)
                    .is_none_or(|e| e.fetched_at < *fetched_at || e.next_update != *next_update)
                    && let Ok(Some(row)) = crls.get(&url).await
                {
                    self.remember(
                        &url,
                        Entry {
                            der: Arc::new(row.der),
                            next_update: row.next_update,
                            fetched_at: row.fetched_at,
                        },
                    );
                }
                continue;
            }
            if self.failure(&url).is_some() {
                continue;
            }
            let mut done = self.start_fetch(&url);
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// Runs [`Self::refresh_round`] now and then for ever (a task of `serve`).
    pub async fn run_refresh(self: Arc<Self>) {
        let tick = (self.settings.refresh_interval / 4)
            .clamp(Duration::from_secs(10), Duration::from_secs(300));
        loop {
            self.refresh_round().await;
            tokio::time::sleep(tick).await;
        }
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Now, as webpki counts time.
pub fn now_unix_time() -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::since_unix_epoch(
        std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// [`Revocations`] for code on a blocking thread.
#[derive(Clone)]
pub struct Blocking {
    revocations: Arc<Revocations>,
    runtime: tokio::runtime::Handle,
}

impl CrlSource for Blocking {
    fn mode(&self) -> RevocationMode {
        self.revocations.mode()
    }

    fn crl(&self, url: &str) -> Result<Arc<Vec<u8>>, String> {
        self.runtime.block_on(self.revocations.crl(url))
    }

    fn own_certificate(&self, der: &[u8]) -> Option<bool> {
        self.runtime.block_on(self.revocations.own_certificate(der))
    }
}
