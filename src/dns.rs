//! The MX check: does a managed domain's mail reach this gateway? A domain's
//! mailboxes get certificates only when its preferred MX points at
//! `[gateway].hostname` (DESIGN §5): by name, or by the addresses the MX host and
//! the gateway's host name resolve to. Asks the resolver of `[dns].resolver` (tests:
//! a local DNS server), else the system's.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::config::DnsConfig;

/// What the DNS says about a domain's mail route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MxVerdict {
    /// The preferred MX hosts all point at the gateway.
    PointsHere,
    /// A preferred MX host points elsewhere.
    Elsewhere,
    /// The domain does not exist (NXDOMAIN).
    NoSuchDomain,
    /// The domain has neither MX nor address records.
    NoMx,
    /// The DNS could not be asked (timeout, refused, server failure).
    LookupFailed,
}

/// One MX host of the domain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MxHost {
    pub preference: u16,
    /// The host name, lower case, without the final dot; for the implicit MX (no MX
    /// records, RFC 5321 §5.1) the domain itself.
    pub exchange: String,
    pub addresses: Vec<IpAddr>,
    /// It is the gateway by name or by address.
    pub points_here: bool,
}

/// `domain check`'s answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MxReport {
    pub domain: String,
    /// `[gateway].hostname` and the addresses it resolves to.
    pub gateway: String,
    pub gateway_addresses: Vec<IpAddr>,
    pub mx: Vec<MxHost>,
    pub verdict: MxVerdict,
    /// One sentence for the operator.
    pub message: String,
}

impl MxReport {
    pub fn ok(&self) -> bool {
        self.verdict == MxVerdict::PointsHere
    }
}

/// A resolver per `[dns]`.
pub fn resolver(config: &DnsConfig) -> Result<TokioResolver, String> {
    let mut options = ResolverOpts::default();
    options.timeout = Duration::from_secs(config.timeout_secs.max(1));
    options.attempts = 2;
    // Both address families: an MX host matches the gateway by any of its addresses.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    let builder = if config.resolver.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
    } else {
        let address: SocketAddr = config
            .resolver
            .parse()
            .map_err(|e| format!("[dns].resolver '{}': {e}", config.resolver))?;
        let mut server = NameServerConfig::udp_and_tcp(address.ip());
        for connection in &mut server.connections {
            connection.port = address.port();
        }
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        )
    };
    let mut builder = builder.with_options(options);
    // Only the DNS answers count: no search domains, nothing from /etc/hosts
    // would make sense for a domain's MX anyway.
    builder.options_mut().ndots = 0;
    builder
        .build()
        .map_err(|e| format!("cannot build the DNS resolver: {e}"))
}

/// The name as a fully qualified DNS name (one query, no search list).
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

enum Lookup<T> {
    Found(T),
    NoRecords,
    NoSuchDomain,
    Failed(String),
}

fn classify<T>(result: Result<T, NetError>) -> Lookup<T> {
    match result {
        Ok(found) => Lookup::Found(found),
        Err(e) if e.is_nx_domain() => Lookup::NoSuchDomain,
        Err(e) if e.is_no_records_found() => Lookup::NoRecords,
        Err(e) => Lookup::Failed(e.to_string()),
    }
}

/// The A and AAAA addresses of `host`; none when it has none or the lookup fails.
async fn addresses(resolver: &TokioResolver, host: &str) -> Lookup<Vec<IpAddr>> {
    match classify(resolver.lookup_ip(fqdn(host)).await) {
        Lookup::Found(ips) => {
            let set: BTreeSet<IpAddr> = ips.iter().collect();
            Lookup::Found(set.into_iter().collect())
        }
        Lookup::NoRecords => Lookup::NoRecords,
        Lookup::NoSuchDomain => Lookup::NoSuchDomain,
        Lookup::Failed(e) => Lookup::Failed(e),
    }
}

/// Checks whether the MX of `domain` points at `gateway` (`[gateway].hostname`).
pub async fn check_mx(config: &DnsConfig, domain: &str, gateway: &str) -> MxReport {
    let domain = normalise(domain);
    let gateway = normalise(gateway);
    let mut report = MxReport {
        domain: domain.clone(),
        gateway: gateway.clone(),
        gateway_addresses: Vec::new(),
        mx: Vec::new(),
        verdict: MxVerdict::LookupFailed,
        message: String::new(),
    };
    let resolver = match resolver(config) {
        Ok(r) => r,
        Err(e) => {
            report.message = e;
            return report;
        }
    };
    if let Lookup::Found(ips) = addresses(&resolver, &gateway).await {
        report.gateway_addresses = ips;
    }
    let mut hosts: Vec<(u16, String)> = match classify(resolver.mx_lookup(fqdn(&domain)).await) {
        Lookup::Found(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|record| match &record.data {
                RData::MX(mx) => Some((mx.preference, normalise(&mx.exchange.to_ascii()))),
                _ => None,
            })
            .collect(),
        Lookup::NoRecords => Vec::new(),
        Lookup::NoSuchDomain => {
            report.verdict = MxVerdict::NoSuchDomain;
            report.message = format!("domain {domain} does not exist in the DNS (NXDOMAIN)");
            return report;
        }
        Lookup::Failed(e) => {
            report.message = format!("the MX lookup of {domain} failed: {e}");
            return report;
        }
    };
    // No MX: mail goes to the domain's own address (the implicit MX, RFC 5321 §5.1).
    let implicit = hosts.is_empty();
    if implicit {
        hosts.push((0, domain.clone()));
    }
    hosts.sort();
    hosts.dedup();
    for (preference, exchange) in hosts {
        // A null MX (RFC 7505, ".") accepts no mail at all.
        if exchange.is_empty() {
            report.mx.push(MxHost {
                preference,
                exchange: ".".into(),
                addresses: Vec::new(),
                points_here: false,
            });
            continue;
        }
        let ips = match addresses(&resolver, &exchange).await {
            Lookup::Found(ips) => ips,
            Lookup::NoRecords | Lookup::NoSuchDomain => Vec::new(),
            Lookup::Failed(e) => {
                report.message = format!("the address lookup of {exchange} failed: {e}");
                return report;
            }
        };
        let points_here =
            exchange == gateway || ips.iter().any(|ip| report.gateway_addresses.contains(ip));
        report.mx.push(MxHost {
            preference,
            exchange,
            addresses: ips,
            points_here,
        });
    }
    if implicit && report.mx.iter().all(|m| m.addresses.is_empty()) {
        report.mx.clear();
        report.verdict = MxVerdict::NoMx;
        report.message = format!("domain {domain} has no MX record (and no address)");
        return report;
    }
    let best = report.mx.iter().map(|m| m.preference).min().unwrap_or(0);
    let preferred: Vec<&MxHost> = report.mx.iter().filter(|m| m.preference == best).collect();
    let hosts = report
        .mx
        .iter()
        .map(describe)
        .collect::<Vec<_>>()
        .join(", ");
    if preferred.iter().all(|m| m.points_here) {
        report.verdict = MxVerdict::PointsHere;
        report.message = format!("the MX of {domain} points at this gateway ({gateway}): {hosts}");
    } else {
        report.verdict = MxVerdict::Elsewhere;
        report.message = format!(
            "the MX of {domain} does not point at this gateway ({gateway}{}): {hosts}",
            if report.gateway_addresses.is_empty() {
                String::new()
            } else {
                format!(
                    " = {}",
                    report
                        .gateway_addresses
                        .iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        );
    }
    report
}

fn describe(mx: &MxHost) -> String {
    let addresses = if mx.addresses.is_empty() {
        "no address".to_string()
    } else {
        mx.addresses
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("MX {} {} ({addresses})", mx.preference, mx.exchange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_or_final_dot() {
        assert_eq!(normalise("MX.Corp.Example."), "mx.corp.example");
        assert_eq!(fqdn("corp.example"), "corp.example.");
        assert_eq!(fqdn("corp.example."), "corp.example.");
    }
}
