//! Users, custom roles and API tokens, kept through [`crate::store`].
//!
//! Threats this module stops:
//! - **A stolen database yielding usable tokens.** Only SHA-256 of each token's 256-bit
//!   random secret is stored; the whole token exists once, in the [`IssuedToken`] returned
//!   at creation, held in a [`SecretString`].
//! - **Timing attacks on token comparison.** The presented secret's hash is compared with
//!   the stored hash in constant time, and every failure (malformed, unknown id, wrong
//!   secret, revoked, user gone) looks the same to the caller: `None`.
//! - **Privilege confusion.** Custom roles may not take a built-in role's name, a user may
//!   hold only roles that exist, and a [`Principal`]'s privileges (and the credentials and
//!   targets it may name in a grant) are computed here from the stored roles, never taken
//!   from a request.
//! - **Access that outlives its grant.** Every token expires ([`DEFAULT_TOKEN_TTL`], at most
//!   [`MAX_TOKEN_TTL`]); a revoked token, a disabled or deleted user's token stops working
//!   at the next request. A deleted user keeps a tombstone so its name (which shares,
//!   approvals and audit records name) is never given to someone else.
//! - **Impersonation by whoever mints tokens.** A token minted for another user is an
//!   enrollment token ([`TokenKind::Enrollment`]): short-lived, single-use, good only for the
//!   user to mint their own token (see `tokens`).
//!
//! Layout: `token` holds the token format, generation, parsing and hashing; `tokens` the
//! token lifecycle (issue, authenticate, list, revoke, expiry); this file the tables
//! `users` (name → JSON [`User`]), `roles` (name → JSON [`Role`]) and `tokens` (id → JSON
//! record with the secret's hash).

mod token;
mod tokens;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::policy::{BuiltinRole, Principal, Privilege};
use crate::store::{Database, Scan, Table, TableDef};

pub use token::MAX_TOKEN_LEN;
pub use tokens::{
    Authenticated, DEFAULT_ENROLLMENT_TTL, DEFAULT_TOKEN_TTL, MAX_ENROLLMENT_TTL, MAX_TOKEN_TTL,
    TokenInfo, TokenKind, TokenRequest,
};

/// Table of users.
pub const USERS: TableDef = TableDef {
    name: "users",
    columns: &[],
    columns_of: None,
};
/// Table of custom roles.
pub const ROLES: TableDef = TableDef {
    name: "roles",
    columns: &[],
    columns_of: None,
};
/// Table of token records.
pub const TOKENS: TableDef = TableDef {
    name: "tokens",
    columns: &[],
    columns_of: None,
};

/// Longest user or role name. Names reach storage keys, policy entities and audit records.
pub const MAX_NAME_LEN: usize = 64;
/// Longest token label. Bounds a stored record and the audit lines a request controls.
pub const MAX_LABEL_LEN: usize = 128;
/// Most roles one user holds. Bounds the per-request work of building a [`Principal`].
pub const MAX_ROLES_PER_USER: usize = 64;
/// Most live tokens one user holds. Stops a user (or a stolen token) from filling the
/// database with tokens.
pub const MAX_TOKENS_PER_USER: usize = 64;
/// Most credentials, and separately most targets, one custom role grants use of. Every
/// request builds a principal holding the union of its roles' grants.
pub const MAX_ROLE_GRANTS: usize = 256;
/// Longest credential or target name a role grants (the grant's own name limit).
pub const MAX_GRANT_NAME_LEN: usize = 128;

/// Every privilege a custom role can grant, as [`Privilege::as_str`] names them.
pub const PRIVILEGES: [Privilege; 3] = [
    Privilege::ManagePrivilegedProcess,
    Privilege::ExecutePrivilegedProcess,
    Privilege::ApproveRun,
];

// A new `Privilege` variant breaks this exhaustive match, so it cannot be forgotten in
// `PRIVILEGES` (which would make roles holding it fail to load).
const fn privilege_index(p: Privilege) -> usize {
    match p {
        Privilege::ManagePrivilegedProcess => 0,
        Privilege::ExecutePrivilegedProcess => 1,
        Privilege::ApproveRun => 2,
    }
}
const _: () = assert!(privilege_index(Privilege::ApproveRun) + 1 == PRIVILEGES.len());

/// Parses a privilege from its [`Privilege::as_str`] name.
pub fn parse_privilege(name: &str) -> Option<Privilege> {
    PRIVILEGES.into_iter().find(|p| p.as_str() == name)
}

/// Why a user, role or token operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user name {0:?}: use 1-{MAX_NAME_LEN} of a-z 0-9 . _ -")]
    InvalidName(String),
    #[error("invalid role name {0:?}: use 1-{MAX_NAME_LEN} of a-z 0-9 . _ -")]
    InvalidRoleName(String),
    #[error("role name {0:?} is reserved for a built-in role")]
    ReservedRole(String),
    #[error("role {0:?} does not exist")]
    UnknownRole(String),
    #[error("too many roles ({0}); at most {MAX_ROLES_PER_USER}")]
    TooManyRoles(usize),
    #[error("invalid token label: at most {MAX_LABEL_LEN} bytes, no control characters")]
    InvalidLabel,
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("role {0:?} already exists")]
    RoleExists(String),
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    #[error("user {0:?} already holds {MAX_TOKENS_PER_USER} tokens; revoke one first")]
    TooManyTokens(String),
    #[error("token lifetime must be between 1 second and {max_days} days")]
    InvalidTtl { max_days: u64 },
    #[error(
        "invalid {0} grant {1:?}: 1-{MAX_GRANT_NAME_LEN} of A-Z a-z 0-9 . _ -, at most {MAX_ROLE_GRANTS}"
    )]
    InvalidGrant(&'static str, String),
    #[error("user {0:?} was deleted")]
    Deleted(String),
    #[error("this enrollment token was already used")]
    EnrollmentUsed,
    #[error("stored {0} is corrupt")]
    Corrupt(String),
    #[error("user storage failed: {0}")]
    Storage(#[from] crate::store::StoreError),
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// `[a-z0-9._-]{1,64}`.
    pub name: String,
    /// Built-in role names ([`BuiltinRole::as_str`]) and custom role names.
    pub roles: BTreeSet<String>,
    pub created_ms: u64,
    /// A disabled user's tokens are refused; an administrator may enable it again.
    #[serde(default)]
    pub disabled: bool,
    /// Set when the user was deleted: its tokens are gone, it holds no role, and its name
    /// is never reused (processes, approvals and audit records name users by name).
    #[serde(default)]
    pub deleted_ms: Option<u64>,
}

impl User {
    /// Whether its tokens may authenticate.
    pub fn is_active(&self) -> bool {
        !self.disabled && self.deleted_ms.is_none()
    }
}

/// A custom role: a name, the privileges it grants, and the credentials and targets its
/// holders may name in a process grant ([`crate::policy::Action::UseCredential`],
/// [`crate::policy::Action::UseTarget`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Role {
    pub name: String,
    #[serde(with = "privilege_names")]
    #[schema(value_type = Vec<String>)]
    pub privileges: BTreeSet<Privilege>,
    pub created_ms: u64,
    #[serde(default)]
    pub credentials: BTreeSet<String>,
    #[serde(default)]
    pub targets: BTreeSet<String>,
}

/// The credentials and targets a role grants use of.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleGrants {
    #[serde(default)]
    pub credentials: BTreeSet<String>,
    #[serde(default)]
    pub targets: BTreeSet<String>,
}

impl RoleGrants {
    fn check(&self) -> Result<(), UserError> {
        let valid = |n: &String| {
            !n.is_empty()
                && n.len() <= MAX_GRANT_NAME_LEN
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        for (what, set) in [("credential", &self.credentials), ("target", &self.targets)] {
            if set.len() > MAX_ROLE_GRANTS {
                return Err(UserError::InvalidGrant(
                    what,
                    format!("{} entries", set.len()),
                ));
            }
            if let Some(bad) = set.iter().find(|n| !valid(n)) {
                return Err(UserError::InvalidGrant(what, bad.clone()));
            }
        }
        Ok(())
    }
}

/// A newly issued token. `token` is the only copy of the secret there will ever be: show
/// it once and drop it.
#[derive(Debug)]
pub struct IssuedToken {
    pub info: TokenInfo,
    pub token: SecretString,
}

/// Users, roles and tokens in one database; cheap to clone.
#[derive(Clone)]
pub struct UserStore {
    users: Table,
    roles: Table,
    tokens: Table,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore").finish_non_exhaustive()
    }
}

impl UserStore {
    /// The database the store lives in (for stores kept beside it: console sessions).
    pub fn database(&self) -> &Database {
        self.users.database()
    }

    /// Opens the three tables.
    pub fn open(db: &Database) -> Result<Self, UserError> {
        Ok(UserStore {
            users: db.table(&USERS),
            roles: db.table(&ROLES),
            tokens: db.table(&TOKENS),
        })
    }

    /// Creates a user holding `roles`; each must be built-in or an existing custom role.
    pub fn create_user(&self, name: &str, roles: BTreeSet<String>) -> Result<User, UserError> {
        if !is_valid_name(name) {
            return Err(UserError::InvalidName(name.to_string()));
        }
        self.check_roles(&roles)?;
        let user = User {
            name: name.to_string(),
            roles,
            created_ms: now_ms(),
            disabled: false,
            deleted_ms: None,
        };
        if !self.users.insert_new(name, encode(&user)?)? {
            return Err(UserError::UserExists(name.to_string()));
        }
        Ok(user)
    }

    /// The user called `name`, if any.
    pub fn get_user(&self, name: &str) -> Result<Option<User>, UserError> {
        if !is_valid_name(name) {
            return Ok(None);
        }
        self.users
            .get(name)?
            .map(|bytes| decode(&bytes, "user"))
            .transpose()
    }

    /// Every user, by name.
    pub fn list_users(&self) -> Result<Vec<User>, UserError> {
        self.users
            .all()?
            .iter()
            .map(|(_, v)| decode(v, "user"))
            .collect()
    }

    /// Replaces the roles of user `name`.
    pub fn set_roles(&self, name: &str, roles: BTreeSet<String>) -> Result<User, UserError> {
        self.check_roles(&roles)?;
        self.edit_user(name, |user| {
            user.roles = roles.clone();
        })
    }

    /// Disables (or enables again) user `name`: a disabled user's tokens are refused at the
    /// next request.
    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<User, UserError> {
        self.edit_user(name, |user| user.disabled = disabled)
    }

    /// Deletes user `name`: revokes every token, drops its roles and leaves a tombstone so
    /// the name is never reused. Returns the tombstone and how many tokens were revoked.
    pub fn delete_user(&self, name: &str) -> Result<(User, usize), UserError> {
        let tombstone = self.edit_user(name, |user| {
            user.roles.clear();
            user.disabled = true;
            user.deleted_ms = Some(now_ms());
        })?;
        let revoked = self.revoke_all_tokens(name)?;
        Ok((tombstone, revoked))
    }

    /// Applies `edit` to a live (not deleted) user with compare-and-swap, so a concurrent
    /// change is not silently overwritten with a stale copy; on a race, read again.
    fn edit_user(&self, name: &str, edit: impl Fn(&mut User)) -> Result<User, UserError> {
        loop {
            let old = self
                .users
                .get(name)?
                .ok_or_else(|| UserError::UnknownUser(name.to_string()))?;
            let mut user: User = decode(&old, "user")?;
            if user.deleted_ms.is_some() {
                return Err(UserError::Deleted(name.to_string()));
            }
            edit(&mut user);
            if self.users.swap(name, &old, encode(&user)?)? {
                return Ok(user);
            }
        }
    }

    /// Creates a custom role that grants no credential or target. Built-in role names are
    /// refused.
    pub fn create_role(
        &self,
        name: &str,
        privileges: BTreeSet<Privilege>,
    ) -> Result<Role, UserError> {
        self.create_role_granting(name, privileges, RoleGrants::default())
    }

    /// Creates a custom role whose holders may also name `grants` in process grants.
    pub fn create_role_granting(
        &self,
        name: &str,
        privileges: BTreeSet<Privilege>,
        grants: RoleGrants,
    ) -> Result<Role, UserError> {
        check_role_name(name)?;
        if builtin(name).is_some() {
            return Err(UserError::ReservedRole(name.to_string()));
        }
        grants.check()?;
        let role = Role {
            name: name.to_string(),
            privileges,
            created_ms: now_ms(),
            credentials: grants.credentials,
            targets: grants.targets,
        };
        if !self.roles.insert_new(name, encode(&role)?)? {
            return Err(UserError::RoleExists(name.to_string()));
        }
        Ok(role)
    }

    /// Replaces the credentials and targets custom role `name` grants use of.
    pub fn set_role_grants(&self, name: &str, grants: RoleGrants) -> Result<Role, UserError> {
        grants.check()?;
        loop {
            let old = self
                .roles
                .get(name)?
                .ok_or_else(|| UserError::UnknownRole(name.to_string()))?;
            let mut role: Role = decode(&old, "role")?;
            role.credentials = grants.credentials.clone();
            role.targets = grants.targets.clone();
            if self.roles.swap(name, &old, encode(&role)?)? {
                return Ok(role);
            }
        }
    }

    /// Every custom role, by name.
    pub fn list_roles(&self) -> Result<Vec<Role>, UserError> {
        self.roles
            .all()?
            .iter()
            .map(|(_, v)| decode(v, "role"))
            .collect()
    }

    /// The policy principal for `user`: its roles, plus the union of its custom roles'
    /// privileges. Read from storage, so a role's privileges are always the current ones.
    pub fn principal(&self, user: &User) -> Result<Principal, UserError> {
        let mut principal = Principal {
            user: user.name.clone(),
            roles: user.roles.clone(),
            ..Principal::default()
        };
        for name in user.roles.iter().filter(|r| builtin(r).is_none()) {
            // A role that does not exist grants nothing (fail closed).
            if let Some(bytes) = self.roles.get(name)? {
                let role: Role = decode(&bytes, "role")?;
                principal.privileges.extend(role.privileges);
                principal.credentials.extend(role.credentials);
                principal.targets.extend(role.targets);
            }
        }
        Ok(principal)
    }

    /// True when there are no users yet (`warden init` creates the first administrator).
    pub fn is_empty(&self) -> Result<bool, UserError> {
        Ok(self.users.scan(&Scan::all().limit(1))?.is_empty())
    }

    fn check_roles(&self, roles: &BTreeSet<String>) -> Result<(), UserError> {
        if roles.len() > MAX_ROLES_PER_USER {
            return Err(UserError::TooManyRoles(roles.len()));
        }
        for role in roles {
            check_role_name(role)?;
            if builtin(role).is_none() && self.roles.get(role)?.is_none() {
                return Err(UserError::UnknownRole(role.clone()));
            }
        }
        Ok(())
    }
}

/// The built-in role called `name`, if any.
pub fn builtin(name: &str) -> Option<BuiltinRole> {
    BuiltinRole::ALL.into_iter().find(|r| r.as_str() == name)
}

/// True for 1..=64 characters of `[a-z0-9._-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

fn check_role_name(name: &str) -> Result<(), UserError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(UserError::InvalidRoleName(name.to_string()))
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, UserError> {
    serde_json::to_vec(value).map_err(|_| UserError::Corrupt("record (encoding)".into()))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, UserError> {
    serde_json::from_slice(bytes).map_err(|_| UserError::Corrupt(what.to_string()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serde for privilege sets as their [`Privilege::as_str`] names (the policy crate's
/// enum carries no serde impls).
mod privilege_names {
    use std::collections::BTreeSet;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::policy::Privilege;

    pub fn serialize<S: Serializer>(set: &BTreeSet<Privilege>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(set.iter().map(|p| p.as_str()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<Privilege>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|name| {
                super::parse_privilege(name)
                    .ok_or_else(|| D::Error::custom(format!("unknown privilege {name:?}")))
            })
            .collect()
    }
}
