//! A workflow run across a server restart (SIGKILL of a real `warden serve`, then a new one on
//! the same data directory): a `wait` in progress resumes with its recorded wake-up time; a
//! task that was running ends `interrupted` and the workflow follows its catch.

use std::time::Duration;

use tempfile::TempDir;
use warden_tests::http::{ServeChild, Transport};

use super::*;
use warden_tests::http::init_data_dir;

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

struct Served {
    serve: ServeChild,
    server: Server,
    data: std::path::PathBuf,
    admin: String,
    tmp: TempDir,
    probe: String,
}

impl Served {
    async fn start() -> Served {
        let tmp = TempDir::new().expect("temp dir");
        let data = tmp.path().join("data");
        let admin = init_data_dir(&data);
        let log = tmp.path().join("serve-1.log");
        let serve = ServeChild::start(BIN, &data, Transport::Plain, &[], log).await;
        let server = serve.server(&admin);
        let key = new_key();
        server.trust("acme", &key).await;
        let probe = server.publish("probe", &key).await;
        Served {
            serve,
            server,
            data,
            admin,
            tmp,
            probe,
        }
    }

    async fn restart(&mut self) {
        self.serve.kill_9();
        let log = self.tmp.path().join("serve-2.log");
        self.serve = ServeChild::start(BIN, &self.data, Transport::Plain, &[], log).await;
        self.server = self.serve.server(&self.admin);
    }

    fn task(&self, mode: &str, inputs: Value, extra: Value) -> Value {
        let mut all = json!({ "mode": mode });
        merge(&mut all, inputs);
        let mut state = json!({ "type": "task", "module": self.probe, "inputs": all });
        merge(&mut state, extra);
        state
    }

    async fn process(&self, workflow: Value) -> String {
        let r = self
            .server
            .post(
                "/v1/processes",
                &self.admin,
                json!({ "name": "flow", "workflow": workflow }),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Polls run `id` until `ready` holds for it.
    async fn until(&self, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..400 {
            let r = self
                .server
                .get(&format!("/v1/runs/{id}"), &self.admin)
                .await;
            if ready(&r.body) {
                return r.body;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {id} never got there");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_in_progress_survives_a_restart_with_its_wake_up_time() {
    let mut lab = Served::start().await;
    let workflow = json!({ "start_at": "a", "states": {
        "a": lab.task("emit", json!({"content": "before"}), json!({"next": "w"})),
        "w": { "type": "wait", "seconds": 3, "next": "b" },
        "b": lab.task("emit", json!({"content": "after"}), json!({"end": true}))
    } });
    let pid = lab.process(workflow).await;
    let id = lab.server.start_run(&pid, &lab.admin, json!({})).await;
    let before = lab
        .until(&id, |r| step(r, "w")["status"] == "waiting")
        .await;
    let wake = step(&before, "w")["wake_ms"].as_u64().expect("wake_ms");
    lab.restart().await;
    let run = lab.server.wait_for_state_or_end(&id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["result"], "after");
    assert_eq!(
        step(&run, "w")["wake_ms"].as_u64(),
        Some(wake),
        "the same wake-up time"
    );
    let finished = step(&run, "w")["finished_ms"].as_u64().expect("finished");
    assert!(finished >= wake, "woke at {finished}, before {wake}");
    // The step before the wait ran once.
    assert_eq!(
        step(&run, "a")["attempts"].as_array().map(Vec::len),
        Some(1)
    );
    let recovered = lab
        .server
        .audit(&format!("run={id}&action=run.recovered"))
        .await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    // Replay after the restart records nothing again for the step that had ended.
    let done = lab
        .server
        .audit(&format!("run={id}&action=workflow.step.succeeded"))
        .await;
    let a = done
        .iter()
        .filter(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("step a "))
        })
        .count();
    assert_eq!(a, 1, "{done:?}");
    let resumed = lab
        .server
        .audit(&format!("run={id}&action=workflow.resumed"))
        .await;
    assert_eq!(resumed.len(), 1, "{resumed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_running_at_a_restart_ends_interrupted_and_the_workflow_follows_its_catch() {
    let mut lab = Served::start().await;
    let workflow = json!({ "start_at": "long", "states": {
        "long": lab.task("sleep", json!({"n": 60000}), json!({"next": "never",
            "catch": [{ "errors": ["interrupted"], "next": "report" }] })),
        "never": lab.task("emit", json!({"content": "no"}), json!({"end": true})),
        "report": lab.task("emit", json!({"content.$": "$.steps.long.error"}), json!({"end": true}))
    } });
    let pid = lab.process(workflow).await;
    let id = lab.server.start_run(&pid, &lab.admin, json!({})).await;
    let before = lab
        .until(&id, |r| {
            step(r, "long")["attempts"][0]["run_id"].is_string()
        })
        .await;
    let child = step(&before, "long")["attempts"][0]["run_id"]
        .as_str()
        .expect("child")
        .to_string();
    lab.until(&child, |r| r["state"] == "running").await;
    lab.restart().await;
    let run = lab.server.wait_for_state_or_end(&id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["result"], "interrupted");
    assert_eq!(step(&run, "long")["status"], "caught");
    assert!(step(&run, "never").is_null());
    let r = lab
        .server
        .get(&format!("/v1/runs/{child}"), &lab.admin)
        .await;
    assert_eq!(r.body["state"], "interrupted", "{}", r.text);
    // The task was not started a second time.
    assert_eq!(
        step(&run, "long")["attempts"].as_array().map(Vec::len),
        Some(1)
    );
}
