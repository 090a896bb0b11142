"""An HTTP/1.1-only app on Python's http.server that answers every request with
what it received, as JSON: the request line, the header fields in order and case,
how the body was framed, the body, and any trailers.

Usage: record_app.py PORT. Paths steer the answer: /close answers with
`Connection: close`; /chunked answers with a chunked body; /v10 answers with an
HTTP/1.0 status line; every answer's reason phrase is "Recorded Fine", which is no
status's usual one. GET /__seen answers the request lines of every request so far
(itself not among them), in order, so a test can tell what arrived how often.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


SEEN = []
SEEN_LOCK = threading.Lock()


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("record-app: " + (fmt % args) + "\n")

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            body, trailers = b"", []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
            while True:
                line = self.rfile.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                trailers.append([name, value.strip()])
            return "chunked", body, trailers
        length = self.headers.get("Content-Length")
        if length is not None:
            return "length", self.rfile.read(int(length)), []
        return "none", b"", []

    def answer(self):
        if self.path == "/__seen":
            with SEEN_LOCK:
                out = json.dumps(SEEN).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        with SEEN_LOCK:
            SEEN.append(self.raw_requestline.decode("latin-1").rstrip("\r\n"))
        framing, body, trailers = self.read_body()
        record = {
            "request_line": self.raw_requestline.decode("latin-1").rstrip("\r\n"),
            "headers": [[k, v] for k, v in self.headers.raw_items()],
            "framing": framing,
            "body": body.decode("latin-1"),
            "trailers": trailers,
        }
        out = json.dumps(record).encode()
        if self.path.startswith("/v10"):
            self.protocol_version = "HTTP/1.0"
        self.send_response(200, "Recorded Fine")
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/close"):
            self.send_header("Connection", "close")
            self.close_connection = True
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                half = len(out) // 2
                for part in (out[:half], out[half:]):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = answer


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Recorder).serve_forever()
