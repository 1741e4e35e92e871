"""Files on targets over SFTP, limited to the path prefixes the run's grant names."""

from wit_world.imports import transfer as _raw

from .credentials import Credential
from .errors import call


def upload(target: str, credential: Credential, path: str, contents: bytes, mode: int = 0o644) -> int:
    """Writes ``contents`` to the absolute ``path``; returns the bytes written."""
    return call(_raw.upload, target, credential, path, contents, mode)


def download(target: str, credential: Credential, path: str) -> bytes:
    """Reads the whole file at the absolute ``path`` (size capped by the host)."""
    return bytes(call(_raw.download, target, credential, path))
