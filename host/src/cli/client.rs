//! The CLI as an HTTP client of a Warden server: push modules, create and share
//! processes, start runs (and wait for them), follow a run's events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::registry::manifest::InputSpec;
use crate::tls::ServerTrust;

/// Which server, as whom.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(long, env = "WARDEN_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// An API token (prefer the WARDEN_TOKEN environment variable: argv is visible to
    /// other local users).
    #[arg(long, env = "WARDEN_TOKEN", hide_env_values = true)]
    token: String,
    /// Trust the server's certificate if this PEM CA file (or the server's own certificate)
    /// signed it [default: the system's trust store].
    #[arg(long, env = "WARDEN_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this fingerprint (`sha256:…`, as `warden
    /// init` and `warden tls fingerprint` print it).
    #[arg(
        long,
        env = "WARDEN_SERVER_FINGERPRINT",
        value_name = "SHA256",
        conflicts_with = "ca"
    )]
    server_fingerprint: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModuleCommand {
    /// Upload a signed module.
    Push {
        /// The signed `.wasm`.
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List modules.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProcessCommand {
    /// Create a process bound to a module.
    Create {
        /// The process name.
        name: String,
        /// The module's digest.
        #[arg(
            long,
            required_unless_present = "workflow",
            conflicts_with = "workflow"
        )]
        module: Option<String>,
        /// A workflow definition (JSON, or TOML for a `.toml` file) instead of one module;
        /// each task state carries its own grant.
        #[arg(long, value_name = "FILE")]
        workflow: Option<std::path::PathBuf>,
        /// A credential the process may use.
        #[arg(long = "credential")]
        credentials: Vec<String>,
        /// A target the process may act on.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// A command pattern the process may run, as argv words (`*` one word, `**` last for
        /// the rest, a leading `sudo` for sudo). None: no command.
        #[arg(long = "command")]
        commands: Vec<String>,
        /// Trusted processes only: commands go to the target as shell text, not argv words.
        #[arg(long = "allow-raw-shell")]
        raw_shell: bool,
        /// A path prefix the process may transfer files under.
        #[arg(long = "path")]
        paths: Vec<String>,
        /// A credential the process may rotate (`credentials.rotate`).
        #[arg(long = "rotate")]
        rotations: Vec<String>,
        #[command(flatten)]
        rotation_policy: super::RotationPolicyArgs,
        #[arg(long = "input", value_name = "KEY=VALUE", help = super::inputs::INPUT_HELP)]
        inputs: Vec<String>,
        /// Approvals each run needs before it starts (four eyes); 0 for none.
        #[arg(long = "approvals", default_value_t = 0)]
        required_approvals: u32,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Share a process with users and roles.
    Share {
        /// Process name or id.
        process: String,
        #[arg(long = "user")]
        users: Vec<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List the processes you may see.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Add a cron schedule to a process (5 fields, or 6 with leading seconds; UTC).
    Schedule {
        /// Process name or id.
        process: String,
        /// The cron expression, e.g. "0 3 */30 * *".
        #[arg(long)]
        cron: String,
        #[arg(long = "input", value_name = "KEY=VALUE", help = super::inputs::INPUT_HELP)]
        inputs: Vec<String>,
        /// Do not fire once at start when an occurrence was missed while the server was down.
        #[arg(long)]
        no_catch_up: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Start a run of a process.
    Start {
        /// Process name or id.
        process: String,
        #[arg(long = "input", value_name = "KEY=VALUE", help = super::inputs::INPUT_HELP)]
        inputs: Vec<String>,
        /// Wait for the run to end, print its events and result; the exit code reflects it.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Follow a run's events (server-sent events) until it ends.
    Logs {
        /// The run id.
        run: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a run (a workflow run as its step tree; `--json` for the whole record).
    Get {
        /// The run id.
        run: String,
        /// Print the whole run record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Resume a failed or interrupted workflow run from the step that failed (a new attempt
    /// of the same run; steps that succeeded are not run again).
    Resume {
        /// The run id.
        run: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Cancel a run.
    Cancel {
        /// The run id.
        run: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show a run's approval request: module, capabilities, inputs, targets, credentials,
    /// and the approvals so far.
    Approvals {
        /// The run id.
        run: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Approve a run awaiting approval (exactly as `run approvals` shows it).
    Approve {
        /// The run id.
        run: String,
        /// The binding digest shown by `warden run approvals` (without `sha256:`): the
        /// approval is refused if the run or its process changed since.
        #[arg(long)]
        binding: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Reject a run awaiting approval; it never executes.
    Reject {
        /// The run id.
        run: String,
        /// Why (recorded in the run and the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(super) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    trust: ServerTrust,
}

impl Client {
    /// A client of `args.server` that verifies an `https://` server per `--ca` or
    /// `--server-fingerprint` (the system's trust store without either).
    pub(super) fn new(args: &ServerArgs) -> anyhow::Result<Self> {
        let trust = ServerTrust::from_args(args.ca.as_deref(), args.server_fingerprint.as_deref())?;
        let base = args.server.trim_end_matches('/').to_string();
        // Asked to verify a server that would not be verified: refuse rather than send the
        // token in clear to whoever answers.
        if trust != ServerTrust::SystemRoots && !base.starts_with("https://") {
            bail!(
                "--ca and --server-fingerprint verify an https:// server, but the server URL \
                 is {base}; use its https:// URL"
            );
        }
        warn_if_in_clear(&base);
        let http = trust
            .client_builder()?
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base,
            token: args.token.clone(),
            trust,
        })
    }

    /// A failed request as one sentence when the server was not verified.
    fn contacting(&self, error: reqwest::Error) -> anyhow::Error {
        match self.trust.explain(&error) {
            Some(sentence) => anyhow::anyhow!("{sentence}; no request was sent to {}", self.base),
            None => anyhow::Error::new(error).context("contacting the server"),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.contacting(e))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body["error"]["code"].as_str().unwrap_or("error");
            let message = body["error"]["message"].as_str().unwrap_or("");
            bail!("server answered {status}: {code}: {message}");
        }
        Ok(body)
    }

    pub(super) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub(super) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub(super) async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub(super) async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// A process id from a name or an id.
    async fn process_id(&self, name_or_id: &str) -> anyhow::Result<String> {
        let process = self.process(name_or_id).await?;
        process["id"]
            .as_str()
            .map(str::to_string)
            .context("no process id in the answer")
    }

    /// A process (as the API shows it) from a name or an id.
    async fn process(&self, name_or_id: &str) -> anyhow::Result<Value> {
        let all = self.get("/v1/processes").await?;
        all.as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"] == name_or_id || p["name"] == name_or_id)
            .cloned()
            .with_context(|| format!("no process '{name_or_id}' visible to you"))
    }

    /// `--input` pairs for a run of `process`, typed by what it declares.
    async fn process_inputs(
        &self,
        process: &Value,
        pairs: &[String],
    ) -> anyhow::Result<BTreeMap<String, Value>> {
        if pairs.is_empty() {
            return Ok(BTreeMap::new());
        }
        typed_inputs(pairs, self.declared_inputs(process).await)
    }

    /// The inputs `process` declares: its workflow's, or its module's manifest's.
    async fn declared_inputs(
        &self,
        process: &Value,
    ) -> anyhow::Result<BTreeMap<String, InputSpec>> {
        if let Some(workflow) = process.get("workflow").filter(|w| !w.is_null()) {
            return super::inputs::declared_in(workflow);
        }
        let digest = process["module_digest"].as_str().unwrap_or_default();
        self.module_inputs(digest).await
    }

    /// The inputs the module with `digest` declares.
    async fn module_inputs(&self, digest: &str) -> anyhow::Result<BTreeMap<String, InputSpec>> {
        let module = self.get(&format!("/v1/modules/{digest}")).await?;
        super::inputs::declared_in(&module)
    }
}

/// A warning when `base` is plain HTTP to another machine: the token crosses the network in
/// clear (allowed, for a server started with `--insecure-http`).
fn warn_if_in_clear(base: &str) {
    let Ok(url) = reqwest::Url::parse(base) else {
        return;
    };
    let host = url.host_str().unwrap_or("localhost");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.scheme() == "http" && !loopback {
        tracing::warn!(
            "{base} is plain HTTP: the token and all else sent cross the network in clear"
        );
    }
}

/// `--input` pairs typed by `declared`; where the declarations could not be read (the
/// caller may start a process but not read its module), typed by inference, with a note.
fn typed_inputs(
    pairs: &[String],
    declared: anyhow::Result<BTreeMap<String, InputSpec>>,
) -> anyhow::Result<BTreeMap<String, Value>> {
    if pairs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut parsed = match &declared {
        Ok(declared) => super::inputs::parse("input", pairs, Some(declared))?,
        Err(_) => super::inputs::parse("input", pairs, None)?,
    };
    if let Err(e) = declared {
        parsed.warnings.insert(
            0,
            format!(
                "the declared inputs could not be read ({e:#}); input types are inferred \
                 from the text (write KEY:=JSON to be exact)"
            ),
        );
    }
    Ok(parsed.into_values())
}

pub(super) fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn module(cmd: ModuleCommand) -> anyhow::Result<i32> {
    match cmd {
        ModuleCommand::Push { file, server } => {
            let client = Client::new(&server)?;
            let bytes = std::fs::read(&file).with_context(|| file.display().to_string())?;
            let req = client
                .http
                .post(format!("{}/v1/modules", client.base))
                .header("content-type", "application/wasm")
                .body(bytes);
            let info = client.send(req).await?;
            println!(
                "pushed {}@{} digest {}",
                info["name"].as_str().unwrap_or("?"),
                info["version"].as_str().unwrap_or("?"),
                info["digest"].as_str().unwrap_or("?")
            );
        }
        ModuleCommand::List { server } => {
            print_json(&Client::new(&server)?.get("/v1/modules").await?)?
        }
    }
    Ok(0)
}

pub async fn process(cmd: ProcessCommand) -> anyhow::Result<i32> {
    match cmd {
        ProcessCommand::Create {
            name,
            module,
            workflow,
            credentials,
            targets,
            commands,
            raw_shell,
            paths,
            rotations,
            rotation_policy,
            inputs,
            required_approvals,
            server,
        } => {
            let client = Client::new(&server)?;
            let rotation_policy = rotation_policy.policy();
            let mut body = json!({
                "name": name,
                "required_approvals": required_approvals,
            });
            let declared = match (workflow, module) {
                (Some(file), _) => {
                    let modules = client.get("/v1/modules").await?;
                    let definition = super::workflow::read_definition(&file, &modules)?;
                    let declared = super::inputs::declared_in(&definition);
                    body["workflow"] = definition;
                    declared
                }
                (None, module) => {
                    let module = module.unwrap_or_default();
                    let declared = if inputs.is_empty() {
                        Ok(BTreeMap::new())
                    } else {
                        client.module_inputs(&module).await
                    };
                    body["module_digest"] = json!(module);
                    body["grant"] = json!({ "credentials": credentials, "targets": targets, "commands": commands, "raw_shell": raw_shell, "paths": paths, "rotations": rotations, "rotation_policy": rotation_policy });
                    declared
                }
            };
            body["default_inputs"] = json!(typed_inputs(&inputs, declared)?);
            let p = client.post("/v1/processes", &body).await?;
            println!(
                "created process {} ({})",
                p["name"].as_str().unwrap_or("?"),
                p["id"].as_str().unwrap_or("?")
            );
        }
        ProcessCommand::Share {
            process,
            users,
            roles,
            server,
        } => {
            let client = Client::new(&server)?;
            let id = client.process_id(&process).await?;
            client
                .post(
                    &format!("/v1/processes/{id}/share"),
                    &json!({ "users": users, "roles": roles }),
                )
                .await?;
            println!("shared {process}");
        }
        ProcessCommand::List { server } => {
            print_json(&Client::new(&server)?.get("/v1/processes").await?)?
        }
        ProcessCommand::Schedule {
            process,
            cron,
            inputs,
            no_catch_up,
            server,
        } => {
            let client = Client::new(&server)?;
            let found = client.process(&process).await?;
            let id = found["id"].as_str().unwrap_or_default().to_string();
            let body = json!({
                "cron": cron,
                "inputs": client.process_inputs(&found, &inputs).await?,
                "catch_up": !no_catch_up,
            });
            let schedule = client
                .post(&format!("/v1/processes/{id}/schedules"), &body)
                .await?;
            println!(
                "scheduled {process}: {} (schedule {})",
                schedule["cron"].as_str().unwrap_or("?"),
                schedule["id"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(0)
}

pub async fn run(cmd: RunCommand) -> anyhow::Result<i32> {
    match cmd {
        RunCommand::Start {
            process,
            inputs,
            wait,
            server,
        } => {
            let client = Client::new(&server)?;
            let found = client.process(&process).await?;
            let id = found["id"].as_str().unwrap_or_default().to_string();
            let inputs = client.process_inputs(&found, &inputs).await?;
            let run = client
                .post(
                    &format!("/v1/processes/{id}/runs"),
                    &json!({ "inputs": inputs }),
                )
                .await?;
            let run_id = run["id"]
                .as_str()
                .context("no run id in the answer")?
                .to_string();
            if !wait {
                println!("{run_id}");
                return Ok(0);
            }
            if run["state"] == "awaiting-approval" {
                println!("{run_id} is awaiting approval (see `warden run approvals {run_id}`)");
                return Ok(0);
            }
            follow(&client, &run_id).await
        }
        RunCommand::Logs { run, server } => follow(&Client::new(&server)?, &run).await,
        RunCommand::Get { run, json, server } => {
            let record = Client::new(&server)?
                .get(&format!("/v1/runs/{run}"))
                .await?;
            if json || record.get("workflow").is_none() {
                print_json(&record)?;
            } else {
                print!("{}", super::workflow::step_tree(&record));
            }
            Ok(0)
        }
        RunCommand::Resume { run, server } => {
            let record = Client::new(&server)?
                .post(&format!("/v1/runs/{run}/resume"), &json!({}))
                .await?;
            println!(
                "resumed {run}: attempt {}",
                record["workflow"]["attempt"].as_u64().unwrap_or(0)
            );
            Ok(0)
        }
        RunCommand::Cancel { run, server } => {
            print_json(
                &Client::new(&server)?
                    .post(&format!("/v1/runs/{run}/cancel"), &json!({}))
                    .await?,
            )?;
            Ok(0)
        }
        RunCommand::Approvals { run, server } => {
            print_json(
                &Client::new(&server)?
                    .get(&format!("/v1/runs/{run}/approval"))
                    .await?,
            )?;
            Ok(0)
        }
        RunCommand::Approve {
            run,
            binding,
            server,
        } => {
            let body = match binding {
                Some(binding) => json!({ "binding": binding.trim_start_matches("sha256:") }),
                None => json!({}),
            };
            let outcome = Client::new(&server)?
                .post(&format!("/v1/runs/{run}/approve"), &body)
                .await?;
            let request = &outcome["request"];
            println!(
                "approved run {run} (binding sha256:{}): {} of {} approvals{}",
                request["binding"].as_str().unwrap_or("?"),
                request["valid_approvals"],
                request["required_approvals"],
                if outcome["started"] == true {
                    "; the run is queued"
                } else {
                    ""
                }
            );
            Ok(0)
        }
        RunCommand::Reject {
            run,
            reason,
            server,
        } => {
            let denied = Client::new(&server)?
                .post(
                    &format!("/v1/runs/{run}/reject"),
                    &json!({ "reason": reason }),
                )
                .await?;
            println!("run {run} is {}", denied["state"].as_str().unwrap_or("?"));
            Ok(0)
        }
    }
}

/// Streams a run's events until its final state; exit code 0 only if it succeeded.
async fn follow(client: &Client, run_id: &str) -> anyhow::Result<i32> {
    use futures::StreamExt;
    let req = client
        .http
        .get(format!("{}/v1/runs/{run_id}/events", client.base))
        .bearer_auth(&client.token);
    let resp = req.send().await.map_err(|e| client.contacting(e))?;
    if !resp.status().is_success() {
        bail!("server answered {}", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let mut buffer = String::new();
    let mut event = String::new();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find('\n') {
            let line = buffer[..end].trim_end_matches('\r').to_string();
            buffer.drain(..=end);
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data:") {
                let value: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                if event == "log" {
                    println!(
                        "[{:>6} ms] {:<5} {}",
                        value["at_ms"],
                        value["level"].as_str().unwrap_or(""),
                        value["message"].as_str().unwrap_or("")
                    );
                } else if event == "step" {
                    println!(
                        "step {} [{}] {}",
                        value["path"].as_str().unwrap_or("?"),
                        value["step"]["kind"].as_str().unwrap_or("?"),
                        value["step"]["status"].as_str().unwrap_or("?")
                    );
                } else if event == "state" {
                    let state = value["state"].as_str().unwrap_or("?");
                    match (value["result"].as_str(), value["error"].as_str()) {
                        (Some(result), _) => println!("{state}: {result}"),
                        (None, Some(error)) => println!("{state}: {error}"),
                        _ => println!("{state}"),
                    }
                    return Ok(if state == "succeeded" { 0 } else { 1 });
                }
            }
        }
    }
    bail!("the event stream ended before the run did")
}
