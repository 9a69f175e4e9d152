//! `GET /metrics` on the plain HTTP port after real SMTP traffic: the counters and
//! histograms the relay, the listeners and the token pool record, in a text a
//! Prometheus server can parse.

use std::collections::HashMap;

use super::harness::{Client, Gateway, mailbox};
use super::{ALICE, message, openssl_verify};

/// Every sample of the exposition as `name{labels}` → value; panics on any line that
/// is neither a comment nor `name{labels} value` / `name value`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(
                labels.ends_with('}') && labels.len() >= 2,
                "bad labels in {line:?}"
            );
            for pair in labels[1..labels.len() - 1]
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let (key, value) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && value.len() >= 2
                        && value.starts_with('"')
                        && value.ends_with('"'),
                    "bad label {pair:?} in {line:?}"
                );
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.insert(series.to_string(), value);
    }
    samples
}

fn scrape_text(gw: &Gateway) -> String {
    let (status, body) = gw.http_get("/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("UTF-8");
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

fn scrape(gw: &Gateway) -> HashMap<String, f64> {
    parse(&scrape_text(gw))
}

/// The `smimegate_…` names a text mentions, without the sample suffixes.
fn names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for (at, _) in text.match_indices("smimegate_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        names.insert(family);
    }
    names
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_count_a_signed_message_and_a_refused_one_and_time_their_stages() {
    let gw = Gateway::start(|d| mailbox(d, ALICE));
    let before = scrape(&gw);
    assert_eq!(
        value(&before, r#"smimegate_seats{state="used"}"#),
        1.0,
        "{before:?}"
    );
    assert_eq!(value(&before, "smimegate_in_flight_bytes"), 0.0);
    assert_eq!(
        value(&before, "smimegate_certificates_expiring"),
        0.0,
        "a new certificate is valid for longer than 30 days"
    );

    // Signed and relayed, through the submission listener.
    let mut client = Client::internal(gw.submission);
    let t = client.send(
        ALICE,
        &["bob@partner.example"],
        &message(ALICE, "bob@partner.example", "metrics", "counted"),
    );
    assert_eq!(t.data.as_ref().map(|d| d.0), Some(250), "{t:?}");
    let delivered = gw.smarthost.messages();
    openssl_verify(gw.data(), &delivered[0], &gw.ca_pem(ALICE));

    // Relaying from the internet: refused at RCPT on the inbound listener.
    let mut outsider = Client::connect(gw.inbound);
    let t = outsider.send(
        "mallory@evil.example",
        &["bob@partner.example"],
        &message("mallory@evil.example", "bob@partner.example", "relay", "x"),
    );
    assert_eq!(t.rcpts[0].0, 554, "{t:?}");
    drop(outsider);
    drop(client);

    let after = scrape(&gw);
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved(r#"smimegate_messages_total{direction="outbound",status="relayed"}"#),
        1.0,
        "{after:?}"
    );
    assert_eq!(
        moved(
            r#"smimegate_message_crypto_total{direction="outbound",status="relayed",crypto="signed"}"#
        ),
        1.0,
        "{after:?}"
    );
    assert_eq!(
        moved(r#"smimegate_messages_total{direction="outbound",status="rejected"}"#),
        1.0,
        "{after:?}"
    );
    assert!(moved(r#"smimegate_smtp_replies_total{listener="submission",class="2xx"}"#) >= 4.0);
    assert!(moved(r#"smimegate_smtp_replies_total{listener="inbound",class="5xx"}"#) >= 1.0);
    for stage in ["receive", "policy", "smime", "token", "next_hop"] {
        assert!(
            moved(&format!(
                r#"smimegate_stage_seconds_count{{stage="{stage}"}}"#
            )) >= 1.0,
            "stage {stage}: {after:?}"
        );
    }
    let token_ops: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("smimegate_token_operations_total{"))
        .map(|(_, v)| v)
        .sum();
    assert!(token_ops >= 1.0, "{after:?}");
    assert!(value(&after, "smimegate_token_pool_wait_seconds_count") >= 1.0);
    assert_eq!(value(&after, "smimegate_in_flight_bytes"), 0.0);

    // The operations guide lists every metric exposed (families without samples yet
    // are not in the text), and the sample dashboard uses only metrics it lists.
    let text = scrape_text(&gw);
    let families: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    let guide =
        std::fs::read_to_string(format!("{root}/docs/operations.md")).expect("operations.md");
    let section = guide
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Metrics section");
    let listed = names_in(section);
    assert!(
        families.is_subset(&listed),
        "{families:?} not all in {listed:?}"
    );
    let dashboard =
        std::fs::read_to_string(format!("{root}/docs/grafana-dashboard.json")).expect("dashboard");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let used = names_in(&dashboard);
    assert!(used.len() >= 8, "{used:?}");
    assert!(used.is_subset(&listed), "{used:?} not all in {listed:?}");
}
