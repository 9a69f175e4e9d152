//! Typed configuration: one TOML file, every key optional, every default documented
//! in [`TEMPLATE`] beside its key. Secrets (the token PIN) never live in this file:
//! they come from a file or an environment variable named here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::hsm::KeyAlgorithm;

/// The file `smimegate init` writes. A test proves it parses to [`Config::default`],
/// so the documentation beside each key cannot drift from the code.
pub const TEMPLATE: &str = include_str!("template.toml");

/// Name of the configuration file inside the data directory (where it is unless
/// `--config FILE` / `SMIMEGATE_CONFIG` names another place, as the Debian package's
/// `/etc/smimegate/smimegate.toml`).
pub const CONFIG_FILE: &str = "smimegate.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no configuration at {path}: run `{init}` first")]
    Missing { path: PathBuf, init: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub database: DatabaseConfig,
    pub hsm: HsmSection,
    pub ca: CaConfig,
    pub lifecycle: LifecycleConfig,
    pub http: HttpConfig,
    pub console: ConsoleConfig,
    pub smtp: SmtpConfig,
    pub relay: RelayConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub revocation: RevocationConfig,
    pub dns: DnsConfig,
    pub saml: SamlConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub inbound_listen: String,
    pub submission_listen: String,
    pub max_connections: usize,
    pub command_timeout_secs: u64,
    pub session_deadline_secs: u64,
    pub max_line_bytes: usize,
    pub max_header_bytes: usize,
    pub max_recipients: usize,
    pub max_connections_per_ip: usize,
    pub max_refused_recipients: usize,
    pub max_auth_failures: u32,
    pub message_budget_bytes: usize,
    pub shutdown_grace_secs: u64,
    pub submission_auth: bool,
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            inbound_listen: "127.0.0.1:2525".into(),
            submission_listen: "127.0.0.1:2587".into(),
            max_connections: 256,
            command_timeout_secs: 300,
            session_deadline_secs: 1800,
            max_line_bytes: 4096,
            max_header_bytes: 1024 * 1024,
            max_recipients: 100,
            max_connections_per_ip: 20,
            max_refused_recipients: 20,
            max_auth_failures: 3,
            message_budget_bytes: 256 * 1024 * 1024,
            shutdown_grace_secs: 30,
            submission_auth: true,
            tls_certificate: PathBuf::from("smtp-tls.pem"),
            tls_key: PathBuf::from("token"),
        }
    }
}

impl SmtpConfig {
    fn validate(&self, limits: &LimitsConfig) -> Result<(), ConfigError> {
        let at_least_one = |key: &'static str, value: u64| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        at_least_one("smtp.max_connections", self.max_connections as u64)?;
        at_least_one(
            "smtp.max_connections_per_ip",
            self.max_connections_per_ip as u64,
        )?;
        at_least_one("smtp.command_timeout_secs", self.command_timeout_secs)?;
        at_least_one("smtp.session_deadline_secs", self.session_deadline_secs)?;
        at_least_one("smtp.max_recipients", self.max_recipients as u64)?;
        if self.max_line_bytes < 512 {
            return Err(ConfigError::Invalid {
                key: "smtp.max_line_bytes",
                message: "must be at least 512 (RFC 5321 §4.5.3.1.4)".into(),
            });
        }
        // A message the size limit allows must fit the budget, or it could never pass.
        if self.message_budget_bytes < limits.max_message_bytes {
            return Err(ConfigError::Invalid {
                key: "smtp.message_budget_bytes",
                message: format!(
                    "must be at least limits.max_message_bytes ({})",
                    limits.max_message_bytes
                ),
            });
        }
        Ok(())
    }

    /// The session limits these settings give (the byte and header limits included).
    pub fn limits(
        &self,
        limits: &LimitsConfig,
        per_ip_exempt: Vec<crate::relay::network::Network>,
    ) -> crate::smtp::server::Limits {
        crate::smtp::server::Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            per_ip_exempt,
            max_line_bytes: self.max_line_bytes,
            max_header_bytes: self.max_header_bytes,
            max_message_bytes: limits.max_message_bytes,
            max_recipients: self.max_recipients,
            max_refused_recipients: self.max_refused_recipients,
            max_errors: crate::smtp::server::Limits::default().max_errors,
            max_auth_failures: self.max_auth_failures,
            command_timeout: Duration::from_secs(self.command_timeout_secs),
            session_deadline: Duration::from_secs(self.session_deadline_secs),
            message_budget_bytes: self.message_budget_bytes,
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    pub smarthost: String,
    pub internal_networks: Vec<String>,
    pub connect_timeout_secs: u64,
    pub reply_timeout_secs: u64,
    /// TLS towards every next hop without its own `[relay.hop."…"]` section.
    pub next_hop_tls: NextHopTls,
    /// PEM bundle of trusted CAs for `verify` when a hop names none: Debian's system
    /// roots by default.
    pub next_hop_ca_file: PathBuf,
    /// Per next hop (`"HOST:PORT"`, or `"HOST"` for every port): its TLS settings.
    pub hop: BTreeMap<String, HopConfig>,
}

/// STARTTLS towards a next hop (RFC 3207; RFC 7435 for the opportunistic case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NextHopTls {
    /// Never.
    Off,
    /// When offered, with any certificate; a failed handshake is a temporary failure.
    Opportunistic,
    /// Always, with any certificate; a next hop without STARTTLS is a temporary failure.
    Required,
    /// Always, and the certificate must chain to a trusted CA and carry the hop's name.
    Verify,
    /// Always, and the end-entity certificate's SHA-256 fingerprint must be a pinned one.
    Pin,
}

impl NextHopTls {
    pub fn as_str(self) -> &'static str {
        match self {
            NextHopTls::Off => "off",
            NextHopTls::Opportunistic => "opportunistic",
            NextHopTls::Required => "required",
            NextHopTls::Verify => "verify",
            NextHopTls::Pin => "pin",
        }
    }
}

/// `[relay.hop."HOST:PORT"]`: TLS settings of one next hop (the smarthost, or a
/// domain's inbound route), overriding `[relay].next_hop_tls`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HopConfig {
    /// The TLS level for this hop; unset: `[relay].next_hop_tls`.
    pub tls: Option<NextHopTls>,
    /// PEM bundle of CAs trusted for this hop under `verify`; unset:
    /// `[relay].next_hop_ca_file`.
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry under `verify`; unset: the hop's host
    /// (set it when the hop is written as an IP address).
    pub server_name: Option<String>,
    /// Under `pin`: SHA-256 fingerprints of accepted end-entity certificates (hex,
    /// colons allowed; several for a certificate change).
    pub pin_sha256: Vec<String>,
}

/// Splits a next hop as written (`host:port`, `[v6]:port`, `host`, `[v6]`) into its host
/// (without brackets) and port; `None` when it is malformed.
pub fn split_hop(hop: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    let (host, port) = if let Some(rest) = hop.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(port(after.strip_prefix(':')?)?)),
        }
    } else {
        match hop.split_once(':') {
            Some((host, p)) if !p.contains(':') => (host, Some(port(p)?)),
            // A bare IPv6 address.
            Some(_) => (hop, None),
            None => (hop, None),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

/// A SHA-256 fingerprint as written in the configuration (`AB:CD:…`, `abcd…`, or
/// openssl's `sha256 Fingerprint=AB:CD:…`).
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    // Also as openssl prints it: "sha256 Fingerprint=AB:CD:…".
    let text = text.rsplit('=').next().unwrap_or(text);
    let hex_digits: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            smarthost: String::new(),
            internal_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            connect_timeout_secs: 30,
            reply_timeout_secs: 300,
            next_hop_tls: NextHopTls::Opportunistic,
            next_hop_ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            hop: BTreeMap::new(),
        }
    }
}

impl RelayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.next_hop_tls == NextHopTls::Pin {
            return Err(ConfigError::Invalid {
                key: "relay.next_hop_tls",
                message: "\"pin\" needs fingerprints: set it per hop in [relay.hop.\"HOST:PORT\"]"
                    .into(),
            });
        }
        for (hop, settings) in &self.hop {
            let invalid = |message: String| ConfigError::Invalid {
                key: "relay.hop",
                message: format!("[relay.hop.\"{hop}\"]: {message}"),
            };
            let (host, _) = split_hop(hop).ok_or_else(|| {
                invalid("write the hop as \"HOST:PORT\", \"[IPv6]:PORT\" or \"HOST\"".into())
            })?;
            if rustls_pki_types::ServerName::try_from(host).is_err() {
                return Err(invalid(format!("\"{host}\" is not a host name or address")));
            }
            for pin in &settings.pin_sha256 {
                if parse_fingerprint(pin).is_none() {
                    return Err(invalid(format!(
                        "pin_sha256 \"{pin}\" is not a SHA-256 fingerprint (64 hex digits)"
                    )));
                }
            }
            let level = settings.tls.unwrap_or(self.next_hop_tls);
            if level == NextHopTls::Pin && settings.pin_sha256.is_empty() {
                return Err(invalid("tls = \"pin\" needs pin_sha256".into()));
            }
            if level != NextHopTls::Pin && !settings.pin_sha256.is_empty() {
                return Err(invalid(format!(
                    "pin_sha256 is only used with tls = \"pin\" (this hop has \"{}\")",
                    level.as_str()
                )));
            }
            if let Some(name) = &settings.server_name
                && rustls_pki_types::ServerName::try_from(name.as_str()).is_err()
            {
                return Err(invalid(format!(
                    "server_name \"{name}\" is not a host name"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_message_bytes: usize,
    pub max_mime_depth: usize,
    pub max_smime_layers: usize,
    pub max_recipients: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let mime = crate::mime::Limits::default();
        Self {
            max_message_bytes: mime.max_size,
            max_mime_depth: mime.max_depth,
            max_smime_layers: 8,
            max_recipients: mime.max_recipients,
        }
    }
}

impl LimitsConfig {
    pub fn mime(&self) -> crate::mime::Limits {
        crate::mime::Limits {
            max_depth: self.max_mime_depth,
            max_size: self.max_message_bytes,
            max_recipients: self.max_recipients,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub hostname: String,
    pub node_name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
    pub connect_timeout_secs: u64,
    /// PostgreSQL: seconds one statement may run before the server cancels it; 0: none.
    pub statement_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HsmSection {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_file: PathBuf,
    pub pin_env: String,
    pub so_pin_file: PathBuf,
    pub softhsm2_conf: PathBuf,
    pub max_sessions: usize,
    pub operation_timeout_secs: u64,
    pub acquire_timeout_secs: u64,
}

/// The certificate lifecycle job: renewal, the end of deactivation, CRL re-signing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// A mailbox certificate is renewed this many days before it expires.
    pub renew_before_days: u32,
    /// A deactivated mailbox stays revoke-pending (holding its seat) this many days.
    pub revoke_pending_days: u32,
    /// `serve` runs the job at start and then every this many seconds.
    pub interval_secs: u64,
    /// The built-in CA's CRL is valid this many days (nextUpdate); it is re-signed on
    /// every revocation and once less than half of it is left.
    pub crl_validity_days: u32,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            renew_before_days: 30,
            revoke_pending_days: 14,
            interval_secs: 3600,
            crl_validity_days: 7,
        }
    }
}

impl LifecycleConfig {
    fn validate(&self, ca: &CaConfig) -> Result<(), ConfigError> {
        if self.renew_before_days >= ca.mailbox_validity_days {
            return Err(ConfigError::Invalid {
                key: "lifecycle.renew_before_days",
                message: format!(
                    "must be less than ca.mailbox_validity_days ({}), or every run would renew",
                    ca.mailbox_validity_days
                ),
            });
        }
        if self.interval_secs < 60 {
            return Err(ConfigError::Invalid {
                key: "lifecycle.interval_secs",
                message: "must be at least 60".into(),
            });
        }
        if self.crl_validity_days == 0 {
            return Err(ConfigError::Invalid {
                key: "lifecycle.crl_validity_days",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaConfig {
    /// The issuing CA (signs mailbox certificates and their CRL).
    pub subject: String,
    /// The root CA above it (signs only the issuing CA and the root CRL).
    pub root_subject: String,
    pub key: KeyAlgorithm,
    pub validity_days: u32,
    pub public_url: String,
    pub mailbox_key: KeyAlgorithm,
    pub mailbox_validity_days: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
}

/// `[saml]`: single sign-on to the console through a SAML 2.0 identity provider
/// (`crate::admin::saml`). Off while `idp_metadata` is empty.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamlConfig {
    /// The IdP's metadata XML (a file; relative to the data directory); "": SSO off.
    pub idp_metadata: PathBuf,
    /// Our entity ID; "": `<console URL>/saml/metadata` ([`Config::console_url`]).
    pub sp_entity_id: String,
    /// Our assertion consumer service; "": `<console URL>/saml/acs`.
    pub acs_url: String,
    /// The IdP attribute whose values are mapped to roles (its Name or FriendlyName).
    pub role_attribute: String,
    /// Attribute value (e.g. an IdP group) -> role; the highest matching role wins.
    pub roles: BTreeMap<String, crate::ops::Role>,
    /// Clock difference to the IdP tolerated on every time check, in seconds.
    pub allowed_clock_skew_secs: u64,
    /// How long a login request waits for the IdP's answer, in seconds.
    pub request_ttl_secs: u64,
}

impl Default for SamlConfig {
    fn default() -> Self {
        Self {
            idp_metadata: PathBuf::new(),
            sp_entity_id: String::new(),
            acs_url: String::new(),
            role_attribute: "groups".into(),
            roles: BTreeMap::new(),
            allowed_clock_skew_secs: 60,
            request_ttl_secs: 300,
        }
    }
}

impl SamlConfig {
    /// Whether SSO is configured.
    pub fn enabled(&self) -> bool {
        !self.idp_metadata.as_os_str().is_empty()
    }

    /// Our entity ID: the configured one, or `console_url` + `/saml/metadata`.
    pub fn entity_id(&self, console_url: &str) -> String {
        derived(&self.sp_entity_id, console_url, "/saml/metadata")
    }

    /// Our ACS URL: the configured one, or `console_url` + `/saml/acs`.
    pub fn acs(&self, console_url: &str) -> String {
        derived(&self.acs_url, console_url, "/saml/acs")
    }

    fn validate(&self, console_url: &str) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let invalid = |key: &'static str, message: String| ConfigError::Invalid { key, message };
        let acs = self.acs(console_url);
        if !(acs.starts_with("https://") || acs.starts_with("http://")) || acs.contains(['?', '#'])
        {
            return Err(invalid(
                "saml.acs_url",
                format!(
                    "'{acs}' is not an http(s) URL without query (set it, or console.public_url)"
                ),
            ));
        }
        if self.entity_id(console_url).trim().is_empty() {
            return Err(invalid("saml.sp_entity_id", "must not be empty".into()));
        }
        if self.role_attribute.trim().is_empty() {
            return Err(invalid(
                "saml.role_attribute",
                "must name an IdP attribute".into(),
            ));
        }
        if self.roles.is_empty() {
            return Err(invalid(
                "saml.roles",
                "maps no attribute value to a role: nobody could log in".into(),
            ));
        }
        if self.allowed_clock_skew_secs > 600 {
            return Err(invalid(
                "saml.allowed_clock_skew_secs",
                "at most 600".into(),
            ));
        }
        if !(30..=3600).contains(&self.request_ttl_secs) {
            return Err(invalid(
                "saml.request_ttl_secs",
                "between 30 and 3600".into(),
            ));
        }
        Ok(())
    }
}

fn derived(configured: &str, console_url: &str, path: &str) -> String {
    if configured.is_empty() {
        format!("{}{path}", console_url.trim_end_matches('/'))
    } else {
        configured.to_string()
    }
}

/// `[revocation]`: how partner certificates are checked against their CAs' CRLs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevocationConfig {
    /// What happens when a certificate's revocation status cannot be learned.
    pub mode: RevocationMode,
    /// Seconds one CRL download may take (connect, request and body together).
    pub fetch_timeout_secs: u64,
    /// Largest CRL accepted, in bytes.
    pub max_crl_bytes: usize,
    /// Seconds between background refreshes of a CRL (it is refreshed sooner when its
    /// nextUpdate comes).
    pub refresh_interval_secs: u64,
    /// Milliseconds an SMTP reply may wait for the first download of a CRL not yet
    /// cached; past it the status counts as unknown for that reply.
    pub reply_wait_ms: u64,
}

/// `[revocation].mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationMode {
    /// An unknown status is noted (`revocation-unknown`) and the certificate is used.
    SoftFail,
    /// An unknown status makes a signature not valid and refuses encryption (4.7.x).
    HardFail,
}

impl RevocationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationMode::SoftFail => "soft-fail",
            RevocationMode::HardFail => "hard-fail",
        }
    }
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            mode: RevocationMode::SoftFail,
            fetch_timeout_secs: 10,
            max_crl_bytes: 10 * 1024 * 1024,
            refresh_interval_secs: 3600,
            reply_wait_ms: 2000,
        }
    }
}

impl RevocationConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.fetch_timeout_secs == 0
            || self.refresh_interval_secs == 0
            || self.max_crl_bytes == 0
        {
            return Err(ConfigError::Invalid {
                key: "revocation.*",
                message:
                    "fetch_timeout_secs, refresh_interval_secs and max_crl_bytes must be at least 1"
                        .into(),
            });
        }
        if self.reply_wait_ms > 30_000 {
            return Err(ConfigError::Invalid {
                key: "revocation.reply_wait_ms",
                message: "at most 30000: an SMTP reply must not wait longer for a CRL".into(),
            });
        }
        Ok(())
    }
}

/// `[dns]`: how `domain check` and activation look up a domain's MX.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// `IP:PORT` of the DNS resolver to ask; "": the system's (/etc/resolv.conf).
    pub resolver: String,
    /// Seconds one DNS query may take.
    pub timeout_secs: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            resolver: String::new(),
            timeout_secs: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub json: bool,
    /// Whether the message log keeps each message's Subject (decoded). Some
    /// regulated customers must not log it.
    pub subjects: bool,
    /// Days the message log keeps a message's row; older rows are deleted by the
    /// lifecycle job. 0 keeps them forever.
    pub keep_days: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            node_name: "node1".into(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:smimegate.db".into(),
            max_connections: 8,
            connect_timeout_secs: 10,
            statement_timeout_secs: crate::store::DEFAULT_STATEMENT_TIMEOUT.as_secs(),
        }
    }
}

impl Default for HsmSection {
    fn default() -> Self {
        Self {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token_label: "smimegate".into(),
            pin_file: PathBuf::from("hsm-user.pin"),
            pin_env: "SMIMEGATE_HSM_PIN".into(),
            so_pin_file: PathBuf::from("hsm-so.pin"),
            softhsm2_conf: PathBuf::from("softhsm2.conf"),
            max_sessions: 8,
            operation_timeout_secs: 10,
            acquire_timeout_secs: 5,
        }
    }
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            subject: "CN=smimegate CA,O=smimegate".into(),
            root_subject: "CN=smimegate Root CA,O=smimegate".into(),
            key: KeyAlgorithm::Rsa3072,
            validity_days: 3650,
            public_url: "http://localhost:8080".into(),
            mailbox_key: KeyAlgorithm::Rsa2048,
            mailbox_validity_days: 365,
        }
    }
}

/// `[console]`: the HTTPS admin console and its JSON API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address of the HTTPS listener; empty: no console.
    pub listen: String,
    /// The URL browsers use to reach the console (`https://host:port`), for SAML and
    /// for the Origin check; empty: `https://` + `[gateway].hostname` + the listen port.
    pub public_url: String,
    /// PEM certificate chain of the console; empty: the SMTP one (`[smtp].tls_certificate`
    /// with `[smtp].tls_key`), which `init` makes for the gateway's host name.
    pub tls_certificate: PathBuf,
    /// `token` (the key in the token, found by the certificate's public key) or a PEM
    /// key file; used only with `tls_certificate`.
    pub tls_key: PathBuf,
    /// A session unused this long ends.
    pub session_idle_secs: u64,
    /// A session ends this long after its login, used or not.
    pub session_max_secs: u64,
    /// Failed logins in a row that lock a local account.
    pub lockout_after: u32,
    /// How long a locked account stays locked.
    pub lockout_secs: u64,
    /// Failed logins one client address may make per minute before it gets 429.
    pub failed_logins_per_minute: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            public_url: String::new(),
            tls_certificate: PathBuf::new(),
            tls_key: PathBuf::from("token"),
            session_idle_secs: 15 * 60,
            session_max_secs: 8 * 3600,
            lockout_after: 5,
            lockout_secs: 15 * 60,
            failed_logins_per_minute: 10,
        }
    }
}

impl ConsoleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.session_idle_secs == 0 || self.session_max_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "console.session_*_secs",
                message: "must be at least 1".into(),
            });
        }
        if self.lockout_after == 0 || self.failed_logins_per_minute == 0 {
            return Err(ConfigError::Invalid {
                key: "console.lockout_after/failed_logins_per_minute",
                message: "must be at least 1".into(),
            });
        }
        if !self.public_url.is_empty() && !self.public_url.starts_with("https://") {
            return Err(ConfigError::Invalid {
                key: "console.public_url",
                message: format!("{:?} must start with https://", self.public_url),
            });
        }
        Ok(())
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
        }
    }
}

/// The level names a directive without `=` may be.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl LogConfig {
    /// The filter must parse as a `tracing` filter, and each directive without `=`
    /// must be a level: `EnvFilter` takes a bare word as a target name, so a
    /// misspelt level (`inof`) would silence every line.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "log.filter",
            message,
        };
        if self.filter.trim().is_empty() {
            return Err(invalid(
                "is empty; write a level (trace, debug, info, warn, error, off) or \
                 TARGET=LEVEL directives"
                    .into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.filter)
            .map_err(|e| invalid(format!("{:?} is not a log filter: {e}", self.filter)))?;
        for directive in self.filter.split(',').map(str::trim) {
            if directive.is_empty() || directive.contains('=') || directive.contains('[') {
                continue;
            }
            if !LOG_LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
                return Err(invalid(format!(
                    "{directive:?} is not a level (trace, debug, info, warn, error, off); \
                     to name a target write {directive}=LEVEL"
                )));
            }
        }
        Ok(())
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            json: false,
            subjects: true,
            keep_days: 90,
        }
    }
}

impl Config {
    /// The console's URL as browsers reach it, from the configuration alone:
    /// `[console].public_url`, else `https://` + `[gateway].hostname` + the port of
    /// `[console].listen` (omitted when 443). `[saml]` derives its URLs from it.
    pub fn console_url(&self) -> String {
        let configured = self.console.public_url.trim_end_matches('/');
        if !configured.is_empty() {
            return configured.to_string();
        }
        let host = &self.gateway.hostname;
        let port = self
            .console
            .listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok());
        match port {
            None | Some(443) => format!("https://{host}"),
            Some(port) => format!("https://{host}:{port}"),
        }
    }

    /// Parses a configuration text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.message().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads `DATA_DIR/smimegate.toml`.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        Self::load_file(&data_dir.join(CONFIG_FILE), data_dir)
    }

    /// Loads the configuration file `path` of the data directory `data_dir` (named
    /// only in the hint of a missing file).
    pub fn load_file(path: &Path, data_dir: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut init = format!("smimegate init --data-dir {}", data_dir.display());
                if path != data_dir.join(CONFIG_FILE) {
                    init.push_str(&format!(" --config {}", path.display()));
                }
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                    init,
                });
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.log.validate()?;
        if self.hsm.max_sessions == 0 {
            return Err(ConfigError::Invalid {
                key: "hsm.max_sessions",
                message: "must be at least 1".into(),
            });
        }
        if self.hsm.operation_timeout_secs == 0 || self.hsm.acquire_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "hsm.*_timeout_secs",
                message: "must be at least 1".into(),
            });
        }
        if self.ca.mailbox_validity_days == 0 || self.ca.validity_days == 0 {
            return Err(ConfigError::Invalid {
                key: "ca.*validity_days",
                message: "must be at least 1".into(),
            });
        }
        let max = crate::pki::profile::MAX_MAILBOX_VALIDITY_DAYS;
        if self.ca.mailbox_validity_days > max {
            return Err(ConfigError::Invalid {
                key: "ca.mailbox_validity_days",
                message: format!(
                    "{} is above {max}, the longest validity the S/MIME Baseline Requirements allow for a mailbox certificate",
                    self.ca.mailbox_validity_days
                ),
            });
        }
        if self.ca.root_subject.trim() == self.ca.subject.trim() {
            return Err(ConfigError::Invalid {
                key: "ca.root_subject",
                message: "the root CA needs a name of its own, not the issuing CA's (ca.subject)"
                    .into(),
            });
        }
        if let Err(e) = crate::pki::urls::PkiUrls::new(&self.ca.public_url) {
            return Err(ConfigError::Invalid {
                key: "ca.public_url",
                message: e.to_string(),
            });
        }
        if self.limits.max_message_bytes == 0
            || self.limits.max_mime_depth == 0
            || self.limits.max_smime_layers == 0
            || self.limits.max_recipients == 0
        {
            return Err(ConfigError::Invalid {
                key: "limits.*",
                message: "must be at least 1".into(),
            });
        }
        self.smtp.validate(&self.limits)?;
        if !self.dns.resolver.is_empty()
            && self.dns.resolver.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid {
                key: "dns.resolver",
                message: format!(
                    "'{}' is not IP:PORT (e.g. \"127.0.0.1:53\"); leave it empty for the system resolver",
                    self.dns.resolver
                ),
            });
        }
        if self.dns.timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                key: "dns.timeout_secs",
                message: "must be at least 1".into(),
            });
        }
        self.lifecycle.validate(&self.ca)?;
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "database.max_connections",
                message: "must be at least 1".into(),
            });
        }
        self.revocation.validate()?;
        self.console.validate()?;
        self.saml.validate(&self.console_url())?;
        self.relay.validate()
    }
}

/// A configuration bound to its data directory: relative paths resolve against it.
/// The configuration file itself is `config_file`: `DATA_DIR/smimegate.toml` unless
/// the command line names another (`--config`, e.g. `/etc/smimegate/smimegate.toml`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub config_file: PathBuf,
    pub config: Config,
}

impl Settings {
    /// Loads `DATA_DIR/smimegate.toml`.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        Self::load_from(data_dir, &data_dir.join(CONFIG_FILE))
    }

    /// Loads the configuration file `config_file`; relative paths in it resolve
    /// against `data_dir`.
    pub fn load_from(data_dir: &Path, config_file: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            config_file: config_file.to_path_buf(),
            config: Config::load_file(config_file, data_dir)?,
        })
    }

    /// Settings of `config` in `data_dir`, its file where `load` looks for it.
    pub fn new(data_dir: PathBuf, config: Config) -> Self {
        Self {
            config_file: data_dir.join(CONFIG_FILE),
            data_dir,
            config,
        }
    }

    /// Resolves a configured path against the data directory.
    pub fn path(&self, configured: &Path) -> PathBuf {
        if configured.is_absolute() {
            configured.to_path_buf()
        } else {
            self.data_dir.join(configured)
        }
    }

    /// The database URL with a relative SQLite path resolved against the data directory.
    pub fn database_url(&self) -> String {
        resolve_sqlite_url(&self.config.database.url, &self.data_dir)
    }

    /// The SoftHSM2 configuration file, when one is configured (empty for a hardware HSM).
    pub fn softhsm2_conf(&self) -> Option<PathBuf> {
        let conf = &self.config.hsm.softhsm2_conf;
        (!conf.as_os_str().is_empty()).then(|| self.path(conf))
    }

    pub fn operation_timeout(&self) -> Duration {
        Duration::from_secs(self.config.hsm.operation_timeout_secs)
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.config.hsm.acquire_timeout_secs)
    }
}

fn resolve_sqlite_url(url: &str, data_dir: &Path) -> String {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return url.to_string();
    };
    let rest = rest.trim_start_matches("//");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" || Path::new(path).is_absolute() {
        return url.to_string();
    }
    let resolved = data_dir.join(path);
    match query {
        Some(q) => format!("sqlite://{}?{q}", resolved.display()),
        None => format!("sqlite://{}", resolved.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_documents_exactly_the_defaults() {
        let parsed = Config::parse(TEMPLATE, Path::new("template.toml")).expect("template parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn every_key_of_the_template_is_commented() {
        let mut previous_was_comment = false;
        for line in TEMPLATE.lines() {
            let trimmed = line.trim();
            if trimmed.contains('=') && !trimmed.starts_with('#') {
                assert!(previous_was_comment, "key without a comment: {trimmed}");
            }
            previous_was_comment = trimmed.starts_with('#');
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse("[hsm]\npin = \"1234\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn relative_sqlite_paths_resolve_against_the_data_dir() {
        let dir = Path::new("/srv/smimegate");
        assert_eq!(
            resolve_sqlite_url("sqlite:smimegate.db", dir),
            "sqlite:///srv/smimegate/smimegate.db"
        );
        assert_eq!(resolve_sqlite_url("sqlite:/abs.db", dir), "sqlite:/abs.db");
        assert_eq!(
            resolve_sqlite_url("postgres://u@h/db", dir),
            "postgres://u@h/db"
        );
    }

    #[test]
    fn a_byte_budget_smaller_than_one_message_is_refused() {
        let err = Config::parse(
            "[smtp]\nmessage_budget_bytes = 1000\n[limits]\nmax_message_bytes = 2000\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("smtp.message_budget_bytes"),
            "{err}"
        );
        let err =
            Config::parse("[smtp]\nmax_connections_per_ip = 0\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("max_connections_per_ip"), "{err}");
    }

    #[test]
    fn revocation_settings_parse_and_are_checked() {
        let c = Config::parse(
            "[revocation]\nmode = \"hard-fail\"\nreply_wait_ms = 500\n",
            Path::new("x.toml"),
        )
        .expect("parses");
        assert_eq!(c.revocation.mode, RevocationMode::HardFail);
        assert_eq!(c.revocation.reply_wait_ms, 500);
        let err =
            Config::parse("[revocation]\nmode = \"lenient\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let err = Config::parse("[revocation]\nreply_wait_ms = 60000\n", Path::new("x.toml"))
            .unwrap_err();
        assert!(err.to_string().contains("reply_wait_ms"), "{err}");
    }

    #[test]
    fn saml_settings_parse_and_derive_their_urls_from_the_console_url() {
        let c = Config::parse(
            "[console]\npublic_url = \"https://gw.example:8443/\"\n\
             [saml]\nidp_metadata = \"idp.xml\"\n\
             [saml.roles]\n\"smimegate-admins\" = \"admin\"\nstaff = \"viewer\"\n",
            Path::new("x.toml"),
        )
        .expect("parses");
        assert!(c.saml.enabled());
        assert_eq!(
            c.saml.acs(&c.console_url()),
            "https://gw.example:8443/saml/acs"
        );
        assert_eq!(
            c.saml.entity_id(&c.console_url()),
            "https://gw.example:8443/saml/metadata"
        );
        // Without public_url: the gateway's host name and the console's port.
        let d = Config::parse(
            "[gateway]\nhostname = \"gw.example\"\n",
            Path::new("x.toml"),
        )
        .expect("parses");
        assert_eq!(d.console_url(), "https://gw.example:8443");
        assert_eq!(c.saml.roles["staff"], crate::ops::Role::Viewer);
        let err = Config::parse(
            "[saml]\nidp_metadata = \"idp.xml\"\n[saml.roles]\nstaff = \"root\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let err =
            Config::parse("[saml]\nidp_metadata = \"idp.xml\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("saml.roles"), "{err}");
    }

    #[test]
    fn zero_sessions_are_refused() {
        let err = Config::parse("[hsm]\nmax_sessions = 0\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("hsm.max_sessions"));
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused_naming_the_key() {
        let err =
            Config::parse("[log]\nfilter = \"smimegate=loud\"\n", Path::new("x.toml")).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "log.filter",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_misspelt_level_in_the_log_filter_is_refused_not_taken_as_a_target() {
        let err = Config::parse("[log]\nfilter = \"inof\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("log.filter"), "{err}");
        assert!(err.to_string().contains("not a level"), "{err}");
    }

    #[test]
    fn levels_and_target_directives_are_accepted_as_log_filters() {
        for filter in [
            "info",
            "WARN",
            "smimegate=debug,info",
            "off",
            "sqlx=warn,smimegate::relay=trace",
        ] {
            let text = format!("[log]\nfilter = {filter:?}\n");
            Config::parse(&text, Path::new("x.toml")).unwrap_or_else(|e| panic!("{filter}: {e}"));
        }
    }

    #[test]
    fn message_log_retention_defaults_to_ninety_days_and_zero_is_forever() {
        assert_eq!(Config::default().log.keep_days, 90);
        let config = Config::parse("[log]\nkeep_days = 0\n", Path::new("x.toml")).expect("parses");
        assert_eq!(config.log.keep_days, 0);
    }
}
