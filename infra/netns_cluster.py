#!/usr/bin/env python3
"""Two Ray nodes on one machine, each in its own network namespace (Linux, root).

A second ``ray start --address`` on the same network stack either is refused (loopback-only
Ray) or binds to every interface of the machine. Here each node gets a namespace of its own,
joined by one veth pair on a private /24, so the two nodes talk over a real (virtual) link and
nothing is reachable from outside the machine:

    ns head (10.231.N.1) <--veth--> ns node (10.231.N.2)

    python infra/netns_cluster.py start --dir /tmp/twonode     # prints JSON with addresses
    python infra/netns_cluster.py stop --dir /tmp/twonode

Processes are stopped by PID (SIGINT to each ``ray start --block``), then the namespaces are
deleted. ``run_in(ns, cmd)`` runs a command inside a namespace (``ip netns exec``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def run_in(ns: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], **kwargs)


def _popen_in(ns: str, cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    out = open(log, "ab")
    return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=out, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)


def _wait_http(ns: str, url: str, deadline: float) -> None:
    probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"
    while time.monotonic() < deadline:
        if run_in(ns, [sys.executable, "-c", probe], capture_output=True).returncode == 0:
            return
        time.sleep(1.0)
    raise RuntimeError(f"{url} did not answer in namespace {ns}")


def start(directory: str, head_cpus: int = 2, node_cpus: int = 2, timeout: float = 180.0) -> dict:
    """Two namespaces, a Ray head in one and a node in the other; on any failure everything
    started so far (namespaces, the head) is stopped before the error goes on."""
    try:
        return _start(directory, head_cpus, node_cpus, timeout)
    except BaseException:
        stop(directory)
        raise


def _start(directory: str, head_cpus: int, node_cpus: int, timeout: float) -> dict:
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    subnet = random.randrange(1, 255)
    info = {"dir": str(d), "ns": [f"la-head-{tag}", f"la-node-{tag}"],
            "ips": [f"10.231.{subnet}.1", f"10.231.{subnet}.2"], "pids": []}
    (d / "cluster.json").write_text(json.dumps(info))
    head_ns, node_ns = info["ns"]
    veth = (f"lah{tag}", f"lan{tag}")
    for ns in info["ns"]:
        _ip("netns", "add", ns)
    _ip("link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
    for ns, dev, ip in zip(info["ns"], veth, info["ips"], strict=True):
        _ip("link", "set", dev, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # multi-node needs it unset
    ray = str(Path(sys.executable).parent / "ray")
    deadline = time.monotonic() + timeout
    head = _popen_in(head_ns, [ray, "start", "--head", "--block", f"--node-ip-address={info['ips'][0]}",
                               "--port=6379", "--dashboard-host=0.0.0.0", "--dashboard-port=8265",
                               "--include-dashboard=true", f"--temp-dir={d / 'head'}",
                               f"--num-cpus={head_cpus}", "--disable-usage-stats"],
                     d / "head.out", env)
    info["pids"].append(head.pid)
    (d / "cluster.json").write_text(json.dumps(info))
    info["dashboard"] = f"http://{info['ips'][0]}:8265"
    info["address"] = f"{info['ips'][0]}:6379"
    _wait_http(head_ns, f"{info['dashboard']}/api/version", deadline)
    node = _popen_in(node_ns, [ray, "start", "--block", f"--address={info['address']}",
                               f"--node-ip-address={info['ips'][1]}", f"--temp-dir={d / 'node'}",
                               f"--num-cpus={node_cpus}", "--disable-usage-stats"],
                     d / "node.out", env)
    info["pids"].append(node.pid)
    (d / "cluster.json").write_text(json.dumps(info))
    probe = ("import json, urllib.request; r = urllib.request.urlopen({!r}, timeout=5); "
             "nodes = json.load(r)['data']['result']['result']; "
             "raise SystemExit(0 if sum(n['state'] == 'ALIVE' for n in nodes) >= 2 else 1)"
             ).format(f"{info['dashboard']}/api/v0/nodes")
    while time.monotonic() < deadline:
        if run_in(head_ns, [sys.executable, "-c", probe], capture_output=True).returncode == 0:
            break
        time.sleep(1.0)
    else:
        raise RuntimeError("the second node did not join")
    (d / "cluster.json").write_text(json.dumps(info))
    return info


def stop(directory: str) -> None:
    path = Path(directory) / "cluster.json"
    if not path.exists():
        return
    info = json.loads(path.read_text())
    for pid in reversed(info["pids"]):
        for sig, wait in ((signal.SIGINT, 30.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)  # `ray start --block` and what it started, in its session
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
    for ns in info["ns"]:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    if args.action == "start":
        print(json.dumps(start(args.dir)))
    else:
        stop(args.dir)


if __name__ == "__main__":
    main()
