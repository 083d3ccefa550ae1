#!/usr/bin/env python3
"""Fetch amplification reproducer (issue 15), Python 3 standard library only.

Creates a topic (Metadata v1 auto-creates it), produces about --bytes of
records into partition 0 (Produce v3, one record batch per request), then
sends one Fetch v4 listing partition 0 --copies times with max_bytes and
partition_max_bytes = i32::MAX, and prints the request size, the response
size and the amplification factor.

Before the fix the broker answered each copy with the whole partition
(1,071-byte request, 67 MB response, 62,665x); with it, duplicates are
answered once and responses are capped by kafka.fetch_max_bytes.

    python3 broker/tests/hostile/fetch_amplification.py --kafka 127.0.0.1:9092
"""

import argparse
import socket
import struct
import sys
import time

I32_MAX = 0x7FFFFFFF


def crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC_TABLE = crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(n):
    n = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def record_batch(value):
    """One uncompressed v2 batch holding one record."""
    body = b"\x00" + varint(0) + varint(0) + varint(-1) + varint(len(value)) + value + varint(0)
    record = varint(len(body)) + body
    now = int(time.time() * 1000)
    # attributes .. records: what the CRC covers
    after_crc = struct.pack(">hiqqqhii", 0, 0, now, now, -1, -1, -1, 1) + record
    crc = crc32c(after_crc)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def frame(api_key, version, correlation_id, body):
    payload = struct.pack(">hhi", api_key, version, correlation_id) + string("amplify") + body
    return struct.pack(">i", len(payload)) + payload


def read_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("closed by the broker")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def call(sock, api_key, version, correlation_id, body):
    """Sends one request; returns (request bytes, response bytes, response body)."""
    req = frame(api_key, version, correlation_id, body)
    sock.sendall(req)
    (size,) = struct.unpack(">i", read_exact(sock, 4))
    resp = read_exact(sock, size)
    (cid,) = struct.unpack(">i", resp[:4])
    if cid != correlation_id:
        raise RuntimeError(f"correlation id {cid}, expected {correlation_id}")
    return len(req), 4 + size, resp[4:]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kafka", required=True, help="HOST:PORT of the Kafka listener")
    ap.add_argument("--topic", default="amplify-%d" % int(time.time()))
    ap.add_argument("--bytes", type=int, default=1 << 20, help="data to produce first (default 1 MiB)")
    ap.add_argument("--copies", type=int, default=64, help="times partition 0 is listed (default 64)")
    args = ap.parse_args()
    host, port = args.kafka.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)

    # Metadata v1 for the topic: auto-creates it.
    body = struct.pack(">i", 1) + string(args.topic)
    call(sock, 3, 1, 1, body)

    # Produce v3, acks=1: one 16,000-byte record per batch.
    value = b"v" * 16000
    produced = 0
    cid = 2
    while produced < args.bytes:
        batch = record_batch(value)
        body = (
            struct.pack(">hhi", -1, 1, 10000)
            + struct.pack(">i", 1) + string(args.topic)
            + struct.pack(">i", 1) + struct.pack(">i", 0)
            + struct.pack(">i", len(batch)) + batch
        )
        _, _, resp = call(sock, 0, 3, cid, body)
        # responses[1]: topic string, partitions[1]: index i32, error i16
        (name_len,) = struct.unpack(">h", resp[4:6])
        error = struct.unpack(">h", resp[6 + name_len + 4 + 4:6 + name_len + 4 + 4 + 2])[0]
        if error != 0:
            sys.exit(f"produce failed with error code {error}")
        produced += len(batch)
        cid += 1

    # Fetch v4: replica -1, max_wait 0, min_bytes 0, max_bytes i32::MAX,
    # isolation 0, one topic listing partition 0 `copies` times.
    partition = struct.pack(">iqi", 0, 0, I32_MAX)
    body = (
        struct.pack(">iiiib", -1, 0, 0, I32_MAX, 0)
        + struct.pack(">i", 1) + string(args.topic)
        + struct.pack(">i", args.copies) + partition * args.copies
    )
    started = time.monotonic()
    try:
        req_bytes, resp_bytes, _ = call(sock, 1, 4, cid, body)
    except ConnectionError as e:
        sys.exit(f"fetch: {e}")
    elapsed = time.monotonic() - started
    print(f"topic:          {args.topic} ({produced} bytes in partition 0)")
    print(f"request bytes:  {req_bytes}")
    print(f"response bytes: {resp_bytes}")
    print(f"amplification:  {resp_bytes / req_bytes:.1f}x  ({elapsed:.2f} s)")


if __name__ == "__main__":
    main()
