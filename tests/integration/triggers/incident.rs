//! The README's incident example end to end: a detector's signed event names a suspicious
//! user and the hosts it was seen on; the trigger starts `incident-response`, which locks the
//! user on exactly those targets (real sshd, real sudo), kills the user's session and
//! collects the auth log lines about the user. An event naming a target outside the
//! trigger's allow-list, or trying to pick the credential, changes nothing.

use reqwest::StatusCode;
use serde_json::json;
use warden_host::vault::{CredentialKind, NewCredential, Secret};
use warden_tests::sshd::{Sshd, TestUser};

use super::*;

fn locked(user: &str) -> bool {
    let shadow = std::fs::read_to_string("/etc/shadow").expect("shadow");
    shadow
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .and_then(|l| l.split(':').nth(1))
        .is_some_and(|hash| hash.starts_with('!'))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_incident_event_locks_the_user_on_the_targets_it_names() {
    let admin = TestUser::create("wta")
        .expect("admin")
        .with_sudo()
        .expect("sudo");
    let victim = TestUser::create("wtv").expect("victim");
    let sshds = Sshd::fleet(2).expect("sshd fleet");
    let server = Server::start().await;
    let st = state(&server);
    for (i, sshd) in sshds.iter().enumerate() {
        let target = crate::support::target_of(&format!("t{i}"), sshd);
        st.targets.add(target).expect("add target");
    }
    let new = NewCredential {
        name: "adm",
        username: &admin.name,
        kind: CredentialKind::Password,
        admin: true,
    };
    let secret = Secret::from_bytes(admin.password.as_bytes().to_vec());
    st.vault
        .add_credential(new, secret, "test", "incident admin")
        .expect("credential");
    let log = format!("/tmp/warden-auth-{}.log", uuid::Uuid::new_v4());
    let lines = format!(
        "sshd[7]: Accepted password for {0} from 203.0.113.9\n\
         sshd[8]: session opened for user someone-else\n\
         sshd[9]: Failed password for {0} from 203.0.113.9\n",
        victim.name
    );
    std::fs::write(&log, lines).expect("auth log");
    let key = new_key();
    server.trust("acme", &key).await;
    let digest = server.publish("incident-response", &key).await;
    let commands = [
        "sudo usermod -L *",
        "sudo usermod -e 1 *",
        "sudo pkill -KILL -u *",
        "sudo tail -n 2000 *",
    ];
    let body = json!({
        "name": "contain-account", "module_digest": digest,
        "grant": { "credentials": ["adm"], "targets": ["t0", "t1"], "commands": commands },
        "default_inputs": { "credential": "adm", "auth_log": log },
    });
    let r = server.post("/v1/processes", &server.admin, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let pid = r.body["id"].as_str().expect("id").to_string();
    let hook = json!({
        "map": { "targets": "/hosts", "user": "/subject/user" },
        "allow": { "targets": ["t0"] },
        "rate": { "runs": 3, "window_secs": 60 },
        "dedupe": { "pointer": "/subject/user", "window_secs": 600 },
    });
    let (tid, signer) = trigger(&server, &pid, hook).await;
    // A session of the victim's that the response must end.
    let mut session = std::process::Command::new("su")
        .args(["-s", "/bin/sh", "-c", "sleep 60", &victim.name])
        .spawn()
        .expect("victim session");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Naming a host outside the allow-list: refused, nothing touched.
    let wide = json!({ "subject": { "user": victim.name }, "hosts": ["t0", "t1"] });
    let r = send(&server, &tid, &signer, &wide).await;
    r.expect_error(StatusCode::BAD_REQUEST, "not_allowed");
    assert!(!locked(&victim.name), "refused event locked the user");
    assert!(runs_of(&server, &pid).await.is_empty());
    // The detector's event: the credential it names is not a mapped input and is ignored.
    let event = json!({
        "rule": "impossible-travel", "subject": { "user": victim.name },
        "hosts": ["t0"], "credential": "someone-elses",
    });
    let r = send(&server, &tid, &signer, &event).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let run_id = r.body["run"]["id"].as_str().expect("run").to_string();
    let run = server.wait_for_state_or_end(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["actor"], format!("trigger:{tid}"));
    assert_eq!(run["inputs"]["credential"], "adm");
    let result: Value =
        serde_json::from_str(run["result"].as_str().expect("result")).expect("json");
    assert_eq!(result["contained"], 1, "{result}");
    let on = &result["targets"][0];
    assert_eq!(on["target"], "t0");
    assert_eq!(on["errors"], json!([]), "{result}");
    let about = on["auth_lines"].as_array().expect("lines");
    assert_eq!(about.len(), 2, "{result}");
    assert!(locked(&victim.name), "the password is locked");
    assert!(
        !session.wait().expect("session").success(),
        "the session was killed"
    );
    // Only t0 was touched.
    let calls = server.audit(&format!("run={run_id}&limit=1000")).await;
    assert!(calls.iter().any(|c| c["target"] == "t0"));
    assert!(!calls.iter().any(|c| c["target"] == "t1"), "t1 touched");
    // The detector repeating itself about the same user starts nothing more.
    let r = send(&server, &tid, &signer, &event).await;
    assert_eq!(r.body["deduplicated"], true, "{}", r.text);
    assert_eq!(runs_of(&server, &pid).await.len(), 1);
    std::fs::remove_file(&log).ok();
}
