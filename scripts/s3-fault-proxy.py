#!/usr/bin/env python3
"""A fault-injecting HTTP proxy in front of a real S3-compatible server, for tests (issue 13).

    s3-fault-proxy.py --upstream http://127.0.0.1:8333 [--port 0] [--rules JSON]

Listens on 127.0.0.1 only and prints `PORT <n>` on stdout once it accepts connections. Every
request is forwarded to the upstream server unchanged (the Host header too, which S3's
signature covers) unless a rule says otherwise. Requests under /__fault/ are its control
endpoint (no S3 bucket name starts with an underscore):

    POST /__fault/rules   body: a JSON list of rules, replacing the current ones
    POST /__fault/reset   no rules, counters to zero
    GET  /__fault/stats   JSON: {"requests": N, "by_kind": {"PUT": n, "LIST": n, ...},
                                 "injected": {"503": n, ...}}

A rule: {"fault": F, "method": "PUT", "path": "packs/", "query": "list-type",
         "times": N, "after": K, "ms": D}
  method / path / query   optional filters (path and query: substrings)
  after                   let the first K matching requests through untouched
  times                   inject into the next N matching requests (default: all of them)
  fault                   503 | 500 | slowdown (503 SlowDown) | 403 (AccessDenied) |
                          drop (close the connection without an answer) |
                          cut (forward, then answer with half the body and close) |
                          corrupt (flip one byte of the request body before forwarding) |
                          down (refuse: every connection is closed at once) |
                          delay (wait `ms` milliseconds, then forward)
  sticky                  once this rule fires, every later request (of any kind) gets its
                          fault too, until the rules are replaced (a server that vanishes)
The first rule that matches a request applies. Bounded: it serves until killed.
"""

import argparse
import http.client
import http.server
import json
import socketserver
import sys
import threading
import time
import urllib.parse

HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}

ERRORS = {
    "503": (503, "ServiceUnavailable", "Please reduce your request rate."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "403": (403, "AccessDenied", "Access Denied"),
}


class State:
    def __init__(self, rules):
        self.lock = threading.Lock()
        self.rules = rules
        self.seen = [0] * len(rules)
        self.stuck = None
        self.requests = 0
        self.by_kind = {}
        self.injected = {}

    def set_rules(self, rules):
        with self.lock:
            self.rules = rules
            self.seen = [0] * len(rules)
            self.stuck = None

    def reset(self):
        with self.lock:
            self.rules, self.seen, self.stuck = [], [], None
            self.requests, self.by_kind, self.injected = 0, {}, {}

    def stats(self):
        with self.lock:
            return {"requests": self.requests, "by_kind": dict(self.by_kind),
                    "injected": dict(self.injected)}

    def choose(self, method, path, query):
        """Count the request and return the rule to apply, if any."""
        kind = method
        if method == "GET" and ("list-type" in query or "prefix=" in query or "delimiter" in query):
            kind = "LIST"
        with self.lock:
            self.requests += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
            if self.stuck is not None:
                f = str(self.stuck["fault"])
                self.injected[f] = self.injected.get(f, 0) + 1
                return self.stuck
            for i, r in enumerate(self.rules):
                if r.get("method") and r["method"] != method and r["method"] != kind:
                    continue
                if r.get("path") and r["path"] not in path:
                    continue
                if r.get("query") and r["query"] not in query:
                    continue
                self.seen[i] += 1
                after = r.get("after", 0)
                if self.seen[i] <= after:
                    return None
                times = r.get("times")
                if times is not None and self.seen[i] > after + times:
                    continue
                f = str(r["fault"])
                self.injected[f] = self.injected.get(f, 0) + 1
                if r.get("sticky"):
                    self.stuck = r
                return r
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "s3-fault-proxy"

    def log_message(self, fmt, *args):  # quiet: tests read the counters instead
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def control(self, path, body):
        st = self.server.state
        if path == "/__fault/rules":
            st.set_rules(json.loads(body or b"[]"))
        elif path == "/__fault/reset":
            st.reset()
        out = json.dumps(st.stats()).encode()
        self.answer(200, out, [("Content-Type", "application/json")])

    def handle_any(self):
        body = self.body()
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/__fault/"):
            return self.control(url.path, body)
        rule = self.server.state.choose(self.command, url.path, url.query)
        fault = str(rule["fault"]) if rule else None
        if fault in ("drop", "down"):
            self.close_connection = True
            self.connection.close()
            return
        if fault in ERRORS:
            status, code, msg = ERRORS[fault]
            xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
                   '<Message>%s</Message><Resource>%s</Resource><RequestId>proxy</RequestId>'
                   '</Error>' % (code, msg, url.path)).encode()
            return self.answer(status, xml, [("Content-Type", "application/xml")])
        if fault == "delay":
            time.sleep(rule.get("ms", 1000) / 1000.0)
        if fault == "corrupt" and body:
            i = len(body) // 2
            body = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1:]
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                if k.lower() in HOP or k.lower() == "content-length":
                    continue
                conn.putheader(k, v)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            data = resp.read() if self.command != "HEAD" else b""
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
        except OSError:
            self.close_connection = True
            self.connection.close()
            return
        finally:
            conn.close()
        self.send_response(resp.status, resp.reason)
        for k, v in headers:
            if self.command != "HEAD" and k.lower() == "content-length":
                continue
            self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "cut":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.close()
            return
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rules", default="[]")
    a = ap.parse_args()
    srv = Server(("127.0.0.1", a.port), Handler)
    srv.upstream = urllib.parse.urlsplit(a.upstream)
    srv.state = State(json.loads(a.rules))
    print("PORT %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
