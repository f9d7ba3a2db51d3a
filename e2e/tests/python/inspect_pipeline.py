#!/usr/bin/env python3
"""A client we did not write: confluent-kafka (librdkafka's Python binding) and fastavro.

Reads every message of the given topics and decodes it with fastavro using only the project's
.avsc files (Avro single-object encoding: the CRC-64-AVRO fingerprint of each schema's canonical
form picks the schema), and reads the given consumer groups' committed offsets next to the log
ends. Prints one JSON document:

  {"topics": {topic: {record name: count}},
   "groups": {group: {topic: [[partition, committed, log end], ...]}}}
"""
import argparse
import glob
import io
import json
import os
import sys
import time

import fastavro
from confluent_kafka import Consumer, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form


def schemas(directory):
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.avsc"))):
        with open(path) as f:
            parsed = fastavro.parse_schema(json.load(f))
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        out[fp] = parsed
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--schemas", required=True)
    ap.add_argument("--topic", action="append", default=[])
    ap.add_argument("--group", action="append", default=[], help="GROUP=TOPIC")
    a = ap.parse_args()
    by_fp = schemas(a.schemas)
    conf = {"bootstrap.servers": a.brokers, "broker.address.family": "v4", "enable.auto.commit": False}
    result = {"topics": {}, "groups": {}}

    for topic in a.topic:
        c = Consumer(dict(conf, **{"group.id": "inspect-%d" % os.getpid()}))
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        c.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items()])
        want = sum(hi - lo for lo, hi in ends.values())
        counts, seen, deadline = {}, 0, time.time() + 60
        while seen < want and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            data = m.value()
            if data[:2] != b"\xc3\x01" or data[2:10] not in by_fp:
                sys.exit("%s[%d]@%d: not a single-object frame of a known schema" % (topic, m.partition(), m.offset()))
            schema = by_fp[data[2:10]]
            buf = io.BytesIO(data[10:])
            fastavro.schemaless_reader(buf, schema)
            if buf.read():
                sys.exit("%s[%d]@%d: trailing bytes" % (topic, m.partition(), m.offset()))
            name = schema["name"].rsplit(".", 1)[-1]
            counts[name] = counts.get(name, 0) + 1
            seen += 1
        c.close()
        if seen < want:
            sys.exit("%s: read %d of %d messages" % (topic, seen, want))
        result["topics"][topic] = counts

    for spec in a.group:
        group, topic = spec.split("=", 1)
        c = Consumer(dict(conf, **{"group.id": group}))
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        rows = []
        for tp in committed:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            rows.append([tp.partition, tp.offset, hi])
        c.close()
        result["groups"].setdefault(group, {})[topic] = sorted(rows)

    print(json.dumps(result))


if __name__ == "__main__":
    main()
