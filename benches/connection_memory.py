#!/usr/bin/env python3
"""Holds abusive connections open against a gateway and reports its RSS.

Used by benches/connection_memory.sh to measure what one misbehaving
connection costs the gateway, for sizing memory limits:

  idle     connect and send nothing
  head     send an incomplete HTTP/1.1 request head of --bytes bytes
  h2       TLS + ALPN h2: connection preface, then an HTTP/2 HEADERS frame
           without END_HEADERS followed by CONTINUATION frames, --bytes in
           all, never finishing the header block

Opens --count connections (bounded), waits --hold seconds (keep it below the
gateway's --client-request-timeout), prints the gateway's RSS in KiB, then
closes everything. Loopback only. Standard library only.
"""

import argparse
import socket
import ssl
import struct
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def frame(kind, flags, stream, payload):
    # RFC 9113 §4.1: 24-bit length, type, flags, 31-bit stream id.
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_flood(sock, total):
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, b""))
    chunk = 16384  # the default SETTINGS_MAX_FRAME_SIZE
    sent = 0
    kind = 0x1  # HEADERS, then CONTINUATION (0x9); END_HEADERS never set
    while sent < total:
        n = min(chunk, total - sent)
        sock.sendall(frame(kind, 0, 1, b"\x00" * n))
        kind = 0x9
        sent += n


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--mode", choices=["idle", "head", "h2"], required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--hold", type=float, default=2.0)
    a = p.parse_args()
    if not 1 <= a.count <= 5000:
        raise SystemExit("--count must be 1..5000")

    ctx = None
    if a.mode == "h2":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])

    before = rss_kib(a.pid)
    socks = []
    started = time.monotonic()
    for _ in range(a.count):
        s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        if a.mode == "head":
            s.sendall(b"GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: gw\r\nX-Pad: ")
            s.sendall(b"a" * a.bytes)
        elif a.mode == "h2":
            s = ctx.wrap_socket(s)
            if s.selected_alpn_protocol() != "h2":
                raise SystemExit("the server did not negotiate h2")
            h2_flood(s, a.bytes)
        socks.append(s)
    opened = time.monotonic() - started
    time.sleep(a.hold)
    after = rss_kib(a.pid)
    print(
        f"mode={a.mode} count={a.count} bytes={a.bytes} opened_in={opened:.2f}s "
        f"rss_before_kib={before} rss_after_kib={after} "
        f"per_connection_kib={(after - before) / a.count:.1f}",
        flush=True,
    )
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


if __name__ == "__main__":
    main()
