//! `warden trigger …`: inbound triggers of a process on a server (create, list, show,
//! delete, rotate-secret). The flags are parsed here into the API's JSON; the server checks
//! everything again. The HMAC secret is printed once, by create and rotate-secret.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, ServerArgs, print_json};

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Create a trigger of PROCESS (name or id). Events then go to the URL it prints, signed
    /// with the secret it prints once (or with the ed25519 key given).
    Create {
        process: String,
        /// `INPUT=/json/pointer`: the process input takes the event's value there.
        #[arg(long = "map", value_name = "INPUT=POINTER")]
        map: Vec<String>,
        /// `INPUT=a,b,…`: the only values (or list elements) the input may take.
        #[arg(long = "allow", value_name = "INPUT=VALUES")]
        allow: Vec<String>,
        /// At most N runs per WINDOW (`10/1m`; units s, m, h, d).
        #[arg(long, value_name = "N/WINDOW")]
        rate: Option<String>,
        /// At most N runs of this trigger in flight at once.
        #[arg(long, value_name = "N")]
        max_concurrent: Option<u32>,
        /// `/pointer/WINDOW`: events whose value at the pointer was seen within WINDOW start
        /// no run (`/user/name/10m`).
        #[arg(long, value_name = "FIELD/WINDOW")]
        dedupe: Option<String>,
        /// Keep each accepted event's body (redacted).
        #[arg(long)]
        store_body: bool,
        /// Runs it starts wait for approval.
        #[arg(long)]
        require_approval: bool,
        /// Timestamp tolerance in seconds (default 300).
        #[arg(long, value_name = "SECS")]
        tolerance: Option<u64>,
        /// Verify `v1a` ed25519 signatures under this public key (base64) instead.
        #[arg(long, value_name = "BASE64")]
        ed25519_public_key: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the triggers of PROCESS (name or id).
    List {
        process: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show one trigger.
    Show {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a trigger: its URL answers 404 at once.
    Delete {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Replace a trigger's secret (printed once) or, with --ed25519-public-key, its key.
    RotateSecret {
        id: String,
        #[arg(long, value_name = "BASE64")]
        ed25519_public_key: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Seconds in a window like `90`, `30s`, `5m`, `2h`, `1d`.
pub(crate) fn parse_window(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("'{text}' is not a window (e.g. 30s, 5m, 1h)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("unknown window unit '{other}' (s, m, h, d)"),
    };
    Ok(n.saturating_mul(unit))
}

/// `N/WINDOW` as the API's `{runs, window_secs}`.
pub(crate) fn parse_rate(text: &str) -> anyhow::Result<Value> {
    let (n, window) = text
        .split_once('/')
        .with_context(|| format!("'{text}' is not N/WINDOW"))?;
    let runs: u32 = n.parse().with_context(|| format!("'{n}' is not a count"))?;
    Ok(json!({ "runs": runs, "window_secs": parse_window(window)? }))
}

/// `/pointer/WINDOW` (the window after the last `/`) as `{pointer, window_secs}`.
pub(crate) fn parse_dedupe(text: &str) -> anyhow::Result<Value> {
    let (pointer, window) = text
        .rsplit_once('/')
        .with_context(|| format!("'{text}' is not /POINTER/WINDOW"))?;
    Ok(json!({ "pointer": pointer, "window_secs": parse_window(window)? }))
}

fn pairs(flags: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .with_context(|| format!("--{what} '{f}' is not INPUT=…"))?;
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

async fn process_id(client: &Client, name_or_id: &str) -> anyhow::Result<String> {
    let all = client.get("/v1/processes").await?;
    all.as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"] == name_or_id || p["name"] == name_or_id)
        .and_then(|p| p["id"].as_str().map(str::to_string))
        .with_context(|| format!("no process '{name_or_id}' visible to you"))
}

fn print_with_secret(value: &Value) -> anyhow::Result<()> {
    print_json(value)?;
    if value.get("secret").is_some() {
        eprintln!("the secret is shown this once: give it to the sender now");
    }
    Ok(())
}

pub async fn run(cmd: TriggerCommand) -> anyhow::Result<i32> {
    match cmd {
        TriggerCommand::Create {
            process,
            map,
            allow,
            rate,
            max_concurrent,
            dedupe,
            store_body,
            require_approval,
            tolerance,
            ed25519_public_key,
            server,
        } => {
            let client = Client::new(&server)?;
            let id = process_id(&client, &process).await?;
            let map: BTreeMap<String, String> = pairs(&map, "map")?.into_iter().collect();
            let allow: BTreeMap<String, BTreeSet<String>> = pairs(&allow, "allow")?
                .into_iter()
                .map(|(k, v)| (k, v.split(',').map(str::to_string).collect()))
                .collect();
            let mut body = json!({
                "map": map,
                "allow": allow,
                "store_body": store_body,
                "require_approval": require_approval,
            });
            if let Some(rate) = rate {
                body["rate"] = parse_rate(&rate)?;
            }
            if let Some(n) = max_concurrent {
                body["max_concurrent"] = json!(n);
            }
            if let Some(d) = dedupe {
                body["dedupe"] = parse_dedupe(&d)?;
            }
            if let Some(t) = tolerance {
                body["tolerance_secs"] = json!(t);
            }
            if let Some(k) = ed25519_public_key {
                body["ed25519_public_key"] = json!(k);
            }
            let created = client
                .post(&format!("/v1/processes/{id}/triggers"), &body)
                .await?;
            print_with_secret(&created)?;
        }
        TriggerCommand::List { process, server } => {
            let client = Client::new(&server)?;
            let id = process_id(&client, &process).await?;
            print_json(&client.get(&format!("/v1/processes/{id}/triggers")).await?)?;
        }
        TriggerCommand::Show { id, server } => {
            print_json(
                &Client::new(&server)?
                    .get(&format!("/v1/triggers/{id}"))
                    .await?,
            )?;
        }
        TriggerCommand::Delete { id, server } => {
            Client::new(&server)?
                .delete(&format!("/v1/triggers/{id}"))
                .await?;
            println!("deleted trigger {id}");
        }
        TriggerCommand::RotateSecret {
            id,
            ed25519_public_key,
            server,
        } => {
            let body = json!({ "ed25519_public_key": ed25519_public_key });
            let rotated = Client::new(&server)?
                .post(&format!("/v1/triggers/{id}/rotate-secret"), &body)
                .await?;
            print_with_secret(&rotated)?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_windows_rates_and_dedupe_fields() {
        assert_eq!(parse_window("90").unwrap(), 90);
        assert_eq!(parse_window("5m").unwrap(), 300);
        assert_eq!(parse_window("2h").unwrap(), 7200);
        assert!(parse_window("5y").is_err());
        assert!(parse_window("m").is_err());
        assert_eq!(
            parse_rate("10/1m").unwrap(),
            json!({"runs": 10, "window_secs": 60})
        );
        assert_eq!(
            parse_dedupe("/user/name/10m").unwrap(),
            json!({"pointer": "/user/name", "window_secs": 600})
        );
        assert!(parse_rate("ten").is_err());
    }
}
