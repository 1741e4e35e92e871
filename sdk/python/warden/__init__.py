"""Helpers for writing Warden tasks in Python (built with componentize-py).

The WIT contract in ``sdk/wit/warden.wit`` is the real SDK; componentize-py generates the
raw bindings (``wit_world``) from it at build time. This package wraps them so a task reads
like ordinary Python: inputs are plain values, host errors are exceptions, and the task is
an ordinary function.

A task never sees a secret: :func:`credentials.acquire` returns a *handle*, which is passed
back to :mod:`ssh` and :mod:`transfer` calls; the host authenticates, checks the grant,
redacts and audits.

Example (``app.py``)::

    from warden import entrypoint, params, log, credentials, ssh

    def run() -> str:
        cred = credentials.acquire(params.text("credential"))
        out = ssh.exec(params.text("target"), cred, "uname -a")
        log.info("ran uname")
        return out.stdout_text().strip()

    WitWorld = entrypoint(run)

Build it with::

    componentize-py -d sdk/wit -w task componentize -p sdk/python -p . app -o task.wasm
"""

from typing import Callable

from componentize_py_types import Err

from . import credentials, log, params, ssh, transfer
from .errors import (
    AuthFailed,
    ConnectionRefused,
    Denied,
    HostKeyMismatch,
    Internal,
    InvalidArgument,
    NotFound,
    Remote,
    Timeout,
    Unavailable,
    Unreachable,
    WardenError,
)

__all__ = [
    "entrypoint",
    "TaskFailed",
    "credentials",
    "log",
    "params",
    "ssh",
    "transfer",
    "WardenError",
    "Denied",
    "NotFound",
    "InvalidArgument",
    "Unavailable",
    "Unreachable",
    "ConnectionRefused",
    "HostKeyMismatch",
    "AuthFailed",
    "Timeout",
    "Remote",
    "Internal",
]


class TaskFailed(Exception):
    """Raise this (or any exception) from a task to end the run as failed with its message."""


def entrypoint(run: Callable[[], str]) -> type:
    """Turns a ``run() -> str`` function into the ``WitWorld`` class componentize-py exports.

    The function's return value becomes the run's result. Any exception ends the run as
    failed, with the exception's message as the reason (a :class:`WardenError` keeps the
    host's kind, e.g. ``denied: ...``).
    """

    class WitWorld:
        def run(self) -> str:
            try:
                result = run()
            except WardenError as e:
                raise Err(str(e))
            except Exception as e:  # noqa: BLE001 - every failure becomes the run's error
                raise Err(f"{type(e).__name__}: {e}")
            if not isinstance(result, str):
                raise Err(f"task returned {type(result).__name__}, expected str")
            return result

    return WitWorld
