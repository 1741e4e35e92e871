"""Credential handles. A handle names a secret in the vault; it never holds the secret."""

from wit_world.imports import credentials as _raw

from .errors import call

Credential = _raw.Credential
CredentialKind = _raw.CredentialKind


def acquire(name: str) -> Credential:
    """A handle to credential ``name``; raises Denied / NotFound."""
    return call(_raw.acquire, name)
