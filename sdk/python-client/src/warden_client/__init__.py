"""A typed client of the Warden HTTP API.

    from warden_client import Client
    client = Client("https://127.0.0.1:7070", token, fingerprint="sha256:…")
    run = client.runs.wait(client.runs.start(process_id, {"name": "Ada"}).id, timeout=60)
"""

from .client import Client
from .errors import WardenError
from .types import (
    FINAL_STATES,
    ApprovalRequest,
    ApproveOutcome,
    AuditRecord,
    AuditVerdict,
    Credential,
    IssuedToken,
    Module,
    Page,
    Process,
    Run,
    RunEvent,
    Target,
    TokenInfo,
    User,
)

__all__ = [
    "FINAL_STATES",
    "ApprovalRequest",
    "ApproveOutcome",
    "AuditRecord",
    "AuditVerdict",
    "Client",
    "Credential",
    "IssuedToken",
    "Module",
    "Page",
    "Process",
    "Run",
    "RunEvent",
    "Target",
    "TokenInfo",
    "User",
    "WardenError",
]
