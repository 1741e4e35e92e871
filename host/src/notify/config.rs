//! What an administrator configures: sinks, the webhook destination allow-list and alert
//! rules, with the checks that run when they are set (not when they are used).
//!
//! Threat: a sink that sends the audit stream (or requests of any kind) somewhere no
//! administrator allowed (server-side request forgery through a webhook URL, an internal
//! service reached through a redirect or a DNS name that later resolves elsewhere), a
//! secret stored in a sink's configuration (and so in API answers and the audit), and
//! unbounded sizes. A sink names vault credentials for its secrets; its configuration holds
//! no secret byte. Every size an administrator sets is capped.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Longest sink or rule name.
pub const MAX_NAME: usize = 64;
/// Most sinks, rules and allow-list entries each (each sink is a task and a connection).
pub const MAX_ITEMS: usize = 64;
/// Most retry steps in a webhook schedule.
pub const MAX_RETRIES: usize = 16;
/// Longest wait between two webhook attempts (the spec's last step is 10 h).
pub const MAX_RETRY_DELAY_MS: u64 = 10 * 3600 * 1000;
/// Longest per-request timeout.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Largest file before rotation, and the most rotated files kept.
pub const MAX_FILE_BYTES: u64 = 1 << 34;
pub const MAX_FILE_KEEP: u32 = 100;

/// The Standard Webhooks retry schedule (after the first attempt): 5 s, 5 min, 30 min, 2 h,
/// 5 h, 10 h, 10 h.
pub const DEFAULT_RETRY_MS: [u64; 7] = [
    5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

/// One configured sink. (Unknown fields are ignored: serde cannot deny them through the
/// flattened, tagged `kind`.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SinkConfig {
    pub name: String,
    #[serde(flatten)]
    pub kind: SinkKind,
    /// Which records it gets: every one (`all`) or only alert firings routed to it.
    #[serde(default)]
    pub events: Events,
    /// Where a new sink starts: the first record of the log (`start`) or the next one.
    #[serde(default)]
    pub from: From,
    /// False once disabled (by an administrator, or by a webhook's 410 Gone).
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub disabled_reason: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Events {
    #[default]
    All,
    Alerts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum From {
    #[default]
    Start,
    Now,
}

/// The destination and its format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SinkKind {
    Webhook(WebhookConfig),
    Syslog(SyslogConfig),
    File(FileConfig),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookConfig {
    /// `https://HOST[:PORT]/PATH` (or `http://`); must be allowed by the allow-list.
    pub url: String,
    /// Vault credential holding the `whsec_<base64>` secret (v1, HMAC-SHA256).
    #[serde(default)]
    pub secret_credential: Option<String>,
    /// Vault credential holding a 32-byte ed25519 seed, base64 (v1a).
    #[serde(default)]
    pub signing_credential: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Waits before each retry; jitter of up to ±20% is added.
    #[serde(default = "default_retry")]
    pub retry_ms: Vec<u64>,
    /// `https://` only: a PEM file (absolute path) of the CA certificate(s) the receiver's
    /// certificate must chain to, instead of the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `https://` only: the receiver's exact certificate, `sha256:<hex>` (pinned; no CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<String>,
    /// Lines per message, at most (1, the default: one message per line). Above 1, each
    /// message is `{"type":"warden.audit.batch","lines":[…]}` of the lines read together
    /// (a sink that keeps up still sends single-line batches at once), its `webhook-id`
    /// `FIRST..LAST` of the lines' ids; every line keeps its own `seq` and hash.
    #[serde(default = "default_batch", skip_serializing_if = "is_one")]
    pub batch: u32,
}

/// Most lines one webhook message may carry.
pub const MAX_BATCH: u32 = 256;

fn default_batch() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl WebhookConfig {
    /// How an `https://` receiver is verified: the pinned certificate, the CA file, else the
    /// system's trust store.
    pub fn trust(&self) -> Result<crate::tls::ServerTrust, Invalid> {
        crate::tls::ServerTrust::from_args(
            self.ca_file.as_deref().map(std::path::Path::new),
            self.server_fingerprint.as_deref(),
        )
        .map_err(|e| invalid(format!("{e:#}")))
    }

    fn is_https(&self) -> bool {
        self.url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }
}

fn default_timeout() -> u64 {
    10_000
}

fn default_retry() -> Vec<u64> {
    DEFAULT_RETRY_MS.to_vec()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyslogConfig {
    /// `HOST:PORT` of the collector (TCP, RFC 6587 octet counting).
    pub address: String,
    /// TLS (RFC 5425): the collector's certificate must chain to `ca_file` and name
    /// `server_name` (the address's host if unset).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA certificate(s) trusted for the collector (required with `tls`).
    #[serde(default)]
    pub ca_file: Option<String>,
    #[serde(default)]
    pub server_name: Option<String>,
    /// With `tls`: this client's certificate chain (PEM file, absolute path), presented to a
    /// collector that asks for one (RFC 5425 mutual authentication); its private key is the
    /// vault credential `client_key_credential` (PEM), never a file or the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_credential: Option<String>,
    #[serde(default)]
    pub format: SyslogFormat,
    /// HOSTNAME field of each message.
    #[serde(default = "default_hostname")]
    pub hostname: String,
}

fn default_hostname() -> String {
    "warden".into()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyslogFormat {
    #[default]
    Json,
    Cef,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileConfig {
    /// Absolute path of the JSON-lines file.
    pub path: String,
    /// Rotate once the file reaches this size.
    #[serde(default = "default_file_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (`PATH.1` newest).
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_file_bytes() -> u64 {
    64 << 20
}

fn default_keep() -> u32 {
    5
}

/// Why a configuration was refused (answered as 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(text: impl Into<String>) -> Invalid {
    Invalid(text.into())
}

/// Checks a name: 1..=64 of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(invalid("a name is 1 to 64 of A-Z a-z 0-9 . _ -"))
    }
}

impl SinkConfig {
    /// Checks everything that does not need the network; webhook destinations are checked
    /// against `allow` (resolving a host name, see [`AllowList::check_url`]).
    pub async fn validate(&self, allow: &AllowList) -> Result<(), Invalid> {
        check_name(&self.name)?;
        match &self.kind {
            SinkKind::Webhook(w) => {
                allow.check_url(&w.url).await?;
                if w.secret_credential.is_none() && w.signing_credential.is_none() {
                    return Err(invalid(
                        "a webhook needs secret_credential or signing_credential",
                    ));
                }
                for name in [&w.secret_credential, &w.signing_credential]
                    .into_iter()
                    .flatten()
                {
                    check_name(name)?;
                }
                if !w.is_https() && (w.ca_file.is_some() || w.server_fingerprint.is_some()) {
                    return Err(invalid(
                        "ca_file and server_fingerprint apply to https:// webhooks only",
                    ));
                }
                if let Some(ca) = &w.ca_file
                    && !ca.starts_with('/')
                {
                    return Err(invalid("ca_file must be an absolute path"));
                }
                if w.is_https() {
                    // Loads the CA file (or parses the pin) now: a typo is refused here,
                    // not found at the first delivery.
                    w.trust()?
                        .client_config()
                        .map_err(|e| invalid(format!("{e:#}")))?;
                }
                if w.batch == 0 || w.batch > MAX_BATCH {
                    return Err(invalid(format!("batch is 1..={MAX_BATCH}")));
                }
                if w.timeout_ms == 0 || w.timeout_ms > MAX_TIMEOUT_MS {
                    return Err(invalid(format!("timeout_ms is 1..={MAX_TIMEOUT_MS}")));
                }
                if w.retry_ms.len() > MAX_RETRIES
                    || w.retry_ms.iter().any(|d| *d > MAX_RETRY_DELAY_MS)
                {
                    return Err(invalid(format!(
                        "retry_ms: at most {MAX_RETRIES} waits of at most {MAX_RETRY_DELAY_MS} ms"
                    )));
                }
            }
            SinkKind::Syslog(s) => {
                let (host, _) = parse_host_port(&s.address)?;
                if !s.tls && (s.client_cert_file.is_some() || s.client_key_credential.is_some()) {
                    return Err(invalid("a client certificate needs tls"));
                }
                if s.tls {
                    let ca = s.ca_file.as_deref().unwrap_or_default();
                    if !ca.starts_with('/') {
                        return Err(invalid("tls needs ca_file, an absolute path"));
                    }
                    match (&s.client_cert_file, &s.client_key_credential) {
                        (None, None) => {}
                        (Some(cert), Some(key)) => {
                            if !cert.starts_with('/') {
                                return Err(invalid("client_cert_file must be an absolute path"));
                            }
                            check_name(key)?;
                        }
                        _ => {
                            return Err(invalid(
                                "client_cert_file and client_key_credential go together",
                            ));
                        }
                    }
                    let name = s.server_name.clone().unwrap_or(host);
                    if rustls::pki_types::ServerName::try_from(name).is_err() {
                        return Err(invalid("server_name is not a DNS name or an IP address"));
                    }
                }
                let ok = !s.hostname.is_empty()
                    && s.hostname.len() <= 255
                    && s.hostname.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(invalid("hostname: 1 to 255 printable ASCII characters"));
                }
            }
            SinkKind::File(f) => {
                if f.path.len() > 4096 {
                    return Err(invalid("path too long"));
                }
                super::sinks::file::check_path(&f.path).map_err(invalid)?;
                if f.max_bytes < 4096 || f.max_bytes > MAX_FILE_BYTES || f.keep > MAX_FILE_KEEP {
                    return Err(invalid("max_bytes 4096..=2^34, keep at most 100"));
                }
            }
        }
        Ok(())
    }
}

/// `(host, port)` of `HOST:PORT` (`[v6]:PORT` too).
pub fn parse_host_port(text: &str) -> Result<(String, u16), Invalid> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| invalid(format!("'{text}' is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| invalid(format!("'{text}': bad port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(invalid(format!("'{text}' is not HOST:PORT")));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Where webhooks may go: exact `HOST:PORT` entries, or CIDR blocks (`127.0.0.0/8`, any
/// port). Empty: nowhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AllowList {
    pub entries: Vec<String>,
}

/// A webhook URL checked against the allow-list: what to connect to, pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

impl AllowList {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.entries.len() > MAX_ITEMS {
            return Err(invalid("too many allow-list entries"));
        }
        for entry in &self.entries {
            if entry.contains('/') {
                parse_cidr(entry)?;
            } else {
                parse_host_port(entry)?;
            }
        }
        Ok(())
    }

    /// Checks `url` (scheme, host, port) and resolves it: every address it resolves to must
    /// be allowed (an exact `HOST:PORT` entry allows what that name resolves to). The caller
    /// connects only to the returned addresses, so a later DNS answer cannot move it.
    pub async fn check_url(&self, url: &str) -> Result<Destination, Invalid> {
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid("not a URL"))?;
        match parsed.scheme() {
            "http" | "https" => {}
            _ => return Err(invalid("a webhook URL is https:// or http://")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("no credentials in a webhook URL"));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| invalid("a webhook URL needs a host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| invalid("a webhook URL needs a port"))?;
        let exact = self.entries.iter().any(|e| {
            !e.contains('/') && parse_host_port(e).is_ok_and(|(h, p)| h == host && p == port)
        });
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| invalid(format!("'{host}' does not resolve")))?
            .collect();
        if addrs.is_empty() {
            return Err(invalid(format!("'{host}' does not resolve")));
        }
        let cidrs: Vec<(IpAddr, u8)> = self
            .entries
            .iter()
            .filter(|e| e.contains('/'))
            .filter_map(|e| parse_cidr(e).ok())
            .collect();
        let all_in_cidr = addrs
            .iter()
            .all(|a| cidrs.iter().any(|(net, len)| in_cidr(a.ip(), *net, *len)));
        if exact || all_in_cidr {
            Ok(Destination { host, addrs })
        } else {
            Err(invalid(format!(
                "destination {host}:{port} is not in the webhook allow-list"
            )))
        }
    }
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u8), Invalid> {
    let bad = || invalid(format!("'{text}' is not a CIDR block"));
    let (ip, len) = text.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> AllowList {
        AllowList {
            entries: entries.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn exact_entry_allows_only_its_port() {
        let list = allow(&["127.0.0.1:8080"]);
        assert!(list.check_url("http://127.0.0.1:8080/hook").await.is_ok());
        assert!(list.check_url("http://127.0.0.1:8081/hook").await.is_err());
        assert!(list.check_url("http://127.0.0.2:8080/hook").await.is_err());
    }

    #[tokio::test]
    async fn cidr_allows_its_block_and_nothing_else() {
        let list = allow(&["127.0.0.0/24"]);
        assert!(list.check_url("http://127.0.0.9:1/").await.is_ok());
        assert!(list.check_url("http://127.0.1.1:1/").await.is_err());
        assert!(list.check_url("http://[::1]:1/").await.is_err());
        // A name is resolved: localhost is allowed only if every address it has is.
        let v4only = allow(&["127.0.0.0/8", "::1/128"]);
        assert!(v4only.check_url("http://localhost:9/").await.is_ok());
    }

    #[tokio::test]
    async fn empty_list_allows_nothing_and_odd_urls_are_refused() {
        let list = AllowList::default();
        assert!(list.check_url("http://127.0.0.1:80/").await.is_err());
        let open = allow(&["0.0.0.0/0"]);
        assert!(open.check_url("ftp://127.0.0.1/").await.is_err());
        assert!(open.check_url("http://user:pw@127.0.0.1/").await.is_err());
        assert!(open.check_url("https://127.0.0.1/").await.is_ok());
        // https defaults to port 443: an entry for another port does not allow it.
        let exact = allow(&["127.0.0.1:80"]);
        assert!(exact.check_url("https://127.0.0.1/").await.is_err());
        assert!(
            allow(&["127.0.0.1:443"])
                .check_url("https://127.0.0.1/")
                .await
                .is_ok()
        );
    }

    #[test]
    fn cidr_math() {
        let net: IpAddr = "10.1.0.0".parse().unwrap();
        assert!(in_cidr("10.1.255.3".parse().unwrap(), net, 16));
        assert!(!in_cidr("10.2.0.1".parse().unwrap(), net, 16));
        assert!(in_cidr("8.8.8.8".parse().unwrap(), net, 0));
        assert!(in_cidr("::ffff:10.1.0.7".parse().unwrap(), net, 16));
        assert!(parse_cidr("10.0.0.0/33").is_err());
    }
}
