//! Authorization: who may do what, decided by Cedar policies kept in `policies/`.
//!
//! Threat: a user reaching a process, credential, target or audit record that their role does
//! not cover (a super administrator reading another administrator's process, a password
//! auditor reading the whole task-automation audit), and a task module making a host call
//! that its signed manifest did not request or its process grant does not permit. Every
//! decision is made by the policy set; a request the schema does not describe, a policy
//! that errors, or no policy that permits, all deny (fail closed). A denial names the policy
//! that decided it, so the caller can audit it.
//!
//! The policies and the schema are files an administrator can read and extend (the shipped
//! set is compiled in; `warden policies export` writes it out). At load
//! every policy must carry an `@id` annotation and validate against the schema in strict
//! mode, so a typo in an attribute or action name is refused at start rather than silently
//! never matching. [`PolicyEngine::reload`] swaps in a new set atomically and keeps the old
//! one when the new one does not load.
//!
//! Layout:
//! - `load`: reading the directory, parsing, `@id` naming, strict validation.
//! - `request`: turning a [`Principal`]/[`Resource`] or a [`HostCallRequest`] into Cedar
//!   entities and a request, cheaply (this is on the path of every host call).
//! - `resource_audit`: the Password Auditor's view of the audit log.
//! - `source`: the built-in set (compiled in from `policies/`) or a directory, and the
//!   digest naming the set in force.

mod load;
mod request;
mod resource_audit;
mod source;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use load::{MAX_POLICY_FILE_BYTES, MAX_POLICY_FILES, MAX_POLICY_ID_BYTES, SCHEMA_FILE};
pub use request::MAX_HOST_CALL_TEXT_BYTES;
pub use resource_audit::{OutcomeKind, ResourceAuditRecord, ResourceDecision, resource_audit_view};
pub use source::{BUILTIN_FILES, BUILTIN_README, PolicySource, export_builtin};

use load::Loaded;

/// Policy id reported when no policy permitted the request.
pub const DEFAULT_DENY: &str = "default-deny";
/// Policy id reported when the request does not fit the schema (for example an action on a
/// resource it does not apply to, or [`Action::ApproveRun`] without a requester).
pub const INVALID_REQUEST: &str = "invalid-request";
/// Policy id reported when a host call's command or path exceeds
/// [`MAX_HOST_CALL_TEXT_BYTES`].
pub const OVERSIZE_HOST_CALL: &str = "oversize-host-call";

/// Errors loading the schema and policies. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} is larger than {MAX_POLICY_FILE_BYTES} bytes")]
    FileTooLarge { file: PathBuf },
    #[error("{dir} holds more than {MAX_POLICY_FILES} policy files")]
    TooManyFiles { dir: PathBuf },
    #[error("{dir} holds no *.cedar policy file")]
    NoPolicies { dir: PathBuf },
    /// `at` is where the error starts (" at line L, column C"), or empty when unknown.
    #[error("schema {file} is invalid{at}: {message}; fix the file and start again")]
    Schema {
        file: PathBuf,
        message: String,
        at: String,
    },
    /// `at` as for [`PolicyError::Schema`].
    #[error("{file} has a syntax error{at}: {message}; fix the file and start again")]
    Parse {
        file: PathBuf,
        message: String,
        at: String,
    },
    #[error("cannot write {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: templates are not supported (policy #{index})")]
    Template { file: PathBuf, index: usize },
    #[error("{file}: policy #{index} has no @id(\"...\") annotation")]
    MissingId { file: PathBuf, index: usize },
    #[error(
        "{file}: policy id {id:?} is not a lowercase-kebab-case name of at most \
         {MAX_POLICY_ID_BYTES} bytes, or is reserved"
    )]
    BadId { file: PathBuf, id: String },
    #[error("{file}: policy id {id:?} is already used in {other}")]
    DuplicateId {
        file: PathBuf,
        id: String,
        other: PathBuf,
    },
    #[error("cannot index the policy set: {message}")]
    Index { message: String },
    #[error("{file}: policy {id:?} fails validation against the schema: {message}")]
    Invalid {
        file: PathBuf,
        id: String,
        message: String,
    },
}

/// A privilege that a custom role grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Privilege {
    /// Create, edit and delete one's own processes; upload and retire task modules; view
    /// one's own processes and those shared with one.
    ManagePrivilegedProcess,
    /// View (and list) processes shared with one or one's role. Executing them needs only
    /// the share; see `policies/README.md`.
    ExecutePrivilegedProcess,
    /// Approve runs of processes shared with one or one's role, never one's own run.
    ApproveRun,
}

impl Privilege {
    /// The `Privilege` entity id the policies use.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::ManagePrivilegedProcess => "ManagePrivilegedProcess",
            Privilege::ExecutePrivilegedProcess => "ExecutePrivilegedProcess",
            Privilege::ApproveRun => "ApproveRun",
        }
    }
}

/// A role every server has. Custom roles are plain names with [`Privilege`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuiltinRole {
    PrivilegedAdministrator,
    SuperAdministrator,
    PasswordAuditor,
}

impl BuiltinRole {
    /// Every built-in role.
    pub const ALL: [BuiltinRole; 3] = [
        BuiltinRole::PrivilegedAdministrator,
        BuiltinRole::SuperAdministrator,
        BuiltinRole::PasswordAuditor,
    ];

    /// The role's name: its `Role` entity id, and the name in [`Principal::roles`]. Custom
    /// roles must not take these names.
    pub fn as_str(self) -> &'static str {
        match self {
            BuiltinRole::PrivilegedAdministrator => "privileged-administrator",
            BuiltinRole::SuperAdministrator => "super-administrator",
            BuiltinRole::PasswordAuditor => "password-auditor",
        }
    }

    /// Whether holding this role makes its holder an administrator, whose processes a
    /// super administrator sees only when shared with it.
    pub fn is_administrator(self) -> bool {
        matches!(
            self,
            BuiltinRole::PrivilegedAdministrator | BuiltinRole::SuperAdministrator
        )
    }
}

/// An authenticated user as the policies see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// The user name.
    pub user: String,
    /// Every role the user holds: built-in ones by [`BuiltinRole::as_str`], custom ones by
    /// name.
    pub roles: BTreeSet<String>,
    /// The union of the user's custom roles' privileges.
    pub privileges: BTreeSet<Privilege>,
    /// Credentials the user's custom roles were granted use of ([`Action::UseCredential`]),
    /// by name. An administrator grants these per role.
    pub credentials: BTreeSet<String>,
    /// Targets the user's custom roles were granted use of ([`Action::UseTarget`]), by name.
    pub targets: BTreeSet<String>,
}

impl Principal {
    /// Whether the user holds an administrator role; what [`ProcessRef::owner_is_admin`]
    /// should say of the processes this user owns.
    pub fn is_administrator(&self) -> bool {
        BuiltinRole::ALL
            .iter()
            .any(|role| role.is_administrator() && self.roles.contains(role.as_str()))
    }
}

/// An API operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create (on [`Resource::System`]), edit, share or delete (on the process) a process.
    ManageProcess,
    /// Start a run of a process.
    ExecuteProcess,
    /// See a process's definition; list it.
    ViewProcess,
    /// Upload or retire task modules.
    ManageModules,
    /// Create credentials, update their secrets.
    ManageCredentials,
    /// Add and update targets.
    ManageTargets,
    /// Manage users, roles and tokens of users who hold no administrator role.
    ManageUsers,
    /// Manage a user who holds, or would be given, an administrator role: assign those
    /// roles, mint or revoke their tokens. Check this instead of [`Action::ManageUsers`]
    /// whenever the user being changed (the caller included) is or becomes an administrator.
    ManageAdministrators,
    /// Query the whole audit log and verify its chain.
    ViewAudit,
    /// Query the resource audit ([`resource_audit_view`]).
    ViewResourceAudit,
    /// Approve a run; the resource must be [`Resource::Run`].
    ApproveRun,
    /// Trust or distrust a publisher key (which decides what code may run at all).
    TrustPublishers,
    /// Name a credential in a process grant; the resource must be [`Resource::Credential`].
    UseCredential,
    /// Name a target in a process grant; the resource must be [`Resource::Target`].
    UseTarget,
    /// See the audit records of a process and of its runs (in the full audit and in the
    /// resource audit); the resource must be [`Resource::Process`].
    ViewProcessAudit,
}

impl Action {
    /// Every API action.
    pub const ALL: [Action; 15] = [
        Action::ManageProcess,
        Action::ExecuteProcess,
        Action::ViewProcess,
        Action::ManageModules,
        Action::ManageCredentials,
        Action::ManageTargets,
        Action::ManageUsers,
        Action::ManageAdministrators,
        Action::ViewAudit,
        Action::ViewResourceAudit,
        Action::ApproveRun,
        Action::TrustPublishers,
        Action::UseCredential,
        Action::UseTarget,
        Action::ViewProcessAudit,
    ];

    /// The `Action` entity id in the schema.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ManageProcess => "ManageProcess",
            Action::ExecuteProcess => "ExecuteProcess",
            Action::ViewProcess => "ViewProcess",
            Action::ManageModules => "ManageModules",
            Action::ManageCredentials => "ManageCredentials",
            Action::ManageTargets => "ManageTargets",
            Action::ManageUsers => "ManageUsers",
            Action::ManageAdministrators => "ManageAdministrators",
            Action::ViewAudit => "ViewAudit",
            Action::ViewResourceAudit => "ViewResourceAudit",
            Action::ApproveRun => "ApproveRun",
            Action::TrustPublishers => "TrustPublishers",
            Action::UseCredential => "UseCredential",
            Action::UseTarget => "UseTarget",
            Action::ViewProcessAudit => "ViewProcessAudit",
        }
    }
}

/// A process, as far as authorization needs it.
#[derive(Clone, Copy, Debug)]
pub struct ProcessRef<'a> {
    pub id: &'a str,
    /// The user who created it.
    pub owner: &'a str,
    /// Whether the owner holds an administrator role ([`Principal::is_administrator`]).
    pub owner_is_admin: bool,
    pub shared_users: &'a BTreeSet<String>,
    pub shared_roles: &'a BTreeSet<String>,
}

/// What an API operation acts on.
#[derive(Clone, Copy, Debug)]
pub enum Resource<'a> {
    /// One process.
    Process(ProcessRef<'a>),
    /// A run of `process` awaiting approval, started by `requester`; for
    /// [`Action::ApproveRun`].
    Run {
        process: ProcessRef<'a>,
        requester: &'a str,
    },
    /// A vault credential by name: for [`Action::UseCredential`].
    Credential(&'a str),
    /// A target by name: for [`Action::UseTarget`].
    Target(&'a str),
    /// The server as a whole: for actions not about one process, and for creating one.
    System,
}

/// The outcome of one authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    pub allowed: bool,
    /// The policies that determined the decision: for an allow, the permits that matched;
    /// for a deny, the forbids that matched, or [`DEFAULT_DENY`], [`INVALID_REQUEST`] or
    /// [`OVERSIZE_HOST_CALL`]. Sorted, never empty.
    pub policy_ids: Vec<String>,
}

impl PolicyDecision {
    /// The policy ids joined by `,`, as one audit record field.
    pub fn policy(&self) -> String {
        self.policy_ids.join(",")
    }

    fn deny(id: &str) -> Self {
        PolicyDecision {
            allowed: false,
            policy_ids: vec![id.to_string()],
        }
    }
}

/// A host call, as the policies see it. Strings are names, never secrets.
#[derive(Clone, Copy, Debug)]
pub struct HostCallRequest<'a> {
    pub run_id: &'a str,
    /// The task module, `name@version` or digest.
    pub module: &'a str,
    /// The WIT interface: `"ssh"`, `"transfer"`, `"credentials"`, `"log"`, ...
    pub capability: &'a str,
    pub target: Option<&'a str>,
    pub credential: Option<&'a str>,
    pub command: Option<&'a str>,
    pub path: Option<&'a str>,
    /// Whether the module's signed manifest requested this call.
    pub module_requested: bool,
    /// Whether the process grant permits this call.
    pub grant_permits: bool,
    /// Whether the call runs its command under sudo (false for every non-exec call).
    pub sudo: bool,
}

/// The loaded schema and policies; cheap to clone and shared between threads.
#[derive(Clone)]
pub struct PolicyEngine {
    source: Arc<PolicySource>,
    current: Arc<RwLock<Arc<Loaded>>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Loads `dir/schema.cedarschema` and every `dir/*.cedar`, validating each policy
    /// against the schema in strict mode.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        Self::load_from(PolicySource::Dir(dir.to_path_buf()))
    }

    /// Loads the set `source` names (the built-in set or a directory), validated as
    /// [`PolicyEngine::load`] does.
    pub fn load_from(source: PolicySource) -> Result<Self, PolicyError> {
        let loaded = Loaded::from_source(&source)?;
        Ok(PolicyEngine {
            source: Arc::new(source),
            current: Arc::new(RwLock::new(Arc::new(loaded))),
        })
    }

    /// Where the set comes from.
    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// The files of the set, re-read from its source, as (file name, text), the schema
    /// first (sent to remote bridges, which evaluate host calls against the same set).
    pub fn files(&self) -> Result<Vec<(String, String)>, PolicyError> {
        load::source_files(&self.source)
    }

    /// SHA-256 (hex) of the files of the set in force: names and contents, schema first.
    /// Equal for the built-in set and for a faithful `warden policies export` of it.
    pub fn digest(&self) -> String {
        self.snapshot().digest.clone()
    }

    /// Loads the source again and swaps the new set in atomically. On error the set in
    /// force stays as it was.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let loaded = Arc::new(Loaded::from_source(&self.source)?);
        let digest = loaded.digest.clone();
        // A panic while holding the lock cannot leave the slot half-written (it is one
        // pointer store), so a poisoned lock still holds a whole policy set.
        let mut slot = self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        *slot = loaded;
        tracing::info!(source = %self.source, sha256 = %digest, "policies reloaded");
        Ok(())
    }

    /// Decides whether `principal` may perform `action` on `resource`.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: Resource<'_>,
    ) -> PolicyDecision {
        self.snapshot().authorize(principal, action, resource)
    }

    /// Decides whether a host call may proceed. Called for every host call, in addition to
    /// the grant check whose result it receives in [`HostCallRequest::grant_permits`].
    pub fn authorize_host_call(&self, request: &HostCallRequest<'_>) -> PolicyDecision {
        self.snapshot().authorize_host_call(request)
    }

    /// The policy ids in force, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        self.snapshot().policy_ids()
    }

    fn snapshot(&self) -> Arc<Loaded> {
        let slot = self
            .current
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        Arc::clone(&slot)
    }
}
