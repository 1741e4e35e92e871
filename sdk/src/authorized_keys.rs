//! Reading `authorized_keys` lines: which key a line holds, so a task can tell whether a key
//! is already installed without comparing whole lines (options and comments differ).

/// A key's type and base64 blob, e.g. `("ssh-ed25519", "AAAAC3…")`: what identifies it.
pub type KeyId<'a> = (&'a str, &'a str);

/// The key a single-line `public_key` input holds, or an error naming the input.
///
/// ```
/// use warden_sdk::authorized_keys::parse_public_key;
/// let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG me@host";
/// assert_eq!(parse_public_key(line).unwrap().0, "ssh-ed25519");
/// assert!(parse_public_key("not a key").is_err());
/// assert!(parse_public_key(&format!("{line}\n{line}")).is_err());
/// ```
pub fn parse_public_key(line: &str) -> Result<KeyId<'_>, String> {
    if line.contains(['\n', '\r', '\0']) {
        return Err("input `public_key` must be a single authorized_keys line".to_string());
    }
    key_id(line).ok_or_else(|| {
        "input `public_key` must hold a key type and base64 key (e.g. `ssh-ed25519 AAAA… me`)"
            .to_string()
    })
}

/// Finds the key type and blob in an authorized_keys line, skipping any leading options
/// (`restrict,from="10.0.0.0/8" ssh-ed25519 AAAA… comment`).
pub fn key_id(line: &str) -> Option<KeyId<'_>> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields.windows(2).find_map(|pair| {
        let (kind, blob) = (pair[0], pair[1]);
        (is_key_type(kind) && is_base64(blob)).then_some((kind, blob))
    })
}

fn is_key_type(field: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-sha2-"]
        .iter()
        .any(|p| field.starts_with(p))
}

fn is_base64(field: &str) -> bool {
    field.len() >= 16
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}
