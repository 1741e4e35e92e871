//! Tests against the real schema and policies in `policies/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;
use crate::audit::{AuditEntry, AuditRecord, Decision};

const POLICY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");

fn engine() -> PolicyEngine {
    PolicyEngine::load(Path::new(POLICY_DIR)).unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn user(name: &str, roles: &[&str], privileges: &[Privilege]) -> Principal {
    Principal {
        user: name.into(),
        roles: set(roles),
        privileges: privileges.iter().copied().collect(),
        ..Principal::default()
    }
}

/// A copy of the real policy directory that a test may edit.
fn policy_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(POLICY_DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn allowed(ids: &[&str]) -> PolicyDecision {
    PolicyDecision {
        allowed: true,
        policy_ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

fn denied(ids: &[&str]) -> PolicyDecision {
    PolicyDecision {
        allowed: false,
        policy_ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

/// The processes the tests act on, with owned share sets.
struct Proc {
    id: &'static str,
    owner: &'static str,
    owner_is_admin: bool,
    users: BTreeSet<String>,
    roles: BTreeSet<String>,
}

impl Proc {
    fn new(
        id: &'static str,
        owner: &'static str,
        admin: bool,
        users: &[&str],
        roles: &[&str],
    ) -> Self {
        Proc {
            id,
            owner,
            owner_is_admin: admin,
            users: set(users),
            roles: set(roles),
        }
    }

    fn r(&self) -> ProcessRef<'_> {
        ProcessRef {
            id: self.id,
            owner: self.owner,
            owner_is_admin: self.owner_is_admin,
            shared_users: &self.users,
            shared_roles: &self.roles,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Role matrix
// ---------------------------------------------------------------------------------------

/// Columns of the matrix: an action and the resource it is asked on.
#[derive(Clone, Copy, Debug)]
enum Op {
    CreateProcess,
    ManageProcess,
    Execute,
    ViewProcess,
    ViewAudit,
    ViewResourceAudit,
    ManageCredentials,
    Approve,
    ManageModules,
    ManageTargets,
    ManageUsers,
    ManageAdministrators,
}

const OPS: [Op; 12] = [
    Op::CreateProcess,
    Op::ManageProcess,
    Op::Execute,
    Op::ViewProcess,
    Op::ViewAudit,
    Op::ViewResourceAudit,
    Op::ManageCredentials,
    Op::Approve,
    Op::ManageModules,
    Op::ManageTargets,
    Op::ManageUsers,
    Op::ManageAdministrators,
];

fn ask(engine: &PolicyEngine, who: &Principal, op: Op, process: ProcessRef<'_>) -> PolicyDecision {
    let system = |action| engine.authorize(who, action, Resource::System);
    match op {
        Op::CreateProcess => system(Action::ManageProcess),
        Op::ManageProcess => {
            engine.authorize(who, Action::ManageProcess, Resource::Process(process))
        }
        Op::Execute => engine.authorize(who, Action::ExecuteProcess, Resource::Process(process)),
        Op::ViewProcess => engine.authorize(who, Action::ViewProcess, Resource::Process(process)),
        Op::ViewAudit => system(Action::ViewAudit),
        Op::ViewResourceAudit => system(Action::ViewResourceAudit),
        Op::ManageCredentials => system(Action::ManageCredentials),
        Op::Approve => {
            let run = Resource::Run {
                process,
                requester: "carol",
            };
            engine.authorize(who, Action::ApproveRun, run)
        }
        Op::ManageModules => system(Action::ManageModules),
        Op::ManageTargets => system(Action::ManageTargets),
        Op::ManageUsers => system(Action::ManageUsers),
        Op::ManageAdministrators => system(Action::ManageAdministrators),
    }
}

/// The process every matrix row is asked about: owned by another administrator (`root`),
/// shared with user `dave` and with the custom roles `operators`, `approvers` and
/// `process-managers` — but not with the super administrator.
fn matrix_process() -> Proc {
    Proc::new(
        "nightly-rotate",
        "root",
        true,
        &["dave"],
        &["operators", "approvers", "process-managers"],
    )
}

#[test]
fn role_matrix_matches_the_seed_model() {
    use Privilege::*;
    let engine = engine();
    let process = matrix_process();
    // Columns, in order: create process, manage process, execute, view process, view audit,
    // view resource audit, manage credentials, approve (a run carol started), manage modules,
    // manage targets, manage users, manage administrators.
    let rows: [(&str, Principal, &str); 8] = [
        (
            "privileged administrator",
            user("pat", &["privileged-administrator"], &[]),
            "YYYYYYYYYYYY",
        ),
        (
            "super administrator",
            user("sam", &["super-administrator"], &[]),
            "YNNNYYYNYYYN",
        ),
        (
            "password auditor",
            user("paula", &["password-auditor"], &[]),
            "NNNNNYNNNNNN",
        ),
        (
            "ManagePrivilegedProcess",
            user("mia", &["process-managers"], &[ManagePrivilegedProcess]),
            "YNYYNNNNYNNN",
        ),
        (
            "ExecutePrivilegedProcess",
            user("otto", &["operators"], &[ExecutePrivilegedProcess]),
            "NNYYNNNNNNNN",
        ),
        (
            "ApproveRun",
            user("abe", &["approvers"], &[ApproveRun]),
            "NNYNNNNYNNNN",
        ),
        (
            "plain user with a direct share",
            user("dave", &[], &[]),
            "NNYNNNNNNNNN",
        ),
        (
            "plain user without a share",
            user("eve", &[], &[]),
            "NNNNNNNNNNNN",
        ),
    ];
    let mut failures = Vec::new();
    for (role, who, expected) in &rows {
        for (op, want) in OPS.iter().zip(expected.chars()) {
            let decision = ask(&engine, who, *op, process.r());
            if decision.allowed != (want == 'Y') {
                failures.push(format!(
                    "{role} / {op:?}: expected {want}, got {decision:?}"
                ));
            }
            if !decision.allowed && decision.policy_ids != [DEFAULT_DENY] {
                failures.push(format!(
                    "{role} / {op:?}: denial names {:?}",
                    decision.policy_ids
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn allow_names_the_permitting_policy() {
    let engine = engine();
    let process = matrix_process();
    let cases = [
        (
            user("pat", &["privileged-administrator"], &[]),
            Op::ViewAudit,
            "privileged-administrator",
        ),
        (
            user("sam", &["super-administrator"], &[]),
            Op::ViewAudit,
            "super-administrator",
        ),
        (
            user("paula", &["password-auditor"], &[]),
            Op::ViewResourceAudit,
            "password-auditor",
        ),
        (
            user("dave", &[], &[]),
            Op::Execute,
            "execute-shared-process",
        ),
        (
            user(
                "otto",
                &["operators"],
                &[Privilege::ExecutePrivilegedProcess],
            ),
            Op::ViewProcess,
            "execute-privileged-process-view-shared",
        ),
        (
            user(
                "mia",
                &["process-managers"],
                &[Privilege::ManagePrivilegedProcess],
            ),
            Op::ViewProcess,
            "manage-privileged-process-view-shared",
        ),
        (
            user("abe", &["approvers"], &[Privilege::ApproveRun]),
            Op::Approve,
            "approve-run-shared",
        ),
    ];
    for (who, op, id) in cases {
        assert_eq!(
            ask(&engine, &who, op, process.r()),
            allowed(&[id]),
            "{} {op:?}",
            who.user
        );
    }
}

#[test]
fn process_manager_manages_and_views_own_process_but_needs_a_share_to_execute_it() {
    let engine = engine();
    let mia = user(
        "mia",
        &["process-managers"],
        &[Privilege::ManagePrivilegedProcess],
    );
    let own = Proc::new("mine", "mia", false, &[], &[]);
    let manage = engine.authorize(&mia, Action::ManageProcess, Resource::Process(own.r()));
    assert_eq!(manage, allowed(&["manage-privileged-process-own"]));
    assert!(
        engine
            .authorize(&mia, Action::ViewProcess, Resource::Process(own.r()))
            .allowed
    );
    let execute = engine.authorize(&mia, Action::ExecuteProcess, Resource::Process(own.r()));
    assert_eq!(execute, denied(&[DEFAULT_DENY]));
    let shared = Proc::new("mine", "mia", false, &["mia"], &[]);
    assert!(
        engine
            .authorize(&mia, Action::ExecuteProcess, Resource::Process(shared.r()))
            .allowed
    );
}

#[test]
fn process_manager_cannot_edit_a_process_merely_shared_with_them() {
    let engine = engine();
    let mia = user(
        "mia",
        &["process-managers"],
        &[Privilege::ManagePrivilegedProcess],
    );
    let theirs = Proc::new("theirs", "bob", false, &["mia"], &["process-managers"]);
    let manage = engine.authorize(&mia, Action::ManageProcess, Resource::Process(theirs.r()));
    assert_eq!(manage, denied(&[DEFAULT_DENY]));
}

#[test]
fn executor_does_not_view_unshared_process() {
    let engine = engine();
    let otto = user(
        "otto",
        &["operators"],
        &[Privilege::ExecutePrivilegedProcess],
    );
    let other = Proc::new("other", "root", true, &["dave"], &["auditors"]);
    for action in [Action::ViewProcess, Action::ExecuteProcess] {
        let decision = engine.authorize(&otto, action, Resource::Process(other.r()));
        assert_eq!(decision, denied(&[DEFAULT_DENY]), "{action:?}");
    }
}

#[test]
fn role_share_reaches_every_member_of_the_role() {
    let engine = engine();
    let process = Proc::new("p", "root", true, &[], &["night-shift"]);
    let member = user("nina", &["night-shift"], &[]);
    let outsider = user("olaf", &["day-shift"], &[]);
    let execute =
        |who| engine.authorize(who, Action::ExecuteProcess, Resource::Process(process.r()));
    assert_eq!(execute(&member), allowed(&["execute-shared-process"]));
    assert_eq!(execute(&outsider), denied(&[DEFAULT_DENY]));
}

// ---------------------------------------------------------------------------------------
// Super administrator
// ---------------------------------------------------------------------------------------

const PROCESS_ACTIONS: [Action; 3] = [
    Action::ManageProcess,
    Action::ExecuteProcess,
    Action::ViewProcess,
];

fn sa() -> Principal {
    user("sam", &["super-administrator", "sa-team"], &[])
}

/// An allow that the super administrator's process policy took part in (for execute, the
/// share policy for every user matches as well).
fn sa_allowed(decision: &PolicyDecision) -> bool {
    decision.allowed
        && decision
            .policy_ids
            .iter()
            .any(|id| id == "super-administrator-processes")
}

fn sa_decisions(engine: &PolicyEngine, process: &Proc) -> Vec<PolicyDecision> {
    let mut decisions: Vec<_> = PROCESS_ACTIONS
        .iter()
        .map(|a| engine.authorize(&sa(), *a, Resource::Process(process.r())))
        .collect();
    let run = Resource::Run {
        process: process.r(),
        requester: "carol",
    };
    decisions.push(engine.authorize(&sa(), Action::ApproveRun, run));
    decisions
}

#[test]
fn super_admin_is_denied_another_admins_unshared_process() {
    let engine = engine();
    let unshared = Proc::new("root-only", "root", true, &["dave"], &["operators"]);
    for decision in sa_decisions(&engine, &unshared) {
        assert_eq!(decision, denied(&[DEFAULT_DENY]));
    }
}

#[test]
fn super_admin_sees_another_admins_process_once_shared_with_the_user() {
    let engine = engine();
    let shared = Proc::new("root-shared", "root", true, &["sam"], &[]);
    for decision in sa_decisions(&engine, &shared) {
        assert!(sa_allowed(&decision), "{decision:?}");
    }
}

#[test]
fn super_admin_sees_another_admins_process_once_shared_with_its_role() {
    let engine = engine();
    for role in ["sa-team", "super-administrator"] {
        let shared = Proc::new("root-shared", "root", true, &[], &[role]);
        for decision in sa_decisions(&engine, &shared) {
            assert!(sa_allowed(&decision), "{role}: {decision:?}");
        }
    }
}

#[test]
fn super_admin_sees_own_and_non_admin_processes() {
    let engine = engine();
    let own = Proc::new("sams", "sam", true, &[], &[]);
    let non_admin = Proc::new("mias", "mia", false, &[], &[]);
    for process in [own, non_admin] {
        for decision in sa_decisions(&engine, &process) {
            assert!(sa_allowed(&decision), "{}: {decision:?}", process.id);
        }
    }
}

#[test]
fn super_admin_cannot_manage_administrators() {
    let engine = engine();
    let decision = engine.authorize(&sa(), Action::ManageAdministrators, Resource::System);
    assert_eq!(decision, denied(&[DEFAULT_DENY]));
    let pat = user("pat", &["privileged-administrator"], &[]);
    let decision = engine.authorize(&pat, Action::ManageAdministrators, Resource::System);
    assert_eq!(decision, allowed(&["privileged-administrator"]));
}

// ---------------------------------------------------------------------------------------
// Approvals and malformed requests
// ---------------------------------------------------------------------------------------

#[test]
fn nobody_approves_their_own_run() {
    let engine = engine();
    let process = Proc::new("p", "root", true, &["abe"], &[]);
    let run = |requester| Resource::Run {
        process: process.r(),
        requester,
    };
    for who in [
        user("abe", &[], &[Privilege::ApproveRun]),
        user("abe", &["privileged-administrator"], &[]),
    ] {
        assert_eq!(
            engine.authorize(&who, Action::ApproveRun, run("abe")),
            denied(&["no-self-approval"])
        );
        assert!(
            engine
                .authorize(&who, Action::ApproveRun, run("carol"))
                .allowed
        );
    }
}

#[test]
fn request_that_does_not_fit_the_schema_is_denied_as_invalid() {
    let engine = engine();
    let pat = user("pat", &["privileged-administrator"], &[]);
    let process = matrix_process();
    let cases = [
        (Action::ApproveRun, Resource::Process(process.r())),
        (Action::ManageCredentials, Resource::Process(process.r())),
        (Action::ExecuteProcess, Resource::System),
        (
            Action::ViewAudit,
            Resource::Run {
                process: process.r(),
                requester: "carol",
            },
        ),
    ];
    for (action, resource) in cases {
        assert_eq!(
            engine.authorize(&pat, action, resource),
            denied(&[INVALID_REQUEST]),
            "{action:?}"
        );
    }
}

#[test]
fn names_with_cedar_syntax_are_plain_ids() {
    let engine = engine();
    // A user named like an injected role membership must not become that role.
    let sneaky = user(
        r#"x" in Role::"privileged-administrator"#,
        &[r#"a"; permit(principal,action,resource);"#],
        &[],
    );
    assert_eq!(
        engine.authorize(&sneaky, Action::ViewAudit, Resource::System),
        denied(&[DEFAULT_DENY])
    );
    let process = Proc::new(
        r#"p"::"q"#,
        r#"o""#,
        true,
        &[r#"x" in Role::"privileged-administrator"#],
        &[],
    );
    let decision = engine.authorize(
        &sneaky,
        Action::ExecuteProcess,
        Resource::Process(process.r()),
    );
    assert_eq!(decision, allowed(&["execute-shared-process"]));
}

#[test]
fn action_table_is_indexed_by_discriminant() {
    for (index, action) in Action::ALL.iter().enumerate() {
        assert_eq!(*action as usize, index, "{action:?}");
    }
}

#[test]
fn administrator_means_privileged_or_super_administrator() {
    assert!(user("a", &["privileged-administrator"], &[]).is_administrator());
    assert!(user("a", &["ops", "super-administrator"], &[]).is_administrator());
    assert!(
        !user(
            "a",
            &["password-auditor", "ops"],
            &[Privilege::ManagePrivilegedProcess]
        )
        .is_administrator()
    );
}

// ---------------------------------------------------------------------------------------
// Host calls
// ---------------------------------------------------------------------------------------

fn host_call(module_requested: bool, grant_permits: bool) -> HostCallRequest<'static> {
    HostCallRequest {
        run_id: "run-1",
        module: "rotate@1.0.0",
        capability: "ssh",
        target: Some("web-1"),
        credential: Some("root-pw"),
        command: Some("passwd --stdin root"),
        path: None,
        module_requested,
        grant_permits,
        sudo: false,
    }
}

#[test]
fn host_call_allowed_only_when_requested_and_granted() {
    let engine = engine();
    let cases = [
        ((true, true), allowed(&["host-call-requested-and-granted"])),
        (
            (false, true),
            denied(&["host-call-requires-module-request"]),
        ),
        ((true, false), denied(&["host-call-requires-grant"])),
        (
            (false, false),
            denied(&[
                "host-call-requires-grant",
                "host-call-requires-module-request",
            ]),
        ),
    ];
    for ((requested, granted), expected) in cases {
        assert_eq!(
            engine.authorize_host_call(&host_call(requested, granted)),
            expected
        );
    }
}

#[test]
fn host_call_permit_alone_still_requires_both_flags() {
    // Defence in depth: were the two forbids deleted, the permit would still demand both.
    let dir = policy_copy();
    let text = std::fs::read_to_string(dir.path().join("host-calls.cedar")).unwrap();
    let (permit_only, _forbids) = text
        .split_once("@id(\"host-call-requires-module-request\")")
        .unwrap();
    write(dir.path(), "host-calls.cedar", permit_only);
    let engine = PolicyEngine::load(dir.path()).unwrap();
    assert!(engine.authorize_host_call(&host_call(true, true)).allowed);
    for (requested, granted) in [(false, true), (true, false), (false, false)] {
        let decision = engine.authorize_host_call(&host_call(requested, granted));
        assert_eq!(decision, denied(&[DEFAULT_DENY]), "{requested} {granted}");
    }
}

#[test]
fn host_call_on_credential_only_or_on_nothing_is_decided_the_same_way() {
    let engine = engine();
    let credential_only = HostCallRequest {
        target: None,
        capability: "credentials",
        ..host_call(true, true)
    };
    let neither = HostCallRequest {
        target: None,
        credential: None,
        capability: "log",
        ..host_call(true, true)
    };
    for call in [credential_only, neither] {
        assert!(engine.authorize_host_call(&call).allowed, "{call:?}");
        let refused = HostCallRequest {
            grant_permits: false,
            ..call
        };
        assert_eq!(
            engine.authorize_host_call(&refused),
            denied(&["host-call-requires-grant"])
        );
    }
}

#[test]
fn host_call_with_oversize_command_or_path_is_denied() {
    let engine = engine();
    let long = "x".repeat(MAX_HOST_CALL_TEXT_BYTES + 1);
    let command = HostCallRequest {
        command: Some(&long),
        ..host_call(true, true)
    };
    let path = HostCallRequest {
        path: Some(&long),
        ..host_call(true, true)
    };
    for call in [command, path] {
        assert_eq!(
            engine.authorize_host_call(&call),
            denied(&[OVERSIZE_HOST_CALL])
        );
    }
    let fits = "x".repeat(MAX_HOST_CALL_TEXT_BYTES);
    let call = HostCallRequest {
        command: Some(&fits),
        ..host_call(true, true)
    };
    assert!(engine.authorize_host_call(&call).allowed);
}

#[test]
fn admin_restriction_on_host_calls_denies_by_its_own_id() {
    let dir = policy_copy();
    write(
        dir.path(),
        "site.cedar",
        r#"@id("no-transfer-to-etc")
        forbid (principal, action == Action::"HostCall", resource is Target)
        when { context.capability == "transfer" && context.path like "/etc/*" };"#,
    );
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let transfer = |path| HostCallRequest {
        capability: "transfer",
        path: Some(path),
        ..host_call(true, true)
    };
    assert_eq!(
        engine.authorize_host_call(&transfer("/etc/shadow")),
        denied(&["no-transfer-to-etc"])
    );
    assert!(
        engine
            .authorize_host_call(&transfer("/var/log/syslog"))
            .allowed
    );
}

#[test]
fn a_policy_can_forbid_sudo_on_host_calls() {
    let dir = policy_copy();
    write(
        dir.path(),
        "site.cedar",
        r#"@id("no-sudo")
        forbid (principal, action == Action::"HostCall", resource)
        when { context.sudo };"#,
    );
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let call = |sudo| HostCallRequest {
        sudo,
        ..host_call(true, true)
    };
    assert_eq!(
        engine.authorize_host_call(&call(true)),
        denied(&["no-sudo"])
    );
    assert!(engine.authorize_host_call(&call(false)).allowed);
}

#[test]
fn policy_with_any_action_applies_to_host_calls_and_operations() {
    let dir = policy_copy();
    write(
        dir.path(),
        "freeze.cedar",
        r#"@id("freeze") forbid (principal, action, resource);"#,
    );
    let engine = PolicyEngine::load(dir.path()).unwrap();
    assert_eq!(
        engine.authorize_host_call(&host_call(true, true)),
        denied(&["freeze"])
    );
    let pat = user("pat", &["privileged-administrator"], &[]);
    let decision = engine.authorize(&pat, Action::ViewAudit, Resource::System);
    assert_eq!(decision, denied(&["freeze"]));
}

#[test]
fn policy_on_an_action_group_holding_host_call_applies_to_host_calls() {
    let dir = policy_copy();
    let schema = std::fs::read_to_string(dir.path().join(SCHEMA_FILE)).unwrap();
    let grouped = schema.replace(
        "action HostCall appliesTo",
        "action Remote;\naction HostCall in [Action::\"Remote\"] appliesTo",
    );
    assert_ne!(schema, grouped);
    write(dir.path(), SCHEMA_FILE, &grouped);
    write(
        dir.path(),
        "remote.cedar",
        r#"@id("no-remote") forbid (principal, action in Action::"Remote", resource);"#,
    );
    let engine = PolicyEngine::load(dir.path()).unwrap();
    assert_eq!(
        engine.authorize_host_call(&host_call(true, true)),
        denied(&["no-remote"])
    );
}

#[test]
fn policy_on_an_action_group_holding_an_operation_applies_to_it() {
    let dir = policy_copy();
    let schema = std::fs::read_to_string(dir.path().join(SCHEMA_FILE)).unwrap();
    let grouped = schema.replace(
        "action ViewAudit appliesTo",
        "action Auditing;\naction ViewAudit in [Action::\"Auditing\"] appliesTo",
    );
    assert_ne!(schema, grouped);
    write(dir.path(), SCHEMA_FILE, &grouped);
    write(
        dir.path(),
        "auditing.cedar",
        r#"@id("no-auditing") forbid (principal, action in Action::"Auditing", resource);"#,
    );
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let pat = user("pat", &["privileged-administrator"], &[]);
    let decision = engine.authorize(&pat, Action::ViewAudit, Resource::System);
    assert_eq!(decision, denied(&["no-auditing"]));
    assert!(
        engine
            .authorize(&pat, Action::ViewResourceAudit, Resource::System)
            .allowed
    );
}

// ---------------------------------------------------------------------------------------
// Loading and reloading
// ---------------------------------------------------------------------------------------

#[test]
fn real_policy_set_has_the_documented_ids() {
    let ids = engine().policy_ids();
    let expected = [
        "approve-run-shared",
        "execute-privileged-process-view-shared",
        "execute-shared-process",
        "host-call-requested-and-granted",
        "host-call-requires-grant",
        "host-call-requires-module-request",
        "manage-privileged-process",
        "manage-privileged-process-own",
        "manage-privileged-process-view-shared",
        "no-self-approval",
        "password-auditor",
        "password-auditor-processes",
        "privileged-administrator",
        "super-administrator",
        "super-administrator-processes",
        "super-administrator-resources",
        "use-granted-credential",
        "use-granted-target",
    ];
    assert_eq!(ids, expected);
}

#[test]
fn reload_with_broken_file_keeps_old_set_and_reports_the_file() {
    let dir = policy_copy();
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let pat = user("pat", &["privileged-administrator"], &[]);
    let broken = write(
        dir.path(),
        "zz-broken.cedar",
        "@id(\"oops\") permit (principal, action, resource",
    );
    match engine.reload() {
        Err(PolicyError::Parse { file, .. }) => assert_eq!(file, broken),
        other => panic!("expected a parse error, got {other:?}"),
    }
    let mistyped = r#"@id("typo") permit (principal, action == Action::"ViewAudit", resource)
        when { principal.department == "it" };"#;
    write(dir.path(), "zz-broken.cedar", mistyped);
    match engine.reload() {
        Err(PolicyError::Invalid { file, id, .. }) => {
            assert_eq!((file, id.as_str()), (broken.clone(), "typo"))
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert_eq!(
        engine.authorize(&pat, Action::ViewAudit, Resource::System),
        allowed(&["privileged-administrator"])
    );
    write(
        dir.path(),
        "zz-broken.cedar",
        r#"@id("audit-lockdown") forbid (principal, action == Action::"ViewAudit", resource);"#,
    );
    engine.reload().unwrap();
    assert_eq!(
        engine.authorize(&pat, Action::ViewAudit, Resource::System),
        denied(&["audit-lockdown"])
    );
}

#[test]
fn clones_share_the_reloaded_set() {
    let dir = policy_copy();
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let clone = engine.clone();
    write(
        dir.path(),
        "extra.cedar",
        r#"@id("extra") forbid (principal, action == Action::"ViewAudit", resource);"#,
    );
    engine.reload().unwrap();
    assert!(clone.policy_ids().contains(&"extra".to_string()));
}

fn load_error(edit: impl FnOnce(&Path)) -> PolicyError {
    let dir = policy_copy();
    edit(dir.path());
    PolicyEngine::load(dir.path()).unwrap_err()
}

#[test]
fn policy_without_id_is_refused_naming_its_position() {
    let error = load_error(|d| {
        write(
            d,
            "x.cedar",
            "@id(\"ok\") permit (principal, action == Action::\"ViewAudit\", resource);\n\
                             permit (principal, action == Action::\"ViewAudit\", resource);",
        );
    });
    assert!(
        matches!(&error, PolicyError::MissingId { file, index: 2 } if file.ends_with("x.cedar")),
        "{error}"
    );
}

#[test]
fn duplicate_id_across_files_is_refused() {
    let error = load_error(|d| {
        write(
            d,
            "x.cedar",
            "@id(\"password-auditor\") forbid (principal, action == Action::\"ViewAudit\", resource);",
        );
    });
    match error {
        PolicyError::DuplicateId { file, id, other } => {
            assert_eq!(id, "password-auditor");
            assert!(other.ends_with("password-auditor.cedar") && file.ends_with("x.cedar"));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn malformed_or_reserved_id_is_refused() {
    for id in [
        "Has Spaces",
        "",
        "-lead",
        "default-deny",
        "invalid-request",
        "oversize-host-call",
        &"a".repeat(65),
    ] {
        let text =
            format!("@id(\"{id}\") forbid (principal, action == Action::\"ViewAudit\", resource);");
        let error = load_error(|d| {
            write(d, "x.cedar", &text);
        });
        assert!(
            matches!(&error, PolicyError::BadId { id: got, .. } if got == id),
            "{id}: {error}"
        );
    }
}

#[test]
fn template_is_refused() {
    let error = load_error(|d| {
        write(
            d,
            "x.cedar",
            "@id(\"t\") permit (principal == ?principal, action == Action::\"ViewAudit\", resource);",
        );
    });
    assert!(
        matches!(error, PolicyError::Template { index: 1, .. }),
        "{error}"
    );
}

#[test]
fn missing_or_broken_schema_is_refused() {
    let error = load_error(|d| std::fs::remove_file(d.join(SCHEMA_FILE)).unwrap());
    assert!(matches!(error, PolicyError::Read { .. }), "{error}");
    let error = load_error(|d| {
        write(d, SCHEMA_FILE, "entity User in [Role];");
    });
    assert!(matches!(error, PolicyError::Schema { .. }), "{error}");
}

#[test]
fn schema_that_drops_an_action_the_engine_uses_is_refused() {
    let error = load_error(|d| {
        let schema = std::fs::read_to_string(d.join(SCHEMA_FILE)).unwrap();
        let without = schema.replace(
            "action ManageAdministrators appliesTo { principal: User, resource: System };",
            "",
        );
        assert_ne!(schema, without);
        write(d, SCHEMA_FILE, &without);
        // The shipped policies name the action too; drop them so only the engine's check fails.
        let pa = std::fs::read_to_string(d.join("privileged-administrator.cedar")).unwrap();
        write(
            d,
            "privileged-administrator.cedar",
            &pa.replace("Action::\"ManageAdministrators\",", ""),
        );
    });
    assert!(
        matches!(&error, PolicyError::Schema { message, .. } if message.contains("ManageAdministrators")),
        "{error}"
    );
}

#[test]
fn schema_whose_host_call_context_differs_from_the_engine_is_refused() {
    let error = load_error(|d| {
        let schema = std::fs::read_to_string(d.join(SCHEMA_FILE)).unwrap();
        let renamed = schema.replace("    path: String,", "    remote_path: String,");
        assert_ne!(schema, renamed);
        write(d, SCHEMA_FILE, &renamed);
    });
    assert!(
        matches!(&error, PolicyError::Schema { message, .. } if message.contains("HostCall")),
        "{error}"
    );
}

#[test]
fn directory_without_policies_or_unreadable_is_refused() {
    let error = load_error(|d| {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cedar") {
                std::fs::remove_file(path).unwrap();
            }
        }
    });
    assert!(matches!(error, PolicyError::NoPolicies { .. }), "{error}");
    let missing = PolicyEngine::load(Path::new("/nonexistent/warden-policies")).unwrap_err();
    assert!(
        matches!(
            missing,
            PolicyError::Read { .. } | PolicyError::ReadDir { .. }
        ),
        "{missing}"
    );
}

#[test]
fn oversize_file_and_too_many_files_are_refused() {
    let error = load_error(|d| {
        let padding = "// x\n".repeat((MAX_POLICY_FILE_BYTES as usize) / 5 + 1);
        write(d, "big.cedar", &padding);
    });
    assert!(
        matches!(&error, PolicyError::FileTooLarge { file } if file.ends_with("big.cedar")),
        "{error}"
    );
    let error = load_error(|d| {
        for n in 0..MAX_POLICY_FILES {
            write(d, &format!("extra-{n}.cedar"), "");
        }
    });
    assert!(matches!(error, PolicyError::TooManyFiles { .. }), "{error}");
}

#[test]
fn forbid_that_errors_denies_instead_of_vanishing() {
    let dir = policy_copy();
    write(
        dir.path(),
        "overflow.cedar",
        r#"@id("overflowing-forbid") forbid (principal, action == Action::"ViewAudit", resource)
        when { 9223372036854775807 + 1 > 0 };
        @id("overflowing-permit") permit (principal, action == Action::"ViewResourceAudit", resource)
        when { 9223372036854775807 + 1 > 0 };"#,
    );
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let pat = user("pat", &["privileged-administrator"], &[]);
    assert_eq!(
        engine.authorize(&pat, Action::ViewAudit, Resource::System),
        denied(&["overflowing-forbid"])
    );
    // A permit that errors just does not permit; the administrator's own permit still does.
    let decision = engine.authorize(&pat, Action::ViewResourceAudit, Resource::System);
    assert_eq!(decision, allowed(&["privileged-administrator"]));
    let eve = user("eve", &[], &[]);
    assert_eq!(
        engine.authorize(&eve, Action::ViewResourceAudit, Resource::System),
        denied(&[DEFAULT_DENY])
    );
}

// ---------------------------------------------------------------------------------------
// Resource audit view
// ---------------------------------------------------------------------------------------

fn record(target: Option<&str>, credential: Option<&str>) -> AuditRecord {
    AuditRecord {
        seq: 42,
        time_ms: 1_700_000_000_000,
        entry: AuditEntry {
            run_id: Some("run-9".into()),
            actor: "pat".into(),
            action: "ssh.exec".into(),
            target: target.map(Into::into),
            credential: credential.map(Into::into),
            decision: Decision::Denied {
                reason: "no grant".into(),
                policy: Some("host-call-requires-grant".into()),
            },
            outcome: "denied".into(),
            duration_us: 17,
            detail: Some("cat /etc/shadow".into()),
        },
        prev_hash: "00".repeat(32),
        hash: "11".repeat(32),
    }
}

#[test]
fn resource_audit_keeps_records_naming_a_target_or_credential() {
    for (target, credential) in [
        (Some("web-1"), None),
        (None, Some("root-pw")),
        (Some("web-1"), Some("root-pw")),
    ] {
        let view = resource_audit_view(&record(target, credential)).unwrap();
        assert_eq!(view.target.as_deref(), target);
        assert_eq!(view.credential.as_deref(), credential);
        assert_eq!(
            (view.seq, view.time_ms, view.actor.as_str()),
            (42, 1_700_000_000_000, "pat")
        );
    }
    assert_eq!(resource_audit_view(&record(None, None)), None);
}

#[test]
fn resource_audit_projection_has_exactly_the_documented_fields() {
    let view = resource_audit_view(&record(Some("web-1"), Some("root-pw"))).unwrap();
    let json = serde_json::to_value(&view).unwrap();
    let keys: BTreeSet<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "action",
        "actor",
        "credential",
        "decision",
        "outcome",
        "policy",
        "seq",
        "target",
        "time_ms",
    ];
    assert_eq!(keys, expected.into_iter().collect());
    let text = json.to_string();
    for hidden in [
        "run-9",
        "/etc/shadow",
        "no grant",
        "duration_us",
        "prev_hash",
        &"11".repeat(32),
    ] {
        assert!(!text.contains(hidden), "{hidden} leaked: {text}");
    }
    assert_eq!(json["decision"], "denied");
    assert_eq!(json["policy"], "host-call-requires-grant");
    assert_eq!(json["outcome"], "denied");
}

#[test]
fn resource_audit_never_carries_free_text_from_outcomes_or_policies() {
    let mut failed = record(Some("web-1"), None);
    failed.entry.decision = Decision::Allowed;
    failed.entry.outcome = "transfer failed: /srv/app/secret.conf: Permission denied".into();
    let json = serde_json::to_value(resource_audit_view(&failed).unwrap()).unwrap();
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["decision"], "allowed");
    assert!(!json.to_string().contains("/srv"), "{json}");
    let mut odd_policy = record(Some("web-1"), None);
    odd_policy.entry.decision = Decision::Denied {
        reason: "x".into(),
        policy: Some("registry: /etc/passwd".into()),
    };
    let json = serde_json::to_value(resource_audit_view(&odd_policy).unwrap()).unwrap();
    assert_eq!(json["policy"], serde_json::Value::Null, "{json}");
}

// ---------------------------------------------------------------------------------------
// Publisher trust, grant names, audit visibility (issue 10, item 6)
// ---------------------------------------------------------------------------------------

fn custom_manager(credentials: &[&str], targets: &[&str]) -> Principal {
    Principal {
        credentials: set(credentials),
        targets: set(targets),
        ..user("mona", &["builders"], &[Privilege::ManagePrivilegedProcess])
    }
}

#[test]
fn only_privileged_administrators_trust_publishers() {
    let engine = engine();
    let ask = |who: &Principal| {
        engine
            .authorize(who, Action::TrustPublishers, Resource::System)
            .allowed
    };
    assert!(ask(&user("ada", &["privileged-administrator"], &[])));
    assert!(!ask(&sa()));
    assert!(!ask(&custom_manager(&["root-pw"], &["web-1"])));
    assert!(!ask(&user("pat", &["password-auditor"], &[])));
    // Uploading stays with ManageModules.
    let upload = engine.authorize(
        &custom_manager(&[], &[]),
        Action::ManageModules,
        Resource::System,
    );
    assert!(upload.allowed);
}

#[test]
fn a_process_manager_names_only_the_credentials_and_targets_its_role_grants() {
    let engine = engine();
    let mona = custom_manager(&["db-pw"], &["db-1"]);
    let allowed =
        |who: &Principal, action, resource| engine.authorize(who, action, resource).allowed;
    assert!(allowed(
        &mona,
        Action::UseCredential,
        Resource::Credential("db-pw")
    ));
    assert!(allowed(&mona, Action::UseTarget, Resource::Target("db-1")));
    assert!(!allowed(
        &mona,
        Action::UseCredential,
        Resource::Credential("root-pw")
    ));
    assert!(!allowed(
        &mona,
        Action::UseTarget,
        Resource::Target("web-1")
    ));
    // A name granted as a target is not thereby a credential, nor the other way round.
    assert!(!allowed(
        &mona,
        Action::UseCredential,
        Resource::Credential("db-1")
    ));
    assert!(!allowed(
        &mona,
        Action::UseTarget,
        Resource::Target("db-pw")
    ));
    // Without the privilege, a granted name is nothing.
    let plain = Principal {
        credentials: set(&["db-pw"]),
        ..user("pete", &[], &[])
    };
    assert!(!allowed(
        &plain,
        Action::UseCredential,
        Resource::Credential("db-pw")
    ));
    for admin in [user("ada", &["privileged-administrator"], &[]), sa()] {
        assert!(allowed(
            &admin,
            Action::UseCredential,
            Resource::Credential("root-pw")
        ));
        assert!(allowed(
            &admin,
            Action::UseTarget,
            Resource::Target("web-1")
        ));
    }
}

#[test]
fn audit_of_another_admins_unshared_process_is_hidden_from_the_super_admin() {
    let engine = engine();
    let none = BTreeSet::new();
    let other_admins = ProcessRef {
        id: "p1",
        owner: "ada",
        owner_is_admin: true,
        shared_users: &none,
        shared_roles: &none,
    };
    let ask = |who: &Principal, p: ProcessRef<'_>| {
        engine
            .authorize(who, Action::ViewProcessAudit, Resource::Process(p))
            .allowed
    };
    assert!(!ask(&sa(), other_admins));
    assert!(ask(
        &user("ada", &["privileged-administrator"], &[]),
        other_admins
    ));
    assert!(ask(&user("pat", &["password-auditor"], &[]), other_admins));
    let shared = set(&[sa().user.as_str()]);
    let shared_with_sa = ProcessRef {
        shared_users: &shared,
        ..other_admins
    };
    assert!(ask(&sa(), shared_with_sa));
    let users_process = ProcessRef {
        owner_is_admin: false,
        ..other_admins
    };
    assert!(ask(&sa(), users_process));
    assert!(!ask(&custom_manager(&[], &[]), users_process));
}

// ---------------------------------------------------------------------------------------
// Speed (run with: cargo test --release -- --ignored --nocapture measure)
// ---------------------------------------------------------------------------------------

#[test]
#[ignore = "timing; run in release with --nocapture"]
fn measure_authorize_latency() {
    let engine = engine();
    let rounds = 20_000u32;
    let call = host_call(true, true);
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        assert!(
            engine
                .authorize_host_call(std::hint::black_box(&call))
                .allowed
        );
    }
    let host_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    let process = matrix_process();
    let dave = user(
        "dave",
        &["ops", "night-shift"],
        &[Privilege::ExecutePrivilegedProcess],
    );
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let resource = Resource::Process(process.r());
        assert!(
            engine
                .authorize(
                    std::hint::black_box(&dave),
                    Action::ExecuteProcess,
                    resource
                )
                .allowed
        );
    }
    let user_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!(
        "authorize_host_call: {host_us:.2} µs/call; authorize (process): {user_us:.2} µs/call"
    );
}
