"""httpx with HTTP/2 by prior knowledge (h2c), as a sidecar's app calls its outbound.

Usage: httpx_h2.py HOST PORT. Prints one JSON object: for a GET, a POST with a body
and CONCURRENT GETs sent at once on the client's one connection, the HTTP version
httpx spoke, the status, the body (the record app's JSON) and the local port of the
connection each answer came on; and for a POST of LARGE bytes (more than HTTP/2's
default windows, both ways, as the app echoes it), the length and SHA-256 of what
was sent and of what the app recorded. Then, on the same connection, a body of no
declared length (an async generator) and answers the app frames its own HTTP/1
ways (`Connection: close`, chunked, an HTTP/1.0 status line), which h2's checks
must accept as HTTP/2: under "framings", each as for the GET.
"""

import asyncio
import hashlib
import json
import sys

import httpx

CONCURRENT = 8
LARGE = 1 << 20


def answer(r):
    stream = r.extensions["network_stream"]
    return {
        "http_version": r.http_version,
        "status": r.status_code,
        "body": r.text,
        "local_port": stream.get_extra_info("client_addr")[1],
    }


async def main():
    base = "http://%s:%s" % (sys.argv[1], sys.argv[2])
    out = {}
    # http1=False: HTTP/2 with prior knowledge, no Upgrade dance.
    async with httpx.AsyncClient(http1=False, http2=True, timeout=20) as client:
        r = await client.get(base + "/get?x=1", headers={"x-trace": "abc"})
        out["get"] = answer(r)
        r = await client.post(
            base + "/post",
            content=b"name=weft&body=1",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        out["post"] = answer(r)
        rs = await asyncio.gather(
            *[client.get("%s/concurrent/%d" % (base, i)) for i in range(CONCURRENT)]
        )
        out["concurrent"] = [answer(r) for r in rs]
        sent = b"".join(b"%07d\n" % i for i in range(LARGE // 8))
        r = await client.post(base + "/large", content=sent)
        large = answer(r)
        recorded = json.loads(large.pop("body"))["body"].encode("latin-1")
        large["sent"] = [len(sent), hashlib.sha256(sent).hexdigest()]
        large["recorded"] = [len(recorded), hashlib.sha256(recorded).hexdigest()]
        out["large"] = large

        async def pieces():
            for i in range(4):
                yield b"piece %d;" % i

        framings = {}
        r = await client.post(base + "/streamed", content=pieces())
        framings["streamed upload"] = answer(r)
        for path in ("/close", "/chunked", "/v10"):
            framings[path] = answer(await client.get(base + path))
        out["framings"] = framings
    print(json.dumps(out))


asyncio.run(main())
