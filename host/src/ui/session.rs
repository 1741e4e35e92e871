//! Console sessions: a random session id in a cookie, only its SHA-256 in the database (the
//! `console_sessions` table, through the store layer, so every server over one database
//! knows every session), idle and absolute expiry, and the per-session CSRF token.
//!
//! Threat: a stolen database copy or log line turned into a live session (only hashes are
//! stored, ids never logged), a session outliving its sign-out, its token or its user (the
//! record names the API token it was opened with; [`crate::ui::auth`] re-checks that token
//! and its user on every request), and cross-site request forgery (every form carries the
//! session's CSRF token, compared in constant time by [`csrf_matches`]).

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::{Database, StoreError, Table, TableDef};

/// The sessions, keyed by the SHA-256 of their id.
pub const SESSIONS: TableDef = TableDef {
    name: "console_sessions",
    columns: &[],
    columns_of: None,
};

/// The cookie that carries the session id.
pub const COOKIE: &str = "warden_session";

/// A session unused this long ends (ms). Blocks a forgotten signed-in browser staying usable.
pub const IDLE_MS: u64 = 30 * 60 * 1000;

/// A session ends this long after sign-in whatever its use (ms). Bounds a stolen cookie.
pub const ABSOLUTE_MS: u64 = 12 * 60 * 60 * 1000;

/// A session's last use is written back at most this often (ms), so page views are reads.
const TOUCH_EVERY_MS: u64 = 60 * 1000;

/// Random bytes in a session id and a CSRF token (256 bits, above the 128 required).
const ID_BYTES: usize = 32;

/// Longest cookie value accepted. Blocks oversized values reaching the hash and the store.
const MAX_COOKIE_VALUE: usize = 128;

/// One signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user signed in.
    pub user: String,
    /// The API token the user signed in with: the session lives only as long as it does.
    pub token_id: String,
    /// The CSRF token every form of this session carries (hex).
    pub csrf: String,
    pub created_ms: u64,
    pub last_ms: u64,
}

impl Session {
    /// Whether it has ended at `now` (idle or absolute expiry).
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.created_ms.saturating_add(ABSOLUTE_MS)
            || now >= self.last_ms.saturating_add(IDLE_MS)
    }
}

/// The store of sessions.
#[derive(Clone, Debug)]
pub struct SessionStore {
    table: Table,
}

/// A new session: the id for the cookie (shown once, never stored) and its record.
pub struct Opened {
    pub id: zeroize::Zeroizing<String>,
    pub session: Session,
}

impl SessionStore {
    pub fn open(db: &Database) -> Self {
        Self {
            table: db.table(&SESSIONS),
        }
    }

    /// Opens a session for `user`, signed in with token `token_id`.
    pub fn create(&self, user: &str, token_id: &str, now: u64) -> Result<Opened, StoreError> {
        let id = zeroize::Zeroizing::new(random_hex());
        let session = Session {
            user: user.to_string(),
            token_id: token_id.to_string(),
            csrf: random_hex(),
            created_ms: now,
            last_ms: now,
        };
        let value = serde_json::to_vec(&session)
            .map_err(|e| StoreError::Incompatible(format!("console session: {e}")))?;
        self.table.insert_new(key(&id), value)?;
        Ok(Opened { id, session })
    }

    /// The live session of cookie value `id`; an expired one is deleted and `None`.
    /// Its last use is moved to `now` (written at most every minute).
    pub fn get(&self, id: &str, now: u64) -> Result<Option<Session>, StoreError> {
        if id.is_empty() || id.len() > MAX_COOKIE_VALUE {
            return Ok(None);
        }
        let key = key(id);
        let Some(bytes) = self.table.get(&key)? else {
            return Ok(None);
        };
        let mut session: Session = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Incompatible(format!("console session: {e}")))?;
        if session.is_expired(now) {
            self.table.remove(key)?;
            return Ok(None);
        }
        if now.saturating_sub(session.last_ms) >= TOUCH_EVERY_MS {
            session.last_ms = now;
            let value = serde_json::to_vec(&session)
                .map_err(|e| StoreError::Incompatible(format!("console session: {e}")))?;
            // A concurrent touch or sign-out wins; this request still sees the session it read.
            let _ = self.table.swap(key, &bytes, value);
        }
        Ok(Some(session))
    }

    /// Ends the session of cookie value `id` (sign-out, or its token or user is gone).
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        if id.is_empty() || id.len() > MAX_COOKIE_VALUE {
            return Ok(());
        }
        self.table.remove(key(id))?;
        Ok(())
    }
}

/// The stored key of session id `id`: its SHA-256.
fn key(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

fn random_hex() -> String {
    let mut bytes = [0u8; ID_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether a form's CSRF token is the session's, compared in constant time (the length of
/// the expected token, fixed, is all a timing can tell).
pub fn csrf_matches(session: &Session, presented: Option<&str>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    let expected = session.csrf.as_bytes();
    presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, sled::Db, SessionStore) {
        let dir = tempfile::TempDir::new().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let store = SessionStore::open(&crate::store::sled_db(&db));
        (dir, db, store)
    }

    #[test]
    fn stores_only_the_hash_of_the_session_id() {
        let (_dir, db, store) = store();
        let opened = store.create("alice", "tok1", 1_000).unwrap();
        assert!(opened.id.len() >= 32, "at least 128 bits of id");
        let tree = db.open_tree(SESSIONS.name).unwrap();
        for entry in tree.iter() {
            let (k, v) = entry.unwrap();
            assert_eq!(k.as_ref(), Sha256::digest(opened.id.as_bytes()).as_slice());
            let text = String::from_utf8_lossy(&v);
            assert!(!text.contains(opened.id.as_str()), "the id is not stored");
        }
        assert_eq!(store.get(&opened.id, 1_000).unwrap(), Some(opened.session));
    }

    #[test]
    fn two_sessions_get_different_ids_and_csrf_tokens() {
        let (_dir, _db, store) = store();
        let a = store.create("alice", "tok1", 1).unwrap();
        let b = store.create("alice", "tok1", 1).unwrap();
        assert_ne!(*a.id, *b.id);
        assert_ne!(a.session.csrf, b.session.csrf);
    }

    #[test]
    fn refuses_an_idle_session_and_deletes_it() {
        let (_dir, _db, store) = store();
        let opened = store.create("alice", "tok1", 0).unwrap();
        assert!(store.get(&opened.id, IDLE_MS - 1).unwrap().is_some());
        // Used just now (the touch above), so still alive one idle period after that.
        assert!(store.get(&opened.id, 2 * IDLE_MS - 2).unwrap().is_some());
        assert!(store.get(&opened.id, 4 * IDLE_MS).unwrap().is_none());
        assert!(
            store.get(&opened.id, 0).unwrap().is_none(),
            "deleted, not hidden"
        );
    }

    #[test]
    fn refuses_a_session_past_its_absolute_lifetime_however_often_used() {
        let (_dir, _db, store) = store();
        let opened = store.create("alice", "tok1", 0).unwrap();
        let mut now = 0;
        while now + IDLE_MS / 2 < ABSOLUTE_MS {
            now += IDLE_MS / 2;
            assert!(store.get(&opened.id, now).unwrap().is_some(), "at {now}");
        }
        assert!(store.get(&opened.id, ABSOLUTE_MS).unwrap().is_none());
    }

    #[test]
    fn sign_out_deletes_the_session() {
        let (_dir, _db, store) = store();
        let opened = store.create("alice", "tok1", 5).unwrap();
        store.delete(&opened.id).unwrap();
        assert!(store.get(&opened.id, 5).unwrap().is_none());
    }

    #[test]
    fn unknown_empty_and_oversized_cookies_are_no_session() {
        let (_dir, _db, store) = store();
        let opened = store.create("alice", "tok1", 5).unwrap();
        assert!(store.get("", 5).unwrap().is_none());
        assert!(store.get(&"a".repeat(10_000), 5).unwrap().is_none());
        let mut other = opened.id.to_string();
        other.replace_range(0..1, if other.starts_with('0') { "1" } else { "0" });
        assert!(store.get(&other, 5).unwrap().is_none());
    }

    #[test]
    fn csrf_token_must_match_exactly() {
        let (_dir, _db, store) = store();
        let s = store.create("alice", "tok1", 5).unwrap().session;
        assert!(csrf_matches(&s, Some(&s.csrf.clone())));
        assert!(!csrf_matches(&s, None));
        assert!(!csrf_matches(&s, Some("")));
        assert!(!csrf_matches(&s, Some(&s.csrf[..s.csrf.len() - 1])));
        assert!(!csrf_matches(&s, Some(&format!("{}0", s.csrf))));
        let mut flipped = s.csrf.clone().into_bytes();
        flipped[10] = if flipped[10] == b'a' { b'b' } else { b'a' };
        assert!(!csrf_matches(
            &s,
            Some(&String::from_utf8(flipped).unwrap())
        ));
        let other = store.create("alice", "tok1", 5).unwrap().session;
        assert!(!csrf_matches(&s, Some(&other.csrf)));
    }
}
