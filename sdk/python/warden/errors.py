"""Host errors as Python exceptions: one class per case of the WIT ``error`` variant."""

from componentize_py_types import Err
from wit_world.imports import types


class WardenError(Exception):
    """A host function failed. ``kind`` is the WIT case (``denied``, ``not-found``, ...)."""

    kind = "error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class Denied(WardenError):
    """The grant, manifest or a policy does not allow the call (audited)."""

    kind = "denied"


class NotFound(WardenError):
    """The credential, target, input or remote file does not exist."""

    kind = "not-found"


class InvalidArgument(WardenError):
    """An argument is malformed."""

    kind = "invalid-argument"


class Unavailable(WardenError):
    """This host does not offer the capability."""

    kind = "unavailable"


class Unreachable(WardenError):
    """The target could not be reached."""

    kind = "unreachable"


class ConnectionRefused(WardenError):
    """The target refused the TCP connection."""

    kind = "connection-refused"


class HostKeyMismatch(WardenError):
    """The target's SSH host key does not match its pinned key."""

    kind = "host-key-mismatch"


class AuthFailed(WardenError):
    """The target rejected the credential."""

    kind = "auth-failed"


class Timeout(WardenError):
    """The operation did not finish in time."""

    kind = "timeout"


class Remote(WardenError):
    """The target answered with an error."""

    kind = "remote"


class Internal(WardenError):
    """Something failed inside the host."""

    kind = "internal"


_BY_CASE = {
    types.Error_Denied: Denied,
    types.Error_NotFound: NotFound,
    types.Error_InvalidArgument: InvalidArgument,
    types.Error_Unavailable: Unavailable,
    types.Error_Unreachable: Unreachable,
    types.Error_ConnectionRefused: ConnectionRefused,
    types.Error_HostKeyMismatch: HostKeyMismatch,
    types.Error_AuthFailed: AuthFailed,
    types.Error_Timeout: Timeout,
    types.Error_Remote: Remote,
    types.Error_Internal: Internal,
}


def from_wit(error) -> WardenError:
    """The exception for a WIT ``error`` value."""
    cls = _BY_CASE.get(type(error), Internal)
    return cls(getattr(error, "value", str(error)))


def call(function, *args):
    """Calls a raw binding, turning its ``Err(error)`` into a :class:`WardenError`."""
    try:
        return function(*args)
    except Err as e:
        raise from_wit(e.value) from None
