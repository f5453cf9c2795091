#!/usr/bin/env python3
"""A test authorization server for benches/soak.sh that flaps.

It serves GET /.well-known/oauth-authorization-server on 127.0.0.1 and
cycles through phases of --phase-seconds each:

  good     200 application/json, a valid RFC 8414 document
  down     the connection is closed without an answer
  good
  slow     a valid document, but only after --slow-seconds (longer than the
           gateway's --upstream-timeout, so the fetch times out)
  good
  garbage  200 application/json with random bytes (refused by validation)

It counts requests per phase and writes them as JSON to --stats when it
gets SIGTERM/SIGINT or after --max-seconds (a safety bound: it always stops
by itself). Standard library only.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = "/.well-known/oauth-authorization-server"
CYCLE = ["good", "down", "good", "slow", "good", "garbage"]


def metadata(issuer):
    """A valid RFC 8414 document for issuer, as a dict."""
    return {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/oauth/authorize",
        "token_endpoint": issuer + "/oauth/token",
        "registration_endpoint": issuer + "/oauth/register",
        "scopes_supported": ["user:read", "entries:read"],
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
    }


def document(issuer):
    return json.dumps(metadata(issuer), separators=(",", ":")).encode()


class State:
    def __init__(self, phase_seconds, slow_seconds, issuer):
        self.started = time.monotonic()
        self.phase_seconds = phase_seconds
        self.slow_seconds = slow_seconds
        self.body = document(issuer)
        self.lock = threading.Lock()
        self.counts = {name: 0 for name in CYCLE}

    def phase(self):
        i = int((time.monotonic() - self.started) // self.phase_seconds)
        return CYCLE[i % len(CYCLE)]

    def count(self, phase):
        with self.lock:
            self.counts[phase] += 1


def handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path != PATH:
                self.send_error(404)
                return
            phase = state.phase()
            state.count(phase)
            if phase == "down":
                self.close_connection = True
                self.connection.close()
                return
            if phase == "slow":
                time.sleep(state.slow_seconds)
            body = os.urandom(256) if phase == "garbage" else state.body
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--phase-seconds", type=float, default=10.0)
    p.add_argument("--slow-seconds", type=float, default=3.0)
    p.add_argument("--max-seconds", type=float, required=True)
    p.add_argument("--stats", required=True)
    a = p.parse_args()

    issuer = f"http://127.0.0.1:{a.port}"
    state = State(a.phase_seconds, a.slow_seconds, issuer)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), handler(state))
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Timer(a.max_seconds, stop).start()
    print(f"flapping upstream on {issuer}, phases {CYCLE} x {a.phase_seconds}s", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    with open(a.stats, "w") as f:
        json.dump({"requests_by_phase": state.counts}, f)
    # The safety timer thread may still be waiting; do not wait for it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
