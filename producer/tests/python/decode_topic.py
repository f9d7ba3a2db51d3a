#!/usr/bin/env python3
"""An independent consumer: confluent-kafka (librdkafka's Python binding) reads a topic and
fastavro decodes every message using only the project's .avsc files, in either framing:

* Avro single-object encoding: C3 01 + the CRC-64-AVRO fingerprint of the schema's canonical
  form (computed here by fastavro) + the datum;
* Confluent wire format: 00 + a 4-byte schema id, resolved with the registry at --registry.

Prints one JSON object per message: {"framing", "key", "record"}.
"""
import argparse
import glob
import io
import json
import os
import struct
import sys
import time
import urllib.request

import fastavro
from confluent_kafka import Consumer
from fastavro.schema import fingerprint, to_parsing_canonical_form


def load_schemas(directory):
    by_fingerprint = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.avsc"))):
        with open(path) as f:
            parsed = fastavro.parse_schema(json.load(f))
        # fastavro's hex string is the fingerprint's 8 bytes in little-endian order, as the
        # single-object header holds them (Avro specification).
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        by_fingerprint[fp] = parsed
    return by_fingerprint


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schemas", required=True, help="directory of .avsc files")
    ap.add_argument("--expected", type=int, required=True)
    ap.add_argument("--registry", help="Confluent-compatible registry URL")
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()

    by_fp = load_schemas(a.schemas)
    by_id = {}
    consumer = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": "fastavro-%d" % os.getpid(),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "broker.address.family": "v4",
    })
    consumer.subscribe([a.topic])
    seen = 0
    deadline = time.time() + a.timeout
    while seen < a.expected and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            print("consumer error: %s" % msg.error(), file=sys.stderr)
            continue
        data = msg.value()
        if data[:2] == b"\xc3\x01":
            schema = by_fp.get(data[2:10])
            if schema is None:
                sys.exit("unknown single-object fingerprint %s" % data[2:10].hex())
            framing, body = "single-object", data[10:]
        elif data[:1] == b"\x00":
            (schema_id,) = struct.unpack(">I", data[1:5])
            if schema_id not in by_id:
                if not a.registry:
                    sys.exit("Confluent frame with schema id %d and no --registry" % schema_id)
                with urllib.request.urlopen("%s/schemas/ids/%d" % (a.registry, schema_id)) as r:
                    by_id[schema_id] = fastavro.parse_schema(json.loads(json.load(r)["schema"]))
            framing, schema, body = "confluent", by_id[schema_id], data[5:]
        else:
            sys.exit("unknown framing byte %r" % data[:1])
        buf = io.BytesIO(body)
        record = fastavro.schemaless_reader(buf, schema)
        if buf.read():
            sys.exit("trailing bytes after the datum")
        key = msg.key().decode() if msg.key() else None
        print(json.dumps({"framing": framing, "key": key, "record": plain(record)}), flush=True)
        seen += 1
    consumer.close()
    if seen < a.expected:
        sys.exit("only %d of %d messages within %ss" % (seen, a.expected, a.timeout))


if __name__ == "__main__":
    main()
