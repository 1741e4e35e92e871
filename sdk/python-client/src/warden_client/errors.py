"""The one exception the client raises."""

from __future__ import annotations

from typing import Any


class WardenError(Exception):
    """A request that did not succeed.

    `status` is the HTTP status (0 when no reply came: connection, TLS, timeout), `code`
    the server's stable error code (`unauthorized`, `forbidden`, `not_found`, `conflict`,
    …, or the client's own: `connection_failed`, `tls_unverified`,
    `tls_fingerprint_mismatch`, `timeout`, `too_large`) and `message` the server's
    sentence. It never carries a request body, so a secret sent in one cannot surface here.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def from_reply(cls, status: int, body: Any) -> WardenError:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or "error")
            message = str(error.get("message") or "")
        else:
            code, message = "error", "the server's reply carried no error body"
        return cls(status, code, message)

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "no reply"
        return f"{where} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"WardenError(status={self.status}, code={self.code!r}, message={self.message!r})"
