"""TLS, tokens, users and denial paths, against the real server."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from conftest import Server, new_user
from warden_client import Client, WardenError


def test_a_pinned_fingerprint_or_the_servers_certificate_as_ca_verifies_it(server: Server) -> None:
    assert server.client().whoami()["user"] == "admin"
    assert Client(server.url, server.admin_token, ca=server.cert).whoami()["user"] == "admin"


def test_an_unverified_server_gets_no_request(server: Server) -> None:
    before = server.requests_logged()
    wrong = "sha256:" + "00" * 32
    with pytest.raises(WardenError) as e:
        server.client(fingerprint=wrong).whoami()
    assert (e.value.status, e.value.code) == (0, "tls_fingerprint_mismatch")
    assert server.fingerprint in str(e.value) or "not the pinned one" in str(e.value)
    # The system's trust store does not know the self-signed certificate.
    with pytest.raises(WardenError) as e:
        Client(server.url, server.admin_token).whoami()
    assert e.value.code == "tls_unverified"
    assert server.admin_token not in str(e.value)
    # Neither attempt sent a request (so never the token): the next good one is the only
    # one the server logs.
    server.client().whoami()
    deadline = time.monotonic() + 5
    while server.requests_logged() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.requests_logged() == before + 1


def test_verification_options_need_https_and_a_well_formed_pin(server: Server) -> None:
    http = server.url.replace("https://", "http://")
    with pytest.raises(ValueError):
        Client(http, "t", fingerprint=server.fingerprint)
    with pytest.raises(ValueError):
        Client(http, "t", ca=server.cert)
    with pytest.raises(ValueError):
        Client(server.url, "t", fingerprint="sha1:abcd")
    with pytest.raises(ValueError):
        Client(server.url, "t", fingerprint=server.fingerprint, ca=server.cert)


def test_a_bad_token_is_refused_with_the_servers_code(server: Server) -> None:
    for token in ["wdn_not-a-real-token", server.admin_token + "x", ""]:
        with pytest.raises(WardenError) as e:
            server.client(token).processes.list()
        assert e.value.status == 401, e.value
        assert e.value.code in ("unauthorized", "token_expired"), e.value
        assert e.value.message
        assert e.value.code in str(e.value) and "401" in str(e.value)


def test_the_token_is_in_no_repr(server: Server) -> None:
    client = server.client()
    for text in [repr(client), repr(client.runs), repr(client.credentials), str(vars(client))]:
        assert server.admin_token not in text


def test_users_and_tokens_lifecycle(server: Server, admin: Client, unique: str) -> None:
    name = f"u-{unique}"
    user = admin.users.create(name, enroll=True)
    assert user.enrollment_token and user.enrollment_token not in repr(user)
    # The enrollment token is good for one thing only: its user minting their own token.
    enrollment = server.client(user.enrollment_token)
    with pytest.raises(WardenError) as e:
        enrollment.processes.list()
    assert e.value.status in (401, 403), e.value
    own = enrollment.tokens.redeem(name, label="laptop")
    assert own.token not in repr(own)
    with pytest.raises(WardenError) as e:
        enrollment.tokens.redeem(name)
    assert e.value.status in (401, 409), e.value
    me = server.client(own.token)
    assert me.whoami()["user"] == name
    assert name in [u.name for u in admin.users.list()]
    # Metadata only: no token value in the listing.
    listed = admin.tokens.list(name)
    assert own.id in [t.id for t in listed]
    assert own.token not in str([t.raw for t in listed])
    # Disabled: refused from the next request; enabled: accepted again.
    assert admin.users.disable(name).disabled
    with pytest.raises(WardenError) as e:
        me.whoami()
    assert e.value.status == 401
    assert not admin.users.enable(name).disabled
    assert me.whoami()["user"] == name
    # Revoked: refused.
    me.tokens.revoke(own.id)
    with pytest.raises(WardenError) as e:
        me.whoami()
    assert (e.value.status, e.value.code) == (401, "unauthorized")
    admin.users.delete(name)
    assert name not in [u.name for u in admin.users.list() if not u.raw.get("deleted_ms")]


def test_a_plain_user_is_refused_admin_routes(server: Server, admin: Client, unique: str) -> None:
    plain = new_user(admin, server, f"p-{unique}")
    attempts: list[Callable[[], object]] = [
        lambda: plain.users.create(f"x-{unique}"),
        lambda: plain.credentials.create(f"c-{unique}", username="u", secret="s3cret-value"),
        lambda: plain.processes.create(f"x-{unique}", module_digest=server.digests["hello"]),
        lambda: plain.audit.query(limit=1),
        lambda: plain.modules.list(),
        lambda: plain.publishers.trust("evil", "00" * 32),
        lambda: plain.tokens.issue("admin"),
    ]
    for attempt in attempts:
        with pytest.raises(WardenError) as e:
            attempt()
        assert (e.value.status, e.value.code) == (403, "forbidden"), e.value
        assert "s3cret-value" not in str(e.value)
    # A run that does not exist, or that the user may not see: absent.
    with pytest.raises(WardenError) as e:
        plain.runs.get("00000000-0000-4000-8000-000000000000")
    assert e.value.status == 404
