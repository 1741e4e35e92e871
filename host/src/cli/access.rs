//! The CLI for access management over HTTP: API tokens (`warden token`), users
//! (`warden user`) and trusted publishers (`warden publisher`). Every command is a thin call
//! of the matching `/v1` route; the server decides and audits.
//!
//! Threat: a token secret leaking through the command line. A new token is printed once, to
//! stdout; the caller's own token comes from `WARDEN_TOKEN` (see [`ServerArgs`]).

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{Client, ServerArgs, print_json};

/// Longest `--ttl` accepted here (the server enforces its own maximum too).
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint a token: your own (a full token), or another user's enrollment token (they
    /// redeem it with `warden token create --user THEM` using the enrollment token).
    Create {
        /// Whose token; yourself when absent.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
        /// Lifetime: `3600`, `90m`, `12h`, `30d` (default 30 days; at most 365 days, or 7
        /// for an enrollment token).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List a user's tokens (metadata only, never secrets); yours when no `--user`.
    List {
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token by id: it stops working at once.
    Revoke {
        /// The token id (the 16 hex digits after `wdn_`).
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// List users.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Create a user and print its enrollment token (shown once).
    Create {
        name: String,
        /// A role to hold (repeat for several).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Disable a user: its tokens are refused from the next request on.
    Disable {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Enable a disabled user again.
    Enable {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete a user: its tokens are revoked; its name stays reserved.
    Delete {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum PublisherCommand {
    /// List trusted publishers (name and key id).
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Trust a publisher key (Privileged Administrators only).
    Trust {
        name: String,
        /// The 32-byte ed25519 public key in hex (`warden keygen` prints it).
        #[arg(long)]
        public_key: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Stop trusting a publisher: its modules are refused at their next run start.
    Distrust {
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Parses `3600`, `3600s`, `90m`, `12h` or `30d` into seconds.
pub(super) fn parse_ttl(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("--ttl {text:?}: expected e.g. 3600, 90m, 12h, 30d"))?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => bail!("--ttl {text:?}: unknown unit '{other}' (use s, m, h or d)"),
    };
    let secs = n.saturating_mul(scale);
    if secs == 0 || secs > MAX_TTL_SECS {
        bail!("--ttl must be between 1 second and 365 days");
    }
    Ok(secs)
}

/// The caller's own user name (`GET /v1/whoami`).
async fn me(client: &Client) -> anyhow::Result<String> {
    let who = client.get("/v1/whoami").await?;
    who["user"]
        .as_str()
        .map(str::to_string)
        .context("the server did not say who you are")
}

pub async fn token(cmd: TokenCommand) -> anyhow::Result<i32> {
    match cmd {
        TokenCommand::Create {
            user,
            label,
            ttl,
            server,
        } => {
            let client = Client::new(&server)?;
            // An enrollment token may call only the mint route, so the user must be named.
            let user = match user {
                Some(user) => user,
                None => me(&client).await?,
            };
            let mut body = json!({ "label": label });
            if let Some(ttl) = ttl {
                body["ttl_secs"] = json!(parse_ttl(&ttl)?);
            }
            let issued = client
                .post(&format!("/v1/users/{user}/tokens"), &body)
                .await?;
            eprintln!(
                "{} token {} for {} (expires_ms {}); shown once:",
                issued["kind"].as_str().unwrap_or("?"),
                issued["id"].as_str().unwrap_or("?"),
                user,
                issued["expires_ms"]
            );
            println!("{}", issued["token"].as_str().unwrap_or_default());
        }
        TokenCommand::List { user, server } => {
            let client = Client::new(&server)?;
            let user = match user {
                Some(user) => user,
                None => me(&client).await?,
            };
            print_json(&client.get(&format!("/v1/users/{user}/tokens")).await?)?;
        }
        TokenCommand::Revoke { id, server } => {
            Client::new(&server)?
                .delete(&format!("/v1/tokens/{id}"))
                .await?;
            println!("revoked token {id}");
        }
    }
    Ok(0)
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<i32> {
    let done: Value = match cmd {
        UserCommand::List { server } => Client::new(&server)?.get("/v1/users").await?,
        UserCommand::Create {
            name,
            roles,
            server,
        } => {
            let body = json!({ "name": name, "roles": roles, "enroll": true });
            let created = Client::new(&server)?.post("/v1/users", &body).await?;
            eprintln!(
                "created {name}; enrollment token (shown once, expires_ms {}; the user redeems \
                 it with `warden token create --user {name}`):",
                created["enrollment"]["expires_ms"]
            );
            println!(
                "{}",
                created["enrollment"]["token"].as_str().unwrap_or_default()
            );
            return Ok(0);
        }
        UserCommand::Disable { name, server } => {
            Client::new(&server)?
                .post(&format!("/v1/users/{name}/disable"), &json!({}))
                .await?
        }
        UserCommand::Enable { name, server } => {
            Client::new(&server)?
                .post(&format!("/v1/users/{name}/enable"), &json!({}))
                .await?
        }
        UserCommand::Delete { name, server } => {
            Client::new(&server)?
                .delete(&format!("/v1/users/{name}"))
                .await?;
            println!("deleted user {name}");
            return Ok(0);
        }
    };
    print_json(&done)?;
    Ok(0)
}

pub async fn publisher(cmd: PublisherCommand) -> anyhow::Result<i32> {
    match cmd {
        PublisherCommand::List { server } => {
            print_json(&Client::new(&server)?.get("/v1/publishers").await?)?;
        }
        PublisherCommand::Trust {
            name,
            public_key,
            server,
        } => {
            let body = json!({ "name": name, "public_key": public_key });
            print_json(&Client::new(&server)?.post("/v1/publishers", &body).await?)?;
        }
        PublisherCommand::Distrust { name, server } => {
            Client::new(&server)?
                .delete(&format!("/v1/publishers/{name}"))
                .await?;
            println!("distrusted publisher {name}; its modules no longer start runs");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_units_and_bounds() {
        assert_eq!(parse_ttl("3600").unwrap(), 3600);
        assert_eq!(parse_ttl("90m").unwrap(), 5400);
        assert_eq!(parse_ttl("12h").unwrap(), 43_200);
        assert_eq!(parse_ttl("30d").unwrap(), 2_592_000);
        for bad in ["", "0", "366d", "5y", "d", "-1", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
