"""HTTP(S) to one Warden server, on the standard library: TLS verification, the optional
pinned certificate fingerprint, JSON requests and replies, the server's error body, and
server-sent events.

Threat: the bearer token is worth as much as its user's rights, so it is sent only after
the server was verified (the system's trust store, a CA file, or exactly the pinned
certificate), never in clear to another machine unless asked, and never kept in a repr or
an exception. A hostile or broken server cannot make the client buffer without bound:
bodies and event lines have caps.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import WardenError

#: Largest reply body read. Blocks a hostile server from exhausting the client's memory;
#: a page of the audit log (10,000 records) fits well inside.
MAX_BODY_BYTES = 64 << 20
#: Longest line of an event stream (one event's data). A run event is a few KiB at most.
MAX_EVENT_LINE_BYTES = 1 << 20

_FINGERPRINT = re.compile(r"^sha256:((?:[0-9a-f]{2}:){31}[0-9a-f]{2}|[0-9a-f]{64})$", re.I)


def parse_fingerprint(text: str) -> bytes:
    """`sha256:<64 hex>` (or 32 `:`-separated bytes, as openssl prints it) as 32 bytes."""
    match = _FINGERPRINT.match(text.strip())
    if not match:
        raise ValueError(
            "a server fingerprint is written sha256:<64 hex digits> "
            "(as `warden init` and `warden tls fingerprint` print it)"
        )
    return bytes.fromhex(match.group(1).replace(":", ""))


@dataclass(frozen=True)
class Reply:
    """One HTTP reply: status, headers (lower-case names) and the body as JSON (or None)."""

    status: int
    headers: Mapping[str, str]
    body: Any


class Transport:
    """Sends requests to one server as one token. Not thread-safe: one connection per
    request, made and verified anew each time."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ca: str | None,
        fingerprint: str | None,
        timeout: float,
    ) -> None:
        url = urllib.parse.urlsplit(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"the server URL must be http:// or https://HOST[:PORT], got {base_url!r}")
        if ca is not None and fingerprint is not None:
            raise ValueError("give ca= or fingerprint=, not both")
        if (ca is not None or fingerprint is not None) and url.scheme != "https":
            # Asked to verify a server that would not be verified: refuse rather than send
            # the token in clear to whoever answers.
            raise ValueError("ca= and fingerprint= verify an https:// server; use its https:// URL")
        if not (0 < timeout <= 3600):
            raise ValueError("timeout must be between 0 and 3600 seconds")
        self.base_url = f"{url.scheme}://{url.netloc}{url.path}"
        self._scheme = url.scheme
        self._host = url.hostname
        self._port = url.port
        self._prefix = url.path
        self._token = token
        self._timeout = timeout
        self._pin = parse_fingerprint(fingerprint) if fingerprint is not None else None
        self._context: ssl.SSLContext | None = None
        if url.scheme == "https":
            if self._pin is not None:
                # The pin replaces the CA check: exactly this certificate, whatever signed it.
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = ssl.create_default_context(cafile=ca)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._context = context

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r})"

    @property
    def in_clear_to_another_machine(self) -> bool:
        """True for plain HTTP to anything but loopback (the token crosses the network)."""
        if self._scheme != "http":
            return False
        if self._host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(self._host).is_loopback
        except ValueError:
            return True

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        try:
            if self._context is None:
                conn: http.client.HTTPConnection = http.client.HTTPConnection(
                    self._host, self._port, timeout=timeout
                )
            else:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=timeout, context=self._context
                )
            conn.connect()
        except ssl.SSLCertVerificationError as e:
            raise WardenError(
                0,
                "tls_unverified",
                f"the server's certificate is not trusted ({e.verify_message}); "
                "no request was sent",
            ) from None
        except OSError as e:
            raise WardenError(0, "connection_failed", f"contacting {self.base_url}: {e}") from None
        if self._pin is not None:
            sock = conn.sock
            der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
            seen = hashlib.sha256(der or b"").digest()
            if not hmac.compare_digest(seen, self._pin):
                conn.close()
                raise WardenError(
                    0,
                    "tls_fingerprint_mismatch",
                    f"the server's certificate is sha256:{seen.hex()}, not the pinned one; "
                    "no request was sent",
                )
        return conn

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None,
        body: bytes | None,
        content_type: str | None,
        accept: str,
        timeout: float,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        target = self._prefix + path
        if query:
            pairs = {k: _query_value(v) for k, v in query.items() if v is not None}
            if pairs:
                target += "?" + urllib.parse.urlencode(pairs)
        headers = {"Authorization": f"Bearer {self._token}", "Accept": accept}
        if content_type is not None:
            headers["Content-Type"] = content_type
        conn = self._connect(timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise WardenError(0, "connection_failed", f"{method} {path}: {e}") from None

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        raw: bytes | None = None,
        content_type: str | None = None,
        query: Mapping[str, Any] | None = None,
    ) -> Reply:
        """One request; raises [`WardenError`] for any reply that is not 2xx."""
        if raw is None and json_body is not None:
            raw = json.dumps(json_body).encode()
            content_type = "application/json"
        conn, resp = self._send(
            method,
            path,
            query=query,
            body=raw,
            content_type=content_type,
            accept="application/json",
            timeout=self._timeout,
        )
        try:
            data = resp.read(MAX_BODY_BYTES + 1)
        except (OSError, http.client.HTTPException) as e:
            raise WardenError(0, "connection_failed", f"{method} {path}: {e}") from None
        finally:
            conn.close()
        # The request body (which may hold a secret) is dropped here, before any error is
        # raised, so no traceback frame of ours keeps it.
        del raw, json_body
        if len(data) > MAX_BODY_BYTES:
            raise WardenError(resp.status, "too_large", f"the reply is over {MAX_BODY_BYTES} bytes")
        headers = {k.lower(): v for k, v in resp.getheaders()}
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        if not 200 <= resp.status < 300:
            raise WardenError.from_reply(resp.status, parsed)
        return Reply(resp.status, headers, parsed)

    def events(self, path: str, *, timeout: float) -> Iterator[tuple[str, str]]:
        """`(event, data)` pairs of a `text/event-stream`, until the server closes it; each
        read waits at most `timeout` seconds."""
        conn, resp = self._send(
            "GET",
            path,
            query=None,
            body=None,
            content_type=None,
            accept="text/event-stream",
            timeout=timeout,
        )
        try:
            if resp.status != 200:
                data = resp.read(MAX_BODY_BYTES)
                try:
                    parsed = json.loads(data) if data else None
                except ValueError:
                    parsed = None
                raise WardenError.from_reply(resp.status, parsed)
            event = "message"
            data_lines: list[str] = []
            while True:
                try:
                    line = resp.readline(MAX_EVENT_LINE_BYTES + 1)
                except TimeoutError:
                    raise WardenError(0, "timeout", f"no event for {timeout} s") from None
                except (OSError, http.client.HTTPException) as e:
                    raise WardenError(0, "connection_failed", f"the event stream: {e}") from None
                if not line:
                    return
                if len(line) > MAX_EVENT_LINE_BYTES:
                    raise WardenError(0, "too_large", "an event line is over the client's cap")
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                if text == "":
                    if data_lines:
                        yield event, "\n".join(data_lines)
                    event, data_lines = "message", []
                elif text.startswith(":"):
                    continue
                else:
                    name, _, value = text.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "event":
                        event = value
                    elif name == "data":
                        data_lines.append(value)
        finally:
            conn.close()


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
