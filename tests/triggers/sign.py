"""Signs events for Warden's trigger tests the Standard Webhooks way, independent of Warden's
code: `v1` with the `standardwebhooks` package (PyPI, pinned in tests/notify/requirements.txt),
`v1a` ed25519 with `cryptography`.

Reads one JSON object per line on stdin, {"id": ..., "timestamp": <unix seconds>, "body":
"<exact body text>"}, and writes one line per request, {"signature": "<webhook-signature
header value>"}, in order. Give --secret whsec_... (v1) or --ed25519-seed <64 hex chars> (v1a).
"""

import argparse
import base64
import json
import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

parser = argparse.ArgumentParser()
parser.add_argument("--secret", default="")
parser.add_argument("--ed25519-seed", default="")
args = parser.parse_args()

if args.secret:
    webhook = Webhook(args.secret)
    key = None
else:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    webhook = None
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(args.ed25519_seed))

for line in sys.stdin:
    if not line.strip():
        continue
    req = json.loads(line)
    ts = int(req["timestamp"])
    if webhook is not None:
        when = datetime.fromtimestamp(ts, tz=timezone.utc)
        signature = webhook.sign(req["id"], when, req["body"])
    else:
        content = f"{req['id']}.{ts}.{req['body']}".encode()
        signature = "v1a," + base64.b64encode(key.sign(content)).decode()
    sys.stdout.write(json.dumps({"signature": signature}) + "\n")
    sys.stdout.flush()
