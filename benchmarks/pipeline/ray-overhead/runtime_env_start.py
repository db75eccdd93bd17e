"""Actor start-up with and without the workers' runtime env, on in-process Ray.

    python benchmarks/pipeline/ray-overhead/runtime_env_start.py [--reps 6]

Since session 18 the pipeline's actors start with ``runtime_env={"env_vars":
{"ARROW_DEFAULT_MEMORY_POOL": "system"}}`` (``pipeline.runner.worker_env``). Ray starts such a
worker through ``setup_worker.py``, one more Python start-up. This times an actor from
``.remote()`` to its first result, alternating plain and with the env, and prints the Arrow
pool each kind of actor reports.
"""

from __future__ import annotations

import argparse
import statistics
import time

import ray


class Probe:
    def pool(self) -> str:
        import pyarrow as pa

        return pa.default_memory_pool().backend_name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=6)
    args = p.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    seconds: dict[str, list[float]] = {"plain": [], "runtime env": []}
    pools: dict[str, set[str]] = {k: set() for k in seconds}
    for rep in range(args.reps):
        for kind in list(seconds) if rep % 2 == 0 else list(seconds)[::-1]:
            options: dict = {"num_cpus": 0.5}
            if kind == "runtime env":
                options["runtime_env"] = {"env_vars": {"ARROW_DEFAULT_MEMORY_POOL": "system"}}
            started = time.perf_counter()
            actor = ray.remote(Probe).options(**options).remote()
            pools[kind].add(ray.get(actor.pool.remote()))
            seconds[kind].append(round(time.perf_counter() - started, 2))
            ray.kill(actor)
            time.sleep(1)
    for kind, values in seconds.items():
        print(f"{kind}: {values} s, median {statistics.median(values):.2f}; Arrow pool {sorted(pools[kind])}")
    ray.shutdown()


if __name__ == "__main__":
    main()
