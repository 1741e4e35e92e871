//! Processes: named, shareable definitions of what a run executes and what it may touch.
//!
//! Threats: two processes sharing a name (so "run X" is ambiguous, or a new process shadows a
//! trusted one), a definition edited without a trace (every change bumps
//! [`Process::revision`], which approvals bind to), an update that takes over someone else's
//! process (id, owner and creation time are immutable), and definitions a request inflates
//! without bound (every field is capped and validated before each write).
//!
//! Storage: table [`PROCESSES`] maps id to the process's JSON, table [`PROCESS_NAMES`] maps
//! name to id. Both are written in one conditional batch, so the name index never points at a
//! missing process and two creates of one name cannot both succeed (not even from two servers).
//! Every write is durable before it returns (they are rare admin actions).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{RunsError, check_size, is_sha256_hex, is_valid_name, is_valid_principal, now_ms};
use crate::capabilities::argv::Pattern;
use crate::capabilities::grant::{Grant, normalize_path};
use crate::store::{Batch, Database, Expect, StoreError, Table, TableDef};
use crate::workflow::{StepLimits, Workflow};

/// Processes by id.
pub const PROCESSES: TableDef = TableDef {
    name: "processes",
    columns: &[],
    columns_of: None,
};
/// Each process name to its id.
pub const PROCESS_NAMES: TableDef = TableDef {
    name: "process_names",
    columns: &[],
    columns_of: None,
};

/// Longest description. It is shown in listings and approval requests; the cap stops one
/// request from bloating every listing.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Longest credential or target name in a grant (the vault's own name limit).
pub const MAX_GRANT_NAME_LEN: usize = 128;
/// Most credentials, targets, command patterns or path prefixes in one grant. Each host call
/// scans these lists, so the cap bounds per-call work as well as the record.
pub const MAX_GRANT_ENTRIES: usize = 256;
/// Longest command pattern or path prefix. Bounds glob matching work per host call.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// Longest module version in `name@version`.
pub const MAX_VERSION_LEN: usize = 64;
/// Most default inputs (the manifest's own input limit).
pub const MAX_DEFAULT_INPUTS: usize = 128;
/// Largest encoded default inputs. They are copied into every run record.
pub const MAX_DEFAULT_INPUTS_BYTES: usize = 256 << 10;
/// Most users, and separately most roles, a process is shared with. Every authorization of
/// the process builds a policy entity holding these sets.
pub const MAX_SHARES: usize = 1024;
/// Most approvals a process may require. More than this is a misconfiguration that would
/// leave every run waiting forever.
pub const MAX_REQUIRED_APPROVALS: u32 = 16;
/// Largest encoded process; the caps above keep a valid one well below it.
pub const MAX_PROCESS_BYTES: usize = 1 << 20;

/// A privileged process: a named, shareable definition users execute.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Process {
    /// UUID v4, assigned by [`ProcessStore::create`].
    pub id: String,
    /// `[A-Za-z0-9._-]{1,64}`, unique.
    pub name: String,
    pub description: String,
    /// The user who created it.
    pub owner: String,
    /// Lowercase hex SHA-256 of the task module it runs.
    pub module_digest: String,
    /// `name@version` of that module, for display.
    pub module: String,
    /// Targets, credentials, command and path patterns its runs may use.
    pub grant: Grant,
    pub default_inputs: BTreeMap<String, serde_json::Value>,
    pub shared_users: BTreeSet<String>,
    pub shared_roles: BTreeSet<String>,
    /// Approvals a run needs before it is queued; 0 means none.
    pub required_approvals: u32,
    /// Whether a run that a remote bridge lost (its effects on targets unknown) is started
    /// again automatically, as a new run with the same inputs: only for tasks that are safe
    /// to repeat. False unless the process says so.
    #[serde(default)]
    pub retry_on_lost: bool,
    /// Limits below the server's for every run of it (a workflow step's own limits).
    #[serde(default, skip_serializing_if = "StepLimits::is_empty")]
    pub limits: StepLimits,
    /// The workflow its runs follow; none for a single-task process. For a workflow
    /// `module_digest` is the definition's digest and `module` is `workflow@<digest prefix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub workflow: Option<Workflow>,
    /// 1 at creation, bumped by every update; approvals bind to it.
    pub revision: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// What a caller supplies to create a process: everything but the id, revision and times.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NewProcess {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub owner: String,
    pub module_digest: String,
    pub module: String,
    #[serde(default)]
    pub grant: Grant,
    #[serde(default)]
    pub default_inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub shared_users: BTreeSet<String>,
    #[serde(default)]
    pub shared_roles: BTreeSet<String>,
    #[serde(default)]
    pub required_approvals: u32,
    #[serde(default)]
    pub retry_on_lost: bool,
    #[serde(default)]
    pub limits: StepLimits,
    #[serde(default)]
    pub workflow: Option<Workflow>,
}

fn invalid(field: &'static str, why: impl Into<String>) -> RunsError {
    RunsError::Invalid {
        field,
        why: why.into(),
    }
}

impl Process {
    /// Checks every field against its rule and cap; done before every write.
    pub fn validate(&self) -> Result<(), RunsError> {
        if !is_valid_name(&self.name) {
            return Err(RunsError::InvalidName(self.name.clone()));
        }
        check_description(&self.description)?;
        if !is_valid_principal(&self.owner) {
            return Err(invalid("owner", "not a valid user name"));
        }
        if !is_sha256_hex(&self.module_digest) {
            return Err(invalid(
                "module_digest",
                "expected 64 lowercase hex characters",
            ));
        }
        check_module_ref(&self.module)?;
        check_grant(&self.grant)?;
        check_default_inputs(&self.default_inputs)?;
        check_shares("shared_users", &self.shared_users)?;
        check_shares("shared_roles", &self.shared_roles)?;
        if self.required_approvals > MAX_REQUIRED_APPROVALS {
            return Err(invalid(
                "required_approvals",
                format!("at most {MAX_REQUIRED_APPROVALS}"),
            ));
        }
        if let Some(workflow) = &self.workflow {
            check_workflow_process(self, workflow)?;
        }
        Ok(())
    }

    fn encode(&self) -> Result<Vec<u8>, RunsError> {
        let bytes = serde_json::to_vec(self)?;
        check_size(&bytes, MAX_PROCESS_BYTES)?;
        Ok(bytes)
    }
}

/// What a workflow process must look like (the definition's own rules are checked against
/// the registry by `crate::workflow::validate` before it is stored).
fn check_workflow_process(process: &Process, workflow: &Workflow) -> Result<(), RunsError> {
    if process.module_digest != workflow.digest() {
        return Err(invalid(
            "module_digest",
            "a workflow process's module_digest is its definition's digest",
        ));
    }
    if process.required_approvals > 0 {
        return Err(invalid(
            "required_approvals",
            "a workflow asks for approvals with `approval` states, not required_approvals",
        ));
    }
    if process.grant != Grant::default() {
        return Err(invalid(
            "grant",
            "a workflow process has no grant of its own: each task state has its own",
        ));
    }
    let bytes = serde_json::to_vec(workflow)?;
    if bytes.len() > crate::workflow::definition::MAX_DEFINITION_BYTES {
        return Err(invalid("workflow", "definition is over 256 KiB"));
    }
    Ok(())
}

fn check_description(text: &str) -> Result<(), RunsError> {
    if text.len() > MAX_DESCRIPTION_BYTES {
        return Err(invalid(
            "description",
            format!("over {MAX_DESCRIPTION_BYTES} bytes"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(invalid("description", "contains control characters"));
    }
    Ok(())
}

/// `name@version`: a module name and a version of `[A-Za-z0-9.+_-]{1,64}`.
fn check_module_ref(module: &str) -> Result<(), RunsError> {
    let valid_version = |v: &str| {
        !v.is_empty()
            && v.len() <= MAX_VERSION_LEN
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'_' | b'-'))
    };
    match module.split_once('@') {
        Some((name, version)) if is_valid_name(name) && valid_version(version) => Ok(()),
        _ => Err(invalid("module", "expected name@version")),
    }
}

pub(crate) fn check_grant(grant: &Grant) -> Result<(), RunsError> {
    let valid_name = |n: &String| {
        n.len() <= MAX_GRANT_NAME_LEN
            && !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    check_list("grant.credentials", grant.credentials.iter(), valid_name)?;
    check_list("grant.targets", grant.targets.iter(), valid_name)?;
    check_list("grant.commands", grant.commands.iter(), |c| {
        c.len() <= MAX_PATTERN_BYTES
    })?;
    // Each pattern must be argv words (`capabilities::argv`); the error says what is wrong.
    for pattern in &grant.commands {
        if let Err(e) = Pattern::parse(pattern) {
            let why = e.to_string().replacen("the command", "the pattern", 1);
            return Err(invalid("grant.commands", format!("{pattern:?}: {why}")));
        }
    }
    check_list("grant.paths", grant.paths.iter(), |p| {
        p.len() <= MAX_PATTERN_BYTES && normalize_path(p).is_some()
    })?;
    // Refused here (a 400), not only when a rotation runs: see `rotation::policy`.
    grant
        .rotation_policy
        .check()
        .map_err(|e| invalid("grant.rotation_policy", e.to_string()))
}

/// At most [`MAX_GRANT_ENTRIES`] items, each passing `valid`.
fn check_list<'a>(
    field: &'static str,
    items: impl ExactSizeIterator<Item = &'a String>,
    valid: impl Fn(&String) -> bool,
) -> Result<(), RunsError> {
    if items.len() > MAX_GRANT_ENTRIES {
        return Err(invalid(
            field,
            format!("more than {MAX_GRANT_ENTRIES} entries"),
        ));
    }
    for item in items {
        if !valid(item) {
            return Err(invalid(field, format!("invalid entry {item:?}")));
        }
    }
    Ok(())
}

fn check_default_inputs(inputs: &BTreeMap<String, serde_json::Value>) -> Result<(), RunsError> {
    if inputs.len() > MAX_DEFAULT_INPUTS {
        return Err(invalid(
            "default_inputs",
            format!("more than {MAX_DEFAULT_INPUTS}"),
        ));
    }
    if let Some(key) = inputs.keys().find(|k| !is_valid_name(k)) {
        return Err(invalid(
            "default_inputs",
            format!("invalid input name {key:?}"),
        ));
    }
    if serde_json::to_vec(inputs)?.len() > MAX_DEFAULT_INPUTS_BYTES {
        return Err(invalid(
            "default_inputs",
            format!("over {MAX_DEFAULT_INPUTS_BYTES} bytes"),
        ));
    }
    Ok(())
}

fn check_shares(field: &'static str, names: &BTreeSet<String>) -> Result<(), RunsError> {
    if names.len() > MAX_SHARES {
        return Err(invalid(field, format!("more than {MAX_SHARES} entries")));
    }
    if let Some(bad) = names.iter().find(|n| !is_valid_principal(n)) {
        return Err(invalid(field, format!("invalid name {bad:?}")));
    }
    Ok(())
}

/// Persistent processes. Cheap to clone; clones share one update lock.
///
/// Open one per database: updates are serialised by a lock inside the store (so the caller's
/// `FnOnce` edit runs exactly once); a second store on the same trees is still safe — its
/// conflicting write is refused with [`RunsError::Conflict`] — but not retried.
#[derive(Clone)]
pub struct ProcessStore {
    processes: Table,
    names: Table,
    write_lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for ProcessStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStore").finish_non_exhaustive()
    }
}

impl ProcessStore {
    /// Opens the process tables in `db`.
    pub fn open(db: &Database) -> Result<Self, RunsError> {
        Ok(Self::over(db))
    }

    /// The process tables of `db` (opening them cannot fail).
    pub fn over(db: &Database) -> Self {
        Self {
            processes: db.table(&PROCESSES),
            names: db.table(&PROCESS_NAMES),
            write_lock: Arc::new(Mutex::new(())),
        }
    }

    /// Validates and stores a new process under a fresh id; refuses a name already in use.
    pub fn create(&self, new: NewProcess) -> Result<Process, RunsError> {
        let now = now_ms();
        let process = Process {
            id: uuid::Uuid::new_v4().to_string(),
            name: new.name,
            description: new.description,
            owner: new.owner,
            module_digest: new.module_digest,
            module: new.module,
            grant: new.grant,
            default_inputs: new.default_inputs,
            shared_users: new.shared_users,
            shared_roles: new.shared_roles,
            required_approvals: new.required_approvals,
            retry_on_lost: new.retry_on_lost,
            limits: new.limits,
            workflow: new.workflow,
            revision: 1,
            created_ms: now,
            updated_ms: now,
        };
        process.validate()?;
        let bytes = process.encode()?;
        let mut batch = Batch::new();
        batch
            .put(
                &PROCESS_NAMES,
                process.name.as_bytes(),
                process.id.as_bytes(),
                Expect::Absent,
            )
            .put(&PROCESSES, process.id.as_bytes(), bytes, Expect::Absent);
        self.apply(batch, &process.id, &process.name)?;
        Ok(process)
    }

    /// The process with this id.
    pub fn get(&self, id: &str) -> Result<Option<Process>, RunsError> {
        Ok(self.load(id)?.map(|(_, process)| process))
    }

    /// The process with this name.
    pub fn get_by_name(&self, name: &str) -> Result<Option<Process>, RunsError> {
        let Some(id) = self.names.get(name.as_bytes())? else {
            return Ok(None);
        };
        let id = String::from_utf8(id.to_vec()).map_err(|_| corrupt(name))?;
        self.get(&id)
    }

    /// Every process, sorted by name. Processes are created by administrators, so their
    /// number stays small; the API layer filters by what the caller may view.
    pub fn list(&self) -> Result<Vec<Process>, RunsError> {
        let mut all = Vec::new();
        for (key, value) in self.processes.all()? {
            all.push(decode(&String::from_utf8_lossy(&key), &value)?);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Applies `edit` to the process and stores the result: bumps `revision` and
    /// `updated_ms` (whatever `edit` set them to) and validates again. A changed name must be
    /// free. Changing `id`, `owner` or `created_ms` is refused with [`RunsError::Invalid`].
    pub fn update(&self, id: &str, edit: impl FnOnce(&mut Process)) -> Result<Process, RunsError> {
        // The edit is FnOnce, so it cannot be replayed by a retry loop: serialise instead.
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (old_bytes, old) = self
            .load(id)?
            .ok_or_else(|| RunsError::NotFound(id.into()))?;
        let mut new = old.clone();
        edit(&mut new);
        check_immutable(&old, &new)?;
        new.revision = old.revision.saturating_add(1);
        new.updated_ms = now_ms().max(old.updated_ms);
        new.validate()?;
        let new_bytes = new.encode()?;
        let mut batch = Batch::new();
        if new.name != old.name {
            batch
                .put(
                    &PROCESS_NAMES,
                    new.name.as_bytes(),
                    id.as_bytes(),
                    Expect::Absent,
                )
                .delete(&PROCESS_NAMES, old.name.as_bytes(), Expect::Any);
        }
        batch.put(
            &PROCESSES,
            id.as_bytes(),
            new_bytes,
            Expect::Equals(old_bytes),
        );
        self.apply(batch, id, &new.name)?;
        Ok(new)
    }

    /// Adds users and roles to the process's share lists (an update: bumps the revision).
    pub fn share(
        &self,
        id: &str,
        users: &[String],
        roles: &[String],
    ) -> Result<Process, RunsError> {
        self.update(id, |p| {
            p.shared_users.extend(users.iter().cloned());
            p.shared_roles.extend(roles.iter().cloned());
        })
    }

    /// Removes users and roles from the process's share lists (an update).
    pub fn unshare(
        &self,
        id: &str,
        users: &[String],
        roles: &[String],
    ) -> Result<Process, RunsError> {
        self.update(id, |p| {
            for user in users {
                p.shared_users.remove(user);
            }
            for role in roles {
                p.shared_roles.remove(role);
            }
        })
    }

    /// Deletes the process and frees its name; false if there was none. Runs of it keep
    /// their records (they name the process id and module digest).
    pub fn delete(&self, id: &str) -> Result<bool, RunsError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some((old_bytes, old)) = self.load(id)? else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        batch
            .delete(&PROCESSES, id.as_bytes(), Expect::Equals(old_bytes))
            .delete(&PROCESS_NAMES, old.name.as_bytes(), Expect::Any);
        self.apply(batch, id, &old.name)?;
        Ok(true)
    }

    /// Applies a batch about process `id` named `name`, naming what a conflict means: the
    /// name is taken, or the process changed (or went) since it was read.
    fn apply(&self, batch: Batch, id: &str, name: &str) -> Result<(), RunsError> {
        match self.processes.database().apply(&batch) {
            Ok(()) => Ok(()),
            Err(StoreError::Conflict { table, .. }) if table == PROCESS_NAMES.name => {
                Err(RunsError::NameTaken(name.to_string()))
            }
            Err(e) if e.is_conflict() => match self.processes.get(id.as_bytes())? {
                Some(_) => Err(RunsError::Conflict(id.to_string())),
                None => Err(RunsError::NotFound(id.to_string())),
            },
            Err(e) => Err(e.into()),
        }
    }

    fn load(&self, id: &str) -> Result<Option<(Vec<u8>, Process)>, RunsError> {
        let Some(bytes) = self.processes.get(id.as_bytes())? else {
            return Ok(None);
        };
        let process = decode(id, &bytes)?;
        Ok(Some((bytes, process)))
    }
}

fn check_immutable(old: &Process, new: &Process) -> Result<(), RunsError> {
    if new.id != old.id {
        return Err(invalid("id", "cannot be changed"));
    }
    if new.owner != old.owner {
        return Err(invalid("owner", "cannot be changed"));
    }
    if new.created_ms != old.created_ms {
        return Err(invalid("created_ms", "cannot be changed"));
    }
    Ok(())
}

fn decode(id: &str, bytes: &[u8]) -> Result<Process, RunsError> {
    serde_json::from_slice(bytes).map_err(|_| corrupt(id))
}

fn corrupt(id: &str) -> RunsError {
    RunsError::Corrupt(format!("process {id}"))
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
