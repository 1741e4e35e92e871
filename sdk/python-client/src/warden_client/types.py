"""The server's replies as typed, read-only records.

Each keeps the fields a caller usually needs, typed, and the whole reply in `raw` (the
server may add fields; a newer server never breaks an older client). No record holds a
secret: the shown-once API token of [`IssuedToken`] and the enrollment token of
[`User`] are left out of their repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

JsonObject = dict[str, Any]

#: Run states after which a run never changes again.
FINAL_STATES = frozenset(
    {"succeeded", "failed", "cancelled", "timed-out", "denied", "interrupted", "lost"}
)


def _raw(value: Any) -> JsonObject:
    if not isinstance(value, dict):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Module:
    """A signed task module on the server."""

    digest: str
    name: str
    version: str
    publisher: str
    retired: bool
    manifest: JsonObject
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> Module:
        r = _raw(value)
        return cls(
            r["digest"], r["name"], r["version"], r.get("publisher", ""),
            bool(r.get("retired", False)), r.get("manifest") or {}, r,
        )


@dataclass(frozen=True)
class Process:
    """A process: its module (or workflow), grant, default inputs and sharing."""

    id: str
    name: str
    owner: str
    module_digest: str
    module: str
    grant: JsonObject
    default_inputs: JsonObject
    shared_users: list[str]
    shared_roles: list[str]
    required_approvals: int
    revision: int
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> Process:
        r = _raw(value)
        return cls(
            r["id"], r["name"], r.get("owner", ""), r.get("module_digest", ""),
            r.get("module", ""), r.get("grant") or {}, r.get("default_inputs") or {},
            list(r.get("shared_users") or []), list(r.get("shared_roles") or []),
            int(r.get("required_approvals", 0)), int(r.get("revision", 0)), r,
        )


@dataclass(frozen=True)
class Run:
    """One run of a process."""

    id: str
    process_id: str
    actor: str
    state: str
    inputs: JsonObject
    result: str | None
    error: str | None
    created_ms: int
    finished_ms: int | None
    events: list[JsonObject]
    stdout: str
    stderr: str
    raw: JsonObject = field(repr=False)

    @property
    def finished(self) -> bool:
        """Whether the run reached a final state."""
        return self.state in FINAL_STATES

    @classmethod
    def from_json(cls, value: Any) -> Run:
        r = _raw(value)
        return cls(
            r["id"], r.get("process_id", ""), r.get("actor", ""), r["state"],
            r.get("inputs") or {}, r.get("result"), r.get("error"),
            int(r.get("created_ms", 0)), r.get("finished_ms"), list(r.get("events") or []),
            r.get("stdout", ""), r.get("stderr", ""), r,
        )


@dataclass(frozen=True)
class RunEvent:
    """One server-sent event of a run: `log` (a task event), `step` (a workflow step),
    `lagged` (events were dropped) or `state` (the final state; the last event)."""

    event: str
    data: Any


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, and the cursor of the next (None on the last page)."""

    items: list[T]
    next: str | None


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver sees before approving a run, and the binding an approval is for."""

    run_id: str
    state: str
    requester: str
    process_id: str
    module_digest: str
    inputs: JsonObject
    required_approvals: int
    binding: str | None
    blocked: str | None
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> ApprovalRequest:
        r = _raw(value)
        return cls(
            r["run_id"], r["state"], r.get("requester", ""), r.get("process_id", ""),
            r.get("module_digest", ""), r.get("inputs") or {},
            int(r.get("required_approvals", 0)), r.get("binding"), r.get("blocked"), r,
        )


@dataclass(frozen=True)
class ApproveOutcome:
    """The request after an approval, and whether that approval started the run."""

    request: ApprovalRequest
    started: bool

    @classmethod
    def from_json(cls, value: Any) -> ApproveOutcome:
        r = _raw(value)
        return cls(ApprovalRequest.from_json(r["request"]), bool(r.get("started", False)))


@dataclass(frozen=True)
class AuditRecord:
    """One record of the hash-chained audit log."""

    seq: int
    time_ms: int
    actor: str
    action: str
    run_id: str | None
    target: str | None
    credential: str | None
    decision: Any
    outcome: str
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> AuditRecord:
        r = _raw(value)
        e = r  # the entry's fields are flattened into the record
        return cls(
            int(r["seq"]), int(r.get("time_ms", 0)), e.get("actor", ""), e.get("action", ""),
            e.get("run_id"), e.get("target"), e.get("credential"), e.get("decision"),
            e.get("outcome", ""), r,
        )


@dataclass(frozen=True)
class AuditVerdict:
    """The result of re-walking the audit chain."""

    ok: bool
    count: int | None
    error: str | None
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> AuditVerdict:
        r = _raw(value)
        return cls(bool(r.get("ok")), r.get("count"), r.get("error"), r)


@dataclass(frozen=True)
class Credential:
    """A credential's metadata; the API never returns a secret."""

    name: str
    username: str
    kind: str
    admin: bool
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> Credential:
        r = _raw(value)
        return cls(r["name"], r.get("username", ""), str(r.get("kind", "")), bool(r.get("admin")), r)


@dataclass(frozen=True)
class Target:
    """An SSH endpoint with its pinned host key."""

    name: str
    address: str
    port: int
    host_key: str
    zone: str
    tags: list[str]
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> Target:
        r = _raw(value)
        return cls(
            r["name"], r.get("address", ""), int(r.get("port", 22)), r.get("host_key", ""),
            r.get("zone", ""), list(r.get("tags") or []), r,
        )


@dataclass(frozen=True)
class User:
    """A user; `enrollment_token` is set (shown once) when created with `enroll=True`."""

    name: str
    roles: list[str]
    disabled: bool
    enrollment_token: str | None = field(default=None, repr=False)
    raw: JsonObject = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, value: Any) -> User:
        r = _raw(value)
        enrollment = r.get("enrollment") or {}
        return cls(
            r["name"], list(r.get("roles") or []), bool(r.get("disabled", False)),
            enrollment.get("token"), r,
        )


@dataclass(frozen=True)
class TokenInfo:
    """An API token's metadata (never the token)."""

    id: str
    user: str
    label: str
    kind: str
    expires_ms: int
    raw: JsonObject = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> TokenInfo:
        r = _raw(value)
        return cls(
            r["id"], r.get("user", ""), r.get("label", ""), str(r.get("kind", "")),
            int(r.get("expires_ms", 0)), r,
        )


@dataclass(frozen=True)
class IssuedToken:
    """A token just minted: `token` is shown this once (and never in a repr)."""

    id: str
    user: str
    kind: str
    expires_ms: int
    token: str = field(repr=False)

    @classmethod
    def from_json(cls, value: Any) -> IssuedToken:
        r = _raw(value)
        return cls(r["id"], r.get("user", ""), str(r.get("kind", "")), int(r.get("expires_ms", 0)), r["token"])
