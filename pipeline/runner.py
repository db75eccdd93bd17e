"""Run one unit of work per shard on Ray actors that keep the codec resident.

A Ray core actor pool: ``ray.remote(WorkerClass)`` actors, one shard in flight on each, the
next shard sent to whichever actor finishes first. Ray owns placement, actor restarts and task
retries. Workers never raise for a bad shard; they return ``{"ok": False, "error": ...}`` so one
bad shard cannot abort the others and the driver can account for every shard.

Why not a Ray Data stage (``from_items(tasks).map_batches(WorkerClass)``, which this was until
session 11): Ray Data's executor, its coordinator, stats and location actors share the cores
with the codec, and a shard of 48 Kodak images through msh-n96-v2 took 10-16 % longer per image
that way on 2 cores, in three of three alternated pairs
(benchmarks/pipeline/ray-overhead/README.md, "Session 11").
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pipeline import interrupt
from pipeline.errors import Refused

log = logging.getLogger(__name__)


# What a CPU actor reserves by default: with the default count, one actor per CPU
# (``default_actors``), each actor's torch gets one thread (``use_reserved_cpus``), and half of
# the cluster's CPUs stay unreserved for Ray's own tasks.
CPU_ACTOR_CPUS = 0.5
# Codec actors per GPU by default: two codecs resident on one device, so that one's entropy
# coding and I/O overlap the other's transforms. Two actors against one on an H200, small
# shards: compress 1.48x and 1.78x, restore 1.40x and 1.66x (runs 5 and 6,
# benchmarks/pipeline/gpu/README.md); with one big shard the second has nothing to do. On a
# node of 16 CPUs and one GPU the defaults give what those runs measured: 0.5 GPU, 7.75 CPUs.
ACTORS_PER_GPU = 2
# CPUs of a GPU node that GPU actors leave unreserved by default, for the raylet and the driver.
NODE_CPUS_LEFT = 0.5


@dataclass(frozen=True)
class RayOptions:
    """How work is spread over the cluster. None derives the value from the cluster
    (``resolve``): ``actors`` one per CPU or per GPU share, ``num_cpus``/``num_gpus`` by
    ``auto_resources``."""

    address: str | None = None
    actors: int | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None


def auto_resources(nodes: list[dict[str, float]], options: RayOptions,
                   uses_gpu: bool) -> dict[str, float]:
    """Per-actor CPUs and GPUs for the options left at None, from the live nodes' resources.

    A codec with a network (``uses_gpu``) gets GPU actors when the cluster has GPUs:
    ``ACTORS_PER_GPU`` per GPU, each with an equal share of its node's CPUs less
    ``NODE_CPUS_LEFT`` (the smallest share over the GPU nodes, so that every GPU node can place
    its actors). Otherwise actors run on CPUs, ``CPU_ACTOR_CPUS`` each. A GPU node's cores are
    what a GPU worker runs short of (range coding, source decoding: benchmarks/pipeline/gpu/),
    hence the whole share rather than the CPU actors' half CPU."""
    gpu_nodes = [r for r in nodes if r.get("GPU", 0) > 0]
    num_gpus = options.num_gpus
    if num_gpus is None:
        num_gpus = 1 / ACTORS_PER_GPU if uses_gpu and gpu_nodes else 0.0
    num_cpus = options.num_cpus
    if num_cpus is None:
        num_cpus = CPU_ACTOR_CPUS
        if num_gpus > 0 and gpu_nodes:
            share = min((r.get("CPU", 0) - NODE_CPUS_LEFT) / (r["GPU"] / num_gpus)
                        for r in gpu_nodes)
            num_cpus = max(CPU_ACTOR_CPUS, math.floor(share * 100) / 100)
    return {"num_cpus": num_cpus, "num_gpus": num_gpus}


def resolve(options: RayOptions, uses_gpu: bool) -> RayOptions:
    """``options`` with per-actor resources left at None derived from the cluster (which this
    starts or joins, ``ensure_ray``); see ``auto_resources``."""
    if options.num_cpus is not None and options.num_gpus is not None:
        return options
    ensure_ray(options)
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return replace(options, **auto_resources(nodes, options, uses_gpu))


def describe(options: RayOptions) -> str:
    """One line for the job log: what each actor reserves, and where its codec runs."""
    where = "GPU" if worker_device(options) == "cuda" else "CPU"
    return (f"codec actors on {where}s, each reserving {options.num_cpus or 0:g} CPU and "
            f"{options.num_gpus or 0:g} GPU")


def worker_device(options: RayOptions) -> str:
    """Where actors run their codec's network: "cuda" when they are given GPUs (Ray makes
    an actor's GPUs cuda:0.. through CUDA_VISIBLE_DEVICES), else "cpu" (also while
    ``num_gpus`` is still None: ``resolve`` first)."""
    return "cuda" if (options.num_gpus or 0) > 0 else "cpu"


THREADS_ENV = "LATENTARC_THREADS"


ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def worker_env() -> dict[str, str]:
    """Environment variables the pipeline's actors start with: Arrow allocates through glibc's
    malloc in them, unless the driver's environment names a pool (``ARROW_DEFAULT_MEMORY_POOL``).

    Why: a worker hands freed memory back after each batch with ``malloc_trim``
    (models/allocator.py), which does not reach Arrow's default pool (mimalloc). With
    mimalloc a webp worker's peak on one 256-row shard was 42-44 MiB above its peak on 8-row
    shards, with glibc's malloc 28-31 MiB, at the same speed (benchmarks/pipeline/batch-memory,
    session 18). It must be in the environment when the process starts: Arrow picks its default
    pool when pyarrow is imported, and ``pa.set_memory_pool`` changes only the pool that
    pyarrow's Python calls use (the Parquet writer kept mimalloc, and the two together peaked
    17 MiB higher on 8-row shards). The price: Ray starts such an actor through one more
    Python process, 0.95 s instead of 0.53 to its first result on in-process Ray
    (benchmarks/pipeline/ray-overhead/runtime_env_start.py), once per actor, not per shard."""
    return {} if os.environ.get(ARROW_POOL_ENV) else {ARROW_POOL_ENV: "system"}


def use_reserved_cpus() -> int | None:
    """Give an actor's torch (learned codecs) as many threads as the CPUs it reserved, rounded
    up; returns that number, or None outside a Ray worker.

    Ray sets OMP_NUM_THREADS to the reservation rounded *down*, so an actor that reserves 1.5
    CPUs (leaving half a CPU for the driver and Ray's own processes) would run torch
    on one thread and leave a core idle: one msh-n96-v2 actor reached 0.60 of the bare codec's
    images/s on 2 cores that way (benchmarks/pipeline/msh-n96-v2/). ``LATENTARC_THREADS`` in
    the job's environment sets the number instead. Before torch is imported this sets
    OMP_NUM_THREADS, which torch reads when it starts; after, ``torch.set_num_threads``."""
    wanted = os.environ.get(THREADS_ENV)
    if wanted:
        n = max(1, int(wanted))
    else:
        try:
            import ray

            if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
                return None
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except Exception:  # an older or newer Ray without these: keep Ray's choice
            return None
        if not cpus:
            return None
        n = max(1, math.ceil(cpus - 1e-9))
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


def prefer_loopback() -> None:
    """Make the next in-process ``ray.init`` put its node and servers on 127.0.0.1.

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported; without it, Ray on Linux
    takes the machine's address even when given _node_ip_address="127.0.0.1" (Ray 2.60:
    `latentarc compress` imported Ray first and ran on the host's IP). Call before importing
    Ray; if Ray was imported already, this sets the constant the variable would have set.
    Every in-process Ray start of the project goes through here."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        constants.ENABLE_RAY_CLUSTER = False


def ensure_ray(options: RayOptions) -> None:
    """Connect to the cluster named by ``--ray-address``/``RAY_ADDRESS``, or start Ray in-process.

    In-process Ray (the demo, a laptop) binds to 127.0.0.1 only, with no dashboard. Its
    workers keep Ray's nice 15: nice 0 made no consistent difference to a codec actor's speed
    (benchmarks/pipeline/ray-overhead/README.md).
    """
    address = options.address or os.environ.get("RAY_ADDRESS")
    if not address:
        prefer_loopback()
    import ray

    if ray.is_initialized():
        return
    with interrupt.ray_starting():  # ray.init replaces the command line's SIGTERM handler
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(
                address="local",
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=True,
            )


def check_fits(options: RayOptions) -> None:
    """Refuse actors that no node of the cluster can place, before anything is changed
    (``options`` resolved: ``resolve``).

    Ray queues an actor it cannot place and waits for the cluster to grow: with in-process Ray
    (no --ray-address), e.g. ``--gpus-per-actor 0.25`` on a machine without a GPU, that wait has
    no end, and the job would hang with only Ray's warning in the log. On a cluster an
    autoscaler may yet add such a node, so there it is a warning, not a refusal."""
    if (options.num_cpus or 0) < 0 or (options.num_gpus or 0) < 0:
        raise Refused("--cpus-per-actor and --gpus-per-actor must not be negative")
    ensure_ray(options)
    import ray

    need = {"CPU": options.num_cpus, "GPU": options.num_gpus}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(res.get(k, 0) >= v for k, v in need.items()) for res in nodes):
        return
    have = "; ".join(f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU" for res in nodes)
    message = (f"each actor asks for {options.num_cpus:g} CPU and {options.num_gpus:g} GPU, and "
               f"no node of the Ray cluster has that much (nodes: {have or 'none'})")
    if options.address or os.environ.get("RAY_ADDRESS"):
        log.warning("%s; the job waits until the cluster has such a node", message)
        return
    raise Refused(f"{message}; lower --cpus-per-actor/--gpus-per-actor")


def default_actors(options: RayOptions, n_tasks: int) -> int:
    import ray

    if options.actors:
        return max(1, min(options.actors, n_tasks))
    if options.num_gpus:
        gpus = ray.cluster_resources().get("GPU", 0)
        by_device = int(gpus / options.num_gpus) if gpus else 1
        return max(1, min(by_device, n_tasks))
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, min(int(cpus), n_tasks))


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # outside Ray (direct calls in tests)
        return None


def shard_task(fn):
    """Wrap a worker's per-shard method as the worker's ``__call__(task) -> result``: any
    exception becomes an error result, never a raise."""

    def call(self, task: dict[str, Any]) -> dict[str, Any]:
        try:
            result = {"ok": True, **fn(self, task)}
        except Exception as exc:  # reported per shard; the job goes on with the others
            log.debug("shard %s failed\n%s", task.get("shard"), traceback.format_exc())
            result = {"ok": False, "shard": task.get("shard"), "error": _shard_error(task, exc)}
        result["node"] = _node_id()
        result["pid"] = os.getpid()  # a new pid for a shard = an actor Ray restarted
        return result

    return call


def _shard_error(task: dict[str, Any], exc: BaseException) -> str:
    message = str(exc).strip() or repr(exc)
    if not message.startswith("shard "):
        message = f"shard {task.get('shard')}: {type(exc).__name__}: {message}"
    return message


def _ray_error(task: dict[str, Any], exc: BaseException, what: str) -> str:
    """One line for a shard whose worker could not start or died: ``what`` happened, then the
    last line of Ray's message (for a constructor that raised, the original exception)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    last = next((line for line in reversed(lines) if line and set(line) != {"^"}), repr(exc))
    return f"shard {task.get('shard')}: {what} ({type(exc).__name__}): {last}"


# A shard whose worker process dies (SIGKILL, out of memory, a crash in native code) is tried
# again on the restarted actor this many times, then reported as failed: a shard that kills
# every worker it meets must not loop for ever.
TASK_RETRIES = 3


def run_per_shard(
    worker_cls: type,
    worker_args: tuple,
    tasks: list[dict[str, Any]],
    options: RayOptions,
    on_start: Callable[[], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield each task's result as it completes (any order); every task yields exactly one.

    ``on_start`` is called once, when the first actor is ready (its codec loaded): the
    progress line's rates count from there, not from Ray's start-up.
    The actors are killed when the iteration ends (or is abandoned), so a compress followed by
    a restore in one Ray session finds its CPUs free."""
    if not tasks:
        return
    # first: both start Ray, setting what Ray reads when it is imported. Callers whose workers
    # hold a codec resolve the options before, saying whether it uses a GPU (verify's do not).
    options = resolve(options, uses_gpu=False)
    check_fits(options)
    import ray

    env = worker_env()
    actor_cls = ray.remote(worker_cls).options(
        **({"runtime_env": {"env_vars": env}} if env else {}),  # merged with the job's
        num_cpus=options.num_cpus,
        num_gpus=options.num_gpus,
        max_restarts=-1,  # a killed actor comes back for the next shard
        max_task_retries=TASK_RETRIES,
        scheduling_strategy="SPREAD",  # over every node, not the driver's first
    )
    actors = [actor_cls.remote(*worker_args) for _ in range(default_actors(options, len(tasks)))]
    # Only an actor that has started gets a shard: one that the cluster cannot place yet must
    # not hold a shard while the others sit idle.
    starting = {actor.__ray_ready__.remote(): actor for actor in actors}
    idle: list[Any] = []
    running: dict[Any, tuple[Any, dict[str, Any]]] = {}  # result ref -> (actor, task)
    todo = collections.deque(tasks)
    start_error: BaseException | None = None
    try:
        while todo or running:
            while idle and todo:  # one shard in flight per actor: shards are big units
                actor, task = idle.pop(), todo.popleft()
                running[actor.__call__.remote(task)] = (actor, task)
            if not running and not starting:  # no actor could start: say why, for each shard
                for task in todo:
                    yield {"ok": False, "shard": task.get("shard"),
                           "error": _ray_error(task, start_error or RuntimeError("?"),
                                               "no worker could start")}
                return
            (ref,), _ = ray.wait([*running, *starting], num_returns=1)
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                    if on_start is not None:
                        on_start()
                        on_start = None
                except ray.exceptions.RayError as exc:  # its constructor raised
                    start_error = exc
                continue
            actor, task = running.pop(ref)
            idle.append(actor)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayError as exc:  # the worker died, TASK_RETRIES + 1 times
                what = (f"its worker died {TASK_RETRIES + 1} times on it"
                        if isinstance(exc, ray.exceptions.RayActorError) else "its worker failed")
                yield {"ok": False, "shard": task.get("shard"), "error": _ray_error(task, exc, what)}
    finally:
        # A shard in flight is cancelled first: it is not to be retried (its attempts drop to
        # none), so Ray does not print "... failed. There are 3 retries remaining, so the task
        # will be retried" for each one that ray.kill ends (a Ctrl-C, `ray job stop`).
        for ref in [*running, *starting]:  # an actor still starting too (its __ray_ready__)
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        for actor in actors:
            ray.kill(actor)
