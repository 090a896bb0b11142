"""Python requests, one Session, against the record app directly or through a proxy.

Usage: requests_session.py HOST PORT. Prints one JSON object: per case the status,
reason, HTTP version and the app's record of the request (a body over 256 bytes
replaced by its length and SHA-256, so records stay small enough to print); how the
streamed download arrived; and the session's connection pool counts.
"""

import hashlib
import json
import sys

import requests

UPLOAD_PIECES = 64
PIECE = 4096


def pieces():
    # Distinct pieces, so a reordered or dropped one shows in the hash.
    for i in range(UPLOAD_PIECES):
        yield (b"%04d" % i) * (PIECE // 4)


def summarized(record):
    body = record["body"]
    if len(body) > 256:
        data = body.encode("latin-1")
        record["body"] = {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return record


def case(name, r, text=None):
    text = r.text if text is None else text
    return {
        "name": name,
        "status": r.status_code,
        "reason": r.reason,
        "version": r.raw.version,
        "record": summarized(json.loads(text)),
    }


def main():
    base = "http://%s:%s" % (sys.argv[1], sys.argv[2])
    out = {"cases": []}
    with requests.Session() as s:
        r = s.get(base + "/get?x=1&y=%20", timeout=20)
        out["cases"].append(case("GET", r))
        r = s.post(base + "/json", json={"a": 1, "b": ["x", "y"], "c": None}, timeout=20)
        out["cases"].append(case("POST json", r))
        r = s.put(base + "/upload", data=pieces(), timeout=20)
        out["cases"].append(case("chunked upload", r))
        # A large answer (the app echoes the body, chunked), read as it streams.
        big = b"".join(pieces())
        r = s.post(base + "/chunked", data=big, stream=True, timeout=20)
        got = [piece for piece in r.iter_content(chunk_size=16384)]
        r.close()
        out["cases"].append(case("streamed download", r, b"".join(got).decode()))
        out["download"] = {
            "pieces": len(got),
            "bytes": sum(len(p) for p in got),
            "transfer_encoding": r.headers.get("transfer-encoding"),
        }
        r = s.get(base + "/last", timeout=20)
        out["cases"].append(case("GET again", r))
        manager = s.get_adapter(base).poolmanager
        pools = [manager.pools[key] for key in manager.pools.keys()]
        out["pool"] = {
            "pools": len(pools),
            "connections": sum(p.num_connections for p in pools),
            "requests": sum(p.num_requests for p in pools),
        }
    print(json.dumps(out))


main()
