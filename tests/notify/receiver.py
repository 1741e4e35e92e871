"""A Standard Webhooks receiver for Warden's notify tests, independent of Warden's code.

Verifies `v1` signatures with the `standardwebhooks` package (PyPI, pinned in
requirements.txt) and `v1a` ed25519 signatures with `cryptography`, then appends one JSON
line per request to --log: {"id", "status", "v1", "v1a", "body"}. It answers --fail-first
requests with --fail-status, then 200 (or 410 for ever with --gone). With --tls-cert and
--tls-key it serves HTTPS (Python's `ssl`). Prints its port first.
"""

import argparse
import base64
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError:  # v1a is then reported as unchecked (None)
    Ed25519PublicKey = None

parser = argparse.ArgumentParser()
parser.add_argument("--secret", required=True)
parser.add_argument("--pubkey", default="")
parser.add_argument("--log", required=True)
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--fail-status", type=int, default=500)
parser.add_argument("--gone", action="store_true")
parser.add_argument("--tls-cert", default="")
parser.add_argument("--tls-key", default="")
args = parser.parse_args()

webhook = Webhook(args.secret)
lock = threading.Lock()
count = [0]


def check_v1a(headers, body):
    if not args.pubkey or Ed25519PublicKey is None:
        return None
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(args.pubkey))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for part in headers.get("webhook-signature", "").split(" "):
        if part.startswith("v1a,"):
            try:
                key.verify(base64.b64decode(part[4:]), content)
                return True
            except Exception:
                return False
    return False


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            webhook.verify(body, headers)
            v1 = True
        except Exception:
            v1 = False
        with lock:
            count[0] += 1
            n = count[0]
        if args.gone:
            status = 410
        elif n <= args.fail_first:
            status = args.fail_status
        else:
            status = 200 if v1 else 400
        entry = {
            "id": headers.get("webhook-id"),
            "status": status,
            "v1": v1,
            "v1a": check_v1a(headers, body),
            "body": body.decode(),
        }
        with lock, open(args.log, "a") as log:
            log.write(json.dumps(entry) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if args.tls_cert:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
sys.stdout.close()
server.serve_forever()
