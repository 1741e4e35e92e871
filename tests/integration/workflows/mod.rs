//! Workflows against a real server on a bound port: real guests (the `probe` fixture's `emit`,
//! `fail`, `sleep`, `exec` and `exec-strict` modes, and the account examples), real sshd targets
//! where a step acts on one, and a real `warden serve` child killed and restarted for the
//! restart cases. This file holds the shared harness; one file per area.

mod examples;
mod restart;
mod states;
mod views;

use reqwest::StatusCode;
use serde_json::{Value, json};
use warden_tests::http::{Reply, Server, new_key};
use warden_tests::sshd::{Sshd, TestUser};

/// A server with the probe published (and trusted), and optionally a target.
pub(super) struct Lab {
    pub server: Server,
    pub probe: String,
}

impl Lab {
    pub async fn new() -> Lab {
        let server = Server::start().await;
        let key = new_key();
        server.trust("acme", &key).await;
        let probe = server.publish("probe", &key).await;
        Lab { server, probe }
    }

    /// Creates a workflow process `name` as the admin; the reply.
    pub async fn create(&self, name: &str, workflow: Value) -> Reply {
        self.server
            .post(
                "/v1/processes",
                &self.server.admin,
                json!({ "name": name, "workflow": workflow }),
            )
            .await
    }

    /// Creates it and expects 201; the process id.
    pub async fn process(&self, name: &str, workflow: Value) -> String {
        let r = self.create(name, workflow).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Starts a run as the admin and waits for its end; the run.
    pub async fn run(&self, pid: &str, inputs: Value) -> Value {
        let id = self.server.start_run(pid, &self.server.admin, inputs).await;
        self.server.wait_for_state_or_end(&id).await
    }

    /// A task state running the probe in `mode` with more `inputs` and `extra` fields.
    pub fn probe(&self, mode: &str, inputs: Value, extra: Value) -> Value {
        let mut all = json!({ "mode": mode });
        merge(&mut all, inputs);
        let mut state = json!({ "type": "task", "module": self.probe, "inputs": all });
        merge(&mut state, extra);
        state
    }

    /// A task state that outputs `content` (a JSON text becomes an object).
    pub fn emit(&self, content: &str, extra: Value) -> Value {
        self.probe("emit", json!({ "content": content }), extra)
    }
}

/// `into` with the fields of `from` added (objects only).
pub(super) fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// The step at `path` in a run.
pub(super) fn step<'a>(run: &'a Value, path: &str) -> &'a Value {
    &run["workflow"]["steps"][path]
}

/// A password credential `name` for `user`, and targets `t0…` for `sshds`, through the API.
pub(super) async fn fleet(server: &Server, name: &str, user: &TestUser, sshds: &[Sshd]) {
    let r = server
        .post(
            "/v1/credentials",
            &server.admin,
            json!({ "name": name, "username": user.name, "secret": user.password }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    for (i, sshd) in sshds.iter().enumerate() {
        let body = json!({ "name": format!("t{i}"), "address": sshd.addr(), "host_key": sshd.host_key_line });
        let r = server.post("/v1/targets", &server.admin, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
}
