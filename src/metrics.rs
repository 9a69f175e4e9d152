//! The gateway's Prometheus metrics (`GET /metrics` on the plain HTTP listener): one
//! [`Metrics`] made by `serve` and shared with the relay, the SMTP listeners and the
//! token pool. Counters and histograms are recorded where the work happens (atomic
//! updates and static label sets: no allocation, no lock held across an await); the
//! gauges of state kept in the database (certificates expiring, seats) are read at
//! scrape time. Every metric and its labels are listed in docs/operations.md
//! "Metrics".

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::smtp::server::Budget;
use crate::store::{CryptoResult, LogStatus, Store, StoreError};

/// Label sets are arrays of static pairs: hashing them allocates nothing.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Latency buckets in seconds: 1 ms … ~33 s (token operations are milliseconds, a
/// next hop or a 25 MB message seconds).
#[derive(Clone, Copy)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        latency_histogram()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// A stage of a message's way through the relay, for `smimegate_stage_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// From MAIL to the end of DATA: the client's envelope and message, our RCPT
    /// decisions (and the next hop's RCPT answers) included.
    Receive,
    /// Routing and policy for one recipient at RCPT (database look-ups included, the
    /// next hop excluded).
    Policy,
    /// The S/MIME work on one message (sign/encrypt or decrypt/verify), its token
    /// operations included.
    Smime,
    /// One token operation, its wait for a pooled session included.
    Token,
    /// One exchange with the next hop: MAIL+RCPT, a further RCPT, or the message.
    NextHop,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Receive => "receive",
            Stage::Policy => "policy",
            Stage::Smime => "smime",
            Stage::Token => "token",
            Stage::NextHop => "next_hop",
        }
    }
}

/// Which exchange with the next hop, for `smimegate_next_hop_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopStep {
    Rcpt,
    Data,
}

impl HopStep {
    fn as_str(self) -> &'static str {
        match self {
            HopStep::Rcpt => "rcpt",
            HopStep::Data => "data",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    messages: Family<Labels<2>, Counter>,
    message_crypto: Family<Labels<3>, Counter>,
    smtp_replies: Family<Labels<2>, Counter>,
    stages: Family<Labels<1>, Histogram, LatencyBuckets>,
    token_operations: Family<Labels<1>, Counter>,
    token_errors: Family<Labels<2>, Counter>,
    token_pool_wait: Histogram,
    next_hop_errors: Family<Labels<2>, Counter>,
    certificates_expiring: Gauge,
    seats: Family<Labels<1>, Gauge>,
    in_flight_bytes: Gauge,
    budget: OnceLock<Arc<Budget>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("smimegate");
        let messages = Family::default();
        registry.register(
            "messages",
            "Messages (transactions) ended, by direction and status (relayed, rejected, deferred)",
            Family::clone(&messages),
        );
        let message_crypto = Family::default();
        registry.register(
            "message_crypto",
            "Messages by direction, status and crypto result (one per result a message has: signed, encrypted, decrypted, signature-valid, signature-invalid, other, none)",
            Family::clone(&message_crypto),
        );
        let smtp_replies = Family::default();
        registry.register(
            "smtp_replies",
            "SMTP replies sent, by listener (inbound, submission) and class (2xx, 3xx, 4xx, 5xx)",
            Family::clone(&smtp_replies),
        );
        let stages = Family::new_with_constructor(LatencyBuckets);
        registry.register(
            "stage_seconds",
            "Latency per stage (receive, policy, smime, token, next_hop)",
            Family::clone(&stages),
        );
        let token_operations = Family::default();
        registry.register(
            "token_operations",
            "Token operations run, by operation",
            Family::clone(&token_operations),
        );
        let token_errors = Family::default();
        registry.register(
            "token_errors",
            "Token operations that failed, by operation and kind (busy, timeout, error)",
            Family::clone(&token_errors),
        );
        let token_pool_wait = latency_histogram();
        registry.register(
            "token_pool_wait_seconds",
            "Time a token operation waited for a pooled session",
            token_pool_wait.clone(),
        );
        let next_hop_errors = Family::default();
        registry.register(
            "next_hop_errors",
            "Next-hop exchanges that did not succeed (the hop's 4xx/5xx or our client's 4xx for a hop it could not reach), by step (rcpt, data) and class",
            Family::clone(&next_hop_errors),
        );
        let certificates_expiring = Gauge::default();
        registry.register(
            "certificates_expiring",
            "Current certificates of managed mailboxes expiring within 30 days",
            certificates_expiring.clone(),
        );
        let seats = Family::default();
        registry.register(
            "seats",
            "S/MIME seats used, and free under the licence (free is absent without a licence)",
            Family::clone(&seats),
        );
        let in_flight_bytes = Gauge::default();
        registry.register(
            "in_flight_bytes",
            "Memory reserved by the messages SMTP sessions hold now, 4 times each one's size (the in-flight budget's use)",
            in_flight_bytes.clone(),
        );
        Metrics {
            registry,
            messages,
            message_crypto,
            smtp_replies,
            stages,
            token_operations,
            token_errors,
            token_pool_wait,
            next_hop_errors,
            certificates_expiring,
            seats,
            in_flight_bytes,
            budget: OnceLock::new(),
        }
    }

    /// The SMTP listeners' in-flight byte budget, read at scrape time.
    pub fn watch_budget(&self, budget: Arc<Budget>) {
        let _ = self.budget.set(budget);
    }

    /// One message (transaction) ended, as the message log records it: `actions` are
    /// the log's words.
    pub fn message(&self, direction: &'static str, status: LogStatus, actions: &[String]) {
        let status = status.as_str();
        self.messages
            .get_or_create(&[("direction", direction), ("status", status)])
            .inc();
        let bits = crate::store::crypto_bits(actions);
        let mut any = false;
        for result in CryptoResult::ALL {
            if result != CryptoResult::None && bits & result.bit() != 0 {
                any = true;
                self.crypto(direction, status, result.as_str());
            }
        }
        if !any {
            // Kept encrypted, undecryptable, unchecked …: a crypto note, no result.
            self.crypto(direction, status, if bits == 0 { "none" } else { "other" });
        }
    }

    fn crypto(&self, direction: &'static str, status: &'static str, crypto: &'static str) {
        self.message_crypto
            .get_or_create(&[
                ("direction", direction),
                ("status", status),
                ("crypto", crypto),
            ])
            .inc();
    }

    /// An SMTP reply written by a listener.
    pub fn smtp_reply(&self, listener: &'static str, code: u16) {
        let class = match code / 100 {
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        self.smtp_replies
            .get_or_create(&[("listener", listener), ("class", class)])
            .inc();
    }

    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stages
            .get_or_create(&[("stage", stage.as_str())])
            .observe(took.as_secs_f64());
    }

    /// One exchange with the next hop, started at `started`, that got `code`.
    pub fn next_hop(&self, step: HopStep, started: Instant, code: u16) {
        self.stage(Stage::NextHop, started.elapsed());
        let class = match code / 100 {
            2 | 3 => return,
            4 => "4xx",
            _ => "5xx",
        };
        self.next_hop_errors
            .get_or_create(&[("step", step.as_str()), ("class", class)])
            .inc();
    }

    /// A token operation got a pooled session (a worker) after waiting `waited`.
    pub fn token_wait(&self, waited: Duration) {
        self.token_pool_wait.observe(waited.as_secs_f64());
    }

    /// One token operation ended after `took` (its wait included), failed with
    /// `error` (busy, timeout, error) or not.
    pub fn token_operation(
        &self,
        operation: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        self.token_operations
            .get_or_create(&[("operation", operation)])
            .inc();
        self.stage(Stage::Token, took);
        if let Some(kind) = error {
            self.token_errors
                .get_or_create(&[("operation", operation), ("kind", kind)])
                .inc();
        }
    }

    /// The metrics in the Prometheus text format (OpenMetrics 1.0), the gauges read
    /// now. A database that does not answer leaves its gauges at their last values
    /// (and says so in the log): the counters stay available.
    pub async fn render(&self, store: &Store) -> String {
        if let Err(e) = self.read_gauges(store).await {
            tracing::warn!(error = %e, "metrics: reading the gauges from the database failed");
        }
        if let Some(budget) = self.budget.get() {
            self.in_flight_bytes
                .set(i64::try_from(budget.used()).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        text
    }

    async fn read_gauges(&self, store: &Store) -> Result<(), StoreError> {
        let now = crate::store::unix_now();
        let expiring = store
            .certificates()
            .count_managed_expiring(now, now + crate::ops::dashboard::EXPIRING_SECS)
            .await?;
        self.certificates_expiring.set(expiring);
        let licence = store.licence().get().await?;
        let used = store.licence().usage().await?.total();
        self.seats.get_or_create(&[("state", "used")]).set(used);
        match licence {
            Some(l) => {
                self.seats
                    .get_or_create(&[("state", "free")])
                    .set((l.smime_seats - used).max(0));
            }
            None => {
                self.seats.remove(&[("state", "free")]);
            }
        }
        Ok(())
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_and_encrypted_message_counts_once_and_under_both_results() {
        let metrics = Metrics::new();
        metrics.message(
            "outbound",
            LogStatus::Relayed,
            &["signed".to_string(), "encrypted".to_string()],
        );
        metrics.message("inbound", LogStatus::Rejected, &["rejected".to_string()]);
        let mut text = String::new();
        encode(&mut text, &metrics.registry).expect("encode");
        assert!(
            text.contains(r#"smimegate_messages_total{direction="outbound",status="relayed"} 1"#),
            "{text}"
        );
        for crypto in ["signed", "encrypted"] {
            let line = format!(
                r#"smimegate_message_crypto_total{{direction="outbound",status="relayed",crypto="{crypto}"}} 1"#
            );
            assert!(text.contains(&line), "{line} missing in {text}");
        }
        assert!(
            text.contains(r#"smimegate_message_crypto_total{direction="inbound",status="rejected",crypto="none"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_next_hop_refusal_is_an_error_and_its_time_is_observed() {
        let metrics = Metrics::new();
        metrics.next_hop(HopStep::Data, Instant::now(), 451);
        metrics.next_hop(HopStep::Data, Instant::now(), 250);
        let mut text = String::new();
        encode(&mut text, &metrics.registry).expect("encode");
        assert!(
            text.contains(r#"smimegate_next_hop_errors_total{step="data",class="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"smimegate_stage_seconds_count{stage="next_hop"} 2"#),
            "{text}"
        );
    }
}
