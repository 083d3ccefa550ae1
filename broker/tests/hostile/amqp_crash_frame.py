#!/usr/bin/env python3
"""Issue 15's pre-authentication crash: after the AMQP protocol header, one
~130 KB `connection.start` frame (a server-to-client method) whose
server_properties nest 26,000 arrays. Before the fix the broker overflowed its
stack and aborted, taking MQTT and Kafka with it.

Prints what the AMQP connection got back, whether the broker process is still
alive, and whether an MQTT and a Kafka bystander still complete a round trip.
Python 3 standard library only.

    broker/tests/hostile/amqp_crash_frame.py --amqp 127.0.0.1:5672 \
        --mqtt 127.0.0.1:1883 --kafka 127.0.0.1:9092 --pid PID
"""
import argparse
import os
import socket
import struct
import time


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def nested_arrays(depth):
    # value_k = 'A' + u32(len(value_{k-1})) + value_{k-1}; len(value_k) = 5 (k + 1)
    return b"".join(b"A" + struct.pack(">I", 5 * k) for k in range(depth - 1, -1, -1))


def crash_frame(depth):
    table_entry = b"\x01a" + nested_arrays(depth)
    payload = (
        struct.pack(">HHBB", 10, 10, 0, 9)
        + struct.pack(">I", len(table_entry))
        + table_entry
        + struct.pack(">I", 5) + b"PLAIN"
        + struct.pack(">I", 5) + b"en_US"
    )
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def read_some(s, deadline):
    s.settimeout(max(0.1, deadline - time.time()))
    data = b""
    try:
        while time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                return data, "closed"
            data += chunk
    except socket.timeout:
        return data, "open"
    except OSError as e:
        return data, f"error: {e}"
    return data, "open"


def close_code(data):
    # Find a connection.close (class 10, method 50) method frame in what came back.
    i = 0
    while i + 7 <= len(data):
        ftype, channel, size = struct.unpack(">BHI", data[i:i + 7])
        body = data[i + 7:i + 7 + size]
        if ftype == 1 and len(body) >= 6:
            cls, meth, code = struct.unpack(">HHH", body[:6])
            if (cls, meth) == (10, 50):
                return code
        i += 8 + size
    return None


def mqtt_round_trip(a):
    try:
        s = socket.create_connection(a, timeout=5)
        cid = b"crash-bystander"
        var = b"\x00\x04MQTT\x04\x02\x00\x1e" + struct.pack(">H", len(cid)) + cid
        s.sendall(bytes([0x10, len(var)]) + var)
        connack = s.recv(4)
        s.close()
        return connack[:1] == b"\x20" and connack[3:4] == b"\x00"
    except OSError:
        return False


def kafka_round_trip(a):
    try:
        s = socket.create_connection(a, timeout=5)
        req = struct.pack(">hhih", 18, 0, 7, 1) + b"t"
        s.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", s.recv(4))[0]
        body = b""
        while len(body) < size:
            body += s.recv(size - len(body))
        s.close()
        return struct.unpack(">ih", body[:6]) == (7, 0)
    except OSError:
        return False


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amqp", type=addr, required=True)
    p.add_argument("--mqtt", type=addr, required=True)
    p.add_argument("--kafka", type=addr, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--depth", type=int, default=26000)
    a = p.parse_args()

    frame = crash_frame(a.depth)
    s = socket.create_connection(a.amqp, timeout=5)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    read_some(s, time.time() + 0.5)  # the broker's own connection.start
    start = time.time()
    try:
        s.sendall(frame)
    except OSError as e:
        print(f"send failed: {e}")
    data, state = read_some(s, time.time() + 5)
    elapsed = time.time() - start
    time.sleep(0.5)
    print(f"frame bytes:            {len(frame)} (depth {a.depth})")
    print(f"amqp answer:            connection.close {close_code(data)} ({len(data)} bytes, socket {state}, {elapsed * 1000:.0f} ms)")
    print(f"broker alive:           {alive(a.pid)}")
    print(f"mqtt bystander ok:      {mqtt_round_trip(a.mqtt)}")
    print(f"kafka bystander ok:     {kafka_round_trip(a.kafka)}")


if __name__ == "__main__":
    main()
