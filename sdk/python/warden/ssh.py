"""Commands on targets over SSH (host key pinned, output capped and redacted by the host)."""

from dataclasses import dataclass
from typing import List, Optional, Union

from componentize_py_types import Ok
from wit_world.imports import ssh as _raw

from .credentials import Credential
from .errors import WardenError, call, from_wit


@dataclass
class Output:
    """What a finished command produced."""

    exit_status: Optional[int]
    exit_signal: Optional[str]
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_status == 0

    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def _options(sudo: bool, stdin: Optional[bytes], timeout_ms: Optional[int]):
    return _raw.ExecOptions(sudo=sudo, stdin=stdin, timeout_ms=timeout_ms)


def _output(raw) -> Output:
    return Output(
        raw.exit_status,
        raw.exit_signal,
        bytes(raw.stdout),
        bytes(raw.stderr),
        raw.stdout_truncated,
        raw.stderr_truncated,
    )


def exec(
    target: str,
    credential: Credential,
    command: str,
    *,
    sudo: bool = False,
    stdin: Optional[bytes] = None,
    timeout_ms: Optional[int] = None,
) -> Output:
    """Runs ``command`` on ``target``; raises a WardenError if it could not run at all."""
    raw = call(_raw.exec, target, credential, command, _options(sudo, stdin, timeout_ms))
    return _output(raw)


def exec_many(
    targets: List[str],
    credential: Credential,
    command: str,
    *,
    sudo: bool = False,
    stdin: Optional[bytes] = None,
    timeout_ms: Optional[int] = None,
) -> List["tuple[str, Union[Output, WardenError]]"]:
    """Runs ``command`` on every target at once; one (target, Output or WardenError) each."""
    results = _raw.exec_many(targets, credential, command, _options(sudo, stdin, timeout_ms))
    out = []
    for r in results:
        if isinstance(r.outcome, Ok):
            out.append((r.target, _output(r.outcome.value)))
        else:
            out.append((r.target, from_wit(r.outcome.value)))
    return out
