//! `warden bridge`: enrolment tokens, the list of remote bridges and their revocation (HTTP
//! calls to the server, as an administrator), and the remote bridge itself (`enroll`, `run`).
//!
//! Threat: the enrolment token leaking through the command line. Prefer
//! `WARDEN_BRIDGE_TOKEN` to `--token` (argv is visible to other local users); the token is
//! single-use and expires, so a leak after enrolment is harmless.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use super::access::parse_ttl;
use super::client::{Client, ServerArgs, print_json};
use crate::bridge::remote::{self, Agent, Trust};

/// How long `warden bridge run` waits, once asked to stop, for the runs it is executing.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Subcommand, Debug)]
pub enum BridgeCommand {
    /// Enrolment tokens for new bridges.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List the remote bridges: id, zone, version, last seen, online, runs in flight.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a bridge: its next request is refused, its runs end `lost`.
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// On the bridge's machine: enrol with a one-time token (makes the bridge's key).
    Enroll {
        /// The server's base URL (`https://…`).
        #[arg(long)]
        server: String,
        /// The enrolment token (prefer WARDEN_BRIDGE_TOKEN).
        #[arg(long, env = "WARDEN_BRIDGE_TOKEN", hide_env_values = true)]
        token: String,
        /// Pin the server's certificate (`sha256:…`, printed by `warden init`).
        #[arg(long)]
        server_fingerprint: Option<String>,
        /// Verify the server against this CA certificate instead.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The bridge's data directory (its key, never shared).
        #[arg(long)]
        data: PathBuf,
        /// A name for the bridge in `warden bridge list`.
        #[arg(long, default_value = "bridge")]
        name: String,
    },
    /// On the bridge's machine: pull and execute the runs of its zone (outbound only; it
    /// listens on no port). Stops on SIGTERM or SIGINT.
    Run {
        #[arg(long)]
        data: PathBuf,
        /// Most runs at once.
        #[arg(long, default_value_t = 8)]
        slots: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a one-time token enrolling one bridge into a zone (shown once).
    Create {
        #[arg(long)]
        zone: String,
        /// Lifetime: `3600`, `90m`, `1h`, `7d` (default 1 hour, at most 7 days).
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub async fn run(cmd: BridgeCommand) -> anyhow::Result<i32> {
    match cmd {
        BridgeCommand::Token(TokenCommand::Create { zone, ttl, server }) => {
            let client = Client::new(&server)?;
            let ttl_secs = parse_ttl(&ttl)?;
            let reply = client
                .post(
                    "/v1/bridges/tokens",
                    &json!({ "zone": zone, "ttl_secs": ttl_secs }),
                )
                .await?;
            println!(
                "enrolment token for zone {} (shown once, single use): {}",
                reply["zone"].as_str().unwrap_or_default(),
                reply["token"].as_str().unwrap_or_default()
            );
            Ok(0)
        }
        BridgeCommand::List { server } => {
            let client = Client::new(&server)?;
            let list = client.get("/v1/bridges").await?;
            print_json(&list)?;
            Ok(0)
        }
        BridgeCommand::Revoke { id, reason, server } => {
            let client = Client::new(&server)?;
            let reply = client
                .post(
                    &format!("/v1/bridges/{id}/revoke"),
                    &json!({ "reason": reason }),
                )
                .await?;
            print_json(&reply)?;
            Ok(0)
        }
        BridgeCommand::Enroll {
            server,
            token,
            server_fingerprint,
            ca,
            data,
            name,
        } => {
            let trust = Trust {
                fingerprint: server_fingerprint,
                ca,
            };
            let identity = remote::enroll(&data, &server, &token, trust, &name).await?;
            println!(
                "enrolled bridge {} for zone {} with {}",
                identity.bridge_id, identity.zone, identity.server
            );
            Ok(0)
        }
        BridgeCommand::Run { data, slots } => {
            let agent = Agent::open(&data, slots)?;
            let stop = tokio_util::sync::CancellationToken::new();
            let running = tokio::spawn(agent.clone().run(stop.clone()));
            let signal = super::shutdown::stop_signal().await?;
            tracing::info!(
                signal,
                "bridge stopping: no new runs; waiting for those in progress"
            );
            stop.cancel();
            let _ = running.await;
            let left = agent.drain(DRAIN_GRACE).await;
            if left > 0 {
                tracing::warn!(
                    runs = left,
                    "stopped with runs in progress; the server ends them lost"
                );
            }
            Ok(0)
        }
    }
}
