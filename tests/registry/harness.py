# SPDX-License-Identifier: Apache-2.0
"""Registries for tests, started and stopped by the tests themselves.

    with harness.Harness() as h:
        plain = h.registry("plain")                            # no auth, http
        tls = h.registry("tls", auth="htpasswd", tls=True)     # basic over TLS, test CA
        tok = h.token_registry("token")                        # bearer, our token server
        mirror = h.registry("mirror", proxy_of=plain)          # pull-through cache
        fp = h.fault_proxy(plain)                              # faults on demand

Everything runs on 127.0.0.0/8 with ports picked free, under one temporary directory in
/tmp; every process is started in its own process group, and the whole group is killed
when the harness closes (also on errors and on SIGTERM to the caller). Readiness is
polled, never slept for. Needs Debian's docker-registry, apache2-utils (htpasswd) and
openssl; stdlib only otherwise.
"""

import base64
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode, urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
USER, PASSWORD = "testuser", "testpass"
PUSHER, PUSHER_PASSWORD = "pusher", "pushpass"
SERVICE = "cfn-test-registry"
ISSUER = "cfn-test-issuer"
READY_TIMEOUT = 30.0


class HarnessError(Exception):
    pass


def require_tools():
    """Names of the missing programs (empty when all are there)."""
    return [t for t in ("docker-registry", "htpasswd", "openssl") if shutil.which(t) is None]


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, **kw)
    if p.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({p.returncode}): "
                           f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout


class Endpoint:
    """A started server: host is host:port as in image references."""

    def __init__(self, name, scheme, host, **extra):
        self.name = name
        self.scheme = scheme
        self.host = host
        self.__dict__.update(extra)

    @property
    def url(self):
        return f"{self.scheme}://{self.host}"


class Harness:
    def __init__(self, prefix="cfn-regtest-"):
        self.dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        self.procs = []
        self.ca = None
        self.token = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- processes ----------------------------------------------------------------------
    def spawn(self, name, cmd, stdout=None):
        log = open(os.path.join(self.dir, f"{name}.log"), "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout or log, stderr=log,
                             start_new_session=True, env=env)
        log.close()
        p.cfn_name = name
        self.procs.append(p)
        return p

    def log_tail(self, name, n=3000):
        try:
            with open(os.path.join(self.dir, f"{name}.log"), "rb") as fh:
                return fh.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            if p.stdout:
                p.stdout.close()
        self.procs = []
        if os.environ.get("CFN_KEEP_TMP"):
            print(f"harness: kept {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def read_port_line(self, p, timeout=READY_TIMEOUT):
        """The "PORT ..." line a helper prints once it listens."""
        import select
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf:
                    line = buf.split(b"\n", 1)[0].decode()
                    if line.startswith("PORT "):
                        return [int(x) for x in line.split()[1:]]
            elif p.poll() is not None:
                break
        raise HarnessError(f"{p.cfn_name} did not start: {self.log_tail(p.cfn_name)}")

    def wait_http(self, p, url, timeout=READY_TIMEOUT):
        """Poll url until it answers with any HTTP status."""
        u = urlparse(url)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise HarnessError(f"{p.cfn_name} exited ({p.returncode}): "
                                   f"{self.log_tail(p.cfn_name)}")
            try:
                conn = self.connection(u.scheme, u.netloc, timeout=2)
                conn.request("GET", u.path or "/")
                conn.getresponse().read()
                conn.close()
                return
            except (OSError, http.client.HTTPException):
                time.sleep(delay)  # polling back-off, not a wait for a fixed time
                delay = min(delay * 2, 0.2)
        raise HarnessError(f"{p.cfn_name} not answering on {url}: {self.log_tail(p.cfn_name)}")

    def connection(self, scheme, netloc, timeout=30):
        if scheme == "https":
            ctx = ssl.create_default_context(cafile=self.ca["ca"] if self.ca else None)
            return http.client.HTTPSConnection(netloc, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(netloc, timeout=timeout)

    # --- key material ---------------------------------------------------------------------
    def make_ca(self):
        """CA key+cert and a server cert for IP:127.0.0.1 and DNS:localhost signed by it."""
        if self.ca:
            return self.ca
        d = os.path.join(self.dir, "pki")
        os.makedirs(d)
        ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
        key, csr, crt = (os.path.join(d, n) for n in ("server.key", "server.csr", "server.crt"))
        ext = os.path.join(d, "server.ext")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", ca_key, "-out", ca_crt, "-subj", "/CN=cfn test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", "/CN=127.0.0.1"])
        with open(ext, "w") as fh:
            fh.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                     "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
             "-CAcreateserial", "-days", "2", "-out", crt, "-extfile", ext])
        self.ca = {"ca": ca_crt, "cert": crt, "key": key}
        return self.ca

    def htpasswd_file(self):
        path = os.path.join(self.dir, "htpasswd")
        if not os.path.exists(path):
            lines = [run(["htpasswd", "-Bbn", u, p]).decode().strip()
                     for u, p in ((USER, PASSWORD), (PUSHER, PUSHER_PASSWORD))]
            with open(path, "w") as fh:
                fh.write("\n".join(lines) + "\n")
        return path

    # --- servers --------------------------------------------------------------------------
    def registry(self, name, auth=None, tls=False, proxy_of=None, token=None):
        """Start docker-registry. auth: None | "htpasswd" | "token" (needs token=)."""
        data = os.path.join(self.dir, name, "data")
        os.makedirs(data)
        for attempt in range(5):
            port = free_port()
            cfg = {
                "version": "0.1",
                "log": {"level": "warn", "accesslog": {"disabled": True}},
                "storage": {"filesystem": {"rootdirectory": data}, "delete": {"enabled": True},
                            "redirect": {"disable": True},
                            "maintenance": {"uploadpurging": {"enabled": False}}},
                "http": {"addr": f"127.0.0.1:{port}", "secret": f"cfn-{name}-secret",
                         "headers": {"X-Content-Type-Options": ["nosniff"]}},
            }
            if tls:
                ca = self.make_ca()
                cfg["http"]["tls"] = {"certificate": ca["cert"], "key": ca["key"]}
            if auth == "htpasswd":
                cfg["auth"] = {"htpasswd": {"realm": "cfn-test", "path": self.htpasswd_file()}}
            elif auth == "token":
                cfg["auth"] = {"token": {"realm": f"{token.url}/token", "service": SERVICE,
                                         "issuer": ISSUER, "rootcertbundle": token.cert}}
            if proxy_of is not None:
                cfg["proxy"] = {"remoteurl": proxy_of.url}
            # YAML is a superset of JSON, so the registry reads this as it is.
            path = os.path.join(self.dir, name, "config.yml")
            with open(path, "w") as fh:
                json.dump(cfg, fh, indent=1)
            p = self.spawn(name, ["docker-registry", "serve", path])
            scheme = "https" if tls else "http"
            try:
                self.wait_http(p, f"{scheme}://127.0.0.1:{port}/v2/")
            except HarnessError:
                if p.poll() is not None and "address already in use" in self.log_tail(name):
                    continue  # lost the race for the port: pick another
                raise
            return Endpoint(name, scheme, f"127.0.0.1:{port}", auth=auth, proc=p)
        raise HarnessError(f"{name}: no free port after 5 attempts")

    def token_server(self, expires_in=300):
        if self.token:
            return self.token
        d = os.path.join(self.dir, "token")
        os.makedirs(d)
        key, cert = os.path.join(d, "token.key"), os.path.join(d, "token.crt")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", key, "-out", cert, "-subj", "/CN=cfn test token issuer"])
        users = os.path.join(d, "users.json")
        with open(users, "w") as fh:
            json.dump({USER: PASSWORD, PUSHER: PUSHER_PASSWORD}, fh)
        refresh = os.path.join(d, "refresh.json")
        with open(refresh, "w") as fh:
            json.dump({"cfn-identity-token": USER}, fh)
        p = self.spawn("tokenserver", [PYTHON, os.path.join(HERE, "tokenserver.py"), "--key", key,
                                       "--cert", cert, "--users", users, "--refresh-tokens",
                                       refresh, "--issuer", ISSUER, "--expires-in",
                                       str(expires_in)], stdout=subprocess.PIPE)
        (port,) = self.read_port_line(p)
        self.token = Endpoint("tokenserver", "http", f"127.0.0.1:{port}", cert=cert, proc=p,
                              identity_token="cfn-identity-token")
        return self.token

    def token_registry(self, name, expires_in=300):
        return self.registry(name, auth="token", token=self.token_server(expires_in))

    def fault_proxy(self, upstream, name=None, upstream_auth=""):
        name = name or f"faultproxy-{upstream.name}"
        cmd = [PYTHON, os.path.join(HERE, "faultproxy.py"), "--upstream", upstream.url]
        if upstream.scheme == "https":
            cmd += ["--ca", self.make_ca()["ca"]]
        if upstream_auth:
            cmd += ["--upstream-auth", upstream_auth]
        p = self.spawn(name, cmd, stdout=subprocess.PIPE)
        port, redirect_port = self.read_port_line(p)
        ep = Endpoint(name, "http", f"127.0.0.1:{port}", proc=p,
                      redirect_host=f"127.0.0.2:{redirect_port}")
        self.wait_http(p, f"{ep.url}/v2/")
        return ep

    def dead_endpoint(self):
        """A loopback URL where nothing listens."""
        return f"http://127.0.0.1:{free_port()}"


# --- a small registry client for seeding (stdlib) -----------------------------------------
class MiniClient:
    """Just enough of the distribution API to seed a registry: basic and bearer auth,
    POST+PUT uploads, manifest PUT and GET."""

    def __init__(self, harness, endpoint, user="", password=""):
        self.h = harness
        self.ep = endpoint
        self.user = user
        self.password = password
        self.tokens = {}

    def _auth_header(self, scope):
        if self.ep.auth == "htpasswd":
            return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if self.ep.auth == "token":
            if scope not in self.tokens:
                conn = self.h.connection("http", self.h.token.host)
                hdrs = {}
                if self.user:
                    hdrs["Authorization"] = "Basic " + base64.b64encode(
                        f"{self.user}:{self.password}".encode()).decode()
                conn.request("GET", "/token?" + urlencode({"service": SERVICE, "scope": scope}),
                             headers=hdrs)
                r = conn.getresponse()
                body = r.read()
                conn.close()
                if r.status != 200:
                    raise HarnessError(f"token: {r.status} {body[:200]!r}")
                self.tokens[scope] = json.loads(body)["token"]
            return "Bearer " + self.tokens[scope]
        return None

    def request(self, method, path, body=None, headers=None, scope=""):
        u = urlparse(path) if path.startswith("http") else None
        netloc = u.netloc if u else self.ep.host
        target = (u.path + ("?" + u.query if u.query else "")) if u else path
        hdrs = dict(headers or {})
        auth = self._auth_header(scope)
        if auth:
            hdrs["Authorization"] = auth
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        conn = self.h.connection(self.ep.scheme, netloc)
        conn.request(method, target, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r, data

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{repo}:pull,push"
        r, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=scope)
        if r.status == 200:
            return digest
        r, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", scope=scope)
        if r.status != 202:
            raise HarnessError(f"POST upload {repo}: {r.status} {body[:300]!r}")
        loc = r.getheader("Location")
        sep = "&" if "?" in loc else "?"
        r, body = self.request("PUT", f"{loc}{sep}digest={digest}", body=data, scope=scope,
                               headers={"Content-Type": "application/octet-stream"})
        if r.status != 201:
            raise HarnessError(f"PUT blob {repo}: {r.status} {body[:300]!r}")
        return digest

    def push_manifest(self, repo, ref, media_type, body):
        r, data = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body=body,
                               headers={"Content-Type": media_type},
                               scope=f"repository:{repo}:pull,push")
        if r.status != 201:
            raise HarnessError(f"PUT manifest {repo}:{ref}: {r.status} {data[:300]!r}")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_manifest(self, repo, ref):
        accept = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.oci.image.index.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json"])
        r, data = self.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": accept},
                               scope=f"repository:{repo}:pull")
        if r.status != 200:
            raise HarnessError(f"GET manifest {repo}:{ref}: {r.status} {data[:300]!r}")
        return r.getheader("Content-Type"), data

    def get_blob(self, repo, digest):
        r, data = self.request("GET", f"/v2/{repo}/blobs/{digest}",
                               scope=f"repository:{repo}:pull")
        if r.status != 200:
            raise HarnessError(f"GET blob {repo}@{digest}: {r.status}")
        return data

    def has_blob(self, repo, digest):
        r, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        return r.status == 200


def pseudo_random(n, seed):
    """n reproducible bytes (test data only)."""
    import random
    return random.Random(seed).randbytes(n)
