//! Targets: the endpoints a run may reach over SSH, each with a pinned host key.
//!
//! A target is stored only after its host key parses as an OpenSSH public key; the SSH layer
//! later refuses any server that offers a different key. This is what stops a
//! man-in-the-middle (or a re-imaged host) from receiving credentials: trust is pinned by an
//! administrator (`warden target scan` prints the key, the admin checks and adds it), never
//! learned on first use.
//!
//! Names, zones and tags come from administrators and reach logs, audit records and storage keys,
//! so they are restricted to a small character set and bounded in length.

use std::net::{Ipv4Addr, Ipv6Addr};

use russh::keys::{HashAlg, PublicKey};
use serde::{Deserialize, Serialize};

/// The table of targets (key: target name, value: JSON [`Target`]).
pub const TABLE: crate::store::TableDef = crate::store::TableDef {
    name: "targets",
    columns: &[],
    columns_of: None,
};

/// Default SSH port when an address omits one.
pub const DEFAULT_PORT: u16 = 22;

/// Default zone for targets added without `--zone`.
pub const DEFAULT_ZONE: &str = "default";

/// Longest name, zone or tag. Bounds storage keys and audit lines an admin request controls.
pub const MAX_NAME_LEN: usize = 64;

/// Most tags per target. Bounds the stored record and policy matching work per target.
pub const MAX_TAGS: usize = 32;

/// Longest host name (DNS limit). Bounds the stored record and resolver input.
pub const MAX_HOST_LEN: usize = 253;

/// Longest host key line accepted. An RSA-16384 key line is about 2.8 KB; anything larger is
/// not a host key and would only bloat the store.
pub const MAX_HOST_KEY_LEN: usize = 8 * 1024;

/// Errors from target validation and storage.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target name {0:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    #[error("invalid zone {0:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    InvalidZone(String),
    #[error("invalid tag {0:?}: use 1-64 of A-Z a-z 0-9 . _ -")]
    InvalidTag(String),
    #[error("too many tags ({0}); at most {MAX_TAGS}")]
    TooManyTags(usize),
    #[error("invalid address {0:?}: expected HOST[:PORT] or [IPv6][:PORT]")]
    InvalidAddress(String),
    #[error("invalid host key: {0}")]
    InvalidHostKey(String),
    #[error("target {0:?} already exists")]
    Duplicate(String),
    #[error("target {0:?} not found")]
    NotFound(String),
    #[error("stored target {0:?} is corrupt")]
    Corrupt(String),
    #[error("target storage failed: {0}")]
    Storage(#[from] crate::store::StoreError),
}

/// An SSH endpoint with its pinned host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Target {
    pub name: String,
    /// Host name or IP address (IPv6 without brackets).
    pub address: String,
    pub port: u16,
    /// Pinned OpenSSH public key line, e.g. `ssh-ed25519 AAAA…` (comment dropped).
    pub host_key: String,
    #[serde(default = "default_zone")]
    pub zone: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_zone() -> String {
    DEFAULT_ZONE.to_string()
}

impl Target {
    /// Builds a validated target from CLI-style input (`address` is `HOST[:PORT]`).
    /// The host key is normalised to `algorithm base64` (comment dropped).
    pub fn new(
        name: &str,
        address: &str,
        host_key: &str,
        zone: Option<&str>,
        tags: Vec<String>,
    ) -> Result<Self, TargetError> {
        let (address, port) = parse_address(address)?;
        let target = Target {
            name: name.to_string(),
            address,
            port,
            host_key: normalize_host_key(host_key)?,
            zone: zone.unwrap_or(DEFAULT_ZONE).to_string(),
            tags,
        };
        target.validate()?;
        Ok(target)
    }

    /// Checks every field; called before storing and after loading.
    pub fn validate(&self) -> Result<(), TargetError> {
        if !is_valid_label(&self.name) {
            return Err(TargetError::InvalidName(self.name.clone()));
        }
        if !is_valid_label(&self.zone) {
            return Err(TargetError::InvalidZone(self.zone.clone()));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(TargetError::TooManyTags(self.tags.len()));
        }
        if let Some(tag) = self.tags.iter().find(|t| !is_valid_label(t)) {
            return Err(TargetError::InvalidTag(tag.clone()));
        }
        if self.port == 0 || !is_valid_host(&self.address) {
            return Err(TargetError::InvalidAddress(self.address.clone()));
        }
        parse_host_key(&self.host_key).map(|_| ())
    }

    /// The pinned host key, parsed.
    pub fn public_host_key(&self) -> Result<PublicKey, TargetError> {
        parse_host_key(&self.host_key)
    }

    /// `address:port` as a socket address string (IPv6 bracketed).
    pub fn socket_addr_string(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

/// True for 1..=64 characters of `[A-Za-z0-9._-]`.
pub fn is_valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn is_valid_host(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
        return true;
    }
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
}

/// Splits `host[:port]` (IPv6 as `[addr]` or `[addr]:port`, or a bare IPv6 address)
/// into host and port; the port defaults to 22.
pub fn parse_address(spec: &str) -> Result<(String, u16), TargetError> {
    let bad = || TargetError::InvalidAddress(spec.to_string());
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else if spec.parse::<Ipv6Addr>().is_ok() {
        (spec, None)
    } else {
        match spec.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (spec, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    if !is_valid_host(host) {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// Parses an OpenSSH public key line (`algorithm base64 [comment]`).
pub fn parse_host_key(line: &str) -> Result<PublicKey, TargetError> {
    if line.len() > MAX_HOST_KEY_LEN {
        return Err(TargetError::InvalidHostKey("key line too long".into()));
    }
    PublicKey::from_openssh(line.trim())
        .map_err(|e| TargetError::InvalidHostKey(format!("not an OpenSSH public key ({e})")))
}

/// Re-encodes a host key line without its comment, so stored pins compare byte for byte.
pub fn normalize_host_key(line: &str) -> Result<String, TargetError> {
    let key = PublicKey::new(parse_host_key(line)?.key_data().clone(), "");
    key.to_openssh()
        .map(|s| s.trim_end().to_string())
        .map_err(|e| TargetError::InvalidHostKey(e.to_string()))
}

/// SHA-256 fingerprint of a host key line, formatted like OpenSSH (`SHA256:base64`).
pub fn fingerprint(host_key_line: &str) -> Result<String, TargetError> {
    Ok(key_fingerprint(&parse_host_key(host_key_line)?))
}

/// SHA-256 fingerprint of a parsed key, formatted like OpenSSH (`SHA256:base64`).
pub fn key_fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Targets persisted in the table [`TABLE`].
#[derive(Clone)]
pub struct TargetStore {
    tree: crate::store::Table,
}

impl TargetStore {
    pub fn open(db: &crate::store::Database) -> Result<Self, TargetError> {
        Ok(TargetStore {
            tree: db.table(&TABLE),
        })
    }

    /// Stores a new target; refuses a name that already exists (re-pinning a key is an
    /// explicit remove + add, never a silent overwrite). Durable when this returns.
    pub fn add(&self, target: Target) -> Result<(), TargetError> {
        target.validate()?;
        let value =
            serde_json::to_vec(&target).map_err(|_| TargetError::Corrupt(target.name.clone()))?;
        if !self.tree.insert_new(target.name.as_bytes(), value)? {
            return Err(TargetError::Duplicate(target.name));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Option<Target>, TargetError> {
        if !is_valid_label(name) {
            return Ok(None);
        }
        self.tree
            .get(name.as_bytes())?
            .map(|v| decode(name, &v))
            .transpose()
    }

    /// The one zone the targets `names` are in ([`DEFAULT_ZONE`] for none; names that are not
    /// registered are left to other checks). A run executes in one zone, on one bridge, so a
    /// grant whose targets span zones is refused with the zones it spans.
    pub fn zone_of<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<String, String> {
        let mut zones = std::collections::BTreeMap::<String, String>::new();
        for name in names {
            match self.get(name) {
                Ok(Some(target)) => {
                    zones.entry(target.zone).or_insert_with(|| name.clone());
                }
                Ok(None) => {}
                Err(e) => return Err(format!("reading target '{name}': {e}")),
            }
        }
        match zones.len() {
            0 => Ok(DEFAULT_ZONE.to_string()),
            1 => Ok(zones
                .into_keys()
                .next()
                .unwrap_or_else(|| DEFAULT_ZONE.to_string())),
            _ => Err(format!(
                "the grant's targets span zones {} (e.g. {}); a run executes in one zone, \
                 on a bridge of that zone: split the process by zone",
                zones.keys().cloned().collect::<Vec<_>>().join(", "),
                zones
                    .iter()
                    .map(|(zone, target)| format!("'{target}' in {zone}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// All targets, ordered by name.
    pub fn list(&self) -> Result<Vec<Target>, TargetError> {
        self.tree
            .all()?
            .into_iter()
            .map(|(k, v)| decode(&String::from_utf8_lossy(&k), &v))
            .collect()
    }

    /// Deletes a target; `NotFound` if it did not exist.
    pub fn remove(&self, name: &str) -> Result<(), TargetError> {
        if !self.tree.remove(name.as_bytes())? {
            return Err(TargetError::NotFound(name.to_string()));
        }
        Ok(())
    }
}

fn decode(name: &str, bytes: &[u8]) -> Result<Target, TargetError> {
    let target: Target =
        serde_json::from_slice(bytes).map_err(|_| TargetError::Corrupt(name.to_string()))?;
    target
        .validate()
        .map_err(|_| TargetError::Corrupt(name.to_string()))?;
    if target.name != name {
        return Err(TargetError::Corrupt(name.to_string()));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};

    fn key_line() -> String {
        let key =
            PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519).unwrap();
        key.public_key().to_openssh().unwrap()
    }

    fn target(name: &str) -> Target {
        Target::new(name, "10.0.0.1:2222", &key_line(), None, vec!["web".into()]).unwrap()
    }

    fn store() -> (tempfile::TempDir, sled::Db, TargetStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let store = TargetStore::open(&crate::store::sled_db(&db)).unwrap();
        (dir, db, store)
    }

    #[test]
    fn parses_host_with_and_without_port() {
        assert_eq!(parse_address("web1").unwrap(), ("web1".into(), 22));
        assert_eq!(
            parse_address("web1.example.com:2222").unwrap(),
            ("web1.example.com".into(), 2222)
        );
        assert_eq!(
            parse_address("10.1.2.3:22").unwrap(),
            ("10.1.2.3".into(), 22)
        );
    }

    #[test]
    fn parses_bracketed_and_bare_ipv6() {
        assert_eq!(parse_address("[::1]:2200").unwrap(), ("::1".into(), 2200));
        assert_eq!(parse_address("[fe80::1]").unwrap(), ("fe80::1".into(), 22));
        assert_eq!(
            parse_address("2001:db8::5").unwrap(),
            ("2001:db8::5".into(), 22)
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            ":22",
            "host:",
            "host:0",
            "host:65536",
            "host:x",
            "[::1",
            "[::1]x",
            "[nothost]:22",
            "bad host",
            "-host",
            "host;rm",
            "a:b:c",
        ] {
            assert!(
                matches!(parse_address(bad), Err(TargetError::InvalidAddress(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn rejects_bad_names_zones_and_tags() {
        let k = key_line();
        assert!(matches!(
            Target::new("", "h", &k, None, vec![]),
            Err(TargetError::InvalidName(_))
        ));
        assert!(matches!(
            Target::new(&"a".repeat(65), "h", &k, None, vec![]),
            Err(TargetError::InvalidName(_))
        ));
        assert!(matches!(
            Target::new("a/b", "h", &k, None, vec![]),
            Err(TargetError::InvalidName(_))
        ));
        assert!(matches!(
            Target::new("a", "h", &k, Some("z one"), vec![]),
            Err(TargetError::InvalidZone(_))
        ));
        assert!(matches!(
            Target::new("a", "h", &k, None, vec!["ok".into(), "no!".into()]),
            Err(TargetError::InvalidTag(_))
        ));
        let many = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert!(matches!(
            Target::new("a", "h", &k, None, many),
            Err(TargetError::TooManyTags(_))
        ));
        assert!(Target::new(&"a".repeat(64), "h", &k, None, vec![]).is_ok());
    }

    #[test]
    fn rejects_host_key_that_is_not_an_openssh_key() {
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 AAAAnotbase64!!",
            "hello world",
        ] {
            assert!(matches!(
                Target::new("a", "h", bad, None, vec![]),
                Err(TargetError::InvalidHostKey(_))
            ));
        }
        let huge = format!("ssh-ed25519 {}", "A".repeat(MAX_HOST_KEY_LEN));
        assert!(matches!(
            parse_host_key(&huge),
            Err(TargetError::InvalidHostKey(_))
        ));
    }

    #[test]
    fn normalizes_host_key_by_dropping_comment() {
        let line = key_line();
        let with_comment = format!("  {line} root@somewhere \n");
        let t = Target::new("a", "h", &with_comment, None, vec![]).unwrap();
        assert_eq!(t.host_key, line);
        assert_eq!(t.zone, DEFAULT_ZONE);
    }

    #[test]
    fn fingerprint_matches_openssh_format() {
        // Known vector: `ssh-keygen -lf` on this key prints this fingerprint.
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJbeele2hfKncvVgINLtBIAEavJD2CpWE4l+zvgd1r7f x";
        assert_eq!(
            fingerprint(line).unwrap(),
            "SHA256:RVa5Z+BZgwr6bRunwYPnRm0iZIC9EfjfFmkkXWee2C8"
        );
        assert!(fingerprint("garbage").is_err());
    }

    #[test]
    fn stores_gets_lists_and_removes() {
        let (_dir, _db, store) = store();
        let (a, b) = (target("b-host"), target("a-host"));
        store.add(a.clone()).unwrap();
        store.add(b.clone()).unwrap();
        assert_eq!(store.get("b-host").unwrap(), Some(a.clone()));
        assert_eq!(store.get("missing").unwrap(), None);
        assert_eq!(store.get("../etc").unwrap(), None);
        let names: Vec<_> = store.list().unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["a-host", "b-host"]);
        store.remove("a-host").unwrap();
        assert!(matches!(
            store.remove("a-host"),
            Err(TargetError::NotFound(_))
        ));
        assert_eq!(store.list().unwrap(), vec![a]);
    }

    #[test]
    fn refuses_duplicate_name_and_keeps_original_key() {
        let (_dir, _db, store) = store();
        let original = target("web1");
        store.add(original.clone()).unwrap();
        let err = store.add(target("web1")).unwrap_err();
        assert!(matches!(err, TargetError::Duplicate(n) if n == "web1"));
        assert_eq!(store.get("web1").unwrap(), Some(original));
    }

    #[test]
    fn refuses_to_store_invalid_target() {
        let (_dir, _db, store) = store();
        let mut t = target("web1");
        t.host_key = "ssh-ed25519 broken".into();
        assert!(matches!(store.add(t), Err(TargetError::InvalidHostKey(_))));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn reports_corrupt_record_instead_of_using_it() {
        let (_dir, db, store) = store();
        db.open_tree(TABLE.name)
            .unwrap()
            .insert("web1", b"{not json".to_vec())
            .unwrap();
        assert!(matches!(store.get("web1"), Err(TargetError::Corrupt(_))));
        let mut renamed = target("other");
        renamed.name = "other".into();
        let bytes = serde_json::to_vec(&renamed).unwrap();
        db.open_tree(TABLE.name)
            .unwrap()
            .insert("web2", bytes)
            .unwrap();
        assert!(matches!(store.get("web2"), Err(TargetError::Corrupt(_))));
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = target("web1");
        {
            let db = sled::open(dir.path()).unwrap();
            TargetStore::open(&crate::store::sled_db(&db))
                .unwrap()
                .add(t.clone())
                .unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        assert_eq!(
            TargetStore::open(&crate::store::sled_db(&db))
                .unwrap()
                .get("web1")
                .unwrap(),
            Some(t)
        );
    }

    #[test]
    fn socket_addr_brackets_ipv6() {
        let mut t = target("a");
        assert_eq!(t.socket_addr_string(), "10.0.0.1:2222");
        t.address = "::1".into();
        assert_eq!(t.socket_addr_string(), "[::1]:2222");
    }
}
