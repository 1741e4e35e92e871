//! Building command lines for [`crate::ssh::exec`] safely: quoting and account names.
//!
//! A command runs in the target's shell, so every value a task puts in one must be either
//! checked against a strict pattern or quoted (both, for defence in depth).

/// Quotes `s` for a POSIX shell: inside single quotes nothing is special, and a single quote
/// itself is written as `'\''`.
///
/// ```
/// use warden_sdk::shell::quote;
/// assert_eq!(quote("/home/al ice"), "'/home/al ice'");
/// assert_eq!(quote("it's;rm -rf /"), r"'it'\''s;rm -rf /'");
/// ```
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// True for a portable account or group name, `^[a-z_][a-z0-9_-]{0,31}$` (what `useradd`
/// accepts everywhere): no shell metacharacters, no leading `-` that a command could take for
/// an option.
///
/// ```
/// use warden_sdk::shell::is_user_name;
/// assert!(is_user_name("svc_backup-2"));
/// assert!(!is_user_name("-rf") && !is_user_name("Alice") && !is_user_name("a;b"));
/// assert!(!is_user_name("") && !is_user_name(&"a".repeat(33)));
/// ```
pub fn is_user_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    first_ok && rest_ok && name.len() <= 32
}
