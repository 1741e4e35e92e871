//! Users, custom roles and API tokens, kept in sled.
//!
//! Threats this module stops:
//! - **A stolen database yielding usable tokens.** Only SHA-256 of each token's 256-bit
//!   random secret is stored; the whole token exists once, in the [`IssuedToken`] returned
//!   at creation, held in a [`SecretString`].
//! - **Timing attacks on token comparison.** The presented secret's hash is compared with
//!   the stored hash in constant time, and every failure (malformed, unknown id, wrong
//!   secret, revoked, user gone) looks the same to the caller: `None`.
//! - **Privilege confusion.** Custom roles may not take a built-in role's name, a user may
//!   hold only roles that exist, and a [`Principal`]'s privileges are computed here from
//!   the stored roles, never taken from a request.
//!
//! Layout: `token` holds the token format, generation, parsing and hashing; this file the
//! sled trees `users` (name → JSON [`User`]), `roles` (name → JSON [`Role`]) and `tokens`
//! (id → JSON record with the secret's hash).

mod token;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::policy::{BuiltinRole, Principal, Privilege};

pub use token::MAX_TOKEN_LEN;

/// Sled tree of users.
pub const USERS_TREE: &str = "users";
/// Sled tree of custom roles.
pub const ROLES_TREE: &str = "roles";
/// Sled tree of token records.
pub const TOKENS_TREE: &str = "tokens";

/// Longest user or role name. Names reach sled keys, policy entities and audit records.
pub const MAX_NAME_LEN: usize = 64;
/// Longest token label. Bounds a stored record and the audit lines a request controls.
pub const MAX_LABEL_LEN: usize = 128;
/// Most roles one user holds. Bounds the per-request work of building a [`Principal`].
pub const MAX_ROLES_PER_USER: usize = 64;
/// Most live tokens one user holds. Stops a user (or a stolen token) from filling the
/// database with tokens.
pub const MAX_TOKENS_PER_USER: usize = 64;

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
    #[error("stored {0} is corrupt")]
    Corrupt(String),
    #[error("user storage failed: {0}")]
    Storage(#[from] sled::Error),
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `[a-z0-9._-]{1,64}`.
    pub name: String,
    /// Built-in role names ([`BuiltinRole::as_str`]) and custom role names.
    pub roles: BTreeSet<String>,
    pub created_ms: u64,
}

/// A custom role: a name and the privileges it grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    #[serde(with = "privilege_names")]
    pub privileges: BTreeSet<Privilege>,
    pub created_ms: u64,
}

/// What may be shown about a token: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub label: String,
    pub created_ms: u64,
}

/// A newly issued token. `token` is the only copy of the secret there will ever be: show
/// it once and drop it.
#[derive(Debug)]
pub struct IssuedToken {
    pub info: TokenInfo,
    pub token: SecretString,
}

/// A token as stored: the secret only as its SHA-256.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    user: String,
    label: String,
    created_ms: u64,
    /// Hex SHA-256 of the secret part.
    hash: String,
}

/// Users, roles and tokens in one sled database; cheap to clone.
#[derive(Clone)]
pub struct UserStore {
    users: sled::Tree,
    roles: sled::Tree,
    tokens: sled::Tree,
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore").finish_non_exhaustive()
    }
}

impl UserStore {
    /// Opens (creating if needed) the three trees.
    pub fn open(db: &sled::Db) -> Result<Self, UserError> {
        Ok(UserStore {
            users: db.open_tree(USERS_TREE)?,
            roles: db.open_tree(ROLES_TREE)?,
            tokens: db.open_tree(TOKENS_TREE)?,
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
        };
        let swapped = self
            .users
            .compare_and_swap(name, None::<&[u8]>, Some(encode(&user)?))?;
        if swapped.is_err() {
            return Err(UserError::UserExists(name.to_string()));
        }
        self.users.flush()?;
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
            .iter()
            .values()
            .map(|v| decode(&v?, "user"))
            .collect()
    }

    /// Replaces the roles of user `name`.
    pub fn set_roles(&self, name: &str, roles: BTreeSet<String>) -> Result<User, UserError> {
        self.check_roles(&roles)?;
        loop {
            let old = self
                .users
                .get(name)?
                .ok_or_else(|| UserError::UnknownUser(name.to_string()))?;
            let mut user: User = decode(&old, "user")?;
            user.roles = roles.clone();
            // Compare-and-swap so a concurrent change is not silently overwritten with a
            // stale copy; on a race, read again.
            let swapped = self
                .users
                .compare_and_swap(name, Some(&old), Some(encode(&user)?))?;
            if swapped.is_ok() {
                self.users.flush()?;
                return Ok(user);
            }
        }
    }

    /// Creates a custom role. Built-in role names are refused.
    pub fn create_role(
        &self,
        name: &str,
        privileges: BTreeSet<Privilege>,
    ) -> Result<Role, UserError> {
        check_role_name(name)?;
        if builtin(name).is_some() {
            return Err(UserError::ReservedRole(name.to_string()));
        }
        let role = Role {
            name: name.to_string(),
            privileges,
            created_ms: now_ms(),
        };
        let swapped = self
            .roles
            .compare_and_swap(name, None::<&[u8]>, Some(encode(&role)?))?;
        if swapped.is_err() {
            return Err(UserError::RoleExists(name.to_string()));
        }
        self.roles.flush()?;
        Ok(role)
    }

    /// Every custom role, by name.
    pub fn list_roles(&self) -> Result<Vec<Role>, UserError> {
        self.roles
            .iter()
            .values()
            .map(|v| decode(&v?, "role"))
            .collect()
    }

    /// Issues a new token for `user`. The returned secret is not stored anywhere.
    pub fn issue_token(&self, user: &str, label: &str) -> Result<IssuedToken, UserError> {
        if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
            return Err(UserError::InvalidLabel);
        }
        if self.get_user(user)?.is_none() {
            return Err(UserError::UnknownUser(user.to_string()));
        }
        // Counted, then inserted: two concurrent issues may overshoot the cap by one each,
        // which still bounds growth.
        if self.tokens_of(user)?.len() >= MAX_TOKENS_PER_USER {
            return Err(UserError::TooManyTokens(user.to_string()));
        }
        let created_ms = now_ms();
        loop {
            let fresh = token::generate();
            let stored = StoredToken {
                user: user.to_string(),
                label: label.to_string(),
                created_ms,
                hash: fresh.hash_hex,
            };
            let swapped =
                self.tokens
                    .compare_and_swap(&fresh.id, None::<&[u8]>, Some(encode(&stored)?))?;
            // An id collision (64 random bits) would otherwise let one token overwrite
            // another's record; draw again.
            if swapped.is_ok() {
                self.tokens.flush()?;
                return Ok(IssuedToken {
                    info: info(fresh.id, stored),
                    token: fresh.token,
                });
            }
        }
    }

    /// Revokes token `id`; `false` when there was no such token.
    pub fn revoke_token(&self, id: &str) -> Result<bool, UserError> {
        if !token::is_valid_id(id) {
            return Ok(false);
        }
        let removed = self.tokens.remove(id)?.is_some();
        self.tokens.flush()?;
        Ok(removed)
    }

    /// What is known about token `id` (to check whose token it is before revoking it).
    pub fn token_info(&self, id: &str) -> Result<Option<TokenInfo>, UserError> {
        if !token::is_valid_id(id) {
            return Ok(None);
        }
        let Some(bytes) = self.tokens.get(id)? else {
            return Ok(None);
        };
        Ok(Some(info(id.to_string(), decode(&bytes, "token")?)))
    }

    /// The live tokens of `user`, oldest first.
    pub fn list_tokens(&self, user: &str) -> Result<Vec<TokenInfo>, UserError> {
        if self.get_user(user)?.is_none() {
            return Err(UserError::UnknownUser(user.to_string()));
        }
        let mut tokens = self.tokens_of(user)?;
        tokens.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(tokens)
    }

    /// Parses the token, looks up its id, compares SHA-256(secret) with the stored hash in
    /// constant time. Any failure gives `None`, with no distinction leaked. `Err` only for
    /// storage failures.
    pub fn authenticate(&self, token: &str) -> Result<Option<User>, UserError> {
        let Some(parsed) = token::parse(token) else {
            return Ok(None);
        };
        let presented = parsed.secret_hash();
        let stored = match self.tokens.get(parsed.id)? {
            Some(bytes) => decode::<StoredToken>(&bytes, "token")?,
            None => {
                // Same work as a wrong secret, so unknown ids are not told apart by time.
                let _ = token::hash_matches(&presented, "");
                return Ok(None);
            }
        };
        if !token::hash_matches(&presented, &stored.hash) {
            return Ok(None);
        }
        self.get_user(&stored.user)
    }

    /// The policy principal for `user`: its roles, plus the union of its custom roles'
    /// privileges. Read from storage, so a role's privileges are always the current ones.
    pub fn principal(&self, user: &User) -> Result<Principal, UserError> {
        let mut privileges = BTreeSet::new();
        for name in user.roles.iter().filter(|r| builtin(r).is_none()) {
            // A role that does not exist grants nothing (fail closed).
            if let Some(bytes) = self.roles.get(name)? {
                let role: Role = decode(&bytes, "role")?;
                privileges.extend(role.privileges);
            }
        }
        Ok(Principal {
            user: user.name.clone(),
            roles: user.roles.clone(),
            privileges,
        })
    }

    /// True when there are no users yet (`warden init` creates the first administrator).
    pub fn is_empty(&self) -> Result<bool, UserError> {
        Ok(self.users.is_empty())
    }

    fn check_roles(&self, roles: &BTreeSet<String>) -> Result<(), UserError> {
        if roles.len() > MAX_ROLES_PER_USER {
            return Err(UserError::TooManyRoles(roles.len()));
        }
        for role in roles {
            check_role_name(role)?;
            if builtin(role).is_none() && !self.roles.contains_key(role)? {
                return Err(UserError::UnknownRole(role.clone()));
            }
        }
        Ok(())
    }

    fn tokens_of(&self, user: &str) -> Result<Vec<TokenInfo>, UserError> {
        let mut found = Vec::new();
        for entry in self.tokens.iter() {
            let (id, bytes) = entry?;
            let stored: StoredToken = decode(&bytes, "token")?;
            if stored.user == user {
                let id = String::from_utf8(id.to_vec())
                    .map_err(|_| UserError::Corrupt("token id".into()))?;
                found.push(info(id, stored));
            }
        }
        Ok(found)
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

fn info(id: String, stored: StoredToken) -> TokenInfo {
    TokenInfo {
        id,
        user: stored.user,
        label: stored.label,
        created_ms: stored.created_ms,
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
