#!/usr/bin/env python3
"""Start and stop a local Ray head on 127.0.0.1 in its own temp dir (system tests, demos).

    python infra/local_ray.py start --dir /tmp/rh [--num-cpus 2] [--auth]   # prints JSON
    python infra/local_ray.py stop --dir /tmp/rh

`ray start --head --block` runs in its own process session, and stopping signals that
process only: it takes its Ray processes down with it. Any process left whose command line
names this head's temp dir is ended by PID afterwards. `ray stop` is never used, because it ends
every Ray process on the machine, other people's included.

With ``--auth`` (``auth=True``) the head requires Ray's token auth: a random token in
<dir>/auth_token (mode 600), and the JSON's ``client_env`` is what `ray job submit` needs
(``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``): the token is never on a command line.

Credentials that jobs need (AWS_*) must be in the environment of `start`: the head's
processes, and so the jobs' drivers and workers, inherit it, and nothing secret goes into a
job's entrypoint.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distinct_free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = _free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _ray_bin() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


def start(temp_dir: str, num_cpus: int = 2, timeout: float = 120.0, auth: bool = False) -> dict:
    d = Path(temp_dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    client_env = {"RAY_AUTH_MODE": "disabled"}
    headers: dict[str, str] = {}
    if auth:
        token_file = d / "auth_token"
        token = secrets.token_hex(32)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
        client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
        headers = {"Authorization": f"Bearer {token}"}
    # Every port Ray would otherwise take at its default (dashboard agent 52365, client server
    # 10001, ...) is chosen free, so this head can run beside another Ray on the same machine.
    names = ("port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port", "ray-client-server-port",
             "node-manager-port", "object-manager-port")
    ports = _distinct_free_ports(len(names))
    gcs_port, dashboard_port = ports[0], ports[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    env.update(client_env)  # without --auth: disabled, even where the caller's shell says token
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        _ray_bin(), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        *(f"--{name}={port}" for name, port in zip(names, ports, strict=True)),
        "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={d}", f"--num-cpus={num_cpus}",
        "--disable-usage-stats",
    ]
    log = open(d / "ray-start.out", "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}; see {d / 'ray-start.out'}")
        try:
            request = urllib.request.Request(f"{dashboard}/api/version", headers=headers)
            with urllib.request.urlopen(request, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        stop_pid(proc.pid, str(d))
        raise RuntimeError(f"Ray dashboard did not answer on {dashboard} within {timeout:.0f} s")
    try:
        _wait_for_job_agent(dashboard, deadline, headers)
    except Exception:
        stop_pid(proc.pid, str(d))
        raise
    info = {"pid": proc.pid, "address": f"127.0.0.1:{gcs_port}", "dashboard": dashboard,
            "dir": str(d), "client_env": client_env}
    (d / "head.json").write_text(json.dumps(info))
    return info


def _wait_for_job_agent(dashboard: str, deadline: float, headers: dict[str, str]) -> None:
    """The dashboard answers before the node's job agent can take jobs ("No available agent
    to submit job"): run a no-op job so that `start` returns only when submissions work."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(dashboard, headers=headers or None)
    while True:
        try:
            job = client.submit_job(entrypoint="true")
            break
        except (RuntimeError, OSError) as exc:  # requests' ConnectionError is an OSError
            # a loaded machine: the dashboard dropped the connection (RemoteDisconnected, once)
            busy = "No available agent" in str(exc) or isinstance(exc, OSError)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > deadline:
            raise RuntimeError("the Ray head did not run a no-op job in time")
        time.sleep(0.5)


def _pids_naming(directory: str) -> list[int]:
    """Processes with an argument that is ``directory`` or a path in it (``--temp-dir=D``,
    ``--session-dir=D/session_...``): not a mere prefix, so /tmp/rh spares a head in /tmp/rh2."""
    root = directory.rstrip("/")
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            values = [a.split("=", 1)[-1] for a in args]
            if any(v == root or v.startswith(root + "/") for v in values):
                pids.append(int(entry.name))
    return pids


def stop_pid(pid: int, temp_dir: str, timeout: float = 30.0) -> None:
    """Stop our `ray start --block` and then any process still naming our temp dir."""
    # `ray start --block` shuts its processes down on SIGINT (as on Ctrl-C); SIGTERM it ignores.
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
            time.sleep(0.2)
        else:
            continue
        break
    for sig in (signal.SIGTERM, signal.SIGKILL):
        leftover = _pids_naming(temp_dir)
        for p in leftover:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        if leftover:
            time.sleep(2.0)


def stop(temp_dir: str) -> None:
    info_file = Path(temp_dir) / "head.json"
    if info_file.exists():
        stop_pid(json.loads(info_file.read_text())["pid"], str(Path(temp_dir).resolve()))
        info_file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", required=True, help="this head's temp dir (keep it short)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--auth", action="store_true",
                        help="require Ray's token auth (a random token in <dir>/auth_token)")
    args = parser.parse_args()
    if args.action == "start":
        print(json.dumps(start(args.dir, args.num_cpus, auth=args.auth)))
    else:
        stop(args.dir)


if __name__ == "__main__":
    main()
