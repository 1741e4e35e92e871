"""Modules, credentials (write-only secrets), targets and the audit log, against the real
server."""

from __future__ import annotations

import base64
import http.client
import os
import secrets
import struct
from collections.abc import Iterator

import pytest

from conftest import Server
from warden_client import Client, WardenError


@pytest.fixture
def bodies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every response body the client reads during the test, as read off the socket."""
    seen: list[bytes] = []
    original = http.client.HTTPResponse.read

    def spy(self: http.client.HTTPResponse, amt: int | None = None) -> bytes:
        data = original(self, amt)
        seen.append(data)
        return data

    monkeypatch.setattr(http.client.HTTPResponse, "read", spy)
    yield seen


def test_modules_list_get_and_a_refused_upload(server: Server, admin: Client) -> None:
    digest = server.digests["hello"]
    assert digest in [m.digest for m in admin.modules.list()]
    hello = admin.modules.get(digest)
    assert (hello.name, hello.publisher, hello.retired) == ("hello", "ci", False)
    assert hello.manifest["inputs"]["name"]["type"] == "string"
    # Unsigned bytes, and a signed file with one flipped byte, are refused with a code.
    for bad in [b"\0asm not signed", flipped(server)]:
        with pytest.raises(WardenError) as e:
            admin.modules.push(bad)
        assert e.value.status == 400 and e.value.code, e.value


def flipped(server: Server) -> bytes:
    data = bytearray((server.data.parent / "hello.signed.wasm").read_bytes())
    data[len(data) // 2] ^= 1
    return bytes(data)


def test_credential_secrets_are_write_only(
    server: Server, admin: Client, unique: str, bodies: list[bytes]
) -> None:
    secret = "S3cr3t-" + secrets.token_hex(16)
    replacement = "R3pl-" + secrets.token_hex(16)
    name = f"cred-{unique}"
    created = admin.credentials.create(name, username="svc", secret=secret, admin=True)
    assert (created.name, created.username, created.admin) == (name, "svc", True)
    replaced = admin.credentials.replace(name, secret=replacement)
    assert replaced.name == name
    assert name in [c.name for c in admin.credentials.list()]
    assert admin.credentials.get(name).username == "svc"
    assert len(admin.credentials.versions(name)) >= 2
    errors = []
    with pytest.raises(WardenError) as e:
        admin.credentials.create(name, username="svc", secret=secret)
    assert (e.value.status, e.value.code) == (409, "conflict")
    errors.append(e.value)
    with pytest.raises(WardenError) as e:
        admin.credentials.replace(f"nope-{unique}", secret=secret)
    assert e.value.status == 404
    errors.append(e.value)
    with pytest.raises(WardenError) as e:
        admin.credentials.create("bad name!", username="svc", secret=secret)
    assert e.value.status == 400
    errors.append(e.value)
    # Neither secret in any reply body, record, exception or the client's own state.
    assert bodies, "the spy saw no body"
    everything = b"".join(bodies)
    for s in (secret, replacement):
        assert s.encode() not in everything
        for err in errors:
            assert s not in str(err) and s not in repr(err) and s not in str(err.args)
        assert s not in repr(created) and s not in str(created.raw) and s not in str(replaced.raw)
        assert s not in str(vars(admin)) and s not in str(vars(admin._http))
    # The audit log names the credential, never the secret.
    page = admin.audit.query(limit=10_000)
    about = [r for r in page.items if r.action.startswith("credential.") and name in str(r.raw)]
    assert {r.action for r in about} >= {"credential.create-admin", "credential.update-secret"}, about
    assert secret not in str([r.raw for r in page.items])


def host_key() -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + os.urandom(32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def test_targets_add_get_list_remove(admin: Client, unique: str) -> None:
    name = f"web-{unique}"
    key = host_key()
    added = admin.targets.add(name, address="127.0.0.1:2222", host_key=key, tags=["web"])
    assert (added.name, added.port, added.tags) == (name, 2222, ["web"])
    assert admin.targets.get(name).host_key.startswith("ssh-ed25519 ")
    assert name in [t.name for t in admin.targets.list()]
    with pytest.raises(WardenError) as e:
        admin.targets.add(name, address="127.0.0.1:2222", host_key=key)
    assert e.value.status == 409
    with pytest.raises(WardenError) as e:
        admin.targets.add(f"bad-{unique}", address="127.0.0.1", host_key="not a key")
    assert e.value.status == 400
    admin.targets.remove(name)
    with pytest.raises(WardenError) as e:
        admin.targets.get(name)
    assert (e.value.status, e.value.code) == (404, "not_found")


def test_audit_pages_and_verifies(admin: Client) -> None:
    first = admin.audit.query(limit=2)
    assert len(first.items) <= 2 and first.next is not None
    second = admin.audit.query(limit=2, after=int(first.next))
    assert second.items and second.items[0].seq > first.items[-1].seq
    verdict = admin.audit.verify()
    assert verdict.ok and (verdict.count or 0) > 0, verdict.raw
    with pytest.raises(WardenError) as e:
        admin.audit.query(limit="many")  # type: ignore[arg-type]
    assert e.value.status == 400
