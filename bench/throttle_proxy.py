#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A loopback HTTP/1.1 reverse proxy that makes a local registry look remote.

    throttle_proxy.py --upstream http://127.0.0.1:PORT [--rate-mbit 200] [--latency-ms 5]
                      [--burst-kib 64] [--listen 127.0.0.1:0]

Prints "PORT <port>" on stdout once listening. Every request waits --latency-ms before it
is forwarded (a fixed cost per request, as a round trip to a remote registry would add),
and every response body byte passes one token bucket of --rate-mbit shared by all
connections (one link). Bodies are streamed in 64 KiB pieces, never buffered whole;
client connections are kept alive and each holds one kept-alive upstream connection.
The client's Host header is forwarded, so the registry's Location headers point back here.

    GET /__throttle/stats   {"requests": N, "body_bytes": N, "paths": {...}} since the last reset
    POST /__throttle/reset  zero the counters

Stdlib only.
"""

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}
PIECE = 64 * 1024


class TokenBucket:
    """rate bytes/s with a burst of `burst` bytes. take(n) may drive the balance below
    zero; the caller then sleeps until the debt is paid, so concurrent takers are served
    in arrival order and the long-run rate holds exactly."""

    def __init__(self, rate, burst):
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self, n):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            wait = -self.tokens / self.rate if self.tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.requests = 0
        self.body_bytes = 0
        self.kinds = {}

    def add(self, path, nbytes):
        kind = "blobs" if "/blobs/" in path else "manifests" if "/manifests/" in path else "other"
        with self.lock:
            self.requests += 1
            self.body_bytes += nbytes
            k = self.kinds.setdefault(kind, {"requests": 0, "body_bytes": 0})
            k["requests"] += 1
            k["body_bytes"] += nbytes

    def snapshot(self):
        with self.lock:
            return {"requests": self.requests, "body_bytes": self.body_bytes,
                    "paths": json.loads(json.dumps(self.kinds))}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cfn-throttle"

    def setup(self):
        super().setup()
        # Without TCP_NODELAY a response's last small segment waits for the client's
        # delayed ACK (40 ms on Linux): a cost no registry adds (Go sets NODELAY).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet: benchmarks read stdout
        pass

    def upstream(self):
        conn = getattr(self, "_up", None)
        if conn is None:
            cfg = self.server.cfg
            conn = http.client.HTTPConnection(cfg.up_netloc, timeout=120)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._up = conn
        return conn

    def control(self):
        if self.path == "/__throttle/stats" and self.command == "GET":
            body = json.dumps(self.server.stats.snapshot()).encode()
        elif self.path == "/__throttle/reset" and self.command == "POST":
            self.server.stats.reset()
            body = b"{}"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def forward(self):
        if self.path.startswith("/__throttle/"):
            self.control()
            return
        cfg = self.server.cfg
        t_in = time.monotonic()
        if cfg.latency > 0:
            time.sleep(cfg.latency)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in (0, 1):
            conn = self.upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                # A kept-alive upstream connection the registry closed: one fresh try.
                conn.close()
                self._up = None
                if attempt:
                    raise
        self.send_response_only(resp.status, resp.reason)
        chunked = False
        for k, v in resp.getheaders():
            if k.lower() in HOP_BY_HOP:
                continue
            self.send_header(k, v)
        has_body = self.command != "HEAD" and resp.status not in (204, 304)
        if has_body and resp.getheader("Content-Length") is None:
            chunked = True
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        if has_body:
            while True:
                piece = resp.read(PIECE)
                if not piece:
                    break
                self.server.bucket.take(len(piece))
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
                sent += len(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        else:
            resp.read()
        self.wfile.flush()
        self.server.stats.add(self.path, sent)
        if cfg.log is not None:
            t_out = time.monotonic()
            with self.server.log_lock:
                cfg.log.write(f"{t_in:.6f} {t_out - t_in:.6f} {self.client_address[1]} "
                              f"{self.command} {resp.status} {sent} "
                              f"{self.headers.get('Range', '-')} {self.path}\n")
                cfg.log.flush()
        if resp.will_close:
            self.upstream().close()
            self._up = None

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class Config:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, help="http://host:port of the registry")
    ap.add_argument("--rate-mbit", type=float, default=200.0, help="link rate, Mbit/s")
    ap.add_argument("--latency-ms", type=float, default=5.0, help="added per request")
    ap.add_argument("--burst-kib", type=int, default=64, help="token bucket depth")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--log", help="one line per request: start, seconds, client port, "
                    "method, status, body bytes, Range, path")
    a = ap.parse_args()
    u = urlparse(a.upstream)
    if u.scheme != "http":
        sys.exit("throttle_proxy: only http:// upstreams (loopback registries)")
    cfg = Config()
    cfg.up_netloc = u.netloc
    cfg.latency = a.latency_ms / 1000.0
    cfg.log = open(a.log, "a") if a.log else None
    host, port = a.listen.rsplit(":", 1)
    srv = Server((host, int(port)), Handler)
    srv.cfg = cfg
    srv.bucket = TokenBucket(a.rate_mbit * 1e6 / 8, a.burst_kib * 1024)
    srv.stats = Stats()
    srv.log_lock = threading.Lock()
    print(f"PORT {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
