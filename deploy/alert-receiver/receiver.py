#!/usr/bin/env python3
"""A sample receiver for the webhook service's outbound push (the compose service
alert-receiver): checks each delivery's signature and freshness, as a real receiver should,
answers 200, and prints one JSON line per accepted anomaly (`docker compose logs alert-receiver`).

Signature (webhook/src/outbound/signature.rs): X-Vigil-Timestamp: <unix seconds> and
X-Vigil-Signature: sha256=<hex HMAC-SHA256 with OUTBOUND_HMAC_SECRET of "<timestamp>.<body>">.
A missing or wrong signature gets 401, a timestamp more than MAX_SKEW_SECONDS (300) from this
clock 401, anything but JSON 400. GET /health answers 200 (the compose health check).

Standard library only, so it runs on the stock python image. Environment: OUTBOUND_HMAC_SECRET
(required), RECEIVER_BIND (default 0.0.0.0:8080).
"""
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("OUTBOUND_HMAC_SECRET", "").encode()
MAX_SKEW_SECONDS = int(os.environ.get("MAX_SKEW_SECONDS", "300"))


class Handler(BaseHTTPRequestHandler):
    def _answer(self, status, text):
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._answer(200, "ok")
        else:
            self._answer(404, "not found")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ts = self.headers.get("X-Vigil-Timestamp", "")
        sig = self.headers.get("X-Vigil-Signature", "")
        try:
            ts_num = int(ts)
        except ValueError:
            return self._answer(401, "missing or malformed X-Vigil-Timestamp")
        if abs(time.time() - ts_num) > MAX_SKEW_SECONDS:
            return self._answer(401, "stale X-Vigil-Timestamp")
        want = "sha256=" + hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig.strip()):
            return self._answer(401, "bad X-Vigil-Signature")
        try:
            anomaly = json.loads(body)
        except ValueError:
            return self._answer(400, "body is not JSON")
        print(json.dumps({"received": "anomaly", "anomaly_id": self.headers.get("X-Vigil-Anomaly-Id"),
                          "delivery_id": self.headers.get("X-Vigil-Delivery-Id"), "body": anomaly}), flush=True)
        self._answer(200, "ok")

    def log_message(self, fmt, *args):
        pass


def main():
    if not SECRET:
        sys.exit("OUTBOUND_HMAC_SECRET is not set")
    host, port = os.environ.get("RECEIVER_BIND", "0.0.0.0:8080").rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print("alert-receiver listening on %s:%s" % (host, server.server_port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
