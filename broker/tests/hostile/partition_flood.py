#!/usr/bin/env python3
"""Issue 15's Kafka partition flood: one CreateTopics request, no login,
asking for {big: 9990, big2: 5000} partitions. Before the fix the broker
opened two files per partition (19,998 descriptors), new connections failed
with "Too many open files", and the broker could not restart on its data
directory.

Prints the error code per topic, the broker's open descriptors (/proc/PID/fd)
before and after, whether a new Kafka connection still completes an
ApiVersions round trip, and (with --mqtt) an MQTT CONNECT/CONNACK. Python 3
standard library only.

    broker/tests/hostile/partition_flood.py --kafka 127.0.0.1:9092 --pid PID \
        [--mqtt 127.0.0.1:1883]
"""
import argparse
import os
import socket
import struct
import time

ERRORS = {
    0: "NONE",
    36: "TOPIC_ALREADY_EXISTS",
    37: "INVALID_PARTITIONS",
    41: "NOT_CONTROLLER",
    44: "POLICY_VIOLATION",
    56: "KAFKA_STORAGE_ERROR",
}


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, correlation_id, body):
    req = struct.pack(">hhi", api_key, version, correlation_id) + kstr("flood") + body
    return struct.pack(">i", len(req)) + req


def create_topics(topics, timeout_ms=600_000):
    """CreateTopics v2 body: every topic with replication factor -1."""
    body = struct.pack(">i", len(topics))
    for name, partitions in topics:
        body += kstr(name) + struct.pack(">ihii", partitions, -1, 0, 0)
    return body + struct.pack(">iB", timeout_ms, 0)


def read_frame(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("closed by the broker")
        head += chunk
    size = struct.unpack(">i", head)[0]
    body = b""
    while len(body) < size:
        chunk = s.recv(min(65536, size - len(body)))
        if not chunk:
            raise ConnectionError("closed mid-response")
        body += chunk
    return body


def parse_create_topics(body):
    correlation_id, _throttle, n = struct.unpack(">iii", body[:12])
    i = 12
    out = []
    for _ in range(n):
        (ln,) = struct.unpack(">h", body[i:i + 2])
        name = body[i + 2:i + 2 + ln].decode()
        i += 2 + ln
        (code, mlen) = struct.unpack(">hh", body[i:i + 4])
        i += 4
        message = None
        if mlen >= 0:
            message = body[i:i + mlen].decode(errors="replace")
            i += mlen
        out.append((name, code, message))
    return correlation_id, out


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError as e:
        return f"unreadable ({e.strerror})"


def kafka_round_trip(a):
    try:
        s = socket.create_connection(a, timeout=5)
        s.sendall(frame(18, 0, 7, b""))
        body = read_frame(s)
        s.close()
        return struct.unpack(">ih", body[:6]) == (7, 0)
    except (OSError, ConnectionError, struct.error):
        return False


def mqtt_round_trip(a):
    try:
        s = socket.create_connection(a, timeout=5)
        cid = b"flood-bystander"
        var = b"\x00\x04MQTT\x04\x02\x00\x1e" + struct.pack(">H", len(cid)) + cid
        s.sendall(bytes([0x10, len(var)]) + var)
        connack = s.recv(4)
        s.close()
        return connack[:1] == b"\x20" and connack[3:4] == b"\x00"
    except OSError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kafka", type=addr, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--mqtt", type=addr)
    p.add_argument("--wait", type=float, default=600.0,
                   help="seconds to wait for the CreateTopics answer")
    a = p.parse_args()

    topics = [("big", 9990), ("big2", 5000)]
    before = open_fds(a.pid)
    s = socket.create_connection(a.kafka, timeout=a.wait)
    start = time.time()
    s.sendall(frame(19, 2, 42, create_topics(topics)))
    try:
        correlation_id, results = parse_create_topics(read_frame(s))
        answer = "answered"
    except (OSError, ConnectionError, struct.error) as e:
        correlation_id, results, answer = None, [], f"no answer ({e})"
    elapsed = time.time() - start
    s.close()
    time.sleep(0.5)

    print(f"request:                CreateTopics v2 {dict(topics)} ({answer}, {elapsed * 1000:.0f} ms, correlation id {correlation_id})")
    for name, code, message in results:
        print(f"topic {name + ':':<17} error {code} {ERRORS.get(code, '?')} ({message})")
    print(f"broker fds before:      {before}")
    print(f"broker fds after:       {open_fds(a.pid)}")
    print(f"kafka new connection ok: {kafka_round_trip(a.kafka)}")
    if a.mqtt:
        print(f"mqtt bystander ok:      {mqtt_round_trip(a.mqtt)}")


if __name__ == "__main__":
    main()
