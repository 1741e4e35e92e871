//! The server side: the certificate and key (loaded, or made self-signed by `warden init`),
//! the rustls configuration, and a listener that hands axum only finished TLS handshakes.
//!
//! Threat, besides the network attacker of [`super`]: a client that opens connections and
//! never finishes a handshake, to hold the accept loop or every socket. Each handshake runs
//! in its own task, at most [`MAX_HANDSHAKES`] at once, each for at most
//! [`HANDSHAKE_TIMEOUT`]; a failed or slow one is dropped and the loop goes on. The private
//! key is read into zeroizing memory and a generated one is written to a file that is mode
//! 0600 before it holds a byte.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use super::Fingerprint;

/// The data directory's TLS folder and its two files, as `warden init` makes them.
pub const TLS_DIR: &str = "tls";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// Longest a client may take to finish its TLS handshake: a client that stalls it is
/// disconnected then instead of holding a socket (and a handshake slot) for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; a connection beyond it is closed at once. Bounds the
/// memory and sockets that clients which never finish a handshake can hold.
pub const MAX_HANDSHAKES: usize = 1024;

/// Cap on a certificate or key file read from disk (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A self-signed certificate's lifetime: ten years. Clients pin it by fingerprint rather
/// than trusting a CA's dates, so expiry would only break every pinned client at once on a
/// day nobody remembers; rotating it is a deliberate `warden init`-made replacement and a
/// new pin. A certificate from an operator's CA (`--tls-cert`) follows that CA's rules.
const SELF_SIGNED_YEARS: i32 = 10;

/// The server's certificate chain and private key.
pub struct ServerTls {
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key_pem: Zeroizing<Vec<u8>>,
    fingerprint: Fingerprint,
}

impl ServerTls {
    /// Loads a PEM certificate chain (end-entity first) and its PEM private key. A key file
    /// that others may read is refused.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ServerTls> {
        let cert_pem = read_capped(cert, "certificate")?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| anyhow::anyhow!("{} is not a PEM certificate chain", cert.display()))?;
        let first = chain
            .first()
            .with_context(|| format!("{} holds no PEM certificate", cert.display()))?;
        let fingerprint = Fingerprint::of_der(first);
        let mode = std::fs::metadata(key)
            .with_context(|| format!("cannot read the TLS key {}", key.display()))?
            .permissions()
            .mode();
        if mode & 0o007 != 0 {
            anyhow::bail!(
                "the TLS key {} may be read by others (mode {:o}); run `chmod o-rwx {}`",
                key.display(),
                mode & 0o7777,
                key.display()
            );
        }
        let key_pem = read_capped(key, "TLS key")?;
        let tls = ServerTls {
            chain,
            key_pem,
            fingerprint,
        };
        // Parse now, so a bad key or a key of another certificate is refused at start.
        tls.server_config().with_context(|| {
            format!(
                "{} and {} are not a usable certificate and key",
                cert.display(),
                key.display()
            )
        })?;
        Ok(tls)
    }

    /// The data directory's certificate and key (`DATA/tls/`), if `warden init` made them.
    pub fn in_data_dir(data: &Path) -> anyhow::Result<Option<ServerTls>> {
        let (cert, key) = Self::data_dir_files(data);
        if !cert.exists() && !key.exists() {
            return Ok(None);
        }
        Self::load(&cert, &key).map(Some)
    }

    /// Where the data directory keeps its certificate and key.
    pub fn data_dir_files(data: &Path) -> (PathBuf, PathBuf) {
        let dir = data.join(TLS_DIR);
        (dir.join(CERT_FILE), dir.join(KEY_FILE))
    }

    /// Makes a self-signed certificate (ECDSA P-256: every TLS client and browser takes it,
    /// which is not yet true of Ed25519 certificates) for `localhost`, `127.0.0.1`, `::1`
    /// and `extra_names` (host names or IP addresses), writes `dir/cert.pem` and
    /// `dir/key.pem` (never over existing files), and returns its fingerprint.
    pub fn generate_self_signed(dir: &Path, extra_names: &[String]) -> anyhow::Result<Fingerprint> {
        let mut params = Self::self_signed_params(extra_names)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "warden server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        let (year, month, day) = today();
        // A day back, for clients whose clock is a little behind.
        params.not_before = rcgen::date_time_ymd(year, month, day) - time_day();
        params.not_after = rcgen::date_time_ymd(year + SELF_SIGNED_YEARS, month, day.min(28));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| anyhow::anyhow!("generating the TLS key: {e}"))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| anyhow::anyhow!("making the TLS certificate: {e}"))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        write_new(&dir.join(KEY_FILE), key_pem.as_bytes(), 0o600)?;
        write_new(&dir.join(CERT_FILE), cert.pem().as_bytes(), 0o644)?;
        Ok(Fingerprint::of_der(cert.der()))
    }

    /// Checks that `extra_names` can go into a certificate (before anything is created).
    pub fn check_names(extra_names: &[String]) -> anyhow::Result<()> {
        Self::self_signed_params(extra_names).map(drop)
    }

    fn self_signed_params(extra_names: &[String]) -> anyhow::Result<rcgen::CertificateParams> {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        for name in extra_names {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                anyhow::bail!("--tls-name {name:?} is not a host name or address");
            }
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        rcgen::CertificateParams::new(names)
            .map_err(|e| anyhow::anyhow!("a --tls-name is not a host name or address: {e}"))
    }

    /// The fingerprint of the end-entity certificate (what clients pin).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// rustls' server configuration: ring, TLS 1.3 and 1.2 only, ALPN `h2` and `http/1.1`.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|_| anyhow::anyhow!("the TLS key is not a PEM private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .context("the TLS key does not fit the certificate")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn today() -> (i32, u8, u8) {
    use chrono::Datelike;
    let now = chrono::Utc::now().date_naive();
    // Month and day are 1..=12 and 1..=31.
    (now.year(), now.month() as u8, now.day() as u8)
}

fn time_day() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

/// Reads a PEM file of at most [`MAX_PEM_BYTES`] into zeroizing memory.
fn read_capped(path: &Path, what: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the {what} {}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        anyhow::bail!("the {what} {} is larger than 1 MiB", path.display());
    }
    Ok(bytes)
}

/// Creates `path` with `mode` (never over an existing file or through a symlink), then
/// writes and syncs `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // The umask may have taken bits away, never added any; set them exactly anyway.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// A listener for `axum::serve` that yields TLS streams: TCP accepted (with TCP_NODELAY),
/// each handshake in its own task under [`HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`].
/// Dropping it stops accepting.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        Self::with_timeout(tcp, config, HANDSHAKE_TIMEOUT)
    }

    /// [`TlsListener::new`] with another handshake timeout.
    pub fn with_timeout(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let accept_loop = tokio::spawn(async move {
            let mut last_warning: Option<std::time::Instant> = None;
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: wait, as axum's own loop does.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // At most one line a second, however many connections are refused.
                    if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        last_warning = Some(std::time::Instant::now());
                        tracing::warn!(%peer, "too many TLS handshakes in progress; connections closed");
                    }
                    continue;
                };
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!(error = %e, "could not set TCP_NODELAY");
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let done = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                    drop(slot);
                    match done {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
