#!/usr/bin/env python3
"""A client we did not write: confluent-kafka (librdkafka's Python binding) and fastavro.

Reads every message of the given topics and decodes it with fastavro, and reads the given
consumer groups' committed offsets next to the log ends. The schema comes from one source only:

* --schemas DIR: the project's .avsc files; every message must be an Avro single-object frame
  (the CRC-64-AVRO fingerprint of each schema's canonical form picks the schema);
* --registry URL: a Confluent-compatible schema registry, as the compose stack runs; every message
  must be Confluent-framed (00 + 4-byte schema id) and its schema is fetched by id. The report
  then also says, per topic, the subjects holding the ids seen (from the registry's own
  /subjects/{s}/versions/latest), and each subject's compatibility (/config/{s}).

Prints one JSON document:

  {"topics": {topic: {record name: count}},
   "subjects": {topic: {subject: count}}, "compatibility": {subject: level},
   "groups": {group: {topic: [[partition, committed, log end], ...]}}}
"""
import argparse
import glob
import io
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request

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


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


class Registry:
    """Schemas by id, and the subjects holding each id, read from a registry over HTTP."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.by_id = {}
        self.subjects_of = {}
        self.compatibility = {}
        for subject in get_json(self.url + "/subjects"):
            latest = get_json("%s/subjects/%s/versions/latest" % (self.url, subject))
            self.subjects_of.setdefault(latest["id"], []).append(subject)
            try:
                level = get_json("%s/config/%s" % (self.url, subject))["compatibilityLevel"]
            except urllib.error.HTTPError:
                level = None
            self.compatibility[subject] = level

    def schema(self, schema_id):
        if schema_id not in self.by_id:
            text = get_json("%s/schemas/ids/%d" % (self.url, schema_id))["schema"]
            self.by_id[schema_id] = fastavro.parse_schema(json.loads(text))
        return self.by_id[schema_id]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--schemas", help="directory of .avsc files (single-object frames)")
    src.add_argument("--registry", help="Confluent-compatible registry URL (Confluent frames)")
    ap.add_argument("--topic", action="append", default=[])
    ap.add_argument("--group", action="append", default=[], help="GROUP=TOPIC")
    a = ap.parse_args()
    by_fp = schemas(a.schemas) if a.schemas else {}
    registry = Registry(a.registry) if a.registry else None
    conf = {"bootstrap.servers": a.brokers, "broker.address.family": "v4", "enable.auto.commit": False}
    result = {"topics": {}, "subjects": {}, "groups": {}}
    if registry:
        result["compatibility"] = registry.compatibility

    for topic in a.topic:
        c = Consumer(dict(conf, **{"group.id": "inspect-%d" % os.getpid()}))
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        c.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items()])
        want = sum(hi - lo for lo, hi in ends.values())
        counts, subjects, seen, deadline = {}, {}, 0, time.time() + 60
        while seen < want and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            data = m.value()
            where = "%s[%d]@%d" % (topic, m.partition(), m.offset())
            if registry:
                if data[:1] != b"\x00" or len(data) < 5:
                    sys.exit("%s: not a Confluent frame" % where)
                (schema_id,) = struct.unpack(">I", data[1:5])
                schema, body = registry.schema(schema_id), data[5:]
                for subject in registry.subjects_of.get(schema_id, ["(no subject)"]):
                    subjects[subject] = subjects.get(subject, 0) + 1
            else:
                if data[:2] != b"\xc3\x01" or data[2:10] not in by_fp:
                    sys.exit("%s: not a single-object frame of a known schema" % where)
                schema, body = by_fp[data[2:10]], data[10:]
            buf = io.BytesIO(body)
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
        result["subjects"][topic] = subjects

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
