//! The secrets a rotation handles: generating the new one, reading stored ones as text and
//! as SSH credentials, and the public line of a stored key.
//!
//! Threat: a secret that lingers in memory or reaches a log. Every secret here lives in a
//! [`Zeroizing`] buffer or a [`SecretString`]; every secret read from the vault is
//! registered with the redactor before it is used.

use std::sync::Arc;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey, PublicKey, decode_secret_key};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::redact::Redactor;
use crate::ssh::{SshAuth, SshCredential};
use crate::vault::password::{self, PasswordPolicy};
use crate::vault::{CredentialKind, Secret, Vault};

use super::{RotationError, internal, vault_error};

/// The freshly generated secret and what the target needs of it.
pub(super) struct NewSecret {
    /// The secret as the vault stores it: the password, or the OpenSSH private key text.
    pub stored: Zeroizing<String>,
    /// For a key: the `ssh-ed25519 AAAA… comment` line for `authorized_keys`.
    pub public_line: Option<String>,
}

/// Generates the new secret for a credential of `kind` (`policy` is the effective one).
pub(super) fn generate(
    kind: CredentialKind,
    policy: &PasswordPolicy,
    account: &str,
) -> Result<NewSecret, RotationError> {
    match kind {
        CredentialKind::Password => {
            let bytes = password::generate(policy)?;
            // Printable ASCII by construction.
            let text = String::from_utf8(bytes.to_vec())
                .map_err(|_| RotationError::Internal("generated password is not text".into()))?;
            Ok(NewSecret {
                stored: Zeroizing::new(text),
                public_line: None,
            })
        }
        CredentialKind::SshKey => {
            let mut key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
                .map_err(|e| internal("generating an ed25519 key", e))?;
            key.set_comment(format!("warden:{account}"));
            let stored = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| internal("encoding the new key", e))?;
            let public_line = key
                .public_key()
                .to_openssh()
                .map_err(|e| internal("encoding the new public key", e))?;
            Ok(NewSecret {
                stored: Zeroizing::new(stored.to_string()),
                public_line: Some(public_line),
            })
        }
    }
}

/// `ssh-ed25519 AAAA…` of a stored private key (without comment).
pub(super) fn public_line_of(secret: &Secret) -> Result<String, RotationError> {
    let text = secret_text(secret)?;
    let key = decode_secret_key(text.as_str(), None).map_err(|_| {
        RotationError::InvalidArgument(
            "the credential's secret is not an unencrypted OpenSSH key".into(),
        )
    })?;
    PublicKey::new(key.public_key().key_data().clone(), "")
        .to_openssh()
        .map_err(|e| internal("encoding the old public key", e))
}

pub(super) fn secret_text(secret: &Secret) -> Result<Zeroizing<String>, RotationError> {
    String::from_utf8(secret.expose().to_vec())
        .map(Zeroizing::new)
        .map_err(|_| {
            RotationError::InvalidArgument("the credential's secret is not UTF-8 text".into())
        })
}

pub(super) fn auth_of(kind: CredentialKind, secret: &str) -> SshAuth {
    let secret = SecretString::from(secret.to_string());
    match kind {
        CredentialKind::Password => SshAuth::Password(secret),
        CredentialKind::SshKey => SshAuth::PrivateKey(secret),
    }
}

/// `chpasswd` reads `user:password` lines: a colon or whitespace in the name would change
/// which account it sets.
pub(super) fn check_username(username: &str) -> Result<(), RotationError> {
    if username.is_empty()
        || username
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(RotationError::InvalidArgument(
            "the credential's username cannot be rotated (empty, or has ':' or whitespace)".into(),
        ));
    }
    Ok(())
}

/// Builds the SSH credential for the current version of vault credential `name`,
/// registering the secret with `redactor` first.
pub fn vault_credential(
    vault: &Vault,
    redactor: &Redactor,
    name: &str,
) -> Result<Arc<SshCredential>, RotationError> {
    let info = match vault.info(name) {
        Ok(Some(info)) => info,
        Ok(None) => {
            return Err(RotationError::NotFound(format!(
                "no credential named '{name}'"
            )));
        }
        Err(e) => return Err(vault_error("looking up the credential", e)),
    };
    let secret = vault
        .secret(name)
        .map_err(|e| vault_error("reading the credential", e))?;
    redactor
        .add_secret(secret.expose())
        .map_err(|e| internal("registering the secret for redaction", e))?;
    let text = secret_text(&secret)?;
    Ok(Arc::new(SshCredential {
        id: info.name,
        username: info.username,
        auth: auth_of(info.kind, text.as_str()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_usernames_chpasswd_would_misread() {
        assert!(check_username("alice").is_ok());
        for bad in ["", "a:b", "a b", "a\nb", "a\tb"] {
            assert!(
                matches!(check_username(bad), Err(RotationError::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn generated_key_round_trips_to_its_public_line() {
        let new = generate(CredentialKind::SshKey, &PasswordPolicy::default(), "acct").unwrap();
        let line = new.public_line.clone().unwrap();
        assert!(line.starts_with("ssh-ed25519 ") && line.ends_with(" warden:acct"));
        let stored = Secret::from_bytes(new.stored.as_bytes().to_vec());
        let bare = public_line_of(&stored).unwrap();
        assert!(line.starts_with(&bare), "{line} vs {bare}");
    }

    #[test]
    fn password_secret_follows_the_policy() {
        let policy = PasswordPolicy {
            length: 40,
            symbols: false,
            ..PasswordPolicy::default()
        };
        let new = generate(CredentialKind::Password, &policy, "acct").unwrap();
        assert_eq!(new.stored.len(), 40);
        assert!(new.stored.chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(new.public_line.is_none());
        let bad = PasswordPolicy {
            length: 4,
            ..policy
        };
        assert!(matches!(
            generate(CredentialKind::Password, &bad, "acct").err(),
            Some(RotationError::Policy(_))
        ));
    }
}
