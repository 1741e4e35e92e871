//! Syslog: RFC 5424 messages over TCP with RFC 6587 octet counting (`LEN SP MSG`), or over
//! TLS (RFC 5425, same framing), the body the export line as JSON or as CEF.
//!
//! TLS verifies the collector: its certificate must chain to the configured CA file and
//! name the configured server name (rustls, no fallback to plain TCP). With a client
//! certificate configured, the sink presents it to a collector that asks (RFC 5425 mutual
//! authentication); the private key comes from the vault at each connection, PEM in a
//! zeroizing buffer, and no error names more than the credential.
//!
//! There is no in-memory queue to overflow: the "queue" is the audit log itself from this
//! sink's persisted cursor, so a collector that is down for hours loses nothing and costs
//! nothing but the cursor falling behind, and a run never waits for it. Limit: plain TCP
//! syslog has no application-level acknowledgement; a connection the collector closed is
//! detected before each write (and reconnected), but bytes the kernel accepted just before
//! the collector crashed can be lost. Records are re-sent from the cursor after a failure,
//! so a receiver may see a record twice (at-least-once, deduplicate on `seq`).

use std::time::Duration;

use std::sync::Arc;

use futures::FutureExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::audit::{AuditRecord, Decision};
use crate::notify::config::{SyslogConfig, SyslogFormat};
use crate::notify::export::ExportLine;
use crate::notify::tail::Line;
use crate::vault::Vault;

/// Facility 13 (log audit).
const FACILITY: u8 = 13;
/// Private enterprise number used in structured data (the one reserved for examples).
const SD_ID: &str = "warden@32473";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Syslog {
    pub config: SyslogConfig,
    vault: Vault,
    connection: Option<Connection>,
}

enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// This sink's certificate chain and key, for a collector that asks for one.
type ClientAuth = (
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// The client side of TLS: trusts only the CAs in `ca_file`; presents `client` if given.
fn connector(ca_file: &str, client: Option<ClientAuth>) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|_| "cannot read ca_file")?;
    for cert in certs {
        let cert = cert.map_err(|_| "ca_file is not PEM certificates")?;
        roots
            .add(cert)
            .map_err(|_| "ca_file holds an unusable certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| "no TLS protocol version")?
        .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((chain, key)) => config
            .with_client_auth_cert(chain, key)
            .map_err(|_| "the client certificate does not fit its key")?,
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Reads `cert_file` (PEM chain) and the PEM private key in vault credential `key_name`.
fn client_auth(vault: &Vault, cert_file: &str, key_name: &str) -> Result<ClientAuth, String> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|_| "cannot read client_cert_file".to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "client_cert_file is not PEM certificates".to_string())?;
    if chain.is_empty() {
        return Err("client_cert_file holds no certificate".into());
    }
    let secret = vault
        .secret(key_name)
        .map_err(|_| format!("credential '{key_name}' is unavailable"))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(secret.expose())
        .map_err(|_| format!("credential '{key_name}' is not a PEM private key"))?;
    Ok((chain, key))
}

impl Syslog {
    pub fn new(config: SyslogConfig, vault: Vault) -> Self {
        Self {
            config,
            vault,
            connection: None,
        }
    }

    /// Sends every line, in order; on any error the connection is dropped and the caller
    /// retries the whole chunk later.
    pub async fn send(&mut self, lines: &[&Line]) -> Result<(), String> {
        let mut frames = Vec::new();
        for line in lines {
            let message = format_message(&self.config, line);
            frames.extend_from_slice(format!("{} ", message.len()).as_bytes());
            frames.extend_from_slice(message.as_bytes());
        }
        let result = self.write(&frames).await;
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    async fn connect(&self) -> Result<Connection, String> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(self.config.address.as_str()),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {}", e.kind()))?;
        let _ = stream.set_nodelay(true);
        if !self.config.tls {
            return Ok(Connection::Plain(stream));
        }
        let client = match (
            &self.config.client_cert_file,
            &self.config.client_key_credential,
        ) {
            (Some(cert), Some(key)) => Some(client_auth(&self.vault, cert, key)?),
            _ => None,
        };
        let connector = connector(self.config.ca_file.as_deref().unwrap_or_default(), client)?;
        let host = match &self.config.server_name {
            Some(name) => name.clone(),
            None => {
                crate::notify::config::parse_host_port(&self.config.address)
                    .map_err(|e| e.0)?
                    .0
            }
        };
        let name = ServerName::try_from(host).map_err(|_| "bad server name".to_string())?;
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Connection::Tls(Box::new(tls)))
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let closed = match self.connection.as_mut() {
            Some(Connection::Plain(stream)) => peer_closed(stream),
            Some(Connection::Tls(stream)) => tls_peer_closed(stream.as_mut()),
            None => false,
        };
        if closed {
            self.connection = None;
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        match self.connection.as_mut() {
            Some(Connection::Plain(stream)) => write_all(stream, bytes).await,
            Some(Connection::Tls(stream)) => write_all(stream.as_mut(), bytes).await,
            None => Err("no connection".into()),
        }
    }
}

async fn write_all(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> Result<(), String> {
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| "write timed out".to_string())?
    .map_err(|e| format!("write: {}", e.kind()))
}

/// [`peer_closed`] through TLS: a read that is ready now and returns end of stream (the
/// collector's close_notify) or an error means closed. Reading through rustls, not the
/// socket, so post-handshake messages (session tickets) are processed, not lost.
fn tls_peer_closed(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf).now_or_never() {
        None => false,
        Some(Ok(0)) | Some(Err(_)) => true,
        Some(Ok(_)) => false,
    }
}

/// True if the collector closed its side (a read would return end of file or an error):
/// writing there would be accepted by the kernel and lost.
fn peer_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false, // a collector has nothing to say; ignore it
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME warden - MSGID [SD] BODY`.
pub fn format_message(config: &SyslogConfig, shared: &Line) -> String {
    let line = &shared.line;
    let (severity, time_ms, msgid, sd) = match line {
        ExportLine::Record {
            seq, hash, record, ..
        } => {
            let severity = if matches!(record.entry.decision, Decision::Denied { .. }) {
                4
            } else {
                6
            };
            (
                severity,
                record.time_ms,
                "audit",
                format!(
                    "[{SD_ID} seq=\"{seq}\" hash=\"{hash}\" action=\"{}\"]",
                    sd_escape(&record.entry.action)
                ),
            )
        }
        ExportLine::Checkpoint { seq, hash, .. } => (
            6,
            chrono::Utc::now().timestamp_millis().max(0).unsigned_abs(),
            "checkpoint",
            format!("[{SD_ID} seq=\"{seq}\" hash=\"{hash}\"]"),
        ),
    };
    let pri = FACILITY * 8 + severity;
    let body = match (config.format, line) {
        (SyslogFormat::Cef, ExportLine::Record { record, .. }) => cef(record),
        _ => shared.json().to_string(),
    };
    format!(
        "<{pri}>1 {} {} warden - {msgid} {sd} {body}",
        rfc3339(time_ms),
        config.hostname
    )
}

fn rfc3339(time_ms: u64) -> String {
    let ms = i64::try_from(time_ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// RFC 5424 PARAM-VALUE escaping: `"`, `\` and `]`.
fn sd_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// ArcSight CEF: `CEF:0|Warden|Warden|VERSION|ACTION|ACTION|SEVERITY|EXTENSIONS`, with the
/// chain fields as custom strings so a SIEM can still link records.
pub fn cef(record: &AuditRecord) -> String {
    let denied = match &record.entry.decision {
        Decision::Denied { reason, .. } => Some(reason.as_str()),
        Decision::Allowed => None,
    };
    let severity = if denied.is_some() { 7 } else { 3 };
    let action = cef_header(&record.entry.action);
    let mut ext = vec![
        format!("rt={}", record.time_ms),
        format!("suser={}", cef_ext(&record.entry.actor)),
        format!("outcome={}", cef_ext(&record.entry.outcome)),
        format!("cs1Label=seq cs1={}", record.seq),
        format!("cs2Label=hash cs2={}", record.hash),
        format!("cs3Label=prev_hash cs3={}", record.prev_hash),
    ];
    if let Some(run) = &record.entry.run_id {
        ext.push(format!("cs4Label=run cs4={}", cef_ext(run)));
    }
    if let Some(target) = &record.entry.target {
        ext.push(format!("dhost={}", cef_ext(target)));
    }
    if let Some(reason) = denied {
        ext.push(format!("reason={}", cef_ext(reason)));
    }
    format!(
        "CEF:0|Warden|Warden|{}|{action}|{action}|{severity}|{}",
        env!("CARGO_PKG_VERSION"),
        ext.join(" ")
    )
}

fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn cef_ext(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEntry, GENESIS_HASH};

    fn record(action: &str, denied: bool) -> AuditRecord {
        AuditRecord::seal(
            3,
            1_700_000_000_123,
            AuditEntry {
                run_id: Some("r|1".into()),
                actor: "a=b".into(),
                action: action.into(),
                target: None,
                credential: None,
                decision: if denied {
                    Decision::Denied {
                        reason: "no\ngrant".into(),
                        policy: None,
                    }
                } else {
                    Decision::Allowed
                },
                outcome: "ok".into(),
                duration_us: 1,
                detail: None,
            },
            GENESIS_HASH.into(),
        )
        .unwrap()
    }

    fn config(format: SyslogFormat) -> SyslogConfig {
        SyslogConfig {
            address: "127.0.0.1:1".into(),
            tls: false,
            ca_file: None,
            server_name: None,
            client_cert_file: None,
            client_key_credential: None,
            format,
            hostname: "h1".into(),
        }
    }

    #[test]
    fn rfc5424_header_and_json_body() {
        let line = ExportLine::record(record("ssh.exec", true));
        let msg = format_message(&config(SyslogFormat::Json), &Line::new(line.clone()));
        assert!(
            msg.starts_with(
                "<108>1 2023-11-14T22:13:20.123Z h1 warden - audit [warden@32473 seq=\"3\" hash=\""
            ),
            "{msg}"
        );
        let body = msg.split_once("\"] ").unwrap().1;
        let parsed: ExportLine = serde_json::from_str(body).unwrap();
        assert_eq!(parsed, line);
    }

    #[test]
    fn structured_data_and_cef_escape_their_delimiters() {
        let line = Line::new(ExportLine::record(record("x\"] y|z", true)));
        let msg = format_message(&config(SyslogFormat::Cef), &line);
        assert!(msg.contains(r#"action="x\"\] y|z"]"#), "{msg}");
        assert!(msg.contains(r#"|x"] y\|z|x"] y\|z|7|"#), "{msg}");
        assert!(
            msg.contains(r"suser=a\=b") && msg.contains(r"reason=no\ngrant"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }
}
