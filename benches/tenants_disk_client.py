#!/usr/bin/env python3
"""Client side of benches/tenants_disk.sh (standard library only).

  pass URL N [CONNS]         requests URL/t1 .. URL/tN once each over CONNS
                             keep-alive connections; prints JSON: statuses
                             and Cache-Status kinds (hit, disk, stale, miss,
                             error)
  latency URL ADMIN NAME K   asks the admin listener for up to K tenants of
                             template NAME only on disk (GET
                             /documents?tier=disk), requests each once on one
                             keep-alive connection, and prints JSON: the
                             latency percentiles of the answers that came
                             from disk (Cache-Status detail=disk)
  generate DIR NAME ISSUER_PREFIX URL_PREFIX N
                             writes N valid tenant state files t1..tN of
                             template NAME into DIR (the format of
                             src/cache/persist/store.rs), fetched now, with
                             increasing modification times

Every request has a 10 s timeout; nothing here runs unbounded.
"""

import hashlib
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

PREFIX = "/.well-known/oauth-authorization-server/"


def kind(cache_status, status):
    if status != 200:
        return "error"
    if "detail=disk" in cache_status:
        return "disk"
    if "; hit" in cache_status:
        return "hit"
    if "fwd=stale" in cache_status:
        return "stale"
    return "miss"


def connect(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return r.status, r.getheader("cache-status") or "", body


def do_pass(url, n, conns):
    counts = {}
    lock = threading.Lock()
    todo = list(range(1, n + 1))

    def worker():
        conn = connect(url)
        while True:
            with lock:
                if not todo:
                    break
                i = todo.pop()
            try:
                status, cs, _ = get(conn, f"{PREFIX}t{i}")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = connect(url)
                status, cs = 0, ""
            k = kind(cs, status)
            with lock:
                counts[k] = counts.get(k, 0) + 1
                counts[f"status_{status}"] = counts.get(f"status_{status}", 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(counts, sort_keys=True))


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def latency(url, admin, name, k):
    q = urllib.parse.urlencode({"tier": "disk", "document": name, "limit": k})
    conn = connect(admin)
    status, _, body = get(conn, f"/documents?{q}")
    conn.close()
    if status != 200:
        sys.exit(f"/documents answered {status}")
    tenants = [d["tenant"] for d in json.loads(body)["documents"]]
    conn = connect(url)
    disk, other = [], 0
    for t in tenants:
        start = time.perf_counter()
        status, cs, _ = get(conn, f"{PREFIX}{t}")
        elapsed = time.perf_counter() - start
        if status == 200 and "detail=disk" in cs:
            disk.append(elapsed * 1000)
        else:
            other += 1
    conn.close()
    disk.sort()
    print(
        json.dumps(
            {
                "asked": len(tenants),
                "from_disk": len(disk),
                "other": other,
                "p50_ms": percentile(disk, 50),
                "p90_ms": percentile(disk, 90),
                "p99_ms": percentile(disk, 99),
                "max_ms": disk[-1] if disk else None,
            }
        )
    )


def document(issuer):
    # benches/tenant_upstream.py's document, so the gateway's validation
    # (issuer included) applies to it as to a fetched one.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from tenant_upstream import document as upstream_document

    return upstream_document(issuer)


def generate(directory, name, issuer_prefix, url_prefix, n):
    os.makedirs(directory, exist_ok=True)
    tag = hashlib.sha256(name.encode()).hexdigest()[:32]
    now_ms = int(time.time() * 1000)
    base = time.time() - n / 1000
    for i in range(1, n + 1):
        tenant = f"t{i}"
        body = document(issuer_prefix + tenant)
        header = {
            "format": "oauth-metadata-gateway/state/2",
            "key": f"{name}@{tenant}",
            "issuer": issuer_prefix + tenant,
            "upstream_url": url_prefix + tenant,
            "fetched_at_unix_ms": now_ms,
            "upstream_age_ms": 0,
            "lifetime_ms": 3_600_000,
            "etag": None,
            "last_modified": None,
            "cache_control": None,
            "expires": None,
            "advertised_ms": 3_600_000,
            "stale_if_error_until_ms": None,
            "body_len": len(body),
        }
        prefix = json.dumps(header, separators=(",", ":"))[:-1].encode()
        digest = hashlib.sha256(prefix + body).hexdigest()
        data = prefix + b',"sha256":"' + digest.encode() + b'"}\n' + body
        path = os.path.join(directory, f"m-{tag}-{tenant}.json-doc")
        with open(path, "wb") as f:
            f.write(data)
        t = base + i / 1000
        os.utime(path, (t, t))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    a = sys.argv[2:]
    if cmd == "pass" and len(a) in (2, 3):
        do_pass(a[0], int(a[1]), int(a[2]) if len(a) == 3 else 8)
    elif cmd == "latency" and len(a) == 4:
        latency(a[0], a[1], a[2], int(a[3]))
    elif cmd == "generate" and len(a) == 5:
        generate(a[0], a[1], a[2], a[3], int(a[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
