"""Processes, runs (start, wait, stream, list, cancel) and approvals, against the real
server with real guests (`hello`, and the `probe` fixture's `drip` and `sleep` modes)."""

from __future__ import annotations

import time

import pytest

from conftest import Server, new_user
from warden_client import Client, WardenError


def test_process_create_get_update_share(server: Server, admin: Client, unique: str) -> None:
    name = f"hello-{unique}"
    p = admin.processes.create(name, module_digest=server.digests["hello"], default_inputs={"name": "Ada"})
    assert (p.name, p.module, p.default_inputs) == (name, "hello@0.1.0", {"name": "Ada"})
    assert admin.processes.get(p.id).name == name
    assert admin.processes.find(name).id == p.id
    assert p.id in [x.id for x in admin.processes.list()]
    updated = admin.processes.update(p.id, description="greets", default_inputs={"times": 2})
    assert updated.revision == p.revision + 1
    assert (updated.raw["description"], updated.default_inputs) == ("greets", {"times": 2})
    # Shared with a plain user: they may run it, and only then.
    user = new_user(admin, server, f"s-{unique}")
    assert p.id not in [x.id for x in user.processes.list()]
    with pytest.raises(WardenError) as e:
        user.runs.start(p.id)
    assert e.value.status == 404, e.value
    shared = admin.processes.share(p.id, users=[f"s-{unique}"])
    assert f"s-{unique}" in shared.shared_users
    run = user.runs.start(p.id)
    assert user.runs.wait(run.id, timeout=60).state == "succeeded"
    # Refusals with the server's codes.
    with pytest.raises(WardenError) as e:
        admin.processes.create(name, module_digest=server.digests["hello"])
    assert (e.value.status, e.value.code) == (409, "conflict")
    with pytest.raises(WardenError) as e:
        admin.processes.create(f"x-{unique}", module_digest="ab" * 32)
    assert e.value.status == 400 and e.value.code == "unknown_module", e.value
    with pytest.raises(TypeError):
        admin.processes.update(p.id, colour="blue")


def test_start_and_wait_for_the_result(server: Server, admin: Client, unique: str) -> None:
    p = admin.processes.create(f"hello-{unique}", module_digest=server.digests["hello"])
    run = admin.runs.start(p.id, {"name": "Grace", "times": 2})
    assert run.state in ("queued", "running", "succeeded")
    done = admin.runs.wait(run.id, timeout=60)
    assert done.state == "succeeded" and done.finished, done
    assert "Grace" in str(done.events), done.events
    assert done.inputs == {"name": "Grace", "times": 2}
    # Inputs the manifest refuses: 400 with a code, and no run.
    with pytest.raises(WardenError) as e:
        admin.runs.start(p.id, {"times": "two"})
    assert e.value.status == 400 and "times" in e.value.message, e.value


def test_events_stream_a_real_runs_log_lines_then_its_state(server: Server, admin: Client, unique: str) -> None:
    p = admin.processes.create(f"drip-{unique}", module_digest=server.digests["probe"])
    run = admin.runs.start(p.id, {"mode": "drip", "n": 4, "needle": "marker"})
    events = list(admin.runs.events(run.id, timeout=60))
    logs = [e.data for e in events if e.event == "log"]
    assert [l["message"] for l in logs] == [f"line {i}: marker" for i in range(4)], events
    assert events[-1].event == "state"
    assert events[-1].data["state"] == "succeeded", events[-1]
    # A finished run streams its stored events the same way.
    again = list(admin.runs.events(run.id, timeout=30))
    assert [e.data for e in again if e.event == "log"] == logs
    with pytest.raises(WardenError) as e:
        list(admin.runs.events("00000000-0000-4000-8000-000000000000", timeout=10))
    assert e.value.status == 404


def test_wait_gives_up_after_its_timeout_and_cancel_ends_the_run(server: Server, admin: Client, unique: str) -> None:
    p = admin.processes.create(f"sleep-{unique}", module_digest=server.digests["probe"])
    run = admin.runs.start(p.id, {"mode": "sleep", "n": 20_000})
    began = time.monotonic()
    with pytest.raises(WardenError) as e:
        admin.runs.wait(run.id, timeout=0.5)
    took = time.monotonic() - began
    assert e.value.code == "timeout" and 0.4 < took < 5, (e.value, took)
    for bad in (0, -1, float("inf"), 10**9):
        with pytest.raises(ValueError):
            admin.runs.wait(run.id, timeout=bad)
    admin.runs.cancel(run.id)
    ended = admin.runs.wait(run.id, timeout=30)
    assert ended.state == "cancelled", ended


def test_list_pages_across_more_than_one_page(server: Server, admin: Client, unique: str) -> None:
    p = admin.processes.create(f"many-{unique}", module_digest=server.digests["hello"])
    ids = [admin.runs.start(p.id, {"name": f"n{i}"}).id for i in range(5)]
    for run_id in ids:
        admin.runs.wait(run_id, timeout=60)
    first = admin.runs.list(process=p.id, limit=2)
    assert len(first.items) == 2 and first.next, first
    second = admin.runs.list(process=p.id, limit=2, before=first.next)
    assert {r.id for r in first.items}.isdisjoint(r.id for r in second.items)
    walked = [r.id for r in admin.runs.iter(process=p.id, page_size=2)]
    assert sorted(walked) == sorted(ids) and len(walked) == len(set(walked))
    assert walked == ids[::-1], "newest first"
    with pytest.raises(WardenError) as e:
        admin.runs.list(before="not-a-cursor")
    assert (e.value.status, e.value.code) == (400, "invalid")


def test_approvals_bind_to_what_the_approver_saw(server: Server, admin: Client, unique: str) -> None:
    requester_name = f"r-{unique}"
    requester = new_user(admin, server, requester_name)
    p = admin.processes.create(
        f"gated-{unique}", module_digest=server.digests["hello"], required_approvals=1
    )
    admin.processes.share(p.id, users=[requester_name])
    run = requester.runs.start(p.id, {"name": "Linus"})
    assert run.state == "awaiting-approval"
    assert run.id in [r.id for r in admin.approvals.list().items]
    request = admin.approvals.get(run.id)
    assert request.requester == requester_name and request.binding, request
    # The requester may not approve their own run; a stale binding is refused.
    with pytest.raises(WardenError) as e:
        requester.approvals.approve(run.id, binding=request.binding)
    assert e.value.status == 403, e.value
    with pytest.raises(WardenError) as e:
        admin.approvals.approve(run.id, binding="00" * 32)
    assert e.value.status == 409, e.value
    outcome = admin.approvals.approve(run.id, binding="sha256:" + request.binding)
    assert outcome.started and outcome.request.run_id == run.id
    assert admin.runs.wait(run.id, timeout=60).state == "succeeded"
    # Rejected: denied, never executed.
    other = requester.runs.start(p.id, {"name": "Ken"})
    denied = admin.approvals.reject(other.id, reason="not today")
    assert denied.state == "denied"
    assert admin.runs.get(other.id).events == []
    with pytest.raises(WardenError) as e:
        admin.approvals.approve(other.id, binding=request.binding)
    assert e.value.status == 409
