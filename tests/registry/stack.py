#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The registry set-up of the integration tests, seeded, handed to a command as env vars.

    stack.py [--only plain] -- COMMAND ARGS...

starts every server (see start_stack), seeds each registry with the same small image
set (see seed), runs COMMAND with the CFN_* variables below and returns its exit
status; all servers are stopped afterwards, whatever happens. Exit 77 (skip) when
docker-registry, htpasswd or openssl are not installed.

  CFN_REG_PLAIN   127.0.0.1:P   no auth, http
  CFN_REG_BASIC   127.0.0.1:P   htpasswd basic, http
  CFN_REG_TLS     127.0.0.1:P   htpasswd basic over TLS (CA in CFN_REG_CA)
  CFN_REG_TOKEN   127.0.0.1:P   bearer; token server CFN_TOKEN_SERVER (/stats, /control)
  CFN_REG_USER / CFN_REG_PASS   the user of the basic and bearer set-ups (pull+push)
  CFN_TOKEN_IDENTITY            a refresh token the token server knows (for CFN_REG_USER)
  CFN_REG_MIRROR  http://...    pull-through mirror of CFN_REG_PLAIN
  CFN_REG_MIRROR_PROXY 127.0.0.1:P  fault proxy in front of the mirror (to see its traffic)
  CFN_REG_DEAD    http://...    a loopback port where nothing listens
  CFN_FAULT_PLAIN 127.0.0.1:P   fault proxy in front of CFN_REG_PLAIN
  CFN_FAULT_BASIC 127.0.0.1:P   fault proxy in front of CFN_REG_BASIC (redirects go to a
                                listener that fetches with its own credentials)
  CFN_CRED_HELPER           name of a fake docker-credential helper on PATH
  CFN_CRED_HELPER_LOG       file it appends each looked-up server to
  CFN_REG_SEED              JSON: repository, digests and files of the seeded content
  CFN_REG_TMP               the harness's temporary directory
"""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

SEED_REPO = "cfn/seed"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def desc(media_type, data, **extra):
    d = {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
         "size": len(data)}
    d.update(extra)
    return d


def seed_content(tmpdir):
    """The blobs and manifests pushed to every registry, and their description."""
    layer = harness.pseudo_random(1024 * 1024 + 4099, "cfn-seed-layer")
    small = harness.pseudo_random(100, "cfn-seed-small")
    layer_path = os.path.join(tmpdir, "seed-layer.bin")
    with open(layer_path, "wb") as fh:
        fh.write(layer)
    configs = {}
    for arch in ("amd64", "arm64"):
        configs[arch] = canonical({"architecture": arch, "os": "linux",
                                   "config": {"Cmd": ["/bin/sh"]},
                                   "rootfs": {"type": "layers", "diff_ids": [
                                       "sha256:" + hashlib.sha256(layer).hexdigest()]}})
    blobs = [layer, small, configs["amd64"], configs["arm64"]]

    def oci_manifest(arch):
        return canonical({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": desc(OCI_CONFIG, configs[arch]),
                          "layers": [desc(OCI_LAYER_GZIP, layer), desc(OCI_LAYER_GZIP, small)]})

    def docker_manifest(arch):
        return canonical({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                          "config": desc(DOCKER_CONFIG, configs[arch]),
                          "layers": [desc(DOCKER_LAYER, layer)]})

    m = {a: oci_manifest(a) for a in ("amd64", "arm64")}
    dm = {a: docker_manifest(a) for a in ("amd64", "arm64")}
    # arm64 first: picking the first entry instead of the platform's is a visible bug.
    index = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        desc(OCI_MANIFEST, m["arm64"], platform={"os": "linux", "architecture": "arm64",
                                                 "variant": "v8"}),
        desc(OCI_MANIFEST, m["amd64"], platform={"os": "linux", "architecture": "amd64"})]})
    mlist = canonical({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        desc(DOCKER_MANIFEST, dm["arm64"], platform={"os": "linux", "architecture": "arm64"}),
        desc(DOCKER_MANIFEST, dm["amd64"], platform={"os": "linux", "architecture": "amd64"})]})
    manifests = [  # (ref, media type, body): children before their index
        (None, OCI_MANIFEST, m["arm64"]), ("oci", OCI_MANIFEST, m["amd64"]),
        (None, DOCKER_MANIFEST, dm["arm64"]), ("docker", DOCKER_MANIFEST, dm["amd64"]),
        ("multi", OCI_INDEX, index), ("list", DOCKER_LIST, mlist)]

    def dg(b):
        return "sha256:" + hashlib.sha256(b).hexdigest()

    info = {
        "repo": SEED_REPO,
        "layer": {"digest": dg(layer), "size": len(layer), "path": layer_path},
        "small": {"digest": dg(small), "size": len(small), "hex": small.hex()},
        "config_amd64": dg(configs["amd64"]), "config_arm64": dg(configs["arm64"]),
        "oci": {"tag": "oci", "digest": dg(m["amd64"])},
        "oci_arm64": {"digest": dg(m["arm64"])},
        "docker": {"tag": "docker", "digest": dg(dm["amd64"])},
        "multi": {"tag": "multi", "digest": dg(index), "amd64": dg(m["amd64"]),
                  "arm64": dg(m["arm64"])},
        "list": {"tag": "list", "digest": dg(mlist), "amd64": dg(dm["amd64"]),
                 "arm64": dg(dm["arm64"])},
    }
    return blobs, manifests, info


def seed(client, blobs, manifests):
    for b in blobs:
        client.push_blob(SEED_REPO, b)
    for ref, media_type, body in manifests:
        client.push_manifest(SEED_REPO, ref or "sha256:" + hashlib.sha256(body).hexdigest(),
                             media_type, body)


def warm_mirror(client, blobs, deadline_s=60):
    """Have the pull-through mirror store every seeded blob before a test runs.

    docker-registry's proxy mode answers a blob it lacks by streaming it from the origin
    while a goroutine stores it; a request that lands while that store is committing can
    get an HTTP 500 (seen in CI: MirrorServes then fell back to the origin, rightly, and
    saw too few mirror requests). A blob served from the mirror's own storage honours
    Range (206); one streamed from the origin does not (200), so 206 says it is stored."""
    end = time.monotonic() + deadline_s
    for b in blobs:
        path = f"/v2/{SEED_REPO}/blobs/sha256:" + hashlib.sha256(b).hexdigest()
        client.request("GET", path)
        while True:
            r, _ = client.request("GET", path, headers={"Range": "bytes=0-0"})
            if r.status == 206:
                break
            if time.monotonic() > end:
                raise harness.HarnessError(f"mirror did not store {path}: HTTP {r.status}")
            time.sleep(0.05)


def write_cred_helper(tmpdir):
    """A fake docker-credential-cfntest: answers for any 127.0.0.1 host with the test user,
    logs each server it is asked about, refuses others the way docker's helpers do."""
    bindir = os.path.join(tmpdir, "bin")
    os.makedirs(bindir, exist_ok=True)
    log = os.path.join(tmpdir, "cred-helper.log")
    path = os.path.join(bindir, "docker-credential-cfntest")
    with open(path, "w") as fh:
        fh.write(f"""#!/bin/sh
[ "$1" = get ] || exit 1
read -r server
echo "$server" >> {log}
case "$server" in
  *127.0.0.1*) printf '{{"ServerURL":"%s","Username":"{harness.USER}","Secret":"{harness.PASSWORD}"}}\\n' "$server" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
""")
    os.chmod(path, 0o755)
    return bindir, log


def start_stack(h, only=None):
    """Start the servers (all, or only the "plain" registry), seed them, return the env."""
    env = {"CFN_REG_TMP": h.dir, "CFN_REG_USER": harness.USER, "CFN_REG_PASS": harness.PASSWORD}
    blobs, manifests, info = seed_content(h.dir)
    plain = h.registry("plain")
    seed(harness.MiniClient(h, plain), blobs, manifests)
    env["CFN_REG_PLAIN"] = plain.host
    if only != "plain":
        basic = h.registry("basic", auth="htpasswd")
        tls = h.registry("tls", auth="htpasswd", tls=True)
        token = h.token_registry("token")
        mirror = h.registry("mirror", proxy_of=plain)
        warm_mirror(harness.MiniClient(h, mirror), blobs)
        for ep in (basic, tls, token):
            seed(harness.MiniClient(h, ep, harness.USER, harness.PASSWORD), blobs, manifests)
        fault_plain = h.fault_proxy(plain)
        fault_basic = h.fault_proxy(basic, upstream_auth=f"{harness.USER}:{harness.PASSWORD}")
        mirror_proxy = h.fault_proxy(mirror)
        bindir, helper_log = write_cred_helper(h.dir)
        env.update({
            "CFN_REG_BASIC": basic.host, "CFN_REG_TLS": tls.host, "CFN_REG_CA": h.ca["ca"],
            "CFN_REG_TOKEN": token.host, "CFN_TOKEN_SERVER": h.token.host,
            "CFN_TOKEN_IDENTITY": h.token.identity_token, "CFN_REG_MIRROR": mirror.url,
            "CFN_REG_MIRROR_PROXY": mirror_proxy.host, "CFN_REG_DEAD": h.dead_endpoint(),
            "CFN_FAULT_PLAIN": fault_plain.host, "CFN_FAULT_BASIC": fault_basic.host,
            "CFN_CRED_HELPER": "cfntest", "CFN_CRED_HELPER_LOG": helper_log,
            "PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        })
    seed_path = os.path.join(h.dir, "seed.json")
    with open(seed_path, "w") as fh:
        json.dump(info, fh, indent=1)
    env["CFN_REG_SEED"] = seed_path
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["plain"], help="start only the plain registry")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("no command")
    missing = harness.require_tools()
    if missing:
        print(f"SKIP: not installed: {', '.join(missing)} (run scripts/setup)", flush=True)
        return 77
    # A SIGTERM (meson's timeout) must still tear the servers down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    with harness.Harness() as h:
        env = dict(os.environ)
        env.update(start_stack(h, args.only))
        print(f"stack: servers up and seeded in {time.monotonic() - t0:.2f} s ({h.dir})",
              flush=True)
        child = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            rc = child.wait()
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
                child.wait()
    print(f"stack: done in {time.monotonic() - t0:.2f} s, exit {rc}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
