//! `warden sink …` and `warden alert …`: the audit stream's sinks, the webhook destination
//! allow-list, dead letters and alert rules on a server (a Privileged Administrator's API).
//! A sink's secrets are vault credentials it names (`warden credential add`), never flags.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, ServerArgs, print_json};

#[derive(Subcommand, Debug)]
pub enum SinkCommand {
    /// List sinks (with their enabled state).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Add a sink from its JSON configuration (inline, or `@FILE`), e.g.
    /// `{"name":"siem","kind":"webhook","url":"http://10.0.0.5:8080/hook","secret_credential":"siem-hmac"}`.
    Add {
        config: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a sink.
    Remove {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Enable a sink (after a 410 disabled it, say).
    Enable {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Disable a sink.
    Disable {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A webhook's dead letters.
    DeadLetters {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send a webhook's dead letters once more.
    Replay {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show the webhook destination allow-list, or replace it with ENTRIES (`HOST:PORT`
    /// or CIDR); `--clear` empties it.
    Allow {
        entries: Vec<String>,
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AlertCommand {
    /// List alert rules.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Add a rule from its JSON (inline, or `@FILE`), e.g.
    /// `{"name":"burst","match":{"kind":"denial_burst","threshold":5,"window_secs":60,"by":"run"},"sinks":["pager"],"cooldown_secs":600}`.
    Add {
        rule: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a rule.
    Remove {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Inline JSON, or the contents of `@FILE`.
fn json_arg(text: &str) -> anyhow::Result<Value> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)?,
        None => text.to_string(),
    };
    Ok(serde_json::from_str(&text)?)
}

pub async fn sink(cmd: SinkCommand) -> anyhow::Result<i32> {
    match cmd {
        SinkCommand::List { server } => {
            print_json(&Client::new(&server)?.get("/v1/notify/sinks").await?)?;
        }
        SinkCommand::Add { config, server } => {
            let body = json_arg(&config)?;
            print_json(
                &Client::new(&server)?
                    .post("/v1/notify/sinks", &body)
                    .await?,
            )?;
        }
        SinkCommand::Remove { name, server } => {
            Client::new(&server)?
                .delete(&format!("/v1/notify/sinks/{name}"))
                .await?;
            println!("removed sink {name}");
        }
        SinkCommand::Enable { name, server } => {
            let path = format!("/v1/notify/sinks/{name}/enable");
            Client::new(&server)?.post(&path, &json!({})).await?;
            println!("enabled sink {name}; it resumes at its cursor");
        }
        SinkCommand::Disable { name, server } => {
            let path = format!("/v1/notify/sinks/{name}/disable");
            Client::new(&server)?.post(&path, &json!({})).await?;
            println!("disabled sink {name}");
        }
        SinkCommand::DeadLetters { name, server } => {
            let path = format!("/v1/notify/sinks/{name}/dead-letters");
            print_json(&Client::new(&server)?.get(&path).await?)?;
        }
        SinkCommand::Replay { name, server } => {
            let path = format!("/v1/notify/sinks/{name}/dead-letters/replay");
            print_json(&Client::new(&server)?.post(&path, &json!({})).await?)?;
        }
        SinkCommand::Allow {
            entries,
            clear,
            server,
        } => {
            let client = Client::new(&server)?;
            if !entries.is_empty() || clear {
                let body = json!({ "entries": entries });
                client.put("/v1/notify/allow", &body).await?;
            }
            print_json(&client.get("/v1/notify/allow").await?)?;
        }
    }
    Ok(0)
}

pub async fn alert(cmd: AlertCommand) -> anyhow::Result<i32> {
    match cmd {
        AlertCommand::List { server } => {
            print_json(&Client::new(&server)?.get("/v1/notify/rules").await?)?;
        }
        AlertCommand::Add { rule, server } => {
            let body = json_arg(&rule)?;
            print_json(
                &Client::new(&server)?
                    .post("/v1/notify/rules", &body)
                    .await?,
            )?;
        }
        AlertCommand::Remove { name, server } => {
            Client::new(&server)?
                .delete(&format!("/v1/notify/rules/{name}"))
                .await?;
            println!("removed alert rule {name}");
        }
    }
    Ok(0)
}
