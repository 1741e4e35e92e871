//! The README's workflow examples (`guest-examples/workflows/`), created with the CLI from their
//! files (module names resolved to digests) and run against two real sshd targets with real
//! sudo: onboarding creates the account everywhere and deploys the key; the incident workflow
//! locks the account and collects the logs in parallel, waits for a second person, then removes
//! the account.

use std::process::Command;

use super::*;
use warden_tests::repo_root;

const BIN: &str = env!("CARGO_BIN_EXE_warden-e2e");

struct Site {
    lab: Lab,
    _sshds: Vec<Sshd>,
    _admin: TestUser,
}

/// `web-1`, `web-2` and the key credential `name` of a NOPASSWD-sudo admin; every account
/// example published.
async fn site(credential: &str) -> Site {
    let admin = TestUser::create("wxa")
        .expect("admin")
        .with_sudo_nopasswd()
        .expect("sudo");
    let sshds = Sshd::fleet(2).expect("sshd");
    let server = Server::start().await;
    let key = new_key();
    server.trust("acme", &key).await;
    for example in [
        "provision-user",
        "deploy-ssh-key",
        "lockdown-user",
        "collect-logs",
        "deprovision-user",
    ] {
        server.publish(example, &key).await;
    }
    let probe = server.publish("probe", &key).await;
    let body = json!({ "name": credential, "username": admin.name, "kind": "ssh-key",
        "secret": admin.private_key_openssh });
    let r = server.post("/v1/credentials", &server.admin, body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    for (i, sshd) in sshds.iter().enumerate() {
        let body = json!({ "name": format!("web-{}", i + 1), "address": sshd.addr(), "host_key": sshd.host_key_line });
        let r = server.post("/v1/targets", &server.admin, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    Site {
        lab: Lab { server, probe },
        _sshds: sshds,
        _admin: admin,
    }
}

/// `warden process create NAME --workflow FILE` against the server; the process id.
async fn create_with_cli(server: &Server, name: &str, file: &str) -> String {
    let out = Command::new(BIN)
        .args(["process", "create", name, "--workflow"])
        .arg(repo_root().join("guest-examples/workflows").join(file))
        .env("WARDEN_SERVER", &server.base)
        .env("WARDEN_TOKEN", &server.admin)
        .output()
        .expect("warden process create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = server.get("/v1/processes", &server.admin).await;
    let found = r
        .body
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name);
    found
        .and_then(|p| p["id"].as_str())
        .expect("created")
        .to_string()
}

fn account_exists(user: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .any(|l| l.starts_with(&format!("{user}:")))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_onboarding_workflow_creates_the_account_everywhere_and_deploys_the_key() {
    let site = site("onboarding-admin").await;
    let server = &site.lab.server;
    let pid = create_with_cli(server, "onboarding", "onboarding.json").await;
    let user = format!("wo{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBQ2B2p3u8QbOqgvPcbmB3xBn0aGz2R2w1m8C4a2u3Yk new@test";
    let inputs = json!({ "user": user, "public_key": key,
        "targets": ["web-1", "web-2"], "credential": "onboarding-admin" });
    let run = site.lab.run(&pid, inputs).await;
    let cleanup = || {
        let _ = Command::new("userdel").args(["-r", &user]).output();
    };
    if run["state"] != "succeeded" {
        cleanup();
        panic!("{run}");
    }
    assert!(account_exists(&user), "{run}");
    let keys =
        std::fs::read_to_string(format!("/home/{user}/.ssh/authorized_keys")).unwrap_or_default();
    cleanup();
    assert!(keys.contains(key), "{keys} {run}");
    // The first target created it, the second found it there: each reports what it did.
    let report: Value =
        serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(report.as_array().map(Vec::len), Some(2), "{report}");
    assert!(
        report
            .as_array()
            .into_iter()
            .flatten()
            .all(|t| t["failed"] == 0),
        "{report}"
    );
    for path in ["provision/0/create", "provision/1/create"] {
        assert_eq!(step(&run, path)["status"], "succeeded", "{path}");
    }
    // `warden run get` shows the step tree.
    let out = Command::new(BIN)
        .args(["run", "get", run["id"].as_str().expect("id")])
        .env("WARDEN_SERVER", &server.base)
        .env("WARDEN_TOKEN", &server.admin)
        .output()
        .expect("warden run get");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("succeeded (attempt 1)"), "{tree}");
    assert!(
        tree.contains("provision/1/create [task] succeeded; attempts:"),
        "{tree}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_incident_workflow_locks_collects_waits_for_approval_then_removes_the_account() {
    let site = site("incident-admin").await;
    let server = &site.lab.server;
    let bob = server.user("bob", &["privileged-administrator"]).await;
    let pid = create_with_cli(server, "incident", "incident.json").await;
    let victim = TestUser::create("wxv").expect("victim");
    let log = format!("/tmp/warden-wf-auth-{}.log", uuid::Uuid::new_v4());
    std::fs::write(
        &log,
        format!("sshd[1]: Accepted password for {}\n", victim.name),
    )
    .expect("log");
    let inputs = json!({ "user": victim.name, "targets": ["web-1", "web-2"],
        "credential": "incident-admin", "auth_log": log });
    let id = server.start_run(&pid, &server.admin, inputs).await;
    let mut waiting = Value::Null;
    for _ in 0..400 {
        waiting = server
            .get(&format!("/v1/runs/{id}"), &server.admin)
            .await
            .body;
        if step(&waiting, "decide")["status"] == "waiting" || waiting["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(step(&waiting, "decide")["status"], "waiting", "{waiting}");
    // Locked and logs collected before anyone approved the removal.
    assert_eq!(
        step(&waiting, "contain/0/lock")["status"],
        "succeeded",
        "{waiting}"
    );
    assert_eq!(
        step(&waiting, "contain/1/logs")["status"],
        "succeeded",
        "{waiting}"
    );
    assert!(
        account_exists(&victim.name),
        "nothing removed before the approval"
    );
    let request = server.get(&format!("/v1/runs/{id}/approval"), &bob).await;
    let binding = request.body["binding"]
        .as_str()
        .expect("binding")
        .to_string();
    let r = server
        .post(
            &format!("/v1/runs/{id}/approve"),
            &bob,
            json!({ "binding": binding }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let run = server.wait_for_state_or_end(&id).await;
    let _ = std::fs::remove_file(&log);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(step(&run, "remove")["status"], "succeeded");
    assert!(!account_exists(&victim.name), "the account is gone");
}
