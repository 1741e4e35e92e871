"""A real Warden server for the client's tests: the built `warden` binary (`WARDEN_BIN`, or
`target/debug/warden`), a fresh data directory, `warden init` (its admin token and TLS
fingerprint), `warden serve` on a free loopback port, and two signed guests (`hello`,
`probe`) published the way a user would: `warden keygen`, `warden sign`, then the
client's own `modules.push`. Nothing is mocked."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warden_client import Client, WardenError

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("WARDEN_BIN", REPO / "target/debug/warden"))
GUESTS = Path(os.environ.get("WARDEN_GUESTS", REPO / "target/guests/wasm32-wasip2/release"))


@dataclass
class Server:
    url: str
    admin_token: str
    fingerprint: str
    cert: Path
    data: Path
    digests: dict[str, str]

    def requests_logged(self) -> int:
        """How many requests the server has logged (one line each, whatever the outcome)."""
        log = (self.data.parent / "serve.log").read_text()
        return sum(1 for line in log.splitlines() if "warden::request" in line)

    def client(self, token: str | None = None, **kw: object) -> Client:
        kw.setdefault("fingerprint", self.fingerprint)
        return Client(self.url, self.admin_token if token is None else token, **kw)  # type: ignore[arg-type]


def warden(*args: str, stdin: bytes | None = None) -> str:
    out = subprocess.run(
        [str(BIN), *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")},
    )
    if out.returncode != 0:
        raise AssertionError(f"warden {args}: {out.stderr.decode()}")
    return out.stdout.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sign(tmp: Path, key: Path, guest: str, manifest: Path) -> Path:
    component = GUESTS / f"{guest}.wasm"
    if not component.exists():
        pytest.exit(f"{component} is missing: build the guests first (.ci/run does)", 2)
    out = tmp / f"{guest}.signed.wasm"
    warden("sign", "--key", str(key), str(component), "--manifest", str(manifest), "-o", str(out))
    return out


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not BIN.exists():
        pytest.exit(f"{BIN} is missing: run `cargo build -p warden-host` first", 2)
    tmp = tmp_path_factory.mktemp("warden")
    data = tmp / "data"
    init = warden("init", "--data", str(data))
    token = re.search(r"admin token \(shown once, keep it\): (\S+)", init)
    fingerprint = re.search(r"fingerprint: (sha256:[0-9a-f]{64})", init)
    cert = re.search(r"server certificate: (\S+)", init)
    assert token and fingerprint and cert, init
    port = free_port()
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")},
    )
    srv = Server(f"https://127.0.0.1:{port}", token.group(1), fingerprint.group(1),
                 Path(cert.group(1)), data, {})
    try:
        admin = srv.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                admin.whoami()
                break
            except WardenError as e:
                if e.code != "connection_failed" or time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"the server did not start: {e}\n{(tmp / 'serve.log').read_text()}")
                time.sleep(0.1)
        warden("keygen", "-o", str(tmp / "publisher"))
        admin.publishers.trust("ci", (tmp / "publisher.pub").read_text().strip())
        for guest, manifest in [
            ("hello", REPO / "guest-examples/hello/warden.toml"),
            ("probe", REPO / "tests/fixtures/probe/warden.toml"),
        ]:
            signed = sign(tmp, tmp / "publisher.key", guest, manifest)
            srv.digests[guest] = admin.modules.push(signed).digest
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def admin(server: Server) -> Client:
    return server.client()


_counter = iter(range(1_000_000))


@pytest.fixture
def unique() -> str:
    """A name no other test uses (the server is shared by the session)."""
    return f"t{os.getpid()}-{next(_counter)}"


def new_user(admin: Client, server: Server, name: str, roles: list[str] | None = None) -> Client:
    """A user created by the admin, who redeems their enrollment token for their own."""
    user = admin.users.create(name, roles=roles or [], enroll=True)
    assert user.enrollment_token
    own = server.client(user.enrollment_token).tokens.redeem(name, label="tests")
    return server.client(own.token)
