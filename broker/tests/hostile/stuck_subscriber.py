#!/usr/bin/env python3
"""Stuck MQTT subscriber reproducer (issue 15), Python 3 standard library only.

Connects a raw MQTT 3.1.1 subscriber on `#` at QoS 1 that never sends PUBACK
and never reads, then a publisher on an unrelated topic that sends --count
QoS 1 PUBLISHes as fast as the socket takes them, and prints how many PUBACKs
the publisher got within --seconds and how long that took.

    python3 broker/tests/hostile/stuck_subscriber.py --mqtt 127.0.0.1:1883 \
        [--count 5000] [--seconds 20] [--payload 16]

Before the slow-subscriber policy the publisher stalls after the stuck
subscriber's in-flight window plus queue (e.g. 1,100 PUBACKs); with it, every
PUBACK arrives. Exit status 0 when all PUBACKs arrived, 1 otherwise.
"""

import argparse
import select
import socket
import struct
import sys
import threading
import time


def mqtt_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    out = bytearray([first])
    n = len(body)
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            break
    return bytes(out) + body


def connect_packet(client_id, keep_alive=600):
    body = mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keep_alive)
    return packet(0x10, body + mqtt_str(client_id))


def read_exact(sock, n, deadline):
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the broker")
        buf += chunk
    return buf


def read_packet(sock, deadline):
    first = read_exact(sock, 1, deadline)[0]
    length, shift = 0, 0
    for _ in range(4):
        b = read_exact(sock, 1, deadline)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first, read_exact(sock, length, deadline)


def session(host, port, client_id):
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(client_id))
    first, body = read_packet(sock, time.monotonic() + 10)
    if first >> 4 != 2 or body[1] != 0:
        sys.exit(f"{client_id}: CONNACK refused: {first:#x} {body!r}")
    return sock


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mqtt", required=True, help="HOST:PORT of the MQTT listener")
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--payload", type=int, default=16, help="payload bytes")
    args = ap.parse_args()
    host, _, port = args.mqtt.rpartition(":")
    port = int(port)
    if not host.startswith("127."):
        sys.exit("traffic only to 127.0.0.0/8")
    count = max(1, min(args.count, 65535))

    # The stuck subscriber: subscribes to `#` at QoS 1, then never reads again.
    stuck = session(host, port, "stuck-sub-%d" % int(time.time() * 1000))
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(packet(0x82, struct.pack("!H", 1) + mqtt_str("#") + b"\x01"))
    first, _ = read_packet(stuck, time.monotonic() + 10)
    if first >> 4 != 9:
        sys.exit(f"expected SUBACK, got {first:#x}")

    pub = session(host, port, "stuck-pub-%d" % int(time.time() * 1000))
    payload = b"x" * args.payload
    acks = 0
    closed = False
    start = time.monotonic()
    deadline = start + args.seconds
    stop = threading.Event()

    def writer():
        # Sent from a thread so a broker that stops reading cannot block the counting.
        try:
            for i in range(1, count + 1):
                if stop.is_set():
                    return
                body = mqtt_str("unrelated/topic/%d" % (i % 10)) + struct.pack("!H", i) + payload
                pub.sendall(packet(0x32, body))
        except OSError:
            pass

    threading.Thread(target=writer, daemon=True).start()
    buf = b""
    while acks < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([pub], [], [], left)
        if not ready:
            break
        chunk = pub.recv(65536)
        if not chunk:
            closed = True
            break
        buf += chunk
        # Every packet the publisher gets here is a 4-byte PUBACK (0x40 0x02 id id).
        while len(buf) >= 4:
            if buf[0] != 0x40:
                sys.exit(f"unexpected packet {buf[:8]!r}")
            acks += 1
            buf = buf[4:]
    elapsed = time.monotonic() - start
    stop.set()
    print(
        f"pubacks {acks}/{count} in {elapsed:.2f} s"
        + (" (publisher closed by the broker)" if closed else "")
        + (" STALLED" if acks < count else "")
    )
    # Is the stuck subscriber still connected? Drain what it was sent (bounded):
    # a closed connection ends in EOF or a reset, an open one in "no data yet".
    state = "open"
    stuck.setblocking(False)
    try:
        for _ in range(100000):
            if stuck.recv(65536) == b"":
                state = "closed by the broker"
                break
    except BlockingIOError:
        pass
    except OSError:
        state = "closed by the broker"
    print(f"stuck subscriber: {state}")
    return 0 if acks == count else 1


if __name__ == "__main__":
    sys.exit(main())
