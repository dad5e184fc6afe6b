#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A fault-injecting reverse proxy in front of one registry, for tests.

    faultproxy.py --upstream URL [--ca FILE] [--upstream-auth USER:PASS]
                  [--redirect-host 127.0.0.2]

Prints "PORT <main> <redirect>" on stdout once both listeners are up. The main listener
(127.0.0.1) forwards everything to the upstream, keeping the client's Host header so the
registry's Location headers point back at the proxy. The redirect listener (another
loopback address and port: another origin) serves whatever a "redirect" fault sends
there, fetching from the upstream with --upstream-auth, never with the client's
credentials, and records the headers it was sent.

Control (on the main listener; JSON bodies):
  POST /__fault/rules   [rule, ...]   replace the rules
  POST /__fault/clear                 drop rules and the request log
  GET  /__fault/log                   [{listener, method, path, headers, fault}, ...]

A rule: {"path": REGEX, "method": "GET"|null, "kind": KIND, "times": N (default 1;
-1 = every time), ...}. The first matching rule with times left applies. With "every": N
a rule applies to the 1st, N+1st, 2N+1st ... request it matches (the others pass through;
"times" counts only those it applied to). With "cached": true it matches no request that
says "Cache-Control: no-cache" (a cache in between that a no-cache request goes past).
Kinds:
  status    reply `status` (default 503) without asking the upstream
  429       reply 429 with Retry-After: `retry_after` (default 1)
  reset     send `after` body bytes (default half), then a TCP reset
  truncate  send `after` body bytes (default half), then close cleanly (FIN)
  corrupt   flip the body byte at `at` (default the middle)
  stall     send `after` body bytes (default 0), then nothing for `seconds` (default 30)
  range200  forward without the Range header, so the upstream answers 200, whole body
  redirect  302 to the same path on the redirect listener
  loop      302 to the same path on this listener, for ever
"""

import argparse
import base64
import http.client
import json
import re
import select
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade"}
MAX_STALL = 60.0


class State:
    def __init__(self, upstream, ca, upstream_auth):
        u = urlparse(upstream)
        self.scheme = u.scheme
        self.netloc = u.netloc
        self.ssl_ctx = None
        if self.scheme == "https":
            self.ssl_ctx = ssl.create_default_context(cafile=ca)
        self.upstream_auth = upstream_auth
        self.lock = threading.Lock()
        self.rules = []
        self.log = []
        self.redirect_base = ""

    def connect(self):
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.netloc, timeout=60, context=self.ssl_ctx)
        return http.client.HTTPConnection(self.netloc, timeout=60)

    def take_rule(self, method, path, headers):
        no_cache = "no-cache" in (headers.get("Cache-Control") or "").lower()
        with self.lock:
            for rule in self.rules:
                if rule.get("times", 1) == 0:
                    continue
                if rule.get("method") and rule["method"] != method:
                    continue
                if not re.search(rule.get("path", ""), path):
                    continue
                if rule.get("cached") and no_cache:
                    continue
                every = int(rule.get("every", 1))
                seen = rule.get("_seen", 0)
                rule["_seen"] = seen + 1
                if every > 1 and seen % every != 0:
                    continue
                if rule.get("times", 1) > 0:
                    rule["times"] = rule.get("times", 1) - 1
                return dict(rule)
        return None

    def record(self, listener, method, path, headers, fault):
        with self.lock:
            self.log.append({"listener": listener, "method": method, "path": path,
                             "headers": {k: v for k, v in headers.items()}, "fault": fault,
                             "time": time.time()})


def make_handler(state, listener):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        # --- plumbing ---------------------------------------------------------------------
        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += self.rfile.read(size)
                    self.rfile.readline()
            n = int(self.headers.get("Content-Length", "0") or 0)
            return self.rfile.read(n) if n else b""

        def reply(self, status, body=b"", headers=(), content_type="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def upstream(self, body, drop_range=False, own_auth=False):
            conn = state.connect()
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in self.headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk == "content-length":
                    continue
                if drop_range and lk == "range":
                    continue
                if own_auth and lk == "authorization":
                    continue
                conn.putheader(k, v)
            if own_auth and state.upstream_auth:
                conn.putheader("Authorization",
                               "Basic " + base64.b64encode(state.upstream_auth.encode()).decode())
            conn.putheader("X-Forwarded-Proto", "http")
            if body or self.command in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            return conn, conn.getresponse()

        def hard_close(self, reset):
            try:
                self.wfile.flush()
            except OSError:
                pass
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           struct.pack("ii", 1, 0))
            else:
                try:
                    self.connection.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            self.connection.close()
            self.close_connection = True

        def stall(self, seconds):
            """Send nothing for `seconds`, or until the client hangs up."""
            deadline = time.monotonic() + min(seconds, MAX_STALL)
            while time.monotonic() < deadline:
                r, _, _ = select.select([self.connection], [], [], 0.05)
                if r:
                    try:
                        if not self.connection.recv(4096, socket.MSG_PEEK):
                            return
                    except OSError:
                        return

        # --- the proxy --------------------------------------------------------------------
        def handle_any(self):
            if listener == "main" and self.path.startswith("/__fault/"):
                self.control()
                return
            body = self.read_body()
            rule = state.take_rule(self.command, self.path, self.headers) if listener == "main" else None
            kind = rule["kind"] if rule else None
            state.record(listener, self.command, self.path, self.headers, kind)
            if kind == "status":
                self.reply(rule.get("status", 503), b'{"errors":[{"code":"UNAVAILABLE"}]}')
                return
            if kind == "429":
                self.reply(429, b'{"errors":[{"code":"TOOMANYREQUESTS"}]}',
                           [("Retry-After", str(rule.get("retry_after", 1)))])
                return
            if kind == "redirect":
                self.reply(302, b"", [("Location", state.redirect_base + self.path)])
                return
            if kind == "loop":
                sep = "&" if "?" in self.path else "?"
                here = f"http://{self.headers.get('Host')}{self.path}{sep}loop=1"
                self.reply(302, b"", [("Location", here)])
                return
            try:
                conn, resp = self.upstream(body, drop_range=(kind == "range200"),
                                           own_auth=(listener == "redirect"))
            except OSError as e:
                self.reply(502, json.dumps({"error": str(e)}).encode())
                return
            try:
                self.relay(resp, rule)
            finally:
                conn.close()

        def relay(self, resp, rule):
            kind = rule["kind"] if rule else None
            headers = [(k, v) for k, v in resp.getheaders()
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
            length = resp.getheader("Content-Length")
            if self.command == "HEAD" or resp.status in (204, 304):
                self.send_response(resp.status)
                for k, v in headers:
                    self.send_header(k, v)
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
                return
            if resp.status == 416:
                # distribution sends the blob's size as Content-Length with no body on a
                # 416; reading it would hang, so the proxy answers with an empty body.
                length = "0"
                chunks = iter([])
            elif length is None:
                data = resp.read()
                length = str(len(data))
                chunks = iter([data])
            else:
                chunks = iter(lambda: resp.read(65536), b"")
            total = int(length)
            self.send_response(resp.status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", length)
            self.end_headers()
            cut = None
            if kind in ("reset", "truncate", "stall"):
                cut = int(rule.get("after", 0 if kind == "stall" else total // 2))
            flip = int(rule.get("at", total // 2)) if kind == "corrupt" else None
            sent = 0
            for chunk in chunks:
                if flip is not None and sent <= flip < sent + len(chunk):
                    b = bytearray(chunk)
                    b[flip - sent] ^= 0xFF
                    chunk = bytes(b)
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[:cut - sent])
                    if kind == "stall":
                        self.stall(float(rule.get("seconds", 30)))
                    self.hard_close(reset=(kind == "reset"))
                    return
                self.wfile.write(chunk)
                sent += len(chunk)

        def control(self):
            body = self.read_body()
            if self.path == "/__fault/log" and self.command == "GET":
                with state.lock:
                    data = json.dumps(state.log).encode()
                self.reply(200, data)
            elif self.path == "/__fault/rules" and self.command == "POST":
                rules = json.loads(body or b"[]")
                with state.lock:
                    state.rules = rules
                self.reply(200, b"{}")
            elif self.path == "/__fault/clear" and self.command == "POST":
                with state.lock:
                    state.rules = []
                    state.log = []
                self.reply(200, b"{}")
            else:
                self.reply(404, b"{}")

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_any

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True, help="http://127.0.0.1:5000 or https://...")
    ap.add_argument("--ca", help="CA file for an https upstream")
    ap.add_argument("--upstream-auth", default="", help="USER:PASS for redirected requests")
    ap.add_argument("--redirect-host", default="127.0.0.2")
    args = ap.parse_args()
    state = State(args.upstream, args.ca, args.upstream_auth)
    main_srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state, "main"))
    redir_srv = ThreadingHTTPServer((args.redirect_host, 0), make_handler(state, "redirect"))
    for srv in (main_srv, redir_srv):
        srv.daemon_threads = True
    state.redirect_base = f"http://{args.redirect_host}:{redir_srv.server_address[1]}"
    threading.Thread(target=redir_srv.serve_forever, daemon=True).start()
    print(f"PORT {main_srv.server_address[1]} {redir_srv.server_address[1]}", flush=True)
    main_srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
