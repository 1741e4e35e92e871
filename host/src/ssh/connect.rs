//! Opening one authenticated SSH connection, with each failure mapped to the variant a guest
//! must see: refused, unreachable, host key mismatch, authentication failed.
//!
//! Every stage runs under one deadline (`connect_timeout`), so a dead or silent host costs a
//! fan-out at most that long. The credential is used only after the host key was accepted.

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, decode_secret_key};
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::hostkey::{self, PinnedHost, ScanHost};
use super::{SshAuth, SshConfig, SshCredential, SshError};
use crate::targets::Target;

/// An authenticated connection to a target.
pub(crate) type Connection = Handle<PinnedHost>;

/// The russh client settings shared by all connections.
pub(crate) fn base_config(config: &SshConfig) -> client::Config {
    client::Config {
        // Without TCP_NODELAY every round trip waits on Nagle/delayed-ACK (~48 ms/command).
        nodelay: true,
        keepalive_interval: Some(config.keepalive_interval),
        keepalive_max: 3,
        ..client::Config::default()
    }
}

/// Connects to `target`, verifies its pinned host key and authenticates with `cred`.
pub(crate) async fn open(
    config: &SshConfig,
    target: &Target,
    cred: &SshCredential,
) -> Result<Connection, SshError> {
    let pinned = target
        .public_host_key()
        .map_err(|e| SshError::InvalidArgument(format!("target {}: {e}", target.name)))?;
    let deadline = Instant::now() + config.connect_timeout;
    let where_ = target.socket_addr_string();
    let tcp = tcp_connect(
        &target.address,
        target.port,
        deadline,
        config.connect_timeout,
    )
    .await?;
    let (handler, offered) = PinnedHost::new(pinned.clone());
    let ssh_config = hostkey::client_config(base_config(config), Some(&pinned));
    let handshake = client::connect_stream(ssh_config, tcp, handler);
    let mut handle = match timeout_at(deadline, handshake).await {
        Err(_) => return Err(no_ssh_answer(&where_, config.connect_timeout)),
        Ok(Ok(handle)) => handle,
        Ok(Err(e)) => {
            return Err(match hostkey::seen(&offered) {
                Some(key) => mismatch(&pinned, &key),
                None => handshake_error(&where_, &e),
            });
        }
    };
    match timeout_at(deadline, authenticate(&mut handle, cred)).await {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e.in_context(&where_)),
        Err(_) => Err(SshError::Unreachable(format!(
            "{where_}: authentication did not complete within {:?}",
            config.connect_timeout
        ))),
    }
}

/// Scans a host's key: handshake only, the handler always aborts.
pub(crate) async fn scan(address: &str, port: u16, timeout: Duration) -> Result<String, SshError> {
    let deadline = Instant::now() + timeout;
    let where_ = format!("{address}:{port}");
    let tcp = tcp_connect(address, port, deadline, timeout).await?;
    let (handler, seen) = ScanHost::new();
    let config = hostkey::client_config(base_config(&SshConfig::default()), None);
    let handshake = timeout_at(deadline, client::connect_stream(config, tcp, handler)).await;
    if let Some(key) = hostkey::seen(&seen) {
        let bare = PublicKey::new(key.key_data().clone(), "");
        return bare
            .to_openssh()
            .map(|line| line.trim_end().to_string())
            .map_err(|e| SshError::Internal(format!("encoding host key: {e}")));
    }
    Err(match handshake {
        Err(_) => no_ssh_answer(&where_, timeout),
        Ok(Err(e)) => handshake_error(&where_, &e),
        Ok(Ok(_)) => SshError::Internal("scan handler accepted a key".into()),
    })
}

async fn tcp_connect(
    address: &str,
    port: u16,
    deadline: Instant,
    budget: Duration,
) -> Result<TcpStream, SshError> {
    let where_ = if address.contains(':') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    let stream = match timeout_at(deadline, TcpStream::connect((address, port))).await {
        Err(_) => {
            return Err(SshError::Unreachable(format!(
                "{where_}: no TCP answer within {budget:?}"
            )));
        }
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            return Err(SshError::ConnectionRefused(format!(
                "{where_}: connection refused"
            )));
        }
        Ok(Err(e)) => return Err(SshError::Unreachable(format!("{where_}: {e}"))),
        Ok(Ok(stream)) => stream,
    };
    // Set here too: `connect_stream` does not apply `Config::nodelay` itself.
    stream
        .set_nodelay(true)
        .map_err(|e| SshError::Internal(format!("{where_}: setting TCP_NODELAY: {e}")))?;
    Ok(stream)
}

async fn authenticate(handle: &mut Connection, cred: &SshCredential) -> Result<(), SshError> {
    let user = cred.username.as_str();
    let (result, method) = match &cred.auth {
        SshAuth::Password(password) => (
            handle
                .authenticate_password(user, password.expose_secret())
                .await,
            "password",
        ),
        SshAuth::PrivateKey(pem) => {
            let key = decode_secret_key(pem.expose_secret(), None).map_err(|_| {
                SshError::InvalidArgument(format!(
                    "credential {}: not an unencrypted OpenSSH private key",
                    cred.id
                ))
            })?;
            let hash = rsa_hash(handle, key.algorithm().is_rsa()).await;
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            (handle.authenticate_publickey(user, key).await, "key")
        }
    };
    match result {
        Ok(r) if r.success() => Ok(()),
        Ok(_) => Err(SshError::AuthFailed(format!(
            "server rejected the {method} for user {user}"
        ))),
        Err(e) => Err(SshError::Unreachable(format!(
            "connection lost during authentication: {e}"
        ))),
    }
}

async fn rsa_hash(handle: &Connection, is_rsa: bool) -> Option<HashAlg> {
    if !is_rsa {
        return None;
    }
    // Servers that do not announce `server-sig-algs` get SHA-256, which every OpenSSH since
    // 7.2 accepts; SHA-1 (`ssh-rsa`) is never chosen implicitly.
    match handle.best_supported_rsa_hash().await {
        Ok(Some(Some(hash))) => Some(hash),
        _ => Some(HashAlg::Sha256),
    }
}

fn mismatch(pinned: &PublicKey, offered: &PublicKey) -> SshError {
    SshError::HostKeyMismatch {
        expected: hostkey::fingerprint(pinned),
        offered: hostkey::fingerprint(offered),
    }
}

fn no_ssh_answer(where_: &str, budget: Duration) -> SshError {
    SshError::Unreachable(format!("{where_}: no SSH answer within {budget:?}"))
}

fn handshake_error(where_: &str, e: &russh::Error) -> SshError {
    SshError::Unreachable(format!("{where_}: SSH handshake failed: {e}"))
}

impl SshError {
    /// Prefixes the message with where it happened (for errors raised without that context).
    fn in_context(self, where_: &str) -> SshError {
        match self {
            SshError::AuthFailed(m) => SshError::AuthFailed(format!("{where_}: {m}")),
            SshError::Unreachable(m) => SshError::Unreachable(format!("{where_}: {m}")),
            other => other,
        }
    }
}
