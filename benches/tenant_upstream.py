#!/usr/bin/env python3
"""A loopback multi-tenant authorization server for benches/tenants.sh.

It listens on 127.0.0.1 on every --port given and answers

  GET /.well-known/oauth-authorization-server/<tenant>

after --delay seconds with 200 application/json: an RFC 8414 document whose
issuer is exactly http://127.0.0.1:<port>/<tenant>, <port> being the port
the request came in on. Every well-formed tenant name is answered (letters,
digits, '-' and '_', at most 64 characters), so tenant1..tenantN serve the
configured issuers and any other name serves a template tenant; anything
else is a 404.

  GET /_stats

answers at once with JSON, per port: requests (documents served), not_found,
in_flight, peak_in_flight (most document requests waiting on their delay at
the same time), distinct_tenants; and the delay. /_stats is not counted.

With --jwks, every document also names a key set, "jwks_uri":
"http://127.0.0.1:<port>/<tenant>/jwks", and GET /<tenant>/jwks answers
(after --delay) a 2-key RSA JWK Set of the tenant (2048-bit moduli made up
from the tenant name: distinct bytes per tenant, about 900 bytes; the
gateway checks the set's shape, not the numbers).

No Cache-Control header is sent (like a static file: nginx proxy_cache then
caches for proxy_cache_valid). HTTP/1.1 with keep-alive (HTTP/1.0 and "Connection: close" close after the
answer), asyncio, standard library only; it holds thousands of concurrent
connections. It stops on SIGTERM/SIGINT or after --max-seconds (a safety
bound: it always stops by itself).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import re
import signal

from flapping_upstream import metadata

PREFIX = "/.well-known/oauth-authorization-server/"
TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_HEAD = 16 * 1024


def document(issuer):
    """About 650 bytes: flapping_upstream's document and the other members
    the reference server's document has."""
    d = metadata(issuer)
    d["scopes_supported"] += ["entries:write", "tags:read"]
    d["response_modes_supported"] = ["query"]
    d["token_endpoint_auth_methods_supported"] = ["client_secret_basic", "none"]
    d["revocation_endpoint"] = issuer + "/oauth/revoke"
    return json.dumps(d, separators=(",", ":")).encode()


def key_set(tenant):
    """A 2-key RSA JWK Set for tenant: kids <tenant>-1, <tenant>-2."""
    keys = []
    for i in (1, 2):
        seed = f"{tenant}/{i}".encode()
        raw = b"".join(hashlib.sha256(seed + bytes([j])).digest() for j in range(8))  # 256 bytes
        n = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        keys.append({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": f"{tenant}-{i}", "n": n, "e": "AQAB"})
    return json.dumps({"keys": keys}, separators=(",", ":")).encode()


class PortStats:
    def __init__(self):
        self.requests = 0
        self.not_found = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.tenants = set()

    def as_json(self):
        return {
            "requests": self.requests,
            "not_found": self.not_found,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "distinct_tenants": len(self.tenants),
        }


class Server:
    def __init__(self, delay, ports, jwks=False):
        self.delay = delay
        self.jwks = jwks
        self.stats = {port: PortStats() for port in ports}

    def stats_body(self):
        return json.dumps(
            {"delay": self.delay, "ports": {str(p): s.as_json() for p, s in self.stats.items()}}
        ).encode()

    async def answer(self, port, path):
        """(status, content type, body) for a GET of path on port."""
        if path == "/_stats":
            return 200, "application/json", self.stats_body()
        st = self.stats[port]
        tenant = path[len(PREFIX):] if path.startswith(PREFIX) else ""
        keys = False
        if self.jwks and not tenant and path.endswith("/jwks"):
            tenant, keys = path[1:-len("/jwks")], True
        if not TENANT.fullmatch(tenant):
            st.not_found += 1
            return 404, "text/plain", b"not found\n"
        st.requests += 1
        st.in_flight += 1
        st.peak_in_flight = max(st.peak_in_flight, st.in_flight)
        if len(st.tenants) < 1_000_000:
            st.tenants.add(tenant)
        try:
            if self.delay > 0:
                await asyncio.sleep(self.delay)
        finally:
            st.in_flight -= 1
        issuer = f"http://127.0.0.1:{port}/{tenant}"
        if keys:
            return 200, "application/json", key_set(tenant)
        if self.jwks:
            d = json.loads(document(issuer))
            d["jwks_uri"] = issuer + "/jwks"
            return 200, "application/json", json.dumps(d, separators=(",", ":")).encode()
        return 200, "application/json", document(issuer)

    async def connection(self, port, reader, writer):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    return
                method, target, version = parts
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip().lower()
                keep = version == "HTTP/1.1" and headers.get("connection") != "close"
                if method not in ("GET", "HEAD"):
                    status, ctype, body = 405, "text/plain", b"method not allowed\n"
                else:
                    status, ctype, body = await self.answer(port, target.split("?", 1)[0])
                reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[status]
                out = (
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
                ).encode()
                writer.write(out if method == "HEAD" else out + body)
                await writer.drain()
                if not keep:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--delay", type=float, default=0.05, help="seconds before each document answer")
    p.add_argument("--max-seconds", type=float, required=True)
    p.add_argument("--jwks", action="store_true", help="documents name a key set, served at /<tenant>/jwks")
    a = p.parse_args()

    server = Server(a.delay, a.port, a.jwks)
    listeners = []
    for port in a.port:
        def handle(reader, writer, port=port):
            return server.connection(port, reader, writer)

        listeners.append(
            await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096, limit=MAX_HEAD)
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"tenant upstream on 127.0.0.1 ports {a.port}, delay {a.delay}s", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), a.max_seconds)
    except asyncio.TimeoutError:
        print("stopping: --max-seconds reached", flush=True)
    for listener in listeners:
        listener.close()


if __name__ == "__main__":
    asyncio.run(main())
