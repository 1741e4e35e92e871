"""user-report (Python): a user provisioning report across targets.

For each target: list the login accounts (UID >= 1000, or root, with a real shell) and
who may use sudo, store the report as JSON on the target under ``report_dir``, read it
back to check it arrived intact, and return a summary of every target as JSON.

Build: see ``build.sh`` (componentize-py against ``sdk/wit``, helpers from ``sdk/python``).
"""

import hashlib
import json

from warden import TaskFailed, WardenError, credentials, entrypoint, log, params, ssh, transfer

# Portable: getent + id exist on every Linux; no sudo needed to read them.
LIST_ACCOUNTS = "getent passwd"
SUDO_GROUPS = ("sudo", "wheel", "admin")


def parse_accounts(passwd: str):
    """Login accounts from `getent passwd` output: (name, uid, shell)."""
    accounts = []
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) < 7:
            continue
        name, uid, shell = fields[0], int(fields[2] or -1), fields[6]
        if (uid == 0 or uid >= 1000) and not shell.endswith(("nologin", "false")):
            accounts.append({"name": name, "uid": uid, "shell": shell})
    return accounts


def report_target(target: str, cred, report_dir: str) -> dict:
    out = ssh.exec(target, cred, LIST_ACCOUNTS)
    if not out.ok:
        raise TaskFailed(f"getent failed with status {out.exit_status}: {out.stderr_text()[:200]}")
    accounts = parse_accounts(out.stdout_text())
    groups = ssh.exec(target, cred, "getent group " + " ".join(SUDO_GROUPS))
    sudoers = sorted(
        {m for line in groups.stdout_text().splitlines() for m in line.split(":")[-1].split(",") if m}
    )
    report = json.dumps({"target": target, "accounts": accounts, "sudoers": sudoers}, sort_keys=True)
    path = f"{report_dir.rstrip('/')}/user-report-{target}.json"
    written = transfer.upload(target, cred, path, report.encode(), 0o600)
    back = transfer.download(target, cred, path)
    intact = hashlib.sha256(back).hexdigest() == hashlib.sha256(report.encode()).hexdigest()
    log.info(f"{target}: {len(accounts)} login account(s), {len(sudoers)} sudoer(s), report {path}")
    return {
        "target": target,
        "accounts": [a["name"] for a in accounts],
        "sudoers": sudoers,
        "report": path,
        "bytes": written,
        "intact": intact,
    }


def run() -> str:
    targets = params.text_list("targets")
    report_dir = params.text("report_dir")
    if not targets:
        raise TaskFailed("input `targets` must list at least one target")
    cred = credentials.acquire(params.text("credential"))
    log.info(f"user report on {len(targets)} target(s) as {cred.username()}")
    entries = []
    for target in targets:
        try:
            entries.append(report_target(target, cred, report_dir))
        except WardenError as e:
            log.warn(f"{target}: {e}")
            entries.append({"target": target, "error": str(e)})
    failed = sum(1 for e in entries if "error" in e)
    log.info(f"{len(entries)} target(s) reported, {failed} failed")
    return json.dumps({"language": "python", "targets": entries, "failed": failed})


WitWorld = entrypoint(run)
