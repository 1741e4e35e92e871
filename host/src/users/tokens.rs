//! The token lifecycle: issue, authenticate, list, revoke, expire.
//!
//! Threats this file stops:
//! - **A token that works forever.** Every token carries an expiry, chosen at issue
//!   (default [`DEFAULT_TOKEN_TTL`], at most [`MAX_TOKEN_TTL`]); an expired token does not
//!   authenticate ([`Authenticated::Expired`] lets the API audit the attempt). Records
//!   written before expiry existed count as expiring [`DEFAULT_TOKEN_TTL`] after creation.
//! - **Acting as someone else by minting their token.** Whoever mints a token for another
//!   user gets an [`TokenKind::Enrollment`] token: it lives at most [`MAX_ENROLLMENT_TTL`],
//!   is good only for minting that user's own token, and is consumed when it does
//!   ([`UserStore::redeem`]). An administrator who redeems it first is not prevented but is
//!   visible: the user's own redemption then fails, and the audit names the minter of every
//!   token (`minted_by`; `enrolled_by`, which the API carries over to every token a user
//!   mints with a token descending from an enrollment).
//! - **A revoked or disabled account that keeps working.** Authentication reads the token
//!   record and the user record on every request: revoking removes the record, disabling or
//!   deleting the user refuses its tokens from the next request on.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{IssuedToken, User, UserError, UserStore, decode, encode, now_ms, token};
use super::{MAX_LABEL_LEN, MAX_TOKENS_PER_USER, TOKENS};
use crate::store::{Batch, Expect};

/// Lifetime of a token when the request names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest lifetime a token may be given. A stolen token stops working within this.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of an enrollment token when the request names none.
pub const DEFAULT_ENROLLMENT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime of an enrollment token: it is handed from an administrator to a user
/// out of band, and only needs to survive that hand-over.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a token may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Everything its user may do. Minted by the user for themselves (or by `warden init`
    /// for the first administrator).
    #[default]
    Full,
    /// Minted by someone else (an administrator creating or resetting the user): good only
    /// for the user to mint their own token, once.
    Enrollment,
}

/// What may be shown about a token: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub label: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    pub kind: TokenKind,
    /// Who minted it: the user itself, or the administrator who enrolled it.
    pub minted_by: String,
    /// For a token minted with an enrollment token: who minted that enrollment token.
    pub enrolled_by: Option<String>,
}

impl TokenInfo {
    /// Whether it has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }
}

/// How to issue a token.
#[derive(Clone, Debug)]
pub struct TokenRequest<'a> {
    /// Whose token.
    pub user: &'a str,
    pub label: &'a str,
    /// Who asks for it; when not `user`, the token is an enrollment token.
    pub minted_by: &'a str,
    /// Lifetime; `None` for the default of its kind.
    pub ttl: Option<Duration>,
    /// Set when minted through an enrollment token: that token's minter.
    pub enrolled_by: Option<&'a str>,
}

/// The outcome of presenting a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authenticated {
    /// A live token of an active user.
    Valid { user: User, token: TokenInfo },
    /// A genuine token past its expiry (the caller audits the attempt).
    Expired(TokenInfo),
    /// Anything else: malformed, unknown, wrong secret, revoked, user disabled or gone.
    Invalid,
}

/// A token as stored: the secret only as its SHA-256.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredToken {
    user: String,
    label: String,
    created_ms: u64,
    /// Hex SHA-256 of the secret part.
    hash: String,
    /// 0 in records written before expiry existed: see the module doc.
    #[serde(default)]
    expires_ms: u64,
    #[serde(default)]
    kind: TokenKind,
    /// Empty in records written before it existed: minted by the user itself.
    #[serde(default)]
    minted_by: String,
    #[serde(default)]
    enrolled_by: Option<String>,
}

fn info(id: String, stored: StoredToken) -> TokenInfo {
    let default_ttl = u64::try_from(DEFAULT_TOKEN_TTL.as_millis()).unwrap_or(u64::MAX);
    let expires_ms = match stored.expires_ms {
        0 => stored.created_ms.saturating_add(default_ttl),
        set => set,
    };
    let minted_by = match stored.minted_by.is_empty() {
        true => stored.user.clone(),
        false => stored.minted_by,
    };
    TokenInfo {
        id,
        user: stored.user,
        label: stored.label,
        created_ms: stored.created_ms,
        expires_ms,
        kind: stored.kind,
        minted_by,
        enrolled_by: stored.enrolled_by,
    }
}

fn ttl_ms(ttl: Option<Duration>, kind: TokenKind) -> Result<u64, UserError> {
    let (default, max) = match kind {
        TokenKind::Full => (DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL),
        TokenKind::Enrollment => (DEFAULT_ENROLLMENT_TTL, MAX_ENROLLMENT_TTL),
    };
    let ttl = ttl.unwrap_or(default);
    if ttl < Duration::from_secs(1) || ttl > max {
        return Err(UserError::InvalidTtl {
            max_days: max.as_secs() / 86_400,
        });
    }
    Ok(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

impl UserStore {
    /// Issues a token for `user`, minted by the user itself, with the default lifetime.
    /// (For `warden init` and tests; the API uses [`UserStore::issue`].)
    pub fn issue_token(&self, user: &str, label: &str) -> Result<IssuedToken, UserError> {
        self.issue(&TokenRequest {
            user,
            label,
            minted_by: user,
            ttl: None,
            enrolled_by: None,
        })
    }

    /// Issues a new token. The returned secret is not stored anywhere. A token minted by
    /// anyone but its user is an enrollment token.
    pub fn issue(&self, req: &TokenRequest<'_>) -> Result<IssuedToken, UserError> {
        if req.label.len() > MAX_LABEL_LEN || req.label.chars().any(char::is_control) {
            return Err(UserError::InvalidLabel);
        }
        let kind = match req.minted_by == req.user {
            true => TokenKind::Full,
            false => TokenKind::Enrollment,
        };
        let ttl = ttl_ms(req.ttl, kind)?;
        match self.get_user(req.user)? {
            None => return Err(UserError::UnknownUser(req.user.to_string())),
            Some(u) if u.deleted_ms.is_some() => {
                return Err(UserError::Deleted(req.user.to_string()));
            }
            Some(_) => {}
        }
        // Counted, then inserted: two concurrent issues may overshoot the cap by one each,
        // which still bounds growth. Expired tokens are pruned first and do not count.
        self.prune_expired(req.user)?;
        if self.tokens_of(req.user)?.len() >= MAX_TOKENS_PER_USER {
            return Err(UserError::TooManyTokens(req.user.to_string()));
        }
        let created_ms = now_ms();
        loop {
            let fresh = token::generate();
            let stored = StoredToken {
                user: req.user.to_string(),
                label: req.label.to_string(),
                created_ms,
                hash: fresh.hash_hex,
                expires_ms: created_ms.saturating_add(ttl),
                kind,
                minted_by: req.minted_by.to_string(),
                enrolled_by: req.enrolled_by.map(str::to_string),
            };
            // An id collision (64 random bits) would otherwise let one token overwrite
            // another's record; draw again.
            if self
                .tokens
                .insert_new(fresh.id.as_str(), encode(&stored)?)?
            {
                return Ok(IssuedToken {
                    info: info(fresh.id, stored),
                    token: fresh.token,
                });
            }
        }
    }

    /// Consumes enrollment token `enrollment` (of `user`) and issues the user's own token,
    /// noting who minted the enrollment. Fails (and issues nothing) when the enrollment
    /// token was already consumed.
    pub fn redeem(
        &self,
        enrollment: &TokenInfo,
        label: &str,
        ttl: Option<Duration>,
    ) -> Result<IssuedToken, UserError> {
        // Check what can be checked before the enrollment token is consumed.
        ttl_ms(ttl, TokenKind::Full)?;
        if label.len() > MAX_LABEL_LEN || label.chars().any(char::is_control) {
            return Err(UserError::InvalidLabel);
        }
        if enrollment.kind != TokenKind::Enrollment || !self.revoke_token(&enrollment.id)? {
            return Err(UserError::EnrollmentUsed);
        }
        self.issue(&TokenRequest {
            user: &enrollment.user,
            label,
            minted_by: &enrollment.user,
            ttl,
            enrolled_by: Some(&enrollment.minted_by),
        })
    }

    /// Revokes token `id`; `false` when there was no such token.
    pub fn revoke_token(&self, id: &str) -> Result<bool, UserError> {
        if !token::is_valid_id(id) {
            return Ok(false);
        }
        Ok(self.tokens.remove(id)?)
    }

    /// Revokes every token of `user`; how many.
    pub fn revoke_all_tokens(&self, user: &str) -> Result<usize, UserError> {
        let mine = self.tokens_of(user)?;
        self.remove_tokens(&mine)?;
        Ok(mine.len())
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

    /// The tokens of `user` (expired ones included, until pruned), oldest first.
    pub fn list_tokens(&self, user: &str) -> Result<Vec<TokenInfo>, UserError> {
        if self.get_user(user)?.is_none() {
            return Err(UserError::UnknownUser(user.to_string()));
        }
        let mut tokens = self.tokens_of(user)?;
        tokens.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(tokens)
    }

    /// The user of a live token of an active user, else `None`, with no distinction leaked.
    /// `Err` only for storage failures.
    pub fn authenticate(&self, token: &str) -> Result<Option<User>, UserError> {
        Ok(match self.authenticate_token(token)? {
            Authenticated::Valid { user, .. } => Some(user),
            _ => None,
        })
    }

    /// Parses the token, looks up its id, compares SHA-256(secret) with the stored hash in
    /// constant time, then checks expiry and the user's state.
    pub fn authenticate_token(&self, token: &str) -> Result<Authenticated, UserError> {
        let Some(parsed) = token::parse(token) else {
            return Ok(Authenticated::Invalid);
        };
        let presented = parsed.secret_hash();
        let stored = match self.tokens.get(parsed.id)? {
            Some(bytes) => decode::<StoredToken>(&bytes, "token")?,
            None => {
                // Same work as a wrong secret, so unknown ids are not told apart by time.
                let _ = token::hash_matches(&presented, "");
                return Ok(Authenticated::Invalid);
            }
        };
        if !token::hash_matches(&presented, &stored.hash) {
            return Ok(Authenticated::Invalid);
        }
        let token = info(parsed.id.to_string(), stored);
        if token.is_expired(now_ms()) {
            return Ok(Authenticated::Expired(token));
        }
        Ok(match self.get_user(&token.user)? {
            Some(user) if user.is_active() => Authenticated::Valid { user, token },
            _ => Authenticated::Invalid,
        })
    }

    pub(super) fn tokens_of(&self, user: &str) -> Result<Vec<TokenInfo>, UserError> {
        let mut found = Vec::new();
        for (id, bytes) in self.tokens.all()? {
            let stored: StoredToken = decode(&bytes, "token")?;
            if stored.user == user {
                let id = String::from_utf8(id.to_vec())
                    .map_err(|_| UserError::Corrupt("token id".into()))?;
                found.push(info(id, stored));
            }
        }
        Ok(found)
    }

    fn prune_expired(&self, user: &str) -> Result<(), UserError> {
        let now = now_ms();
        let expired: Vec<_> = self
            .tokens_of(user)?
            .into_iter()
            .filter(|t| t.is_expired(now))
            .collect();
        self.remove_tokens(&expired)
    }

    /// Deletes these tokens' records in one durable batch.
    fn remove_tokens(&self, tokens: &[TokenInfo]) -> Result<(), UserError> {
        let mut batch = Batch::new();
        for t in tokens {
            batch.delete(&TOKENS, t.id.as_bytes(), Expect::Any);
        }
        Ok(self.tokens.database().apply(&batch)?)
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
