#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""A bearer token server for distribution's `auth: token` (docker token spec), for tests.

    tokenserver.py --key K --cert C --users FILE [--expires-in S] [--port P]

Prints "PORT <n>" on stdout once it listens (port 0 picks a free one).

Endpoints:
  GET  /token?service=&scope=...[&offline_token=true]   Basic auth optional
  POST /token  form: grant_type=password (username, password) or
               grant_type=refresh_token (refresh_token), service, scope, client_id
  GET  /stats                  JSON counts of what was asked, for tests
  POST /control?expire_next=N  the next N tokens are issued already expired
               &fail_next=N    the next N token requests get a 500
               &expires_in=S   expires_in of later tokens
               &reset=1        zero the counters

Tokens are RS256 JWTs signed with the openssl CLI; the certificate goes into the x5c
header, which distribution checks against its rootcertbundle. Anonymous callers get pull
actions only; a known user gets what it asked for. A refresh token is handed out for
the password grant and for GET with offline_token=true, and names its user.
"""

import argparse
import base64
import json
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# distribution accepts a token up to 60 s past its exp; "expired" tokens go well past that.
EXPIRED_BY = 3600


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    def __init__(self, key, cert, users, issuer, expires_in):
        self.key = key
        der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                             capture_output=True, check=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.users = users
        self.issuer = issuer
        self.expires_in = expires_in
        self.refresh_tokens = {}  # token -> user
        self.lock = threading.Lock()
        self.stats = {}
        self.expire_next = 0
        self.fail_next = 0

    def count(self, what):
        with self.lock:
            self.stats[what] = self.stats.get(what, 0) + 1

    def take(self, attr):
        """Decrement a 'next N' knob; True when it applied to this request."""
        with self.lock:
            n = getattr(self, attr)
            if n > 0:
                setattr(self, attr, n - 1)
                return True
            return False

    def sign(self, message):
        return subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=message,
                              capture_output=True, check=True).stdout

    def new_refresh_token(self, user):
        tok = "rt-" + secrets.token_hex(16)
        with self.lock:
            self.refresh_tokens[tok] = user
        return tok

    def user_for_refresh(self, tok):
        with self.lock:
            return self.refresh_tokens.get(tok)

    def issue(self, user, service, scopes):
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            if not user:
                actions = [a for a in actions if a == "pull"]
            access.append({"type": typ, "name": name, "actions": actions})
        now = int(time.time())
        exp = now + self.expires_in
        if self.take("expire_next"):
            exp = now - EXPIRED_BY
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        claims = {"iss": self.issuer, "sub": user, "aud": service, "exp": exp,
                  "nbf": min(now, exp) - 10, "iat": now, "jti": secrets.token_hex(8),
                  "access": access}
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode())).encode()
        return signing_input.decode() + "." + b64url(self.sign(signing_input))


def make_handler(issuer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, obj=None, headers=()):
            body = json.dumps(obj).encode() if obj is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def basic_user(self):
            """(ok, user): ok False when Basic credentials were given and are wrong."""
            auth = self.headers.get("Authorization", "")
            if not auth.lower().startswith("basic "):
                return True, ""
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False, ""
            return issuer.users.get(user) == password, user

        def grant(self, user, service, scopes, refresh=None):
            tok = issuer.issue(user, service, scopes)
            body = {"token": tok, "access_token": tok, "expires_in": issuer.expires_in,
                    "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if refresh:
                body["refresh_token"] = refresh
            self.reply(200, body)

        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/stats":
                with issuer.lock:
                    self.reply(200, dict(issuer.stats))
                return
            if url.path != "/token":
                self.reply(404, {"error": "not found"})
                return
            q = parse_qs(url.query)
            ok, user = self.basic_user()
            issuer.count("get")
            issuer.count("get_user" if user else "get_anonymous")
            if issuer.take("fail_next"):
                self.reply(500, {"error": "injected"})
                return
            if not ok:
                issuer.count("denied")
                self.reply(401, {"error": "bad credentials"},
                           [("WWW-Authenticate", 'Basic realm="token"')])
                return
            scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
            refresh = None
            if user and q.get("offline_token", ["false"])[0] == "true":
                refresh = issuer.new_refresh_token(user)
            self.grant(user, q.get("service", [""])[0], scopes, refresh)

        def do_POST(self):
            url = urlparse(self.path)
            n = int(self.headers.get("Content-Length", "0") or 0)
            form = parse_qs(self.rfile.read(n).decode(errors="replace"))
            if url.path == "/control":
                q = parse_qs(url.query)
                with issuer.lock:
                    if "reset" in q:
                        issuer.stats = {}
                    if "expire_next" in q:
                        issuer.expire_next = int(q["expire_next"][0])
                    if "fail_next" in q:
                        issuer.fail_next = int(q["fail_next"][0])
                    if "expires_in" in q:
                        issuer.expires_in = int(q["expires_in"][0])
                self.reply(200, {})
                return
            if url.path != "/token":
                self.reply(404, {"error": "not found"})
                return
            grant_type = form.get("grant_type", [""])[0]
            issuer.count("post")
            issuer.count("post_" + (grant_type or "none"))
            if issuer.take("fail_next"):
                self.reply(500, {"error": "injected"})
                return
            service = form.get("service", [""])[0]
            scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
            if grant_type == "password":
                user = form.get("username", [""])[0]
                if not user or issuer.users.get(user) != form.get("password", [""])[0]:
                    issuer.count("denied")
                    self.reply(401, {"error": "invalid_grant"})
                    return
                self.grant(user, service, scopes, issuer.new_refresh_token(user))
            elif grant_type == "refresh_token":
                user = issuer.user_for_refresh(form.get("refresh_token", [""])[0])
                if not user:
                    issuer.count("denied")
                    self.reply(401, {"error": "invalid_grant"})
                    return
                self.grant(user, service, scopes, form.get("refresh_token")[0])
            else:
                self.reply(400, {"error": "unsupported_grant_type"})

    return Handler


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--users", required=True, help="JSON {user: password, ...}")
    ap.add_argument("--refresh-tokens", help="JSON {token: user, ...} known from the start")
    ap.add_argument("--issuer", default="cfn-test-issuer")
    ap.add_argument("--expires-in", type=int, default=300)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    with open(args.users) as fh:
        users = json.load(fh)
    issuer = TokenIssuer(args.key, args.cert, users, args.issuer, args.expires_in)
    if args.refresh_tokens:
        with open(args.refresh_tokens) as fh:
            issuer.refresh_tokens.update(json.load(fh))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(issuer))
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
