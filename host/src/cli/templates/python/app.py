"""`{{name}}`: runs `uname -a` on a target and logs it.

Build with `warden build` (needs componentize-py 0.25.1), then `warden sign` and
`warden module push`. The `warden` package next to this file wraps the raw bindings.
"""

from warden import credentials, entrypoint, log, params, ssh


def run() -> str:
    target = params.text("target")
    credential = credentials.acquire(params.text("credential"))
    text = ssh.exec(target, credential, "uname -a").stdout_text().strip()
    log.info(f"{target}: {text}")
    return text


WitWorld = entrypoint(run)
