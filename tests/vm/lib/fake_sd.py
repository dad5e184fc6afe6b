#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Plays systemd for a VM test: Type=notify, the fd store and Restart=on-failure.

    fake_sd.py PIDFILE -- COMMAND...

Runs COMMAND with NOTIFY_SOCKET set, keeps the fds it stores (FDSTORE=1 with FDNAME=,
FDSTOREREMOVE=1), and when it dies other than by a clean exit (status 0) starts it again
with the stored fds passed as systemd does: at fd 3.., LISTEN_PID = the new pid,
LISTEN_FDS, LISTEN_FDNAMES. The current pid is written to PIDFILE (so the test can kill
it); every notification is logged to stderr. Exits 0 once COMMAND exits 0 (the store is
released), 1 after 5 restarts or when the command cannot start.
"""

import fcntl
import os
import socket
import subprocess
import sys


def log(msg):
    print(f"fake_sd: {msg}", file=sys.stderr, flush=True)


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    pidfile, cmd = sys.argv[1], sys.argv[3:]
    path = pidfile + ".notify"
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(path)
    store = []  # (name, fd), fds duplicated above 100
    restarts = 0
    while True:
        env = dict(os.environ, NOTIFY_SOCKET=path)
        env.pop("LISTEN_PID", None)
        if store:
            env["LISTEN_FDS"] = str(len(store))
            env["LISTEN_FDNAMES"] = ":".join(n for n, _ in store)

        def place_fds():
            # Here, not with pass_fds: Popen checks pass_fds in the parent, where 3.. need
            # not be open (EBADF from the fourth stored fd on).
            for i, (_, fd) in enumerate(store):
                os.dup2(fd, 3 + i)
            os.closerange(3 + len(store), 1 << 16)

        proc = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh", *cmd],
            env=env, close_fds=False, preexec_fn=place_fds)
        with open(pidfile + ".tmp", "w") as f:
            f.write(f"{proc.pid}\n")
        os.rename(pidfile + ".tmp", pidfile)
        log(f"started pid {proc.pid} with {len(store)} stored fd(s) {[n for n, _ in store]}")
        while True:
            sock.settimeout(0.2)
            try:
                data, fds, _, _ = socket.recv_fds(sock, 4096, 16)
            except socket.timeout:
                if proc.poll() is not None:
                    break
                continue
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            log(f"pid {proc.pid}: {sorted(fields.items())} with {len(fds)} fd(s)")
            name = fields.get("FDNAME", "stored")
            if fields.get("FDSTORE") == "1":
                for fd in fds:
                    store.append((name, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)))
                    os.close(fd)
            else:
                for fd in fds:
                    os.close(fd)
            if fields.get("FDSTOREREMOVE") == "1":
                for n, fd in [e for e in store if e[0] == name]:
                    os.close(fd)
                store = [e for e in store if e[0] != name]
        rc = proc.returncode
        if rc == 0:
            log(f"pid {proc.pid} exited cleanly; releasing {len(store)} stored fd(s)")
            return 0
        restarts += 1
        if restarts > 5:
            log("too many restarts")
            return 1
        log(f"pid {proc.pid} died (status {rc}): restarting")


if __name__ == "__main__":
    sys.exit(main())
