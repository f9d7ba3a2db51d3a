#!/usr/bin/env python3
"""A minimal Confluent-compatible schema registry for tests, on 127.0.0.1 (port printed on the
first line of stdout). Neither Redpanda's registry nor Confluent's can run on the development
machines (no container engine, no JVM package), so the end-to-end test of registry-framed
records runs against this stand-in. Vigil's services and the independent Python client talk to
it over HTTP exactly as to a real registry, with the endpoints they use:

  POST /subjects/{subject}/versions   {"schema": "..."} -> {"id": n}; one id per distinct
                                      schema text across subjects, as Confluent's registry does
  GET  /subjects                      ["subject", ...]
  GET  /subjects/{subject}/versions   [1, 2, ...]
  GET  /subjects/{subject}/versions/latest  {"subject", "version", "id", "schema"}
  GET  /schemas/ids/{id}              {"schema": "..."}
  PUT  /config/{subject}              {"compatibility": "BACKWARD"} -> the same
  GET  /config/{subject}              {"compatibilityLevel": "..."} (404 when never set)

It does not check compatibility (a real registry refuses an incompatible version); it records
the mode each subject was given, which the test asserts.
"""
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LOCK = threading.Lock()
SCHEMAS = []      # id - 1 -> schema text
SUBJECTS = {}     # subject -> [schema id per version]
CONFIG = {}       # subject -> compatibility


class Handler(BaseHTTPRequestHandler):
    def _json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

    def _not_found(self, what):
        self._json(404, {"error_code": 40401, "message": "%s not found" % what})

    def do_POST(self):
        m = re.fullmatch(r"/subjects/([^/]+)/versions", self.path)
        if not m:
            return self._not_found(self.path)
        subject, schema = unquote(m.group(1)), self._body()["schema"]
        with LOCK:
            if schema not in SCHEMAS:
                SCHEMAS.append(schema)
            sid = SCHEMAS.index(schema) + 1
            versions = SUBJECTS.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
        self._json(200, {"id": sid})

    def do_PUT(self):
        m = re.fullmatch(r"/config/([^/]+)", self.path)
        if not m:
            return self._not_found(self.path)
        level = self._body()["compatibility"]
        with LOCK:
            CONFIG[unquote(m.group(1))] = level
        self._json(200, {"compatibility": level})

    def do_GET(self):
        p = self.path
        with LOCK:
            if p == "/subjects":
                return self._json(200, sorted(SUBJECTS))
            m = re.fullmatch(r"/schemas/ids/(\d+)", p)
            if m:
                i = int(m.group(1))
                if 1 <= i <= len(SCHEMAS):
                    return self._json(200, {"schema": SCHEMAS[i - 1]})
                return self._not_found("schema %d" % i)
            m = re.fullmatch(r"/subjects/([^/]+)/versions(/latest)?", p)
            if m:
                subject = unquote(m.group(1))
                if subject not in SUBJECTS:
                    return self._not_found("subject " + subject)
                versions = SUBJECTS[subject]
                if not m.group(2):
                    return self._json(200, list(range(1, len(versions) + 1)))
                sid = versions[-1]
                return self._json(200, {"subject": subject, "version": len(versions), "id": sid,
                                        "schema": SCHEMAS[sid - 1]})
            m = re.fullmatch(r"/config/([^/]+)", p)
            if m:
                subject = unquote(m.group(1))
                if subject not in CONFIG:
                    return self._not_found("config of " + subject)
                return self._json(200, {"compatibilityLevel": CONFIG[subject]})
        self._not_found(p)

    def log_message(self, fmt, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
