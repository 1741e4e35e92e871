"""`Client`: the Warden HTTP API as typed methods, one attribute per resource.

    client = Client("https://warden.example:7070", token, fingerprint="sha256:…")
    run = client.runs.start(process.id, {"name": "Ada"})
    run = client.runs.wait(run.id, timeout=60)

Thin by design: each method is one route (`/v1/...`), its body built from keyword
arguments, its reply parsed into a record of `types`. The server checks everything again.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ._transport import Transport
from .errors import WardenError
from .types import (
    ApprovalRequest,
    ApproveOutcome,
    AuditRecord,
    AuditVerdict,
    Credential,
    IssuedToken,
    JsonObject,
    Module,
    Page,
    Process,
    Run,
    RunEvent,
    Target,
    TokenInfo,
    User,
)

#: Longest `runs.wait`/`runs.events` timeout accepted: a day. A caller that means "forever"
#: is told to loop, so no call blocks without bound.
MAX_WAIT_SECONDS = 86_400.0

#: The run's next-page cursor header, and the audit log's.
_NEXT_BEFORE = "x-warden-next-before"
_NEXT_AFTER = "x-warden-next-after"

#: `list` under another name, for the annotations of classes that have a `list` method.
_List = list


def _seg(value: str) -> str:
    """One path segment, percent-encoded (an id or a name never changes the route)."""
    return urllib.parse.quote(str(value), safe="")


def _check_wait(timeout: float) -> float:
    if not (0 < timeout <= MAX_WAIT_SECONDS):
        raise ValueError(f"timeout must be between 0 and {MAX_WAIT_SECONDS:.0f} seconds")
    return float(timeout)


class _Group:
    def __init__(self, http: Transport) -> None:
        self._http = http

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._http.base_url!r})"


class Modules(_Group):
    """Signed task modules (`/v1/modules`)."""

    def push(self, signed: str | os.PathLike[str] | bytes) -> Module:
        """Uploads a signed module (`warden sign` output: a path or its bytes), as
        `warden module push` does. The server verifies the signature first."""
        data = signed if isinstance(signed, bytes) else open(signed, "rb").read()
        reply = self._http.request("POST", "/v1/modules", raw=data, content_type="application/wasm")
        return Module.from_json(reply.body)

    def list(self) -> _List[Module]:
        return [Module.from_json(m) for m in self._http.request("GET", "/v1/modules").body]

    def get(self, digest: str) -> Module:
        return Module.from_json(self._http.request("GET", f"/v1/modules/{_seg(digest)}").body)

    def retire(self, digest: str) -> Module:
        """Retired modules start no new runs."""
        path = f"/v1/modules/{_seg(digest)}/retire"
        return Module.from_json(self._http.request("POST", path, json_body={}).body)


class Publishers(_Group):
    """Publisher keys the server trusts to sign modules (`/v1/publishers`)."""

    def list(self) -> _List[JsonObject]:
        return list(self._http.request("GET", "/v1/publishers").body)

    def trust(self, name: str, public_key_hex: str) -> JsonObject:
        body = {"name": name, "public_key": public_key_hex}
        return dict(self._http.request("POST", "/v1/publishers", json_body=body).body)

    def distrust(self, name: str) -> None:
        self._http.request("DELETE", f"/v1/publishers/{_seg(name)}")


#: The fields of a process that create and update take.
_PROCESS_FIELDS = (
    "name", "description", "module_digest", "workflow", "limits", "grant",
    "default_inputs", "required_approvals", "retry_on_lost",
)


class Processes(_Group):
    """Processes (`/v1/processes`)."""

    def create(
        self,
        name: str,
        *,
        module_digest: str = "",
        workflow: Mapping[str, Any] | None = None,
        grant: Mapping[str, Any] | None = None,
        default_inputs: Mapping[str, Any] | None = None,
        required_approvals: int = 0,
        description: str = "",
        retry_on_lost: bool = False,
    ) -> Process:
        """A process bound to one module (`module_digest`) or a `workflow` definition."""
        body: JsonObject = {
            "name": name,
            "description": description,
            "grant": dict(grant or {}),
            "default_inputs": dict(default_inputs or {}),
            "required_approvals": required_approvals,
            "retry_on_lost": retry_on_lost,
        }
        if workflow is not None:
            body["workflow"] = dict(workflow)
        else:
            body["module_digest"] = module_digest
        return Process.from_json(self._http.request("POST", "/v1/processes", json_body=body).body)

    def list(self) -> _List[Process]:
        return [Process.from_json(p) for p in self._http.request("GET", "/v1/processes").body]

    def get(self, process_id: str) -> Process:
        return Process.from_json(self._http.request("GET", f"/v1/processes/{_seg(process_id)}").body)

    def find(self, name_or_id: str) -> Process:
        """The visible process with this name or id (`not_found` if none)."""
        for p in self.list():
            if name_or_id in (p.id, p.name):
                return p
        raise WardenError(404, "not_found", f"no process '{name_or_id}' visible to you")

    def update(self, process_id: str, **changes: Any) -> Process:
        """Changes some fields (those `create` takes), keeping the others as they are; the
        process's revision goes up, so pending approvals of its runs no longer bind."""
        unknown = set(changes) - set(_PROCESS_FIELDS)
        if unknown:
            raise TypeError(f"unknown process fields: {', '.join(sorted(unknown))}")
        current = self.get(process_id).raw
        body = {k: current[k] for k in _PROCESS_FIELDS if current.get(k) is not None}
        body.update(changes)
        if body.get("workflow") is not None:
            body.pop("module_digest", None)
        path = f"/v1/processes/{_seg(process_id)}"
        return Process.from_json(self._http.request("PUT", path, json_body=body).body)

    def share(
        self, process_id: str, *, users: Sequence[str] = (), roles: Sequence[str] = ()
    ) -> Process:
        body = {"users": list(users), "roles": list(roles)}
        path = f"/v1/processes/{_seg(process_id)}/share"
        return Process.from_json(self._http.request("POST", path, json_body=body).body)

    def delete(self, process_id: str) -> None:
        self._http.request("DELETE", f"/v1/processes/{_seg(process_id)}")


class Runs(_Group):
    """Runs: start, read, list, wait, stream, cancel."""

    def start(self, process_id: str, inputs: Mapping[str, Any] | None = None) -> Run:
        """Starts a run (queued, running, or awaiting approval when the process needs it)."""
        path = f"/v1/processes/{_seg(process_id)}/runs"
        body = {"inputs": dict(inputs or {})}
        return Run.from_json(self._http.request("POST", path, json_body=body).body)

    def get(self, run_id: str) -> Run:
        return Run.from_json(self._http.request("GET", f"/v1/runs/{_seg(run_id)}").body)

    def list(
        self,
        *,
        process: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> Page[Run]:
        """One page of the runs you may see, newest first; `next` is the `before` of the
        next page."""
        query = {"process": process, "state": state, "limit": limit, "before": before}
        reply = self._http.request("GET", "/v1/runs", query=query)
        return Page([Run.from_json(r) for r in reply.body], reply.headers.get(_NEXT_BEFORE))

    def iter(
        self, *, process: str | None = None, state: str | None = None, page_size: int = 100
    ) -> Iterator[Run]:
        """Every run you may see, newest first, page after page."""
        before = None
        while True:
            page = self.list(process=process, state=state, limit=page_size, before=before)
            yield from page.items
            if page.next is None:
                return
            before = page.next

    def wait(self, run_id: str, *, timeout: float = 300.0, poll: float = 0.25) -> Run:
        """The run once it has finished; `WardenError` with code `timeout` after `timeout`
        seconds (the run goes on)."""
        deadline = time.monotonic() + _check_wait(timeout)
        poll = min(max(poll, 0.05), 5.0)
        while True:
            run = self.get(run_id)
            if run.finished:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise WardenError(
                    0, "timeout", f"run {run_id} is still {run.state} after {timeout} s"
                )
            time.sleep(min(poll, left))

    def events(self, run_id: str, *, timeout: float = 300.0) -> Iterator[RunEvent]:
        """The run's events as the server sends them (server-sent events): what it logged
        so far, then live ones, the last being `state`. JSON data is decoded. Each wait for
        the next event is bounded by `timeout` (code `timeout`)."""
        path = f"/v1/runs/{_seg(run_id)}/events"
        for name, data in self._http.events(path, timeout=_check_wait(timeout)):
            try:
                value: Any = json.loads(data)
            except ValueError:
                value = data
            yield RunEvent(name, value)
            if name == "state":
                return

    def cancel(self, run_id: str) -> JsonObject:
        path = f"/v1/runs/{_seg(run_id)}/cancel"
        return dict(self._http.request("POST", path, json_body={}).body)

    def resume(self, run_id: str) -> Run:
        """Resumes a failed or interrupted workflow run from the step that failed."""
        path = f"/v1/runs/{_seg(run_id)}/resume"
        return Run.from_json(self._http.request("POST", path, json_body={}).body)


class Approvals(_Group):
    """Four-eyes approvals of runs."""

    def list(self, *, window: int | None = None, before: str | None = None) -> Page[Run]:
        """Runs awaiting an approval you may give, newest first."""
        reply = self._http.request("GET", "/v1/approvals", query={"window": window, "before": before})
        return Page([Run.from_json(r) for r in reply.body], reply.headers.get(_NEXT_BEFORE))

    def get(self, run_id: str) -> ApprovalRequest:
        """What the run would do, and the `binding` an approval of it is for."""
        path = f"/v1/runs/{_seg(run_id)}/approval"
        return ApprovalRequest.from_json(self._http.request("GET", path).body)

    def approve(self, run_id: str, *, binding: str) -> ApproveOutcome:
        """Approves the run exactly as `get` showed it: refused (`conflict`) if the run or
        its process changed since the `binding` was read."""
        body = {"binding": binding.removeprefix("sha256:")}
        path = f"/v1/runs/{_seg(run_id)}/approve"
        return ApproveOutcome.from_json(self._http.request("POST", path, json_body=body).body)

    def reject(self, run_id: str, *, reason: str = "") -> Run:
        """Rejects the run: it never executes."""
        path = f"/v1/runs/{_seg(run_id)}/reject"
        return Run.from_json(self._http.request("POST", path, json_body={"reason": reason}).body)


class Audit(_Group):
    """The audit log."""

    def query(
        self,
        *,
        run: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        after: int | None = None,
        limit: int | None = None,
    ) -> Page[AuditRecord]:
        """Records you may see, in sequence order; `next` is the `after` of the next page."""
        query = {
            "run": run, "actor": actor, "action": action, "resource": resource,
            "since_ms": since_ms, "until_ms": until_ms, "after": after, "limit": limit,
        }
        reply = self._http.request("GET", "/v1/audit", query=query)
        return Page([AuditRecord.from_json(r) for r in reply.body], reply.headers.get(_NEXT_AFTER))

    def verify(self) -> AuditVerdict:
        """Re-walks the hash chain and checks the signed checkpoint on the server."""
        return AuditVerdict.from_json(self._http.request("GET", "/v1/audit/verify").body)


class Credentials(_Group):
    """Vault credentials. Secrets are write-only: sent once, never returned, never kept."""

    def list(self) -> _List[Credential]:
        return [Credential.from_json(c) for c in self._http.request("GET", "/v1/credentials").body]

    def get(self, name: str) -> Credential:
        return Credential.from_json(self._http.request("GET", f"/v1/credentials/{_seg(name)}").body)

    def create(
        self,
        name: str,
        *,
        username: str,
        secret: str,
        kind: str = "password",
        admin: bool = False,
    ) -> Credential:
        """Stores a new credential; the reply (and the returned record) is metadata only."""
        body = {"name": name, "username": username, "kind": kind, "secret": secret, "admin": admin}
        del secret
        return Credential.from_json(self._http.request("POST", "/v1/credentials", json_body=body).body)

    def replace(self, name: str, *, secret: str) -> Credential:
        """Replaces the credential's secret (a new version); metadata only in return."""
        body = {"secret": secret}
        del secret
        path = f"/v1/credentials/{_seg(name)}/secret"
        return Credential.from_json(self._http.request("PUT", path, json_body=body).body)

    def versions(self, name: str) -> _List[JsonObject]:
        path = f"/v1/credentials/{_seg(name)}/versions"
        return list(self._http.request("GET", path).body)


class Targets(_Group):
    """SSH targets with pinned host keys."""

    def list(self) -> _List[Target]:
        return [Target.from_json(t) for t in self._http.request("GET", "/v1/targets").body]

    def get(self, name: str) -> Target:
        return Target.from_json(self._http.request("GET", f"/v1/targets/{_seg(name)}").body)

    def add(
        self,
        name: str,
        *,
        address: str,
        host_key: str,
        zone: str | None = None,
        tags: Sequence[str] = (),
    ) -> Target:
        """`address` is `HOST[:PORT]`; `host_key` the OpenSSH public key line to pin."""
        body: JsonObject = {"name": name, "address": address, "host_key": host_key, "tags": list(tags)}
        if zone is not None:
            body["zone"] = zone
        return Target.from_json(self._http.request("POST", "/v1/targets", json_body=body).body)

    def remove(self, name: str) -> None:
        self._http.request("DELETE", f"/v1/targets/{_seg(name)}")


class Users(_Group):
    """Users and their roles."""

    def list(self) -> _List[User]:
        return [User.from_json(u) for u in self._http.request("GET", "/v1/users").body]

    def create(self, name: str, *, roles: Sequence[str] = (), enroll: bool = False) -> User:
        """With `enroll=True` the reply carries an enrollment token (`User.enrollment_token`,
        shown once) that the user redeems for their own token (`Tokens.redeem`)."""
        body = {"name": name, "roles": list(roles), "enroll": enroll}
        return User.from_json(self._http.request("POST", "/v1/users", json_body=body).body)

    def disable(self, name: str) -> User:
        return User.from_json(self._http.request("POST", f"/v1/users/{_seg(name)}/disable", json_body={}).body)

    def enable(self, name: str) -> User:
        return User.from_json(self._http.request("POST", f"/v1/users/{_seg(name)}/enable", json_body={}).body)

    def delete(self, name: str) -> None:
        self._http.request("DELETE", f"/v1/users/{_seg(name)}")


class Tokens(_Group):
    """API tokens: mint, list (metadata only), revoke."""

    def issue(self, user: str, *, label: str = "", ttl_secs: int | None = None) -> IssuedToken:
        """Mints a token for `user`. For one's own name with an enrollment token, this
        redeems it; for someone else it is an enrollment token they must redeem."""
        body: JsonObject = {"label": label}
        if ttl_secs is not None:
            body["ttl_secs"] = ttl_secs
        path = f"/v1/users/{_seg(user)}/tokens"
        return IssuedToken.from_json(self._http.request("POST", path, json_body=body).body)

    def redeem(self, user: str, *, label: str = "") -> IssuedToken:
        """As `user`, holding their enrollment token: that user's own full token."""
        return self.issue(user, label=label)

    def list(self, user: str) -> _List[TokenInfo]:
        path = f"/v1/users/{_seg(user)}/tokens"
        return [TokenInfo.from_json(t) for t in self._http.request("GET", path).body]

    def revoke(self, token_id: str) -> None:
        self._http.request("DELETE", f"/v1/tokens/{_seg(token_id)}")


class Client:
    """A client of one Warden server, as the user of `token`.

    TLS: an `https://` server is verified against the system's trust store, or `ca` (a PEM
    file: a CA, or the server's own certificate), or exactly the certificate whose SHA-256
    is `fingerprint` (`sha256:…`, as `warden init` prints it). Plain `http://` is accepted
    (a server started with `--insecure-http`), with a warning unless it is loopback.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ca: str | os.PathLike[str] | None = None,
        fingerprint: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._http = Transport(
            base_url,
            token,
            ca=os.fspath(ca) if ca is not None else None,
            fingerprint=fingerprint,
            timeout=timeout,
        )
        if self._http.in_clear_to_another_machine:
            warnings.warn(
                f"{self._http.base_url} is plain HTTP: the token and all else sent cross the "
                "network in clear",
                stacklevel=2,
            )
        self.modules = Modules(self._http)
        self.publishers = Publishers(self._http)
        self.processes = Processes(self._http)
        self.runs = Runs(self._http)
        self.approvals = Approvals(self._http)
        self.audit = Audit(self._http)
        self.credentials = Credentials(self._http)
        self.targets = Targets(self._http)
        self.users = Users(self._http)
        self.tokens = Tokens(self._http)

    def __repr__(self) -> str:
        return f"Client({self._http.base_url!r})"

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def whoami(self) -> JsonObject:
        """The caller: user name, roles, token id."""
        return dict(self._http.request("GET", "/v1/whoami").body)
